// The throughput chart: two polylines in an SVG (finished per second, averaged over SMOOTH samples; the queue's
// length), each scaled to its own maximum over the window shown. Points are {t (ms), finishedPerS, waiting}.

const NS = "http://www.w3.org/2000/svg";
const W = 600, H = 160, PAD = 14;
export const SMOOTH = 5;

export function smoothed(points) {
  // Each point's finishedPerS as the mean of it and the SMOOTH - 1 before it (those that have one).
  return points.map((p, i) => {
    const window = points.slice(Math.max(0, i - SMOOTH + 1), i + 1).filter((q) => q.finishedPerS !== null);
    const rate = window.length ? window.reduce((sum, q) => sum + q.finishedPerS, 0) / window.length : null;
    return { ...p, finishedPerS: rate };
  });
}

function line(points, key, max, t0, span, cls) {
  const path = document.createElementNS(NS, "polyline");
  const coords = points.filter((p) => p[key] !== null && p[key] !== undefined).map((p) => {
    const x = span > 0 ? ((p.t - t0) / span) * W : W;
    const y = H - PAD - (max > 0 ? (p[key] / max) * (H - 2 * PAD) : 0);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  path.setAttribute("points", coords.join(" "));
  path.setAttribute("class", cls);
  return path;
}

function label(text, y, cls) {
  const t = document.createElementNS(NS, "text");
  t.setAttribute("x", "4");
  t.setAttribute("y", String(y));
  t.setAttribute("class", cls);
  t.textContent = text;
  return t;
}

export function drawChart(svg, raw) {
  svg.replaceChildren();
  const points = smoothed(raw);
  if (!points.length) return;
  const t0 = points[0].t, span = points[points.length - 1].t - t0;
  const maxRate = Math.max(1, ...points.map((p) => p.finishedPerS || 0));
  const maxQueue = Math.max(1, ...points.map((p) => p.waiting || 0));
  svg.append(line(points, "waiting", maxQueue, t0, span, "queue"),
             line(points, "finishedPerS", maxRate, t0, span, "rate"),
             label(`${maxRate.toFixed(1)}/s`, 12, "rate"), label(`${maxQueue} waiting`, 26, "queue"),
             label(`${Math.round(span / 1000)} s`, H - 2, "axis"));
}
