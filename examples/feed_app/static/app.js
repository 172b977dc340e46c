// The feed page: POSTs /api/page (rerank, or advance to the next slate), posts clicks to /api/click, then
// asks for the reranked page again. GET /api/page only reads the last page back.
"use strict";

const COLORS = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2"];
const STAGES = ["validate_cache", "history_read", "assembly", "inference", "merge", "record_exposures"];
let sources = [];
let clickNote = null; // {kind: "saved" | "click", text}: what became of the last click

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

function color(source) {
  const index = sources.indexOf(source);
  return COLORS[(index < 0 ? 0 : index) % COLORS.length];
}

function badge(source) {
  const node = el("span", { class: "badge source" }, source);
  node.style.background = color(source);
  return node;
}

function card(item) {
  const score = item.score === null ? "not reranked" : `score ${item.score.toFixed(3)} · p ${item.probability.toFixed(2)}`;
  const node = el("button", { type: "button", class: item.slot ? "card slot" : "card",
                              "data-item-id": item.item_id, "data-source": item.source,
                              "data-score": item.score === null ? "" : String(item.score) },
    el("div", { class: "card-top" }, el("span", { class: "rank" }, `#${item.rank}`), badge(item.source)),
    el("div", { class: "title" }, item.title),
    el("div", { class: "description" }, item.description || ""),
    el("div", { class: "meta" }, item.title === item.item_id ? score : `${item.item_id} · ${score}`));
  node.style.borderLeftColor = color(item.source);
  node.addEventListener("click", () => clickCard(item));
  return node;
}

function renderExposure(rows) {
  const box = document.getElementById("exposure");
  box.replaceChildren(...rows.map((row) => {
    const bar = el("div", { class: "bar" },
      el("div", { class: "fill" }), el("div", { class: "target", title: `target ${pct(row.target)}` }));
    bar.firstChild.style.width = pct(row.share);
    bar.firstChild.style.background = color(row.source);
    bar.lastChild.style.left = pct(row.target);
    return el("div", { class: "exposure", "data-source": row.source },
      el("div", { class: "exposure-label" }, badge(row.source),
         el("span", {}, `${pct(row.share)} shown (${row.shown}) · target ${pct(row.target)}`)), bar);
  }));
}

function pct(x) { return `${(100 * x).toFixed(0)}%`; }

function renderTimings(timings) {
  const rows = STAGES.filter((s) => s in timings).map((stage) =>
    el("tr", {}, el("td", {}, stage), el("td", { class: "ms" }, `${timings[stage].toFixed(2)} ms`)));
  document.getElementById("timings").replaceChildren(...rows);
  document.getElementById("total").textContent = "total" in timings ? `${timings.total.toFixed(1)} ms` : "(none)";
}

function renderNotices(notices) {
  const all = clickNote ? [clickNote, ...notices] : notices;
  document.getElementById("notices").replaceChildren(...all.map((n) =>
    el("div", { class: `notice ${n.kind}`, "data-kind": n.kind }, n.text)));
}

function render(page) {
  sources = page.exposure.map((row) => row.source);
  const mode = document.getElementById("mode");
  mode.textContent = page.mode;
  mode.className = `badge mode ${page.mode}`;
  mode.title = page.mode_detail;
  document.getElementById("runtime").textContent = page.backend
    ? `${page.backend} · ${page.delegate} · merge ${page.merge} · bundle ${page.bundle}` : "no model loaded";
  document.getElementById("slate").textContent = page.request_id
    ? `user ${page.user_id} · slate ${page.request_id} · page ${page.page}` : "";
  document.getElementById("slots").replaceChildren(...page.cards.filter((c) => c.slot).map(card));
  const more = page.cards.filter((c) => !c.slot);
  document.getElementById("more").replaceChildren(...more.map(card));
  document.getElementById("more-title").hidden = more.length === 0;
  renderExposure(page.exposure);
  renderTimings(page.timings_ms);
  document.getElementById("history").replaceChildren(...Object.entries(page.history).map(([source, n]) =>
    el("div", { class: "history", "data-source": source, "data-clicks": String(n) }, badge(source),
       ` ${n} clicks stored`)));
  document.getElementById("attempts").replaceChildren(...(page.attempts || []).map((a) => el("li", {}, a)));
  renderNotices(page.notices);
  document.body.dataset.page = String(page.page);
  document.body.dataset.state = page.backend ? "ready" : "unavailable";
}

async function load(advance = false) {
  try {
    const response = await fetch("/api/page", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ advance }),
    });
    render(await response.json());
  } catch (error) {
    renderNotices([{ kind: "network", text: `The feed app does not answer: ${error}` }]);
  }
}

async function clickCard(item) {
  try {
    const response = await fetch("/api/click", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ item_id: item.item_id, source: item.source }),
    });
    const answer = await response.json();
    clickNote = answer.recorded
      ? { kind: "saved", text: `Saved your click on ${item.title} (${item.source}); the feed was reranked with it.` }
      : { kind: "click", text: answer.error };
  } catch (error) {
    clickNote = { kind: "click", text: `The click was not sent: ${error}` };
  }
  await load();
}

document.getElementById("next").addEventListener("click", () => { clickNote = null; load(true); });
load();
