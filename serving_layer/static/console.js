// The lambda-sales console: polls the /console/* endpoints and the merged views every few
// seconds and draws them (Chart.js, vendored). Read-only; all text from the server goes in
// through textContent, never as HTML.
"use strict";

// Every 5 s; ?poll=MS (1000 to 60000) for another rhythm.
const POLL_MS = Math.min(60000, Math.max(1000,
  Number(new URLSearchParams(location.search).get("poll")) || 5000));
const COLORS = ["#2f6fde", "#e07b39", "#1f8a4c", "#c0392b", "#8e44ad", "#16a085", "#b7950b",
  "#7f8c8d", "#d35400", "#2c3e50", "#27ae60", "#e84393"];
const state = {
  window: "hour",
  view: null, // {name, params: URLSearchParams, offset, limit}
  views: {}, // name -> [{name, schema}]
  scales: {}, // name -> {column: decimals} of the views' exact decimal columns (money)
  charts: {},
  polling: false,
  timer: null,
  openReasons: new Set(), // quarantine reasons whose samples are unfolded
  hasViews: false, // a generation or a micro-batch exists: the views answer (503 before)
};

// ------------------------------------------------------------------ helpers

function $(id) { return document.getElementById(id); }

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) {
    const error = new Error(body.detail || response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function setValue(id, value, text) {
  const node = $(id);
  node.dataset.value = value === null || value === undefined ? "" : String(value);
  node.textContent = text === undefined ? (value === null || value === undefined ? "–" : String(value)) : text;
}

function number(value) {
  return value === null || value === undefined ? "–" : Number(value).toLocaleString("en-US");
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, seconds);
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
}

function ago(seconds) { return seconds === null || seconds === undefined ? "–" : `${duration(seconds)} ago`; }

function utc(text) { return text ? text.replace("T", " ").replace(/\.\d+/, "").replace("Z", "Z") : "–"; }

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function tickLabel(ms) {
  const d = new Date(ms);
  const hm = d.toISOString().slice(11, 16);
  return state.window === "week" ? `${d.toISOString().slice(5, 10)} ${hm}` : hm;
}

// ------------------------------------------------------------------ charts

function timeChart(id, datasets, yTitle) {
  return new Chart($(id), {
    type: "line",
    data: { datasets: datasets.map((label, i) => ({
      label, data: [], borderColor: COLORS[i], backgroundColor: COLORS[i],
      pointRadius: 2, borderWidth: 1.5, spanGaps: false, tension: 0,
    })) },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false, normalized: true,
      plugins: { legend: { display: datasets.length > 1, labels: { boxWidth: 10 } } },
      scales: {
        x: { type: "linear", ticks: { callback: tickLabel, maxTicksLimit: 8 } },
        y: { beginAtZero: true, title: { display: Boolean(yTitle), text: yTitle || "" } },
      },
    },
  });
}

function makeCharts() {
  state.charts.events = timeChart("events-chart", ["events/s"]);
  state.charts.duration = timeChart("duration-chart", ["mean", "max"]);
  state.charts.lag = timeChart("lag-chart", ["lag"]);
  state.charts.freshness = timeChart("freshness-chart", ["freshness"]);
  state.charts.runs = new Chart($("runs-chart"), {
    type: "bar",
    data: { labels: [], datasets: [
      { label: "valid", data: [], backgroundColor: COLORS[2], stack: "read", yAxisID: "y" },
      { label: "duplicates", data: [], backgroundColor: COLORS[6], stack: "read", yAxisID: "y" },
      { label: "quarantined", data: [], backgroundColor: COLORS[3], stack: "read", yAxisID: "y" },
      { label: "duration (s)", data: [], type: "line", borderColor: COLORS[0],
        backgroundColor: COLORS[0], yAxisID: "y1", pointRadius: 3, order: -1 },
    ] },
    options: {
      animation: false, maintainAspectRatio: false,
      plugins: { legend: { labels: { boxWidth: 10 } } },
      scales: {
        x: { stacked: true },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "records" } },
        y1: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
          title: { display: true, text: "s" } },
      },
    },
  });
  state.charts.quality = new Chart($("quality-chart"), {
    type: "line",
    data: { labels: [], datasets: [
      { label: "quality score", data: [], borderColor: COLORS[0], backgroundColor: COLORS[0],
        yAxisID: "y", pointRadius: 3, order: -1 },
      { label: "drift (events)", data: [], type: "bar", backgroundColor: COLORS[3], yAxisID: "y1" },
    ] },
    options: {
      animation: false, maintainAspectRatio: false,
      plugins: { legend: { labels: { boxWidth: 10 } } },
      scales: {
        y: { min: 0, max: 100, title: { display: true, text: "score" } },
        y1: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
          title: { display: true, text: "events" } },
      },
    },
  });
  state.charts.quarantine = new Chart($("quarantine-chart"), {
    type: "bar",
    data: { datasets: [] },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false,
      plugins: { legend: { position: "bottom", labels: { boxWidth: 10 } } },
      scales: {
        x: { type: "linear", stacked: true, offset: true, ticks: { callback: tickLabel, maxTicksLimit: 10 } },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "rejects" } },
      },
    },
  });
}

function setWindowAxis(chart, body) {
  chart.options.scales.x.min = Date.parse(body.from);
  chart.options.scales.x.max = Date.parse(body.to);
}

// ------------------------------------------------------------------ panels

function renderStatus(status) {
  const batch = status.batch;
  state.hasViews = batch.generation !== null || status.stream.last_micro_batch !== null;
  setValue("generation", batch.generation, batch.generation === null ? "none yet" : String(batch.generation));
  setValue("generation-age", batch.seconds_since_publish, ago(batch.seconds_since_publish));
  setValue("generation-events", batch.events, number(batch.events));

  const stream = status.stream;
  const badge = $("stream-state");
  setValue("stream-state", stream.state);
  badge.className = `state ${stream.state}`;
  $("stream-reason").textContent = stream.reason;
  setValue("last-micro-batch", stream.last_micro_batch, stream.last_micro_batch === null ? "none" : `#${stream.last_micro_batch}`);
  setValue("last-micro-batch-age", stream.seconds_since_last_micro_batch, ago(stream.seconds_since_last_micro_batch));
  const metrics = stream.metrics;
  const lag = metrics ? metrics.kafka_lag : null;
  setValue("kafka-lag", lag, lag === null ? "–" : number(lag));
  setValue("kafka-lag-batch", metrics ? metrics.batch_id : null, metrics ? `#${metrics.batch_id}` : "–");
  setValue("freshness", stream.seconds_since_newest_event, duration(stream.seconds_since_newest_event));
  $("newest-event-at").textContent = utc(stream.newest_event_at);
  const batchFresh = metrics && metrics.freshness_ms !== null ? metrics.freshness_ms / 1000 : null;
  setValue("batch-freshness", batchFresh, duration(batchFresh));

  const alert = status.last_alert;
  const box = $("last-alert");
  box.replaceChildren();
  box.dataset.kind = alert ? alert.kind : "";
  if (!alert) {
    const none = document.createElement("span");
    none.className = "muted";
    none.textContent = "none recorded";
    box.appendChild(none);
  } else {
    const head = document.createElement("div");
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = alert.kind;
    const when = document.createElement("span");
    when.className = "muted";
    when.textContent = ` at ${utc(alert.at)} · ${alert.delivered ? "delivered" : alert.webhook ? "webhook failed" : "no webhook"}`;
    head.append(kind, when);
    const summary = document.createElement("div");
    summary.className = "summary";
    summary.textContent = alert.summary;
    box.append(head, summary);
  }
}

function renderStream(body) {
  const points = body.points;
  const xy = (key, scale = 1) => points.filter((p) => p[key] !== null)
    .map((p) => ({ x: Date.parse(p.t), y: p[key] / scale }));
  const charts = state.charts;
  charts.events.data.datasets[0].data = xy("events_per_second");
  charts.duration.data.datasets[0].data = xy("duration_ms_mean");
  charts.duration.data.datasets[1].data = xy("duration_ms_max");
  charts.lag.data.datasets[0].data = xy("kafka_lag_max");
  charts.freshness.data.datasets[0].data = xy("freshness_ms_max", 1000);
  for (const name of ["events", "duration", "lag", "freshness"]) {
    setWindowAxis(charts[name], body);
    charts[name].update("none");
  }
  const t = body.totals;
  $("stream-totals").textContent = `${number(t.micro_batches)} micro-batches, ${number(t.input_rows)} read = `
    + `${number(t.valid)} valid + ${number(t.duplicates)} duplicates + ${number(t.quarantined)} quarantined`;
  $("stream-totals").dataset.microBatches = t.micro_batches;
}

function renderRuns(body) {
  const tbody = $("runs-table").tBodies[0];
  tbody.replaceChildren();
  for (const run of body.runs) {
    const tr = document.createElement("tr");
    tr.className = run.status;
    tr.dataset.runId = run.run_id;
    cell(tr, run.run_id);
    cell(tr, run.job);
    cell(tr, run.status);
    cell(tr, utc(run.started_at));
    cell(tr, duration(run.duration_seconds), "num");
    cell(tr, number(run.records_read), "num");
    cell(tr, number(run.valid), "num");
    cell(tr, number(run.duplicates), "num");
    cell(tr, number(run.quarantined), "num");
    cell(tr, run.quality_score === null ? "–" : run.quality_score.toFixed(2), "num");
    cell(tr, run.generation === null ? "–" : run.generation, "num");
    const recon = run.reconciliation;
    cell(tr, !recon ? "–" : recon.error ? "error" : recon.drift ? `${recon.events_diff} events` : "none", "num");
    tbody.appendChild(tr);
  }
  // Charts: the batch-like runs (not the long-lived speed runs), oldest first.
  const runs = body.runs.filter((r) => r.job !== "speed").slice().reverse();
  const labels = runs.map((r) => `${utc(r.started_at).slice(5, 16)} ${r.job}`);
  const runsChart = state.charts.runs;
  runsChart.data.labels = labels;
  runsChart.data.datasets[0].data = runs.map((r) => r.valid);
  runsChart.data.datasets[1].data = runs.map((r) => r.duplicates);
  runsChart.data.datasets[2].data = runs.map((r) => r.quarantined);
  runsChart.data.datasets[3].data = runs.map((r) => r.duration_seconds);
  runsChart.update("none");
  const quality = state.charts.quality;
  quality.data.labels = labels;
  quality.data.datasets[0].data = runs.map((r) => r.quality_score);
  quality.data.datasets[1].data = runs.map((r) => (r.reconciliation && !r.reconciliation.error
    ? Math.abs(r.reconciliation.events_diff) : null));
  quality.update("none");
  $("runs-summary").textContent = `${body.runs.length} run(s) in the window${body.truncated ? " (newest shown)" : ""}`;
}

function renderQuarantine(body) {
  const reasons = body.reasons.map((r) => r.reason);
  const chart = state.charts.quarantine;
  chart.data.datasets = reasons.map((reason, i) => ({
    label: reason,
    backgroundColor: COLORS[i % COLORS.length],
    data: body.points.filter((p) => p.counts[reason]).map((p) => ({ x: Date.parse(p.t), y: p.counts[reason] })),
    barThickness: "flex",
  }));
  setWindowAxis(chart, body);
  chart.update("none");
  $("quarantine-total").textContent = `${number(body.total)} reject(s) in the window`;
  $("quarantine-total").dataset.value = body.total;

  const box = $("quarantine-samples");
  box.replaceChildren();
  for (const { reason, count } of body.reasons) {
    const samples = body.samples[reason] || [];
    if (!samples.length) continue;
    // One fold per reason (closed, and kept as the operator left it across polls).
    const part = document.createElement("details");
    part.className = "reason";
    part.dataset.reason = reason;
    part.open = state.openReasons.has(reason);
    part.addEventListener("toggle", () => {
      if (part.open) state.openReasons.add(reason); else state.openReasons.delete(reason);
    });
    const title = document.createElement("summary");
    title.textContent = `${reason}: ${number(count)} in the window; the newest ${samples.length}`;
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    for (const h of ["rejected at (UTC)", "source", "name", "partition", "offset / line", "key", "raw record"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.appendChild(th);
    }
    const tbody = table.createTBody();
    for (const s of samples) {
      const tr = tbody.insertRow();
      cell(tr, utc(s.rejected_at));
      cell(tr, s.source);
      cell(tr, s.source_name);
      cell(tr, s.source_partition, "num");
      cell(tr, s.source_offset, "num");
      cell(tr, s.source_key);
      cell(tr, s.raw_record === null ? "" : s.raw_record + (s.raw_truncated ? " …" : ""), "raw");
    }
    part.append(title, table);
    box.appendChild(part);
  }
}

function renderAlerts(body) {
  const tbody = $("alerts-table").tBodies[0];
  tbody.replaceChildren();
  for (const alert of body.alerts) {
    const tr = tbody.insertRow();
    tr.dataset.kind = alert.kind;
    cell(tr, utc(alert.at));
    cell(tr, alert.kind);
    cell(tr, alert.summary);
    cell(tr, alert.delivered ? "delivered" : alert.webhook ? "not delivered" : "none configured");
  }
  $("alerts-total").textContent = `${number(body.total)} recorded`;
}

// ------------------------------------------------------------------ merged views

async function loadViews() {
  const doc = await api("/openapi.json");
  for (const [path, item] of Object.entries(doc.paths)) {
    const match = /^\/views\/([a-z_]+)$/.exec(path);
    if (!match) continue;
    state.views[match[1]] = item.get.parameters.filter((p) => !["from", "to", "limit", "offset"].includes(p.name));
    // Money is an exact JSON number ("exact, 2 decimals"): shown with its decimals.
    const row = item.get.responses["200"].content["application/json"].schema.properties.rows.items;
    state.scales[match[1]] = {};
    for (const [column, schema] of Object.entries(row.properties)) {
      const exact = /exact, (\d+) decimals/.exec(JSON.stringify(schema));
      if (exact) state.scales[match[1]][column] = Number(exact[1]);
    }
  }
  const select = $("view-select");
  for (const name of Object.keys(state.views)) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = name;
    select.appendChild(option);
  }
  select.addEventListener("change", () => { buildFilters(); submitView(); });
  buildFilters();
}

function inputFor(schema) {
  const input = document.createElement("input");
  const types = schema.anyOf ? schema.anyOf.map((s) => s) : [schema];
  const s = types[0];
  if (s.format === "date") input.type = "date";
  else if (s.type === "integer") { input.type = "number"; input.step = "1"; }
  else input.type = "text";
  if (s.format === "date-time") input.placeholder = "2026-01-01T00:00:00Z";
  if (s.pattern) input.pattern = s.pattern.replace(/^\^/, "").replace(/\$$/, "");
  return input;
}

function buildFilters() {
  const box = $("view-filters");
  box.replaceChildren();
  for (const parameter of state.views[$("view-select").value] || []) {
    const label = document.createElement("label");
    label.textContent = parameter.name;
    const input = inputFor(parameter.schema);
    input.name = parameter.name;
    input.dataset.column = parameter.name;
    label.appendChild(input);
    box.appendChild(label);
  }
}

function submitView(offset = 0, fetchNow = true) {
  const form = $("view-form");
  if (!form.reportValidity()) return;
  const params = new URLSearchParams();
  for (const element of form.elements) {
    if (!element.name || element.name === "view" || element.name === "limit" || element.value === "") continue;
    params.set(element.name, element.value);
  }
  const limit = Math.max(1, Math.min(1000, Number(form.elements.limit.value) || 20));
  state.view = { name: $("view-select").value, params, offset, limit };
  if (fetchNow) refreshView();
}

async function refreshView() {
  const view = state.view;
  if (!view) return;
  if (!state.hasViews) {
    $("view-info").textContent = "no view written yet by either layer";
    return;
  }
  const params = new URLSearchParams(view.params);
  params.set("limit", String(view.limit + 1)); // one more: is there a next page?
  params.set("offset", String(view.offset));
  const error = $("view-error");
  let body;
  try {
    body = await api(`/views/${view.name}?${params}`);
  } catch (e) {
    if (state.view !== view) return;
    error.hidden = false;
    error.textContent = e.status ? e.message : "the server could not be reached";
    return;
  }
  if (state.view !== view) return; // another query was asked for meanwhile
  error.hidden = true;
  const more = body.rows.length > view.limit;
  const rows = body.rows.slice(0, view.limit);
  const table = $("view-table");
  const columns = rows.length ? Object.keys(rows[0]) : [];
  const head = document.createElement("tr");
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c;
    head.appendChild(th);
  }
  table.tHead.replaceChildren(head);
  const tbody = table.tBodies[0];
  tbody.replaceChildren();
  const scales = state.scales[view.name] || {};
  for (const row of rows) {
    const tr = tbody.insertRow();
    for (const c of columns) {
      const v = row[c];
      const shown = typeof v === "number" && c in scales ? v.toFixed(scales[c]) : v;
      cell(tr, shown, typeof v === "number" ? "num" : "");
    }
  }
  table.dataset.view = view.name;
  table.dataset.generation = body.generation === null ? "" : String(body.generation);
  table.dataset.offset = String(view.offset);
  const first = rows.length ? view.offset + 1 : 0;
  $("view-info").textContent = `${view.name}: rows ${first}–${view.offset + rows.length}`
    + ` · generation ${body.generation === null ? "none (speed layer only)" : body.generation}`;
  $("view-prev").disabled = view.offset === 0;
  $("view-next").disabled = !more;
}

// ------------------------------------------------------------------ polling

async function refresh() {
  if (state.polling) return;
  state.polling = true;
  const w = state.window;
  try {
    const [status, stream, runs, quarantine, alerts] = await Promise.all([
      api("/console/status"),
      api(`/console/stream?window=${w}`),
      api(`/console/runs?window=${w}`),
      api(`/console/quarantine?window=${w}&samples=3`),
      api("/console/alerts?limit=20"),
    ]);
    if (w === state.window) {
      renderStatus(status);
      renderStream(stream);
      renderRuns(runs);
      renderQuarantine(quarantine);
      renderAlerts(alerts);
    }
    await refreshView();
    $("connection").hidden = true;
    $("updated").textContent = new Date().toISOString().slice(11, 19) + "Z";
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (e) {
    $("connection").hidden = false;
    $("connection").textContent = `server unreachable (${e.message})`;
  } finally {
    state.polling = false;
  }
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => { await refresh(); schedule(); }, POLL_MS);
}

function start() {
  makeCharts();
  for (const button of document.querySelectorAll("#window-selector button")) {
    button.addEventListener("click", async () => {
      state.window = button.dataset.window;
      for (const b of document.querySelectorAll("#window-selector button")) b.classList.toggle("selected", b === button);
      await refresh();
      schedule();
    });
  }
  $("view-form").addEventListener("submit", (event) => { event.preventDefault(); submitView(0); });
  $("view-form").addEventListener("reset", () => setTimeout(() => submitView(0), 0));
  $("view-prev").addEventListener("click", () => {
    if (state.view) { state.view.offset = Math.max(0, state.view.offset - state.view.limit); refreshView(); }
  });
  $("view-next").addEventListener("click", () => {
    if (state.view) { state.view.offset += state.view.limit; refreshView(); }
  });
  // The views' form first (from the OpenAPI document), then the first poll fills everything.
  loadViews().then(() => submitView(0, false)).catch((e) => {
    $("view-error").hidden = false;
    $("view-error").textContent = `views unavailable: ${e.message}`;
  }).finally(() => { refresh().then(schedule); });
}

start();
