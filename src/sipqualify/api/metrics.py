"""Prometheus `/metrics`: read from the engine at scrape time, not updated on the hot path.

Per-peer series are capped (`max_peer_series`, default 10,000 peers in config order): a
carrier with a million phones gets aggregate series only beyond the cap. RTTs feed one cheap
histogram (bucket counts in a list) that the collector exposes; buckets are fit for VoIP,
1 ms to 10 s. Names follow Prometheus conventions: `sipqualify_` prefix, seconds, `_total`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from ..qualify.verdict import VERDICTS

if TYPE_CHECKING:
    from ..readmodel import ReadModel
    from ..views import PeerView

STATES = ("OK", "LAGGED", "UNREACHABLE", "UNKNOWN", "UNMONITORED")


def _label(v: str) -> str:
    if "\\" in v or '"' in v or "\n" in v:
        v = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return v


def render_peer_series(model: ReadModel, limit: int, remote: Sequence[PeerView] = ()) -> str:
    """The per-peer families in the Prometheus text format, written directly: with 10,000
    peers this is ~20x faster than going through prometheus-client's objects, so a scrape
    stays well under a second and never holds the event loop for long. `remote`: the static
    peers other nodes of the cluster qualify (`/metrics?fleet=1`), after this node's, within the
    same `limit`: their up, status, RTT and threshold as their owner stored them."""
    if model.engine_stats() is None or limit <= 0:
        return ""
    fams: dict[str, list[str]] = {k: [] for k in (
        "up", "status", "verdict", "flapping", "penalty", "est", "jitter", "loss", "rtt", "maxms", "qualifies", "retx",
        "trans", "resp", "tls", "flow_rtt", "t_up", "t_status", "t_rtt")}
    now = model.now()
    up, status, rtt, maxms = fams["up"], fams["status"], fams["rtt"], fams["maxms"]
    qual, retx, trans, resp = fams["qualifies"], fams["retx"], fams["trans"], fams["resp"]
    by_class = model.metrics.responses_by_peer
    n = 0
    for p in model.peers():
        if n >= limit:
            break
        n += 1
        name = _label(p.name)
        s = p.state
        lab = f'{{peer="{name}"}}'
        up.append(f"sipqualify_peer_up{lab} {1 if s in ('OK', 'LAGGED') else 0}")
        for k in STATES:
            status.append(f'sipqualify_peer_status{{peer="{name}",sipqualify_peer_status="{k}"}} {1 if k == s else 0}')
        v = p.verdict.verdict
        for k in VERDICTS:
            fams["verdict"].append(f'sipqualify_peer_verdict{{peer="{name}",verdict="{k}"}} {1 if k == v else 0}')
        if p.verdict.policy.flap is not None:  # flap damping on (qualify/flap.py)
            fams["flapping"].append(f"sipqualify_peer_flapping{lab} {1 if p.verdict.flapping else 0}")
            fams["penalty"].append(f"sipqualify_peer_flap_penalty{lab} {p.verdict.flap_penalty(now)!r}")
        ls = p.stats
        if ls is not None:
            if ls.count:
                fams["est"].append(f"sipqualify_peer_latency_estimate_seconds{lab} {ls.est!r}")
                fams["jitter"].append(f"sipqualify_peer_jitter_seconds{lab} {ls.jitter!r}")
            fams["loss"].append(f"sipqualify_peer_loss_ratio{lab} {ls.loss_pct / 100.0!r}")
        if p.rtt is not None:
            rtt.append(f"sipqualify_peer_rtt_seconds{lab} {p.rtt!r}")
        maxms.append(f"sipqualify_peer_qualify_threshold_seconds{lab} {p.maxms / 1000.0!r}")
        qual.append(f'sipqualify_peer_qualifies_total{{peer="{name}",outcome="answered"}} {p.qualifies}')
        qual.append(f'sipqualify_peer_qualifies_total{{peer="{name}",outcome="timeout"}} {p.timeouts}')
        retx.append(f"sipqualify_peer_retransmissions_total{lab} {p.retransmissions}")
        trans.append(f"sipqualify_peer_transitions_total{lab} {p.transitions}")
        if p.transport == "tls":
            days = model.tls_cert_days_left(p)
            if days is not None:
                fams["tls"].append(f"sipqualify_tls_cert_days_left{lab} {days!r}")
        if p.transport != "udp":
            ka = model.flow_keepalive(p)
            if ka is not None and ka["rtt_s"] is not None:
                fams["flow_rtt"].append(f"sipqualify_flow_keepalive_rtt_seconds{lab} {ka['rtt_s']!r}")
        for t in model.targets(p.name):  # qualify_targets = all: under the peer's place in the cap
            tlab = f'peer="{name}",target="{_label(t.target.label)}"'
            ts = t.state
            fams["t_up"].append(f"sipqualify_peer_target_up{{{tlab}}} {1 if ts in ('OK', 'LAGGED') else 0}")
            for k in STATES[:4]:
                fams["t_status"].append(
                    f'sipqualify_peer_target_status{{{tlab},sipqualify_peer_status="{k}"}} {1 if k == ts else 0}')
            if t.rtt is not None:
                fams["t_rtt"].append(f"sipqualify_peer_target_rtt_seconds{{{tlab}}} {t.rtt!r}")
        classes = by_class.get(p.name)
        if classes is not None:
            for i in range(1, 7):
                if classes[i]:
                    resp.append(f'sipqualify_peer_responses_total{{peer="{name}",class="{i}xx"}} {classes[i]}')
    for rv in remote:
        if n >= limit:
            break
        n += 1
        name = _label(rv.name)
        lab = f'{{peer="{name}"}}'
        s = rv.state
        up.append(f"sipqualify_peer_up{lab} {1 if s in ('OK', 'LAGGED') else 0}")
        for k in STATES:
            status.append(f'sipqualify_peer_status{{peer="{name}",sipqualify_peer_status="{k}"}} {1 if k == s else 0}')
        if rv.rtt_ms is not None and rv.state in ("OK", "LAGGED"):
            rtt.append(f"sipqualify_peer_rtt_seconds{lab} {rv.rtt_ms / 1000.0!r}")
        maxms.append(f"sipqualify_peer_qualify_threshold_seconds{lab} {rv.maxms / 1000.0!r}")
    heads = {
        "up": ("sipqualify_peer_up", "gauge", "1 if the peer answered its last qualify (OK or LAGGED)"),
        "status": ("sipqualify_peer_status", "gauge", "chan_sip qualify state of the peer (one series per state)"),
        "verdict": ("sipqualify_peer_verdict", "gauge", "verdict of the peer's policy (one series per verdict)"),
        "flapping": ("sipqualify_peer_flapping", "gauge", "1 while flap damping holds the peer's notifications back"),
        "penalty": ("sipqualify_peer_flap_penalty", "gauge", "flap damping penalty of the peer (decayed to now)"),
        "est": ("sipqualify_peer_latency_estimate_seconds", "gauge", "latency estimate (EWMA, Kamailio's EST)"),
        "jitter": ("sipqualify_peer_jitter_seconds", "gauge", "RFC 3550 jitter of successive RTTs"),
        "loss": ("sipqualify_peer_loss_ratio", "gauge", "unanswered share of the last 100 polls"),
        "rtt": ("sipqualify_peer_rtt_seconds", "gauge", "RTT of the last answered qualify"),
        "maxms": ("sipqualify_peer_qualify_threshold_seconds", "gauge", "qualify= (maxms) of the peer"),
        "qualifies": ("sipqualify_peer_qualifies_total", "counter", "qualify transactions by outcome"),
        "retx": ("sipqualify_peer_retransmissions_total", "counter", "OPTIONS retransmissions"),
        "trans": ("sipqualify_peer_transitions_total", "counter", "state transitions"),
        "resp": ("sipqualify_peer_responses_total", "counter", "responses to the peer's OPTIONS by status class"),
        "tls": ("sipqualify_tls_cert_days_left", "gauge", "days until the TLS peer's verified certificate expires"),
        "flow_rtt": ("sipqualify_flow_keepalive_rtt_seconds", "gauge",
                     "RTT of the last RFC 5626 CRLF keep-alive answered on the peer's TCP/TLS connection"),
        "t_up": ("sipqualify_peer_target_up", "gauge", "1 if the DNS target answered its last qualify"),
        "t_status": ("sipqualify_peer_target_status", "gauge", "state of the DNS target, one series per state"),
        "t_rtt": ("sipqualify_peer_target_rtt_seconds", "gauge", "RTT of the DNS target's last answered qualify"),
    }
    out: list[str] = []
    for key, lines in fams.items():
        name, typ, doc = heads[key]
        out.append(f"# HELP {name} {doc}")
        out.append(f"# TYPE {name} {typ}")
        out.extend(lines)
    return "\n".join(out) + "\n"


class SipqualifyCollector(Collector):
    def __init__(self, model: ReadModel, max_peer_series: int = 10_000) -> None:
        self.model = model
        self.max_peer_series = max_peer_series

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        model = self.model
        st = model.engine_stats()
        if st is None:
            return
        counts = dict.fromkeys(STATES, 0)
        for p in model.peers():
            counts[p.state] += 1
        g = GaugeMetricFamily("sipqualify_peers", "peers by qualify state", labels=["state"])
        for k, v in counts.items():
            g.add_metric([k], float(v))
        yield g
        yield GaugeMetricFamily("sipqualify_peer_series_limit", "per-peer series are exported for this many peers",
                                value=float(self.max_peer_series))
        groups = HistogramMetricFamily("sipqualify_rtt_seconds", "qualify RTT of answered transactions, per group",
                                       labels=["group"])
        for gname, h in sorted(model.metrics.rtt_groups.items()):
            groups.add_metric([gname], h.buckets(), h.sum)
        yield groups
        per_peer = HistogramMetricFamily("sipqualify_peer_rtt_histogram_seconds",
                                         "qualify RTT of peers marked rtt_histogram = true", labels=["peer"])
        for pname, h in sorted(model.metrics.rtt_peers.items())[: self.max_peer_series]:
            per_peer.add_metric([pname], h.buckets(), h.sum)
        yield per_peer
        ami = model.ami_stats()
        if ami is not None:
            ami_counters, sessions = ami
            c = CounterMetricFamily("sipqualify_ami_events", "AMI port happenings", labels=["what"])
            for what, v in ami_counters.items():
                c.add_metric([what], float(v))
            yield c
            yield GaugeMetricFamily("sipqualify_ami_sessions", "connected AMI clients", value=float(sessions))

        reg = model.registrar_stats()
        if reg is not None:
            gauges = ("bindings", "banned_sources")
            c = CounterMetricFamily("sipqualify_registrar_events", "REGISTER outcomes and registrar happenings",
                                    labels=["what"])
            for what, v in reg.items():
                if what not in gauges:
                    c.add_metric([what], float(v))
            yield c
            yield GaugeMetricFamily("sipqualify_registrar_bindings", "registered dynamic peers",
                                    value=float(reg["bindings"]))
            yield GaugeMetricFamily("sipqualify_registrar_banned_sources",
                                    "source addresses banned after repeated failures",
                                    value=float(reg["banned_sources"]))
        snap = model.tcp_stats()
        if snap is not None:
            c = CounterMetricFamily("sipqualify_tcp_events", "SIP over TCP happenings", labels=["what"])
            for what, v in snap.items():
                if isinstance(v, int | float) and what != "connections":
                    c.add_metric([what], float(v))
            yield c
            yield GaugeMetricFamily("sipqualify_tcp_connections", "open SIP TCP connections",
                                    value=float(snap["connections"]))
            g = GaugeMetricFamily("sipqualify_tcp_gauge", "SIP over TCP levels now (registered connections, "
                                  "unfinished-message bytes) and the limits in force", labels=["what"])
            for group in ("now", "limits"):
                for what, v in snap.get(group, {}).items():
                    if isinstance(v, int | float):
                        g.add_metric([what], float(v))
            yield g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield counter("sipqualify_qualify_requests", "qualify transactions started", st.polls)
        yield counter("sipqualify_transmissions", "OPTIONS datagrams sent (incl. retransmissions)", st.transmissions)
        yield counter("sipqualify_retransmissions", "OPTIONS retransmissions", st.retransmissions)
        yield counter("sipqualify_timeouts", "qualify transactions given up (no answer by 2 x qualify)", st.timeouts)
        yield counter("sipqualify_late_restarts", "pokes started again because a retransmission came due while "
                      "sipqualify was stalled (overload: not judged)", st.late_restarts)
        yield counter("sipqualify_inconclusive_timeouts", "give-ups not judged because our own sockets dropped "
                      "datagrams meanwhile (overload: poked again)", st.inconclusive)
        yield counter("sipqualify_receive_drops", "datagrams the kernel dropped on our full UDP receive buffers",
                      st.receive_drops)
        yield counter("sipqualify_transitions", "state transitions", st.transitions)
        resp = CounterMetricFamily("sipqualify_responses", "responses to our OPTIONS by status class",
                                   labels=["class"])
        for cls, v in st.responses_by_class.items():
            resp.add_metric([cls], float(v))
        yield resp
        bad = CounterMetricFamily("sipqualify_datagrams_rejected", "received datagrams dropped, by reason",
                                  labels=["reason"])
        bad.add_metric(["malformed"], float(st.rx_malformed))
        bad.add_metric(["stray"], float(st.stray_responses))
        bad.add_metric(["mismatched"], float(st.mismatched_responses))
        bad.add_metric(["retransmitted"], float(st.retransmitted_responses))
        yield bad
        yield counter("sipqualify_datagrams_received", "datagrams received on SIP sockets", st.rx_datagrams)
        yield counter("sipqualify_requests_answered", "requests sent to sipqualify and answered",
                      st.requests_answered)
        yield counter("sipqualify_icmp_errors", "ICMP errors for datagrams we sent", model.counters.icmp_errors)
        yield counter("sipqualify_source_errors", "qualify_source addresses that could not be bound (per attempt)",
                      model.counters.source_errors)
        yield counter("sipqualify_internal_errors", "bugs caught and survived", st.internal_errors)
        yield GaugeMetricFamily("sipqualify_event_loop_lag_seconds", "recent maximum event-loop lag",
                                value=model.counters.loop_lag_max_ms / 1000.0)
        yield GaugeMetricFamily("sipqualify_scheduler_lag_seconds", "how late the last timer batch ran",
                                value=model.counters.scheduler_lag_s)
        wd = model.watchdog_stats()
        if wd is not None:  # the liveness watchdog (qualify/watchdog.py)
            yield GaugeMetricFamily("sipqualify_schedule_lag_seconds", "how late the earliest due qualify timer is",
                                    value=float(model.scheduler_health()["lag_s"]))
            yield GaugeMetricFamily("sipqualify_overdue_peers", "qualified peers without a result for longer than "
                                    "twice their interval (last watchdog sweep)", value=float(wd.overdue_peers))
            yield counter("sipqualify_overdue_pokes", "pokes that ran later than their interval", wd.overdue_pokes)
            yield counter("sipqualify_poke_repairs", "lost pokes the watchdog re-armed", wd.repairs)
            yield counter("sipqualify_deferred_pokes", "pokes the rate cap deferred to a later slot", wd.deferred_pokes)
            yield GaugeMetricFamily("sipqualify_poke_defer_seconds", "how long the rate cap deferred the last "
                                    "deferred poke", value=wd.last_defer_s)
        health = model.storage_health()
        g = GaugeMetricFamily("sipqualify_storage_healthy", "1 while a database takes reads and writes, 0 during "
                              "a failure episode (the cause is in /readyz)", labels=["database"])
        for db, state in sorted(health.items()):
            g.add_metric([db], 1.0 if state.get("ok") else 0.0)
        yield g
        realtime = health.get("realtime") or {}  # 0 and 0 without realtime peers
        yield GaugeMetricFamily("sipqualify_realtime_writeback_queue", "realtime write-backs waiting for the "
                                "database", value=float(realtime.get("writeback_queue", 0)))
        yield GaugeMetricFamily("sipqualify_realtime_peers", "peers loaded from the realtime table",
                                value=float(realtime.get("peers", 0)))
        cl = model.cluster_status() or {}  # [cluster] (docs/scaling.md); zeros on a single node
        yield GaugeMetricFamily("sipqualify_cluster_members", "members of the cluster group this node sees",
                                value=float(len(cl.get("members", []))))
        yield GaugeMetricFamily("sipqualify_cluster_live", "1 while this node probes its share of the static peers "
                                "(inside its self-fence), 0 when fenced or without [cluster]",
                                value=1.0 if cl.get("live") else 0.0)
        yield GaugeMetricFamily("sipqualify_cluster_owned_peers", "static peers this node qualifies as its share",
                                value=float(cl.get("owned", 0)))
        yield counter("sipqualify_cluster_coordinator_failures", "heartbeats to the cluster coordinator that failed",
                      float(cl.get("failures", 0)))
        fleet = GaugeMetricFamily("sipqualify_fleet_peers", "static and dynamic peers of the whole fleet by the node "
                                  "that qualifies them and their stored state (shared store; read at most every 10 s)",
                                  labels=["node", "state"])
        for (owner, peer_state), n in sorted(model.fleet_counts().items()):
            fleet.add_metric([owner, peer_state], float(n))
        yield fleet
        if model.store is not None:
            ss = model.store.stats
            yield GaugeMetricFamily("sipqualify_store_queue", "rows waiting for the SQLite writer",
                                    value=float(ss.get("queue", 0)))
            yield GaugeMetricFamily("sipqualify_store_last_commit_seconds", "duration of the last SQLite commit",
                                    value=float(ss.get("last_commit_ms", 0.0)) / 1000.0)
            yield counter("sipqualify_store_samples_dropped", "RTT samples dropped because the disk stalled",
                          float(ss.get("samples_dropped", 0)))
