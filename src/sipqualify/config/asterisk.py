"""Asterisk configuration file syntax, as `main/config.c` really reads it.

Generic: sip.conf now, manager.conf and pjsip.conf later. The reader produces a list of
`Section`s whose `Entry`s remember the file and line they came from. Nothing here knows
what an option means.

Theory of operation (config.c, `config_text_file_load` and `process_text_line`):

* Comments are removed first, line by line. `;` starts a comment unless written `\\;`.
  `;--` opens a block comment and `--;` closes it; blocks nest. `;---` (a third dash) is
  an ordinary line comment, so `;------ banner ------` lines are harmless. Text before a
  block comment and after it is joined and read as one line.
* `[name]` opens a section. Options in parentheses must follow `]` directly:
  `!` marks a template, `+` adds to the first existing non-template section of that name,
  any other word copies the options of the first section of that name (template or not)
  in front of the section's own ones. Names compare case-insensitively and are not
  trimmed (`[a](b, c)` looks for a section called " c", as Asterisk does).
* A section name may appear twice: that is two sections (the sip.conf reader decides
  what that means).
* `#include` / `#tryinclude` read another file (glob patterns allowed) in place. The
  included file starts in the section that was opened last; after it, the including file
  goes on in its own section. `#exec` is refused with a warning.
* `key = value`, `key => value`, `key += more` (appends to the last `key`).

Where Asterisk stops loading the whole file at the first error, we record the error and
keep reading, so one pass reports every problem. Where Asterisk only warns about a
malformed line (no `=`, no option name) we report an error: such a line never does what
its author meant.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..model import ConfigMessage

MAX_INCLUDE_DEPTH = 32
MAX_NESTED_COMMENTS = 128  # config.c


@dataclass(slots=True)
class Entry:
    key: str
    value: str
    file: str
    line: int
    inherited: bool = False  # copied from a template (file/line are the template's)
    arrow: bool = False  # written `key => value`


@dataclass(slots=True)
class Section:
    name: str
    file: str
    line: int
    is_template: bool = False
    templates: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def get(self, key: str) -> Entry | None:
        """The last `key`: the value that wins when options are applied in order."""
        key = key.lower()
        for e in reversed(self.entries):
            if e.key.lower() == key:
                return e
        return None

    def first(self, key: str) -> Entry | None:
        """The first `key`, which is what Asterisk's `ast_variable_retrieve()` returns."""
        key = key.lower()
        return next((e for e in self.entries if e.key.lower() == key), None)

    def get_all(self, key: str) -> list[Entry]:
        key = key.lower()
        return [e for e in self.entries if e.key.lower() == key]


@dataclass(slots=True)
class AsteriskConfig:
    """Every section of a file and its includes, in order, and what was wrong with them."""

    sections: list[Section] = field(default_factory=list)
    messages: list[ConfigMessage] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def find(self, name: str, *, templates: bool = True) -> Section | None:
        """The first section called `name` (case-insensitive), like `ast_category_get()`."""
        low = name.lower()
        for s in self.sections:
            if s.name.lower() == low and (templates or not s.is_template):
                return s
        return None

    def categories(self) -> list[Section]:
        """Non-template sections in order, like `ast_category_browse()`."""
        return [s for s in self.sections if not s.is_template]

    @property
    def errors(self) -> list[ConfigMessage]:
        return [m for m in self.messages if m.severity == "error"]


class AsteriskConfigParser:
    """Reads one top-level file and everything it includes into an `AsteriskConfig`."""

    def __init__(self) -> None:
        self.result = AsteriskConfig()
        self.current: Section | None = None  # config.c's cfg->current
        self._stack: list[str] = []
        self._values: dict[str, str] = {}  # each distinct option value once (dropped with the parser)

    def error(self, file: str, line: int, msg: str, option: str | None = None) -> None:
        self.result.messages.append(ConfigMessage("error", file, line, msg, option))

    def warning(self, file: str, line: int, msg: str, option: str | None = None) -> None:
        self.result.messages.append(ConfigMessage("warning", file, line, msg, option))

    # ------------------------------------------------------------------ files

    def parse(self, path: str) -> AsteriskConfig:
        if not self._read(path, None):
            self.error(path, 0, "no such file")
        return self.result

    def _read(self, path: str, where: tuple[str, int] | None) -> bool:
        """Parse `path`; False when it does not exist (the caller decides if that is an error)."""
        real = os.path.realpath(path)
        wf, wl = where or (path, 0)
        if real in self._stack:
            chain = " -> ".join(os.path.basename(p) for p in [*self._stack, real])
            self.error(wf, wl, f"#include loop: {chain}")
            return True
        if len(self._stack) >= MAX_INCLUDE_DEPTH:
            self.error(wf, wl, f"#include nested deeper than {MAX_INCLUDE_DEPTH} files")
            return True
        if not os.path.exists(path):
            return False
        if not os.path.isfile(path):
            self.warning(wf, wl, f"'{path}' is not a regular file, ignoring")
            return True
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as e:
            self.error(wf, wl, f"cannot read {path}: {e.strerror}")
            return True
        self.result.files.append(path)
        self._stack.append(real)
        try:
            self._parse_text(text, path)
        finally:
            self._stack.pop()
        return True

    def _parse_text(self, text: str, path: str) -> None:
        cat = self.current  # an included file goes on in the section opened last
        level = 0  # block comment nesting
        opened: list[int] = []  # lines where the open block comments began
        for lineno, raw in enumerate(_lines(text), 1):
            line, level = self._uncomment(raw, level, opened, path, lineno)
            if line is None:
                continue
            line = line.strip()
            if line:
                cat = self._line(line, cat, path, lineno)
        if level > 0:
            self.warning(path, opened[0], "block comment ';--' is never closed: the rest of the file is ignored")

    def _uncomment(self, raw: str, level: int, opened: list[int], path: str, lineno: int) -> tuple[str | None, int]:
        """config.c's comment scanner; returns the text to process (None: none) and the new level."""
        if level == 0 and ";" not in raw:  # most lines: nothing to remove, no new string
            return raw, 0
        active = level == 0  # config.c: process_buf is NULL for a line that starts inside a comment
        out: list[str] = []
        pos = 0
        n = len(raw)
        while True:
            j = raw.find(";", pos)
            if j < 0:
                if level == 0 and active:
                    out.append(raw[pos:])
                break
            if j > pos and raw[j - 1] == "\\":  # escaped: a literal ';'
                if level == 0 and active:
                    out.append(raw[pos:j - 1] + ";")
                pos = j + 1
            elif raw.startswith("--", j + 1) and (j + 3 >= n or raw[j + 3] != "-"):  # ';--' opens a block
                if level == 0 and active:
                    out.append(raw[pos:j])
                if level < MAX_NESTED_COMMENTS:
                    level += 1
                    if level == 1:
                        opened[:] = [lineno]
                pos = j + 3
            elif j >= pos + 2 and raw[j - 2:j] == "--":  # '--;' closes one
                if level <= 0:
                    self.error(path, lineno, "'--;' closes no block comment (Asterisk then ignores the rest of "
                                             "the file)")
                    if level == 0 and active:
                        out.append(raw[pos:])
                    level = -1
                    break
                level -= 1
                pos = j + 1
                if level == 0:
                    active = True
            else:  # a plain ';': comment to end of line, or just text inside a block
                if level == 0:
                    if active:
                        out.append(raw[pos:j])
                    break
                pos = j + 1
        return ("".join(out) if active else None), level

    # ------------------------------------------------------------------ lines

    def _line(self, line: str, cat: Section | None, path: str, lineno: int) -> Section | None:
        if line[0] == "[":
            return self._header(line, cat, path, lineno)
        if line[0] == "#":
            self._directive(line, path, lineno)
            return cat
        self._option(line, cat, path, lineno)
        return cat

    def _header(self, line: str, cat: Section | None, path: str, lineno: int) -> Section | None:
        close = line.find("]")
        if close < 0:
            self.error(path, lineno, f"no closing ']' in section header {line!r}")
            return _discard(path, lineno)  # swallow its options quietly: one error, not twenty
        name = line[1:close]
        rest = line[close + 1:]
        if not name:
            self.error(path, lineno, "empty section name '[]'")
            return _discard(path, lineno)
        if name != name.strip():
            self.warning(path, lineno, f"section name '{name}' has leading or trailing spaces (Asterisk keeps them)")
        new: Section | None = Section(name, path, lineno)
        target = new
        if rest.startswith("("):
            close_p = rest.find(")")
            if close_p < 0:
                self.error(path, lineno, f"no closing ')' in section header {line!r}")
                return _discard(path, lineno)
            if rest[close_p + 1:].strip():
                self.warning(path, lineno, f"text after ')' ignored: {rest[close_p + 1:].strip()!r}")
            for opt in rest[1:close_p].split(","):
                if opt == "!":
                    assert target is not None
                    target.is_template = True
                elif opt.startswith("+"):
                    if opt[1:]:
                        self.warning(path, lineno, f"category filter '{opt}' is not supported: treated as '+'")
                    found = self.result.find(name, templates=False)
                    if found is None:
                        self.error(path, lineno, f"[{name}](+) adds to section '{name}', which does not exist (yet)")
                        return _discard(path, lineno)
                    if new is not None:
                        found.is_template |= new.is_template
                        found.entries.extend(new.entries)
                        new = None
                    target = found
                else:
                    base = self.result.find(opt)
                    if base is None:
                        hint = " (Asterisk does not trim spaces in the list)" if opt != opt.strip() else ""
                        self.error(path, lineno, f"[{name}] inherits from '{opt}', which does not exist (yet){hint}")
                        return _discard(path, lineno)
                    assert target is not None
                    target.templates.append(base.name)
                    target.entries.extend(
                        Entry(e.key, e.value, e.file, e.line, inherited=True, arrow=e.arrow) for e in base.entries
                    )
        elif rest.strip():
            self.warning(path, lineno, f"text after ']' ignored: {rest.strip()!r} (options must follow ']' "
                                       "directly, as in [name](!))")
        if new is not None:
            self.result.sections.append(new)
        self.current = target
        return target

    def _directive(self, line: str, path: str, lineno: int) -> None:
        i = 1
        while i < len(line) and ord(line[i]) > 32:
            i += 1
        name = line[1:i]
        arg = line[i:].strip()
        low = name.lower()
        if low == "exec":
            self.warning(path, lineno, "#exec is not supported: line ignored")
            return
        if low not in ("include", "tryinclude"):
            self.warning(path, lineno, f"unknown directive '#{name}' ignored")
            return
        if not arg:
            self.warning(path, lineno, f"#{low} needs a file name: line ignored")
            return
        if arg[0] in "\"<":
            quote = '"' if arg[0] == '"' else ">"
            if len(arg) > 1 and arg[-1] == quote:
                arg = arg[1:-1]
        target = arg if os.path.isabs(arg) else os.path.normpath(os.path.join(os.path.dirname(path), arg))
        matches = sorted(glob.glob(target)) if glob.has_magic(target) else [target]
        found = False
        for m in matches:
            found = self._read(m, (path, lineno)) or found
        if not found and low == "include":
            self.error(path, lineno, f"#include {arg}: no such file" + (" matches" if glob.has_magic(target) else ""))

    def _option(self, line: str, cat: Section | None, path: str, lineno: int) -> None:
        escaped = line[0] == "\\"
        if escaped:
            line = line[1:]
            if not line or ord(line[0]) < 33:
                self.error(path, lineno, "invalid escape '\\' at the start of the line")
                return
        eq = line.find("=", 1 if escaped else 0)
        if eq < 0:
            self.error(path, lineno, f"expected 'name = value', got {line[:60]!r}")
            return
        if cat is None:
            key = line[:eq].rstrip("+").strip()
            self.error(path, lineno, f"option '{key}' is outside of any [section]", option=key or None)
            return
        if eq > (1 if escaped else 0) and line[eq - 1] == "+":  # key += more
            key = line[:eq - 1].strip()
            more = line[eq + 1:]
            prev = next((e for e in reversed(cat.entries) if e.key == key), None)
            if prev is not None:
                prev.value = (prev.value + more).rstrip().lstrip()
                return
            value = more.strip()
            arrow = False
        else:
            key = line[:eq].strip()
            value = line[eq + 1:]
            arrow = value.startswith(">")
            value = (value[1:] if arrow else value).strip()
        if not key:
            self.error(path, lineno, f"option without a name: {line[:60]!r}")
            return
        # one string object per distinct key and value: fewer objects left among the peers
        cat.entries.append(Entry(sys.intern(key), self._values.setdefault(value, value), path, lineno, arrow=arrow))


_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() splits on


def _lines(text: str) -> Iterator[str]:
    """`text.splitlines()`, one line at a time: a big file's lines are never all alive at
    once, so their memory is reused line after line instead of being freed, all together,
    among the objects the reader keeps (issue 15: daemon memory per peer)."""
    start, end = 0, len(text)
    while start < end:
        nl = text.find("\n", start)
        if nl < 0:
            nl = end
        chunk = text[start:nl]
        start = nl + 1
        if chunk and chunk[-1] not in _BREAKS:
            parts = chunk.splitlines()  # '\r', '\f', '\x1c', ... inside split lines too, as splitlines() does
            if len(parts) == 1:
                yield parts[0]
                continue
        else:
            parts = chunk.splitlines()
            if nl < end and (not chunk or chunk[-1] != "\r"):  # "\f\n": two line ends ("\r\n" is one)
                parts.append("")
        yield from parts


def _discard(path: str, lineno: int) -> Section:
    """A section that is never added: the options under a broken header go nowhere."""
    return Section("", path, lineno)


def read_asterisk_config(path: str) -> AsteriskConfig:
    """Read `path` and its includes. Never raises for content; problems are in `.messages`."""
    return AsteriskConfigParser().parse(path)

