"""What Asterisk 20 answers to the AMI actions peer-watching tools send besides the SIP ones
(CoreSettings, CoreStatus, DeviceStateList, Events, ListCommands): the fields, their order
and their values, as (key, value) pairs. `ami.py` turns them into wire blocks.

Read from Asterisk's source, not captured from a running Asterisk (see docs/ami.md for what
each answer was read from and what was inferred).
"""

from __future__ import annotations

import grp
import os
import pwd
import resource
from datetime import datetime

from ..views import PeerView

Pairs = list[tuple[str, object]]

#: the Asterisk version compat mode copies (asterisk-observed.md); AsteriskVersion says it
#: so that tools pick Asterisk 20's dialect (AMI 9.0.0, PeerStatus without Time, ...)
ASTERISK_VERSION = "20.20.1"
AMI_VERSION = "9.0.0"  # include/asterisk/manager.h AMI_VERSION of the 20 branch

#: include/asterisk/manager.h EVENT_FLAG_*, in main/manager.c `perms[]` order
CLASS_BITS: dict[str, int] = {
    "system": 1 << 0, "call": 1 << 1, "log": 1 << 2, "verbose": 1 << 3, "command": 1 << 4, "agent": 1 << 5,
    "user": 1 << 6, "config": 1 << 7, "dtmf": 1 << 8, "reporting": 1 << 9, "cdr": 1 << 10, "dialplan": 1 << 11,
    "originate": 1 << 12, "agi": 1 << 13, "cc": 1 << 15, "aoc": 1 << 16, "test": 1 << 17, "security": 1 << 18,
    "message": 1 << 30,
}
ALL = 0x7FFFFFFF  # perms[] "all" is INT_MAX
_TRUE = ("yes", "true", "y", "t", "1", "on")  # ast_true
_FALSE = ("no", "false", "n", "f", "0", "off")  # ast_false


def _instring(big: str, small: str) -> bool:
    """manager.c ast_instring(big, small, ','): is `small` one of big's comma-separated items?
    Asterisk's quirks kept: an item before a comma matches any label it begins (`sys,` is
    system), so an empty one matches every label; the last item must be exact; a trailing
    comma ends the search (case-sensitive throughout)."""
    items = big.split(",")
    if any(small.startswith(item) for item in items[:-1]):
        return True
    return small == items[-1] and (len(items) == 1 or items[-1] != "")


def event_mask(text: str) -> int:
    """manager.c strings_to_mask: the `EventMask` of `Action: Events` (and of Login's `Events`)
    as Asterisk reads it: -1 (an error) when empty, a number as a bit mask (atoi), ast_false 0,
    ast_true every class, else the classes named; an unknown word names none (0, Events: Off)."""
    if not text:
        return -1
    if text.isascii() and text.isdigit():
        n = min(int(text), 2**63 - 1) & 0xFFFFFFFF  # atoi: strtol clamps, the cast keeps 32 bits
        return n - 2**32 if n >= 2**31 else n
    if text.lower() in _FALSE:
        return 0
    if text.lower() in _TRUE:
        return ALL
    mask = ALL if _instring(text, "all") else 0
    for name, bit in CLASS_BITS.items():
        if _instring(text, name):
            mask |= bit
    return mask


def mask_classes(mask: int) -> frozenset[str] | None:
    """The classes a positive mask lets through; None for all of them."""
    classes = frozenset(name for name, bit in CLASS_BITS.items() if mask & bit)
    return None if len(classes) == len(CLASS_BITS) else classes


def privilege(need: str) -> str:
    """manager.c authority_to_str for an action's write classes: the classes in perms[] order,
    then `all` (INT_MAX shares a bit with every class); `<none>` for none."""
    return f"{need},all" if need else "<none>"


def list_commands(actions: dict[str, tuple[str, str]], write: frozenset[str]) -> Pairs:
    """action_listcommands: `Name: Synopsis.  (Priv: classes,all)` for each action the user may
    run (one of its write classes, or none needed), in ast_manager_register_struct's order
    (alphabetical, case-insensitive). The XML synopsis keeps a trailing space, hence two spaces."""
    return [(name, f"{syn}  (Priv: {privilege(need)})")
            for name, (need, syn) in sorted(actions.items(), key=lambda a: a[0].lower())
            if not need or any(c in write for c in need.split(","))]


def _run_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _run_group() -> str:
    try:
        return grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        return str(os.getegid())


def core_settings(banner: str) -> Pairs:
    """action_coresettings, Asterisk 20's fields and order. AMIversion is the banner's (so the
    two agree); AsteriskVersion the version compat mode copies; the run user and group and the
    open-files limit are the daemon's own; sipqualify has no call limit, load limit, realtime,
    CDR, AMI over HTTP or sounds (`No`, `0` as Asterisk prints them unset)."""
    ami_version = banner.rpartition("/")[2] if "/" in banner else AMI_VERSION
    return [("AMIversion", ami_version), ("AsteriskVersion", ASTERISK_VERSION), ("SystemName", ""),
            ("CoreMaxCalls", 0), ("CoreMaxLoadAvg", f"{0.0:f}"), ("CoreRunUser", _run_user()),
            ("CoreRunGroup", _run_group()),
            ("CoreMaxFilehandles", resource.getrlimit(resource.RLIMIT_NOFILE)[0]),
            ("CoreRealTimeEnabled", "No"), ("CoreCDRenabled", "No"), ("CoreHTTPenabled", "No"),
            ("SoundsSearchCustomDir", "No")]


def core_status(started: float, reloaded: float | None) -> Pairs:
    """action_corestatus: start-up and last reload as local `%Y-%m-%d` / `%H:%M:%S` (never
    reloaded: the start-up, as Asterisk's ast_lastreloadtime starts equal to ast_startuptime);
    sipqualify has no calls."""
    start = datetime.fromtimestamp(started)
    reload = datetime.fromtimestamp(started if reloaded is None else reloaded)
    return [("CoreStartupDate", f"{start:%Y-%m-%d}"), ("CoreStartupTime", f"{start:%H:%M:%S}"),
            ("CoreReloadDate", f"{reload:%Y-%m-%d}"), ("CoreReloadTime", f"{reload:%H:%M:%S}"),
            ("CoreCurrentCalls", 0), ("CoreProcessedCalls", 0)]


#: chan_sip's sip_devicestate for a peer with an address and no calls: UNAVAILABLE when
#: `maxms && (lastms > maxms || lastms < 0)` (lagged or unreachable), NOT_INUSE otherwise
DEVICE_STATE = {"OK": "NOT_INUSE", "UNKNOWN": "NOT_INUSE", "UNMONITORED": "NOT_INUSE",
                "LAGGED": "UNAVAILABLE", "UNREACHABLE": "UNAVAILABLE"}


def device_state(v: PeerView) -> str:
    """sip_devicestate for a peer with no calls: UNAVAILABLE without an address (a dynamic peer
    not registered), else by its qualify state."""
    return DEVICE_STATE.get(v.state, "NOT_INUSE") if v.addr_ip else "UNAVAILABLE"
