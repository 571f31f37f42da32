"""Qualify policy as data: what the engine consults instead of scattered `if`s.

`CHAN_SIP` is Asterisk's behaviour and the default. Later policies (N-of-M failure
thresholds, 2xx-only, configurable not-OK interval) are new instances of this class,
not new branches in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model import DEFAULT_FREQ_NOTOK_MS
from ..sip.transaction import POLICIES, RetransmitPolicy


@dataclass(frozen=True, slots=True)
class QualifyPolicy:
    name: str
    giveup_factor: float = 2.0  # sip_poke_noanswer at giveup_factor x maxms after the first send
    freq_notok_ms: int = DEFAULT_FREQ_NOTOK_MS  # re-poll interval while LAGGED / UNREACHABLE
    reply_min: int = 200  # final responses in [reply_min, reply_max] count as "reachable"
    reply_max: int = 699

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


CHAN_SIP = QualifyPolicy("chan_sip")
