"""Load hygiene keys (issue 13 item 8): [general] jitter, max_rate, max_rate_per_destination."""

from __future__ import annotations

from collections.abc import Callable

from sipqualify.config import check_config, load_config

Write = Callable[[str, str], str]


def test_sip_conf_and_toml(write: Write) -> None:
    cfg = load_config(write("sip.conf", "[general]\njitter=0.1\nmax_rate=500\nmax_rate_per_destination=20\n"))
    assert cfg.messages == []
    g = cfg.general
    assert (g.jitter, g.max_rate, g.max_rate_per_destination) == (0.1, 500, 20)
    cfg = load_config(write("sipqualify.toml", "[general]\njitter = 0.25\nmax_rate = 100\n"))
    assert (cfg.general.jitter, cfg.general.max_rate, cfg.general.max_rate_per_destination) == (0.25, 100, 0)


def test_bad_values_are_errors_with_file_and_line(write: Write) -> None:
    path = write("sip.conf", "[general]\njitter=0.9\nmax_rate=-1\njitter=lots\n")
    msgs = check_config(path)
    assert [(m.severity, m.line, m.option) for m in msgs] == [
        ("error", 2, "jitter"), ("error", 3, "max_rate"), ("error", 4, "jitter")]
    assert "jitter must be a number from 0 to 0.5, not 0.9" in msgs[0].message
    msgs = check_config(write("sipqualify.toml", "[general]\njitter = true\n"))
    assert [(m.severity, m.line, m.option) for m in msgs] == [("error", 2, "jitter")]
