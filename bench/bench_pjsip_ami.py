#!/usr/bin/env python3
"""Cost of the PJSIP AMI answers and dialplan functions with a big pjsip.conf.

N endpoints, each with its own AOR (one static contact, qualify_frequency 60) and an outbound
auth; every second AOR also has a registered contact. Measured (median of 5, one CPU):
- the whole snapshot (`pjsip_snapshot`: `GET /api/v1/pjsip`, `PJSIPShowEndpoints`, `pjsip show ...`);
- `PJSIPShowEndpoints` (the answer text from that snapshot) and its size;
- `PJSIPShowEndpoint` of one endpoint, snapshot of its AORs included, as the AMI action does;
- `Getvar PJSIP_CONTACT(id,status)`, snapshot of its AOR included, as the AMI action and
  `sipqualify get` (`GET /api/v1/pjsip?aor=`) do.

    python bench/bench_pjsip_ami.py --endpoints 10000     # the figures in docs/performance.md
    python bench/bench_pjsip_ami.py --short               # CI: 500 endpoints
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "src"))

from sipqualify.api.ami_pjsip import endpoint_detail, endpoint_list  # noqa: E402
from sipqualify.config import load_config  # noqa: E402
from sipqualify.pjsip_compat import pjsip_snapshot, read_function  # noqa: E402


def conf_text(n: int) -> str:
    out = ["[udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:5060\n",
           "[out]\ntype=auth\nusername=trunk\npassword=s3cret\n"]
    for i in range(n):
        out.append(f"[ep{i}]\ntype=aor\nqualify_frequency=60\nmax_contacts=1\n"
                   f"contact=sip:gw{i}@10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:5060\n"
                   f"[ep{i}]\ntype=endpoint\naors=ep{i}\noutbound_auth=out\n")
    return "".join(out)


def median_ms(fn: Callable[[], object], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=10000)
    ap.add_argument("--short", action="store_true", help="500 endpoints (CI)")
    args = ap.parse_args()
    n = 500 if args.short else args.endpoints
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pjsip.conf"
        path.write_text(conf_text(n))
        t0 = time.perf_counter()
        cfg = load_config(str(path))
        load_s = time.perf_counter() - t0
    pj = cfg.pjsip
    assert pj is not None and not cfg.errors
    regs = []
    for i in range(0, n, 2):
        uri = f"sip:phone{i}@192.0.2.{i % 250 + 1}:5062"
        regs.append({"peer": f"ep{i};@{hashlib.md5(uri.encode()).hexdigest()}", "contact": uri, "call_id": "c",
                     "useragent": "ua", "address": "192.0.2.1", "port": 5062, "expires_at": 1796151963.0})
    states = {p: ("OK", 0.0012) for p in cfg.peers}

    def state_of(p: str) -> tuple[str | None, float | None]:
        return states.get(p, ("OK", 0.002))

    def snap(only: list[str] | None = None) -> dict[str, object]:
        return pjsip_snapshot(pj, state_of, regs, only)

    s = snap()
    listing = endpoint_list(s, pj, "a")
    assert listing is not None
    cid = s["aors"][n // 2]["contacts"][0]["id"]  # type: ignore[index]
    assert read_function(s, "PJSIP_CONTACT", f"{cid},status")[0] == 0
    print(f"endpoints: {n} (registered contacts: {len(regs)}); pjsip.conf load {load_s * 1000:.0f} ms")
    print(f"snapshot:                          {median_ms(snap):8.1f} ms")
    print(f"PJSIPShowEndpoints (text only):    {median_ms(lambda: endpoint_list(s, pj, 'a')):8.1f} ms, "
          f"{len(listing) / 1e6:.1f} MB")
    name = f"ep{n // 2}"
    aors = pj.endpoints[name].aors
    print(f"PJSIPShowEndpoint (with snapshot): {median_ms(lambda: endpoint_detail(snap(aors), pj, name, 'a')):8.1f} ms")
    aor = [str(cid).split("@@")[0]]
    print(f"Getvar PJSIP_CONTACT (w/ snapshot):"
          f"{median_ms(lambda: read_function(snap(aor), 'PJSIP_CONTACT', f'{cid},status')):8.1f} ms")


if __name__ == "__main__":
    main()
