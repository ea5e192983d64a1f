// The labeling view (app/labeler.py mounts it): runs in the browser, so a key press acts at once on
// the image on screen. Each action becomes an event carrying the ids of the items displayed when it
// was given; the events not yet acknowledged by Python are sent as one state value ("outbox"), so a
// rerun that coalesces several changes loses none. Python commits them in order and returns, with
// the next render, the last sequence number it committed ("acked") and the stored labels.
const views = new Map();          // instance -> view state, for the life of this page
const NAME_KEY = "proxyLabeler.annotator";
const COLUMNS_KEY = "proxyLabeler.columns";
const MODE_KEY = "proxyLabeler.mode";
const ROWS_PER_PAGE = 8;
const PREFETCH = 6;
let installed = false;

const newId = () => (globalThis.crypto?.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`.replace(".", ""));
const stored = (key, fallback) => { try { return localStorage.getItem(key) ?? fallback; } catch { return fallback; } };
const store = (key, value) => { try { localStorage.setItem(key, value); } catch { /* private mode: not remembered */ } };
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; };
const url = (template, id) => template.replace("{id}", String(id));

function viewFor(instance, mode) {
  let v = views.get(instance);
  if (!v) {
    v = { instance, client: newId(), seq: 0, pending: [], undo: [], cursor: null, pinned: false,
          selected: new Set(), anchor: null, page: 0, zoom: false, dragging: false,
          mode: mode || stored(MODE_KEY, "focus"), columns: Number(stored(COLUMNS_KEY, "8")) || 8,
          annotator: stored(NAME_KEY, ""), prefetched: new Map(), message: "" };
    views.set(instance, v);
  }
  return v;
}

// ------------------------------------------------------------------ state: stored labels + pending events

function effective(v) {
  const state = new Map(v.data.items.map((it) => [it.id, { label: it.label, skipped: it.skipped, pending: false }]));
  for (const ev of v.pending) {
    ev.items.forEach((id, i) => {
      if (!state.has(id)) return;
      const next = ev.action === "undo" ? { ...ev.before[i] }
        : ev.action === "skip" ? { label: null, skipped: true } : { label: ev.value, skipped: false };
      state.set(id, { ...next, pending: true });
    });
  }
  return state;
}

const isDone = (s) => s && (s.label != null || s.skipped);

function receive(v, data) {
  v.data = data;
  if (data.signedIn) v.annotator = data.signedIn;   // the server saves labels under this name whatever is sent
  const acked = (data.acked || {})[v.client] || 0;
  v.pending = v.pending.filter((ev) => ev.seq > acked);
  const refused = ((data.errors || {})[v.client] || []).filter((e) => e.seq > (v.shownError || 0));
  if (refused.length) { v.shownError = refused[refused.length - 1].seq; v.message = "Not saved: " + refused.map((e) => e.message).join("; "); }
  const ids = data.items.map((it) => it.id);
  if (!ids.includes(v.cursor)) { v.cursor = null; v.pinned = false; }
  if (v.cursor == null) v.cursor = firstOpen(v, -1);
  for (const id of [...v.selected]) if (!ids.includes(id)) v.selected.delete(id);
}

// Held by another annotator: the server leaves out this session's own holds; without accounts the name
// typed here may also hold images from this person's earlier tab, which are this tab's too.
const heldByOther = (v, it) => it.heldBy != null && it.heldBy.toLowerCase() !== (v.annotator || "").trim().toLowerCase();

// The next open image after position `after`, wrapping: one another annotator holds (app/claims.py) only
// when no other is open, so two people on one batch label different images and either can finish it.
function firstOpen(v, after) {
  const items = v.data.items, state = effective(v), n = items.length;
  for (const othersToo of [false, true]) {
    for (let step = 1; step <= n; step++) {
      const it = items[(after + step + n) % n];
      if (!isDone(state.get(it.id)) && (othersToo || !heldByOther(v, it))) return it.id;
    }
  }
  return n ? items[Math.max(0, Math.min(after, n - 1))].id : null;
}

const indexOf = (v, id) => v.data.items.findIndex((it) => it.id === id);

// ------------------------------------------------------------------ actions

function emit(v, action, ids, value, how) {
  if (!ids.length) return;
  if (!v.annotator) { v.message = "Type your name first: it is saved with every label."; render(v); v.nameInput?.focus(); return; }
  const state = effective(v);
  const before = ids.map((id) => ({ label: state.get(id)?.label ?? null, skipped: !!state.get(id)?.skipped }));
  const ev = { seq: ++v.seq, action, items: ids, value: value ?? null, how, annotator: v.annotator, before };
  v.pending.push(ev);
  if (action !== "undo") v.undo.push({ items: ids, before });
  v.message = "";
  flush(v);
}

function flush(v) {
  const events = v.pending.map(({ before, ...ev }) => ev);
  v.setStateValue("outbox", { client: v.client, events });
}

function label(v, ids, value, how) {
  emit(v, value == null ? "skip" : "label", ids, value, how);
}

function undo(v) {
  const last = v.undo.pop();
  if (!last) { v.message = "Nothing to undo in this tab."; render(v); return; }
  const ev = { seq: ++v.seq, action: "undo", items: last.items, value: null, how: null, annotator: v.annotator, before: last.before };
  v.pending.push(ev);
  flush(v);
  v.cursor = last.items[0]; v.pinned = true;
  if (v.mode === "grid") { v.selected = new Set(last.items); showCursorPage(v); }
  render(v);
}

function advance(v) {
  const at = indexOf(v, v.cursor);
  v.cursor = firstOpen(v, at); v.pinned = false; v.zoom = false;
}

function focusLabel(v, value, how) {
  const id = v.cursor;
  if (id == null) return;
  label(v, [id], value, how);
  if (v.annotator) advance(v);
  render(v);
}

function acceptGuess(v, ids, how) {
  const byId = new Map(v.data.items.map((it) => [it.id, it]));
  const withGuess = ids.filter((id) => byId.get(id)?.guess != null);
  if (!withGuess.length) { v.message = "No guess for this image: type its class."; render(v); return false; }
  const groups = new Map();
  for (const id of withGuess) { const g = byId.get(id).guess; groups.set(g, [...(groups.get(g) || []), id]); }
  for (const [guess, group] of groups) label(v, group, guess, how);
  return true;
}

function move(v, step) {
  const n = v.data.items.length;
  if (!n) return;
  const at = Math.max(0, indexOf(v, v.cursor));
  v.cursor = v.data.items[(at + step + n) % n].id; v.pinned = true; v.zoom = false;
}

// ------------------------------------------------------------------ keys

// With several views on one page (the Curate page's kept, dropped and suspect grids), keys go to the view
// the person last clicked in; before any click, to the first one on the page.
let activeView = null;

// A click in a view also takes the keyboard from a page widget that had it (a filter's text box keeps the
// focus when a tile, which cannot take focus, is clicked, and keys typed there never reach the view).
function onPointerDown(event) {
  const path = event.composedPath ? event.composedPath() : [event.target];
  const v = [...views.values()].find((x) => x.root?.isConnected && path.includes(x.root));
  if (!v) return;
  activeView = v;
  const typing = path.some((e) => e && (/^(INPUT|TEXTAREA|SELECT)$/.test(e.tagName) || e.isContentEditable));
  const focused = document.activeElement;
  if (!typing && focused && focused !== document.body && !path.includes(focused)) focused.blur?.();
}

function onKey(event) {
  const connected = [...views.values()].filter((x) => x.root?.isConnected);
  const v = connected.includes(activeView) ? activeView : connected[0];
  if (!v || !v.data) return;
  const t = event.target;
  const path = event.composedPath ? event.composedPath() : [t];
  if (path.some((e) => e && (/^(INPUT|TEXTAREA|SELECT)$/.test(e.tagName) || e.isContentEditable))) return;
  if (event.ctrlKey || event.metaKey || event.altKey) {
    if (v.mode === "grid" && (event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "a") {
      event.preventDefault(); v.selected = new Set(pageItems(v).map((it) => it.id)); render(v);
    }
    return;
  }
  const handled = v.mode === "grid" ? gridKey(v, event) : focusKey(v, event);
  if (handled) { event.preventDefault(); event.stopPropagation(); }
}

function classForKey(v, key) {
  const i = "1234567890".indexOf(key);
  return i >= 0 && i < v.data.classes.length ? v.data.classes[i] : undefined;
}

// A digit with no class behind it says so instead of doing nothing (issue 25: a key that cannot act says why).
function noClassKey(v, event) {
  if (!/^[0-9]$/.test(event.key) || classForKey(v, event.key) !== undefined) return false;
  const n = v.data.classes.length;
  v.message = `No class on key ${event.key}: keys 1–${Math.min(n, 10) % 10 || 0} label the ${n} classes.`;
  render(v);
  return true;
}

function focusKey(v, event) {
  const key = event.key.toLowerCase();
  const cls = event.key.length === 1 ? classForKey(v, event.key) : undefined;
  if (cls !== undefined) { if (!event.repeat) focusLabel(v, cls, "typed"); return true; }
  if (noClassKey(v, event)) return true;
  if (event.repeat && !key.startsWith("arrow")) return true;
  switch (key) {
    case "enter": if (v.cursor != null && acceptGuess(v, [v.cursor], "accepted")) { advance(v); render(v); } return true;
    case "s": focusLabel(v, null, "typed"); return true;
    case "u": case "backspace": undo(v); return true;
    case "arrowleft": move(v, -1); render(v); return true;
    case "arrowright": move(v, 1); render(v); return true;
    case "z": toggleZoom(v); return true;
    case "g": setMode(v, "grid"); return true;
    default: return false;
  }
}

function gridKey(v, event) {
  const key = event.key.toLowerCase();
  const targets = () => (v.selected.size ? [...v.selected] : v.cursor != null ? [v.cursor] : []);
  const cls = event.key.length === 1 ? classForKey(v, event.key) : undefined;
  if (cls !== undefined) { if (!event.repeat) { label(v, targets(), cls, v.selected.size > 1 ? "bulk" : "typed"); afterBulk(v); } return true; }
  if (noClassKey(v, event)) return true;
  const cols = v.columns;
  const step = { arrowleft: -1, arrowright: 1, arrowup: -cols, arrowdown: cols }[key];
  if (step !== undefined) {
    const items = v.data.items, at = Math.max(0, indexOf(v, v.cursor));
    const next = Math.min(items.length - 1, Math.max(0, at + step));
    if (event.shiftKey) { v.anchor = v.anchor ?? v.cursor; v.cursor = items[next].id; selectRange(v, v.anchor, v.cursor); }
    else { v.cursor = items[next].id; v.anchor = v.cursor; }
    showCursorPage(v); render(v); return true;
  }
  if (event.repeat) return true;
  switch (key) {
    case "enter": if (acceptGuess(v, targets(), v.selected.size > 1 ? "bulk" : "accepted")) afterBulk(v); return true;
    case "s": label(v, targets(), null, v.selected.size > 1 ? "bulk" : "typed"); afterBulk(v); return true;
    case "u": case "backspace": undo(v); return true;
    case "escape": v.selected.clear(); render(v); return true;
    case "pagedown": turnPage(v, 1); return true;
    case "pageup": turnPage(v, -1); return true;
    case "z": case "f": toFocus(v); return true;
    default: return false;
  }
}

function afterBulk(v) {
  if (v.annotator) v.selected.clear();     // nothing was sent without a name: keep the selection
  render(v);
}

// ------------------------------------------------------------------ grid selection and pages

const pageSize = (v) => v.columns * ROWS_PER_PAGE;
const pageCount = (v) => Math.max(1, Math.ceil(v.data.items.length / pageSize(v)));
const pageItems = (v) => v.data.items.slice(v.page * pageSize(v), (v.page + 1) * pageSize(v));

function showCursorPage(v) {
  const at = indexOf(v, v.cursor);
  if (at >= 0) v.page = Math.floor(at / pageSize(v));
}

function turnPage(v, step) {
  v.page = Math.min(pageCount(v) - 1, Math.max(0, v.page + step));
  v.selected.clear();
  const first = pageItems(v)[0];
  if (first) v.cursor = first.id;
  render(v);
}

function selectRange(v, fromId, toId) {
  const a = indexOf(v, fromId), b = indexOf(v, toId);
  if (a < 0 || b < 0) return;
  v.selected = new Set(v.data.items.slice(Math.min(a, b), Math.max(a, b) + 1).map((it) => it.id));
}

function tileDown(v, id, event) {
  if (event.button !== 0) return;
  event.preventDefault();
  // the first press redraws the grid, so the tile a dblclick listener sat on is gone by the second press;
  // the press's click count still says it is a double-click
  if (event.detail >= 2 && !event.shiftKey && !event.ctrlKey && !event.metaKey) {
    v.dragging = false; v.cursor = id; v.pinned = true; setMode(v, "focus"); return;
  }
  if (event.shiftKey && v.anchor != null) selectRange(v, v.anchor, id);
  else if (event.ctrlKey || event.metaKey) { v.selected.has(id) ? v.selected.delete(id) : v.selected.add(id); v.anchor = id; }
  else { v.selected = new Set([id]); v.anchor = id; v.dragging = true; }
  v.cursor = id;
  render(v);
}

function tileEnter(v, id) {
  if (!v.dragging) return;
  selectRange(v, v.anchor, id); v.cursor = id;
  render(v);
}

// F, Z or the Focus button from the grid: the next image to label from the cursor on (the tile last clicked
// is often one just labeled); a double-click opens the tile itself. A view with nothing open keeps the tile.
function toFocus(v) {
  if (isDone(effective(v).get(v.cursor))) v.cursor = firstOpen(v, indexOf(v, v.cursor));
  v.pinned = false;
  setMode(v, "focus");
}

function setMode(v, mode) {
  v.mode = mode; v.zoom = false;
  if (!v.data.mode) store(MODE_KEY, mode);           // a view that names its mode (the label browser) keeps it
  if (mode === "grid") showCursorPage(v);
  render(v);
}

// ------------------------------------------------------------------ drawing

function prefetch(v) {
  const items = v.data.items, state = effective(v), at = Math.max(0, indexOf(v, v.cursor));
  const wanted = [];
  for (let k = 1; k < items.length && wanted.length < PREFETCH; k++) {
    const it = items[(at + k) % items.length];
    if (!isDone(state.get(it.id)) && !heldByOther(v, it)) wanted.push(it.id);
  }
  if (at > 0) wanted.push(items[at - 1].id);
  for (const id of wanted) {
    if (v.prefetched.has(id)) continue;
    const img = new Image(); img.decoding = "async"; img.src = url(v.data.urls.focus, id);
    v.prefetched.set(id, img);
  }
  if (v.prefetched.size > 64) for (const id of [...v.prefetched.keys()].slice(0, v.prefetched.size - 64)) v.prefetched.delete(id);
}

function statusText(s, cls) {
  if (!s || !isDone(s)) return ["open", "not labeled yet"];
  const what = s.skipped ? "skipped" : s.label;
  return s.pending ? ["pending", `${what} · saving…`] : [cls, `✓ saved as ${what}`];
}

// The annotator name box of the local tool (no accounts): the name is kept in this browser.
function nameBox(v) {
  const who = el("label", "pl-who" + (v.annotator ? "" : " pl-missing"), "Annotator ");
  const input = el("input");
  input.value = v.annotator; input.placeholder = "your name"; input.size = 12;
  input.setAttribute("aria-label", "Annotator name");
  input.addEventListener("change", () => { v.annotator = input.value.trim(); store(NAME_KEY, v.annotator); v.message = ""; render(v); });
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") input.blur(); e.stopPropagation(); });
  v.nameInput = input;
  who.append(input);
  return who;
}

function header(v, state) {
  const bar = el("div", "pl-bar");
  const done = v.data.items.filter((it) => isDone(state.get(it.id))).length;
  bar.append(el("span", "pl-count", v.data.progress ? `${v.data.title}: ${done} of ${v.data.items.length} done`
                                                    : `${v.data.title}: ${v.data.items.length} images`));
  const sync = el("span", v.pending.length ? "pl-sync pl-pending" : "pl-sync pl-saved",
                  v.pending.length ? `${v.pending.length} saving…` : "all saved ✓");
  sync.dataset.pending = String(v.pending.length);
  bar.append(sync);
  if (v.data.signedIn) {
    bar.append(el("span", "pl-who", `Labeling as ${v.data.signedIn}`));
    v.nameInput = null;
  } else bar.append(nameBox(v));
  const modes = el("span", "pl-modes");
  for (const [mode, text] of [["focus", "Focus"], ["grid", "Grid"]]) {
    const b = el("button", "pl-mode" + (v.mode === mode ? " pl-on" : ""), text);
    b.dataset.mode = mode;
    b.addEventListener("click", () => (mode === "focus" && v.mode === "grid" ? toFocus(v) : setMode(v, mode)));
    modes.append(b);
  }
  bar.append(modes);
  return bar;
}

function classButtons(v, onPick, current) {
  const box = el("div", "pl-classes");
  v.data.classes.forEach((name, i) => {
    const key = "1234567890"[i];
    const b = el("button", "pl-class" + (current === name ? " pl-on" : ""));
    b.dataset.cls = String(i);
    b.append(el("span", "pl-name", name));
    if (key) b.append(el("kbd", null, key));
    b.addEventListener("click", () => onPick(name));
    box.append(b);
  });
  return box;
}

function actionButton(text, key, onClick, cls = "") {
  const b = el("button", "pl-action " + cls, text);
  if (key) b.append(el("kbd", null, key));
  b.addEventListener("click", onClick);
  return b;
}

function drawFocus(v, body, state) {
  const item = v.data.items.find((it) => it.id === v.cursor);
  if (!item) { body.append(el("p", "pl-empty", "Nothing to label here.")); return; }
  const s = state.get(item.id);
  const stage = el("div", "pl-stage" + (v.zoom ? " pl-zoomed" : ""));
  const img = el("img", "pl-focus-img");
  img.dataset.itemId = String(item.id);
  img.alt = item.path;
  img.src = url(v.zoom ? v.data.urls.full : v.data.urls.focus, item.id);
  img.addEventListener("click", (e) => toggleZoom(v, v.zoom ? undefined : clickPoint(img, e)));
  if (v.zoom) {
    img.addEventListener("load", () => magnify(img, v.zoomAt));
    stage.addEventListener("scroll", () => { v.zoomAt = viewCentre(stage, img); });
  }
  img.title = v.zoom ? "Click or Z: fit to the window" : "Click or Z: full resolution";
  stage.append(img);
  const side = el("div", "pl-side");
  const at = indexOf(v, item.id);
  side.append(el("div", "pl-path", item.path));
  if (item.validation) side.append(el("div", "pl-valmark", "Validation image: measures the models, never trained on"));
  side.append(el("div", "pl-meta", `image ${at + 1} of ${v.data.items.length}${item.why ? " · " + item.why : ""}`));
  if (heldByOther(v, item) && !isDone(s)) side.append(el("div", "pl-heldmark", `${item.heldBy} is labeling this image`));
  const [cls, text] = statusText(s, "saved");
  const status = el("div", "pl-status pl-" + cls, text);
  status.dataset.itemId = String(item.id);
  side.append(status);
  if (item.guess != null) {
    const g = el("div", "pl-guess");
    g.append(el("span", null, `Proxy guess: `), el("strong", null, item.guess),
             el("span", null, item.conf != null ? ` (${Math.round(item.conf * 100)}%)` : ""));
    g.append(actionButton("Accept", "Enter", () => { if (acceptGuess(v, [item.id], "accepted")) { advance(v); render(v); } }, "pl-accept"));
    side.append(g);
  }
  side.append(classButtons(v, (name) => { v.cursor = item.id; focusLabel(v, name, "typed"); }, s && !s.skipped ? s.label : null));
  const actions = el("div", "pl-actions");
  actions.append(actionButton("Previous", "←", () => { move(v, -1); render(v); }),
                 actionButton("Skip", "S", () => focusLabel(v, null, "typed")),
                 actionButton("Undo", "U", () => undo(v)),
                 actionButton("Next", "→", () => { move(v, 1); render(v); }),
                 actionButton(v.zoom ? "Fit" : "Zoom", "Z", () => toggleZoom(v)));
  side.append(actions);
  side.append(el("div", "pl-help", "Keys: 1–0 label · Enter accept the guess · S skip · U undo · ← → move · Z zoom · G grid. " +
                 "Each label is saved the moment you give it."));
  const wrap = el("div", "pl-focus");
  wrap.append(stage, side);
  body.append(wrap);
  prefetch(v);
}

function drawGrid(v, body, state) {
  if (v.page >= pageCount(v)) v.page = pageCount(v) - 1;
  const tools = el("div", "pl-gridbar");
  tools.append(actionButton("−", null, () => { v.columns = Math.max(3, v.columns - 1); store(COLUMNS_KEY, v.columns); render(v); }, "pl-cols-less"),
               el("span", "pl-cols", `${v.columns} columns`),
               actionButton("+", null, () => { v.columns = Math.min(16, v.columns + 1); store(COLUMNS_KEY, v.columns); render(v); }, "pl-cols-more"),
               actionButton("◀", "PgUp", () => turnPage(v, -1)),
               el("span", "pl-page", `page ${v.page + 1} of ${pageCount(v)}`),
               actionButton("▶", "PgDn", () => turnPage(v, 1)),
               el("span", "pl-selcount", v.selected.size ? `${v.selected.size} selected` : "click, shift-click or drag to select"));
  body.append(tools);
  body.append(classButtons(v, (name) => { const ids = v.selected.size ? [...v.selected] : [v.cursor]; label(v, ids, name, ids.length > 1 ? "bulk" : "typed"); afterBulk(v); }, null));
  const grid = el("div", "pl-grid");
  grid.style.gridTemplateColumns = `repeat(${v.columns}, minmax(0, 1fr))`;
  for (const it of pageItems(v)) {
    const s = state.get(it.id);
    const tile = el("div", "pl-tile");
    tile.dataset.itemId = String(it.id);
    if (isDone(s)) tile.classList.add(s.skipped ? "pl-skipped" : "pl-labeled");
    if (s?.pending) tile.classList.add("pl-pending");
    if (v.selected.has(it.id)) tile.classList.add("pl-selected");
    if (v.cursor === it.id) tile.classList.add("pl-cursor");
    if (it.validation) { tile.classList.add("pl-validation"); tile.append(el("span", "pl-valtag", "val")); }
    if (heldByOther(v, it) && !isDone(s)) { tile.classList.add("pl-held"); tile.append(el("span", "pl-heldtag", it.heldBy)); }
    const img = el("img");
    img.src = url(v.data.urls.grid, it.id); img.alt = it.path; img.draggable = false; img.loading = "lazy";
    tile.append(img);
    if (it.captioned && it.why) tile.append(el("span", "pl-why", it.why));
    const badge = el("span", "pl-badge", isDone(s) ? (s.skipped ? "skip" : s.label) : (it.guess != null ? `${it.guess}?` : ""));
    if (!isDone(s) && it.guess != null) badge.classList.add("pl-guessbadge");
    tile.append(badge);
    tile.title = `${it.path}${it.why ? " · " + it.why : ""}${heldByOther(v, it) && !isDone(s) ? " · " + it.heldBy + " is labeling it" : ""}`;
    tile.addEventListener("mousedown", (e) => tileDown(v, it.id, e));
    tile.addEventListener("mouseenter", () => tileEnter(v, it.id));
    tile.addEventListener("dblclick", () => { v.cursor = it.id; v.pinned = true; setMode(v, "focus"); });
    grid.append(tile);
  }
  body.append(grid);
  body.append(el("div", "pl-help", "Keys: 1–0 label the selection · Enter accept its guesses · S skip · U undo · arrows move " +
                 "(shift extends) · Ctrl+A select the page · Esc clear · PgUp/PgDn pages · double-click or F: focus view."));
}

function render(v) {
  if (!v.root) return;
  const state = effective(v);
  const body = el("div", "pl-body");
  body.append(header(v, state));
  if (!v.data.served) body.append(el("p", "pl-error", v.data.notServed));
  if (v.message) body.append(el("p", "pl-message", v.message));
  if (!v.data.items.length) body.append(el("p", "pl-empty", "Nothing to label here."));
  else if (v.mode === "grid") drawGrid(v, body, state);
  else drawFocus(v, body, state);
  const typing = v.typedName && v.root.getRootNode().activeElement === v.typedName ? v.typedName.value : null;
  v.root.replaceChildren(body);
  fitStage(v);
  v.typedName = v.nameInput;
  if (typing !== null && v.nameInput) { v.nameInput.value = typing; v.nameInput.focus(); }   // an ack arrived mid-typing
}

// Zoom by key or button opens on the image's centre; a click on the image opens on the point clicked.
function toggleZoom(v, at = { x: 0.5, y: 0.5 }) {
  if (!v.zoom) v.zoomAt = at;
  v.zoom = !v.zoom;
  render(v);
}

// Where a click fell on the fitted image, as fractions of the picture (object-fit: contain letterboxes it).
function clickPoint(img, event) {
  const box = img.getBoundingClientRect();
  if (!img.naturalWidth || !box.width || !box.height) return { x: 0.5, y: 0.5 };
  const scale = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight);
  const w = img.naturalWidth * scale, h = img.naturalHeight * scale;
  const clamp = (t) => Math.min(1, Math.max(0, t));
  return { x: clamp((event.clientX - box.left - (box.width - w) / 2) / w),
           y: clamp((event.clientY - box.top - (box.height - h) / 2) / h) };
}

// The point of the zoomed picture at the middle of the stage, as fractions (kept across redraws).
function viewCentre(stage, img) {
  if (!img.offsetWidth || !img.offsetHeight) return { x: 0.5, y: 0.5 };
  return { x: (stage.scrollLeft + stage.clientWidth / 2 - img.offsetLeft) / img.offsetWidth,
           y: (stage.scrollTop + stage.clientHeight / 2 - img.offsetTop) / img.offsetHeight };
}

// Zoomed: the original file at full resolution, and never smaller than twice the fitted size,
// so a tiny image is magnified (by whole pixels) rather than shown as a thumbnail; scrolled so that
// the point `at` (fractions of the picture; the centre by default) is in the middle of the stage.
function magnify(img, at) {
  const stage = img.parentElement;
  if (!stage || !img.naturalWidth) return;
  const fitted = Math.min(stage.clientWidth / img.naturalWidth, stage.clientHeight / img.naturalHeight);
  const scale = Math.max(1, Math.ceil(2 * fitted));
  img.style.width = `${img.naturalWidth * scale}px`;
  img.style.imageRendering = scale > 1 ? "pixelated" : "auto";
  const { x, y } = at ?? { x: 0.5, y: 0.5 };
  stage.scrollLeft = img.offsetLeft + x * img.offsetWidth - stage.clientWidth / 2;
  stage.scrollTop = img.offsetTop + y * img.offsetHeight - stage.clientHeight / 2;
}

// The focus image fills the window below the view's top edge, whatever the page puts above it.
function fitStage(v) {
  const stage = v.root.querySelector(".pl-stage");
  if (!stage) return;
  const top = stage.getBoundingClientRect().top + window.scrollY;
  stage.style.height = `${Math.max(240, window.innerHeight - Math.min(top, window.innerHeight / 2) - 24)}px`;
}

function install() {
  if (installed) return;
  installed = true;
  window.addEventListener("resize", () => { for (const v of views.values()) if (v.root?.isConnected) fitStage(v); });
  document.addEventListener("keydown", onKey, true);
  document.addEventListener("pointerdown", onPointerDown, true);
  document.addEventListener("mouseup", () => { for (const v of views.values()) v.dragging = false; });
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  install();
  const v = viewFor(data.instance, data.mode);
  v.setStateValue = setStateValue;
  let root = parentElement.querySelector(".pl-root");
  if (!root) { root = el("div", "pl-root"); parentElement.append(root); }
  v.root = root;
  receive(v, data);
  render(v);
}
