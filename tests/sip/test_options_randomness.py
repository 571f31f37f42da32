"""The qualify OPTIONS' random parts (sip/options.py): every request's branch (64 bits), From tag
(32 bits) and Call-ID (128 bits) are fresh hex digits from the kernel's CSPRNG, drawn from a pool
refilled every 256 pokes; none is handed out twice, across refills too, and what the request
carries is what its transaction is matched on."""

from __future__ import annotations

import re

from sipqualify.sip.message import parse_message
from sipqualify.sip.options import _POOL_POKES, build_options


def test_every_request_has_fresh_branch_tag_and_call_id_across_pool_refills() -> None:
    n = 3 * _POOL_POKES + 7  # three refills and part of a fourth
    seen_branch, seen_tag, seen_cid = set(), set(), set()
    for k in range(n):
        o = build_options("sip:p1@192.0.2.1:5060", ("127.0.0.1", 5060), cseq=102 + k)
        assert re.fullmatch(r"z9hG4bK[0-9a-f]{16}", o.branch)
        assert re.fullmatch(r"[0-9a-f]{32}@127\.0\.0\.1:5060", o.call_id)
        m = parse_message(o.data)
        assert m.branch == o.branch
        assert m.call_id == o.call_id
        assert m.cseq == (102 + k, "OPTIONS")
        tag = re.search(r";tag=as([0-9a-f]+)", m.headers.get("From") or "")
        assert tag is not None and len(tag.group(1)) == 8
        seen_branch.add(o.branch)
        seen_tag.add(tag.group(1))
        seen_cid.add(o.call_id)
    # 64/32/128 random bits: a repeat among ~800 would mean digits were handed out twice
    assert len(seen_branch) == len(seen_cid) == n
    assert len(seen_tag) >= n - 1  # 32 bits: a birthday collision is ~1e-4 here


def test_branch_tag_and_call_id_of_one_request_do_not_share_digits() -> None:
    o = build_options("sip:p1@192.0.2.1", ("127.0.0.1", 5060))
    tag = re.search(rb";tag=as([0-9a-f]+)", o.data)
    assert tag is not None
    parts = [o.branch[7:], tag.group(1).decode(), o.call_id.split("@")[0]]
    assert [len(p) for p in parts] == [16, 8, 32]
    joined = "".join(parts)
    o2 = build_options("sip:p1@192.0.2.1", ("127.0.0.1", 5060))
    assert o2.branch[7:] not in joined and o2.call_id.split("@")[0] not in joined
