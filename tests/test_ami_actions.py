"""AMI actions besides the SIP ones, against Asterisk 20's bytes as read from its source (not
captured from a running Asterisk): CoreSettings, CoreStatus, DeviceStateList,
ExtensionStateList, Events, ListCommands, the unknown-action error and ActionID echo.

Each constant names the C function its layout was read from. Only values that are the
daemon's own (run user, dates) are filled in; keys, order, words and blank lines are fixed."""

from __future__ import annotations

import grp
import os
import pwd
import re
import resource
from datetime import datetime
from pathlib import Path

import pytest

from sipqualify.api.ami import ACTIONS
from sipqualify.api.ami_actions import ALL, CLASS_BITS, event_mask, list_commands, mask_classes

from .helpers import AmiClient, endpoint, free_port, start_ami, wait_for


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


# main/manager.c action_coresettings (13's source; SoundsSearchCustomDir after CoreHTTPenabled as
# Asterisk 20.5+ prints it, added with asterisk.conf sounds_search_custom_dir). `%f` of 0.0.
# SystemName is empty (no systemname in asterisk.conf): `SystemName: ` with its space.
CORESETTINGS = crlf("""Response: Success
ActionID: cs-1
AMIversion: 9.0.0
AsteriskVersion: 20.20.1
SystemName: {empty}
CoreMaxCalls: 0
CoreMaxLoadAvg: 0.000000
CoreRunUser: {user}
CoreRunGroup: {group}
CoreMaxFilehandles: {files}
CoreRealTimeEnabled: No
CoreCDRenabled: No
CoreHTTPenabled: No
SoundsSearchCustomDir: No

""")

# main/manager.c action_corestatus: ast_strftime "%Y-%m-%d" / "%H:%M:%S" of the local time;
# CoreProcessedCalls since 20.12.0 ("manager.c: Add Processed Call Count to CoreStatus output")
CORESTATUS = crlf("""Response: Success
ActionID: st-1
CoreStartupDate: {sdate}
CoreStartupTime: {stime}
CoreReloadDate: {rdate}
CoreReloadTime: {rtime}
CoreCurrentCalls: 0
CoreProcessedCalls: 0

""")

# res/res_manager_devicestate.c action_devicestatelist: astman_send_listack, then per cached
# device "Event: %s" + ActionID + devicestate.c devstate_to_ami's "Device: %s\r\nState: %s\r\n"
# (no Privilege line: the blob's class is not printed), then astman_send_list_complete_start/end
DEVICESTATELIST = crlf("""Response: Success
ActionID: ds-1
EventList: start
Message: Device State Changes will follow

Event: DeviceStateChange
ActionID: ds-1
Device: SIP/dead
State: UNAVAILABLE

Event: DeviceStateChange
ActionID: ds-1
Device: SIP/dyn
State: UNAVAILABLE

Event: DeviceStateChange
ActionID: ds-1
Device: SIP/noq
State: NOT_INUSE

Event: DeviceStateChange
ActionID: ds-1
Device: SIP/ok
State: NOT_INUSE

Event: DeviceStateListComplete
ActionID: ds-1
EventList: Complete
ListItems: 4

""")

# main/pbx.c action_extensionstatelist with an empty hints container (13-20: the container
# always exists, so no "No dialplan hints are available" error; that check is master's)
EXTENSIONSTATELIST = crlf("""Response: Success
ActionID: es-1
EventList: start
Message: Extension Statuses will follow

Event: ExtensionStateListComplete
ActionID: es-1
EventList: Complete
ListItems: 0

""")

# main/manager.c action_listcommands: astman_start_ack, "%s: %s (Priv: %s)\r\n" for each action
# the user may write (or that needs nothing), in ast_manager_register_struct's alphabetical
# order; the XML synopsis ends in a space, authority_to_str appends "all"; privileges as
# chan_sip, manager.c, res_manager_devicestate.c, pbx.c and res_pjsip register them
LISTCOMMANDS_ADMIN = crlf("""Response: Success
ActionID: lc-1
Challenge: Generate Challenge for MD5 Auth.  (Priv: <none>)
Command: Execute Asterisk CLI Command.  (Priv: command,all)
CoreSettings: Show PBX core settings (version etc).  (Priv: system,reporting,all)
CoreStatus: Show PBX core status variables.  (Priv: system,reporting,all)
DeviceStateList: List the current known device states.  (Priv: call,reporting,all)
Events: Control Event Flow.  (Priv: <none>)
ExtensionStateList: List the current known extension states.  (Priv: call,reporting,all)
Getvar: Gets a channel variable or function value.  (Priv: call,reporting,all)
ListCommands: List available manager commands.  (Priv: <none>)
Login: Login Manager.  (Priv: <none>)
Logoff: Logoff Manager.  (Priv: <none>)
Ping: Keepalive command.  (Priv: <none>)
PJSIPQualify: Qualify a chan_pjsip endpoint.  (Priv: system,reporting,all)
PJSIPShowAors: Lists PJSIP AORs.  (Priv: system,all)
PJSIPShowContacts: Lists PJSIP Contacts.  (Priv: system,all)
PJSIPShowEndpoint: Detail listing of an endpoint and its objects.  (Priv: system,all)
PJSIPShowEndpoints: Lists PJSIP endpoints.  (Priv: system,all)
SIPpeers: List SIP peers (text format).  (Priv: system,reporting,all)
SIPpeerstatus: Show the status of one or all of the sip peers.  (Priv: system,all)
SIPqualifypeer: Qualify SIP peers.  (Priv: system,reporting,all)
SIPshowpeer: show SIP peer (text format).  (Priv: system,reporting,all)

""")


def local(t: float) -> tuple[str, str]:
    d = datetime.fromtimestamp(t)
    return f"{d:%Y-%m-%d}", f"{d:%H:%M:%S}"


async def test_coresettings_and_corestatus(tmp_path: Path) -> None:
    svc, ami_port = await start_ami(tmp_path, {"p": {"host": "127.0.0.1", "port": 9, "qualify": "no"}})
    try:
        c = await AmiClient.login(ami_port)
        await c.send("Action: CoreSettings\nActionID: cs-1\n\n")
        assert await c.block() == CORESETTINGS.format(
            empty="", user=pwd.getpwuid(os.geteuid()).pw_name, group=grp.getgrgid(os.getegid()).gr_name,
            files=resource.getrlimit(resource.RLIMIT_NOFILE)[0])

        # never reloaded: the reload time is the start-up time (ast_lastreloadtime starts so)
        await c.send("Action: CoreStatus\nActionID: st-1\n\n")
        sdate, stime = local(svc.counters.started)
        assert await c.block() == CORESTATUS.format(sdate=sdate, stime=stime, rdate=sdate, rtime=stime)
        await svc.reload()
        assert svc.counters.last_reload is not None
        rdate, rtime = local(svc.counters.last_reload)
        await c.send("Action: CoreStatus\nActionID: st-1\n\n")
        assert await c.block() == CORESTATUS.format(sdate=sdate, stime=stime, rdate=rdate, rtime=rtime)
        # without an ActionID, none is sent (idText empty)
        await c.send("Action: CoreStatus\n\n")
        assert re.fullmatch(r"Response: Success\r\nCoreStartupDate: \d{4}-\d\d-\d\d\r\n.*CoreProcessedCalls: 0"
                            r"\r\n\r\n", await c.block(), re.S)
        c.close()
    finally:
        await svc.close()


async def test_devicestatelist_and_extensionstatelist(tmp_path: Path) -> None:
    t, port = await endpoint(200)
    svc, ami_port = await start_ami(tmp_path, {
        "ok": {"host": "127.0.0.1", "port": port, "qualify": "yes", "qualifyfreq": 60},
        "dead": {"host": "127.0.0.1", "port": free_port(), "qualify": 500},
        "noq": {"host": "127.0.0.1", "port": 9, "qualify": "no"},
        "dyn": {"host": "dynamic", "secret": "x", "qualify": "yes"},  # not registered: no address
    })
    try:
        engine = svc.engine
        assert engine is not None
        await wait_for(lambda: engine.peer("ok").state == "OK"  # type: ignore[union-attr]
                       and engine.peer("dead").state == "UNREACHABLE")  # type: ignore[union-attr]
        c = await AmiClient.login(ami_port)
        await c.send("Action: DeviceStateList\nActionID: ds-1\n\n")
        assert await c.until("EventList: Complete") == DEVICESTATELIST
        await c.send("Action: ExtensionStateList\nActionID: es-1\n\n")
        assert await c.until("EventList: Complete") == EXTENSIONSTATELIST
        # a user that writes only `system` may not (call,reporting), as in Asterisk
        ro = await AmiClient.login(ami_port, "readonly", "ro")
        await ro.send("Action: DeviceStateList\nActionID: d\n\n")
        assert await ro.block() == "Response: Error\r\nActionID: d\r\nMessage: Permission denied\r\n\r\n"
        c.close()
        ro.close()
    finally:
        await svc.close()
        t.close()


async def test_listcommands_events_and_unknown_actions(tmp_path: Path) -> None:
    svc, ami_port = await start_ami(tmp_path, {"p": {"host": "127.0.0.1", "port": 9, "qualify": "no"}})
    try:
        c = await AmiClient.login(ami_port)
        await c.send("Action: ListCommands\nActionID: lc-1\n\n")
        assert await c.block() == LISTCOMMANDS_ADMIN
        # only what the user may write: `readonly` writes system
        ro = await AmiClient.login(ami_port, "readonly", "ro")
        await ro.send("Action: ListCommands\n\n")
        names = [line.split(":")[0] for line in (await ro.block()).split("\r\n")[1:-2]]
        assert names == ["Challenge", "CoreSettings", "CoreStatus", "Events", "ListCommands", "Login", "Logoff",
                         "Ping", "PJSIPQualify", "PJSIPShowAors", "PJSIPShowContacts", "PJSIPShowEndpoint",
                         "PJSIPShowEndpoints", "SIPpeers", "SIPpeerstatus",
                         "SIPqualifypeer", "SIPshowpeer"]

        # main/manager.c action_events: "Response: Success\r\n%sEvents: On\r\n\r\n" / Off, and
        # astman_send_error "Invalid event mask" only when strings_to_mask gives -1 (no mask)
        for mask, word in (("on", "On"), ("off", "Off"), ("system,call", "On"), ("nonsense", "Off"), ("0", "Off"),
                           ("sys,", "On"), ("all", "On"), ("No", "Off")):
            await c.send(f"Action: Events\nEventMask: {mask}\nActionID: ev\n\n")
            assert await c.block() == f"Response: Success\r\nActionID: ev\r\nEvents: {word}\r\n\r\n", mask
        await c.send("Action: Events\nActionID: ev\n\n")
        assert await c.block() == "Response: Error\r\nActionID: ev\r\nMessage: Invalid event mask\r\n\r\n"
        # the mask decides what comes: `call` lets SIPQualifyPeerDone through
        await c.send("Action: Events\nEventMask: call\n\n")
        assert await c.block() == "Response: Success\r\nEvents: On\r\n\r\n"
        await c.send("Action: SIPqualifypeer\nPeer: p\nActionID: q\n\n")
        assert "Event: SIPQualifyPeerDone\r\nPrivilege: call,all\r\nPeer: p\r\nActionID: q\r\n" in await c.until(
            "SIPQualifyPeerDone")

        # main/manager.c process_message: the unknown-action error, ActionID echoed only when not
        # empty (astman_send_response_full: ast_strlen_zero(id))
        await c.send("Action: QueueStatus\nActionID: u-1\n\n")
        assert await c.block() == ("Response: Error\r\nActionID: u-1\r\nMessage: Invalid/unknown command: "
                                   "QueueStatus. Use Action: ListCommands to show available commands.\r\n\r\n")
        await c.send("Action: QueueStatus\nActionID: \n\n")
        assert await c.block() == ("Response: Error\r\nMessage: Invalid/unknown command: "
                                   "QueueStatus. Use Action: ListCommands to show available commands.\r\n\r\n")
        c.close()
        ro.close()
    finally:
        await svc.close()


@pytest.mark.parametrize(("text", "mask"), [
    ("", -1),                      # ast_strlen_zero: the only error
    ("on", ALL), ("YES", ALL), ("off", 0), ("n", 0),  # ast_true / ast_false, any case
    ("3", 3), ("0", 0),            # all digits: atoi, a bit mask (3 = system,call)
    ("99999999999999999999", -1),  # atoi past LONG_MAX: strtol clamps, the int cast gives -1
    ("system,call", 3), ("call", 2), ("System", 0),  # labels are case-sensitive
    ("sys,", 1),                   # an item before a comma matches the labels it begins
    ("call,sys", 2),               # the last item must be exact
    (",call", ALL),                # an empty item matches every label, `all` included
    ("security", 1 << 18), ("all", ALL),
])
def test_event_mask_as_strings_to_mask(text: str, mask: int) -> None:
    assert event_mask(text) == mask


def test_mask_classes() -> None:
    assert mask_classes(ALL) is None
    assert mask_classes(3) == {"system", "call"}
    assert mask_classes(1 << 14) == frozenset()  # hooks: no class sipqualify sends
    assert mask_classes(sum(CLASS_BITS.values())) is None


def test_listcommands_for_a_reporting_writer() -> None:
    """(writeperm & authority) || authority == 0: `reporting` alone may run the SIP list actions
    chan_sip registers as system|reporting, not SIPpeerstatus (system only)."""
    names = [n for n, _ in list_commands(ACTIONS, frozenset({"reporting"}))]
    assert "SIPpeers" in names and "SIPshowpeer" in names and "SIPpeerstatus" not in names
    assert "Command" not in names and "Getvar" in names and "Ping" in names


async def test_login_events_mask_and_fullybooted_times(tmp_path: Path) -> None:
    """Login's `Events` is read by the same strings_to_mask as `Action: Events` (manager.c
    set_eventmask), and FullyBooted's LastReload counts from the last reload, Uptime from start."""
    svc, ami_port = await start_ami(tmp_path, {"p": {"host": "127.0.0.1", "port": 9, "qualify": "no"}})
    try:
        now = svc.counters.started
        svc.counters.started, svc.counters.last_reload = now - 100, now - 5
        c = await AmiClient.login(ami_port, events="sys,")  # `sys,` names system, as in Action: Events
        booted = await c.block()
        uptime = int(re.search(r"Uptime: (\d+)", booted).group(1))  # type: ignore[union-attr]
        last = int(re.search(r"LastReload: (\d+)", booted).group(1))  # type: ignore[union-attr]
        assert uptime >= 100 and 5 <= last < uptime, booted
        session = next(iter(svc.ami.sessions))  # type: ignore[union-attr]
        assert session.events_on and session.mask == frozenset({"system"})
        c.close()
        c = await AmiClient.login(ami_port, events="junk")  # names no class: events off
        await c.send("Action: Ping\nActionID: p\n\n")
        assert "Ping: Pong" in await c.block()
        assert any(not s.events_on for s in svc.ami.sessions)  # type: ignore[union-attr]
        c.close()
    finally:
        await svc.close()
