// Charts for the console pages: line charts drawn by uPlot (vendored, web/vendor/) for the jobs page's
// live curves, and small SVG sparklines for tables. Colours come from the theme's custom properties
// (css/theme.css), so a chart is redrawn when the theme changes.

import uPlot from "../vendor/uplot-1.6.32/uPlot.esm.js";
import { formatNumber } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const SERIES_COLOURS = ["--chart-1", "--chart-2", "--chart-3", "--chart-4"];
const STEP_TICKS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6].map((p) => m * p)).sort((a, b) => a - b);

/**
 * Series [{label, points: [[x, y], ...]}] as uPlot's columns: the x values every series has, in
 * order, then one column per series with null where it has no point (drawn as a gap). Pure.
 */
export function toColumns(series) {
  const xs = [...new Set(series.flatMap((s) => s.points.map(([x]) => x)))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const columns = series.map((s) => {
    const column = new Array(xs.length).fill(null);
    for (const [x, y] of s.points) column[index.get(x)] = y;
    return column;
  });
  return [xs, ...columns];
}

/**
 * A line chart in `target`, one line per series, sized to the target's width and a fixed height
 * (the space is reserved before any data arrives, so nothing below it moves). The canvas is
 * decorative for screen readers: the page puts the numbers in text beside it.
 */
export class LineChart {
  constructor(target, { height = 180, format = formatNumber, xLabel = "step" } = {}) {
    this.target = target;
    this.height = height;
    this.format = format;
    this.xLabel = xLabel;
    this.series = [];
    this.plot = null;
    target.classList.add("chart");
    target.style.height = `${height}px`;
    target.setAttribute("aria-hidden", "true");
    this.resizer = new ResizeObserver(() => this.fit());
    this.resizer.observe(target);
    // The theme picker changes <html data-theme>: redraw in the new colours.
    this.themeWatch = new MutationObserver(() => this.rebuild());
    this.themeWatch.observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
  }

  /** Show these series ([{label, points: [[x, y], ...]}]); cheap to call on every new event. */
  set(series) {
    const sameLines = series.length === this.series.length && series.every((s, i) => s.label === this.series[i].label);
    this.series = series;
    if (this.plot && sameLines) this.plot.setData(toColumns(series));
    else this.rebuild();
  }

  destroy() {
    this.resizer.disconnect();
    this.themeWatch.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }

  fit() {
    const width = this.target.clientWidth;
    if (!width) return; // not laid out yet (or hidden): drawn when it gets a size
    if (this.plot) this.plot.setSize({ width, height: this.height });
    else this.rebuild();
  }

  rebuild() {
    this.plot?.destroy();
    this.plot = null;
    const width = this.target.clientWidth;
    if (!width || !this.series.length) return;
    const style = getComputedStyle(document.documentElement);
    const colour = (name) => style.getPropertyValue(name).trim();
    const axis = {
      stroke: colour("--muted"),
      grid: { stroke: colour("--chart-grid"), width: 1 },
      ticks: { stroke: colour("--chart-grid"), width: 1 },
    };
    const options = {
      width,
      height: this.height,
      legend: { show: false }, // the page writes the latest values as text
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false } },
      axes: [
        // Steps are whole numbers: ticks at 1, 2, 5 x 10^n, never at 2.5.
        { ...axis, label: this.xLabel, labelSize: 18, incrs: STEP_TICKS, values: (_, ticks) => ticks.map((v) => formatNumber(v)) },
        { ...axis, size: 56, values: (_, ticks) => ticks.map((v) => this.format(v)) },
      ],
      series: [
        {},
        ...this.series.map((s, i) => ({
          label: s.label,
          stroke: colour(SERIES_COLOURS[i % SERIES_COLOURS.length]),
          width: 2,
          points: { show: s.points.length < 40, size: 5 },
        })),
      ],
    };
    this.plot = new uPlot(options, toColumns(this.series), this.target);
  }
}

/**
 * A small line of `points` ([[x, y], ...]) as an SVG image with `label` as its accessible name;
 * `mark`, an x value, gets a dot (a checkpoint's step on its stage's curve).
 */
export function sparkline(points, { label, mark = null, width = 120, height = 28 } = {}) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.classList.add("sparkline");
  if (!points.length) return svg;
  const pad = 3;
  const xs = points.map(([x]) => x);
  const ys = points.map(([, y]) => y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + (x1 === x0 ? (width - 2 * pad) / 2 : ((x - x0) / (x1 - x0)) * (width - 2 * pad));
  const sy = (y) => pad + (y1 === y0 ? (height - 2 * pad) / 2 : (1 - (y - y0) / (y1 - y0)) * (height - 2 * pad));
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "));
  line.classList.add("sparkline-line");
  svg.append(line);
  // The point nearest the mark: curves are logged every few steps, a checkpoint at any step.
  const marked = mark === null ? null : points.reduce((a, b) => (Math.abs(b[0] - mark) < Math.abs(a[0] - mark) ? b : a));
  if (marked) {
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", sx(marked[0]).toFixed(1));
    dot.setAttribute("cy", sy(marked[1]).toFixed(1));
    dot.setAttribute("r", "2.5");
    dot.classList.add("sparkline-mark");
    svg.append(dot);
  }
  return svg;
}

/** "4.0 → 2.9 over steps 1–300": what a sparkline shows, in words. */
export function describeCurve(name, points, format = formatNumber) {
  if (!points.length) return `${name}: no data`;
  const [first, last] = [points[0], points.at(-1)];
  if (points.length === 1) return `${name} ${format(first[1])} at step ${first[0]}`;
  return `${name} ${format(first[1])} → ${format(last[1])} over steps ${first[0]}–${last[0]}`;
}
