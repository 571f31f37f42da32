"""Qualify policy as data: what the engine consults instead of scattered `if`s.

`CHAN_SIP` is Asterisk's behaviour and the default. Later policies (N-of-M failure
thresholds, 2xx-only, configurable not-OK interval) are new instances of this class,
not new branches in the engine.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

from ..model import DEFAULT_FREQ_NOTOK_MS, PeerConfig
from ..sip.transaction import POLICIES, RetransmitPolicy
from .state import next_poke_in


@dataclass(frozen=True, slots=True)
class QualifyPolicy:
    name: str
    giveup_factor: float = 2.0  # sip_poke_noanswer at giveup_factor x maxms after the first send
    freq_notok_ms: int = DEFAULT_FREQ_NOTOK_MS  # re-poll interval while LAGGED / UNREACHABLE
    reply_min: int = 200  # final responses in [reply_min, reply_max] count as "reachable"
    reply_max: int = 699
    fixed_rate: bool = False  # next poll on a grid from the first send of this one (PJSIP), not after the result

    def giveup_s(self, maxms: int) -> float:
        return self.giveup_factor * maxms / 1000.0

    @property
    def freq_notok_s(self) -> float:
        return self.freq_notok_ms / 1000.0

    def counts_as_reply(self, status: int) -> bool:
        return self.reply_min <= status <= self.reply_max

    @staticmethod
    def retransmit_for(name: str) -> RetransmitPolicy:
        return POLICIES.get(name, POLICIES["asterisk"])


    def next_poll(self, first_sent: float, now: float, freq_s: float, state_after: str) -> float:
        """When the next scheduled poll leaves, once a poll has its result at `now`."""
        if not self.fixed_rate:
            return now + next_poke_in(state_after, freq_s, self.freq_notok_s)
        # res_pjsip: a drift-free grid of qualify_frequency (asterisk-pjsip-observed.md §3.5). A
        # tick that passed while this poll was running is skipped, not sent late: polls never
        # overlap (Asterisk piles up to 7 transactions on a dead contact: a deliberate difference)
        ticks = max(1, math.floor((now - first_sent) / freq_s + 1e-9) + 1)
        return first_sent + ticks * freq_s


CHAN_SIP = QualifyPolicy("chan_sip")
# res_pjsip (asterisk-pjsip-observed.md §0): the give-up is qualify_timeout itself (the peer's
# maxms holds it), no shorter re-poll while down, any final answer counts (2xx-only: only 2xx)
PJSIP = QualifyPolicy("pjsip", giveup_factor=1.0, fixed_rate=True)
PJSIP_2XX = QualifyPolicy("pjsip_2xx", giveup_factor=1.0, fixed_rate=True, reply_max=299)


def policy_for(cfg: PeerConfig, default: QualifyPolicy) -> QualifyPolicy:
    """A peer's policy: the engine's own for sip.conf peers, PJSIP's for pjsip.conf contacts."""
    if cfg.semantics != "pjsip":
        return default
    return PJSIP_2XX if cfg.qualify_2xx_only else PJSIP


def initial_delay_s(key: str, freq_s: float, max_initial_s: float = 0.0) -> float:
    """The first poll of a PJSIP AOR: res_pjsip draws U(0, min(max_initial_qualify_time or
    qualify_frequency, qualify_frequency)), at least 1 ms (§3.7). Derived from the AOR's name
    instead of drawn, so a restart spreads the polls the same way (and tests are exact)."""
    span = min(max_initial_s, freq_s) if max_initial_s > 0 else freq_s
    frac = zlib.crc32(key.encode()) / 2**32
    return max(0.001, round(frac * span, 3))
