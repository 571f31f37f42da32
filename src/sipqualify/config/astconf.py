"""Asterisk configuration file syntax, as main/config.c really reads it.

Generic (sip.conf now; manager.conf and pjsip.conf later): `[section]`, templates
`[name](!)`, inheritance `[name](tmpl1,tmpl2)` and `[name](!,tmpl)`, appending `[name](+)`,
`key = value` and `key => value`, repeated keys kept in order, `;` comments (`\\;` is a
literal semicolon), block comments `;-- ... --;` across lines, `#include` / `#tryinclude`
(relative to the including file, glob patterns allowed, loops detected) and `#exec`
(refused with a warning). Every entry remembers its file and line. Errors are collected,
not raised, so one pass reports all of them.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from ..model import ConfigMessage


@dataclass(slots=True)
class Entry:
    key: str
    value: str
    file: str
    line: int
    inherited: bool = False  # came from a template


@dataclass(slots=True)
class Section:
    name: str
    file: str
    line: int
    is_template: bool = False
    templates: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    def get(self, key: str) -> Entry | None:
        """The last value of `key` (a section's own value overrides a template's)."""
        key = key.lower()
        for e in reversed(self.entries):
            if e.key.lower() == key:
                return e
        return None

    def get_all(self, key: str) -> list[Entry]:
        key = key.lower()
        return [e for e in self.entries if e.key.lower() == key]


@dataclass(slots=True)
class ParsedConfig:
    sections: list[Section] = field(default_factory=list)
    messages: list[ConfigMessage] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def error(self, file: str, line: int, msg: str, option: str | None = None) -> None:
        self.messages.append(ConfigMessage("error", file, line, msg, option))

    def warning(self, file: str, line: int, msg: str, option: str | None = None) -> None:
        self.messages.append(ConfigMessage("warning", file, line, msg, option))


MAX_INCLUDE_DEPTH = 32


def _strip_comment(line: str, in_block: bool) -> tuple[str, bool]:
    """Remove `;` comments and `;-- --;` blocks; keep `\\;` as `;`."""
    out: list[str] = []
    i = 0
    n = len(line)
    while i < n:
        if in_block:
            end = line.find("--;", i)
            if end < 0:
                return "".join(out), True
            i = end + 3
            in_block = False
            continue
        ch = line[i]
        if ch == "\\" and i + 1 < n and line[i + 1] == ";":
            out.append(";")
            i += 2
            continue
        if ch == ";":
            if line.startswith(";--", i):
                in_block = True
                i += 3
                continue
            break
        out.append(ch)
        i += 1
    return "".join(out), in_block


def parse_file(path: str, result: ParsedConfig | None = None, *, optional: bool = False,
               _stack: tuple[str, ...] = (), _where: tuple[str, int] | None = None) -> ParsedConfig:
    """Read `path` (and what it includes) into `result`."""
    result = result if result is not None else ParsedConfig()
    real = os.path.realpath(path)
    if real in _stack:
        chain = " -> ".join([*_stack, real])
        f, ln = _where or (path, 0)
        result.error(f, ln, f"#include loop: {chain}")
        return result
    if len(_stack) >= MAX_INCLUDE_DEPTH:
        f, ln = _where or (path, 0)
        result.error(f, ln, f"#include nested deeper than {MAX_INCLUDE_DEPTH}")
        return result
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except FileNotFoundError:
        if not optional:
            f, ln = _where or (path, 0)
            result.error(f, ln, f"cannot open {path}: no such file")
        return result
    except OSError as e:
        f, ln = _where or (path, 0)
        result.error(f, ln, f"cannot read {path}: {e.strerror}")
        return result
    result.files.append(path)
    _parse_text(text, path, result, (*_stack, real))
    return result


def _current(result: ParsedConfig) -> Section | None:
    return result.sections[-1] if result.sections else None


def _parse_text(text: str, path: str, result: ParsedConfig, stack: tuple[str, ...]) -> None:
    in_block = False
    base = os.path.dirname(path)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line, in_block = _strip_comment(raw, in_block)
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            directive, _, arg = line[1:].partition(" ")
            directive = directive.lower()
            arg = arg.strip().strip('"').strip("<>").strip()
            if directive in ("include", "tryinclude"):
                if not arg:
                    result.error(path, lineno, f"#{directive} without a file name")
                    continue
                target = arg if os.path.isabs(arg) else os.path.join(base, arg)
                if any(c in target for c in "*?["):
                    matches = sorted(glob.glob(target))
                    if not matches and directive == "include":
                        result.error(path, lineno, f"#include {arg}: no file matches")
                    for m in matches:
                        parse_file(m, result, _stack=stack, _where=(path, lineno))
                else:
                    parse_file(target, result, optional=directive == "tryinclude", _stack=stack,
                               _where=(path, lineno))
            elif directive == "exec":
                result.warning(path, lineno, "#exec is not supported: line ignored")
            else:
                result.error(path, lineno, f"unknown directive #{directive}")
            continue
        if line.startswith("["):
            close = line.find("]")
            if close < 0:
                result.error(path, lineno, f"unterminated section header {line!r}")
                continue
            name = line[1:close].strip()
            rest = line[close + 1:].strip()
            if not name:
                result.error(path, lineno, "empty section name")
                continue
            sec = Section(name, path, lineno)
            if rest:
                if not (rest.startswith("(") and rest.endswith(")")):
                    result.error(path, lineno, f"junk after section header: {rest!r}")
                    continue
                opts = [o.strip() for o in rest[1:-1].split(",") if o.strip()]
                append = False
                for o in opts:
                    if o == "!":
                        sec.is_template = True
                    elif o == "+":
                        append = True
                    else:
                        sec.templates.append(o)
                if append:
                    existing = next((s for s in reversed(result.sections) if s.name == name), None)
                    if existing is None:
                        result.error(path, lineno, f"[{name}](+) appends to a section that does not exist")
                        continue
                    # move it to the end so following lines go to it
                    result.sections.remove(existing)
                    result.sections.append(existing)
                    continue
                for t in sec.templates:
                    tmpl = next((s for s in reversed(result.sections) if s.name == t), None)
                    if tmpl is None:
                        result.error(path, lineno, f"[{name}] inherits from unknown template '{t}'")
                        continue
                    sec.entries.extend(
                        Entry(e.key, e.value, e.file, e.line, inherited=True) for e in tmpl.entries
                    )
            result.sections.append(sec)
            continue
        key, sep, value = line.partition("=")
        if not sep:
            result.error(path, lineno, f"expected 'key = value', got {line[:60]!r}")
            continue
        if value.startswith(">"):
            value = value[1:]
        key = key.strip()
        value = value.strip()
        if not key:
            result.error(path, lineno, "option without a name")
            continue
        cur = _current(result)
        if cur is None:
            result.error(path, lineno, f"option '{key}' outside of any [section]", option=key)
            continue
        cur.entries.append(Entry(key, value, path, lineno))
    if in_block:
        result.warning(path, 0, "block comment ';--' not closed at end of file")
