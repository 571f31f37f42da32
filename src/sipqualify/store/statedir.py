"""The state directory: the databases, and the API token file when none is configured."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def default_state_dir() -> Path:
    env = os.environ.get("SIPQUALIFY_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "sipqualify"


def ensure_token(state_dir: Path, configured: str | None) -> str:
    """The API token: from the config, else a generated file readable only by its owner."""
    if configured:
        return configured
    path = state_dir / "api-token"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token
