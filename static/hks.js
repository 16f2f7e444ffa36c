// HKS Functions dashboard: copy buttons, tab highlighting and the live log viewer.
// Our own code only; htmx (and its ws extension) come from django-htmx's {% htmx_script %}.
"use strict";

document.addEventListener("click", (event) => {
  const copy = event.target.closest("button.copy[data-copy]");
  if (copy) {
    navigator.clipboard?.writeText(copy.dataset.copy).then(() => {
      copy.textContent = "Copied";
      setTimeout(() => { copy.textContent = "Copy"; }, 1500);
    });
  }
  const tab = event.target.closest("#function-tabs a");
  if (tab) markTab(tab);
});

function markTab(tab) {
  document.querySelectorAll("#function-tabs a").forEach((a) => {
    a.classList.toggle("current", a === tab);
    if (a === tab) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (tab.dataset.title) document.title = tab.dataset.title;
  document.getElementById("tab-content")?.setAttribute("aria-labelledby", tab.id);
}

// Back/forward between tabs restores the page from htmx's history: mark the tab of the URL again.
window.addEventListener("popstate", () => {
  const tab = [...document.querySelectorAll("#function-tabs a")].find((a) => a.pathname === location.pathname);
  if (tab) markTab(tab);
});

// --- Live refresh that never moves the keyboard focus ---------------------------------------------
// Polled fragments (list, status, builds, revisions) are replaced by htmx. Before a swap we remember
// where the focus is (nearest element with an id, and which of its focusable elements) and which
// <details> were open; after it we put both back. The function list goes further: it changes only
// the cells whose content changed, so the focused link is never even replaced.
const FOCUSABLE = "a[href], button, input, select, textarea, summary, [tabindex]";

function focusMark(root) {
  const active = document.activeElement;
  if (!active || active === document.body || !root.contains(active)) return null;
  const anchor = active.id ? active : active.parentElement.closest("[id]");
  if (!anchor) return null;
  const index = active === anchor ? -1 : [...anchor.querySelectorAll(FOCUSABLE)].indexOf(active);
  return { id: anchor.id, index };
}

function focusRestore(mark) {
  if (!mark) return;
  const anchor = document.getElementById(mark.id);
  if (!anchor) return;
  const target = mark.index < 0 ? anchor : anchor.querySelectorAll(FOCUSABLE)[mark.index];
  if (target && document.activeElement !== target) target.focus({ preventScroll: true });
}

function openDetails(root) {
  return [...root.querySelectorAll("details[id]")].map((d) => [d.id, d.open]);
}

let pendingFocus = null;
let pendingOpen = [];

function patchRows(oldRoot, newRoot) {
  // The same rows and columns: copy over only what changed. Returns false when the table changed shape.
  const ids = (root) => [...root.querySelectorAll("tbody > tr[id]")].map((tr) => tr.id).join(" ");
  const head = (root) => root.querySelector("thead")?.innerHTML ?? "";
  const notice = (root) => root.querySelector("#metrics-unavailable")?.outerHTML ?? "";
  // Another query (filters, sort) needs the new element: htmx keeps the polling URL it was set up with.
  if (oldRoot.getAttribute("hx-get") !== newRoot.getAttribute("hx-get")) return false;
  // The status counts and the pager ([data-patch]) are replaced in place when they change; a block that
  // comes or goes changes the shape.
  const blocks = (root) => [...root.querySelectorAll("[data-patch][id]")].map((el) => el.id).join(" ");
  if (ids(oldRoot) !== ids(newRoot) || head(oldRoot) !== head(newRoot) || notice(oldRoot) !== notice(newRoot)
      || blocks(oldRoot) !== blocks(newRoot)) {
    return false;
  }
  for (const fresh of newRoot.querySelectorAll("[data-patch][id]")) patchBlock(document.getElementById(fresh.id), fresh);
  for (const fresh of newRoot.querySelectorAll("tbody > tr[id]")) patchRow(document.getElementById(fresh.id), fresh);
  return true;
}

function patchBlock(block, fresh) {
  const html = fresh.outerHTML;
  if (!block || (served.get(block) ?? block.outerHTML) === html) return;
  const mark = focusMark(block);
  block.replaceWith(fresh);
  served.set(fresh, html);
  htmx.process(fresh);  // the pager's links are htmx links
  focusRestore(mark);
}

const served = new WeakMap();  // cell or block -> the HTML the server last sent for it

function patchRow(row, fresh, keepFigures = false) {
  // keepFigures: a pushed row carries no live figures (those come with the next poll): keep ours.
  if (!row) return;
  for (const attr of fresh.attributes) {
    if (attr.name !== "hx-swap-oob" && row.getAttribute(attr.name) !== attr.value) row.setAttribute(attr.name, attr.value);
  }
  [...fresh.cells].forEach((cell, i) => {
    const old = row.cells[i];
    // Compared with what the server sent last time, not the live DOM (a "Copied" button is not a change).
    if (!old || (served.get(old) ?? old.innerHTML) === cell.innerHTML) return;
    if (keepFigures && cell.hasAttribute("data-figure")) return;
    const mark = focusMark(old);
    old.innerHTML = cell.innerHTML;
    served.set(old, cell.innerHTML);
    for (const attr of cell.attributes) old.setAttribute(attr.name, attr.value);
    focusRestore(mark);
  });
}

document.addEventListener("htmx:beforeSwap", (event) => {
  const target = event.detail.target;
  if (!event.detail.shouldSwap || !target) return;
  if (target.id === "function-rows") {
    const template = document.createElement("template");
    template.innerHTML = event.detail.serverResponse;
    const fresh = template.content.getElementById("function-rows");
    if (fresh && patchRows(target, fresh)) {
      event.detail.shouldSwap = false;
      return;
    }
  }
  pendingFocus = focusMark(target);
  pendingOpen = openDetails(target);
});

document.addEventListener("htmx:afterSwap", () => {
  for (const [id, open] of pendingOpen) {
    const details = document.getElementById(id);
    if (details && details.tagName === "DETAILS") details.open = open;
  }
  pendingOpen = [];
  focusRestore(pendingFocus);
  pendingFocus = null;
});

// Rows pushed over the websocket (out-of-band swaps): patch the cells instead of replacing the row.
document.addEventListener("htmx:oobBeforeSwap", (event) => {
  const target = event.detail.target;
  const fresh = event.detail.fragment?.querySelector?.(`#${CSS.escape(target.id)}`) ?? event.detail.fragment?.firstElementChild;
  if (target?.tagName === "TR" && fresh?.tagName === "TR" && target.cells.length === fresh.cells.length) {
    patchRow(target, fresh, true);
    event.detail.shouldSwap = false;
  }
});

// A pushed row of a function this page does not show (created since it loaded, filtered out, or on another
// page of the list) has no target: rather than let htmx report an oob error, drop the message; the list's
// 5-second refresh brings the row if this page's filter and page show it.
document.addEventListener("htmx:wsBeforeMessage", (event) => {
  const template = document.createElement("template");
  template.innerHTML = event.detail.message;
  const rows = [...template.content.children];
  if (rows.length && rows.every((row) => row.id && !document.getElementById(row.id))) {
    event.preventDefault();
  }
});

// Which error answers htmx swaps in (a form's 400, a conflict, an unreachable function) is one policy:
// the htmx-config meta tag in templates/base.html.

class LogViewer {
  // Lines arrive as JSON batches over a websocket; the server drops lines (and says how many) when the
  // page cannot keep up, and the page keeps at most MAX_LINES in the DOM.
  static MAX_LINES = 5000;

  constructor(root) {
    this.root = root;
    this.lines = root.querySelector("#log-lines");
    this.state = root.querySelector("#log-state");
    this.filterInput = root.querySelector("#log-filter");
    this.follow = root.querySelector("#log-follow");
    this.pauseButton = root.querySelector("#log-pause");
    this.olderButton = root.querySelector("#log-older");
    this.firstTs = null;
    this.paused = false;
    this.held = [];
    this.lastTs = null;
    this.retry = 0;
    this.closedByUs = false;
    this.pauseButton.addEventListener("click", () => this.togglePause());
    this.olderButton?.addEventListener("click", () => this.loadOlder());
    this.filterInput.addEventListener("input", () => this.applyFilter());
    this.connect();
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams();
    if (this.lastTs) query.set("since", this.lastTs);
    // A reconnect while paused starts paused: no line may slip through before a "pause" message lands.
    if (this.paused) query.set("paused", "1");
    const search = query.toString();
    return `${scheme}//${location.host}${this.root.dataset.wsPath}${search ? "?" + search : ""}`;
  }

  connect() {
    this.setState("connecting…");
    this.socket = new WebSocket(this.url());
    this.socket.addEventListener("open", () => {
      this.retry = 0;
      this.setState(this.paused ? "paused" : "live");
    });
    this.socket.addEventListener("message", (event) => this.receive(JSON.parse(event.data)));
    this.socket.addEventListener("close", (event) => {
      if (this.closedByUs || !document.body.contains(this.root)) return;
      if (event.code === 4403 || event.code === 4404) { this.setState("not allowed"); return; }
      const delay = Math.min(10000, 500 * 2 ** this.retry++);
      this.setState(`disconnected; reconnecting in ${Math.round(delay / 1000)} s`);
      setTimeout(() => this.connect(), delay);
    });
  }

  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  setState(text) { this.state.textContent = text; }

  togglePause() {
    this.paused = !this.paused;
    this.pauseButton.textContent = this.paused ? "Resume" : "Pause";
    this.send({ action: this.paused ? "pause" : "resume" });
    this.setState(this.paused ? "paused" : "live");
    if (!this.paused) this.held.splice(0).forEach((line) => this.addLine(line));
  }

  receive(message) {
    if (message.type === "lines" && this.paused) {
      // Lines the server sent before it saw "pause" wait here, like the ones it holds itself.
      this.held.push(...message.lines);
      this.held.splice(0, Math.max(0, this.held.length - LogViewer.MAX_LINES));
      return;
    }
    if (message.type === "lines") message.lines.forEach((line) => this.addLine(line));
    else if (message.type === "dropped") this.addNotice(`${message.count} lines dropped (too many to show)`);
    else if (message.type === "error") this.addNotice(message.message);
    if (this.follow.checked) this.lines.scrollTop = this.lines.scrollHeight;
  }

  async loadOlder() {
    // The lines before the oldest one shown, from the log search (its JSON form), put on top.
    const query = new URLSearchParams({ format: "json", before: this.firstTs ?? new Date().toISOString() });
    this.olderButton.disabled = true;
    try {
      const answer = await fetch(`${this.root.dataset.searchUrl}?${query}`, { credentials: "same-origin" });
      const data = await answer.json();
      if (!answer.ok) throw new Error(data.error ?? `HTTP ${answer.status}`);
      const keep = this.lines.scrollHeight - this.lines.scrollTop;
      const first = this.lines.firstElementChild;
      for (const line of data.lines) this.lines.insertBefore(this.row(line), first);
      if (data.lines.length) this.firstTs = data.lines[0].ts;
      this.lines.scrollTop = this.lines.scrollHeight - keep;  // the lines that were in view stay in view
      this.olderButton.disabled = !data.more;
      this.olderButton.textContent = data.more ? "Load older" : "No older lines";
    } catch (error) {
      this.addNotice(`could not load older lines: ${error.message}`);
      this.olderButton.disabled = false;
    }
  }

  row(line) {
    const row = document.createElement("div");
    row.className = `log-line stream-${line.stream}`;
    for (const [cls, text] of [["ts", line.ts.slice(11, 23)], ["instance", line.instance],
                               ["stream", line.stream], ["text", line.text]]) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      row.appendChild(span);
    }
    const filter = this.filterInput.value.toLowerCase();
    row.hidden = Boolean(filter) && !line.text.toLowerCase().includes(filter);
    return row;
  }

  addLine(line) {
    this.lastTs = line.ts;
    if (this.firstTs === null) this.firstTs = line.ts;
    this.show(this.row(line), line.text);
  }

  addNotice(text) {
    const row = document.createElement("div");
    row.className = "log-line notice";
    row.textContent = text;
    this.show(row, text);
  }

  show(row, text) {
    const filter = this.filterInput.value.toLowerCase();
    row.hidden = Boolean(filter) && !text.toLowerCase().includes(filter);
    this.lines.appendChild(row);
    while (this.lines.childElementCount > LogViewer.MAX_LINES) this.lines.firstElementChild.remove();
  }

  applyFilter() {
    const filter = this.filterInput.value.toLowerCase();
    for (const row of this.lines.children) {
      const text = row.querySelector(".text")?.textContent ?? row.textContent;
      row.hidden = Boolean(filter) && !text.toLowerCase().includes(filter);
    }
  }

  close() { this.closedByUs = true; this.socket?.close(); }
}

function startLogViewers() {
  document.querySelectorAll("#log-viewer:not([data-started])").forEach((root) => {
    root.dataset.started = "1";
    root.viewer = new LogViewer(root);
  });
}

document.addEventListener("DOMContentLoaded", startLogViewers);
document.addEventListener("htmx:afterSettle", startLogViewers);
document.addEventListener("htmx:beforeSwap", (event) => {
  // Leaving the logs tab closes its socket instead of reconnecting forever in the background.
  event.detail.target.querySelectorAll?.("#log-viewer").forEach((root) => root.viewer?.close());
});
