// People, in a workspace indexed with faces: every face found in the photos, grouped into people.
// PeopleIndex keeps the list (the names that chips and pickers show); PeopleView is the grid of
// people, one face each; PersonPanel heads a person's photos (the library with the person filter)
// with rename, merge and hide; ViewerFaces draws a photo's faces in the viewer with whose they are,
// and lets the user say otherwise ("not this person", who it is) or search by one of them.

import { $, api, el, overPicture, plural, postJson } from "./util.js";

// Face crops come in a few sizes (160 is the server's own cover size), so the server's thumbnail
// cache and the browser's serve every view.
const FACE_SIZES = [160, 320, 512];
const CARD_PX = 180; // about the widest a People card gets
const MIN_TAP_PX = 44; // a face box is at least this large to tap, however small the face

/** A face cut out of its photo, for a square of `cssPx` pixels on this screen. */
export function faceUrl(face, cssPx = 56) {
  const want = cssPx * (window.devicePixelRatio || 1);
  const size = FACE_SIZES.find((s) => s >= want) || FACE_SIZES[FACE_SIZES.length - 1];
  return `/api/faces/${encodeURIComponent(face)}/thumbnail?size=${size}`;
}

/** How a person reads: their name, or "Unnamed". */
export const personLabel = (p) => (p && p.name) || "Unnamed";

/** A person in a picker: their name (or "Unnamed") and how many photos, so two unnamed differ. */
export const pickerLabel = (p) => `${personLabel(p)} · ${plural(p.photos, "photo")}${p.hidden ? " (hidden)" : ""}`;

/** The workspace's people (hidden ones too), fetched once until something changes them. */
export class PeopleIndex {
  constructor() {
    this.list = null;
    this.pending = null;
    this.gen = 0;
  }

  async all() {
    if (this.list) return this.list;
    if (!this.pending) {
      const gen = this.gen;
      this.pending = api("/api/people?hidden=true")
        .then((body) => {
          if (gen === this.gen) this.list = body.people;
          return body.people;
        })
        .finally(() => {
          if (gen === this.gen) this.pending = null;
        });
    }
    return this.pending;
  }

  /** People changed (a name, a merge, a face moved): ask again next time. */
  forget() {
    this.gen++;
    this.list = null;
    this.pending = null;
  }

  /** Keep what the server just said about one person (the list leaves out the ones with few faces). */
  remember(person) {
    if (!this.list) return;
    const at = this.list.findIndex((p) => p.id === person.id);
    const { photo_ids: _, ...entry } = person;
    if (at >= 0) this.list[at] = entry;
    else this.list.push(entry);
  }

  /** A person by id or name (as a filter in the URL names them), if known. */
  find(ref) {
    if (!this.list || ref === null || ref === undefined) return null;
    const s = String(ref);
    return this.list.find((p) => String(p.id) === s) || this.list.find((p) => p.name === s) || null;
  }

  /** A person filter in words: their name, "Unnamed", or the reference as given. */
  label(ref) {
    const p = this.find(ref);
    return p ? personLabel(p) : String(ref);
  }
}

// --- the People view ---------------------------------------------------------------------------------

export class PeopleView {
  /** hooks: {index: PeopleIndex, open(id): show a person's photos, error(message)} */
  constructor({ index, open, error }) {
    this.index = index;
    this.open = open;
    this.error = error;
    this.root = $("people-grid");
    this.summary = $("people-summary");
    this.toggle = $("people-hidden");
    this.showHidden = false;
    this.focusId = null; // the card in the Tab order: the last one the keyboard was on
    this.toggle.addEventListener("click", () => {
      this.showHidden = !this.showHidden;
      this.render();
      this.toggle.focus();
    });
    this.root.addEventListener("click", (e) => {
      const card = e.target.closest(".person-card");
      if (!card || e.ctrlKey || e.metaKey || e.shiftKey) return; // a new tab: the link as it is
      e.preventDefault();
      this.focusId = card.dataset.person;
      this.open(card.dataset.person);
    });
    this.root.addEventListener("keydown", (e) => this.onKey(e));
    this.root.addEventListener("focusin", (e) => {
      const card = e.target.closest(".person-card");
      if (card) this.rove(card);
    });
  }

  async load() {
    this.summary.textContent = "Finding people…";
    this.root.setAttribute("aria-busy", "true");
    try {
      this.index.forget(); // names and counts change from other tabs and index runs
      await this.index.all();
      this.render();
      return true;
    } catch (e) {
      this.summary.textContent = "";
      this.error(e.message);
      return false;
    } finally {
      this.root.setAttribute("aria-busy", "false");
    }
  }

  render() {
    const all = this.index.list || [];
    const hidden = all.filter((p) => p.hidden).length;
    const shown = this.showHidden ? all : all.filter((p) => !p.hidden);
    this.toggle.hidden = !hidden;
    this.toggle.setAttribute("aria-pressed", String(this.showHidden));
    this.toggle.textContent = `Show hidden people (${hidden})`;
    const visible = all.length - hidden;
    this.summary.textContent = all.length
      ? `${plural(visible, "person", "people")}, the most photographed first. Someone shows here once their face is in ` +
        "three photos, or once they have a name."
      : "No people yet. Someone shows here once their face is in three photos.";
    this.root.replaceChildren(...shown.map((p) => this.card(p)));
    const cards = [...this.root.querySelectorAll(".person-card")];
    this.rove(cards.find((c) => c.dataset.person === this.focusId) || cards[0]);
  }

  card(p) {
    const cover = p.cover && p.cover.face != null ? faceUrl(p.cover.face, CARD_PX) : null;
    return el(
      "li",
      {},
      el(
        "a",
        { className: "person-card", href: `#person=${encodeURIComponent(p.id)}`, dataset: { person: String(p.id) } },
        cover
          ? el("img", { src: cover, alt: "", loading: "lazy", decoding: "async", width: String(CARD_PX), height: String(CARD_PX) })
          : el("span", { className: "person-cover-none", "aria-hidden": "true" }, "?"),
        el("span", { className: "person-name" }, personLabel(p)),
        el("span", { className: "person-count" }, plural(p.photos, "photo") + (p.hidden ? " · hidden" : "")),
      ),
    );
  }

  /** One card is in the Tab order; the arrow keys move among them. */
  rove(card) {
    if (!card) return;
    this.focusId = card.dataset.person;
    for (const c of this.root.querySelectorAll(".person-card")) c.tabIndex = c === card ? 0 : -1;
  }

  focusFirst() {
    const card = this.root.querySelector('.person-card[tabindex="0"]') || this.root.querySelector(".person-card");
    if (card) card.focus();
    return Boolean(card);
  }

  onKey(e) {
    const card = e.target.closest(".person-card");
    if (!card || e.altKey || e.ctrlKey || e.metaKey) return;
    const cards = [...this.root.querySelectorAll(".person-card")];
    const i = cards.indexOf(card);
    const top = cards[0].offsetTop;
    const cols = Math.max(1, cards.filter((c) => c.offsetTop === top).length);
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, ArrowDown: i + cols, ArrowUp: i - cols, Home: 0, End: cards.length - 1 }[e.key];
    if (to === undefined) return;
    e.preventDefault();
    if (cards[to]) cards[to].focus();
  }
}

// --- a person's page: the head of the library filtered on them ---------------------------------------

export class PersonPanel {
  /** hooks: {index, notify(message, undo, isError), changed(person): a name or hiding changed,
   *  merged(person): this person is now that one} */
  constructor(hooks) {
    this.hooks = hooks;
    this.index = hooks.index;
    this.root = $("person-panel");
    this.input = $("person-rename-input");
    this.person = null;
    this.seq = 0;
    this.focusName = false;
    $("person-rename").addEventListener("submit", (e) => {
      e.preventDefault();
      this.rename();
    });
    this.input.addEventListener("input", () => this.showError(""));
    $("person-merge").addEventListener("submit", (e) => {
      e.preventDefault();
      this.merge();
    });
    $("person-merge-into").addEventListener("change", () => this.resetMerge());
    $("person-hide").addEventListener("click", () => this.hide());
  }

  /** Head the library with the person it is filtered on, if one (none, or several: no head). */
  async show(refs) {
    const seq = ++this.seq;
    if (refs.length !== 1) {
      this.root.hidden = true;
      this.person = null;
      return;
    }
    try {
      const person = await api(`/api/people/${encodeURIComponent(refs[0])}`);
      if (seq !== this.seq) return;
      await this.index.all().catch(() => null); // the other people, to merge into
      if (seq !== this.seq) return;
      this.index.remember(person);
      this.render(person);
    } catch {
      if (seq === this.seq) this.root.hidden = true; // the grid's own request says what is wrong
    }
  }

  render(p) {
    const same = this.person && this.person.id === p.id;
    this.person = p;
    this.root.hidden = false;
    const cover = $("person-cover");
    const face = p.cover && p.cover.face;
    cover.hidden = face == null;
    if (face != null) cover.src = faceUrl(face, 72);
    $("person-name").textContent = p.name || "Unnamed person";
    $("person-counts").textContent =
      `${plural(p.photos, "photo")}, ${plural(p.faces, "face")}` + (p.hidden ? " · hidden from People" : "");
    if (!same || document.activeElement !== this.input) this.input.value = p.name || "";
    if (!same) this.showError("");
    const others = (this.index.list || []).filter((o) => o.id !== p.id);
    const select = $("person-merge-into");
    select.replaceChildren(
      el("option", { value: "" }, "Choose a person"),
      ...others.map((o) => el("option", { value: String(o.id) }, pickerLabel(o))),
    );
    $("person-merge").hidden = !others.length;
    this.resetMerge();
    $("person-hide").textContent = p.hidden ? "Show in People again" : "Hide from People";
    if (this.focusName) {
      this.focusName = false;
      $("person-name").focus();
    }
  }

  showError(message) {
    const error = $("person-rename-error");
    error.textContent = message;
    error.hidden = !message;
    if (message) this.input.setAttribute("aria-invalid", "true");
    else this.input.removeAttribute("aria-invalid");
  }

  async rename() {
    const p = this.person;
    if (!p) return;
    const name = this.input.value.trim() || null; // an empty field takes the name away
    if (name === p.name) return;
    try {
      const done = await postJson(`/api/people/${p.id}/name`, { name });
      this.index.remember(done);
      this.render(done);
      this.hooks.notify(name ? `Named them ${name}.` : "Took their name away.");
      this.hooks.changed(done);
    } catch (e) {
      this.showError(e.message); // a name someone else has: the server says so, and how to merge
      this.input.focus();
    }
  }

  resetMerge() {
    const button = $("person-merge-go");
    button.dataset.confirm = "";
    button.textContent = "Merge";
  }

  async merge() {
    const p = this.person;
    const into = $("person-merge-into").value;
    const button = $("person-merge-go");
    if (!p || !into) {
      $("person-merge-into").focus();
      return;
    }
    if (!button.dataset.confirm) {
      // Merging cannot be undone from here: a second press says so.
      button.dataset.confirm = "1";
      button.textContent = `Merge into ${this.index.label(into)}? Press again`;
      return;
    }
    try {
      const merged = await postJson(`/api/people/${p.id}/merge`, { into });
      this.index.forget();
      this.hooks.notify(`Merged ${personLabel(p)} into ${personLabel(merged)}: ${plural(merged.photos, "photo")}.`);
      this.focusName = true; // the merged person's page: the keyboard starts at their name
      this.hooks.merged(merged);
    } catch (e) {
      this.resetMerge();
      this.hooks.notify(e.message, null, true);
    }
  }

  async hide() {
    const p = this.person;
    if (!p) return;
    const hidden = !p.hidden;
    try {
      const done = await postJson(`/api/people/${p.id}/hide`, { hidden });
      this.index.remember(done);
      this.render(done);
      const undo = async () => {
        try {
          const back = await postJson(`/api/people/${p.id}/hide`, { hidden: !hidden });
          this.index.remember(back);
          if (this.person && this.person.id === back.id) this.render(back);
          this.hooks.notify(`${personLabel(back)} shows in People again.`);
        } catch (e) {
          this.hooks.notify(e.message, null, true);
        }
      };
      this.hooks.notify(
        hidden ? `${personLabel(done)} is hidden from People; their photos stay in the library.` : `${personLabel(done)} shows in People again.`,
        hidden ? undo : null,
      );
      this.hooks.changed(done);
    } catch (e) {
      this.hooks.notify(e.message, null, true);
    }
  }
}

// --- the viewer's faces -----------------------------------------------------------------------------

export class ViewerFaces {
  /** hooks: {index, enabled(): the workspace holds faces, person(id): show their photos,
   *  search(item, n): search by the photo's n-th face, changed(): a face changed hands} */
  constructor(hooks) {
    this.hooks = hooks;
    this.index = hooks.index;
    this.stage = $("viewer-stage");
    this.img = $("viewer-img");
    this.layer = $("viewer-boxes");
    this.section = $("viewer-people");
    this.list = $("viewer-face-list");
    this.toggle = $("viewer-faces");
    this.note = $("viewer-note");
    this.item = null;
    this.faces = [];
    this.seq = 0;
    const observer = new ResizeObserver(() => this.place());
    observer.observe(this.stage);
    observer.observe(this.img);
    this.img.addEventListener("load", () => this.place());
    this.toggle.addEventListener("click", () => {
      const on = this.toggle.getAttribute("aria-pressed") !== "true";
      this.toggle.setAttribute("aria-pressed", String(on));
      this.layer.hidden = !on;
    });
    this.layer.addEventListener("click", (e) => {
      const box = e.target.closest(".face-box");
      if (box) this.select(Number(box.dataset.index), true);
    });
    // Swiping starts on the stage: a press on a box is a press on the box.
    this.layer.addEventListener("pointerdown", (e) => e.target.closest(".face-box") && e.stopPropagation());
    this.list.addEventListener("click", (e) => {
      const button = e.target.closest("button[data-action]");
      if (button) this.act(button.dataset.action, Number(button.closest("[data-index]").dataset.index));
    });
    this.list.addEventListener("focusin", (e) => {
      const entry = e.target.closest("[data-index]");
      if (entry) this.select(Number(entry.dataset.index), false);
    });
  }

  /** The faces of this photo (nothing when the workspace has none, or no photo). */
  async show(item) {
    const seq = ++this.seq;
    this.item = item;
    this.faces = [];
    this.say("");
    this.render();
    if (!item || !this.hooks.enabled()) return;
    try {
      const [body] = await Promise.all([
        api(`/api/docs/${encodeURIComponent(item.doc_id)}/faces`),
        this.index.all().catch(() => null), // the people to say a face is
      ]);
      if (seq !== this.seq) return;
      this.faces = body.faces;
    } catch {
      return; // the faces are an extra: the photo shows without them
    }
    this.render();
  }

  /** Whose face n is: a person from the index, as the face names them, or null. */
  whose(f) {
    if (f.person === null) return null;
    return this.index.find(f.person) || { id: f.person, name: f.name, photos: 0 };
  }

  render(focus = null) {
    const faces = this.faces.filter((f) => f.bbox);
    this.section.hidden = !faces.length;
    this.toggle.hidden = !faces.length;
    const boxes = [];
    this.faces.forEach((f, i) => {
      if (!f.bbox) return;
      const who = this.whose(f);
      const name = who ? personLabel(who) : "not known";
      boxes.push(
        el(
          "button",
          { type: "button", className: "face-box", dataset: { index: String(i) }, "aria-label": `Face ${i + 1}: ${name}` },
          // Named faces carry their name on the photo; the others a question mark.
          el("span", { className: "face-frame" }, el("span", { className: "face-tag" }, who && who.name ? who.name : "?")),
        ),
      );
    });
    this.layer.replaceChildren(...boxes);
    this.list.replaceChildren(...this.faces.map((f, i) => this.entry(f, i)));
    this.place();
    if (focus) {
      const [i, what] = focus;
      const entry = this.list.querySelector(`[data-index="${i}"]`);
      const target = entry && (entry.querySelector(what) || entry.querySelector("button, select"));
      if (target) target.focus();
    }
  }

  entry(f, i) {
    const who = this.whose(f);
    const id = `viewer-face-${i}`;
    const actions = [];
    if (who) {
      actions.push(
        el("button", { type: "button", dataset: { action: "person" } }, who.name ? `${who.name}’s photos` : "Their photos"),
        el("button", { type: "button", dataset: { action: "not" }, "aria-describedby": id }, "Not this person"),
      );
    } else {
      const pick = `viewer-face-pick-${i}`;
      const people = (this.index.list || []).filter((p) => !p.hidden || p.id === f.person);
      actions.push(
        el("label", { for: pick, className: "visually-hidden" }, `Who is face ${i + 1}?`),
        el(
          "select",
          { id: pick, className: "face-pick" },
          el("option", { value: "" }, "Who is it?"),
          ...people.map((p) => el("option", { value: String(p.id) }, pickerLabel(p))),
          el("option", { value: "new" }, "Someone new"),
        ),
        el("button", { type: "button", dataset: { action: "assign" } }, "Save"),
      );
    }
    actions.push(el("button", { type: "button", dataset: { action: "search" } }, "Search by this face"));
    return el(
      "li",
      { className: "viewer-face", dataset: { index: String(i) } },
      el("img", { className: "face-crop", src: faceUrl(f.face), alt: "", width: "56", height: "56", decoding: "async" }),
      el(
        "div",
        { className: "face-body" },
        el(
          "p",
          { className: "face-who", id },
          el("span", { className: "face-n" }, `Face ${i + 1}: `),
          who ? personLabel(who) : "Not known",
        ),
        el("div", { className: "face-actions" }, ...actions),
      ),
    );
  }

  /** A line about what a change did, with Undo when it can be undone, in the viewer (the page's own
   *  line is behind the modal viewer, out of reach). */
  say(message, undo = null, isError = false) {
    this.note.hidden = !message;
    this.note.classList.toggle("error", isError);
    $("viewer-note-text").textContent = message;
    const button = $("viewer-note-undo");
    button.hidden = !undo;
    button.onclick = undo
      ? () => {
          button.hidden = true;
          undo();
        }
      : null;
  }

  /** Lay the boxes over the photo as it is shown (fit in the stage, or zoomed). */
  place() {
    if (!this.faces.length || !this.item) return;
    const rect = overPicture(this.layer, this.img);
    if (!rect) return;
    const cw = rect.width, ch = rect.height;
    // Boxes are in the photo's pixels as indexed (turned upright), which the image shown has too.
    const rw = this.item.width || this.img.naturalWidth, rh = this.item.height || this.img.naturalHeight;
    for (const box of this.layer.children) {
      const f = this.faces[Number(box.dataset.index)];
      const [x, y, w, h] = f.bbox.map(Number);
      const fx = (x / rw) * cw, fy = (y / rh) * ch, fw = (w / rw) * cw, fh = (h / rh) * ch;
      const tw = Math.max(MIN_TAP_PX, fw), th = Math.max(MIN_TAP_PX, fh);
      Object.assign(box.style, { left: `${fx - (tw - fw) / 2}px`, top: `${fy - (th - fh) / 2}px`, width: `${tw}px`, height: `${th}px` });
      Object.assign(box.firstChild.style, { left: `${(tw - fw) / 2}px`, top: `${(th - fh) / 2}px`, width: `${fw}px`, height: `${fh}px` });
    }
  }

  /** Face i is the one in hand: its box and its entry are marked; `focus`: the keyboard goes to its actions. */
  select(i, focus) {
    for (const node of [...this.layer.children, ...this.list.children]) {
      node.classList.toggle("current", Number(node.dataset.index) === i);
    }
    if (!focus) return;
    const entry = this.list.querySelector(`[data-index="${i}"]`);
    const first = entry && entry.querySelector("button, select");
    if (first) {
      first.focus({ preventScroll: true });
      entry.scrollIntoView({ block: "nearest" });
    }
  }

  async act(action, i) {
    const f = this.faces[i];
    const item = this.item;
    if (!f || !item) return;
    const who = this.whose(f);
    if (action === "person" && who) return this.hooks.person(who.id);
    if (action === "search") return this.hooks.search(item, i);
    if (action === "not" && who) {
      const undo = () => this.move(i, String(who.id), `Face ${i + 1} is ${personLabel(who)}’s again.`, [i, "button"]);
      // Then the keyboard is at the picker of who it is instead.
      return this.move(i, null, `Face ${i + 1} is no longer ${personLabel(who)}’s.`, [i, "select"], undo);
    }
    if (action === "assign") {
      const pick = this.list.querySelector(`[data-index="${i}"] select`);
      if (!pick || !pick.value) return pick && pick.focus();
      const to = pick.value;
      const words = to === "new" ? `Face ${i + 1} is someone new: name them on their page.` : `Face ${i + 1} is ${this.index.label(to)}’s now.`;
      return this.move(i, to, words, [i, "button"]);
    }
  }

  /** Say face i is `person`'s (an id, "new", or null for nobody's); `focus`: where the keyboard goes then. */
  async move(i, person, message, focus, undo = null) {
    const f = this.faces[i];
    const seq = this.seq;
    try {
      const done = await postJson(`/api/faces/${encodeURIComponent(f.face)}/person`, { person });
      this.index.forget();
      await this.index.all().catch(() => null);
      if (seq !== this.seq) return;
      this.faces[i] = done.faces[0];
      this.render(focus);
      this.say(message, undo);
      this.hooks.changed();
    } catch (e) {
      this.say(e.message, null, true);
    }
  }
}
