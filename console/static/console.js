// fleetlearn console: polls /api/<page> every 2 s and draws tables and SVG charts by hand.
// No framework, no build step, nothing from a network: this file is the whole front end.
"use strict";

const PAGE = document.body.dataset.page;
const REFRESH_MS = 2000;
const main = document.getElementById("main");
const live = document.getElementById("live");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function table(headers, rows, id) {
  const t = el("table", id ? { id } : {});
  t.append(el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))));
  const body = el("tbody");
  for (const r of rows) body.append(el("tr", {}, ...r.map((c) => el("td", {}, c ?? "–"))));
  t.append(body);
  return t;
}

function stat(label, value, id) {
  return el("div", { class: "stat" }, el("span", { class: "label" }, label),
    el("span", { class: "value", id }, value));
}

function counts(title, obj, id, byVersion) {
  const rows = Object.entries(obj).sort(byVersion
    ? (a, b) => (a[0] === "none") - (b[0] === "none") || Number(b[0]) - Number(a[0])  // newest first
    : (a, b) => b[1] - a[1]);
  return el("section", {}, el("h3", {}, title),
    rows.length ? table(["", "devices"], rows, id) : el("p", {}, "none"));
}

const NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// A line chart of several series over a shared x; each point is a circle (class "point").
function lineChart(title, xs, series, id) {
  const W = 640, H = 220, P = 36;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", id });
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const box = el("section", {}, el("h3", {}, title));
  if (!xs.length || !all.length) { box.append(el("p", {}, "no data yet")); return box; }
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...all), Math.max(...all)];
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const X = (x) => P + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (W - 2 * P);
  const Y = (y) => H - P - ((y - y0) / (y1 - y0)) * (H - 2 * P);
  root.append(svg("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis" }));
  root.append(svg("line", { x1: P, y1: P, x2: P, y2: H - P, class: "axis" }));
  for (const [y, label] of [[y0, y0], [y1, y1]]) {
    const t = svg("text", { x: 2, y: Y(y) + 4, class: "tick" });
    t.textContent = Number(label).toPrecision(3);
    root.append(t);
  }
  series.forEach((s, i) => {
    const pts = xs.map((x, j) => [x, s.values[j]]).filter((p) => p[1] !== null && p[1] !== undefined);
    root.append(svg("polyline", {
      points: pts.map(([x, y]) => `${X(x)},${Y(y)}`).join(" "), class: `line s${i}`,
    }));
    for (const [x, y] of pts) {
      const c = svg("circle", { cx: X(x), cy: Y(y), r: 2.5, class: `point s${i}` });
      c.dataset.x = x; c.dataset.y = y;
      root.append(c);
    }
  });
  const legend = el("p", { class: "legend" },
    ...series.map((s, i) => el("span", { class: `s${i}` }, `● ${s.name}  `)));
  box.append(root, legend);
  return box;
}

function ago(s) {
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}
const time = (t) => new Date(t * 1000).toLocaleTimeString();
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)}%`);

function serverStats(s) {
  return el("div", { class: "stats" },
    stat("committed version", s.version, "committed-version"),
    stat("published version", s.published_version, "published-version"),
    stat("buffered updates", s.pending, "pending"),
    stat("accepted", s.accepted, "accepted-total"),
    stat("refused", s.refused, "refused-total"));
}

const RENDER = {
  fleet(d) {
    const rows = d.devices.map((r) => [r.device_id, r.state, r.model_version, r.reason,
      ago(r.last_seen_s), r.accepted, r.refused, r.last_outcome]);
    const filter = el("input", { id: "filter", placeholder: "filter by device id", value: query });
    filter.addEventListener("change", () => { query = filter.value; refresh(); });
    return [serverStats(d.server),
      el("div", { class: "stats" },
        stat("devices", d.devices_total, "devices-total"), stat("online", d.online, "devices-online")),
      el("div", { class: "row" }, counts("by state", d.by_state, "by-state"),
        counts("by model version", d.by_version, "by-version", true),
        counts("eligibility reasons", d.by_reason, "by-reason")),
      el("h3", {}, `devices (${d.devices.length} of ${d.matched} shown)`), filter,
      table(["device", "state", "model", "reason", "last seen", "accepted", "refused", "last"],
        rows, "devices")];
  },
  models(d) {
    const r = d.releases;
    const xs = r.map((x) => x.version);
    return [serverStats(d.server),
      lineChart("accuracy by version (server test set)", xs, [
        { name: "serving", values: r.map((x) => x.serving && x.serving.accuracy) },
        { name: "iterate", values: r.map((x) => x.iterate && x.iterate.accuracy) }], "accuracy-chart"),
      lineChart("loss by version (iterate)", xs,
        [{ name: "loss", values: r.map((x) => x.iterate && x.iterate.loss) }], "loss-chart"),
      table(["version", "published", "serving accuracy", "iterate accuracy", "iterate macro-F1",
        "epsilon"], r.slice().reverse().map((x) => [x.version, time(x.at),
        pct(x.serving && x.serving.accuracy), pct(x.iterate && x.iterate.accuracy),
        pct(x.iterate && x.iterate.macro_f1), x.epsilon === null ? "–" : x.epsilon.toFixed(3)]),
        "releases")];
  },
  updates(d) {
    const reasons = [...new Set(d.flow.flatMap((b) => Object.keys(b).filter((k) => k !== "t")))];
    const xs = d.flow.map((b) => b.t);
    return [el("div", { class: "stats" }, stat("accepted", d.accepted, "accepted-total"),
        stat("refused", Object.values(d.refused).reduce((a, b) => a + b, 0), "refused-total")),
      counts("refused by reason", d.refused, "refused-by-reason"),
      lineChart(`updates per ${d.bucket_s} s, by outcome`, xs,
        reasons.map((k) => ({ name: k, values: d.flow.map((b) => b[k] || 0) })), "flow-chart"),
      el("h3", {}, "per device (most refused first)"),
      table(["device", "accepted", "refused (by reason)", "last"], d.devices.map((r) => [
        r.device_id, r.accepted,
        Object.entries(r.refused).map(([k, v]) => `${k}: ${v}`).join(", ") || "0", r.last]),
      "update-devices")];
  },
  privacy(d) {
    if (!d.enabled) return [el("p", { id: "privacy-off" }, "Differential privacy is off for this server.")];
    const r = d.releases;
    return [el("div", { class: "stats" },
        stat("epsilon spent", d.epsilon_spent.toFixed(3), "epsilon-spent"),
        stat("budget", d.epsilon_budget.toFixed(3), "epsilon-budget"),
        stat("delta", d.delta.toExponential(1), "delta"),
        stat("noised releases", d.releases_noised, "releases-noised"),
        stat("budget left", pct(1 - d.epsilon_spent / d.epsilon_budget), "budget-left")),
      d.exhausted ? el("p", { class: "alert" }, "Budget exhausted: training has stopped.") : "",
      lineChart("epsilon spent by version", r.map((x) => x.version), [
        { name: "spent", values: r.map((x) => x.epsilon) },
        { name: "budget", values: r.map(() => d.epsilon_budget) }], "epsilon-chart"),
      el("p", {}, `accountant ${d.accountant}, noise multiplier ${d.noise_multiplier}, clip ${d.clip_norm}`)];
  },
  cohorts(d) {
    return [el("div", { class: "stats" }, stat("unmasked", d.completed, "cohorts-completed"),
        stat("abandoned", d.abandoned, "cohorts-abandoned")),
      table(["cohort", "members", "outcome", "base version", "ended"], d.cohorts.map((c) =>
        [c.cohort, c.members, c.outcome, c.base_version, time(c.at)]), "cohorts")];
  },
};

let query = "";
async function refresh() {
  try {
    const url = `/api/${PAGE}` + (PAGE === "fleet" ? `?q=${encodeURIComponent(query)}` : "");
    const response = await fetch(url, { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    const focused = document.activeElement && document.activeElement.id;
    main.replaceChildren(...RENDER[PAGE](data));
    if (focused) { const f = document.getElementById(focused); if (f) f.focus(); }
    live.textContent = `updated ${new Date().toLocaleTimeString()}`;
    live.className = "ok";
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
    // ms from navigation start to the first page drawn with data (benchmarks/console.py)
    if (!document.body.dataset.firstRenderMs) document.body.dataset.firstRenderMs = performance.now().toFixed(1);
  } catch (err) {
    live.textContent = `no answer from the server (${err.message})`;
    live.className = "down";
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
