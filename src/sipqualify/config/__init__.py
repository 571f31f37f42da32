"""Configuration readers: Asterisk config syntax, sip.conf, native TOML -> one peer model."""

from .load import check_config, load_config, read_config

__all__ = ["check_config", "load_config", "read_config"]
