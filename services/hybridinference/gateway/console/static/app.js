// HybridInference console: one page, no build step. It reads only the mesh's public APIs through
// the same origin: AdminService's HTTP/JSON API (/api/v1/admin/...) and the OpenAI surface
// (/v1/...). Charts are uPlot (vendored under vendor/uplot). The admin key lives in this tab's
// sessionStorage and goes out as a bearer token; nothing is stored server-side.
"use strict";

(function () {
  const KEY_STORE = "hi-console-admin-key";
  const REFRESH_MS = 5000;
  const PALETTE = ["#0b57d0", "#b3261e", "#146c2e", "#8e24aa", "#b45309", "#00838f", "#5d4037"];

  const viewHost = document.getElementById("view");
  // Each page renders into a container of its own: a page still loading when the next one
  // starts writes into a detached node, never into the new page.
  // (Page functions take their container as a parameter named view.)
  const loginSection = document.getElementById("login");
  const nav = document.getElementById("nav");
  const logoutButton = document.getElementById("logout");
  const statusLine = document.getElementById("status");

  // Per page: timers and charts to drop when the page changes.
  let pageTimers = [];
  let pageCharts = [];
  let pageGeneration = 0;

  // ---- API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message, reason) {
      super(message);
      this.status = status;
      this.reason = reason || "";
    }
  }

  function adminKey() {
    return sessionStorage.getItem(KEY_STORE) || "";
  }

  function authHeaders() {
    const key = adminKey();
    return key ? { authorization: "Bearer " + key } : {};
  }

  async function errorOf(response) {
    let message = response.status + " " + response.statusText;
    let reason = "";
    try {
      const body = await response.json();
      if (body.error) {
        message = body.error.message || message;
        reason = body.error.code || "";
      } else if (body.message !== undefined) {
        message = body.message;
        for (const detail of body.details || []) {
          if (detail.reason) reason = detail.reason;
        }
      }
    } catch (ignored) {
      // Not JSON: keep the status line.
    }
    return new ApiError(response.status, message, reason);
  }

  async function api(path, options) {
    const init = Object.assign({ headers: {} }, options || {});
    init.headers = Object.assign({}, authHeaders(), init.headers);
    if (init.json !== undefined) {
      init.method = init.method || "POST";
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(init.json);
      delete init.json;
    }
    const response = await fetch(path, init);
    if (!response.ok) {
      const error = await errorOf(response);
      if (error.status === 401 || error.status === 403) showLogin(error);
      throw error;
    }
    return response.json();
  }

  function query(params) {
    const parts = [];
    for (const [name, value] of Object.entries(params)) {
      if (value !== "" && value !== undefined && value !== null && value !== false) {
        parts.push(encodeURIComponent(name) + "=" + encodeURIComponent(String(value)));
      }
    }
    return parts.length ? "?" + parts.join("&") : "";
  }

  // ---- DOM helpers -------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "onclick" || name === "onsubmit" || name === "onchange") {
        node.addEventListener(name.slice(2), value);
      } else if (name === "text") {
        node.textContent = value;
      } else {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function field(label, input) {
    const id = input.id || "f-" + Math.random().toString(36).slice(2, 9);
    input.id = id;
    return el("div", { class: "field" }, el("label", { for: id, text: label }), input);
  }

  // columns: [{label, value(row), num, field}]
  function table(caption, columns, rows, rowAttrs) {
    const head = el(
      "tr",
      {},
      columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null, text: c.label }))
    );
    const body = rows.map((row) =>
      el(
        "tr",
        rowAttrs ? rowAttrs(row) : {},
        columns.map((c) => {
          const value = c.value(row);
          return el(
            "td",
            { class: c.num ? "num" : null, "data-field": c.field || null },
            value instanceof Node ? value : String(value)
          );
        })
      )
    );
    return el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        {},
        el("caption", { text: caption }),
        el("thead", {}, head),
        el("tbody", {}, body.length ? body : [emptyRow(columns.length)])
      )
    );
  }

  function emptyRow(span) {
    return el("tr", {}, el("td", { colspan: span, class: "muted", text: "Nothing yet." }));
  }

  function num(value) {
    return Number(value || 0);
  }

  function fmt(value, digits) {
    const n = Number(value);
    if (!Number.isFinite(n)) return "–";
    return n.toLocaleString("en-US", {
      minimumFractionDigits: digits || 0,
      maximumFractionDigits: digits || 0,
    });
  }

  function usd(value) {
    const n = Number(value || 0);
    return "$" + (n >= 1 ? n.toFixed(2) : n.toFixed(6));
  }

  function when(text) {
    if (!text) return "–";
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? text : date.toISOString().replace("T", " ").slice(0, 19);
  }

  function announce(text) {
    statusLine.textContent = text;
  }

  function errorBox(error) {
    return el("p", { class: "error", role: "alert", text: "Error: " + error.message });
  }

  // ---- charts (uPlot) ----------------------------------------------------------------------

  function chartWidth(container) {
    return Math.max(260, (container.clientWidth || 600) - 16);
  }

  // A time-series chart; series: [{label, values, dash}], xs in Unix seconds.
  function lineChart(container, title, unit, xs, series) {
    const box = el("figure", { class: "chart", role: "group", "aria-label": title });
    box.append(el("h3", { text: title }));
    container.append(box);
    const options = {
      width: chartWidth(box),
      height: 200,
      scales: { x: { time: true } },
      // Three significant digits, so small values (cost per minute) do not all read "0".
      axes: [{}, { label: unit, size: 60, values: (u, ticks) => ticks.map((v) => Number(v.toPrecision(3))) }],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 2,
          dash: s.dash ? [6, 4] : undefined,
          spanGaps: false,
          points: { show: s.points || false },
        })),
      ],
    };
    const chart = new uPlot(options, [xs, ...series.map((s) => s.values)], box);
    pageCharts.push({ chart, box });
    return chart;
  }

  window.addEventListener("resize", () => {
    for (const { chart, box } of pageCharts) {
      chart.setSize({ width: chartWidth(box), height: 200 });
    }
  });

  // ---- login -------------------------------------------------------------------------------

  function showLogin(error) {
    clearPage();
    viewHost.replaceChildren();
    nav.hidden = true;
    logoutButton.hidden = true;
    loginSection.hidden = false;
    const message = document.getElementById("login-error");
    if (!error) {
      message.textContent = "";
    } else if (error.reason === "admin_auth_disabled") {
      message.textContent =
        "Auth is off on this mesh (gateway.auth.enabled), so no caller can be an admin and the " +
        "console's data calls are refused (403). Turn auth on and sign in with an admin key.";
    } else if (error.status === 403) {
      message.textContent = "This key is not an admin key (403). Sign in with an admin key.";
    } else if (adminKey()) {
      message.textContent = "The key was not accepted (401). Sign in again.";
    }
    if (error && error.status === 401) sessionStorage.removeItem(KEY_STORE);
    document.getElementById("login-key").focus();
  }

  document.getElementById("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("login-key");
    sessionStorage.setItem(KEY_STORE, input.value.trim());
    input.value = "";
    loginSection.hidden = true;
    route();
  });

  logoutButton.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    showLogin(null);
  });

  // ---- router ------------------------------------------------------------------------------

  const PAGES = {
    overview: overviewPage,
    endpoints: endpointsPage,
    requests: requestsPage,
    usage: usagePage,
    keys: keysPage,
    playground: playgroundPage,
  };

  function clearPage() {
    for (const timer of pageTimers) clearInterval(timer);
    for (const { chart } of pageCharts) chart.destroy();
    pageTimers = [];
    pageCharts = [];
    pageGeneration += 1;
  }

  function route() {
    clearPage();
    const hash = location.hash.replace(/^#\/?/, "") || "overview";
    const [name, ...rest] = hash.split("/");
    const page = PAGES[name] || overviewPage;
    for (const link of nav.querySelectorAll("a")) {
      if (link.getAttribute("href") === "#/" + name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (!adminKey()) {
      // No call without a key: the admin API would answer 401 (403 with auth off), and the
      // form says what a refused key means once one is tried.
      showLogin(null);
      return;
    }
    loginSection.hidden = true;
    nav.hidden = false;
    logoutButton.hidden = false;
    const view = el("div");
    viewHost.replaceChildren(view);
    const generation = pageGeneration;
    page(rest.map(decodeURIComponent), generation, view).catch((error) => {
      if (generation !== pageGeneration) return;
      if (!(error instanceof ApiError && (error.status === 401 || error.status === 403))) {
        view.append(errorBox(error));
      }
    });
    document.getElementById("main").focus({ preventScroll: true });
  }

  function every(ms, generation, work) {
    const timer = setInterval(() => {
      if (generation !== pageGeneration) return;
      work().catch((error) => announce("Refresh failed: " + error.message));
    }, ms);
    pageTimers.push(timer);
  }

  // ---- Overview ----------------------------------------------------------------------------

  function trafficSeries(reply) {
    const bucket = reply.bucket_seconds;
    const models = reply.series.map((s) => s.model);
    const first = reply.series[0];
    const xs = first ? first.buckets.map((b) => Date.parse(b.start_time) / 1000 + bucket) : [];
    return { bucket, models, xs, series: reply.series };
  }

  function overviewCharts(data) {
    const color = (i) => PALETTE[i % PALETTE.length];
    const perModel = (fn) =>
      data.series.map((s, i) => ({ label: s.model, color: color(i), values: s.buckets.map(fn) }));
    const pair = (p50, p95) =>
      data.series.flatMap((s, i) => [
        { label: s.model + " p50", color: color(i), values: s.buckets.map(p50) },
        { label: s.model + " p95", color: color(i), dash: true, values: s.buckets.map(p95) },
      ]);
    const rate = (b) => num(b.requests) / data.bucket;
    const withRequests = (fn) => (b) => (num(b.requests) ? fn(b) : null);
    return [
      ["Requests per second", "req/s", perModel(rate)],
      [
        "Error rate",
        "%",
        perModel(withRequests((b) => (100 * num(b.errors)) / num(b.requests))),
      ],
      [
        "Time to first token",
        "ms",
        pair(withRequests((b) => b.ttft_p50_ms || null), withRequests((b) => b.ttft_p95_ms || null)),
      ],
      [
        "Latency",
        "ms",
        pair(withRequests((b) => b.latency_p50_ms), withRequests((b) => b.latency_p95_ms)),
      ],
      ["Output tokens per second", "tok/s", perModel((b) => num(b.completion_tokens) / data.bucket)],
      ["Cost per minute", "USD/min", perModel((b) => (num(b.cost_usd) * 60) / data.bucket)],
    ];
  }

  function hourTable(reply) {
    // The window's totals (exact percentiles over the hour), not a sum of the minutes.
    const span = reply.series.length ? reply.series[0].buckets.length * reply.bucket_seconds : 1;
    const rows = reply.series.map((s) => ({ model: s.model, b: s.total, span }));
    return table(
      "Last hour, per model",
      [
        { label: "Model", value: (r) => r.model, field: "model" },
        { label: "Requests", value: (r) => fmt(r.b.requests), num: true, field: "requests" },
        { label: "Req/s", value: (r) => fmt(num(r.b.requests) / r.span, 3), num: true, field: "rps" },
        {
          label: "Errors",
          value: (r) => fmt(r.b.errors) + " (" + fmt(num(r.b.requests) ? (100 * num(r.b.errors)) / num(r.b.requests) : 0, 1) + "%)",
          num: true,
          field: "errors",
        },
        // 0 means no request of the hour got a first token.
        { label: "TTFT p50 ms", value: (r) => (r.b.ttft_p50_ms ? fmt(r.b.ttft_p50_ms, 1) : "–"), num: true, field: "ttft_p50" },
        { label: "TTFT p95 ms", value: (r) => (r.b.ttft_p95_ms ? fmt(r.b.ttft_p95_ms, 1) : "–"), num: true, field: "ttft_p95" },
        { label: "Latency p50 ms", value: (r) => fmt(r.b.latency_p50_ms, 1), num: true, field: "latency_p50" },
        { label: "Latency p95 ms", value: (r) => fmt(r.b.latency_p95_ms, 1), num: true, field: "latency_p95" },
        { label: "Output tok/s", value: (r) => fmt(num(r.b.completion_tokens) / r.span, 3), num: true, field: "tps" },
        { label: "Tokens", value: (r) => fmt(r.b.total_tokens), num: true, field: "tokens" },
        { label: "Cost/min", value: (r) => usd((num(r.b.cost_usd) * 60) / r.span), num: true, field: "cost_per_min" },
      ],
      rows,
      (r) => ({ "data-model": r.model })
    );
  }

  async function overviewPage(args, generation, view) {
    const heading = el("h1", { text: "Overview" });
    const note = el("p", { class: "muted", text: "Last hour from the request log; refreshes every 5 s." });
    const summary = el("div", { id: "overview-summary" });
    const charts = el("div", { class: "charts", id: "overview-charts" });
    view.append(heading, note, summary, el("h2", { text: "Per minute" }), charts);
    let shape = "";
    let built = [];
    async function refresh() {
      const minute = await api("/api/v1/admin/traffic" + query({ window_seconds: 3600, bucket_seconds: 60 }));
      if (generation !== pageGeneration) return;
      summary.replaceChildren(hourTable(minute));
      if (minute.truncated) {
        summary.append(el("p", { class: "notice", text: "More records than the logger reads at once: the oldest minutes are incomplete." }));
      }
      const data = trafficSeries(minute);
      const specs = overviewCharts(data);
      const nextShape = JSON.stringify(specs.map((s) => s[2].map((x) => x.label)));
      if (nextShape !== shape) {
        for (const { chart } of pageCharts) chart.destroy();
        pageCharts = [];
        charts.replaceChildren();
        built = specs.map(([title, unit, series]) => lineChart(charts, title, unit, data.xs, series));
        shape = nextShape;
        if (!data.series.length) {
          charts.replaceChildren(el("p", { class: "muted", text: "No requests in the last hour." }));
        }
      } else {
        specs.forEach(([, , series], i) => built[i].setData([data.xs, ...series.map((s) => s.values)]));
      }
      summary.setAttribute("data-updated", String(Date.now()));
      announce("Overview updated");
    }
    await refresh();
    every(REFRESH_MS, generation, refresh);
  }

  // ---- Endpoints ---------------------------------------------------------------------------

  const CIRCUIT = {
    CIRCUIT_STATE_CLOSED: "closed",
    CIRCUIT_STATE_OPEN: "open",
    CIRCUIT_STATE_HALF_OPEN: "half-open",
  };

  async function endpointsPage(args, generation, view) {
    view.append(el("h1", { text: "Endpoints" }), el("p", { class: "muted", text: "The router's view; refreshes every 5 s. Choose an endpoint to see its recent errors." }));
    const holder = el("div", { id: "endpoints-table" });
    const errors = el("section", { id: "endpoint-errors", "aria-live": "polite" });
    view.append(holder, errors);
    let selected = "";
    async function showErrors(id) {
      selected = id;
      errors.replaceChildren(el("h2", { text: "Recent errors: " + id }));
      const reply = await api("/api/v1/admin/requests" + query({ endpoint: id, errors_only: true, page_size: 20 }));
      errors.append(requestsTable("Newest failed requests at " + id, reply.records));
      refresh().catch(() => undefined);
    }
    async function refresh() {
      const reply = await api("/api/v1/admin/endpoints");
      if (generation !== pageGeneration) return;
      const total = reply.endpoints.reduce((sum, e) => sum + num(e.requests_total), 0);
      holder.replaceChildren(
        table(
          "Every endpoint, as the router sees it",
          [
            {
              label: "Endpoint",
              value: (e) => el("button", { type: "button", class: "secondary", "aria-pressed": String(e.id === selected), onclick: () => showErrors(e.id), text: e.id }),
              field: "id",
            },
            { label: "Model", value: (e) => e.model, field: "model" },
            { label: "Provider", value: (e) => e.provider + (e.locality ? " (" + e.locality + ")" : ""), field: "provider" },
            {
              label: "Health",
              value: (e) => el("span", { class: e.healthy ? "ok" : "bad", title: e.health_detail || null, text: e.healthy ? "healthy" : "down" }),
              field: "health",
            },
            { label: "Circuit", value: (e) => CIRCUIT[e.circuit_state] || "–", field: "circuit" },
            { label: "In flight", value: (e) => fmt(e.in_flight), num: true, field: "in_flight" },
            { label: "Queued / running", value: (e) => fmt(e.waiting) + " / " + fmt(e.running), num: true, field: "queue" },
            { label: "KV cache", value: (e) => fmt(100 * num(e.kv_cache_usage), 1) + "%", num: true, field: "kv" },
            { label: "TTFT ms (EWMA)", value: (e) => fmt(e.ttft_ewma_ms, 1), num: true, field: "ttft_ewma" },
            { label: "TPOT ms (EWMA)", value: (e) => fmt(e.tpot_ewma_ms, 2), num: true, field: "tpot_ewma" },
            { label: "Requests", value: (e) => fmt(e.requests_total), num: true, field: "requests" },
            { label: "Failures", value: (e) => fmt(e.failures_total), num: true, field: "failures" },
            { label: "Share", value: (e) => fmt(total ? (100 * num(e.requests_total)) / total : 0, 1) + "%", num: true, field: "share" },
          ],
          reply.endpoints,
          (e) => ({ "data-endpoint": e.id, class: e.id === selected ? "selected" : null })
        )
      );
      holder.setAttribute("data-updated", String(Date.now()));
    }
    await refresh();
    every(REFRESH_MS, generation, refresh);
  }

  // ---- Requests ----------------------------------------------------------------------------

  function statusCell(record) {
    return el("span", { class: record.status === "OK" ? "ok" : "bad", text: record.status });
  }

  function requestsTable(caption, records) {
    return table(
      caption,
      [
        { label: "Started (UTC)", value: (r) => when(r.started_at) },
        {
          label: "Request",
          value: (r) => el("a", { href: "#/requests/" + encodeURIComponent(r.request_id), text: r.request_id.slice(0, 13) + "…", "aria-label": "Request " + r.request_id }),
          field: "request_id",
        },
        { label: "Model", value: (r) => r.requested_model, field: "model" },
        { label: "Key", value: (r) => r.api_key_id || "–" },
        { label: "Endpoint", value: (r) => r.endpoint || "–", field: "endpoint" },
        { label: "Status", value: statusCell, field: "status" },
        { label: "TTFT ms", value: (r) => fmt(r.ttft_ms, 1), num: true },
        { label: "Latency ms", value: (r) => fmt(r.latency_ms, 1), num: true },
        { label: "Tokens", value: (r) => fmt(r.usage ? r.usage.total_tokens : 0), num: true, field: "tokens" },
        { label: "Cost", value: (r) => usd(r.cost_usd), num: true },
      ],
      records,
      (r) => ({ "data-request-id": r.request_id })
    );
  }

  function localToIso(value) {
    return value ? new Date(value).toISOString() : "";
  }

  async function requestsPage(args, generation, view) {
    if (args.length && args[0]) return requestDetail(args[0], view);
    view.append(el("h1", { text: "Requests" }));
    const inputs = {
      model: el("input", { name: "model", autocomplete: "off" }),
      api_key_id: el("input", { name: "api_key_id", autocomplete: "off", placeholder: "key_…" }),
      status: el("select", { name: "status" }, ["", "OK", "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "INTERNAL"].map((s) => el("option", { value: s, text: s || "any" }))),
      endpoint: el("input", { name: "endpoint", autocomplete: "off" }),
      start_time: el("input", { name: "start_time", type: "datetime-local" }),
      end_time: el("input", { name: "end_time", type: "datetime-local" }),
    };
    const form = el(
      "form",
      { class: "filters", "aria-label": "Filter requests" },
      field("Model", inputs.model),
      field("Key id", inputs.api_key_id),
      field("Status", inputs.status),
      field("Endpoint", inputs.endpoint),
      field("From (local time)", inputs.start_time),
      field("To (local time)", inputs.end_time),
      el("button", { type: "submit", text: "Apply" })
    );
    const results = el("div", { id: "requests-results" });
    const more = el("button", { type: "button", class: "secondary", hidden: true, text: "Load more" });
    view.append(form, el("h2", { text: "Newest first" }), results, more);
    let token = "";
    let records = [];
    function filters() {
      return {
        model: inputs.model.value.trim(),
        api_key_id: inputs.api_key_id.value.trim(),
        status: inputs.status.value,
        endpoint: inputs.endpoint.value.trim(),
        start_time: localToIso(inputs.start_time.value),
        end_time: localToIso(inputs.end_time.value),
      };
    }
    async function load(reset) {
      const params = Object.assign(filters(), { page_size: 50, page_token: reset ? "" : token });
      const reply = await api("/api/v1/admin/requests" + query(params));
      records = reset ? reply.records : records.concat(reply.records);
      token = reply.next_page_token;
      more.hidden = !token;
      results.replaceChildren(requestsTable(records.length + " request(s)", records));
      announce(records.length + " requests shown");
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      load(true).catch((error) => results.replaceChildren(errorBox(error)));
    });
    more.addEventListener("click", () => load(false).catch((error) => results.append(errorBox(error))));
    await load(true);
  }

  async function requestDetail(requestId, view) {
    view.append(el("p", {}, el("a", { href: "#/requests", text: "← All requests" })));
    const reply = await api("/api/v1/admin/requests/" + encodeURIComponent(requestId));
    const r = reply.record;
    const usage = r.usage || {};
    const rows = [
      ["Request id", r.request_id],
      ["Started (UTC)", when(r.started_at)],
      ["Status", r.status + (r.error ? " — " + r.error : "")],
      ["Surface", r.surface],
      ["API key", r.api_key_id || "–"],
      ["User", r.user || "–"],
      ["Requested model", r.requested_model],
      ["Served model", r.served_model || "–"],
      ["Provider", r.provider || "–"],
      ["Endpoint", r.endpoint || "–"],
      ["Queued at the router", fmt(r.queue_ms || 0, 1) + " ms"],
      ["Time to first token", fmt(r.ttft_ms, 1) + " ms"],
      ["Total latency", fmt(r.latency_ms, 1) + " ms"],
      ["Attempts", fmt(r.attempts)],
      ["Fallbacks", fmt(r.fallbacks)],
      ["Hedged", r.hedged ? "yes" : "no"],
      ["Streamed", r.stream ? "yes" : "no"],
      ["Prompt tokens", fmt(usage.prompt_tokens)],
      ["Completion tokens", fmt(usage.completion_tokens)],
      ["Cached tokens", fmt(usage.cached_tokens)],
      ["Total tokens", fmt(usage.total_tokens)],
      ["Cost", usd(r.cost_usd)],
      ["Finish reason", (r.finish_reason || "").replace("FINISH_REASON_", "").toLowerCase() || "–"],
      ["Trace id", r.traceparent ? r.traceparent.split("-")[1] || r.traceparent : "–"],
    ];
    view.append(
      el("h1", { text: "Request " + r.request_id }),
      el("dl", { class: "detail", id: "request-detail" }, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-field": k, text: v })]))
    );
    if (r.prompt || r.response) {
      view.append(el("h2", { text: "Prompt" }), el("pre", { id: "request-prompt", text: r.prompt }));
      view.append(el("h2", { text: "Response" }), el("pre", { id: "request-response", text: r.response }));
    } else {
      view.append(el("p", { class: "muted", text: "Prompt and response are not recorded (logger.capture_content is off)." }));
    }
  }

  // ---- Usage -------------------------------------------------------------------------------

  const USAGE_COLUMNS = ["day", "api_key_id", "model", "requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens", "cost_usd"];

  function csvOf(buckets) {
    const quote = (v) => {
      const text = String(v === undefined || v === null ? "" : v);
      return /[",\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
    };
    const lines = [USAGE_COLUMNS.join(",")];
    for (const b of buckets) {
      lines.push(USAGE_COLUMNS.map((c) => quote(c === "day" ? b.day.slice(0, 10) : b[c])).join(","));
    }
    return lines.join("\n") + "\n";
  }

  function isoDay(date) {
    return date.toISOString().slice(0, 10);
  }

  async function usagePage(args, generation, view) {
    view.append(el("h1", { text: "Usage" }));
    const today = new Date();
    const from = el("input", { type: "date", value: isoDay(new Date(today.getTime() - 29 * 86400000)) });
    const to = el("input", { type: "date", value: isoDay(today) });
    const key = el("input", { autocomplete: "off", placeholder: "any" });
    const model = el("input", { autocomplete: "off", placeholder: "any" });
    const form = el("form", { class: "filters", "aria-label": "Usage range" }, field("From (UTC day)", from), field("To (UTC day)", to), field("Key id", key), field("Model", model), el("button", { type: "submit", text: "Show" }));
    const charts = el("div", { class: "charts", id: "usage-charts" });
    const holder = el("div", { id: "usage-table" });
    const download = el("a", { id: "usage-csv", download: "usage.csv", href: "#", text: "Export CSV" });
    view.append(form, charts, el("h2", { text: "Per key, model and day" }), el("p", {}, download), holder);
    let csvUrl = "";
    async function load() {
      const end = new Date(to.value + "T00:00:00Z");
      end.setUTCDate(end.getUTCDate() + 1);
      const reply = await api("/api/v1/admin/usage" + query({ start_time: from.value + "T00:00:00Z", end_time: end.toISOString(), api_key_id: key.value.trim(), model: model.value.trim() }));
      if (generation !== pageGeneration) return;
      const buckets = reply.buckets;
      for (const { chart } of pageCharts) chart.destroy();
      pageCharts = [];
      charts.replaceChildren();
      const days = [...new Set(buckets.map((b) => b.day))].sort();
      const xs = days.map((d) => Date.parse(d) / 1000);
      const by = (name, value) => {
        const names = [...new Set(buckets.map((b) => b[name] || "(no key)"))].sort();
        return names.map((n, i) => ({
          label: n,
          color: PALETTE[i % PALETTE.length],
          points: true,
          values: days.map((d) => buckets.filter((b) => b.day === d && (b[name] || "(no key)") === n).reduce((s, b) => s + value(b), 0)),
        }));
      };
      if (days.length) {
        lineChart(charts, "Tokens per day, by model", "tokens", xs, by("model", (b) => num(b.total_tokens)));
        lineChart(charts, "Cost per day, by key", "USD", xs, by("api_key_id", (b) => num(b.cost_usd)));
      } else {
        charts.append(el("p", { class: "muted", text: "No usage in this range." }));
      }
      holder.replaceChildren(
        table(
          "Usage (" + buckets.length + " rows)",
          [
            { label: "Day", value: (b) => b.day.slice(0, 10), field: "day" },
            { label: "Key", value: (b) => b.api_key_id || "–", field: "api_key_id" },
            { label: "Model", value: (b) => b.model, field: "model" },
            { label: "Requests", value: (b) => fmt(b.requests), num: true, field: "requests" },
            { label: "Errors", value: (b) => fmt(b.errors), num: true, field: "errors" },
            { label: "Prompt tokens", value: (b) => fmt(b.prompt_tokens), num: true },
            { label: "Completion tokens", value: (b) => fmt(b.completion_tokens), num: true },
            { label: "Total tokens", value: (b) => fmt(b.total_tokens), num: true, field: "total_tokens" },
            { label: "Cost", value: (b) => usd(b.cost_usd), num: true, field: "cost" },
          ],
          buckets
        )
      );
      if (csvUrl) URL.revokeObjectURL(csvUrl);
      csvUrl = URL.createObjectURL(new Blob([csvOf(buckets)], { type: "text/csv" }));
      download.href = csvUrl;
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      load().catch((error) => holder.replaceChildren(errorBox(error)));
    });
    await load();
  }

  // ---- Keys --------------------------------------------------------------------------------

  const LIMITS = [
    ["requests_per_minute", "Requests per minute", "1"],
    ["tokens_per_minute", "Tokens per minute", "1"],
    ["max_concurrent", "Requests in flight", "1"],
    ["daily_budget_usd", "USD per UTC day", "0.01"],
    ["monthly_budget_usd", "USD per UTC month", "0.01"],
  ];

  function limitInputs(current) {
    const inputs = {};
    for (const [name, , step] of LIMITS) {
      const value = current && current[name] !== undefined ? current[name] : "";
      inputs[name] = el("input", { type: "number", min: step === "1" ? "1" : "0", step, name, value, inputmode: "decimal" });
    }
    return inputs;
  }

  function limitsFrom(inputs) {
    const limits = {};
    for (const [name] of LIMITS) {
      const text = inputs[name].value.trim();
      if (text !== "") limits[name] = Number(text);
    }
    return limits;
  }

  function limitsText(limits) {
    const parts = LIMITS.filter(([n]) => limits && limits[n] !== undefined).map(([n, label]) => label + ": " + limits[n]);
    return parts.join(", ") || "defaults";
  }

  async function keysPage(args, generation, view) {
    view.append(el("h1", { text: "API keys" }));
    const name = el("input", { name: "name", required: true, maxlength: "128", autocomplete: "off" });
    const admin = el("input", { type: "checkbox", name: "admin", id: "new-key-admin" });
    const models = el("input", { name: "models", autocomplete: "off", placeholder: "every model" });
    const limits = limitInputs(null);
    const created = el("div", { id: "created-key", "aria-live": "polite" });
    const form = el(
      "form",
      { class: "filters", "aria-label": "Create a key" },
      field("Name", name),
      field("Models (comma-separated)", models),
      ...LIMITS.map(([n, label]) => field(label, limits[n])),
      el("div", { class: "check" }, admin, el("label", { for: "new-key-admin", text: "Admin" })),
      el("button", { type: "submit", text: "Create key" })
    );
    const showRevoked = el("input", { type: "checkbox", id: "show-revoked" });
    const holder = el("div", { id: "keys-table" });
    view.append(el("h2", { text: "Create" }), form, created, el("h2", { text: "Keys" }), el("div", { class: "check" }, showRevoked, el("label", { for: "show-revoked", text: "Show revoked keys" })), holder);

    const dialog = el("dialog", { "aria-labelledby": "dialog-title" });
    view.append(dialog);

    async function load() {
      const reply = await api("/api/v1/admin/keys" + query({ include_revoked: showRevoked.checked }));
      if (generation !== pageGeneration) return;
      holder.replaceChildren(
        table(
          reply.keys.length + " key(s)",
          [
            { label: "Name", value: (k) => k.name, field: "name" },
            { label: "Id", value: (k) => k.id, field: "id" },
            { label: "Starts with", value: (k) => k.prefix + "…" },
            { label: "Admin", value: (k) => (k.admin ? "yes" : "no"), field: "admin" },
            { label: "Models", value: (k) => (k.models.length ? k.models.join(", ") : "all") },
            { label: "Limits", value: (k) => limitsText(k.limits), field: "limits" },
            { label: "Created (UTC)", value: (k) => (num(k.created) ? when(new Date(num(k.created) * 1000).toISOString()) : "–") },
            { label: "Revoked (UTC)", value: (k) => (num(k.revoked) ? when(new Date(num(k.revoked) * 1000).toISOString()) : "–"), field: "revoked" },
            {
              label: "Actions",
              value: (k) =>
                num(k.revoked)
                  ? ""
                  : el(
                      "span",
                      { class: "row" },
                      el("button", { type: "button", class: "secondary", onclick: () => editLimits(k), text: "Set limits", "aria-label": "Set limits of " + k.name }),
                      el("button", { type: "button", class: "danger", onclick: () => confirmRevoke(k), text: "Revoke", "aria-label": "Revoke " + k.name })
                    ),
            },
          ],
          reply.keys,
          (k) => ({ "data-key-id": k.id })
        )
      );
    }

    function openDialog(title, body, confirmText, action) {
      const problem = el("p", { class: "error", role: "alert" });
      const ok = el("button", { type: "submit", text: confirmText });
      const cancel = el("button", { type: "button", class: "secondary", text: "Cancel", onclick: () => dialog.close() });
      const dialogForm = el("form", { method: "dialog" }, el("h2", { id: "dialog-title", text: title }), body, problem, el("div", { class: "row" }, ok, cancel));
      dialogForm.addEventListener("submit", (event) => {
        event.preventDefault();
        action()
          .then(() => {
            dialog.close();
            return load();
          })
          .catch((error) => {
            problem.textContent = error.message;
          });
      });
      dialog.replaceChildren(dialogForm);
      dialog.showModal();
    }

    function editLimits(k) {
      const inputs = limitInputs(k.limits);
      openDialog("Limits of " + k.name, el("div", {}, LIMITS.map(([n, label]) => field(label, inputs[n]))), "Save limits", async () => {
        await api("/api/v1/admin/keys/" + encodeURIComponent(k.id) + ":setLimits", { json: { limits: limitsFrom(inputs) } });
        announce("Limits of " + k.name + " saved");
      });
    }

    function confirmRevoke(k) {
      openDialog("Revoke " + k.name + "?", el("p", { text: "Key " + k.id + " stops working on every gateway within the key refresh interval. This cannot be undone." }), "Revoke key", async () => {
        await api("/api/v1/admin/keys/" + encodeURIComponent(k.id) + ":revoke", { method: "POST" });
        announce("Key " + k.name + " revoked");
      });
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const body = {
        name: name.value.trim(),
        admin: admin.checked,
        models: models.value.split(",").map((m) => m.trim()).filter(Boolean),
        limits: limitsFrom(limits),
      };
      api("/api/v1/admin/keys", { json: body })
        .then((reply) => {
          created.replaceChildren(
            el("div", { class: "secret" }, el("p", {}, el("strong", { text: "New key for " + reply.info.name + " (" + reply.info.id + "). " }), "Copy it now: it is shown only once and cannot be recovered."), el("code", { id: "new-key-value", text: reply.key }))
          );
          form.reset();
          return load();
        })
        .catch((error) => created.replaceChildren(errorBox(error)));
    });
    showRevoked.addEventListener("change", () => load().catch((error) => holder.replaceChildren(errorBox(error))));
    await load();
  }

  // ---- Playground --------------------------------------------------------------------------

  // The optional JSON fields of a chat request the playground sends as typed (tools,
  // response_format): an empty box sends nothing, anything else must parse.
  function jsonOption(textarea, label) {
    const text = textarea.value.trim();
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new ApiError(400, label + " is not valid JSON: " + error.message, "invalid_json");
    }
  }

  async function streamChat(model, prompt, maxTokens, extras, pane) {
    const { out, stats, reasoning, calls } = pane;
    const started = performance.now();
    let first = 0;
    let chunks = 0;
    let usage = null;
    // Tool calls arrive in fragments: an id and name first, then pieces of the arguments.
    const toolCalls = [];
    out.textContent = "";
    reasoning.textContent = "";
    calls.textContent = "";
    stats.textContent = "Waiting for the first token…";
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: Object.assign({ "content-type": "application/json" }, authHeaders()),
      body: JSON.stringify(
        Object.assign(
          {
            model,
            stream: true,
            stream_options: { include_usage: true },
            max_tokens: maxTokens,
            messages: [{ role: "user", content: prompt }],
          },
          extras
        )
      ),
    });
    if (!response.ok) throw await errorOf(response);
    const requestId = response.headers.get("x-request-id") || "";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of frame.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const payload = line.slice(6);
          if (payload === "[DONE]") continue;
          const chunk = JSON.parse(payload);
          if (chunk.error) throw new ApiError(500, chunk.error.message, chunk.error.code);
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (!delta) continue;
          if (delta.content || delta.reasoning_content || delta.tool_calls) {
            if (!first) first = performance.now();
            chunks += 1;
          }
          if (delta.content) out.textContent += delta.content;
          if (delta.reasoning_content) reasoning.textContent += delta.reasoning_content;
          for (const piece of delta.tool_calls || []) {
            const call = (toolCalls[piece.index] = toolCalls[piece.index] || { name: "", args: "" });
            if (piece.function && piece.function.name) call.name += piece.function.name;
            if (piece.function && piece.function.arguments) call.args += piece.function.arguments;
          }
          calls.textContent = toolCalls.filter(Boolean).map((c) => c.name + "(" + c.args + ")").join("\n");
        }
      }
    }
    const end = performance.now();
    const tokens = usage ? usage.completion_tokens : chunks;
    const ttft = first ? first - started : 0;
    const rate = first && end > first ? (tokens / (end - first)) * 1000 : 0;
    stats.textContent =
      "TTFT " + fmt(ttft, 0) + " ms · " + fmt(rate, 1) + " tokens/s · " + tokens + " tokens · " + fmt(end - started, 0) + " ms total" + (requestId ? " · request " + requestId : "");
    stats.setAttribute("data-done", "true");
    stats.setAttribute("data-ttft-ms", String(ttft));
    return { requestId, tokens };
  }

  async function playgroundPage(args, generation, view) {
    view.append(el("h1", { text: "Playground" }));
    const reply = await api("/v1/models");
    const names = reply.data.map((m) => m.id);
    const options = (blank) => [...(blank ? [el("option", { value: "", text: "— none —" })] : []), ...names.map((n) => el("option", { value: n, text: n }))];
    const modelA = el("select", { id: "model-a" }, options(false));
    const modelB = el("select", { id: "model-b" }, options(true));
    const prompt = el("textarea", { id: "prompt", rows: "4", cols: "60", required: true }, "Write a haiku about routing.");
    const maxTokens = el("input", { id: "max-tokens", type: "number", min: "1", max: "4096", value: "64" });
    const tools = el("textarea", { id: "tools", rows: "3", cols: "60", placeholder: '[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]' });
    const responseFormat = el("textarea", { id: "response-format", rows: "2", cols: "60", placeholder: '{"type": "json_object"}' });
    const send = el("button", { type: "submit", text: "Send" });
    const form = el(
      "form",
      { "aria-label": "Chat" },
      el("div", { class: "row" }, field("Model", modelA), field("Compare with", modelB), field("Max tokens", maxTokens)),
      field("Prompt", prompt),
      el("details", {}, el("summary", { text: "Tools and structured output (JSON, optional)" }), field("Tools", tools), field("Response format", responseFormat)),
      el("p", {}, send)
    );
    const pane = (id) => {
      const title = el("h2", { text: "" });
      const reasoning = el("output", { id: id + "-reasoning", class: "reasoning", "aria-label": "Reasoning" });
      const out = el("output", { id: id + "-output", "aria-live": "polite" });
      const calls = el("output", { id: id + "-tool-calls", class: "tool-calls", "aria-label": "Tool calls" });
      const stats = el("p", { class: "stats", id: id + "-stats" });
      return { box: el("section", { class: "pane", id, "aria-label": "Reply" }, title, reasoning, out, calls, stats), title, out, stats, reasoning, calls };
    };
    const a = pane("pane-a");
    const b = pane("pane-b");
    const panes = el("div", { class: "panes" }, a.box, b.box);
    view.append(form, panes);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send.disabled = true;
      const runs = [[modelA.value, a], [modelB.value, b]].filter(([m]) => m);
      b.box.hidden = !modelB.value;
      const jobs = runs.map(([model, p]) => {
        p.title.textContent = model;
        p.stats.removeAttribute("data-done");
        const extras = {};
        return Promise.resolve()
          .then(() => {
            const offered = jsonOption(tools, "Tools");
            const format = jsonOption(responseFormat, "Response format");
            if (offered !== undefined) extras.tools = offered;
            if (format !== undefined) extras.response_format = format;
            return streamChat(model, prompt.value, Number(maxTokens.value) || 64, extras, p);
          })
          .catch((error) => {
            p.stats.textContent = "Error: " + error.message;
            p.stats.setAttribute("data-done", "error");
          });
      });
      Promise.all(jobs).finally(() => {
        send.disabled = false;
      });
    });
    b.box.hidden = true;
  }

  // The skip link must not change the hash: the hash is the page.
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    document.getElementById("main").focus();
  });

  window.addEventListener("hashchange", route);
  route();
})();
