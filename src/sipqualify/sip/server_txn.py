"""Non-INVITE server transactions (RFC 3261 §17.2.2), sans-I/O, as far as the registrar needs.

A UAS must not process a retransmitted request again: while the first copy is still being
worked on (Trying: the binding is being committed) a retransmission is absorbed; once it is
answered (Completed) the retransmission gets the same response again, byte for byte (same
nonce, same To tag). Without this a phone on a lossy or slow path, or a burst of REGISTERs
that takes longer than T1 to answer, gets a fresh 401 (new nonce) for its retransmitted first
REGISTER and a 403 for its retransmitted authenticated one (nonce count replay), which also
counts towards the source's ban.

Matching (§17.2.3): the top Via branch with the `z9hG4bK` cookie, the sent-by and the method;
for RFC 2543 clients (no cookie) Call-ID, From tag, CSeq and the source address. Entries live
Timer J (64×T1 = 32 s for UDP) from the request; the table is bounded (the oldest go first).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

from ..addr import Addr
from .message import Request
from .transaction import T1

TIMER_J = 64 * T1


class _Pending:
    __slots__ = ()


PENDING = _Pending()  # Trying: absorb retransmissions


class ServerTransactions:
    def __init__(self, lifetime: float = TIMER_J, max_entries: int = 200_000) -> None:
        self.lifetime = lifetime
        self.max_entries = max_entries
        self._table: dict[Hashable, object] = {}  # key -> PENDING or (response bytes, dest, extra)
        self._order: deque[tuple[float, Hashable]] = deque()
        self.absorbed = 0  # retransmissions dropped while Trying
        self.resent = 0  # retransmissions answered with the stored response

    @staticmethod
    def key(req: Request, source: Addr) -> Hashable | None:
        via = req.top_via
        branch = req.branch
        method = req.method
        if branch and branch.startswith("z9hG4bK") and via is not None:
            return (branch, via.host.lower(), via.port, method)
        cid = req.call_id
        if cid is None:
            return None
        frm = req.headers.get("From") or ""
        tag = frm.partition(";tag=")[2].partition(";")[0]
        return (cid, tag, req.cseq[0], method, source)

    def lookup(self, key: Hashable, now: float) -> object | None:
        """None: a new request (now marked Trying); PENDING: absorb it; else the stored answer."""
        self._expire(now)
        hit = self._table.get(key)
        if hit is None:
            self._table[key] = PENDING
            self._order.append((now + self.lifetime, key))
            if len(self._table) > self.max_entries:
                _, old = self._order.popleft()
                self._table.pop(old, None)
            return None
        if hit is PENDING:
            self.absorbed += 1
        else:
            self.resent += 1
        return hit

    def answered(self, key: Hashable, answer: object) -> None:
        """The final response went out: retransmissions get `answer` from now on."""
        if key in self._table:
            self._table[key] = answer

    def _expire(self, now: float) -> None:
        order, table = self._order, self._table
        while order and order[0][0] <= now:
            _, k = order.popleft()
            table.pop(k, None)

    def __len__(self) -> int:
        return len(self._table)
