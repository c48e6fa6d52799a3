// Renders a summary (GET /status/summary's shape) into the page. Every value goes in as text, never as HTML.

import { drawChart, SMOOTH, smoothed } from "./chart.js";

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined).map((c) => (c instanceof Node ? c : String(c))));
  return node;
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

function money(x) {
  return x === null || x === undefined ? "?" : x.toFixed(x < 1 ? 4 : 2);
}

function ago(ms, now) {
  return ms ? `${seconds(Math.max(0, (now - ms) / 1000))} ago` : "";
}

function renderNodes(s) {
  const rows = s.nodes.map((n) => el("tr", { "data-node": n.id, "data-role": n.role, "data-status": n.status,
                                             class: `status-${n.status}${n.self ? " self" : ""}` },
    el("td", {}, n.id, n.self ? el("span", { class: "muted" }, " (this page)") : null),
    el("td", { class: "role" }, n.role),
    el("td", { class: "status" }, el("span", { class: `badge ${n.status}` }, n.status),
       n.status === "lost" && n.lostTime ? el("span", { class: "muted" }, ` ${ago(n.lostTime, s.generatedAt)}`) : null),
    el("td", {}, `${n.busy}/${n.slots}`),
    el("td", {}, el("meter", { min: 0, max: 1, value: n.load }), ` ${Math.round(n.load * 100)}%`),
    el("td", {}, n.provider),
    el("td", {}, money(n.hourlyPrice))));
  $("nodes").tBodies[0].replaceChildren(...rows);
  $("launching").textContent = s.launching.length
    ? `launching: ${s.launching.map((l) => `${l.id} (${ago(l.launchedAt * 1000, s.generatedAt)})`).join(", ")}` : "";
  $("spend").textContent = `spend ${money(s.spend.perHour)}/h, ${money(s.spend.soFar)} so far`;
  $("where").textContent = `node ${s.node} (${s.role}), leader ${s.leader || "none"}, term ${s.term ?? "?"}` +
    (s.hasQuorum === false ? " — NO QUORUM" : "");
}

function renderQueue(s) {
  $("queue-count").textContent = `${s.queue.count} waiting` +
    (s.queue.count > s.queue.head.length ? `, the first ${s.queue.head.length} shown` : "");
  const rows = s.queue.head.map((e) => el("tr", { "data-exec": e.id },
    el("td", {}, e.queuePosition ?? e.position),
    el("td", {}, e.id),
    el("td", {}, e.activityName),
    el("td", { class: "input" }, e.stdin + (e.stdinTruncated ? "…" : "")),
    el("td", {}, e.submitTime ? seconds(Math.max(0, (s.generatedAt - e.submitTime) / 1000)) : ""),
    el("td", { class: "reason" }, e.waitingReason || (e.lastError ? `requeued: ${e.lastError}` : "")),
    el("td", {}, e.attempts)));
  $("queue").tBodies[0].replaceChildren(...rows);
}

const cards = new Map();   // execution id -> its card, kept between renders so a button is not replaced mid-click

function runningCard(e, actions) {
  const button = el("button", { class: "terminate", type: "button", "data-exec": e.id }, "terminate");
  button.addEventListener("click", () => actions.terminate(e.id, button));
  const card = el("article", { class: "exec", "data-exec": e.id },
    el("header", {}, el("b", {}, `#${e.id}`), el("span", { class: "activity" }, ""), "on",
       el("b", { class: "worker" }, ""), el("span", { class: "elapsed muted" }, ""), button),
    el("pre", { class: "stdout" }), el("pre", { class: "stderr" }));
  return card;
}

// A read-scope token sees no output: an execution's output is its result (the submit scope's).
const HIDDEN = "(output hidden: it needs a token with the submit scope)";

function renderRunning(s, actions) {
  $("running-count").textContent = `${s.running.count} running` +
    (s.running.count > s.running.shown.length ? `, the first ${s.running.shown.length} shown` : "");
  const seen = new Set();
  const list = $("running");
  for (const e of s.running.shown) {
    seen.add(e.id);
    let card = cards.get(e.id);
    if (!card) {
      card = runningCard(e, actions);
      cards.set(e.id, card);
    }
    card.querySelector(".activity").textContent = `${e.activityName} ${JSON.stringify(e.stdin)}${e.stdinTruncated ? "…" : ""}`;
    card.querySelector(".worker").textContent = e.workerId;
    card.querySelector(".elapsed").textContent =
      `for ${seconds(e.elapsedS)}` + (e.attempts > 1 ? `, attempt ${e.attempts}` : "");
    card.querySelector(".stdout").textContent = s.outputHidden ? HIDDEN : (e.stdoutTail ?? "");
    card.querySelector(".stderr").textContent = e.stderrTail ?? "";
    card.querySelector(".stderr").hidden = !e.stderrTail;
    list.append(card);   // in the feed's order (moves an existing card)
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.remove();
      cards.delete(id);
    }
  }
  list.classList.toggle("empty", s.running.shown.length === 0);
}

function renderEnded(s) {
  const rows = s.ended.map((e) => el("tr", { "data-exec": e.id, "data-status": e.status },
    el("td", {}, e.id),
    el("td", {}, e.activityName),
    el("td", { class: "input" }, e.stdin + (e.stdinTruncated ? "…" : "")),
    el("td", { class: "status" }, el("span", { class: `badge ${e.status}` }, e.status)),
    el("td", {}, e.exitCode ?? ""),
    el("td", {}, e.workerId ?? ""),
    el("td", {}, seconds(e.runS)),
    el("td", {}, ago(e.finishTime, s.generatedAt)),
    el("td", { class: "output" }, s.outputHidden ? HIDDEN : (e.stdoutTail ?? "").trim(), e.stderrTail ? el("span", { class: "error" }, ` ${e.stderrTail.trim()}`) : null,
       e.errorDescription ? el("span", { class: "muted" }, ` (${e.errorDescription})`) : null)));
  $("ended").tBodies[0].replaceChildren(...rows);
}

function renderActivities(s) {
  const items = s.activities.map((a) => el("article", { class: "activity", "data-activity": a.name },
    el("header", {}, el("b", {}, a.name), " ", el("span", { class: `badge ${a.status}` }, a.status),
       el("span", { class: "muted" }, ` ${a.waiting} waiting, ${a.running} running`)),
    a.errorDescription ? el("p", { class: "error" }, a.errorDescription) : null,
    el("ul", { class: "installs" }, ...(a.installations || []).map((i) => el("li", { "data-node": i.workerId },
      `${i.workerId}: `, el("span", { class: `badge ${i.status}` }, i.status),
      i.errorDescription ? el("span", { class: "error" }, ` ${i.errorDescription}`) : null)))));
  $("activities").replaceChildren(...(items.length ? items : [el("p", { class: "muted" }, "no activities")]));
}

function renderScaling(s) {
  const sc = s.scaling;
  const parts = [el("p", {}, "policy: ", sc.policy ? el("b", {}, sc.policy.name) : el("span", { class: "muted" }, "none"),
    sc.policy ? el("code", {}, ` ${JSON.stringify(sc.policy.rules)}`) : null)];
  if (sc.unknown) {
    parts.push(el("p", { class: "muted" }, `decisions unknown: ${sc.unknown}`));
  } else {
    const last = sc.lastDecision;
    parts.push(el("p", {}, "now: ", last ? el("span", { class: "reason" }, last.reason) : el("span", { class: "muted" },
      "no decision yet"), sc.from ? el("span", { class: "muted" }, ` (leader ${sc.from})`) : null));
    if (sc.decisions && sc.decisions.length) {
      parts.push(el("ol", { class: "decisions" }, ...sc.decisions.map((d) => el("li", {},
        d.lastAt ? el("span", { class: "muted" }, `${ago(d.lastAt, s.generatedAt)}: `) : null,
        d.launch ? `launch ${d.launch}; ` : "", d.destroy.length ? `destroy ${d.destroy.join(", ")}; ` : "",
        d.reason))));
    }
  }
  $("scaling").replaceChildren(...parts);
}

function renderChart(s) {
  drawChart($("chart"), s.throughput);
  const last = smoothed(s.throughput)[s.throughput.length - 1];
  $("rate-now").textContent = last && last.finishedPerS !== null
    ? `(${last.finishedPerS.toFixed(1)}/s over the last ${SMOOTH} s)` : "";
  $("queue-now").textContent = `(${s.queue.count} now)`;
}

export function render(s, actions) {
  renderNodes(s);
  renderQueue(s);
  renderRunning(s, actions);
  renderEnded(s);
  renderActivities(s);
  renderScaling(s);
  renderChart(s);
}
