"""Reading a big config leaves nothing of the reader's temporaries behind (issue 15: memory per peer).

The figures are in bench/bench_config_memory.py; these tests pin the properties they rest
on: the line splitter is `str.splitlines()` line by line, the parser keeps one object per
distinct key and value, and a peer's values are its own objects or shared with other peers,
never the strings of the parsed sections.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sipqualify.config import load_config, read_asterisk_config
from sipqualify.config.asterisk import _lines
from sipqualify.config.memory import release_memory
from sipqualify.config.sipconf import SipConfReader

Write = Callable[[str, str], str]


def test_lines_split_exactly_like_splitlines() -> None:
    rnd = random.Random(15)
    alphabet = "ab ;[=\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    cases = ["", "\n", "\r\n", "a", "a\n", "a\r", "\x0c\n", "a\x0c\nb", "\r\r\n", "a\n\n", "\n\x0c\nb\r\n\ra"]
    cases += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 16))) for _ in range(20_000)]
    for text in cases:
        assert list(_lines(text)) == text.splitlines(), repr(text)


def test_line_numbers_after_form_feeds_and_old_mac_line_ends(write: Write) -> None:
    path = write("x.conf", "[s]\r\na=1\x0c\nb=2\rc=3\n")
    cfg = read_asterisk_config(path)
    assert [(e.key, e.value, e.line) for e in cfg.sections[0].entries] == [("a", "1", 2), ("b", "2", 4), ("c", "3", 5)]


def test_one_object_per_distinct_key_and_value(write: Write) -> None:
    path = write("x.conf", "[a]\ntype=peer\nhost=10.0.0.1\n[b]\ntype = peer\nhost= 10.0.0.1\n")
    a, b = read_asterisk_config(path).sections
    assert [e.key for e in a.entries] == [e.key for e in b.entries] == ["type", "host"]
    for ea, eb in zip(a.entries, b.entries, strict=True):
        assert ea.key is eb.key and ea.value is eb.value


def test_peers_keep_no_string_of_the_parsed_sections(write: Write) -> None:
    path = write("sip.conf", "[general]\ncontext=office\n"
                             "[t](!)\ntype=peer\nhost=pbx.example.com\nport=5080\nqualifyfreq=30\n"
                             "[alice](t)\nsecret=s1\nnat=force_rport,comedia\n"
                             "[bob](t)\nsecret=s2\nnat=force_rport,comedia\ndescription=Bob's phone\n")
    parsed = read_asterisk_config(path)
    reader = SipConfReader(parsed, path)
    cfg = reader.read()
    alice, bob = cfg.peers["alice"], cfg.peers["bob"]
    parsed_ids = {id(s.name) for s in parsed.sections}
    parsed_ids |= {id(x) for s in parsed.sections for e in s.entries for x in (e.key, e.value)}
    for p in (alice, bob):
        for v in (p.name, p.host, p.secret, p.description, p.context, *p.nat):
            assert id(v) not in parsed_ids, (p.name, v)
    # equal values are one object for every peer
    assert alice.host is bob.host and alice.nat is bob.nat and alice.port is bob.port
    assert alice.qualifyfreq_ms is bob.qualifyfreq_ms and alice.context is bob.context
    # and reading is otherwise unchanged
    assert (alice.host, alice.port, alice.qualifyfreq_ms, alice.secret, alice.context) == (
        "pbx.example.com", 5080, 30_000, "s1", "office")
    assert alice.nat == bob.nat == ("force_rport", "comedia") and bob.description == "Bob's phone"
    assert load_config(path).peers == cfg.peers


def test_release_memory_trims_on_glibc() -> None:
    import platform

    trimmed = release_memory()
    assert trimmed == (platform.libc_ver()[0] == "glibc")
