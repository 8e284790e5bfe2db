// The live panel's timeline, drawn as SVG: per device the last minutes of memory, stacked
// (torch allocated, torch cache, context+other, other processes), NVML's used as a line, a mark
// at each cell's start with its execution count, its peak, and out-of-memory errors in red.
// The kernel sends one sample per tick ("sample"), one mark per cell ("cell"), and everything
// it keeps to a view that says hello ("history").

const HEIGHT = 120;
const LEFT = 64;
const RIGHT = 12;
const TOP = 16;
const BOTTOM = 18;
// seconds shown: a young panel shows the smallest of these that holds its age, not five
// empty minutes; then the widget's window (five minutes by default)
const SPANS = [30, 60, 120];
const LABEL_ROWS = 2;
const NS = 'http://www.w3.org/2000/svg';

function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return 'n/a';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 ? 0 : value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${bytes < 0 ? '-' : ''}${value.toFixed(digits)} ${units[unit]}`;
}

function escapeText(text) {
  return String(text).replace(/[&<>"]/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
}

function describe(mark, chartId) {
  const lines = [`[${mark.cell ?? 'running'}] ${mark.source}`];
  const memory = mark.memory[chartId];
  if (memory) {
    const change = memory.after - memory.before;
    lines.push(
      `after ${formatBytes(memory.after)} (${change >= 0 ? '+' : ''}${formatBytes(change)}), ` +
        `peak ${formatBytes(memory.peak)}`
    );
  }
  if (mark.end !== null) lines.push(`${(mark.end - mark.start).toFixed(2)} s`);
  else lines.push('running');
  if (mark.error) lines.push(mark.oom ? 'out of memory' : `error: ${mark.error}`);
  return lines.join('\n');
}

function chartSvg(chartId, samples, cells, series, now, span, width) {
  const plot = width - LEFT - RIGHT;
  const start = now - span;
  const points = [];
  for (const sample of samples) {
    const chart = sample.charts.find(c => c.id === chartId);
    if (chart && sample.t >= start - 1) points.push({ t: sample.t, chart });
  }
  if (!points.length) return '';
  const latest = points[points.length - 1].chart;
  const stackOf = chart => chart.parts.reduce((a, b) => a + b, 0);
  let top = 0;
  for (const { chart } of points) top = Math.max(top, stackOf(chart), chart.line ?? 0);
  for (const mark of cells) top = Math.max(top, mark.memory[chartId]?.peak ?? 0);
  top = Math.max(top * 1.1, 2 ** 20);
  const x = t => LEFT + (plot * (Math.max(t, start) - start)) / span;
  const y = bytes => TOP + (HEIGHT - TOP - BOTTOM) * (1 - bytes / top);
  const parts = [];
  // the grid and its scale
  for (const share of [0, 0.5, 1]) {
    const level = top * share;
    parts.push(
      `<line x1="${LEFT}" x2="${width - RIGHT}" y1="${y(level)}" y2="${y(level)}" class="grid"/>`,
      `<text x="${LEFT - 4}" y="${y(level) + 3}" text-anchor="end" class="axis">${formatBytes(level)}</text>`
    );
  }
  const minutes = span / 60;
  for (const share of [0, 0.5, 1]) {
    const ago = span * (1 - share);
    const label = share === 1 ? 'now' : span < 120 ? `-${Math.round(ago)} s` : `-${(ago / 60).toFixed(ago % 60 ? 1 : 0)} min`;
    const anchor = share === 0 ? 'start' : share === 1 ? 'end' : 'middle';
    parts.push(
      `<text x="${LEFT + plot * share}" y="${HEIGHT - 4}" text-anchor="${anchor}" class="axis">${label}</text>`
    );
  }
  // the stacked areas, bottom up
  const lower = points.map(() => 0);
  series.forEach((serie, index) => {
    const upper = points.map((p, i) => lower[i] + (p.chart.parts[index] ?? 0));
    if (upper.some((v, i) => v > lower[i])) {
      const forth = points.map((p, i) => `${x(p.t).toFixed(1)},${y(upper[i]).toFixed(1)}`);
      const back = points.map((p, i) => `${x(p.t).toFixed(1)},${y(lower[i]).toFixed(1)}`).reverse();
      parts.push(
        `<polygon class="area" data-series="${escapeText(serie.label)}" fill="${serie.colour}" ` +
          `points="${forth.concat(back).join(' ')}"><title>${escapeText(serie.label)}: ` +
          `${formatBytes(latest.parts[index])} now</title></polygon>`
      );
    }
    upper.forEach((v, i) => (lower[i] = v));
  });
  if (points.some(p => p.chart.line !== null)) {
    const line = points
      .filter(p => p.chart.line !== null)
      .map(p => `${x(p.t).toFixed(1)},${y(p.chart.line).toFixed(1)}`);
    parts.push(`<polyline class="used" points="${line.join(' ')}"><title>NVML used</title></polyline>`);
  }
  // a mark per cell: its start, its number, its peak, its error
  const rows = [];
  for (const mark of cells) {
    const end = mark.end ?? now;
    if (end < start) continue;
    const x0 = x(mark.start);
    const x1 = Math.max(x(end), x0 + 2);
    const kind = mark.oom ? 'oom' : mark.error ? 'error' : 'cell';
    const title = escapeText(describe(mark, chartId));
    let row = 0;
    while (row < LABEL_ROWS && rows[row] !== undefined && x0 - rows[row] < 26) row += 1;
    const label =
      row < LABEL_ROWS
        ? `<text x="${x0 + 2}" y="${TOP - 4 + row * 10}" class="label">${mark.cell ?? '▶'}${mark.oom ? ' OOM' : ''}</text>`
        : '';
    if (row < LABEL_ROWS) rows[row] = x0;
    const memory = mark.memory[chartId];
    const peak =
      memory && memory.peak !== null
        ? `<line class="peak" x1="${x0}" x2="${x1}" y1="${y(memory.peak)}" y2="${y(memory.peak)}"/>` +
          `<path class="peak-tip" d="M${x0 - 3},${y(memory.peak) - 5} h6 l-3,5 z"/>`
        : '';
    parts.push(
      `<g class="vram-magic-cell-mark vram-magic-mark-${kind}" data-cell="${mark.cell ?? ''}" data-kind="${kind}">` +
        `<rect class="span" x="${x0}" y="${TOP}" width="${x1 - x0}" height="${HEIGHT - TOP - BOTTOM}"/>` +
        `<line class="start" x1="${x0}" x2="${x0}" y1="${TOP - 2}" y2="${HEIGHT - BOTTOM}"/>` +
        `${peak}${label}<title>${title}</title></g>`
    );
  }
  const total = latest.total === null ? '' : ` of ${formatBytes(latest.total)}`;
  const now_ = formatBytes(latest.line ?? stackOf(latest));
  return (
    `<div class="vram-magic-timeline-title">${escapeText(latest.label)} · ${now_}${total}</div>` +
    `<svg xmlns="${NS}" class="vram-magic-timeline-chart" data-chart="${escapeText(chartId)}" ` +
    `width="${width}" height="${HEIGHT}" viewBox="0 0 ${width} ${HEIGHT}" role="img" ` +
    `aria-label="${escapeText(latest.label)} over the last ${minutes.toFixed(1)} minutes">` +
    `${parts.join('')}</svg>`
  );
}

function legendHtml(series, kinds) {
  const swatch = (colour, label) =>
    `<span class="entry"><span class="swatch" style="background:${colour}"></span>${escapeText(label)}</span>`;
  const entries = [];
  for (const kind of kinds) for (const serie of series[kind]) entries.push(swatch(serie.colour, serie.label));
  if (kinds.includes('device')) entries.push('<span class="entry"><span class="line"></span>NVML used</span>');
  entries.push('<span class="entry"><span class="mark"></span>cell start (number)</span>');
  entries.push('<span class="entry"><span class="tip">▼</span>cell peak</span>');
  entries.push('<span class="entry"><span class="mark oom"></span>out of memory</span>');
  return `<div class="vram-magic-timeline-legend">${entries.join('')}</div>`;
}

const STYLE = `
.vram-magic-timeline { font-size: 11px; color: var(--jp-ui-font-color1, currentColor); margin: 0.4em 0; contain: content; }
.vram-magic-timeline-title { margin: 0.3em 0 0 0; white-space: nowrap; }
.vram-magic-timeline svg { display: block; overflow: visible; shape-rendering: optimizeSpeed; }
.vram-magic-timeline .grid { stroke: var(--jp-border-color2, #8884); stroke-width: 1; }
.vram-magic-timeline .axis, .vram-magic-timeline .label { fill: var(--jp-ui-font-color1, currentColor); font-size: 10px; }
.vram-magic-timeline .area { opacity: 0.85; }
.vram-magic-timeline .used { fill: none; stroke: var(--jp-ui-font-color1, currentColor); stroke-width: 1.2; }
.vram-magic-timeline .span { fill: transparent; }
.vram-magic-timeline .span:hover { fill: var(--jp-ui-font-color1, #888); fill-opacity: 0.08; }
.vram-magic-timeline .start { stroke: var(--jp-ui-font-color2, #666); stroke-dasharray: 2 2; }
.vram-magic-timeline .peak { stroke: var(--jp-ui-font-color1, currentColor); stroke-width: 1.5; }
.vram-magic-timeline .peak-tip { fill: var(--jp-ui-font-color1, currentColor); }
.vram-magic-timeline .vram-magic-mark-oom .start, .vram-magic-timeline .vram-magic-mark-error .start { stroke: #e03131; stroke-dasharray: none; stroke-width: 2; }
.vram-magic-timeline .vram-magic-mark-oom .label { fill: #e03131; font-weight: bold; }
.vram-magic-timeline-legend { display: flex; flex-wrap: wrap; gap: 0.2em 1em; margin-top: 0.3em; }
.vram-magic-timeline-legend .entry { white-space: nowrap; display: inline-flex; align-items: center; gap: 0.3em; }
.vram-magic-timeline-legend .swatch { width: 0.8em; height: 0.8em; display: inline-block; }
.vram-magic-timeline-legend .line { width: 1.2em; border-top: 1.5px solid currentColor; display: inline-block; }
.vram-magic-timeline-legend .mark { height: 1em; border-left: 1px dashed currentColor; display: inline-block; }
.vram-magic-timeline-legend .mark.oom { border-left: 2px solid #e03131; }
`;

function render({ model, el }) {
  let samples = [];
  let cells = [];
  const root = document.createElement('div');
  root.className = 'vram-magic-timeline';
  const style = document.createElement('style');
  style.textContent = STYLE;
  const charts = document.createElement('div');
  const legend = document.createElement('div');
  el.append(style, root);
  root.append(charts, legend);
  let legendFor = '';
  let firstAt = null;
  let scheduled = false;

  function draw() {
    scheduled = false;
    if (!samples.length) {
      charts.textContent = 'waiting for the first reading…';
      return;
    }
    const window = model.get('window');
    const series = model.get('series');
    const now = samples[samples.length - 1].t;
    firstAt = firstAt ?? samples[0].t;
    const age = now - firstAt;
    const span = Math.min(window, SPANS.find(s => s >= age) ?? window);
    samples = samples.filter(s => s.t >= now - window - 1);
    cells = cells.filter(c => (c.end ?? now) >= now - window);
    const width = Math.max(360, Math.min(900, Math.floor(el.getBoundingClientRect().width || 640)));
    const latest = samples[samples.length - 1];
    const kinds = [...new Set(latest.charts.map(c => c.kind))];
    const html = latest.charts.map(c => chartSvg(c.id, samples, cells, series[c.kind], now, span, width));
    charts.innerHTML = html.join('');
    if (kinds.join() !== legendFor) {
      legendFor = kinds.join(); // the legend changes only with the kinds of chart
      legend.innerHTML = legendHtml(series, kinds);
    }
  }

  // at most one drawing per animation frame, and none while the tab is hidden
  function redraw() {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(draw);
    }
  }

  function addCell(mark) {
    const last = cells[cells.length - 1];
    if (last && last.end === null) cells.pop(); // the running cell's mark, finished now
    cells.push(mark);
  }

  function onMessage(message) {
    if (message.kind === 'sample') samples.push(message.sample);
    else if (message.kind === 'cell') addCell(message.mark);
    else if (message.kind === 'history') {
      samples = message.samples;
      cells = message.cells;
      firstAt = samples.length ? samples[0].t : null;
    }
    redraw();
  }

  model.on('msg:custom', onMessage);
  model.send({ kind: 'hello' });
  draw();
  return () => model.off('msg:custom', onMessage);
}

export default { render };
