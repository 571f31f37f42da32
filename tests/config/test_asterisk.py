"""The Asterisk config syntax reader against main/config.c's behaviour."""

from __future__ import annotations

from collections.abc import Callable

from sipqualify.config import read_asterisk_config

Write = Callable[[str, str], str]


def entries(path: str, section: str) -> list[tuple[str, str]]:
    cfg = read_asterisk_config(path)
    sec = cfg.find(section, templates=True)
    assert sec is not None
    return [(e.key, e.value) for e in sec.entries]


def test_values_arrows_repeats_and_origin(write: Write) -> None:
    path = write("x.conf", "[s]\n  allow = ulaw  \nallow=>alaw\n\npermit = 10.0.0.0/8 ; office\nkey=a=b\n")
    cfg = read_asterisk_config(path)
    (sec,) = cfg.sections
    assert [(e.key, e.value, e.line) for e in sec.entries] == [
        ("allow", "ulaw", 2), ("allow", "alaw", 3), ("permit", "10.0.0.0/8", 5), ("key", "a=b", 6)]
    assert sec.entries[1].arrow and not sec.entries[0].arrow
    assert [e.value for e in sec.get_all("ALLOW")] == ["ulaw", "alaw"]
    assert sec.get("allow") is sec.entries[1] and sec.first("allow") is sec.entries[0]
    assert (sec.file, sec.line) == (path, 1) and cfg.messages == []


def test_comments_escapes_and_blocks(write: Write) -> None:
    path = write("c.conf", "\n".join([
        "[s]",
        r"secret = a\;b ; the rest is a comment",
        ";------------------ a banner is a line comment, not a block ------------------",
        "a = 1",
        ";-- a block",
        "b = 2 ;-- nested --; still inside",
        "--; c = 3",
        "d = 4 ;-- same line --; e",
        "f = 5 ;-- opened here",
        "--;",
    ]) + "\n")
    assert entries(path, "s") == [("secret", "a;b"), ("a", "1"), ("c", "3"), ("d", "4  e"), ("f", "5")]
    assert read_asterisk_config(path).messages == []


def test_unclosed_block_and_stray_close(write: Write) -> None:
    path = write("u.conf", "[s]\na=1\n;-- never closed\nb=2\n")
    cfg = read_asterisk_config(path)
    assert entries(path, "s") == [("a", "1")]
    assert [(m.severity, m.line) for m in cfg.messages] == [("warning", 3)]
    path = write("v.conf", "[s]\na=1 --;\nb=2\n")
    cfg = read_asterisk_config(path)
    assert [(m.severity, m.line) for m in cfg.messages] == [("error", 2)]
    assert entries(path, "s") == [("a", "1 --;")]  # and b is lost, as in Asterisk


def test_templates_inheritance_order_and_append(write: Write) -> None:
    path = write("t.conf", """
[base](!)
type=friend
qualify=yes
[nat](!,base)
nat=force_rport
[1001](nat)
secret=x
qualify=no
[1001](+)
callerid=Reception
[plain]
host=h
[child](plain,base)
""")
    cfg = read_asterisk_config(path)
    assert [s.name for s in cfg.categories()] == ["1001", "plain", "child"]
    assert [(s.name, s.is_template) for s in cfg.sections if s.is_template] == [("base", True), ("nat", True)]
    s1001 = cfg.find("1001")
    assert s1001 is not None and s1001.templates == ["nat"]
    assert [(e.key, e.value, e.inherited) for e in s1001.entries] == [
        ("type", "friend", True), ("qualify", "yes", True), ("nat", "force_rport", True),
        ("secret", "x", False), ("qualify", "no", False), ("callerid", "Reception", False)]
    assert s1001.entries[0].line == 3  # inherited entries keep the template's origin
    assert s1001.get("qualify") is not None and s1001.get("qualify").value == "no"  # type: ignore[union-attr]
    child = cfg.find("child")
    assert child is not None and [e.key for e in child.entries] == ["host", "type", "qualify"]
    assert cfg.messages == []


def test_header_errors_and_quirks(write: Write) -> None:
    path = write("h.conf", """[ok]
a=1
[broken
b=2
[t](missing)
c=3
[ok2](ok, ok)
[tmpl](!)
[tmpl](+)
[x] (!)
d=4
""")
    cfg = read_asterisk_config(path)
    got = [(m.severity, m.line) for m in cfg.messages]
    assert ("error", 3) in got  # no closing ]
    assert ("error", 5) in got  # inherits from a section that does not exist
    assert ("error", 7) in got  # ' ok' (with the space) does not exist: Asterisk does not trim
    assert ("error", 9) in got  # (+) only finds non-templates
    assert ("warning", 10) in got  # "(!)" not directly after ']' is ignored, as Asterisk does
    x = cfg.find("x")
    assert x is not None and not x.is_template and [e.key for e in x.entries] == ["d"]
    # options under a broken header are swallowed, not reported again or given to [ok]
    ok = cfg.find("ok")
    assert ok is not None and [e.key for e in ok.entries] == ["a"]


def test_bad_lines_all_reported(write: Write) -> None:
    path = write("b.conf", "orphan=1\n[s]\nno equals sign here\n = novalue\n\\ bad\nfine=1\n")
    cfg = read_asterisk_config(path)
    assert [(m.severity, m.line) for m in cfg.messages] == [("error", 1), ("error", 3), ("error", 4), ("error", 5)]
    assert cfg.messages[0].option == "orphan"
    assert entries(path, "s") == [("fine", "1")]


def test_plus_equals_appends(write: Write) -> None:
    path = write("p.conf", "[s]\nallow=ulaw\nallow=alaw\nallow+=,g722\nnew+=x\n")
    assert entries(path, "s") == [("allow", "ulaw"), ("allow", "alaw,g722"), ("new", "x")]


def test_includes_relative_glob_try_and_section_carry_over(write: Write) -> None:
    write("conf.d/b-peers.conf", "[b]\nhost=2\n")
    write("conf.d/a-peers.conf", "[a]\nhost=1\n")
    write("general_extra.conf", "qualify=yes\n")  # no header: continues [general]
    main = write("main.conf", """[general]
#include general_extra.conf
#include "conf.d/*-peers.conf"
bindport=5070
#tryinclude missing.conf
#include <conf.d/a-peers.conf>
#exec /bin/echo
#frobnicate x
""")
    cfg = read_asterisk_config(main)
    assert [s.name for s in cfg.sections] == ["general", "a", "b", "a"]
    # after the includes the main file goes on in its own section ([general]), as config.c does
    assert entries(main, "general") == [("qualify", "yes"), ("bindport", "5070")]
    assert cfg.sections[1].file.endswith("conf.d/a-peers.conf")
    assert [(m.severity, m.line) for m in cfg.messages] == [("warning", 7), ("warning", 8)]
    assert "#exec" in cfg.messages[0].message


def test_include_errors(write: Write) -> None:
    write("a.conf", "[a]\n#include b.conf\n")
    write("b.conf", "#include a.conf\n")
    main = write("main.conf", "#include a.conf\n#include nope.conf\n#include nope-*.conf\n")
    cfg = read_asterisk_config(main)
    msgs = [(m.file.rsplit("/", 1)[-1], m.line, m.message) for m in cfg.errors]
    assert msgs[0][:2] == ("b.conf", 1) and "loop: main.conf -> a.conf -> b.conf -> a.conf" in msgs[0][2]
    assert msgs[1][:2] == ("main.conf", 2) and "nope.conf: no such file" in msgs[1][2]
    assert msgs[2][:2] == ("main.conf", 3) and "no such file matches" in msgs[2][2]


def test_missing_top_file() -> None:
    cfg = read_asterisk_config("/nonexistent/x.conf")
    assert [str(m) for m in cfg.messages] == ["/nonexistent/x.conf: error: no such file"]
