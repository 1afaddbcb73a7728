// Aero explorer: plain JavaScript over the read API, charts by uPlot (vendored, see vendor/README.txt).
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token");  // #token=... when AERO_API_TOKEN is set
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, token ? { Authorization: `Bearer ${token}` } : {});
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${(await resp.text()).slice(0, 200)}`);
  return resp.json();
}

function status(text) { document.getElementById("status").textContent = text; }
function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
  if (text) e.textContent = text;
  return e;
}
function table(id, rows, columns) {
  const t = document.getElementById(id);
  t.replaceChildren();
  const head = el("tr");
  columns.forEach(([, label]) => head.appendChild(el("th", {}, label)));
  t.appendChild(head);
  rows.forEach(r => {
    const tr = el("tr");
    columns.forEach(([key]) => {
      const v = r[key];
      tr.appendChild(el("td", {}, typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : String(v ?? "–")));
    });
    t.appendChild(tr);
  });
}
const charts = {};
function chart(id, opts, data) {
  if (charts[id]) charts[id].destroy();
  const box = document.getElementById(id);
  box.replaceChildren();
  charts[id] = new uPlot(Object.assign({ width: 900, height: 420 }, opts), data, box);
  return charts[id];
}

// Merge series sampled at different times onto one x axis (uPlot's aligned data); gaps stay null.
function align(series) {
  const xs = Array.from(new Set(series.flatMap(s => s.t))).sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  return [xs, ...series.map(s => {
    const ys = new Array(xs.length).fill(null);
    s.t.forEach((t, i) => { ys[index.get(t)] = s.v[i]; });
    return ys;
  })];
}

// -- wind tunnel ---------------------------------------------------------------------------------------------
const CHANNELS = ["FLOW_V", "FB_FZ", "FB_FX", "FB_MY", "PT_01", "PT_02", "PT_10", "PT_20", "CL_FW_L", "FLOW_PT"];
let runs = [];

async function loadRuns() {
  const keep = new Set(Array.from(document.getElementById("wt-runs").selectedOptions).map(o => o.value));
  runs = (await api("/windtunnel/runs?limit=1000")).items.reverse();
  const select = document.getElementById("wt-runs");
  select.replaceChildren(...runs.map(r => {
    const o = el("option", { value: r.run_id }, `${r.run_id} · QC ${r.qc_status}${r.released ? " · released" : ""}`);
    o.selected = keep.has(r.run_id);
    return o;
  }));
  if (!keep.size && runs.length) select.options[0].selected = true;
}

async function plotRuns() {
  const chosen = Array.from(document.getElementById("wt-runs").selectedOptions).map(o => o.value);
  const channels = Array.from(document.getElementById("wt-channels").selectedOptions).map(o => o.value);
  if (!chosen.length || !channels.length) return;
  const processed = document.getElementById("wt-processed").checked;
  const withBaseline = document.getElementById("wt-baseline").checked;
  const wanted = [...chosen];
  if (withBaseline) {
    for (const run of chosen) {
      try {
        const cmp = await api(`/windtunnel/runs/${encodeURIComponent(run)}/comparison`);
        const base = cmp.metrics.length ? cmp.metrics[0].baseline_run_id : null;
        if (base && !wanted.includes(base)) wanted.push(base);
      } catch (e) { /* a run without a comparison has no baseline to show */ }
    }
  }
  const series = [];
  for (const run of wanted) {
    const q = `channels=${channels.map(encodeURIComponent).join(",")}&max_points=2000&processed=${processed}`;
    const out = await api(`/windtunnel/runs/${encodeURIComponent(run)}/series?${q}`);
    for (const c of channels) {
      if (out.series[c]) series.push({ label: `${run} ${c}${chosen.includes(run) ? "" : " (baseline)"}`, ...out.series[c] });
    }
  }
  const data = align(series);
  chart("wt-chart", {
    title: `${channels.join(", ")} — ${wanted.join(" vs ")}`,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: false } },
    axes: [{ label: "seconds since the run's first sample" }, {}],
    series: [{ label: "t (s)" }, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 1, spanGaps: true }))],
  }, data);
  document.getElementById("wt-note").textContent =
    series.map(s => `${s.label}: ${s.points} of ${s.of} points`).join(" · ");
  document.getElementById("wt-chart").dataset.series = String(series.length);
  document.getElementById("wt-chart").dataset.points = String(data[0].length);
}

// -- fleet, F1, rig, forecast ----------------------------------------------------------------------------------
async function loadFleet() {
  const minutes = (await api("/tires/fleet?limit=1440")).items;
  chart("fleet-chart", { title: "fleet status", height: 300, series: [{ label: "minute" },
    { label: "active vehicles", stroke: COLORS[0] }, { label: "open low pressure", stroke: COLORS[1] },
    { label: "open high temperature", stroke: COLORS[4] }, { label: "open rapid loss", stroke: COLORS[3] }] },
    [minutes.map(m => Date.parse(m.minute) / 1000), minutes.map(m => m.active_vehicles),
     minutes.map(m => m.open_low_pressure), minutes.map(m => m.open_high_temperature),
     minutes.map(m => m.open_rapid_pressure_loss)]);
  const open = await api("/tires/alerts?open=true&limit=200");
  table("fleet-alerts", open.items, [["vehicle_id", "vehicle"], ["tire", "tire"], ["alert_type", "alert"],
    ["opened_at", "opened"], ["peak_value", "peak"], ["duration_s", "for (s)"]]);
}

async function loadF1() {
  const sessions = (await api("/f1/sessions")).items;
  const select = document.getElementById("f1-session");
  select.replaceChildren(...sessions.map(s => el("option", { value: s.session_id }, `${s.session_id} (${s.laps} laps)`)));
  if (sessions.length) await showLaps(sessions[0].session_id);
}

async function showLaps(session) {
  const laps = (await api(`/f1/sessions/${encodeURIComponent(session)}/laps`)).laps;
  table("f1-laps", laps, [["lap", "lap"], ["lap_time_s", "time (s)"], ["avg_speed_kph", "avg km/h"],
    ["max_speed_kph", "max km/h"], ["fuel_used_kg", "fuel kg"]]);
  const options = () => laps.map(l => el("option", { value: l.lap }, `lap ${l.lap}${l.lap_time_s ? ` (${l.lap_time_s.toFixed(3)} s)` : ""}`));
  document.getElementById("f1-lap-a").replaceChildren(...options());
  document.getElementById("f1-lap-b").replaceChildren(...options());
  if (laps.length > 1) document.getElementById("f1-lap-b").selectedIndex = laps.length - 1;
  const timed = laps.filter(l => l.lap_time_s != null);
  const best = Math.min(...timed.map(l => l.lap_time_s));
  chart("f1-chart", { title: `${session}: lap times`, scales: { x: { time: false } },
    series: [{ label: "lap" }, { label: "lap time (s)", stroke: COLORS[0] }, { label: "delta to best (s)", stroke: COLORS[1] }] },
    [timed.map(l => l.lap), timed.map(l => l.lap_time_s), timed.map(l => l.lap_time_s - best)]);
}

// time into lap `b` minus lap `a` at a's distances (b's time interpolated on its own distance axis)
function deltaTime(a, b) {
  return a.distance_m.map((d, i) => {
    let lo = 0, hi = b.distance_m.length - 1;
    if (d < b.distance_m[0] || d > b.distance_m[hi]) return null;
    while (hi - lo > 1) { const m = (lo + hi) >> 1; if (b.distance_m[m] <= d) lo = m; else hi = m; }
    const span = b.distance_m[hi] - b.distance_m[lo] || 1;
    const tb = b.t_s[lo] + (b.t_s[hi] - b.t_s[lo]) * (d - b.distance_m[lo]) / span;
    return tb - a.t_s[i];
  });
}

async function compareLaps() {
  const session = document.getElementById("f1-session").value;
  const la = document.getElementById("f1-lap-a").value, lb = document.getElementById("f1-lap-b").value;
  const [a, b] = await Promise.all([la, lb].map(l =>
    api(`/f1/sessions/${encodeURIComponent(session)}/laps/${l}/trace?max_points=1500`)));
  const bOnA = a.distance_m.map(d => {  // b's speed at a's distances (nearest point below)
    let lo = 0, hi = b.distance_m.length - 1;
    while (hi - lo > 1) { const m = (lo + hi) >> 1; if (b.distance_m[m] <= d) lo = m; else hi = m; }
    return b.speed_kph[lo];
  });
  chart("f1-trace", { title: `${session}: lap ${la} vs lap ${lb}`, scales: { x: { time: false }, dt: {} },
    axes: [{ label: "distance (m)" }, { label: "km/h" }, { scale: "dt", side: 1, label: "delta (s)" }],
    series: [{ label: "distance (m)" }, { label: `lap ${la} speed`, stroke: COLORS[0] },
      { label: `lap ${lb} speed`, stroke: COLORS[1] }, { label: "delta time (s)", stroke: COLORS[2], scale: "dt" }] },
    [a.distance_m, a.speed_kph, bOnA, deltaTime(a, b)]);
  document.getElementById("f1-trace").dataset.series = "3";
}

async function loadRig() {
  const from = document.getElementById("rig-from").value, to = document.getElementById("rig-to").value;
  const q = [from && `from=${from}`, to && `to=${to}`, "limit=1000"].filter(Boolean).join("&");
  const kpis = (await api(`/rig/kpis?${q}`)).items;
  const rigs = Array.from(new Set(kpis.map(k => k.rig_id))).sort();
  const days = Array.from(new Set(kpis.map(k => k.day))).sort();
  const x = days.map(d => Date.parse(`${d}T00:00:00Z`) / 1000);
  const by = (rig, key) => days.map(d => (kpis.find(k => k.rig_id === rig && k.day === d) || {})[key] ?? null);
  chart("rig-chart", { title: "rig KPIs", series: [{ label: "day" },
    ...rigs.flatMap((r, i) => [{ label: `${r} avg °C`, stroke: COLORS[i % COLORS.length] },
      { label: `${r} alerts`, stroke: COLORS[i % COLORS.length], dash: [4, 4] }])] },
    [x, ...rigs.flatMap(r => [by(r, "avg_temperature_c"), by(r, "alert_count")])]);
}

async function loadForecast() {
  const stations = (await api("/forecast/stations")).items;
  const select = document.getElementById("fc-station");
  select.replaceChildren(...stations.map(s => el("option", { value: s.station }, s.station)));
  if (stations.length) await showStation(stations[0].station, stations);
}

async function showStation(station, stations) {
  const info = stations.find(s => s.station === station) || {};
  document.getElementById("fc-champion").textContent = info.champion
    ? `champion: ${info.champion.kind} ${info.champion.version}` : "no champion in service yet";
  try {
    const ev = await api(`/forecast/${encodeURIComponent(station)}/evaluation`);
    table("fc-eval", ev.table || [], [["model", "model"], ["rmse", "RMSE °C"], ["mae", "MAE"], ["n", "hours"]]);
  } catch (e) { table("fc-eval", [], [["model", "model"]]); }
  try {
    const p = await api(`/forecast/${encodeURIComponent(station)}/predictions?limit=1000`);
    const rows = p.items;
    chart("fc-chart", { title: `${station}: forecast vs actual`, series: [{ label: "hour" },
      { label: "actual", stroke: COLORS[0] }, { label: "forecast", stroke: COLORS[1] }] },
      [rows.map(r => Date.parse(r.target_ts) / 1000), rows.map(r => r.actual), rows.map(r => r.forecast)]);
  } catch (e) { document.getElementById("fc-chart").textContent = "no predictions yet"; }
}

// -- wiring ------------------------------------------------------------------------------------------------------
const loaders = { windtunnel: loadRuns, fleet: loadFleet, f1: loadF1, rig: loadRig, forecast: loadForecast };
document.querySelectorAll("nav button").forEach(b => b.addEventListener("click", async () => {
  document.querySelectorAll("nav button, section").forEach(e => e.classList.remove("active"));
  b.classList.add("active");
  document.getElementById(b.dataset.tab).classList.add("active");
  try { await loaders[b.dataset.tab](); status("ok"); } catch (e) { status(e.message); }
}));
document.getElementById("wt-channels").replaceChildren(...CHANNELS.map((c, i) => {
  const o = el("option", { value: c }, c); o.selected = i < 2; return o;
}));
document.getElementById("wt-plot").addEventListener("click", () => plotRuns().then(() => status("ok"), e => status(e.message)));
document.getElementById("f1-session").addEventListener("change", e => showLaps(e.target.value));
document.getElementById("f1-compare").addEventListener("click", () => compareLaps().then(() => status("ok"), e => status(e.message)));
document.getElementById("rig-load").addEventListener("click", () => loadRig().catch(e => status(e.message)));
document.getElementById("fc-station").addEventListener("change", async e =>
  showStation(e.target.value, (await api("/forecast/stations")).items));
// a run landing while the page is open appears in the list by itself
setInterval(() => { if (document.getElementById("windtunnel").classList.contains("active")) loadRuns().catch(() => {}); }, 10000);
loadRuns().then(() => status("ok"), e => status(e.message));
