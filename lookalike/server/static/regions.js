// Parts of photos, in a workspace indexed with regions. QueryBox lets the user draw a box on the
// query's preview (mouse, finger or keyboard) to search by that part; ViewerRegions shows, in the
// viewer, which part of a result matched (a frame) and, on "Why?", where the result looks like the
// query (a heat map from POST /api/explain over the part of the photo the model saw).

import { $, api, el, overPicture, postJson } from "./util.js";

const MIN_SIDE = 0.03; // a box smaller than this (a fraction of a side) is a slip of the hand, not a part
const KEY_STEP = 0.05; // how far an arrow key moves or grows the box, as a fraction of the photo
const KEY_MIN = 0.1; // the smallest side Shift+arrows shrink a box to
const KEY_DEBOUNCE_MS = 350; // a run of key presses searches once, after the last
const START_BOX = [0.25, 0.25, 0.75, 0.75]; // the middle half, where the keyboard starts
const HEAT_ALPHA = 0.75; // the hottest cell still lets the photo show through

const clamp = (v, lo = 0, hi = 1) => Math.min(hi, Math.max(lo, v));
const round = (v) => Math.round(v * 10000) / 10000;

/** A box as the server takes it in a form field: "x0,y0,x1,y1". */
export const boxField = (box) => box.map(round).join(",");

/** A box in words, for the ear: "the middle half", or where it is and how large. */
export function boxText(box) {
  const [x0, y0, x1, y1] = box;
  const pc = (v) => `${Math.round(v * 100)}%`;
  return `${pc(x1 - x0)} wide and ${pc(y1 - y0)} tall, ${pc(x0)} from the left and ${pc(y0)} from the top`;
}

/** Where a point (fractions of a photo) is, in words: "the top left", "the middle". */
function placeText(x, y) {
  const row = ["top", "middle", "bottom"][Math.min(2, Math.floor(y * 3))];
  const col = ["left", "", "right"][Math.min(2, Math.floor(x * 3))];
  if (!col) return row === "middle" ? "the middle" : `the ${row}`;
  return row === "middle" ? `the ${col}` : `the ${row} ${col}`;
}

/** Position `node` over the part `box` (fractions) of its container. */
function placeOver(node, box) {
  const [x0, y0, x1, y1] = box;
  Object.assign(node.style, {
    left: `${x0 * 100}%`,
    top: `${y0 * 100}%`,
    width: `${(x1 - x0) * 100}%`,
    height: `${(y1 - y0) * 100}%`,
  });
}

/** A heat map's cells (rows of 0..1, row 0 at the top) into `layer`, a CSS grid over the part it
 *  covers: yellow and faint where lukewarm, red and strong where hot; the hottest cell ringed. */
function fillHeat(layer, heat) {
  const rows = heat.length, cols = rows ? heat[0].length : 0;
  layer.style.gridTemplateColumns = `repeat(${cols}, 1fr)`;
  layer.style.gridTemplateRows = `repeat(${rows}, 1fr)`;
  const top = hottestCell(heat);
  const cells = [];
  heat.forEach((row, r) =>
    row.forEach((v, c) => {
      const h = clamp(Number(v) || 0);
      const style = { backgroundColor: `hsl(${Math.round(55 * (1 - h))} 100% 50% / ${round(h * HEAT_ALPHA)})` };
      const hot = top && top.r === r && top.c === c;
      cells.push(el("span", { className: hot ? "heat-cell hottest" : "heat-cell", style, dataset: { row: String(r), col: String(c), heat: String(round(h)) } }));
    }),
  );
  layer.replaceChildren(...cells);
}

/** The hottest cell of a heat map: {r, c, v}, or null when it has none. */
function hottestCell(heat) {
  let best = null;
  heat.forEach((row, r) => row.forEach((v, c) => {
    if (!best || Number(v) > best.v) best = { r, c, v: Number(v) };
  }));
  return best;
}

/** The hottest cell's centre, in fractions of the whole photo (the heat covers `box` of it). */
function hottest(heat, box) {
  const best = hottestCell(heat);
  if (!best) return null;
  const [x0, y0, x1, y1] = box;
  return [x0 + ((best.c + 0.5) / heat[0].length) * (x1 - x0), y0 + ((best.r + 0.5) / heat.length) * (y1 - y0)];
}

// --- drawing a box on the query --------------------------------------------------------------------

export class QueryBox {
  /** changed(box): the box (fractions x0, y0, x1, y1 of the query photo; null: the whole photo) the
   *  user settled on; the search runs again with it. */
  constructor({ changed }) {
    this.changed = changed;
    this.preview = $("query-preview");
    this.img = $("query-img");
    this.frame = $("query-region-box");
    this.tools = $("region-tools");
    this.clearButton = $("region-clear");
    this.say = $("region-say");
    this.box = null;
    this.enabled = false;
    this.drag = null;
    this.timer = 0;
    this.preview.addEventListener("pointerdown", (e) => this.down(e));
    this.preview.addEventListener("pointermove", (e) => this.move(e));
    this.preview.addEventListener("pointerup", (e) => this.up(e));
    this.preview.addEventListener("pointercancel", () => this.cancel());
    this.preview.addEventListener("lostpointercapture", () => this.cancel());
    this.preview.addEventListener("dragstart", (e) => this.enabled && e.preventDefault());
    this.preview.addEventListener("keydown", (e) => this.onKey(e));
    this.clearButton.addEventListener("click", () => this.box && this.commit(null, true));
  }

  /** Drawing is on for image searches in a workspace with regions; off (and no box) otherwise. */
  enable(on) {
    this.enabled = on;
    this.preview.classList.toggle("drawable", on);
    this.tools.hidden = !on;
    if (on) {
      this.preview.tabIndex = 0;
      this.preview.setAttribute("role", "application");
      this.preview.setAttribute("aria-roledescription", "photo to box");
      this.preview.setAttribute("aria-label", "The query photo: draw a box on it to search by that part");
      this.preview.setAttribute("aria-describedby", "region-hint");
    } else {
      this.preview.removeAttribute("tabindex");
      for (const a of ["role", "aria-roledescription", "aria-label", "aria-describedby"]) this.preview.removeAttribute(a);
      this.set(null);
    }
  }

  /** Show `box` (no search: the caller runs one, or the box came with it). */
  set(box) {
    clearTimeout(this.timer);
    this.box = box;
    this.drag = null;
    this.draw(box);
  }

  draw(box) {
    this.frame.hidden = !box;
    if (box) placeOver(this.frame, box);
    this.clearButton.setAttribute("aria-pressed", String(!this.box));
    this.preview.classList.toggle("boxed", Boolean(this.box));
  }

  /** The user settled on a box: search with it, at once or after a run of key presses. */
  commit(box, now) {
    this.box = box;
    this.draw(box);
    clearTimeout(this.timer);
    if (now) this.changed(box);
    else this.timer = setTimeout(() => this.changed(this.box), KEY_DEBOUNCE_MS);
  }

  /** A pointer's place as fractions of the photo shown (its content box), held inside it. */
  at(e) {
    const r = this.img.getBoundingClientRect();
    const w = this.img.clientWidth, h = this.img.clientHeight;
    if (!w || !h) return null;
    return [clamp((e.clientX - r.left - this.img.clientLeft) / w), clamp((e.clientY - r.top - this.img.clientTop) / h)];
  }

  down(e) {
    if (!this.enabled || this.img.hidden || (e.pointerType === "mouse" && e.button !== 0) || !e.isPrimary) return;
    const p = this.at(e);
    if (!p) return;
    e.preventDefault(); // no text selection, no image drag, no scrolling under a finger
    this.preview.focus({ preventScroll: true });
    this.preview.setPointerCapture(e.pointerId);
    clearTimeout(this.timer);
    this.drag = { id: e.pointerId, from: p };
  }

  spanned(e) {
    const p = this.at(e);
    if (!p || !this.drag) return null;
    const [ax, ay] = this.drag.from;
    return [Math.min(ax, p[0]), Math.min(ay, p[1]), Math.max(ax, p[0]), Math.max(ay, p[1])];
  }

  move(e) {
    if (!this.drag || e.pointerId !== this.drag.id) return;
    const box = this.spanned(e);
    if (box) this.draw(box);
  }

  up(e) {
    if (!this.drag || e.pointerId !== this.drag.id) return;
    const box = this.spanned(e);
    this.drag = null;
    if (box && box[2] - box[0] >= MIN_SIDE && box[3] - box[1] >= MIN_SIDE) this.commit(box.map(round), true);
    else this.draw(this.box); // a click or a slip: the box stays as it was
  }

  cancel() {
    if (!this.drag) return;
    this.drag = null;
    this.draw(this.box);
  }

  /** Enter or B: a box over the middle half (Enter again: search now); arrows move it, Shift+arrows
   *  resize it (right and down grow it); Esc or Delete: the whole photo again. */
  onKey(e) {
    if (!this.enabled || e.altKey || e.ctrlKey || e.metaKey) return;
    const box = this.box;
    let next;
    if (e.key === "Enter" || e.key === "b" || e.key === "B") {
      if (box) {
        this.commit(box, true);
        e.preventDefault();
        return;
      }
      next = START_BOX;
    } else if (e.key === "Escape" || e.key === "Delete" || e.key === "Backspace") {
      if (!box) return;
      e.preventDefault();
      this.announce("The whole photo");
      this.commit(null, true);
      return;
    } else {
      const d = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[e.key];
      if (!d || !box) return;
      let [x0, y0, x1, y1] = box;
      if (e.shiftKey) {
        x1 = clamp(x1 + d[0] * KEY_STEP, x0 + KEY_MIN);
        y1 = clamp(y1 + d[1] * KEY_STEP, y0 + KEY_MIN);
      } else {
        const dx = clamp(d[0] * KEY_STEP, -x0, 1 - x1), dy = clamp(d[1] * KEY_STEP, -y0, 1 - y1);
        x0 += dx;
        x1 += dx;
        y0 += dy;
        y1 += dy;
      }
      next = [x0, y0, x1, y1].map(round);
    }
    e.preventDefault();
    this.announce(`Box ${boxText(next)}`);
    this.commit(next, false);
  }

  announce(text) {
    this.say.textContent = text;
  }
}

// --- the viewer: the part that matched, and why ----------------------------------------------------------

export class ViewerRegions {
  /** hooks: {context(item): {query, key, box} when the viewer shows a result of an image search
   *  (query: the search's query; key: a string naming it), null otherwise; queryImage(): the URL of
   *  the query's preview} */
  constructor(hooks) {
    this.hooks = hooks;
    this.stage = $("viewer-stage");
    this.img = $("viewer-img");
    this.layer = $("viewer-regions");
    this.frame = $("viewer-region");
    this.heat = $("viewer-heat");
    this.toggle = $("viewer-why");
    this.panel = $("viewer-why-panel");
    this.text = $("viewer-why-text");
    this.queryPic = $("viewer-why-query");
    this.queryImg = $("viewer-why-query-img");
    this.queryHeat = $("viewer-why-query-heat");
    this.item = null;
    this.ctx = null;
    this.on = false;
    this.answer = null; // the explanation shown, once it came
    this.cache = new Map(); // query, box and result -> the server's explanation
    this.seq = 0;
    const observer = new ResizeObserver(() => this.place());
    observer.observe(this.stage);
    observer.observe(this.img);
    this.img.addEventListener("load", () => this.place());
    this.toggle.addEventListener("click", () => {
      this.on = !this.on;
      this.render();
    });
  }

  /** The photo the viewer shows now (null: none, or the viewer closed). */
  show(item) {
    this.seq++;
    this.item = item;
    this.ctx = item ? this.hooks.context(item) : null;
    if (!item) this.on = false; // the viewer closed: the next one opens without the heat
    this.answer = null;
    this.frame.hidden = !(item && Array.isArray(item.region));
    this.render();
  }

  render() {
    const can = Boolean(this.item && this.ctx);
    this.toggle.hidden = !can;
    this.toggle.setAttribute("aria-pressed", String(can && this.on));
    const showing = can && this.on;
    this.panel.hidden = !showing;
    this.heat.hidden = !(showing && this.answer);
    if (!showing) {
      this.answer = null;
      this.place();
      return;
    }
    if (!this.answer) this.explain();
    this.place();
  }

  async explain() {
    const seq = this.seq;
    const { query, key, box } = this.ctx;
    const result = this.item.doc_id;
    const id = `${key}|${box ? boxField(box) : ""}|${result}`;
    this.text.textContent = "Finding what makes it alike…";
    this.panel.classList.remove("error");
    this.queryPic.hidden = true;
    this.panel.setAttribute("aria-busy", "true");
    try {
      let answer = this.cache.get(id);
      if (!answer) {
        answer = await this.request(query, result, box);
        this.cache.set(id, answer);
        if (this.cache.size > 50) this.cache.delete(this.cache.keys().next().value);
      }
      if (seq !== this.seq || !this.on) return;
      this.answer = answer;
      this.draw(answer);
    } catch (e) {
      if (seq !== this.seq || !this.on) return;
      this.panel.classList.add("error");
      this.text.textContent = `Could not explain: ${e.message}`;
    } finally {
      if (seq === this.seq) this.panel.setAttribute("aria-busy", "false");
    }
  }

  request(query, result, box) {
    if (query.kind === "doc") {
      const body = { doc_id: query.docId, result };
      if (box) body.box = box.map(round);
      return postJson("/api/explain", body);
    }
    const form = new FormData();
    form.append("file", query.file, query.file.name || "pasted-image");
    form.append("result", result);
    if (box) form.append("box", boxField(box));
    return api("/api/explain", { method: "POST", body: form });
  }

  draw(answer) {
    const heatBox = answer.heat_box || [0, 0, 1, 1];
    fillHeat(this.heat, answer.heat || []);
    this.heat.hidden = false;
    const spot = hottest(answer.heat || [], heatBox);
    const where = spot ? ` It is most alike in ${placeText(...spot)}.` : "";
    const score = typeof answer.score === "number" ? ` (similarity ${answer.score.toFixed(3)})` : "";
    this.text.textContent = `Warmer cells are the parts of this photo most like the query${score}.${where}`;
    // The query, with its own heat: the parts of it that this photo answers.
    const src = this.hooks.queryImage();
    if (src && Array.isArray(answer.query_heat) && answer.query_heat.length) {
      this.queryImg.src = src;
      fillHeat(this.queryHeat, answer.query_heat);
      placeOver(this.queryHeat, answer.query_box || [0, 0, 1, 1]);
      this.queryPic.hidden = false;
    }
    this.place();
  }

  /** Lay the frame and the heat over the photo as it is shown (fit in the stage, or zoomed). */
  place() {
    const rect = this.item ? overPicture(this.layer, this.img) : null;
    this.layer.hidden = !rect || (this.frame.hidden && this.heat.hidden);
    if (!rect) return;
    if (!this.frame.hidden) placeOver(this.frame, this.item.region);
    if (!this.heat.hidden && this.answer) placeOver(this.heat, this.answer.heat_box || [0, 0, 1, 1]);
  }
}
