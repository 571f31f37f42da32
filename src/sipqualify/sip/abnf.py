"""RFC 3261 §25.1 core rules the SIP parsers share. The grammar is ASCII.

Python is not: `str.isdigit()` is true for '²', '٣' and '５', `int()` converts two of those
(and refuses more than 4300 digits with ValueError), `str.strip()` removes any Unicode space,
and `\\d`, `\\s` and case-insensitive `[a-z]` in a str regex match non-ASCII characters unless
the pattern has re.ASCII. Every number, space and token the parsers read goes through here or
through an ASCII character class; only quoted strings, reason phrases and free text
(TEXT-UTF8) may hold UTF-8.
"""

from __future__ import annotations

LWS = " \t"  # what strip() may remove: WSP = SP / HTAB (line folding is undone before)
TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
TOKEN_RE = r"[A-Za-z0-9.!%*_+`'~-]+"
MAX_DELTA_SECONDS = 2**32 - 1


def is_digits(text: str | bytes) -> bool:
    """1*DIGIT: not empty, ASCII 0-9 only."""
    return text.isascii() and text.isdigit()


def digits_value(text: str | bytes, max_len: int) -> int | None:
    """The value of 1*DIGIT written with at most `max_len` digits; None for anything else."""
    return int(text) if len(text) <= max_len and text.isascii() and text.isdigit() else None


def is_token(text: str) -> bool:
    """RFC 3261 token: not empty, ASCII alphanumerics and -.!%*_+`'~ only."""
    return bool(text) and not text.strip(TOKEN)


def delta_seconds(text: str) -> int | None:
    """RFC 3261 §20.19 / §20.10 delta-seconds (Expires, the expires parameter): 1*DIGIT of any
    length, capped at 2**32-1; None when it is not ASCII digits (the caller's default applies)."""
    text = text.strip(LWS)
    if not is_digits(text):
        return None
    return MAX_DELTA_SECONDS if len(text) > 10 else min(int(text), MAX_DELTA_SECONDS)


def is_quoted(text: str) -> bool:
    """A quoted-string (the only place besides free text where UTF-8 may appear)."""
    return len(text) >= 2 and text[0] == '"' and text[-1] == '"'
