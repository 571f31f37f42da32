"""Entry points: pick the reader by file type; raise ConfigError on errors."""

from __future__ import annotations

import os

from ..model import Config, ConfigError, ConfigMessage
from .sip_conf import load_sip_conf
from .toml_conf import load_toml


def read_config(path: str) -> Config:
    """Read without raising for content problems (they are in `Config.messages`)."""
    if not os.path.exists(path):
        return Config(messages=[ConfigMessage("error", path, 0, "no such file")], source=path)
    if os.path.isdir(path):
        return Config(messages=[ConfigMessage("error", path, 0, "is a directory, not a config file")], source=path)
    if path.endswith(".toml"):
        return load_toml(path)
    return load_sip_conf(path)


def load_config(path: str) -> Config:
    cfg = read_config(path)
    if cfg.errors:
        raise ConfigError(cfg.messages)
    return cfg


def check_config(path: str) -> list[ConfigMessage]:
    return read_config(path).messages
