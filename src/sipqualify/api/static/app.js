// sipqualify dashboard: plain JS, no build. Every URL is relative (works under a proxy prefix);
// pages are hash routes (#/, #/peer/NAME, #/registrations, #/health).
"use strict";
(function () {
  const CSRF = document.querySelector('meta[name="csrf-token"]').content;
  const STATES = ["UNREACHABLE", "LAGGED", "UNKNOWN", "OK", "UNMONITORED"];
  const main = document.getElementById("main");
  const live = document.getElementById("live");
  const sipq = (window.sipq = { chart: null, applied: 0 }); // read by the browser tests

  // ---------------------------------------------------------------- helpers
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat(Infinity)) if (kid !== null && kid !== undefined) el.append(kid);
    return el;
  }
  async function api(path, opts) {
    const o = Object.assign({ credentials: "same-origin", headers: {} }, opts || {});
    if (o.method === "POST") o.headers["X-CSRF-Token"] = CSRF;
    const r = await fetch(path, o);
    if (r.status === 401) { location.href = "login"; throw new Error("logged out"); }
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }
  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "–");
  const ago = (t) => {
    if (!t) return "–";
    const s = Math.max(0, Date.now() / 1000 - t);
    return s < 90 ? `${Math.round(s)} s ago` : s < 5400 ? `${Math.round(s / 60)} min ago`
      : s < 129600 ? `${Math.round(s / 3600)} h ago` : `${Math.round(s / 86400)} d ago`;
  };
  const ms = (v) => (v === null || v === undefined ? "–" : `${v < 10 ? v.toFixed(2) : v.toFixed(1)} ms`);
  const badge = (state, text) => h("span", { class: `state s-${state}` }, text || state);
  const statusText = (state, lastms) => (state === "OK" || state === "LAGGED" ? `${state} (${lastms} ms)`
    : state === "UNMONITORED" ? "Unmonitored" : state);
  const CERT_WARN_DAYS = 14;
  const days = (d) => (d < 0 ? `expired ${(-d).toFixed(1)} days ago` : `${d.toFixed(1)} days left`);
  // a TLS peer's certificate close to its end (or past it): a badge beside its name
  const certBadge = (d) => (d === null || d === undefined || d >= CERT_WARN_DAYS ? null
    : h("span", { class: "cert-warn", title: `TLS certificate: ${days(d)}` }, d < 0 ? "cert expired" : `cert ${Math.floor(d)} d`));
  const beatState = (b, maxms) => (b.rtt_ms === null ? "UNREACHABLE" : b.rtt_ms > maxms ? "LAGGED" : "OK");
  function beats(list, maxms) {
    const top = Math.max(maxms || 1, ...list.map((b) => b.rtt_ms || 0));
    return h("div", { class: "beats", "aria-label": `last ${list.length} polls` }, list.map((b) => {
      const el = h("span", { class: `beat s-${beatState(b, maxms)}${b.rtt_ms === null ? " miss" : ""}`,
        title: `${when(b.time)}: ${b.rtt_ms === null ? "no answer" : ms(b.rtt_ms)}${b.status_code ? ` (${b.status_code})` : ""}` });
      if (b.rtt_ms !== null) el.style.height = `${Math.max(15, Math.min(100, (100 * b.rtt_ms) / top))}%`;
      return el;
    }));
  }

  // ---------------------------------------------------------------- live updates
  // Transitions from /events are collected and applied at most every 500 ms, in one animation
  // frame: a storm of 100,000 changes costs one repaint per half second, not one per event.
  const pending = new Map();
  const listeners = new Set();
  function connect() {
    const es = new EventSource("events");
    es.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
    es.onerror = () => {
      live.textContent = "reconnecting…"; live.classList.remove("on");
      // the browser retries a dropped stream by itself, but not one refused (503: too many streams)
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
    };
    es.addEventListener("transition", (e) => { const d = JSON.parse(e.data); pending.set(d.peer, d); });
    es.addEventListener("registry", (e) => { const d = JSON.parse(e.data); if (!pending.has(d.peer)) pending.set(d.peer, d); });
  }
  setInterval(() => {
    if (!pending.size) return;
    const batch = new Map(pending);
    pending.clear();
    requestAnimationFrame(() => { for (const cb of listeners) cb(batch); sipq.applied += batch.size; });
  }, 500);

  // ---------------------------------------------------------------- overview
  const ov = { q: "", state: "", group: "", sort: "state", offset: 0, limit: 100 };
  function overview() {
    const counts = h("div", { class: "counts", role: "group", "aria-label": "Peers per state" });
    const search = h("input", { type: "search", placeholder: "Search name, host, address", "aria-label": "Search", value: ov.q });
    const group = h("select", { "aria-label": "Group" }, h("option", { value: "" }, "All groups"));
    const sort = h("select", { "aria-label": "Sort" }, [["state", "Worst first"], ["name", "Name"], ["-rtt", "Slowest first"],
      ["rtt", "Fastest first"], ["changed", "Recently changed"]].map(([v, t]) => h("option", { value: v, selected: v === ov.sort }, t)));
    const info = h("span", {});
    const prev = h("button", { type: "button", "aria-label": "Previous page" }, "‹");
    const next = h("button", { type: "button", "aria-label": "Next page" }, "›");
    const tbody = h("tbody", {});
    const table = h("table", { id: "peers" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "State"),
      h("th", { scope: "col" }, "Peer"), h("th", { scope: "col", class: "num" }, "RTT"),
      h("th", { scope: "col", class: "hide-sm" }, "Last polls"), h("th", { scope: "col", class: "hide-sm" }, "Address"),
      h("th", { scope: "col", class: "hide-sm" }, "Changed"))), tbody);
    main.replaceChildren(h("h1", {}, "Peers"), counts,
      h("div", { class: "toolbar" }, search, group, sort, h("div", { class: "pager" }, prev, info, next)), table);
    const rows = new Map();
    let timer = null, seq = 0;
    async function load() {
      const my = ++seq;
      const p = new URLSearchParams({ offset: ov.offset, limit: ov.limit, sort: ov.sort, beats: 30 });
      if (ov.q) p.set("q", ov.q); if (ov.state) p.set("state", ov.state); if (ov.group) p.set("group", ov.group);
      const d = await api(`api/v1/overview?${p}`);
      if (my !== seq || !main.contains(table)) return;
      counts.replaceChildren(...STATES.map((s) => h("button", { type: "button", class: `count s-${s}`, "aria-pressed": String(ov.state === s),
        "data-state": s, onclick: () => { ov.state = ov.state === s ? "" : s; ov.offset = 0; load(); } },
        h("b", {}, String(d.counts[s] || 0)), s)));
      if (group.options.length !== d.groups.length + 1)
        group.replaceChildren(h("option", { value: "" }, "All groups"), ...d.groups.map((g) => h("option", { value: g, selected: g === ov.group }, g)));
      info.textContent = d.matched ? `${d.offset + 1}–${Math.min(d.offset + d.limit, d.matched)} of ${d.matched}` : "no peers";
      prev.disabled = d.offset === 0; next.disabled = d.offset + d.limit >= d.matched;
      rows.clear();
      tbody.replaceChildren(...d.peers.map((r) => {
        const tr = h("tr", { "data-peer": r.name, "data-state": r.state },
          h("td", { class: "st" }, badge(r.state, r.status)),
          h("td", {}, h("a", { href: `#/peer/${encodeURIComponent(r.name)}` }, r.name),
            r.silenced_until ? h("span", { class: "silenced", title: `webhooks silenced until ${when(r.silenced_until)}` },
              ` silenced until ${when(r.silenced_until)}`) : null,
            certBadge(r.tls_cert_days_left),
            r.description ? h("div", { class: "muted" }, r.description) : null),
          h("td", { class: "num rtt" }, ms(r.rtt_ms)),
          h("td", { class: "hide-sm" }, beats(r.beats, r.maxms)),
          h("td", { class: "hide-sm" }, r.addr_ip ? `${r.addr_ip}:${r.addr_port}` : r.host, r.regcontact ? h("div", { class: "muted" }, r.regcontact) : null),
          h("td", { class: "hide-sm changed", title: when(r.last_change) }, ago(r.last_change)));
        rows.set(r.name, tr);
        return tr;
      }));
    }
    const reload = () => load().catch((e) => { info.textContent = e.message; });
    const soon = () => { clearTimeout(timer); timer = setTimeout(reload, 300); };
    search.addEventListener("input", () => { ov.q = search.value.trim(); ov.offset = 0; soon(); });
    group.addEventListener("change", () => { ov.group = group.value; ov.offset = 0; reload(); });
    sort.addEventListener("change", () => { ov.sort = sort.value; ov.offset = 0; reload(); });
    prev.addEventListener("click", () => { ov.offset = Math.max(0, ov.offset - ov.limit); reload(); });
    next.addEventListener("click", () => { ov.offset += ov.limit; reload(); });
    let refetch = null;
    const onBatch = (batch) => {
      for (const [name, ev] of batch) {
        const tr = rows.get(name);
        if (!tr || !ev.new) continue;
        tr.dataset.state = ev.new;
        tr.querySelector(".st").replaceChildren(badge(ev.new, statusText(ev.new, ev.lastms)));
        tr.querySelector(".changed").textContent = ago(ev.time);
        tr.classList.remove("changed"); void tr.offsetWidth; tr.classList.add("changed");
      }
      // counts, order and heartbeats from the server, at most every 2 s
      if (!refetch) refetch = setTimeout(() => { refetch = null; reload(); }, 2000);
    };
    listeners.add(onBatch);
    const every = setInterval(reload, 15000);
    reload();
    return () => { listeners.delete(onBatch); clearInterval(every); clearTimeout(refetch); };
  }

  // ---------------------------------------------------------------- peer page
  const RANGES = { "1 h": 3600, "24 h": 86400, "7 d": 604800 };
  let range = 3600;
  function peerPage(name) {
    const title = h("h1", {}, name);
    const ranges = h("div", { class: "ranges", role: "group", "aria-label": "Time range" });
    const result = h("span", { class: "result", role: "status", "aria-live": "polite" });
    const qualify = h("button", { type: "button", id: "qualify" }, "Qualify now");
    // silence (a maintenance window): webhooks held back until then; the time is the viewer's local time
    const until = h("input", { type: "datetime-local", id: "silence-until", "aria-label": "Silence webhooks until" });
    const silence = h("button", { type: "button", id: "silence" }, "Silence until");
    const unsilence = h("button", { type: "button", id: "unsilence", hidden: true }, "End silence");
    const chartBox = h("div", { class: "chart", id: "chart" });
    const summary = h("p", { class: "muted" });
    const timeline = h("div", { class: "timeline", "aria-label": "State timeline" });
    const details = h("div", { class: "grid" });
    const transitions = h("tbody", {});
    const exchange = h("div", { class: "exchange", id: "exchange" }, h("p", { class: "muted" }, "Waiting for the next poll…"));
    main.replaceChildren(h("p", {}, h("a", { href: "#/" }, "← all peers")), title,
      h("div", { class: "actions" }, qualify, ranges, h("span", { class: "actions" }, until, silence, unsilence), result), h("h2", {}, "Round-trip time"), chartBox, summary,
      h("h2", {}, "State timeline"), timeline, h("h2", {}, "Details"), details,
      h("h2", {}, "Last exchange"), exchange,
      h("h2", {}, "Transitions"), h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "From"),
        h("th", {}, "To"), h("th", { class: "num" }, "RTT"))), transitions));
    const dl = (pairs) => h("dl", { class: "card" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === "" || v === null ? "–" : String(v))]));
    async function loadPeer() {
      const p = await api(`api/v1/peers/${encodeURIComponent(name)}`);
      title.replaceChildren(name, badge(p.state, p.status),
        p.silenced_until ? h("span", { class: "silenced" }, `silenced until ${when(p.silenced_until)}`) : null);
      unsilence.hidden = !p.silenced_until;
      if (!until.value) { // an hour from now, in local time
        const d = new Date(Date.now() + 3600e3 - new Date().getTimezoneOffset() * 60e3);
        until.value = d.toISOString().slice(0, 16);
      }
      details.replaceChildren(
        dl([["Host", p.host], ["Address", p.addr_ip ? `${p.addr_ip}:${p.addr_port} (${p.transport})` : ""],
          ["Qualify", p.maxms ? `${p.maxms} ms every ${p.qualifyfreq_ms / 1000} s` : "off"],
          ["Last qualify", when(p.last_qualify)], ["Last change", when(p.last_change)], ["Description", p.description],
          ...(p.tls_cert_days_left !== null && p.tls_cert_days_left !== undefined
            ? [["TLS certificate", days(p.tls_cert_days_left)]] : [])]),
        dl([["Registered contact", p.regcontact], ["User-Agent", p.useragent],
          ["Expires in", p.expire >= 0 ? `${p.expire} s` : ""], ["NAT", `${p.nat.join(", ")}${p.nat_detected ? " (detected)" : ""}`]]),
        dl([["Qualifies", p.qualifies], ["Timeouts", p.timeouts], ["Retransmissions", p.retransmissions],
          ["Last RTT", ms(p.rtt_ms)]]));
      return p;
    }
    async function loadHistory(p) {
      const now = Date.now() / 1000, since = now - range, step = Math.max(1, range / 360);
      const [r, t] = await Promise.all([api(`api/v1/peers/${encodeURIComponent(name)}/rtt?since=${since}&until=${now}&step=${step}`),
        api(`api/v1/peers/${encodeURIComponent(name)}/history?since=${since}&limit=5000`)]);
      const s = r.series;
      const polls = s.reduce((a, b) => a + b.count, 0), answered = s.reduce((a, b) => a + b.answered, 0);
      summary.textContent = polls ? `Uptime ${((100 * answered) / polls).toFixed(2)} % over ${polls} polls; `
        + `LAGGED above ${p.maxms} ms.` : "No polls stored in this range.";
      // from the first thing stored in the range: a daemon that started 3 min ago shows 3 min
      const first = Math.min(s.length ? s[0].time : now, t.transitions.length ? t.transitions[0].time : now);
      const start = Math.max(since, Math.min(first, now - 60));
      drawChart(s, t.transitions, p.maxms, start, now);
      drawTimeline(t.transitions, p.state, start, now);
      transitions.replaceChildren(...t.transitions.slice().reverse().map((x) => h("tr", {}, h("td", {}, when(x.time)),
        h("td", {}, badge(x.old)), h("td", {}, badge(x.new)), h("td", { class: "num" }, ms(x.rtt_ms)))));
    }
    function drawChart(series, trans, maxms, since, until) {
      const css = getComputedStyle(document.documentElement);
      const col = (v) => css.getPropertyValue(v).trim();
      const x = series.map((b) => b.time), avg = series.map((b) => b.avg_ms), max = series.map((b) => b.max_ms);
      const thr = series.map(() => maxms || null);
      const marks = {
        hooks: { draw: [(u) => {
          const ctx = u.ctx; ctx.save(); ctx.lineWidth = 2;
          if (maxms) { // the LAGGED threshold, across the whole range
            const py = u.valToPos(maxms, "y", true);
            ctx.strokeStyle = col("--lagged"); ctx.lineWidth = 1.5; ctx.setLineDash([6, 4]);
            ctx.beginPath(); ctx.moveTo(u.bbox.left, py); ctx.lineTo(u.bbox.left + u.bbox.width, py); ctx.stroke();
            ctx.setLineDash([]); ctx.lineWidth = 2;
          }
          for (const t of trans) { // transitions: a vertical line in the colour of the new state
            const px = u.valToPos(t.time, "x", true);
            ctx.strokeStyle = col(`--${t.new.toLowerCase()}`) || "#888";
            ctx.beginPath(); ctx.moveTo(px, u.bbox.top); ctx.lineTo(px, u.bbox.top + u.bbox.height); ctx.stroke();
          }
          ctx.restore();
        }] },
      };
      const opts = {
        width: Math.max(280, chartBox.clientWidth - 16), height: 260, plugins: [marks],
        // log scale: a 0.5 ms trunk and the 2000 ms threshold on one chart
        scales: { x: { time: true, min: since, max: until }, y: { distr: 3, log: 10, range: (u, lo, hi) => [
          10 ** Math.floor(Math.log10(Math.max(0.01, lo || 0.1))), 10 ** Math.ceil(Math.log10(Math.max(hi || 1, (maxms || 1) * 1.2)))] } },
        axes: [{ stroke: col("--muted"), grid: { stroke: col("--line") } },
          { stroke: col("--muted"), grid: { stroke: col("--line") }, label: "ms" }],
        series: [{}, { label: "avg", stroke: col("--accent"), width: 2, points: { show: series.length < 60 } },
          { label: "max", stroke: col("--muted"), width: 1 },
          { label: "LAGGED above", stroke: col("--lagged"), width: 0, points: { show: false } }],
      };
      if (sipq.chart) sipq.chart.destroy();
      sipq.chart = new uPlot(opts, [x, avg, max, thr], chartBox);
      chartBox.dataset.points = String(x.length);
    }
    function drawTimeline(trans, current, since, until) {
      const segs = [];
      let state = trans.length ? trans[0].old : current, t0 = since;
      for (const t of trans) { segs.push([state, t0, t.time]); state = t.new; t0 = t.time; }
      segs.push([state, t0, until]);
      timeline.replaceChildren(...segs.map(([s, a, b]) => {
        const el = h("span", { class: `s-${s}`, title: `${s}: ${when(a)} – ${when(b)}` });
        el.style.width = `${(100 * Math.max(0, b - a)) / (until - since)}%`;
        return el;
      }));
    }
    // the last OPTIONS exchange: captured only while somebody watches the peer (POST capture,
    // renewed while the page is open), read every 3 s and redrawn when it changed
    const enc = encodeURIComponent(name);
    let watchedUntil = 0, shown = "";
    async function watch() {
      try { watchedUntil = (await api(`api/v1/peers/${enc}/capture`, { method: "POST" })).watching_until; }
      catch (e) { exchange.replaceChildren(h("p", { class: "muted" }, `Not captured: ${e.message}`)); }
    }
    const side = (title, m, where) => h("section", { class: "msg card" },
      h("h3", {}, title, " ", h("span", { class: "muted" }, `${where} · ${when(m.time)} · ${m.size} bytes`)),
      h("pre", {}, m.bytes));
    async function loadExchange() {
      if (Date.now() / 1000 > watchedUntil - 300) await watch();
      const x = await api(`api/v1/peers/${enc}/exchange`);
      const key = x.request ? `${x.request.time}/${x.request.transmissions}/${x.response ? x.response.time : ""}` : "";
      if (!x.request || key === shown) return;
      shown = key;
      const q = x.request, r = x.response;
      exchange.dataset.status = r ? String(r.status) : "";
      exchange.replaceChildren(
        side("Request", q, `to ${q.to}${q.transmissions > 1 ? ` · sent ${q.transmissions} times (first shown)` : ""}`),
        r ? side("Response", r, `from ${r.from} · ${ms(x.rtt_ms)} after the first transmission`)
          : h("section", { class: "msg card" }, h("h3", {}, "Response"), h("p", { class: "muted" }, "no answer (yet)")));
    }
    const refresh = () => loadPeer().then(loadHistory).catch((e) => { result.textContent = e.message; });
    ranges.replaceChildren(...Object.entries(RANGES).map(([label, s]) => h("button", { type: "button", "aria-pressed": String(s === range),
      onclick: (e) => { range = s; for (const b of ranges.children) b.setAttribute("aria-pressed", String(b === e.target)); refresh(); } }, label)));
    qualify.addEventListener("click", async () => {
      qualify.disabled = true; result.textContent = "qualifying…";
      try {
        const r = await api(`api/v1/peers/${encodeURIComponent(name)}/qualify?wait=1`, { method: "POST" });
        const res = r.result;
        result.textContent = res && res.answered ? `answered ${res.status_code} in ${ms(res.rtt_ms)} — ${r.status}`
          : `no answer after ${res ? res.transmissions : "?"} transmissions — ${r.status}`;
        await Promise.all([refresh(), loadExchange()]);
      } catch (e) { result.textContent = `failed: ${e.message}`; }
      qualify.disabled = false;
    });
    async function setSilence(t) {
      try {
        await api(`api/v1/peers/${encodeURIComponent(name)}/silence${t ? `?until=${t}` : ""}`, { method: "POST" });
        result.textContent = t ? `webhooks silenced until ${when(t)}` : "silence ended";
        await loadPeer();
      } catch (e) { result.textContent = `failed: ${e.message}`; }
    }
    silence.addEventListener("click", () => { const t = new Date(until.value).getTime() / 1000; if (t) setSilence(t); });
    unsilence.addEventListener("click", () => setSilence(null));
    const onBatch = (batch) => { if (batch.has(name)) refresh(); };
    listeners.add(onBatch);
    refresh();
    const exchanges = setInterval(() => loadExchange().catch(() => {}), 3000);
    watch().then(loadExchange).catch(() => {});
    return () => { listeners.delete(onBatch); clearInterval(exchanges); if (sipq.chart) { sipq.chart.destroy(); sipq.chart = null; } };
  }

  // ---------------------------------------------------------------- registrations
  function registrationsPage() {
    const tbody = h("tbody", {});
    main.replaceChildren(h("h1", {}, "Registrations"), h("table", { id: "registrations" }, h("thead", {}, h("tr", {},
      ...["Peer", "Contact", "Address", "Transport", "User-Agent", "NAT", "Expires"].map((c, i) =>
        h("th", { scope: "col", class: i > 3 && i < 6 ? "hide-sm" : null }, c)))), tbody));
    async function load() {
      const d = await api("api/v1/registrations");
      tbody.replaceChildren(...(d.registrations.length ? d.registrations.map((r) => h("tr", { "data-peer": r.peer },
        h("td", {}, h("a", { href: `#/peer/${encodeURIComponent(r.peer)}` }, r.peer)), h("td", {}, r.contact),
        h("td", {}, `${r.address}:${r.port}`), h("td", {}, r.transport), h("td", { class: "hide-sm" }, r.useragent),
        h("td", { class: "hide-sm" }, r.nat ? "yes" : "no"), h("td", { title: when(r.expires_at) }, `${r.expires_in} s`)))
        : [h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No registered contacts."))]));
    }
    load();
    const every = setInterval(load, 5000);
    const onBatch = () => load();
    listeners.add(onBatch);
    return () => { clearInterval(every); listeners.delete(onBatch); };
  }

  // ---------------------------------------------------------------- health
  function healthPage() {
    const grid = h("div", { class: "grid", id: "health" });
    main.replaceChildren(h("h1", {}, "Health"), grid);
    let last = null;
    async function load() {
      const s = await api("api/v1/status");
      const t = performance.now() / 1000;
      // since the last look, or on average since start at the first
      const rate = (last ? (s.engine.polls - last.polls) / (t - last.t) : s.engine.polls / Math.max(1, s.uptime_s)).toFixed(1);
      last = { polls: s.engine.polls, t };
      const card = (title, pairs) => h("section", { class: "card" }, h("h2", {}, title),
        h("dl", {}, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])));
      const p = s.process || {};
      grid.replaceChildren(
        card("Daemon", [["Up since", when(s.service.started)], ["Peers", `${s.peers} (${s.qualified} qualified)`],
          ["Reloads", s.service.reloads], ["CPU", p.cpu_s !== undefined ? `${p.cpu_s.toFixed(1)} s` : "–"],
          ["Memory (RSS)", p.rss_bytes !== undefined ? `${(p.rss_bytes / 1048576).toFixed(1)} MiB` : "–"]]),
        card("Engine", [["Transactions/s", rate], ["Scheduler lag", `${(s.service.scheduler_lag_s * 1000).toFixed(1)} ms`],
          ["Event loop lag (max)", `${s.service.loop_lag_max_ms.toFixed(1)} ms`], ["Polls", s.engine.polls],
          ["Timeouts", s.engine.timeouts], ["Retransmissions", s.engine.retransmissions]]),
        card("Store", [["Queue", s.store.queue ?? "–"], ["Last commit", s.store.last_commit_ms !== undefined ? `${s.store.last_commit_ms} ms` : "–"],
          ["Samples dropped", s.store.samples_dropped ?? "–"], ["Failing", s.store.failing ? "yes" : "no"]]),
        card("Registrar", s.registrar ? [["Bindings", s.registrar.bindings], ["Registered", s.registrar.registered],
          ["Forbidden", s.registrar.forbidden], ["Banned sources", s.registrar.banned_sources]] : [["Registrar", "no dynamic peers"]]));
    }
    load();
    const every = setInterval(load, 5000);
    return () => clearInterval(every);
  }

  // ---------------------------------------------------------------- router
  let leave = null;
  function route() {
    if (leave) leave();
    const hash = location.hash.replace(/^#\/?/, "");
    const [page, ...rest] = hash.split("/");
    const current = page === "peer" || !page ? "peers" : page;
    for (const a of document.querySelectorAll("nav a")) {
      if (a.dataset.nav === current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    leave = page === "peer" ? peerPage(decodeURIComponent(rest.join("/")))
      : page === "registrations" ? registrationsPage() : page === "health" ? healthPage() : overview();
    main.focus({ preventScroll: true });
  }
  document.getElementById("logout").addEventListener("click", async () => {
    await fetch("logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": CSRF } });
    location.href = "login";
  });
  window.addEventListener("hashchange", route);
  connect();
  route();
})();
