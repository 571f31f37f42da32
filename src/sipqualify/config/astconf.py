"""Old name of `asterisk.py` (api/ami.py imports `parse_file` from here)."""

from .asterisk import AsteriskConfig as ParsedConfig
from .asterisk import Entry, Section, parse_file

__all__ = ["Entry", "ParsedConfig", "Section", "parse_file"]
