"""Value parsers shared by the sip.conf and TOML readers: one place per idea.

They raise `ValueError` with a message fit for a `ConfigMessage`; the readers decide
whether a bad value is an error or (as chan_sip would have it) a warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..model import NAT_MODES

_SCANF_INT = re.compile(r"[ \t]*([+-]?[0-9]+)")  # ASCII, as C's %d


def scan_int(text: str) -> tuple[int, str] | None:
    """C `sscanf(text, "%d")`: the leading integer and what follows it, or None."""
    m = _SCANF_INT.match(text)
    if not m:
        return None
    return int(m.group(1)), text[m.end():].strip()


def parse_nat(words: Iterable[str]) -> tuple[tuple[str, ...], list[str]]:
    """chan_sip `nat=` words -> NAT_MODES, plus complaints about words that needed mapping.

    `yes` is `force_rport,comedia` (sip.conf.sample); the Asterisk 1.4 values `never` and
    `route` become `no` and `force_rport`. Unknown words are dropped (chan_sip clears every
    NAT flag it does not recognise, so nothing at all means `no`).
    """
    out: list[str] = []
    problems: list[str] = []
    for w in (w.strip().lower() for w in words):
        if w in NAT_MODES:
            if w != "no":
                out.append(w)
        elif w == "yes":
            out += ["force_rport", "comedia"]
        elif w == "never":
            problems.append("nat=never is from Asterisk 1.4: treated as 'no'")
        elif w == "route":
            out.append("force_rport")
            problems.append("nat=route is from Asterisk 1.4: treated as 'force_rport'")
        elif w:
            problems.append(f"unknown nat mode '{w}' ignored (known: yes, {', '.join(NAT_MODES)})")
    return (tuple(dict.fromkeys(out)) or ("no",)), problems


_DURATION_PART = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: object) -> int:
    """Seconds from an int or a string like `"7d"`, `"12h"`, `"1h30m"`, `"90"`."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like \"7d\"")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        s = value.strip().lower()
        if s.isdigit():
            return int(s)
        parts = _DURATION_PART.findall(s)
        if parts and _DURATION_PART.sub("", s).strip() == "":
            return sum(int(n) * _UNITS[u] for n, u in parts)
    raise ValueError(f"{value!r} is not a duration (seconds, or like \"7d\", \"12h\", \"1h30m\")")


DIGEST_ALGORITHMS = {"md5": "MD5", "sha-256": "SHA-256", "sha256": "SHA-256"}


def parse_algorithms(words: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """`md5, sha-256` -> (("MD5", "SHA-256"), unknown words); order kept, duplicates dropped."""
    out: list[str] = []
    bad: list[str] = []
    for w in words:
        w = w.strip()
        if not w:
            continue
        alg = DIGEST_ALGORITHMS.get(w.lower())
        if alg is None:
            bad.append(w)
        elif alg not in out:
            out.append(alg)
    return tuple(out), bad
