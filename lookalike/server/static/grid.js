// The browse grid: the whole collection, newest first, in month sections, windowed. Each month's
// height is known from its photo count (GET /api/timeline), so the page is as tall as the whole
// collection from the start; only the tiles near the viewport exist in the DOM, and a month's
// photos are fetched a page at a time (GET /api/docs) when its rows come near. Tiles are square
// cells showing the whole photo (contain-fit), so a tall photo stays recognisable.

import { api, el, fileName, monthEnd, monthName, plural, thumbUrl } from "./util.js";

const GAP = 4;
const HEAD = 48; // a month's heading
const PAGE = 240; // photos fetched at a time (the server allows up to 1000)
const MARGIN = 1.0; // viewports rendered above and below the visible one
const RETRY_MS = 2000; // a page of photos that failed is asked for again after this
const SETTLE_MS = 120; // after flying past, what is on screen is fetched once the page stays this long

/** Take a tile out of the page, cancelling its image's download if it is still under way. */
function drop(node) {
  const img = node.firstChild;
  if (img && !img.complete) img.removeAttribute("src");
  node.remove();
}

export class BrowseGrid {
  /** root: the grid element. onOpen(index): a tile was activated. onMonth(month): the month in view. */
  constructor(root, { onOpen, onMonth, onSelect }) {
    this.root = root;
    this.onOpen = onOpen;
    this.onMonth = onMonth;
    this.onSelect = onSelect;
    this.sections = [];
    this.starts = [];
    this.total = 0;
    this.filters = new URLSearchParams();
    this.gen = 0;
    this.tiles = new Map(); // global index -> tile element
    this.heads = new Map(); // month -> heading element
    this.focusIndex = 0;
    this.selecting = false;
    this.selected = new Set();
    this.frame = 0;
    this.active = false;
    this.width = 0;
    window.addEventListener("scroll", () => this.schedule(), { passive: true });
    window.addEventListener("resize", () => this.relayout());
    root.addEventListener("keydown", (e) => this.onKey(e));
    root.addEventListener("click", (e) => this.onClick(e));
  }

  /** Lay out the collection the filters keep (a URLSearchParams of filter fields). Its total. */
  async load(filters) {
    const gen = ++this.gen;
    const timeline = await api(`/api/timeline?${filters}`);
    if (gen !== this.gen) return null;
    this.filters = filters;
    this.sections = timeline.months.map((m) => ({
      month: m.month, photos: m.photos, items: [], cursor: null, done: false, pending: null, top: 0, height: 0,
    }));
    let start = 0;
    this.starts = this.sections.map((s) => ((start += s.photos), start - s.photos));
    this.total = timeline.total;
    this.clear();
    this.focusIndex = 0;
    this.layout();
    this.render();
    return timeline;
  }

  clear() {
    for (const node of this.tiles.values()) drop(node);
    for (const node of this.heads.values()) node.remove();
    this.tiles.clear();
    this.heads.clear();
  }

  relayout() {
    if (!this.active || this.root.clientWidth === this.width) return;
    this.clear(); // the cell size changed: every tile moves
    this.layout();
    this.render();
  }

  layout() {
    const width = this.root.clientWidth || 320;
    this.width = width;
    const target = width < 640 ? 112 : 176;
    this.cols = Math.max(2, Math.floor((width + GAP) / (target + GAP)));
    this.cell = (width - (this.cols - 1) * GAP) / this.cols;
    let top = 0;
    for (const s of this.sections) {
      s.top = top;
      s.rows = Math.ceil(s.photos / this.cols);
      s.height = HEAD + s.rows * (this.cell + GAP);
      top += s.height;
    }
    this.root.style.height = `${top}px`;
  }

  schedule() {
    if (this.active && !this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.render();
      });
    }
  }

  /** The section holding global index i, and i's place in it. */
  locate(i) {
    let lo = 0, hi = this.starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid] <= i) lo = mid;
      else hi = mid - 1;
    }
    return [this.sections[lo], i - this.starts[lo], lo];
  }

  /** Where a global index's tile sits, in page pixels relative to the grid's top. */
  position(i) {
    const [s, k] = this.locate(i);
    const row = Math.floor(k / this.cols), col = k % this.cols;
    return { x: col * (this.cell + GAP), y: s.top + HEAD + row * (this.cell + GAP) };
  }

  render() {
    if (!this.active || !this.sections.length) return;
    // Flying past (over half a window since the last frame): draw what is known, and leave the
    // photos and their thumbnails to be fetched once the page slows down, rather than fetch every
    // month and image flown past ahead of the ones the user stops at.
    const y = window.scrollY;
    const fast = Math.abs(y - (this.lastY ?? y)) > window.innerHeight / 2;
    this.lastY = y;
    clearTimeout(this.settle);
    if (fast) this.settle = setTimeout(() => ((this.lastY = window.scrollY), this.render()), SETTLE_MS);
    const rootTop = this.root.getBoundingClientRect().top + y;
    const view = window.innerHeight;
    const y0 = y - rootTop - view * MARGIN;
    const y1 = y - rootTop + view * (1 + MARGIN);
    const wantTiles = new Set();
    const wantHeads = new Set();
    let current = null;
    const step = this.cell + GAP;
    for (let n = 0; n < this.sections.length; n++) {
      const s = this.sections[n];
      if (s.top + s.height < y0) continue;
      if (s.top > y1) break;
      if (current === null && s.top + s.height > y - rootTop + 80) current = s.month;
      wantHeads.add(s.month);
      const first = Math.max(0, Math.floor((y0 - s.top - HEAD) / step));
      const last = Math.min(s.rows - 1, Math.floor((y1 - s.top - HEAD) / step));
      const end = Math.min(s.photos, (last + 1) * this.cols);
      if (!fast) this.want(s, end);
      for (let k = first * this.cols; k < Math.min(end, s.items.length); k++) wantTiles.add(this.starts[n] + k);
    }
    for (const [month, node] of this.heads) {
      if (!wantHeads.has(month)) {
        node.remove();
        this.heads.delete(month);
      }
    }
    for (const month of wantHeads) if (!this.heads.has(month)) this.heads.set(month, this.head(month));
    for (const [i, node] of this.tiles) {
      // The focused tile stays, so that scrolling away and back keeps the keyboard's place.
      if (!wantTiles.has(i) && node !== document.activeElement) {
        drop(node);
        this.tiles.delete(i);
      }
    }
    const fresh = [];
    for (const i of wantTiles) if (!this.tiles.has(i)) fresh.push(i);
    if (fresh.length) this.root.append(...fresh.map((i) => this.tile(i)));
    this.rove();
    if (!fast) this.loadImages();
    if (current && current !== this.month) {
      this.month = current;
      this.onMonth(current);
    }
  }

  /** Give the tiles shown their thumbnails (a browser does not cancel an image whose element is
   *  gone, so one asked for every tile flown past would queue thousands ahead of those on screen). */
  loadImages() {
    for (const node of this.tiles.values()) {
      const img = node.firstChild;
      if (img.dataset.src) {
        img.src = img.dataset.src;
        delete img.dataset.src;
      }
    }
  }

  head(month) {
    const s = this.sections[this.sections.findIndex((x) => x.month === month)];
    const node = el(
      "h2",
      { className: "month-head", dataset: { month }, style: { top: `${s.top}px` } },
      monthName(month),
      el("span", { className: "hint" }, ` · ${plural(s.photos, "photo")}`),
    );
    this.root.append(node);
    return node;
  }

  tile(i) {
    const [s, k] = this.locate(i);
    const item = s.items[k];
    const { x, y } = this.position(i);
    const name = fileName(item);
    // The image is asked for once the tile stays (see loadImages), not as it flies past.
    const img = el("img", { alt: name, decoding: "async", draggable: "true", dataset: { src: thumbUrl(item.doc_id, this.cell) } });
    img.addEventListener("error", () => img.classList.add("broken"), { once: true });
    img.addEventListener("dragstart", (e) => e.dataTransfer.setData("application/x-lookalike-doc", item.doc_id));
    const node = el(
      "a",
      {
        className: "tile",
        href: `#photo=${encodeURIComponent(item.doc_id)}`,
        tabindex: "-1",
        dataset: { id: item.doc_id, index: String(i) },
        style: { transform: `translate(${x}px, ${y}px)`, width: `${this.cell}px`, height: `${this.cell}px` },
      },
      img,
    );
    this.mark(node);
    this.tiles.set(i, node);
    return node;
  }

  /** A tile's selection state, as a checkbox while selecting. */
  mark(node) {
    if (this.selecting) {
      const on = this.selected.has(node.dataset.id);
      node.setAttribute("role", "checkbox");
      node.setAttribute("aria-checked", String(on));
      node.classList.toggle("selected", on);
    } else {
      node.removeAttribute("role");
      node.removeAttribute("aria-checked");
      node.classList.remove("selected");
    }
  }

  setSelecting(on) {
    this.selecting = on;
    if (!on) this.selected.clear();
    for (const node of this.tiles.values()) this.mark(node);
  }

  /** One tile is in the Tab order: the keyboard's place, or the first one shown. */
  rove() {
    let node = this.tiles.get(this.focusIndex);
    if (!node) {
      const first = Math.min(...this.tiles.keys());
      node = this.tiles.get(first);
    }
    for (const t of this.tiles.values()) t.tabIndex = t === node ? 0 : -1;
  }

  /** Fetch section s's photos until it holds `count` of them (a page at a time, in order). */
  /** Fetch section s's photos until it holds `count` of them, a page at a time, in order: resolves
   *  when it does (or the section is complete), rejects when a page fails. One fetch a section at a
   *  time; a caller arriving meanwhile waits for that one. */
  fetchUpTo(s, count) {
    if (s.done || s.items.length >= count) return Promise.resolve();
    if (!s.pending) {
      const gen = this.gen;
      s.pending = this.fetchPage(s, count).finally(() => {
        if (gen === this.gen) s.pending = null;
      });
    }
    const gen = this.gen;
    return s.pending.then(() => (gen === this.gen && s.items.length < count ? this.fetchUpTo(s, count) : undefined));
  }

  async fetchPage(s, count) {
    const gen = this.gen;
    const params = new URLSearchParams(this.filters);
    const start = `${s.month}-01`, end = monthEnd(s.month);
    const after = params.get("taken_after"), before = params.get("taken_before");
    params.set("taken_after", after && after > start ? after : start);
    params.set("taken_before", before && before < end ? before : end);
    params.set("sort", "taken");
    params.set("order", "desc");
    params.set("limit", String(Math.min(1000, Math.max(PAGE, count - s.items.length))));
    if (s.cursor) params.set("cursor", s.cursor);
    const page = await api(`/api/docs?${params}`);
    if (gen !== this.gen) return;
    s.items.push(...page.items);
    s.cursor = page.next_cursor;
    s.done = !page.next_cursor || s.items.length >= s.photos;
    this.schedule();
  }

  /** Fetch for the rows on screen: one page at a time (its arrival draws the grid again, which
   *  asks for the next); a page that fails is asked for again a while later. */
  want(s, count) {
    if (s.pending || s.done || s.items.length >= count) return;
    const gen = this.gen;
    s.pending = this.fetchPage(s, count)
      .catch(() => setTimeout(() => this.schedule(), RETRY_MS))
      .finally(() => {
        if (gen === this.gen) s.pending = null;
      });
  }

  /** The photo at global index i, fetched if need be (for the viewer's previous and next); null if
   *  it cannot be had (a page failed, or the grid was laid out anew meanwhile). */
  async item(i) {
    if (i < 0 || i >= this.total) return null;
    const gen = this.gen;
    const [s, k] = this.locate(i);
    try {
      await this.fetchUpTo(s, k + 1);
    } catch {
      return null;
    }
    return gen === this.gen ? s.items[k] || null : null;
  }

  indexOf(docId) {
    for (let n = 0; n < this.sections.length; n++) {
      const k = this.sections[n].items.findIndex((m) => m.doc_id === docId);
      if (k >= 0) return this.starts[n] + k;
    }
    return -1;
  }

  scrollToMonth(month) {
    const s = this.sections.find((x) => x.month === month);
    if (!s) return;
    const rootTop = this.root.getBoundingClientRect().top + window.scrollY;
    window.scrollTo({ top: rootTop + s.top - this.stickyOffset() });
    this.lastY = window.scrollY; // a jump lands: fetch what is there at once
    this.render();
  }

  stickyOffset() {
    const bar = document.getElementById("timeline");
    return bar && bar.offsetParent ? bar.getBoundingClientRect().height + 8 : 8;
  }

  /** Move the keyboard's place to global index i: fetched, scrolled into view, focused. */
  async focus(i) {
    if (i < 0 || i >= this.total) return;
    this.focusIndex = i;
    await this.item(i);
    const { y } = this.position(i);
    const rootTop = this.root.getBoundingClientRect().top + window.scrollY;
    const top = rootTop + y, bottom = top + this.cell;
    const offset = this.stickyOffset();
    if (top < window.scrollY + offset) window.scrollTo({ top: top - offset - HEAD });
    else if (bottom > window.scrollY + window.innerHeight) window.scrollTo({ top: bottom - window.innerHeight + GAP });
    this.lastY = window.scrollY;
    this.render();
    const node = this.tiles.get(i);
    if (node) node.focus({ preventScroll: true });
  }

  onKey(e) {
    const tile = e.target.closest(".tile");
    if (!tile || e.altKey || e.ctrlKey || e.metaKey) return;
    const i = Number(tile.dataset.index);
    const [s, k, n] = this.locate(i);
    const col = k % this.cols;
    let to = null;
    if (e.key === "ArrowRight") to = i + 1;
    else if (e.key === "ArrowLeft") to = i - 1;
    else if (e.key === "ArrowDown") {
      if (k + this.cols < s.photos) to = i + this.cols;
      else if (Math.floor(k / this.cols) < s.rows - 1) to = this.starts[n] + s.photos - 1; // the short last row
      else if (n + 1 < this.sections.length) to = this.starts[n + 1] + Math.min(col, this.sections[n + 1].photos - 1);
    } else if (e.key === "ArrowUp") {
      if (k >= this.cols) to = i - this.cols;
      else if (n > 0) {
        const p = this.sections[n - 1];
        const lastRow = (p.rows - 1) * this.cols;
        to = this.starts[n - 1] + Math.min(lastRow + col, p.photos - 1);
      }
    } else if (e.key === "Home") to = this.starts[n];
    else if (e.key === "End") to = this.starts[n] + s.photos - 1;
    else if (e.key === " " && this.selecting) {
      e.preventDefault();
      this.toggle(tile);
      return;
    } else return;
    e.preventDefault();
    if (to !== null && to >= 0 && to < this.total) this.focus(to);
  }

  onClick(e) {
    const tile = e.target.closest(".tile");
    if (!tile || e.ctrlKey || e.metaKey || e.shiftKey) return; // a new tab: the link as it is
    e.preventDefault();
    this.focusIndex = Number(tile.dataset.index);
    if (this.selecting) this.toggle(tile);
    else this.onOpen(this.focusIndex);
  }

  toggle(tile) {
    const id = tile.dataset.id;
    if (this.selected.has(id)) this.selected.delete(id);
    else this.selected.add(id);
    this.mark(tile);
    this.onSelect(this.selected);
  }

  /** Focus the tile of global index i again (after the viewer closes), if it is shown. */
  refocus(i) {
    if (typeof i === "number") this.focus(i);
  }
}
