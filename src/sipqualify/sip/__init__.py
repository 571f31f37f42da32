"""SIP messages, transactions and the OPTIONS sent to qualify a peer (sans-I/O)."""

from __future__ import annotations

import os
from typing import Final

#: take the C versions of the per-transaction steps (sip/_speedups.c) where they are built;
#: `SIPQUALIFY_CSIP=0` takes the Python ones, which stay the reference (fastpath, options, stats)
CSIP: Final = os.environ.get("SIPQUALIFY_CSIP", "1") != "0"
