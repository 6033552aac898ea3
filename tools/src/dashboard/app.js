// GPU telemetry dashboard: a single-page app over the collector's (or gateway's) API, with
// hash routes #/ (every GPU by host), #/gpu/<uuid> (charts of one GPU) and #/pipeline
// (broker and collectors). Plain JavaScript, charts drawn on <canvas>, nothing loaded
// from anywhere but this server.
'use strict';

(() => {
  // ---- State thresholds (shown in the legend) ---------------------------------------------
  /** A GPU under this utilisation (%) is idle; at or over it, busy. */
  const IDLE_UTIL_BELOW = 10;
  /** A GPU at or over this temperature (°C) is hot, whatever its utilisation. */
  const HOT_TEMP_AT_LEAST = 85;
  /** A GPU without a sample for this long (s) is silent, whatever its last values. */
  const SILENT_AFTER_S = 60;

  // ---- Refresh and size limits --------------------------------------------------------------
  const OVERVIEW_REFRESH_MS = 5000;
  const PIPELINE_REFRESH_MS = 2000;
  /** Chart refresh per window (relative windows only). */
  const DETAIL_REFRESH_MS = { '5m': 3000, '1h': 10000, '24h': 60000 };
  const WINDOWS = [['5m', '5 min', 5 * 60e3], ['1h', '1 h', 3600e3], ['24h', '24 h', 86400e3]];
  /** Buckets per chart. */
  const CHART_POINTS = 300;
  /** Most raw samples one download fetches (pages of DOWNLOAD_PAGE). */
  const DOWNLOAD_SAMPLES_MAX = 200000;
  const DOWNLOAD_PAGE = 10000;
  /** Pipeline samples kept for the rate and lag charts. */
  const PIPELINE_HISTORY = 150;

  const UTIL = 'DCGM_FI_DEV_GPU_UTIL';
  const TEMP = 'DCGM_FI_DEV_GPU_TEMP';
  const POWER = 'DCGM_FI_DEV_POWER_USAGE';
  const FB_USED = 'DCGM_FI_DEV_FB_USED';
  const FB_FREE = 'DCGM_FI_DEV_FB_FREE';
  const METRIC_INFO = {
    DCGM_FI_DEV_GPU_UTIL: ['GPU utilisation', '%', 0, 100],
    DCGM_FI_DEV_GPU_TEMP: ['GPU temperature', '°C'],
    DCGM_FI_DEV_POWER_USAGE: ['Power draw', 'W', 0],
    DCGM_FI_DEV_FB_USED: ['Memory used', 'MiB', 0],
    DCGM_FI_DEV_FB_FREE: ['Memory free', 'MiB', 0],
    DCGM_FI_DEV_MEM_COPY_UTIL: ['Memory copy utilisation', '%', 0, 100],
    DCGM_FI_DEV_ENC_UTIL: ['Encoder utilisation', '%', 0, 100],
    DCGM_FI_DEV_DEC_UTIL: ['Decoder utilisation', '%', 0, 100],
    DCGM_FI_DEV_MEMORY_TEMP: ['Memory temperature', '°C'],
    DCGM_FI_DEV_SM_CLOCK: ['SM clock', 'MHz', 0],
    DCGM_FI_DEV_MEM_CLOCK: ['Memory clock', 'MHz', 0],
  };
  const METRIC_ORDER = [UTIL, TEMP, POWER, FB_USED, FB_FREE];
  const STATES = [
    ['busy', 'Busy', `utilisation ≥ ${IDLE_UTIL_BELOW} %`],
    ['idle', 'Idle', `utilisation < ${IDLE_UTIL_BELOW} %`],
    ['hot', 'Hot', `temperature ≥ ${HOT_TEMP_AT_LEAST} °C`],
    ['silent', 'Silent', `no sample for ${SILENT_AFTER_S} s`],
    ['unknown', 'Unknown', 'no utilisation reported'],
  ];
  const COLORS = {
    grid: '#243042', axis: '#8b98ab', line: '#4ade80', band: 'rgba(74, 222, 128, 0.16)',
    series: ['#60a5fa', '#4ade80', '#f97316', '#eab308', '#a78bfa', '#f472b6'],
  };

  // ---- Small helpers ------------------------------------------------------------------------
  const $ = (sel, root = document) => root.querySelector(sel);
  const view = $('#view');
  const statusEl = $('#status');
  const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ESC[c]);
  const fmtInt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const fmt1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
  const fmt2 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
  const num = (v, f = fmt1) => (v == null || Number.isNaN(v) ? '–' : f.format(v));
  const pad2 = (n) => String(n).padStart(2, '0');

  function fmtValue(v, unit) {
    if (v == null || Number.isNaN(v)) return '–';
    const a = Math.abs(v);
    const f = a >= 1000 ? fmtInt : a >= 10 ? fmt1 : fmt2;
    return f.format(v) + (unit ? (unit === '%' ? ' %' : ' ' + unit) : '');
  }
  function fmtBytes(b) {
    if (b == null) return '–';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(b) >= 1024 && i < u.length - 1) { b /= 1024; i += 1; }
    return (i === 0 ? fmtInt : fmt1).format(b) + ' ' + u[i];
  }
  function fmtAge(ms) {
    if (ms == null || Number.isNaN(ms)) return 'never';
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }
  function fmtDuration(ms) {
    const s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return `${d} d ${h} h`;
    if (h) return `${h} h ${m} min`;
    if (m) return `${m} min ${s % 60} s`;
    return `${s} s`;
  }
  function fmtClock(t, withSeconds = true) {
    const d = new Date(t);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + (withSeconds ? ':' + pad2(d.getSeconds()) : '');
  }
  function fmtDateTime(t) {
    const d = new Date(t);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${fmtClock(t)}`;
  }
  const isoMs = (t) => new Date(t).toISOString();
  const naturalCompare = new Intl.Collator('en', { numeric: true, sensitivity: 'base' }).compare;

  function setStatus(text, kind) {
    statusEl.textContent = text;
    statusEl.className = 'status' + (kind ? ' ' + kind : '');
  }

  // ---- API access ---------------------------------------------------------------------------
  const TOKEN_KEY = 'gpu-telemetry-token';
  class Unauthorized extends Error {}

  async function api(path, { signal } = {}) {
    const headers = { Accept: 'application/json' };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = 'Bearer ' + token;
    const response = await fetch(path, { headers, signal, cache: 'no-store' });
    if (response.status === 401) throw new Unauthorized('a token is required');
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).error || detail; } catch (_) { /* not JSON */ }
      throw new Error(`${path.split('?')[0]}: HTTP ${response.status} ${detail}`);
    }
    return response.json();
  }

  function showTokenForm() {
    view.innerHTML = `<form class="token-form card" id="token-form">
      <h2>This server requires a token</h2>
      <p class="muted">Its API was started with <code>--http-token</code>. The token is kept in this
      tab only (session storage).</p>
      <input type="password" id="token" autocomplete="off" placeholder="Bearer token" required>
      <button type="submit">Use token</button></form>`;
    $('#token-form').addEventListener('submit', (e) => {
      e.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $('#token').value.trim());
      route();
    });
    setStatus('token required', 'error');
  }

  /** Runs `load` now and every `everyMs` after each run ends, until the page is left. */
  function poll(page, everyMs, load) {
    const tick = async () => {
      if (page.stopped) return;
      try {
        await load();
        if (!page.stopped) setStatus('Live · updated ' + fmtClock(Date.now()), 'live');
      } catch (e) {
        if (page.stopped) return;
        if (e instanceof Unauthorized) { showTokenForm(); return; }
        setStatus(e.message, 'error');
        document.body.dataset.apiErrors = String(Number(document.body.dataset.apiErrors || 0) + 1);
      }
      if (!page.stopped && everyMs) page.timer = setTimeout(tick, everyMs);
    };
    tick();
  }

  // ---- GPU state ----------------------------------------------------------------------------
  function gpuState(gpu, nowMs) {
    const seen = gpu.last_seen ? Date.parse(gpu.last_seen) : NaN;
    if (!(nowMs - seen < SILENT_AFTER_S * 1000)) return 'silent';
    const temp = gpu.latest[TEMP];
    if (temp != null && temp >= HOT_TEMP_AT_LEAST) return 'hot';
    const util = gpu.latest[UTIL];
    if (util == null) return 'unknown';
    return util < IDLE_UTIL_BELOW ? 'idle' : 'busy';
  }

  let overviewCache = null; // { body, at }
  async function fetchOverview(maxAgeMs = 0) {
    if (overviewCache && Date.now() - overviewCache.at <= maxAgeMs) return overviewCache.body;
    const body = await api('/api/v1/overview');
    overviewCache = { body, at: Date.now() };
    return body;
  }

  // ---- Overview page ------------------------------------------------------------------------
  const overviewFilters = { host: '', search: '', hidden: new Set() };
  let firstOverviewRender = true;

  function overviewPage(page) {
    view.innerHTML = `
      <div class="toolbar">
        <h1>GPUs</h1>
        <div class="spacer"></div>
        <select id="host-filter" aria-label="Host"><option value="">All hosts</option></select>
        <input id="search" type="search" placeholder="Search by UUID…" aria-label="Search by UUID">
      </div>
      <div class="toolbar">
        <div class="legend" id="legend"></div>
      </div>
      <div class="summary" id="summary"></div>
      <div id="hosts"></div>`;
    const hostSelect = $('#host-filter');
    const search = $('#search');
    search.value = overviewFilters.search;
    let data = null;
    let knownHosts = '';

    const render = () => {
      if (!data || page.stopped) return;
      const t0 = performance.now();
      const now = Date.parse(data.timestamp);
      const q = overviewFilters.search.trim().toLowerCase();
      const byHost = new Map();
      const counts = { busy: 0, idle: 0, hot: 0, silent: 0, unknown: 0 };
      for (const gpu of data.gpus) {
        const state = gpuState(gpu, now);
        counts[state] += 1;
        const host = gpu.hostname || '(no host)';
        if (overviewFilters.host && host !== overviewFilters.host) continue;
        if (q && !gpu.uuid.toLowerCase().includes(q)) continue;
        if (overviewFilters.hidden.has(state)) continue;
        if (!byHost.has(host)) byHost.set(host, []);
        byHost.get(host).push([gpu, state]);
      }
      const hosts = [...new Set(data.gpus.map((g) => g.hostname || '(no host)'))].sort(naturalCompare);
      const hostsKey = hosts.join('\n');
      if (hostsKey !== knownHosts) {
        knownHosts = hostsKey;
        hostSelect.innerHTML = '<option value="">All hosts</option>' +
          hosts.map((h) => `<option value="${esc(h)}">${esc(h)}</option>`).join('');
      }
      hostSelect.value = overviewFilters.host;

      $('#legend').innerHTML = STATES.map(([key, label, rule]) =>
        `<span class="chip${overviewFilters.hidden.has(key) ? ' off' : ''}" data-state="${key}" role="button"
          title="Show or hide ${label.toLowerCase()} GPUs"><span class="dot s-${key}"></span>${label}
          <b>${counts[key]}</b><span class="rule">${esc(rule)}</span></span>`).join('');
      const shown = [...byHost.values()].reduce((n, l) => n + l.length, 0);
      $('#summary').innerHTML = [
        [fmtInt.format(data.count), 'GPUs'], [fmtInt.format(hosts.length), 'hosts'],
        [fmtInt.format(shown), 'shown'],
        [avg(data.gpus, UTIL), 'mean utilisation'], [sum(data.gpus, POWER), 'total power'],
      ].map(([v, k]) => `<div class="tile"><div class="v">${v}</div><div class="k">${k}</div></div>`).join('');

      const parts = [];
      for (const host of [...byHost.keys()].sort(naturalCompare)) {
        const gpus = byHost.get(host);
        gpus.sort((a, b) => (a[0].gpu_index ?? 1e9) - (b[0].gpu_index ?? 1e9) || naturalCompare(a[0].uuid, b[0].uuid));
        const hostCounts = {};
        for (const [, s] of gpus) hostCounts[s] = (hostCounts[s] || 0) + 1;
        parts.push(`<section class="host" data-host="${esc(host)}"><div class="host-head"><h3>${esc(host)}</h3>
          <span class="muted">${gpus.length} GPU${gpus.length === 1 ? '' : 's'}</span><span class="counts">` +
          STATES.filter(([k]) => hostCounts[k]).map(([k, l]) =>
            `<span><span class="dot s-${k}"></span>${hostCounts[k]} ${l.toLowerCase()}</span>`).join('') +
          `</span></div><div class="grid">`);
        for (const [gpu, state] of gpus) parts.push(gpuCard(gpu, state, now));
        parts.push('</div></section>');
      }
      const built = performance.now();
      const hostsEl = $('#hosts');
      hostsEl.innerHTML = parts.length ? parts.join('')
        : `<div class="empty">${data.count ? 'No GPU matches the filters.' : 'No GPU has reported telemetry yet.'}</div>`;
      hostsEl.dataset.gpus = String(shown);
      void hostsEl.offsetHeight; // lay the page out now, so the time below includes it
      const done = performance.now();
      view.dataset.renderWorkMs = (done - t0).toFixed(1);
      view.dataset.renderSteps = `build ${(built - t0).toFixed(0)} ms, DOM and layout ${(done - built).toFixed(0)} ms`;
      if (firstOverviewRender) {
        firstOverviewRender = false;
        view.dataset.firstRenderMs = done.toFixed(1);
      }
      view.dataset.renderedGpus = String(shown);
    };

    hostSelect.addEventListener('change', () => { overviewFilters.host = hostSelect.value; render(); });
    let searchTimer = 0;
    search.addEventListener('input', () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => { overviewFilters.search = search.value; render(); }, 120);
    });
    $('#legend').addEventListener('click', (e) => {
      const chip = e.target.closest('[data-state]');
      if (!chip) return;
      const s = chip.dataset.state;
      if (overviewFilters.hidden.has(s)) overviewFilters.hidden.delete(s); else overviewFilters.hidden.add(s);
      render();
    });
    poll(page, OVERVIEW_REFRESH_MS, async () => {
      const asked = performance.now();
      data = await fetchOverview();
      if (!view.dataset.fetchMs) view.dataset.fetchMs = `${asked.toFixed(0)}+${(performance.now() - asked).toFixed(0)}`;
      if (!page.stopped) render();
    });
  }

  function avg(gpus, metric) {
    let n = 0, s = 0;
    for (const g of gpus) if (g.latest[metric] != null) { n += 1; s += g.latest[metric]; }
    return n ? fmt1.format(s / n) + ' %' : '–';
  }
  function sum(gpus, metric) {
    let s = 0, n = 0;
    for (const g of gpus) if (g.latest[metric] != null) { n += 1; s += g.latest[metric]; }
    return n ? (s >= 10000 ? fmt1.format(s / 1000) + ' kW' : fmtInt.format(s) + ' W') : '–';
  }

  function gpuCard(gpu, state, now) {
    const l = gpu.latest;
    const util = l[UTIL], temp = l[TEMP], power = l[POWER], used = l[FB_USED], free = l[FB_FREE];
    const total = used != null && free != null ? used + free : null;
    const memPct = total ? (100 * used) / total : null;
    const bar = (pct, cls = '') => `<div class="bar ${cls}"><i style="width:${Math.max(0, Math.min(100, pct ?? 0)).toFixed(1)}%"></i></div>`;
    const name = gpu.gpu_index != null ? `GPU ${gpu.gpu_index}` : 'GPU';
    const seen = gpu.last_seen ? Date.parse(gpu.last_seen) : NaN;
    return `<a class="gpu s-${state}" href="#/gpu/${encodeURIComponent(gpu.uuid)}" data-uuid="${esc(gpu.uuid)}" data-state="${state}">
      <div class="row"><span class="name">${esc(name)}</span><span class="badge">${state}</span><span class="ago">${fmtAge(now - seen)}</span></div>
      <div class="uuid" title="${esc(gpu.uuid)}">${esc(gpu.uuid)}</div>
      <div class="m"><span class="k">util</span>${bar(util)}<span class="v">${fmtValue(util, '%')}</span></div>
      <div class="m"><span class="k">temp</span>${bar(temp == null ? 0 : (temp / 100) * 100, 'temp')}<span class="v">${fmtValue(temp, '°C')}</span></div>
      <div class="m"><span class="k">mem</span>${bar(memPct, 'mem')}<span class="v">${memPct == null ? fmtValue(used, 'MiB') : fmt1.format(memPct) + ' %'}</span></div>
      <div class="pair"><span>power <b>${fmtValue(power, 'W')}</b></span><span><b>${total ? fmt1.format(used / 1024) + ' / ' + fmt1.format(total / 1024) + ' GiB' : '–'}</b></span></div>
    </a>`;
  }

  // ---- Charts -------------------------------------------------------------------------------
  function niceStep(span, ticks) {
    const raw = span / Math.max(1, ticks);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }
  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);

  /**
   * Draws a time chart on `canvas`: x from `x0` to `x1` (ms), each series a line of
   * [t, v] points with an optional [t, lo, hi] band; a gap longer than `gapMs` breaks
   * the line. Returns the geometry hover needs.
   */
  function drawChart(canvas, { x0, x1, series, yMin, yMax, gapMs, unit }) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 500, h = canvas.clientHeight || 170;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    let lo = Infinity, hi = -Infinity;
    for (const s of series) {
      for (const p of s.points) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
      for (const b of s.band || []) { lo = Math.min(lo, b[1]); hi = Math.max(hi, b[2]); }
    }
    if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
    if (yMin != null) lo = Math.min(lo, yMin);
    if (yMax != null) hi = Math.max(hi, yMax);
    if (hi - lo < 1e-9) {
      if (yMin != null && lo <= yMin) hi = lo + 1; else { hi += 1; lo -= 1; }
    }
    const yStep = niceStep(hi - lo, 4);
    lo = Math.floor(lo / yStep) * yStep;
    hi = Math.ceil(hi / yStep) * yStep;
    const labels = [];
    for (let v = lo; v <= hi + yStep / 2; v += yStep) labels.push(v);
    ctx.font = '11px system-ui, sans-serif';
    const left = Math.max(...labels.map((v) => ctx.measureText(fmtValue(v)).width)) + 12;
    const geo = { left, right: w - 10, top: 8, bottom: h - 22, x0, x1, lo, hi };
    const X = (t) => geo.left + ((t - x0) / (x1 - x0 || 1)) * (geo.right - geo.left);
    const Y = (v) => geo.bottom - ((v - lo) / (hi - lo)) * (geo.bottom - geo.top);
    geo.X = X; geo.Y = Y;

    ctx.strokeStyle = COLORS.grid;
    ctx.fillStyle = COLORS.axis;
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const v of labels) {
      const y = Math.round(Y(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(geo.left, y); ctx.lineTo(geo.right, y); ctx.stroke();
      ctx.fillText(fmtValue(v), geo.left - 6, y);
    }
    const span = x1 - x0;
    const tStep = TIME_STEPS.find((s) => span / s <= 7) || Math.ceil(span / 7 / 86400e3) * 86400e3;
    const offset = new Date(x0).getTimezoneOffset() * 60e3; // ticks on local round times
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (let t = Math.ceil((x0 - offset) / tStep) * tStep + offset; t <= x1; t += tStep) {
      const x = Math.round(X(t)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, geo.top); ctx.lineTo(x, geo.bottom); ctx.stroke();
      const label = span > 2 * 86400e3 ? `${new Date(t).getMonth() + 1}/${new Date(t).getDate()}`
        : fmtClock(t, tStep < 60e3);
      ctx.fillText(label, x, geo.bottom + 5);
    }
    ctx.save();
    ctx.beginPath();
    ctx.rect(geo.left, geo.top - 2, geo.right - geo.left, geo.bottom - geo.top + 4);
    ctx.clip();
    series.forEach((s, i) => {
      const color = s.color || COLORS.series[i % COLORS.series.length];
      if (s.band && s.band.length) {
        ctx.fillStyle = s.bandColor || COLORS.band;
        for (const run of runs(s.band, gapMs)) {
          ctx.beginPath();
          run.forEach((b, j) => (j ? ctx.lineTo(X(b[0]), Y(b[2])) : ctx.moveTo(X(b[0]), Y(b[2]))));
          for (let j = run.length - 1; j >= 0; j -= 1) ctx.lineTo(X(run[j][0]), Y(run[j][1]));
          ctx.closePath();
          ctx.fill();
        }
      }
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.lineWidth = 1.6;
      ctx.lineJoin = 'round';
      for (const run of runs(s.points, gapMs)) {
        if (run.length === 1) {
          ctx.beginPath(); ctx.arc(X(run[0][0]), Y(run[0][1]), 2, 0, 2 * Math.PI); ctx.fill();
          continue;
        }
        ctx.beginPath();
        run.forEach((p, j) => (j ? ctx.lineTo(X(p[0]), Y(p[1])) : ctx.moveTo(X(p[0]), Y(p[1]))));
        ctx.stroke();
      }
    });
    ctx.restore();
    geo.unit = unit;
    return geo;
  }

  function runs(points, gapMs) {
    const out = [];
    let run = [];
    for (const p of points) {
      if (run.length && gapMs && p[0] - run[run.length - 1][0] > gapMs) { out.push(run); run = []; }
      run.push(p);
    }
    if (run.length) out.push(run);
    return out;
  }

  /** Typical spacing of points, for breaking lines at real gaps. */
  function gapFor(points, stepMs) {
    const diffs = [];
    for (let i = 1; i < points.length; i += 1) diffs.push(points[i][0] - points[i - 1][0]);
    diffs.sort((a, b) => a - b);
    const typical = diffs.length ? diffs[Math.floor(diffs.length / 2)] : stepMs;
    return Math.max(3 * stepMs, 3 * typical);
  }

  /** Shows a crosshair and `describe(point)` for the point nearest the pointer. */
  function attachHover(plot, getState) {
    const cross = document.createElement('div');
    cross.className = 'cross hidden';
    const tip = document.createElement('div');
    tip.className = 'tip hidden';
    plot.append(cross, tip);
    plot.addEventListener('mouseleave', () => { cross.classList.add('hidden'); tip.classList.add('hidden'); });
    plot.addEventListener('mousemove', (e) => {
      const state = getState();
      if (!state || !state.points.length) return;
      const rect = plot.getBoundingClientRect();
      const x = e.clientX - rect.left;
      const { geo, points } = state;
      const t = geo.x0 + ((x - geo.left) / (geo.right - geo.left)) * (geo.x1 - geo.x0);
      let a = 0, b = points.length - 1;
      while (b - a > 1) { const m = (a + b) >> 1; if (points[m][0] < t) a = m; else b = m; }
      const p = Math.abs(points[a][0] - t) <= Math.abs(points[b][0] - t) ? points[a] : points[b];
      const px = geo.X(p[0]);
      cross.style.left = px + 'px';
      cross.classList.remove('hidden');
      tip.innerHTML = state.describe(p);
      tip.classList.remove('hidden');
      const tw = tip.offsetWidth;
      tip.style.left = Math.min(Math.max(0, px + 10), rect.width - tw) + 'px';
      tip.style.top = '6px';
    });
  }

  // ---- GPU detail page ----------------------------------------------------------------------
  function parseHashQuery(text) {
    const out = {};
    for (const [k, v] of new URLSearchParams(text || '')) out[k] = v;
    return out;
  }

  function toLocalInput(t) {
    const d = new Date(t);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  }

  function detailPage(page, uuid, params) {
    const custom = params.from && params.to;
    const win = custom ? null : (WINDOWS.find((w) => w[0] === params.w) || WINDOWS[1]);
    const windowRange = () => {
      if (custom) return [Date.parse(params.from), Date.parse(params.to)];
      const end = Date.now();
      return [end - win[2], end];
    };
    const [initialStart, initialEnd] = windowRange();
    const link = (q) => `#/gpu/${encodeURIComponent(uuid)}?${q}`;
    view.innerHTML = `
      <div class="crumbs"><a href="#/">GPUs</a> / <span id="crumb-host">…</span> / <span class="mono">${esc(uuid)}</span></div>
      <div class="ident" id="ident"><h1 id="gpu-title">GPU</h1></div>
      <div class="toolbar">
        <div class="seg" role="group" aria-label="Window">
          ${WINDOWS.map(([k, label]) => `<button type="button" data-w="${k}" class="${win && win[0] === k ? 'active' : ''}">Last ${label}</button>`).join('')}
          <button type="button" data-w="custom" class="${custom ? 'active' : ''}">Custom</button>
        </div>
        <span class="custom ${custom ? '' : 'hidden'}" id="custom">
          <input type="datetime-local" id="from" value="${toLocalInput(initialStart)}" aria-label="From">
          <span class="muted">to</span>
          <input type="datetime-local" id="to" value="${toLocalInput(initialEnd)}" aria-label="To">
          <button type="button" id="apply">Apply</button>
        </span>
        <div class="spacer"></div>
        <span class="muted" id="window-info"></span>
        <button type="button" id="dl-csv" title="The raw samples of the window as CSV">Download CSV</button>
        <button type="button" id="dl-json" title="The raw samples of the window as JSON">Download JSON</button>
      </div>
      <div id="notice"></div>
      <div class="charts" id="charts"></div>`;
    view.dataset.gpu = uuid;

    view.querySelectorAll('[data-w]').forEach((b) => b.addEventListener('click', () => {
      if (b.dataset.w === 'custom') {
        $('#custom').classList.remove('hidden');
        view.querySelectorAll('[data-w]').forEach((o) => o.classList.toggle('active', o === b));
      } else {
        location.hash = link('w=' + b.dataset.w);
      }
    }));
    $('#apply').addEventListener('click', () => {
      const from = new Date($('#from').value), to = new Date($('#to').value);
      if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime()) || from >= to) {
        $('#notice').innerHTML = '<div class="notice warn">Choose a start before the end.</div>';
        return;
      }
      location.hash = link(`from=${encodeURIComponent(from.toISOString())}&to=${encodeURIComponent(to.toISOString())}`);
    });
    $('#dl-csv').addEventListener('click', () => download(uuid, windowRange(), 'csv', $('#dl-csv')));
    $('#dl-json').addEventListener('click', () => download(uuid, windowRange(), 'json', $('#dl-json')));

    const charts = new Map(); // metric -> { el, canvas, state }
    let identityShown = false;

    const showIdentity = async () => {
      const overview = await fetchOverview(OVERVIEW_REFRESH_MS);
      const gpu = overview.gpus.find((g) => g.uuid === uuid);
      if (!gpu) {
        $('#gpu-title').textContent = 'Unknown GPU';
        $('#notice').innerHTML = `<div class="notice warn">No GPU with id <code>${esc(uuid)}</code> has reported telemetry.</div>`;
        return false;
      }
      const now = Date.parse(overview.timestamp);
      const state = gpuState(gpu, now);
      $('#crumb-host').textContent = gpu.hostname || '(no host)';
      $('#ident').innerHTML = `<h1>${esc(gpu.hostname || '')} · GPU ${esc(gpu.gpu_index ?? '?')}</h1>
        <span class="badge s-${state}">${state}</span>
        <span class="kv">model <b>${esc(gpu.model || '–')}</b></span>
        <span class="kv">uuid <b class="mono">${esc(gpu.uuid)}</b></span>
        <span class="kv">last sample <b>${gpu.last_seen ? fmtDateTime(Date.parse(gpu.last_seen)) : '–'}</b> (${fmtAge(now - Date.parse(gpu.last_seen))})</span>`;
      return gpu;
    };

    const loadSeries = async () => {
      if (!identityShown) {
        const gpu = await showIdentity();
        if (!gpu) { page.stopped = true; return; }
        identityShown = true;
      } else if (!custom) {
        showIdentity().catch(() => {});
      }
      const [start, end] = windowRange();
      const q = `start_time=${encodeURIComponent(isoMs(start))}&end_time=${encodeURIComponent(isoMs(end))}&points=${CHART_POINTS}`;
      const body = await api(`/api/v1/gpus/${encodeURIComponent(uuid)}/series?${q}`);
      if (page.stopped) return;
      $('#window-info').textContent = `${fmtDateTime(start)} – ${fmtDateTime(end)} · ${fmtInt.format(body.samples)} samples · ${fmtDuration(body.step_ms)} buckets`;
      const notices = [];
      if (body.complete_from) {
        notices.push(`<div class="notice warn">The window holds too many samples to read whole: the charts are complete from ${esc(fmtDateTime(Date.parse(body.complete_from)))} on.</div>`);
      }
      if (!body.series.length) {
        notices.push('<div class="notice">No samples in this window. Choose a longer window to see older data.</div>');
      }
      $('#notice').innerHTML = notices.join('');
      const order = (m) => { const i = METRIC_ORDER.indexOf(m); return i < 0 ? 100 : i; };
      const series = body.series.slice().sort((a, b) => order(a.metric) - order(b.metric) || naturalCompare(a.metric, b.metric));
      const container = $('#charts');
      for (const s of series) {
        let chart = charts.get(s.metric);
        if (!chart) {
          const info = METRIC_INFO[s.metric] || [s.metric, ''];
          const el = document.createElement('section');
          el.className = 'chart';
          el.dataset.metric = s.metric;
          el.innerHTML = `<header><h3>${esc(info[0])}</h3><span class="metric">${esc(s.metric)}</span>
            <span class="now"></span></header><div class="stats"></div><div class="plot"><canvas></canvas></div>`;
          chart = { el, canvas: $('canvas', el), state: null, info };
          attachHover($('.plot', el), () => chart.state);
          charts.set(s.metric, chart);
        }
        container.append(chart.el); // keeps the order
        drawSeries(chart, s, start, end, body.step_ms);
      }
      for (const [metric, chart] of charts) {
        if (!series.some((s) => s.metric === metric)) { chart.el.remove(); charts.delete(metric); }
      }
      view.dataset.charts = String(charts.size);
    };

    poll(page, custom ? 0 : DETAIL_REFRESH_MS[win[0]], loadSeries);
    const onResize = () => { for (const c of charts.values()) if (c.last) drawSeries(c, ...c.last); };
    window.addEventListener('resize', onResize);
    page.cleanup.push(() => window.removeEventListener('resize', onResize));
  }

  function drawSeries(chart, s, start, end, stepMs) {
    chart.last = [s, start, end, stepMs];
    const [, unit, yMin, yMax] = chart.info;
    const points = s.buckets.map((b) => [b[0] + stepMs / 2, b[4]]);
    const band = s.buckets.map((b) => [b[0] + stepMs / 2, b[2], b[3]]);
    let n = 0, total = 0, lo = Infinity, hi = -Infinity;
    for (const b of s.buckets) { n += b[1]; total += b[4] * b[1]; lo = Math.min(lo, b[2]); hi = Math.max(hi, b[3]); }
    const last = s.buckets[s.buckets.length - 1];
    $('.now', chart.el).innerHTML = last ? `${fmtValue(last[4])} <small>${esc(unit)}</small>` : '–';
    $('.stats', chart.el).textContent = n
      ? `min ${fmtValue(lo, unit)} · mean ${fmtValue(total / n, unit)} · max ${fmtValue(hi, unit)} · ${fmtInt.format(n)} samples`
      : 'no samples';
    const geo = drawChart(chart.canvas, {
      x0: start, x1: end, yMin, yMax, unit,
      gapMs: gapFor(points, stepMs),
      series: [{ points, band, color: COLORS.line }],
    });
    chart.state = {
      geo,
      points: s.buckets.map((b) => [b[0] + stepMs / 2, b[4], b]),
      describe: (p) => {
        const b = p[2];
        const range = b[1] > 1 ? `<br><span class="muted">min ${fmtValue(b[2], unit)} · max ${fmtValue(b[3], unit)} · ${b[1]} samples</span>` : '';
        return `<b>${fmtValue(b[4], unit)}</b> <span class="muted">${fmtDateTime(b[0])}</span>${range}`;
      },
    };
    chart.el.dataset.points = String(s.buckets.length);
    chart.el.dataset.samples = String(n);
    chart.el.dataset.step = String(stepMs);
    chart.el.dataset.lastBucket = last ? String(last[0]) : '';
  }

  async function download(uuid, [start, end], format, button) {
    const label = button.textContent;
    button.disabled = true;
    try {
      const samples = [];
      let cursor = null;
      let truncated = false;
      do {
        let q = `start_time=${encodeURIComponent(isoMs(start))}&end_time=${encodeURIComponent(isoMs(end))}&limit=${DOWNLOAD_PAGE}`;
        if (cursor) q += '&cursor=' + encodeURIComponent(cursor);
        const page = await api(`/api/v1/gpus/${encodeURIComponent(uuid)}/telemetry?${q}`);
        samples.push(...page.samples);
        cursor = page.next_cursor;
        button.textContent = `${fmtInt.format(samples.length)} samples…`;
        if (cursor && samples.length >= DOWNLOAD_SAMPLES_MAX) { truncated = true; break; }
      } while (cursor);
      let blob;
      const name = `${uuid}_${isoMs(start).replace(/[:.]/g, '-')}_${isoMs(end).replace(/[:.]/g, '-')}`;
      if (format === 'csv') {
        const cell = (v) => {
          const s = v == null ? '' : String(v);
          return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
        };
        const lines = ['timestamp,gpu_id,metric,value,partition,offset,source_timestamp'];
        for (const s of samples) {
          lines.push([s.timestamp, uuid, s.metric, s.value, s.partition, s.offset, s.source_timestamp].map(cell).join(','));
        }
        blob = new Blob([lines.join('\n') + '\n'], { type: 'text/csv' });
      } else {
        const doc = { gpu_id: uuid, start_time: isoMs(start), end_time: isoMs(end), count: samples.length, truncated, samples };
        blob = new Blob([JSON.stringify(doc)], { type: 'application/json' });
      }
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = `${name}.${format}`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000);
      if (truncated) {
        $('#notice').innerHTML = `<div class="notice warn">The download holds the first ${fmtInt.format(samples.length)} samples of the window; choose a shorter window for the rest.</div>`;
      }
    } catch (e) {
      if (e instanceof Unauthorized) { showTokenForm(); return; }
      setStatus('download failed: ' + e.message, 'error');
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  // ---- Pipeline page ------------------------------------------------------------------------
  const pipelineHistory = [];

  function pipelinePage(page) {
    view.innerHTML = `
      <div class="toolbar"><h1>Pipeline</h1><div class="spacer"></div>
        <span class="muted">streamers → broker → collectors → API; refreshed every ${PIPELINE_REFRESH_MS / 1000} s</span></div>
      <div class="cards" id="p-cards"></div>
      <div class="twocol">
        <section class="chart" id="rate-chart"><header><h3>Records per second</h3><span class="now"></span></header>
          <div class="stats" id="rate-legend"></div><div class="plot"><canvas></canvas></div></section>
        <section class="chart" id="lag-chart"><header><h3>Consumer group lag</h3><span class="now"></span></header>
          <div class="stats" id="lag-legend"></div><div class="plot"><canvas></canvas></div></section>
      </div>
      <div class="section"><h2>Topics</h2><div id="p-topics"></div></div>
      <div class="section"><h2>Consumer groups</h2><div id="p-groups"></div></div>
      <div class="section"><h2>Collectors</h2><div id="p-collectors"></div></div>`;
    const charts = {};
    for (const id of ['rate-chart', 'lag-chart']) {
      const el = $('#' + id);
      const chart = { el, canvas: $('canvas', el), state: null };
      attachHover($('.plot', el), () => chart.state);
      charts[id] = chart;
    }
    poll(page, PIPELINE_REFRESH_MS, async () => {
      const doc = await api('/api/v1/pipeline');
      if (page.stopped) return;
      pipelineHistory.push({ t: Date.parse(doc.timestamp), doc });
      while (pipelineHistory.length > PIPELINE_HISTORY) pipelineHistory.shift();
      renderPipeline(doc, charts);
    });
    const onResize = () => pipelineHistory.length && renderPipeline(pipelineHistory[pipelineHistory.length - 1].doc, charts);
    window.addEventListener('resize', onResize);
    page.cleanup.push(() => window.removeEventListener('resize', onResize));
  }

  /** When the broker's part of `doc` was read (it is read once a second). */
  const brokerTime = (doc) => (doc.broker && doc.broker.fetched_at ? Date.parse(doc.broker.fetched_at) : null);
  const docTime = (doc) => Date.parse(doc.timestamp);

  /**
   * Per-second rate of `get(doc)` between the latest sample and the newest earlier one
   * read at another time (`time(doc)`: broker counters carry their own read time), or null.
   */
  function rate(get, time = docTime) {
    const n = pipelineHistory.length;
    if (n < 2) return null;
    const b = pipelineHistory[n - 1].doc;
    const tb = time(b), vb = get(b);
    for (let i = n - 2; i >= 0; i -= 1) {
      const a = pipelineHistory[i].doc;
      const ta = time(a), va = get(a);
      if (ta == null || tb == null || va == null || vb == null) return null;
      if (tb - ta < 500) continue;
      return vb < va ? null : ((vb - va) * 1000) / (tb - ta);
    }
    return null;
  }
  const fmtRate = (r) => (r == null ? '–' : fmtInt.format(r) + '/s');

  function stored(doc) {
    let n = 0;
    for (const c of doc.collectors) n += c.stats ? c.stats.records_stored : 0;
    return n;
  }
  function published(doc) {
    const s = doc.broker && doc.broker.stats;
    if (!s) return null;
    return s.topics.filter((t) => !t.name.endsWith('.dlq')).reduce((n, t) => n + t.records_in, 0);
  }

  function healthPill(status) {
    const cls = status === 'ok' ? 'ok' : status === 'degraded' ? 'warn' : 'bad';
    return `<span class="pill ${cls}">${esc(status || 'unknown')}</span>`;
  }

  function partBars(values, cls = '') {
    const max = Math.max(1, ...values);
    return `<div class="parts ${cls}" title="per partition">${values.map((v, i) =>
      `<i style="height:${Math.max(4, (100 * v) / max).toFixed(0)}%" title="partition ${i}: ${fmtInt.format(v)}"></i>`).join('')}</div>`;
  }

  function renderPipeline(doc, charts) {
    const broker = doc.broker || {};
    const stats = broker.stats;
    const info = broker.info || {};
    const cards = [];
    cards.push(`<div class="card"><h2>Broker ${stats ? healthPill('ok') : healthPill(broker.error ? 'unreachable' : 'unknown')}</h2><dl>
      <dt>address</dt><dd class="mono">${esc((broker.addrs || []).join(', ') || '–')}</dd>
      <dt>version</dt><dd>${esc(info.version || '–')}</dd>
      <dt>storage</dt><dd>${esc(info.storage || '–')}${info.fsync ? ' · fsync ' + esc(info.fsync) : ''}</dd>
      <dt>uptime</dt><dd>${stats ? fmtDuration(stats.uptime_ms) : '–'}</dd>
      <dt>connections</dt><dd>${stats ? fmtInt.format(stats.connections) : '–'}</dd>
      <dt>bytes in / out</dt><dd>${stats ? fmtBytes(rate((d) => d.broker && d.broker.stats && d.broker.stats.bytes_in, brokerTime)) + '/s · ' + fmtBytes(rate((d) => d.broker && d.broker.stats && d.broker.stats.bytes_out, brokerTime)) + '/s' : '–'}</dd>
      ${broker.error ? `<dt>error</dt><dd class="bad">${esc(broker.error)}</dd>` : ''}
      ${broker.fetched_at ? `<dt>read at</dt><dd>${fmtClock(Date.parse(broker.fetched_at))}</dd>` : ''}
    </dl></div>`);
    const pub = rate(published, brokerTime), sto = rate(stored);
    const groups = stats ? stats.groups : [];
    const totalLag = groups.reduce((n, g) => n + g.lag, 0);
    const dead = groups.reduce((n, g) => n + g.dead_lettered, 0);
    const redelivered = groups.reduce((n, g) => n + g.redelivered, 0);
    cards.push(`<div class="card"><h2>Flow</h2><dl>
      <dt>published</dt><dd>${fmtRate(pub)}</dd>
      <dt>stored by collectors</dt><dd>${fmtRate(sto)}</dd>
      <dt>lag (all groups)</dt><dd class="${totalLag > 10000 ? 'warn' : ''}">${fmtInt.format(totalLag)}</dd>
      <dt>redelivered</dt><dd class="${redelivered ? 'warn' : ''}">${fmtInt.format(redelivered)}</dd>
      <dt>dead-lettered</dt><dd class="${dead ? 'bad' : ''}">${fmtInt.format(dead)}</dd>
    </dl></div>`);
    const healthy = doc.collectors.filter((c) => c.health && c.health.status === 'ok').length;
    cards.push(`<div class="card"><h2>Collectors ${healthPill(healthy === doc.collectors.length ? 'ok' : healthy ? 'degraded' : 'unavailable')}</h2><dl>
      <dt>healthy</dt><dd>${healthy} of ${doc.collectors.length}</dd>
      <dt>GPUs stored</dt><dd>${fmtInt.format(doc.collectors.reduce((n, c) => n + (c.stats ? c.stats.gpus : 0), 0))}</dd>
      <dt>samples stored</dt><dd>${fmtInt.format(doc.collectors.reduce((n, c) => n + (c.stats ? c.stats.samples_stored : 0), 0))}</dd>
      <dt>samples per second</dt><dd>${fmtRate(rate((d) => d.collectors.reduce((n, c) => n + (c.stats ? c.stats.samples_stored : 0), 0)))}</dd>
      <dt>on disk</dt><dd>${fmtBytes(doc.collectors.reduce((n, c) => n + (c.stats && c.stats.stored_bytes ? c.stats.stored_bytes : 0), 0))}</dd>
    </dl></div>`);
    $('#p-cards').innerHTML = cards.join('');

    // Topics
    if (stats) {
      $('#p-topics').innerHTML = `<table><thead><tr><th class="l">topic</th><th>partitions</th><th>records in</th><th>in/s</th>
        <th>out/s</th><th>held</th><th class="l">records per partition</th></tr></thead><tbody>` +
        stats.topics.map((t) => {
          const byName = (d) => d.broker && d.broker.stats && d.broker.stats.topics.find((x) => x.name === t.name);
          const held = t.partitions.map((p) => p.next_offset - p.oldest_offset);
          return `<tr data-topic="${esc(t.name)}"><td>${esc(t.name)}${t.name.endsWith('.dlq') ? ' <span class="sub">dead letters</span>' : ''}</td>
            <td>${t.partitions.length}</td><td>${fmtInt.format(t.records_in)}</td>
            <td>${fmtRate(rate((d) => byName(d) && byName(d).records_in, brokerTime))}</td>
            <td>${fmtRate(rate((d) => byName(d) && byName(d).records_out, brokerTime))}</td>
            <td>${fmtBytes(t.partitions.reduce((n, p) => n + p.bytes_stored, 0))}</td>
            <td class="l">${partBars(held)}</td></tr>`;
        }).join('') + '</tbody></table>';
      $('#p-groups').innerHTML = groups.length ? `<table><thead><tr><th class="l">group</th><th class="l">topic</th><th>members</th>
        <th>lag</th><th>in flight</th><th>acked/s</th><th>redelivered</th><th>dead-lettered</th><th class="l">lag per partition</th></tr></thead><tbody>` +
        groups.map((g) => {
          const find = (d) => d.broker && d.broker.stats && d.broker.stats.groups.find((x) => x.group === g.group && x.topic === g.topic);
          return `<tr data-group="${esc(g.group)}"><td>${esc(g.group)}</td><td class="l">${esc(g.topic)}</td>
            <td>${g.members.length}</td><td class="${g.lag > 10000 ? 'warn' : ''}">${fmtInt.format(g.lag)}</td>
            <td>${fmtInt.format(g.in_flight)}</td><td>${fmtRate(rate((d) => find(d) && find(d).acked, brokerTime))}</td>
            <td class="${g.redelivered ? 'warn' : ''}">${fmtInt.format(g.redelivered)}</td>
            <td class="${g.dead_lettered ? 'bad' : ''}">${fmtInt.format(g.dead_lettered)}</td>
            <td class="l">${partBars(g.partitions.map((p) => p.lag), 'lag')}</td></tr>`;
        }).join('') + '</tbody></table>' : '<div class="empty">No consumer group.</div>';
    } else {
      const why = broker.error ? `: ${esc(broker.error)}` : '';
      $('#p-topics').innerHTML = `<div class="notice warn">The broker's STATS are not available${why}.</div>`;
      $('#p-groups').innerHTML = '';
    }
    view.dataset.topics = String(stats ? stats.topics.length : 0);
    view.dataset.groups = String(groups.length);

    // Collectors
    $('#p-collectors').innerHTML = `<table><thead><tr><th class="l">collector</th><th class="l">status</th><th>consumed</th>
      <th>stored/s</th><th>duplicates</th><th>bad</th><th>batches</th><th>sync</th><th>GPUs</th><th>cache hit rate</th><th>lag</th><th>on disk</th><th>kept</th><th>expired</th></tr></thead><tbody>` +
      doc.collectors.map((c, i) => {
        const s = c.stats;
        const name = c.url || 'this collector';
        const status = c.health ? c.health.status : 'unreachable';
        const bad = s ? Object.values(s.bad_records).reduce((n, v) => n + v, 0) : 0;
        const storedRate = rate((d) => d.collectors[i] && d.collectors[i].stats && d.collectors[i].stats.records_stored);
        return `<tr data-collector="${esc(name)}"><td class="mono">${esc(name)}${s ? `<div class="sub">group ${esc(s.group)}</div>` : ''}</td>
          <td class="l">${healthPill(status)}${c.error ? `<div class="sub bad">${esc(c.error)}</div>` : ''}</td>
          <td>${s ? fmtInt.format(s.records_consumed) : '–'}</td><td>${fmtRate(storedRate)}</td>
          <td>${s ? fmtInt.format(s.records_duplicate) : '–'}</td><td class="${bad ? 'bad' : ''}">${s ? fmtInt.format(bad) : '–'}</td>
          <td>${s ? fmtInt.format(s.batches) : '–'}</td><td>${s ? fmtValue(s.sync_us_mean / 1000, 'ms') : '–'}</td>
          <td>${s ? fmtInt.format(s.gpus) : '–'}</td><td>${s ? fmt1.format(100 * s.cache.hit_rate) + ' %' : '–'}</td>
          <td>${s && s.lag != null ? fmtInt.format(s.lag) : '–'}</td>
          <td>${s && s.stored_bytes != null ? fmtBytes(s.stored_bytes) : '–'}</td>
          <td>${s && s.retention ? (s.retention.hours ? fmtInt.format(s.retention.hours) + ' h' : 'for ever') : '–'}</td>
          <td>${s && s.retention ? fmtInt.format(s.retention.samples_removed) : '–'}</td></tr>`;
      }).join('') + '</tbody></table>';
    view.dataset.collectors = String(doc.collectors.length);

    // Charts over the history
    const t1 = pipelineHistory[pipelineHistory.length - 1].t;
    const t0 = Math.min(pipelineHistory[0].t, t1 - 60e3);
    const pubPts = [], stoPts = [];
    let lastBroker = null;
    for (let i = 1; i < pipelineHistory.length; i += 1) {
      const a = pipelineHistory[i - 1].doc, b = pipelineHistory[i].doc;
      const dt = (docTime(b) - docTime(a)) / 1000;
      const sa = stored(a), sb = stored(b);
      if (dt > 0 && sb >= sa) stoPts.push([docTime(b), (sb - sa) / dt]);
      const tb = brokerTime(b), pb = published(b);
      if (tb == null || pb == null) continue;
      if (lastBroker && tb - lastBroker[0] >= 500 && pb >= lastBroker[1]) {
        pubPts.push([tb, ((pb - lastBroker[1]) * 1000) / (tb - lastBroker[0])]);
      }
      if (!lastBroker || tb - lastBroker[0] >= 500) lastBroker = [tb, pb];
    }
    const rateSeries = [
      { name: 'published', points: pubPts, color: COLORS.series[0] },
      { name: 'stored', points: stoPts, color: COLORS.series[1] },
    ];
    drawLines(charts['rate-chart'], t0, t1, rateSeries, '/s', $('#rate-legend'));
    const lagSeries = groups.map((g, i) => ({
      name: `${g.group} on ${g.topic}`,
      color: COLORS.series[(i + 2) % COLORS.series.length],
      points: pipelineHistory.map((h) => {
        const x = h.doc.broker && h.doc.broker.stats && h.doc.broker.stats.groups.find((y) => y.group === g.group && y.topic === g.topic);
        return x ? [h.t, x.lag] : null;
      }).filter(Boolean),
    }));
    drawLines(charts['lag-chart'], t0, t1, lagSeries, '', $('#lag-legend'));
  }

  function drawLines(chart, t0, t1, series, unit, legend) {
    legend.innerHTML = series.length ? series.map((s) =>
      `<span><span class="dot" style="background:${s.color}"></span> ${esc(s.name)}</span>`).join(' &nbsp; ')
      : 'no data yet';
    const lastOf = (s) => (s.points.length ? s.points[s.points.length - 1][1] : null);
    $('.now', chart.el).innerHTML = series.length && lastOf(series[0]) != null
      ? fmtInt.format(lastOf(series[0])) + (unit ? ` <small>${unit}</small>` : '') : '';
    const geo = drawChart(chart.canvas, { x0: t0, x1: t1, series, yMin: 0, gapMs: 4 * PIPELINE_REFRESH_MS + 1000 });
    const times = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    chart.state = {
      geo,
      points: times.map((t) => [t]),
      describe: (p) => `<span class="muted">${fmtClock(p[0])}</span><br>` + series.map((s) => {
        const q = s.points.find((x) => x[0] === p[0]);
        return `${esc(s.name)}: <b>${q ? fmtInt.format(q[1]) + (unit || '') : '–'}</b>`;
      }).join('<br>'),
    };
    chart.el.dataset.points = String(series.reduce((n, s) => n + s.points.length, 0));
  }

  // ---- Router -------------------------------------------------------------------------------
  let current = null;

  function route() {
    if (current) {
      current.stopped = true;
      clearTimeout(current.timer);
      current.cleanup.forEach((f) => f());
    }
    current = { stopped: false, timer: 0, cleanup: [] };
    for (const key of Object.keys(view.dataset)) delete view.dataset[key];
    const hash = location.hash.replace(/^#/, '') || '/';
    const [path, query] = hash.split('?');
    const gpu = path.match(/^\/gpu\/(.+)$/);
    const name = gpu ? 'gpu' : path === '/pipeline' ? 'pipeline' : 'overview';
    document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('active', a.dataset.nav === name || (name === 'gpu' && a.dataset.nav === 'overview')));
    view.dataset.page = name;
    window.scrollTo(0, 0);
    if (gpu) {
      let uuid;
      try { uuid = decodeURIComponent(gpu[1]); } catch (_) { uuid = gpu[1]; }
      document.title = `${uuid} · GPU telemetry`;
      detailPage(current, uuid, parseHashQuery(query));
    } else if (name === 'pipeline') {
      document.title = 'Pipeline · GPU telemetry';
      pipelinePage(current);
    } else {
      document.title = 'GPUs · GPU telemetry';
      overviewPage(current);
    }
  }

  window.addEventListener('hashchange', route);
  route();
})();
