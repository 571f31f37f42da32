"""Configuration readers: Asterisk config syntax, sip.conf and native TOML -> one `Config`.

`load_config(path)` is what the daemon uses: it raises `ConfigError` (every message) when
anything is an error and otherwise returns the Config with its warnings in `messages`.
`check_config(path)` never raises for bad content. A path ending in `.toml` is read as
native TOML (docs/configuration.md), a pjsip.conf (by its name, or a `type=endpoint|aor|transport`
line) as res_pjsip's objects (pjsip.py), anything else as an Asterisk sip.conf.
"""

from __future__ import annotations

import os

from ..model import Config, ConfigError, ConfigMessage
from .asterisk import AsteriskConfig, Entry, Section, read_asterisk_config
from .native import load_toml
from .pjsip import load_pjsip_conf, looks_like_pjsip
from .sipconf import load_sip_conf

__all__ = [
    "AsteriskConfig", "Entry", "Section", "check_config", "load_config", "load_pjsip_conf", "load_sip_conf",
    "load_toml", "read_asterisk_config", "read_config",
]


def read_config(path: str) -> Config:
    """Read either format without raising for content problems (they are in `messages`)."""
    if not os.path.exists(path):
        return Config(messages=[ConfigMessage("error", path, 0, "no such file")], source=path)
    if not os.path.isfile(path):
        return Config(messages=[ConfigMessage("error", path, 0, "not a regular file")], source=path)
    if not os.access(path, os.R_OK):
        return Config(messages=[ConfigMessage("error", path, 0, "cannot read: permission denied")], source=path)
    if path.endswith(".toml"):
        return load_toml(path)
    if looks_like_pjsip(path):
        return load_pjsip_conf(path)
    return load_sip_conf(path)


def load_config(path: str) -> Config:
    """The configuration in `path`; raises ConfigError carrying every message if any is an error."""
    cfg = read_config(path)
    if cfg.errors:
        raise ConfigError(cfg.messages)
    return cfg


def check_config(path: str) -> list[ConfigMessage]:
    """Every warning and error in `path` (and what it includes), in reading order."""
    return read_config(path).messages
