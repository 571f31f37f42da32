"""SIP headers: ordered, case-insensitive, compact forms expanded (RFC 3261 §7.3, §20)."""

from __future__ import annotations

from collections.abc import Iterable

COMPACT = {
    "v": "Via", "i": "Call-ID", "f": "From", "t": "To", "m": "Contact", "l": "Content-Length",
    "c": "Content-Type", "k": "Supported", "s": "Subject", "e": "Content-Encoding", "o": "Event",
    "r": "Refer-To", "u": "Allow-Events", "x": "Session-Expires", "y": "Identity",
    "a": "Accept-Contact", "j": "Reject-Contact", "d": "Request-Disposition", "b": "Referred-By",
}
CANONICAL = {
    n.lower(): n
    for n in (
        "Via", "Call-ID", "From", "To", "Contact", "Content-Length", "Content-Type", "Supported", "Subject",
        "Content-Encoding", "Event", "Refer-To", "Allow-Events", "Session-Expires", "Identity", "Accept-Contact",
        "Reject-Contact", "Request-Disposition", "Referred-By", "CSeq", "Max-Forwards", "Allow", "Accept",
        "Accept-Encoding", "Accept-Language", "User-Agent", "Server", "Expires", "Date", "Route",
        "Record-Route", "Require", "Proxy-Require", "Unsupported", "WWW-Authenticate", "Authorization",
        "Proxy-Authenticate", "Proxy-Authorization", "Authentication-Info", "Min-Expires", "Path",
        "Warning", "Retry-After", "Timestamp", "Organization", "Priority", "Reply-To", "In-Reply-To",
        "Alert-Info", "Call-Info", "Error-Info", "MIME-Version", "Content-Disposition", "Content-Language",
    )
}
# Headers whose values may contain unquoted commas: never split them.
NO_SPLIT = frozenset(
    ("date", "www-authenticate", "authorization", "proxy-authenticate", "proxy-authorization",
     "authentication-info", "retry-after", "subject", "user-agent", "server", "warning",
     "organization", "call-id", "cseq", "content-length", "max-forwards", "expires", "from", "to",
     "timestamp", "content-type", "min-expires", "session-expires", "refer-to", "referred-by", "identity",
     "event", "priority", "reply-to", "mime-version", "content-disposition")
)


def canonical(name: str) -> str:
    low = name.lower()
    if len(low) == 1 and low in COMPACT:
        return COMPACT[low]
    return CANONICAL.get(low, name)


def split_commas(value: str) -> list[str]:
    """Split a header value on commas that are outside quoted strings and <...>."""
    if "," not in value:
        return [value.strip()]
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    out.append(value[start:].strip())
    return [v for v in out if v]


class Headers:
    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical(k), v) for k, v in items]

    @classmethod
    def _trusted(cls, items: list[tuple[str, str]]) -> Headers:
        h = cls.__new__(cls)
        h._items = items
        return h

    def get(self, name: str, default: str | None = None) -> str | None:
        key = canonical(name).lower()
        for k, v in self._items:
            if k.lower() == key:
                if key in NO_SPLIT or "," not in v:
                    return v
                parts = split_commas(v)
                return parts[0] if parts else v
        return default

    def get_all(self, name: str) -> list[str]:
        key = canonical(name).lower()
        out: list[str] = []
        for k, v in self._items:
            if k.lower() == key:
                if key in NO_SPLIT:
                    out.append(v)
                else:
                    out.extend(split_commas(v))
        return out

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical(name), value))

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.add(name, value)

    def replace_first(self, name: str, value: str) -> None:
        """The first `name` header gets `value`, in place (others and the order stay)."""
        key = canonical(name).lower()
        for i, (k, _) in enumerate(self._items):
            if k.lower() == key:
                self._items[i] = (k, value)
                return

    def remove(self, name: str) -> None:
        key = canonical(name).lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != key]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical(name).lower()
        return any(k.lower() == key for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
