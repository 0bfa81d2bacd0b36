// The lookalike page: a photo library around the search. It opens on the collection (a timeline
// of every photo, newest first); a photo opens in the viewer; a search (by a photo, "more like
// this" or a tag) lists results; Duplicates lists groups to review; People (a workspace indexed
// with faces) lists the people found, and a person's photos are the library filtered on them.
// Filters apply to all of them. Plain ES modules, one per view, no framework and no network
// beyond this server.
//
// Where the page is lives in the URL's hash, so any state can be bookmarked and Back undoes a step:
//   #                     the library          #view=dupes        duplicates to review
//   #more=ID / #dupes=ID  more like a photo / its duplicates      #tag=bird   a tag search
//   #more=ID&face=N       like the photo's N-th face (0: the largest)
//   #view=people          the people found     #person=ID         a person's photos (a filter)
//   #photo=ID             the viewer, over whichever view is below it
//   and the filters' own fields (taken_after=2024-01-01&camera=iphone&person=3...) beside any of them.

import { BrowseGrid } from "./grid.js";
import { DupesView } from "./dupes.js";
import { FILTER_KEYS, FilterPanel } from "./filters.js";
import { PeopleIndex, PeopleView, PersonPanel, pickerLabel, ViewerFaces } from "./people.js";
import { ViewerRegions } from "./regions.js";
import { queryKey, SearchView } from "./search.js";
import { $, api, el, monthName, plural, sleep } from "./util.js";
import { Viewer } from "./viewer.js";

const TOPK_KEY = "lookalike.top_k";
const READY_POLL_MS = 1000;

const state = {
  stats: null,
  view: null, // "browse" | "search" | "dupes" | "people"
  key: null, // what the shown view was loaded for
  uploads: new Map(), // history entry -> File, so Back can re-run an upload
  uploadSeq: 0,
  viewerPushed: false, // the viewer's entry is ours: closing it goes Back
  list: null, // what the viewer walks
  routeSeq: 0, // the current route(); an older one that finishes late changes nothing
  refocus: null, // {view, index}: where the keyboard goes once a view reloads after a removal
  focusView: false, // focus the first item of the next view shown
  leaving: false, // the viewer closes because one of its actions led to another view
};

// --- the server ----------------------------------------------------------------------------------

/** Resolve once /readyz answers 200. A server that failed to load says why; show it and keep asking. */
async function waitReady() {
  for (let delay = READY_POLL_MS; ; delay = Math.min(delay * 1.5, 10 * READY_POLL_MS)) {
    try {
      const r = await fetch("/readyz", { cache: "no-store" });
      if (r.ok) {
        $("error").hidden = true;
        return;
      }
      const err = ((await r.json().catch(() => null)) || {}).error;
      if (err && err.type !== "NotReady") {
        busy(false, "");
        showError(`The server could not load: ${err.message}`);
        $("stats").textContent = "Not ready";
      }
    } catch {
      // the server may be restarting: keep asking
    }
    await sleep(delay);
  }
}

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
    $("stats").textContent = "Server unreachable";
    $("workspace").textContent = e.message;
  }
}

function renderStats() {
  const s = state.stats;
  if (!s) return;
  const known = typeof s.docs === "number"; // a server still loading knows only its workspace
  $("stats").textContent = s.ready ? (known ? plural(s.docs, "photo") : "") : "Loading the model…";
  const shards = Object.keys(s.shards || {}).length;
  const parts = [
    s.workspace,
    s.encoder,
    known ? `${plural(shards, "shard")}, ${plural(s.chunks || 0, "vector")}` : null,
    s.preset && s.preset !== "default" ? `${s.preset} preset` : null,
    s.writable === false ? "read-only" : null,
  ].filter(Boolean);
  $("workspace").textContent = parts.join(" · ");
  $("workspace").title = s.workspace || "";
  document.body.classList.toggle("face-workspace", Boolean(s.faces));
  document.body.classList.toggle("region-workspace", Boolean(s.regions));
  $("nav-people").hidden = !s.faces;
  $("f-person-field").hidden = !s.faces;
  if (s.faces) peopleChoices();
  document.body.classList.toggle("read-only", s.writable === false);
}

// --- status, errors and the undo toast ----------------------------------------------------------

function busy(on, message) {
  $("status").textContent = message;
  $("status").classList.toggle("busy", on);
  if (on) $("error").hidden = true;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

/** A line about what an action did, with Undo when it can be undone. */
function notify(message, undo = null, isError = false) {
  if (isError) return showError(message);
  $("error").hidden = true;
  $("toast-text").textContent = message;
  const button = $("toast-undo");
  button.hidden = !undo;
  button.onclick = undo
    ? async () => {
        button.hidden = true;
        await undo();
      }
    : null;
  $("toast").hidden = false;
}

function countLine(kept) {
  const all = state.stats && typeof state.stats.docs === "number" ? state.stats.docs : kept;
  $("count").textContent = typeof kept === "number" ? FilterPanel.countText(kept, all) : "";
}

// --- where the page is: the URL's hash ------------------------------------------------------------

const hashParams = () => new URLSearchParams(location.hash.slice(1));

/** Go to a state: `changes` set (a list: each of its values; null: delete) hash keys; filters are
 *  kept unless changed. */
function go(changes, { replace = false, entry = history.state || {} } = {}) {
  const params = hashParams();
  for (const [key, value] of Object.entries(changes)) {
    params.delete(key);
    for (const v of [].concat(value ?? [])) if (v !== "") params.append(key, v);
  }
  const hash = params.toString();
  const url = location.pathname + location.search + (hash ? `#${hash}` : "");
  if (replace) history.replaceState(entry, "", url || "/");
  else history.pushState(entry, "", url || "/");
  route(history.state);
}

const VIEW_KEYS = { more: null, dupes: null, tag: null, view: null, upload: null, photo: null, face: null };

function viewOf(params, entry) {
  if (params.get("view") === "dupes") return "dupes";
  if (params.get("view") === "people") return "people";
  if (params.has("more") || params.has("dupes") || params.has("tag")) return "search";
  if (params.has("upload") && entry && state.uploads.has(entry.upload)) return "search";
  return "browse";
}

function queryOf(params, entry) {
  if (params.has("more")) {
    const face = /^\d+$/.test(params.get("face") || "") ? Number(params.get("face")) : null;
    return { kind: "doc", docId: params.get("more"), face };
  }
  if (params.has("dupes")) return { kind: "doc", docId: params.get("dupes"), minMatch: "near_duplicate" };
  if (params.has("tag")) return { kind: "tag", q: params.get("tag") };
  const file = entry && state.uploads.get(entry.upload);
  return file ? { kind: "file", file, upload: entry.upload } : null;
}

/** Bring the page in line with the URL: the view, its query and filters, and the viewer. */
async function route(entry) {
  // A newer route (the user moved on while this one waited for the server) wins: each step
  // after a wait checks that it is still the current one.
  const seq = ++state.routeSeq;
  const params = hashParams();
  filters.set(params);
  const view = viewOf(params, entry);
  const filterKey = filters.params.toString();
  const query = view === "search" ? queryOf(params, entry) : null;
  const key = `${view}|${filterKey}|${query ? queryKeyOf(query) : ""}`;
  const photo = params.get("photo");
  if (!photo && viewer.open) {
    state.viewerPushed = false;
    viewer.close();
  }
  showView(view);
  if (state.refocus && state.refocus.view !== view) state.refocus = null;
  if (key !== state.key) {
    state.key = key;
    const shown = await loadView(view, query, seq);
    if (seq !== state.routeSeq) return;
    if (!shown) state.key = null; // it failed: the same request may be made again
    else if (state.focusView) focusView(view);
  }
  if (photo) await openViewer(photo, seq);
}

/** After an action in the viewer led elsewhere (more like this, duplicates, a place), the keyboard
 *  goes on from the first thing of the new view rather than from the page's top. */
function focusView(view) {
  state.focusView = false;
  // Unless the user has already moved on (to a control still shown) while the view loaded.
  const at = document.activeElement;
  if (at && at !== document.body && at !== $("main") && at.offsetParent !== null) return;
  if (view === "browse" && grid.total) return grid.focus(0); // once its photo is fetched
  if (view === "people" && peopleView.focusFirst()) return;
  const first =
    view === "search"
      ? document.querySelector("#results li:not(.weak) .thumb, #results .thumb")
      : document.querySelector("#dupes-list button");
  (first || $("main")).focus();
}

const queryKeyOf = (q) =>
  q.kind === "file" ? `file:${q.upload}` : q.kind === "tag" ? `tag:${q.q}` : `${q.minMatch || "doc"}:${q.docId}:${q.face ?? ""}`;

function showView(view) {
  state.view = view;
  document.body.dataset.view = view;
  $("browse").hidden = view !== "browse";
  $("search-view").hidden = view !== "search";
  $("dupes-view").hidden = view !== "dupes";
  $("people-view").hidden = view !== "people";
  $("select-toggle").hidden = view !== "browse";
  const current = view === "dupes" ? "nav-dupes" : view === "people" ? "nav-people" : "nav-library";
  for (const id of ["nav-library", "nav-people", "nav-dupes"]) {
    if (id === current) $(id).setAttribute("aria-current", "page");
    else $(id).removeAttribute("aria-current");
  }
  grid.active = view === "browse";
  if (view !== "browse") setSelecting(false);
  if (view !== "search") search.clear();
  if (view === "browse") document.title = "lookalike";
}

/** Show a view for its query; true once it is shown, false if it failed (or was overtaken). */
async function loadView(view, query, seq) {
  $("error").hidden = true;
  if (view === "browse") return loadBrowse(seq);
  if (view === "dupes") {
    document.title = "lookalike · duplicates";
    busy(false, "");
    countLine(null);
    return dupes.load();
  }
  if (view === "people") {
    document.title = "lookalike · people";
    busy(false, "");
    countLine(null);
    const shown = await peopleView.load();
    if (shown) peopleChoices(); // the list was asked for afresh
    return shown;
  }
  if (!query) return true;
  if (query.kind === "tag") $("tag").value = query.q;
  else $("tag").value = "";
  state.list = search;
  keptCount().then(
    (n) => seq === state.routeSeq && countLine(n),
    () => seq === state.routeSeq && countLine(null),
  );
  const shown = await search.run(query, filters.params, topK());
  if (shown && state.refocus && seq === state.routeSeq) {
    const at = Math.min(state.refocus.index, search.total - 1);
    state.refocus = null;
    if (at >= 0) search.focus(at);
    else $("main").focus();
  }
  return shown;
}

async function loadBrowse(seq) {
  busy(true, "Loading the library…");
  try {
    const timeline = await grid.load(filters.params);
    if (!timeline || seq !== state.routeSeq) return false;
    state.list = grid;
    if (state.stats && state.stats.faces) personPanel.show(filters.persons);
    renderTimeline(timeline.months);
    countLine(timeline.total);
    if (state.refocus) {
      const at = Math.min(state.refocus.index, timeline.total - 1);
      state.refocus = null;
      if (at >= 0) grid.focus(at);
      else $("main").focus();
    }
    const empty = timeline.total === 0;
    $("library-empty").hidden = !empty || filters.active;
    busy(false, empty && filters.active ? "No photo meets these filters." : "");
    return true;
  } catch (e) {
    if (seq !== state.routeSeq) return false;
    if (e.type === "NotReady") {
      busy(true, "The model is loading…");
      await waitReady();
      return loadBrowse(seq);
    }
    busy(false, "");
    showError(e.message);
    return false;
  }
}

async function keptCount() {
  if (!filters.active) return state.stats ? state.stats.docs : null;
  return (await api(`/api/timeline?${filters.params}`)).total;
}

function renderTimeline(months) {
  const bar = $("timeline");
  const buttons = [];
  let year = null;
  for (const m of months) {
    const y = m.month.slice(0, 4);
    const label = y !== year ? monthName(m.month, true) : monthName(m.month, true).slice(0, 3);
    year = y;
    buttons.push(
      el(
        "button",
        { type: "button", tabindex: "-1", dataset: { month: m.month }, "aria-label": `${monthName(m.month)}, ${plural(m.photos, "photo")}` },
        label,
      ),
    );
  }
  bar.replaceChildren(...buttons);
  bar.hidden = months.length < 2;
  if (buttons.length) buttons[0].tabIndex = 0;
}

// The jump list is one stop for Tab (the current month); the arrow keys move along it.
$("timeline").addEventListener("keydown", (e) => {
  const buttons = [...$("timeline").querySelectorAll("button")];
  const at = buttons.indexOf(document.activeElement);
  const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: buttons.length - 1 }[e.key];
  if (at < 0 || to === undefined || !buttons[to]) return;
  e.preventDefault();
  buttons[to].focus();
});

$("timeline").addEventListener("click", (e) => {
  const button = e.target.closest("[data-month]");
  if (!button) return;
  grid.scrollToMonth(button.dataset.month);
  grid.focusIndex = grid.starts[grid.sections.findIndex((s) => s.month === button.dataset.month)];
});

function onMonth(month) {
  const bar = $("timeline");
  for (const b of bar.querySelectorAll("[aria-current]")) b.removeAttribute("aria-current");
  const button = bar.querySelector(`[data-month="${month}"]`);
  if (!button) return;
  button.setAttribute("aria-current", "true");
  if (!bar.contains(document.activeElement)) for (const b of bar.children) b.tabIndex = b === button ? 0 : -1;
  // Keep the current month in the strip's view, without scrolling the page.
  const left = button.offsetLeft - bar.clientWidth / 2 + button.offsetWidth / 2;
  bar.scrollLeft = Math.max(0, left);
}

// --- the viewer -----------------------------------------------------------------------------------

async function openViewer(docId, seq) {
  const list = state.list;
  const index = list ? (list === grid ? grid.indexOf(docId) : search.matches.findIndex((m) => m.doc_id === docId)) : -1;
  if (index >= 0) return viewer.show(list, index);
  // Bookmarked, or no longer in the list: the photo alone.
  try {
    const doc = await api(`/api/docs/${encodeURIComponent(docId)}`);
    if (seq !== state.routeSeq) return;
    const single = { total: 1, item: async () => doc };
    state.list = single;
    await viewer.show(single, 0, doc);
  } catch (e) {
    showError(e.message);
    go({ photo: null }, { replace: true });
  }
}

function openFromList(list, index) {
  state.list = list;
  list.item(index).then((item) => {
    if (!item) return;
    state.viewerPushed = true;
    go({ photo: item.doc_id });
  });
}

/** Leave the viewer for another view (more like this, duplicates, a place). */
function leave(changes) {
  state.leaving = true;
  state.focusView = true; // the new view's first item, once it is shown
  state.viewerPushed = false; // the new view replaces the viewer's entry: Back returns to the photo
  go({ ...VIEW_KEYS, ...changes }, { replace: false });
}

// --- people ---------------------------------------------------------------------------------------

const people = new PeopleIndex();

/** The people to filter on, and the names on the chips, once known (again, after a change). */
function peopleChoices() {
  people.all().then(
    (list) => filters.setPeople(list.filter((p) => !p.hidden).map((p) => ({ id: p.id, label: pickerLabel(p) }))),
    () => {}, // a convenience: chips then show the person's id
  );
}

const peopleView = new PeopleView({
  index: people,
  open: (id) => {
    state.focusView = true; // their first photo, once shown
    go({ ...VIEW_KEYS, person: String(id) });
  },
  error: showError,
});

const personPanel = new PersonPanel({
  index: people,
  notify,
  changed: (person) => {
    peopleChoices();
    // A name in the URL that is no longer theirs would find nobody: name them by id.
    const refs = filters.persons;
    if (refs.length === 1 && refs[0] !== String(person.id)) go({ person: String(person.id) }, { replace: true });
  },
  // This person is that one now: their page (Back would find nobody at the old one).
  merged: (person) => {
    peopleChoices();
    go({ person: String(person.id) }, { replace: true });
  },
});

const faces = new ViewerFaces({
  index: people,
  enabled: () => Boolean(state.stats && state.stats.faces),
  person: (id) => leave({ person: String(id) }),
  search: (item, n) => leave({ more: item.doc_id, face: String(n) }),
  changed: () => {
    peopleChoices();
    if (filters.persons.length) state.key = null; // the photos of the person below may have changed
  },
});

// A result of an image search (not a tag search, not the library) can say why it matched.
const regions = new ViewerRegions({
  context: (item) => {
    const query = search.query;
    if (state.list !== search || !query || query.kind === "tag") return null;
    if (!search.matches.some((m) => m.doc_id === item.doc_id)) return null;
    return { query, key: queryKey(query), box: search.boxable() ? search.box : null };
  },
  queryImage: () => $("query-img").currentSrc || $("query-img").src,
});

const viewer = new Viewer({
  more: (item) => leave({ more: item.doc_id }),
  dupes: (item) => leave({ dupes: item.doc_id }),
  near: (item) => {
    state.leaving = true;
    state.focusView = true;
    // The library, with the place filter (routed by the filters' change; the same place again
    // changes no filter, so go there directly).
    if (!filters.near(item.gps)) go({ ...VIEW_KEYS });
  },
  remove: async (item) => {
    try {
      await api(`/api/docs/${encodeURIComponent(item.doc_id)}`, { method: "DELETE" });
      notify(`Took ${item.name || "the photo"} out of the index; the file is where it was.`);
      state.key = null; // reload the view below
      // Then the keyboard goes on from the photo that took its place, in the list it was in.
      state.refocus = { view: state.view, index: viewer.index };
      await loadStats();
      viewer.close();
    } catch (e) {
      showError(e.message);
    }
  },
  moved: (index, item) => {
    history.replaceState(history.state, "", `#${withParam("photo", item.doc_id)}`);
  },
  closed: (index) => {
    // The view below changed (a face left the person it shows): it reloads, and the keyboard goes
    // on from the photo that took this one's place.
    if (state.key === null && !state.leaving && !state.refocus) state.refocus = { view: state.view, index };
    const params = hashParams();
    if (params.has("photo")) {
      // Closed by Esc or the close button: the URL follows (Back, when the viewer's entry is ours).
      if (state.viewerPushed) {
        state.viewerPushed = false;
        history.back();
      } else go({ photo: null }, { replace: true });
    }
    if (state.leaving) {
      // An action led to another view: its first item gets the focus once it is shown (focusView).
      state.leaving = false;
      return;
    }
    // Focus goes back to the photo the viewer ended on, in the list below.
    const list = state.list;
    if (state.key === null) return; // the view reloads, and focuses state.refocus
    if (list === grid) grid.focus(index);
    else if (list === search) search.focus(index);
  },
}, faces, regions);

function withParam(key, value) {
  const params = hashParams();
  params.set(key, value);
  return params.toString();
}

// --- views ------------------------------------------------------------------------------------------

const grid = new BrowseGrid($("grid"), {
  onOpen: (index) => openFromList(grid, index),
  onMonth,
  onSelect: (selected) => {
    $("selection-count").textContent = selected.size ? `${plural(selected.size, "photo")} selected` : "Nothing selected";
    $("remove-selected").disabled = !selected.size;
  },
});

const search = new SearchView({
  open: (index) => openFromList(search, index),
  busy,
  error: showError,
  ready: waitReady,
  stats: () => state.stats,
  face: (n) => {
    const query = search.query;
    if (!query) return;
    // An indexed photo's face goes into the URL (Back returns to the whole photo); an upload's
    // search runs again with it. Either takes the place of a box drawn on the photo (the URL's
    // own face, with a box to take away, is the same query run again).
    const boxed = search.box !== null;
    search.box = null;
    search.region.set(null);
    if (query.kind === "doc" && !(boxed && n === (query.face ?? null))) go({ face: n === null ? null : String(n) });
    else {
      search.face = n;
      search.run(query, filters.params, topK(), { keepFace: true });
    }
  },
  box: () => {
    // The box drawn (or taken away) on the query photo: the same query, searched by that part.
    const query = search.query;
    if (query) search.run(query, filters.params, topK(), { keepFace: true });
  },
});

const dupes = new DupesView({
  notify,
  // Files left the index or came back: the counts and the filters' choices follow.
  changed: () => {
    loadStats();
    filters.loadFacets();
  },
  failed: () => (state.key = null),
});

const filters = new FilterPanel(
  (params) => {
    const changes = {};
    for (const key of FILTER_KEYS) changes[key] = params.getAll(key);
    // A place chosen from the viewer browses the photos there; any other filter keeps the view.
    if (params.get("near") && viewer.open) Object.assign(changes, VIEW_KEYS);
    go(changes);
  },
  (ref) => people.label(ref),
);

function topK() {
  return Number($("topk").value) || 32;
}

// --- queries ----------------------------------------------------------------------------------------

function searchFile(file) {
  if (!file) return;
  const upload = ++state.uploadSeq;
  state.uploads.set(upload, file);
  // Keep only the last few uploads for Back; photos can be large.
  for (const key of state.uploads.keys()) if (state.uploads.size > 5) state.uploads.delete(key);
  go({ ...VIEW_KEYS, upload: String(upload) }, { entry: { upload } });
}

function searchTag(q) {
  q = q.trim();
  if (q) go({ ...VIEW_KEYS, tag: q });
}

// --- adding and removing photos ----------------------------------------------------------------------

async function addFiles(files) {
  const images = Array.from(files);
  if (!images.length) return;
  const form = new FormData();
  for (const f of images) form.append("files", f, f.name || "pasted-image");
  busy(true, `Adding ${plural(images.length, "photo")} to the library…`);
  try {
    const report = await api("/api/index", { method: "POST", body: form });
    const failed = (report.files || []).filter((f) => f.error);
    const added = images.length - failed.length;
    busy(false, "");
    const why = failed.length ? ` ${plural(failed.length, "file")} could not be added: ${failed.map((f) => `${f.name}: ${f.error}`).join("; ")}` : "";
    notify(`Added ${plural(added, "photo")} to the library.${why}`);
    await loadStats();
    state.key = null;
    await route(history.state);
  } catch (e) {
    busy(false, "");
    showError(e.message);
  }
}

function setSelecting(on) {
  if (grid.selecting === on) return;
  grid.setSelecting(on);
  $("select-toggle").setAttribute("aria-pressed", String(on));
  $("selection").hidden = !on;
  $("selection-count").textContent = "Nothing selected";
  $("remove-selected").disabled = true;
}

$("select-toggle").addEventListener("click", () => {
  setSelecting(!grid.selecting);
  if (grid.selecting) grid.focus(grid.focusIndex);
});
$("select-done").addEventListener("click", () => {
  setSelecting(false);
  $("select-toggle").focus();
});
$("remove-selected").addEventListener("click", async () => {
  const ids = [...grid.selected];
  if (!ids.length) return;
  try {
    const done = await api("/api/remove", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ doc_ids: ids }),
    });
    notify(`Took ${plural(done.removed, "photo")} out of the index; the files are where they were.`);
    setSelecting(false);
    await loadStats();
    state.key = null;
    await route(history.state);
    $("select-toggle").focus();
  } catch (e) {
    showError(e.message);
  }
});

// --- input: chooser, drop, paste, tag, top_k, history ------------------------------------------

$("pick").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", () => {
  const file = $("file").files && $("file").files[0];
  if (file) searchFile(file);
  $("file").value = ""; // choosing the same file again still searches
});
$("add").addEventListener("click", () => $("add-file").click());
$("add-file").addEventListener("change", () => {
  addFiles($("add-file").files);
  $("add-file").value = "";
});

$("nav-people").addEventListener("click", (e) => {
  e.preventDefault();
  state.focusView = true; // the first person, once shown
  go({ ...VIEW_KEYS, person: null, view: "people" });
});

// "Library" and "Back to the library" keep the filters; the name at the top starts afresh.
for (const id of ["nav-library", "back-to-library"]) {
  $(id).addEventListener("click", (e) => {
    e.preventDefault();
    state.focusView = true; // the first photo, once the library is shown
    go({ ...VIEW_KEYS });
  });
}

$("tag-form").addEventListener("submit", (e) => {
  e.preventDefault();
  searchTag($("tag").value);
});

$("filters-toggle").addEventListener("click", () => {
  const open = $("filters").hidden;
  $("filters").hidden = !open;
  $("filters-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("f-after").focus();
});

$("topk").addEventListener("change", () => {
  try {
    localStorage.setItem(TOPK_KEY, $("topk").value);
  } catch {
    // storage may be disabled; the choice then lasts for this page only
  }
  if (search.query) search.run(search.query, filters.params, topK(), { keepFace: true });
});

// Tag suggestions: the words this collection holds (dog, bird, fruit...), with their photo counts.
let suggestTimer = 0;
let suggestSeq = 0;
$("tag").addEventListener("input", () => {
  clearTimeout(suggestTimer);
  const prefix = $("tag").value.trim();
  const seq = ++suggestSeq; // a slow answer for an older prefix is dropped
  if (!prefix) return $("tag-suggestions").replaceChildren();
  suggestTimer = setTimeout(async () => {
    try {
      const body = await api(`/api/tags?${new URLSearchParams({ prefix, limit: "8" })}`);
      if (seq !== suggestSeq) return;
      $("tag-suggestions").replaceChildren(
        ...body.suggestions.map((t) => el("option", { value: t.word, label: `${t.word} (${plural(t.photos, "photo")})` })),
      );
    } catch {
      // suggestions are a convenience: a failed one leaves the box as it was
    }
  }, 120);
});

// Dropping files: two targets, so that "search by this photo" and "add to the library" never mix.
let dragDepth = 0;
const carriesFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types).some((t) => t === "Files");
const overlay = $("drop-overlay");
window.addEventListener("dragenter", (e) => {
  if (!carriesFiles(e)) return;
  dragDepth++;
  overlay.hidden = false;
});
window.addEventListener("dragleave", (e) => {
  if (!carriesFiles(e)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) overlay.hidden = true;
});
window.addEventListener("dragover", (e) => {
  e.preventDefault();
  for (const t of overlay.querySelectorAll(".drop-target")) t.classList.toggle("over", t.contains(e.target));
});
window.addEventListener("drop", (e) => {
  e.preventDefault();
  dragDepth = 0;
  overlay.hidden = true;
  const dt = e.dataTransfer;
  if (!dt) return;
  const target = e.target instanceof Element ? e.target.closest("[data-drop]") : null;
  if (target && target.dataset.drop === "add" && dt.files.length) return addFiles(dt.files);
  const file = Array.from(dt.files).find((f) => f.type.startsWith("image/")) || dt.files[0];
  if (file) return searchFile(file);
  // A thumbnail dragged from this page (or another lookalike tab): more like that document.
  const docId = dt.getData("application/x-lookalike-doc");
  if (docId) return go({ ...VIEW_KEYS, more: docId });
  const url = dt.getData("text/uri-list") || dt.getData("text/plain");
  const m = /\/api\/docs\/([^/?#]+)\//.exec(url || "");
  if (m) go({ ...VIEW_KEYS, more: decodeURIComponent(m[1]) });
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
  if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey || viewer.open) return;
  const t = e.target;
  if (t instanceof HTMLInputElement || t instanceof HTMLSelectElement || t instanceof HTMLTextAreaElement) return;
  e.preventDefault();
  $("tag").focus();
  $("tag").select();
});

window.addEventListener("popstate", (e) => {
  state.viewerPushed = false;
  route(e.state);
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") loadStats();
});

try {
  const saved = localStorage.getItem(TOPK_KEY);
  if (saved && Array.from($("topk").options).some((o) => o.value === saved)) $("topk").value = saved;
} catch {
  // no storage: keep the default
}

await loadStats();
filters.loadFacets();
route(history.state);
