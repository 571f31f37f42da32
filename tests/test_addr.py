"""The one host:port parser and IP-literal check (config readers, command line, DNS, API, AMI)."""

from __future__ import annotations

import pytest

from sipqualify.addr import is_ip, parse_port, split_hostport
from sipqualify.cli import CliError, parse_hostport


@pytest.mark.parametrize(("text", "want"), [
    ("gw.example.net", ("gw.example.net", None)), ("192.0.2.1:5070", ("192.0.2.1", 5070)),
    ("[2001:db8::1]:5061", ("2001:db8::1", 5061)), ("2001:db8::1", ("2001:db8::1", None)),
    ("[::1]", ("::1", None)),
])
def test_split_hostport(text: str, want: tuple[str, int | None]) -> None:
    assert split_hostport(text) == want


@pytest.mark.parametrize("text", ["", "[::1", "[gw]:5060", "a b:5060", "gw:", "gw:0", "gw:65536", "gw:５０６０",
                                  "gw:+5060", "1:2:zz", "[::1]x"])
def test_split_hostport_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        split_hostport(text)


def test_ports_and_literals_are_ascii() -> None:
    assert parse_port("0", allow_zero=True) == 0 and parse_port(" 5060 ") == 5060
    with pytest.raises(ValueError):
        parse_port("٥٠٦٠")
    assert is_ip("fe80::1%eth0") and is_ip("192.0.2.1") and not is_ip("[::1]") and not is_ip("gw")


def test_cli_api_address() -> None:
    assert parse_hostport("127.0.0.1") == ("127.0.0.1", 7060)
    assert parse_hostport(":7070") == ("127.0.0.1", 7070)
    assert parse_hostport("[::1]:0") == ("::1", 0)
    with pytest.raises(CliError, match="bad address"):
        parse_hostport("127.0.0.1:http")
