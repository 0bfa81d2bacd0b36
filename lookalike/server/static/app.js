// The lookalike web page: query by a dropped, pasted or chosen photo, by a tag, or by a result
// ("more like this"). Plain DOM, no framework, no network beyond this server. Every string from
// the server goes into the page as text (textContent, attributes), never as HTML.

const $ = (id) => document.getElementById(id);

const ui = {
  stats: $("stats"),
  workspace: $("workspace"),
  pick: $("pick"),
  file: $("file"),
  tagForm: $("tag-form"),
  tag: $("tag"),
  tagList: $("tag-suggestions"),
  more: $("more"),
  topk: $("topk"),
  query: $("query"),
  queryImg: $("query-img"),
  queryBoxes: $("query-boxes"),
  queryLabel: $("query-label"),
  faces: $("faces"),
  status: $("status"),
  error: $("error"),
  empty: $("empty"),
  results: $("results"),
  overlay: $("drop-overlay"),
};

const TOPK_KEY = "lookalike.top_k";
// How often to ask /readyz while the model loads: often enough to feel live, rare enough to be free.
const READY_POLL_MS = 1000;

const state = {
  stats: null,
  query: null, // {kind: "file", file, upload} | {kind: "doc", docId, meta} | {kind: "tag", q}
  face: null, // index into the query's faces, for face workspaces
  controller: null, // aborts the search in flight when a new one starts
  seq: 0,
  previewUrl: null,
  uploads: new Map(), // history entry -> File, so Back can re-run an upload
  uploadSeq: 0,
};

// --- helpers ---------------------------------------------------------------------------------

/** Build an element: el("a", {href: u, className: "x"}, "text", child). Strings become text nodes. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className" || key === "textContent" || key === "title") node[key] = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

class ApiError extends Error {
  constructor(type, message, status) {
    super(message);
    this.type = type;
    this.status = status;
  }
}

/** fetch + JSON; a non-2xx answer throws ApiError with the server's {"error": {type, message}}. */
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError("NetworkError", "Cannot reach the lookalike server.", 0);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const err = body && body.error;
    throw new ApiError(
      (err && err.type) || "HTTPError",
      (err && err.message) || `The server answered ${response.status} ${response.statusText}.`,
      response.status,
    );
  }
  if (body === null) throw new ApiError("HTTPError", "The server's answer was not JSON.", response.status);
  return body;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolve once /readyz answers 200. A server that failed to load says why; show it and keep asking. */
async function waitReady() {
  for (let delay = READY_POLL_MS; ; delay = Math.min(delay * 1.5, 10 * READY_POLL_MS)) {
    try {
      const r = await fetch("/readyz", { cache: "no-store" });
      if (r.ok) {
        ui.error.hidden = true;
        return;
      }
      const err = ((await r.json().catch(() => null)) || {}).error;
      if (err && err.type !== "NotReady") {
        setBusy(false, "");
        showError(`The server could not load: ${err.message}`);
        ui.stats.textContent = "Not ready";
      }
    } catch {
      // the server may be restarting: keep asking
    }
    await sleep(delay);
  }
}

const plural = (n, one, many = one + "s") => `${n.toLocaleString()} ${n === 1 ? one : many}`;
const pct = (p) => (p >= 0.995 ? "100%" : p < 0.01 ? "<1%" : `${Math.round(p * 100)}%`);
const fileName = (m) => m.name || (m.uri || m.doc_id).split(/[\\/]/).pop();

/** The same thumbnail at twice the size, for high-density screens ("" when the URL has no size). */
function hiDpi(url) {
  const u = new URL(url, location.href);
  const size = Number(u.searchParams.get("size"));
  if (!size) return "";
  u.searchParams.set("size", String(size * 2));
  return `${url} 1x, ${u.pathname}${u.search} 2x`;
}

function topK() {
  return Number(ui.topk.value) || 16;
}

// --- stats -----------------------------------------------------------------------------------

async function loadStats() {
  try {
    const s = await api("/api/stats");
    state.stats = s;
    renderStats();
    if (!s.ready) {
      await waitReady();
      return loadStats();
    }
  } catch (e) {
    ui.stats.textContent = "Server unreachable";
    ui.workspace.textContent = e.message;
  }
}

function renderStats() {
  const s = state.stats;
  if (!s) return;
  const known = typeof s.docs === "number"; // a server still loading knows only its workspace
  ui.stats.textContent = s.ready ? (known ? plural(s.docs, "photo") : "") : "Loading the model…";
  const shards = Object.keys(s.shards || {}).length;
  const parts = [
    s.workspace,
    s.encoder,
    known ? `${plural(shards, "shard")}, ${plural(s.chunks || 0, "vector")}` : null,
    s.preset && s.preset !== "default" ? `${s.preset} preset` : null,
    s.writable === false ? "read-only" : null,
  ].filter(Boolean);
  ui.workspace.textContent = parts.join(" · ");
  ui.workspace.title = s.workspace || "";
  document.body.classList.toggle("face-workspace", Boolean(s.faces));
}

// --- queries ---------------------------------------------------------------------------------

function searchFile(file, { push = true } = {}) {
  if (!file) return;
  const upload = ++state.uploadSeq;
  state.uploads.set(upload, file);
  // Keep only the last few uploads for Back; photos can be large.
  for (const key of state.uploads.keys()) if (state.uploads.size > 5) state.uploads.delete(key);
  run({ kind: "file", file, upload }, { push });
}

function searchDoc(docId, meta = null, { push = true } = {}) {
  run({ kind: "doc", docId, meta }, { push });
}

function searchTag(q, { push = true } = {}) {
  q = q.trim();
  if (!q) return;
  run({ kind: "tag", q }, { push });
}

function hashFor(query) {
  if (query.kind === "doc") return `#more=${encodeURIComponent(query.docId)}`;
  if (query.kind === "tag") return `#tag=${encodeURIComponent(query.q)}`;
  return "";
}

function requestFor(query, signal) {
  const k = topK();
  const face = state.face;
  if (query.kind === "tag") {
    const params = new URLSearchParams({ q: query.q, top_k: String(k) });
    return api(`/api/search/tags?${params}`, { signal });
  }
  if (query.kind === "doc") {
    const body = { doc_id: query.docId, top_k: k };
    if (face !== null) body.face = face;
    return api("/api/search", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      signal,
    });
  }
  const form = new FormData();
  form.append("file", query.file, query.file.name || "pasted-image");
  form.append("top_k", String(k));
  if (face !== null) form.append("face", String(face));
  return api("/api/search", { method: "POST", body: form, signal });
}

async function run(query, { push = false, keepFace = false } = {}) {
  if (!keepFace) state.face = null;
  const isNew = state.query !== query;
  state.query = query;
  if (push) {
    const url = location.pathname + location.search + hashFor(query);
    const entry = query.kind === "file" ? { upload: query.upload } : {};
    history.pushState(entry, "", url || "/");
  }
  if (isNew) renderQuery(query);
  if (query.kind === "tag") {
    if (ui.tag.value.trim() !== query.q) ui.tag.value = query.q;
  } else ui.tag.value = "";

  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  const seq = ++state.seq;

  setBusy(true, "Searching…");
  ui.results.dataset.query = queryKey(query);
  try {
    const answer = await requestFor(query, controller.signal);
    if (seq !== state.seq) return;
    const first = (answer.results && answer.results[0]) || { matches: [] };
    renderFaces(first.faces || []);
    renderResults(first.matches || [], query);
    const n = (first.matches || []).length;
    const weak = (first.matches || []).filter((m) => m.match === "weak").length;
    const took = typeof answer.took_ms === "number" ? ` in ${Math.round(answer.took_ms)} ms` : "";
    const weakNote = weak && weak < n ? `, ${weak} of them weak` : "";
    // How many there are in all: the photos with the tag, or those that passed a min_match cut.
    const count = typeof first.total === "number" && first.total > n ? ` of ${first.total}${first.total_exact ? "" : "+"}` : "";
    const tagged = query.kind === "tag" && typeof first.total === "number" ? ` tagged “${query.q}”` : "";
    const summary = `${plural(n, "result")}${count}${tagged}${took}${weakNote}`;
    // Nothing in the collection is really like the query: say so rather than let weak results pass as answers.
    const weakAll = first.weak && n ? "Nothing here is really like it: even the best match is weak. " : "";
    setBusy(false, n ? weakAll + summary : emptyMessage(query));
    ui.results.dataset.state = "done";
  } catch (e) {
    if (e.name === "AbortError" || seq !== state.seq) return;
    if (e.type === "NotReady") {
      setBusy(true, "The model is loading; the search will run when it is ready…");
      await waitReady();
      if (seq !== state.seq) return;
      state.query = null; // draw the query again: its preview may have failed while loading
      run(query, { keepFace: true });
      return;
    }
    setBusy(false, "");
    showError(e.message);
    ui.results.replaceChildren(); // results of an earlier query would read as this one's
    ui.more.hidden = true;
    ui.results.dataset.state = "error";
  }
}

function queryKey(query) {
  if (query.kind === "doc") return `doc:${query.docId}`;
  if (query.kind === "tag") return `tag:${query.q}`;
  return `file:${query.upload}`;
}

function emptyMessage(query) {
  if (state.stats && state.stats.docs === 0) {
    return "No matches: the workspace is empty. Index a folder with “lookalike index FOLDER”.";
  }
  if (query.kind === "tag") {
    return `No photos tagged “${query.q}”. Tags are ImageNet labels and the WordNet words above them, such as daisy, dog, bird or vehicle.`;
  }
  return "No matches.";
}

function setBusy(busy, message) {
  ui.status.textContent = message;
  ui.status.classList.toggle("busy", busy);
  ui.results.setAttribute("aria-busy", String(busy));
  if (busy) {
    ui.results.dataset.state = "loading";
    ui.error.hidden = true;
    ui.more.hidden = true; // the last search's "show more" is not this one's
  }
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = false;
}

// --- rendering -------------------------------------------------------------------------------

function renderQuery(query) {
  ui.empty.hidden = true;
  ui.query.hidden = false;
  ui.queryBoxes.replaceChildren();
  ui.faces.hidden = true;
  ui.faces.replaceChildren();
  if (state.previewUrl) {
    URL.revokeObjectURL(state.previewUrl);
    state.previewUrl = null;
  }
  const img = ui.queryImg;
  img.hidden = query.kind === "tag";
  img.onerror = () => (img.hidden = true); // e.g. a file the browser cannot show (the server says why)
  img.removeAttribute("src");
  ui.query.classList.toggle("no-preview", query.kind === "tag");
  if (query.kind === "file") {
    state.previewUrl = URL.createObjectURL(query.file);
    img.src = state.previewUrl;
    img.alt = "Your photo";
    const name = query.file.name || "pasted image";
    ui.queryLabel.replaceChildren("Photos like ", el("strong", {}, name));
    document.title = `lookalike · like ${name}`;
  } else if (query.kind === "doc") {
    const showMeta = (meta) => {
      if (state.query !== query) return;
      const name = fileName(meta);
      img.src = meta.thumbnail_url;
      img.alt = name;
      ui.queryLabel.replaceChildren("More like ", el("strong", { title: meta.uri || "" }, name));
      document.title = `lookalike · like ${name}`;
    };
    ui.queryLabel.replaceChildren("More like this photo");
    if (query.meta) showMeta(query.meta);
    else {
      const id = encodeURIComponent(query.docId);
      img.src = `/api/docs/${id}/thumbnail?size=256`;
      img.alt = "The query photo";
      api(`/api/docs/${id}`).then((meta) => {
        query.meta = meta;
        showMeta(meta);
      }, () => {});
    }
  } else {
    ui.queryLabel.replaceChildren("Photos tagged ", el("strong", {}, query.q));
    document.title = `lookalike · ${query.q}`;
  }
}

/** The object-position (0..1 on each axis) that keeps bbox's centre in view in a square cover crop. */
function focusOn(bbox, width, height) {
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return [clamp((bbox[0] + bbox[2] / 2) / width), clamp((bbox[1] + bbox[3] / 2) / height)];
}

/** Where bbox (x, y, w, h in original pixels) lies in a box showing the image with `fit`, in %.
 *  For "cover", `focus` is the crop's object-position (default: centred). */
function boxStyle(bbox, width, height, fit, focus = [0.5, 0.5]) {
  let scale = 1, ox = 0, oy = 0;
  if (fit === "cover") {
    // a square box showing the image with object-fit: cover, aligned at `focus`
    scale = 1 / Math.min(width, height);
    ox = (1 - width * scale) * focus[0];
    oy = (1 - height * scale) * focus[1];
    return {
      left: `${(bbox[0] * scale + ox) * 100}%`,
      top: `${(bbox[1] * scale + oy) * 100}%`,
      width: `${bbox[2] * scale * 100}%`,
      height: `${bbox[3] * scale * 100}%`,
    };
  }
  // a box the image's own shape
  return {
    left: `${(bbox[0] / width) * 100}%`,
    top: `${(bbox[1] / height) * 100}%`,
    width: `${(bbox[2] / width) * 100}%`,
    height: `${(bbox[3] / height) * 100}%`,
  };
}

function renderFaces(faces) {
  ui.queryBoxes.replaceChildren();
  ui.faces.replaceChildren();
  ui.faces.hidden = true;
  if (!faces.length) return;
  const query = state.query;
  const draw = () => {
    const meta = query.kind === "doc" ? query.meta : null;
    const w = (meta && meta.width) || ui.queryImg.naturalWidth;
    const h = (meta && meta.height) || ui.queryImg.naturalHeight;
    if (!w || !h || state.query !== query) return;
    ui.queryBoxes.replaceChildren(
      ...faces.map((f, i) =>
        el("span", {
          className: "box" + (i === state.face ? " chosen" : ""),
          style: boxStyle(f.bbox, w, h, "contain"),
          dataset: { n: String(i + 1) },
        }),
      ),
    );
  };
  if (ui.queryImg.complete && ui.queryImg.naturalWidth) draw();
  else ui.queryImg.addEventListener("load", draw, { once: true });
  if (faces.length < 2) return;
  ui.faces.append(el("span", { className: "hint" }, "Search by one face:"));
  faces.forEach((_, i) => {
    const chosen = i === state.face;
    const button = el(
      "button",
      { type: "button", "aria-pressed": String(chosen), title: chosen ? "Search by every face" : "" },
      el("span", { className: "visually-hidden" }, "Face "),
      String(i + 1),
    );
    button.addEventListener("click", () => {
      state.face = chosen ? null : i; // pressing the chosen face again goes back to every face
      run(state.query, { keepFace: true });
    });
    ui.faces.append(button);
  });
  ui.faces.hidden = false;
}

function renderResults(matches, query) {
  const byTag = query.kind === "tag";
  const showBoxes = Boolean(state.stats && state.stats.faces);
  const items = matches.map((m, i) => {
    const name = fileName(m);
    const tags = (m.tags || []).slice(0, 3);
    const tagText = tags.map((t) => `${t.label} ${pct(t.probability)}`).join(", ");
    const img = el("img", {
      src: m.thumbnail_url,
      srcset: hiDpi(m.thumbnail_url),
      alt: name,
      loading: i < 16 ? "eager" : "lazy",
      decoding: "async",
      draggable: "true",
    });
    img.addEventListener("error", () => img.classList.add("broken"), { once: true });
    img.addEventListener("dragstart", (e) => e.dataTransfer.setData("application/x-lookalike-doc", m.doc_id));
    const thumb = el(
      "button",
      { type: "button", className: "thumb", "aria-describedby": `meta-${i}` },
      el("span", { className: "visually-hidden" }, "More like "),
      img,
    );
    if (showBoxes && Array.isArray(m.bbox) && m.width && m.height) {
      // Crop the square thumbnail around the matched face, not the photo's centre.
      const focus = focusOn(m.bbox, m.width, m.height);
      img.style.objectPosition = `${focus[0] * 100}% ${focus[1] * 100}%`;
      thumb.append(el("span", { className: "box", style: boxStyle(m.bbox, m.width, m.height, "cover", focus) }));
    }
    thumb.addEventListener("click", () => searchDoc(m.doc_id, m));
    // Face workspaces rank by Euclidean distance (lower is closer; under 0.6: the same person).
    const isDistance = typeof m.distance === "number";
    const score = isDistance
      ? `d ${m.distance.toFixed(3)}`
      : typeof m.score !== "number" ? "" : byTag ? pct(m.score) : m.score.toFixed(3);
    const level = m.match ? el("span", { className: `match match-${m.match}`, title: MATCH_HELP[m.match] }, MATCH_NAME[m.match]) : null;
    return el(
      "li",
      { className: m.match === "weak" ? "card weak" : "card", dataset: { docId: m.doc_id, match: m.match || "" } },
      thumb,
      el(
        "div",
        { className: "meta", id: `meta-${i}` },
        el(
          "div",
          { className: "line" },
          el("span", { className: "name", title: [m.uri || name, photoLine(m)].filter(Boolean).join("\n") }, name),
          el(
            "a",
            { className: "open", href: m.image_url, target: "_blank", rel: "noopener", title: "Open the full image" },
            el("span", { className: "visually-hidden" }, `Open ${name}`),
            el("span", { "aria-hidden": "true" }, "↗"),
          ),
        ),
        el(
          "div",
          { className: "line small" },
          el(
            "span",
            { className: "score", title: isDistance ? "face distance" : byTag ? "tag probability" : "similarity" },
            score,
          ),
          ...(level ? [level] : []),
          el("span", { className: "tags", title: tagText }, tagText),
        ),
      ),
    );
  });
  // Weak matches wait behind "show more": below the collection's own bar for "similar".
  const weak = matches.filter((m) => m.match === "weak").length;
  const strong = matches.length - weak;
  ui.results.classList.toggle("show-weak", strong === 0);
  ui.results.replaceChildren(...items);
  ui.more.hidden = weak === 0 || strong === 0;
  ui.more.textContent = `Show ${weak} weaker match${weak === 1 ? "" : "es"}`;
}

// When and with what a photo was taken, as its header says (a file date is no "taken" date).
function photoLine(m) {
  const day = m.taken_from === "exif" && m.taken_at ? `taken ${m.taken_at.slice(0, 10)}` : "";
  return [day, m.camera || ""].filter(Boolean).join(" · ");
}

const MATCH_NAME = { same: "same", near_duplicate: "near-duplicate", similar: "similar", weak: "weak" };
const MATCH_HELP = {
  same: "the same picture (re-encoded or resized)",
  near_duplicate: "the same picture, edited (cropped, rotated, recoloured)",
  similar: "alike, by this collection's standards",
  weak: "only weakly alike: below this collection's bar for similar",
};

ui.more.addEventListener("click", () => {
  ui.results.classList.add("show-weak");
  ui.more.hidden = true;
});

// Tag suggestions: the words this collection holds (dog, bird, fruit...), with their photo counts, as the box is typed in.
let suggestTimer = 0;
let suggestSeq = 0;
ui.tag.addEventListener("input", () => {
  clearTimeout(suggestTimer);
  const prefix = ui.tag.value.trim();
  const seq = ++suggestSeq; // a slow answer for an older prefix is dropped
  if (!prefix) return ui.tagList.replaceChildren();
  suggestTimer = setTimeout(async () => {
    try {
      const body = await api(`/api/tags?${new URLSearchParams({ prefix, limit: "8" })}`);
      if (seq !== suggestSeq) return;
      ui.tagList.replaceChildren(
        ...body.suggestions.map((t) => el("option", { value: t.word, label: `${t.word} (${plural(t.photos, "photo")})` })),
      );
    } catch {
      // suggestions are a convenience: a failed one leaves the box as it was
    }
  }, 120);
});

// --- input: chooser, drop, paste, tag, top_k, history ------------------------------------------

ui.pick.addEventListener("click", () => ui.file.click());
ui.file.addEventListener("change", () => {
  const file = ui.file.files && ui.file.files[0];
  if (file) searchFile(file);
  ui.file.value = ""; // choosing the same file again still searches
});

ui.tagForm.addEventListener("submit", (e) => {
  e.preventDefault();
  searchTag(ui.tag.value);
});

ui.topk.addEventListener("change", () => {
  try {
    localStorage.setItem(TOPK_KEY, ui.topk.value);
  } catch {
    // storage may be disabled; the choice then lasts for this page only
  }
  if (state.query) run(state.query, { keepFace: true });
});

let dragDepth = 0;
const carriesFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types).some((t) => t === "Files");
window.addEventListener("dragenter", (e) => {
  if (!carriesFiles(e)) return;
  dragDepth++;
  ui.overlay.hidden = false;
});
window.addEventListener("dragleave", (e) => {
  if (!carriesFiles(e)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) ui.overlay.hidden = true;
});
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  ui.overlay.hidden = true;
  const dt = e.dataTransfer;
  if (!dt) return;
  const file = Array.from(dt.files).find((f) => f.type.startsWith("image/")) || dt.files[0];
  if (file) return searchFile(file);
  // A thumbnail dragged from this page (or another lookalike tab): more like that document.
  const docId = dt.getData("application/x-lookalike-doc");
  if (docId) return searchDoc(docId);
  const url = dt.getData("text/uri-list") || dt.getData("text/plain");
  const m = /\/api\/docs\/([^/?#]+)\//.exec(url || "");
  if (m) searchDoc(decodeURIComponent(m[1]));
});

document.addEventListener("paste", (e) => {
  const files = e.clipboardData ? Array.from(e.clipboardData.files) : [];
  const file = files.find((f) => f.type.startsWith("image/"));
  if (!file) return; // pasting text into the tag box stays ordinary paste
  e.preventDefault();
  searchFile(file);
});

// "/" jumps to the tag box, as on many search pages.
document.addEventListener("keydown", (e) => {
  if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
  e.preventDefault();
  ui.tag.focus();
  ui.tag.select();
});

function fromLocation(entry) {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.has("more")) return searchDoc(hash.get("more"), null, { push: false });
  if (hash.has("tag")) return searchTag(hash.get("tag"), { push: false });
  const file = entry && entry.upload && state.uploads.get(entry.upload);
  if (file) return run({ kind: "file", file, upload: entry.upload }, { push: false });
  // back to the start
  if (state.controller) state.controller.abort();
  state.seq++;
  state.query = null;
  ui.query.hidden = true;
  ui.results.replaceChildren();
  ui.more.hidden = true;
  ui.results.dataset.state = "idle";
  delete ui.results.dataset.query;
  ui.empty.hidden = false;
  ui.error.hidden = true;
  setBusy(false, "");
  document.title = "lookalike";
}

window.addEventListener("popstate", (e) => fromLocation(e.state));
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") loadStats();
});

try {
  const saved = localStorage.getItem(TOPK_KEY);
  if (saved && Array.from(ui.topk.options).some((o) => o.value === saved)) ui.topk.value = saved;
} catch {
  // no storage: keep the default
}
loadStats();
if (location.hash) fromLocation(history.state);
