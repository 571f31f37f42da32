"""Old home of the entry points (service.py imports it); they live in the package now."""

from . import check_config, load_config, read_config

__all__ = ["check_config", "load_config", "read_config"]
