"""`pip install .` (README's first Quick start command) does not bring the `cluster` extra
(tooz, etcd3gw, redis) nor numpy: the daemon, the CLI and the demo must import and start without
them, and `[cluster]` without tooz must say what to install. Each check runs in a fresh
interpreter where importing those packages fails, as on a machine that never had them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SRC = str(Path(__file__).resolve().parent.parent / "src")
BLOCK = textwrap.dedent("""
    import sys
    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tooz", "etcd3gw", "redis", "numpy"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, _NotInstalled())
    for m in [m for m in sys.modules if m.split(".")[0] in ("tooz", "etcd3gw", "redis", "numpy")]:
        del sys.modules[m]
""")


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})


def test_daemon_and_cli_import_without_the_cluster_extra(tmp_path: Path) -> None:
    r = _run("""
        import sipqualify.cli, sipqualify.service, sipqualify.demo, sipqualify.api.http
        import sipqualify.cluster  # the package itself imports; tooz is needed only to join
        print("imported")
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "imported" in r.stdout


def test_cluster_without_tooz_is_a_clear_config_error(tmp_path: Path) -> None:
    r = _run("""
        import asyncio
        from sipqualify.cluster import open_cluster
        from sipqualify.model import Config, ConfigError
        cfg = Config()
        cfg.service.cluster_url = "etcd3+http://127.0.0.1:2379"
        try:
            asyncio.run(open_cluster(cfg, None, lambda: 0.0, None))
        except ConfigError as e:
            print("ConfigError:", e)
    """, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ConfigError:" in r.stdout and "sipqualify[cluster]" in r.stdout
