"""Old name of `sipconf.py`, kept while `toml_conf.py` (superseded by `native.py`) imports it."""

from .sipconf import load_sip_conf
from .values import split_hostport


def _parse_hostport(text: str) -> tuple[str, int | None] | None:
    try:
        return split_hostport(text, allow_zero_port=True)
    except ValueError:
        return None


__all__ = ["_parse_hostport", "load_sip_conf"]
