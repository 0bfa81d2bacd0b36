// Searching: by a dropped, pasted or chosen photo, by an indexed photo ("more like this"), or by a
// tag; always within the filters. Results are a list of cards; a card opens the viewer, which
// walks the results. In a workspace with faces a photo is searched as a whole, or by one of its
// faces (the results then box the face that matched). In a workspace with regions the user may box
// a part of the query photo (regions.js) to search by it; the results then box the part that matched.

import { LIST_KEYS } from "./filters.js";
import { faceUrl } from "./people.js";
import { boxField, QueryBox } from "./regions.js";
import { $, api, el, fileName, MATCH_HELP, MATCH_NAME, pct, plural, thumbUrl, postJson } from "./util.js";

export const SEARCH_STEPS = [16, 32, 64, 128, 256];

/** The filters as a JSON body's `filters` (near is an object there). */
function filterBody(params) {
  const out = {};
  for (const [key, value] of params) {
    if (key === "near") {
      const [lat, lon, km] = value.split(",").map(Number);
      out.near = { lat, lon, km };
    } else if (LIST_KEYS.includes(key)) (out[key] = out[key] || []).push(value);
    else out[key] = value;
  }
  return out;
}

export class SearchView {
  /** hooks: {open(index), busy(on, message), error(message), ready(), stats(), face(n): search by
   *  the query's n-th face (null: the whole photo), box(box): search by a part of the query photo
   *  (fractions x0, y0, x1, y1; null: the whole photo)} */
  constructor(hooks) {
    this.hooks = hooks;
    this.results = $("results");
    this.more = $("more");
    this.matches = [];
    this.query = null;
    this.face = null;
    this.box = null; // the part of the query photo searched by (a workspace with regions), or null
    this.controller = null;
    this.seq = 0;
    this.previewUrl = null;
    this.storedFaces = new Map(); // doc id -> its faces
    this.region = new QueryBox({
      changed: (box) => {
        if (!this.query) return;
        this.box = box;
        this.renderFaces(); // a box is searched instead of a face: "Whole photo" is no longer the choice
        this.hooks.box(box);
      },
    });
    this.more.addEventListener("click", () => {
      this.results.classList.add("show-weak");
      this.more.hidden = true;
      const first = this.results.querySelector("li.weak .thumb");
      if (first) first.focus();
    });
    this.results.addEventListener("click", (e) => {
      const thumb = e.target.closest(".thumb");
      if (!thumb) return;
      e.preventDefault();
      this.hooks.open(Number(thumb.closest("li").dataset.index));
    });
  }

  get total() {
    return this.matches.length;
  }

  async item(i) {
    return this.matches[i] || null;
  }

  focus(i) {
    const thumb = this.results.querySelector(`li[data-index="${i}"] .thumb`);
    if (thumb) thumb.focus();
  }

  /** Whether the query can be searched by a part of it: an image search in a workspace with regions. */
  boxable(query = this.query) {
    const stats = this.hooks.stats();
    return Boolean(query && stats && stats.regions && query.kind !== "tag" && !query.minMatch);
  }

  request(query, filters, topK, signal) {
    const box = this.boxable(query) ? this.box : null;
    const face = box ? null : this.face; // a box is a part of the photo, whichever face it holds
    if (query.kind === "tag") {
      const params = new URLSearchParams(filters);
      params.set("q", query.q);
      params.set("top_k", String(topK));
      return api(`/api/search/tags?${params}`, { signal });
    }
    if (query.kind === "doc") {
      const body = { doc_id: query.docId, top_k: topK, filters: filterBody(filters) };
      if (query.minMatch) body.min_match = query.minMatch;
      if (face !== null) body.face = face;
      if (box) body.box = box;
      return postJson("/api/search", body, { signal });
    }
    const form = new FormData();
    form.append("file", query.file, query.file.name || "pasted-image");
    form.append("top_k", String(topK));
    for (const [key, value] of filters) form.append(key, value);
    if (face !== null) form.append("face", String(face));
    if (box) form.append("box", boxField(box));
    return api("/api/search", { method: "POST", body: form, signal });
  }

  /** Run a query: true once its results are shown; false if it failed or a newer one started. */
  async run(query, filters, topK, { keepFace = false } = {}) {
    if (!keepFace) this.face = query.face ?? null; // an indexed photo's face comes with the query (the URL)
    const isNew = this.query !== query;
    // The same photo again (other filters, Back to it): its box stays; another photo starts whole.
    if (isNew && !(this.query && queryKey(this.query) === queryKey(query))) this.box = null;
    this.query = query;
    if (isNew) this.renderQuery(query);
    else this.renderFaces(); // the face chosen shows as chosen while its search runs
    if (this.controller) this.controller.abort();
    const controller = new AbortController();
    this.controller = controller;
    const seq = ++this.seq;
    this.results.dataset.query = queryKey(query);
    const box = this.boxable(query) ? this.box : null;
    if (box) this.results.dataset.box = boxField(box);
    else delete this.results.dataset.box;
    this.results.dataset.state = "loading";
    this.results.setAttribute("aria-busy", "true");
    this.more.hidden = true;
    this.hooks.busy(true, "Searching…");
    try {
      const answer = await this.request(query, filters, topK, controller.signal);
      if (seq !== this.seq) return false;
      const first = (answer.results && answer.results[0]) || { matches: [] };
      if (first.faces && query.kind === "file") query.faces = first.faces; // an upload's faces, once found
      this.renderFaces();
      this.render(first.matches || [], query);
      this.hooks.busy(false, this.summary(first, answer, query, filters));
      this.results.dataset.state = "done";
      return true;
    } catch (e) {
      if (e.name === "AbortError" || seq !== this.seq) return false;
      if (e.type === "NotReady") {
        this.hooks.busy(true, "The model is loading; the search will run when it is ready…");
        await this.hooks.ready();
        if (seq !== this.seq) return false;
        this.query = null;
        return this.run(query, filters, topK, { keepFace: true });
      }
      this.hooks.busy(false, "");
      this.hooks.error(e.message);
      this.matches = [];
      this.results.replaceChildren(); // results of an earlier query would read as this one's
      this.results.dataset.state = "error";
      return false;
    } finally {
      if (seq === this.seq) this.results.setAttribute("aria-busy", "false");
    }
  }

  summary(first, answer, query, filters) {
    const matches = first.matches || [];
    const n = matches.length;
    const stats = this.hooks.stats();
    if (!n) return emptyMessage(query, stats, filters);
    const weak = matches.filter((m) => m.match === "weak").length;
    const took = typeof answer.took_ms === "number" ? ` in ${Math.round(answer.took_ms)} ms` : "";
    const weakNote = weak && weak < n ? `, ${weak} of them weak` : "";
    // How many there are in all: the photos with the tag, or those that passed a min_match cut.
    const count = typeof first.total === "number" && first.total > n ? ` of ${first.total}${first.total_exact ? "" : "+"}` : "";
    const tagged = query.kind === "tag" && typeof first.total === "number" ? ` tagged “${query.q}”` : "";
    const dupes = query.minMatch ? ` at least ${MATCH_NAME[query.minMatch]}` : "";
    // Nothing in the collection is really like the query: say so rather than let weak results pass as answers.
    const weakAll = first.weak && n ? "Nothing here is really like it: even the best match is weak. " : "";
    const part = this.boxable(query) && this.box ? " for the boxed part of the photo" : "";
    return `${weakAll}${plural(n, "result")}${count}${tagged}${dupes}${part}${took}${weakNote}`;
  }

  clear() {
    if (this.controller) this.controller.abort();
    this.seq++;
    this.query = null;
    this.box = null;
    this.region.set(null);
    this.matches = [];
    this.results.replaceChildren();
    this.results.dataset.state = "idle";
    delete this.results.dataset.query;
    delete this.results.dataset.box;
    this.more.hidden = true;
    $("query").hidden = true;
  }

  renderQuery(query) {
    $("query").hidden = false;
    if (this.previewUrl) {
      URL.revokeObjectURL(this.previewUrl);
      this.previewUrl = null;
    }
    const img = $("query-img"), label = $("query-label");
    img.hidden = query.kind === "tag";
    img.onerror = () => (img.hidden = true); // e.g. a file the browser cannot show (the server says why)
    img.removeAttribute("src");
    $("query").classList.toggle("no-preview", query.kind === "tag");
    // A preview to draw a box on is larger than one to recognise the query by.
    const boxable = this.boxable(query);
    this.region.enable(boxable);
    $("query").classList.toggle("boxable", boxable);
    this.region.set(boxable ? this.box : null);
    const previewPx = boxable ? 360 : 96;
    const what = query.minMatch ? "Duplicates of " : "More like ";
    if (query.kind === "file") {
      this.previewUrl = URL.createObjectURL(query.file);
      img.src = this.previewUrl;
      img.alt = "Your photo";
      const name = query.file.name || "pasted image";
      label.replaceChildren("Photos like ", el("strong", {}, name));
      document.title = `lookalike · like ${name}`;
    } else if (query.kind === "doc") {
      const showMeta = (meta) => {
        if (this.query !== query) return;
        const name = fileName(meta);
        img.src = thumbUrl(query.docId, previewPx);
        img.alt = name;
        label.replaceChildren(what, el("strong", { title: meta.uri || "" }, name));
        document.title = `lookalike · ${what.trim().toLowerCase()} ${name}`;
      };
      label.replaceChildren(`${what}this photo`);
      img.src = thumbUrl(query.docId, previewPx);
      img.alt = "The query photo";
      if (query.meta) showMeta(query.meta);
      else {
        api(`/api/docs/${encodeURIComponent(query.docId)}`).then((meta) => {
          query.meta = meta;
          showMeta(meta);
          if (this.query === query) this.renderFaces(); // its size, to box its faces
        }, () => {});
      }
      const stats = this.hooks.stats();
      if (stats && stats.faces && !query.minMatch) {
        // Kept a while: choosing another face of the same photo shows its choices at once.
        query.faces = this.storedFaces.get(query.docId);
        if (!query.faces) {
          api(`/api/docs/${encodeURIComponent(query.docId)}/faces`).then((body) => {
            query.faces = body.faces.filter((f) => f.bbox);
            this.storedFaces.set(query.docId, query.faces);
            if (this.storedFaces.size > 20) this.storedFaces.delete(this.storedFaces.keys().next().value);
            if (this.query === query) this.renderFaces();
          }, () => {});
        }
      }
    } else {
      label.replaceChildren("Photos tagged ", el("strong", {}, query.q));
      document.title = `lookalike · ${query.q}`;
    }
    this.renderFaces();
  }

  /** A workspace with faces: the query searched as a whole photo or by one of its faces, boxed
   *  and numbered on its preview. An indexed photo's faces are stored; an upload's are known once
   *  a search by a face has found them (until then, the choice is its largest face). */
  renderFaces() {
    const boxes = $("query-boxes"), chooser = $("faces"), img = $("query-img");
    const query = this.query;
    const focused = chooser.contains(document.activeElement) ? document.activeElement.dataset.face : null;
    boxes.replaceChildren();
    chooser.replaceChildren();
    chooser.hidden = true;
    $("region-clear").hidden = false;
    const stats = this.hooks.stats();
    if (!query || query.kind === "tag" || query.minMatch || !(stats && stats.faces)) return;
    const boxed = this.boxable(query) && this.box !== null; // a part of the photo is searched, no face
    const faces = query.faces || [];
    if (query.kind === "doc" && !faces.length) return; // none, or not known yet
    const crops = [];
    const draw = () => {
      // Boxes are in the photo's own pixels: an indexed photo's preview is a thumbnail of it.
      const meta = query.kind === "doc" ? query.meta || {} : { width: img.naturalWidth, height: img.naturalHeight };
      const w = meta.width, h = meta.height;
      if (!w || !h || this.query !== query) return;
      boxes.replaceChildren(
        ...faces.map((f, i) =>
          el("span", { className: "box" + (i === this.face ? " chosen" : ""), style: shapeBox(f.bbox, w, h), dataset: { n: String(i + 1) } }),
        ),
      );
      // An upload's faces, cut out of its preview (an indexed photo's come from the server).
      for (const [span, f] of crops) Object.assign(span.style, cropStyle(this.previewUrl, f.bbox, w, h));
    };
    const choice = (face, ...label) => {
      const chosen = !boxed && face === this.face;
      const button = el("button", { type: "button", "aria-pressed": String(chosen), dataset: { face: String(face) } }, ...label);
      button.addEventListener("click", () => {
        if (!chosen) this.hooks.face(face);
      });
      return button;
    };
    chooser.append(el("span", { className: "hint" }, "Search by"), choice(null, "Whole photo"));
    faces.forEach((f, i) => {
      let crop;
      if (query.kind === "doc") crop = el("img", { className: "face-crop", src: faceUrl(f.face, 32), alt: "" });
      else {
        crop = el("span", { className: "face-crop", "aria-hidden": "true" });
        crops.push([crop, f]);
      }
      chooser.append(choice(i, crop, `Face ${i + 1}`));
    });
    if (!faces.length) chooser.append(choice(0, "Its largest face"));
    chooser.hidden = false;
    $("region-clear").hidden = true; // the chooser's own "Whole photo" takes the box away too
    if (img.complete && img.naturalWidth) draw();
    else img.addEventListener("load", draw, { once: true });
    // The keyboard stays on the choice it made, though the buttons are new.
    const again = focused && chooser.querySelector(`[data-face="${focused}"]`);
    if (again) again.focus();
  }

  render(matches, query) {
    this.matches = matches;
    const byTag = query.kind === "tag";
    const items = matches.map((m, i) => card(m, i, byTag));
    // Weak matches wait behind "show more": below the collection's own bar for "similar".
    const weak = matches.filter((m) => m.match === "weak").length;
    const strong = matches.length - weak;
    this.results.classList.toggle("show-weak", strong === 0);
    this.results.replaceChildren(...items);
    this.more.hidden = weak === 0 || strong === 0;
    this.more.textContent = `Show ${weak} weaker match${weak === 1 ? "" : "es"}`;
  }
}

function card(m, i, byTag) {
  const name = fileName(m);
  const tags = (m.tags || []).slice(0, 3);
  const tagText = tags.map((t) => `${t.label} ${pct(t.probability)}`).join(", ");
  const img = el("img", { src: thumbUrl(m.doc_id, 200), alt: name, loading: i < 16 ? "eager" : "lazy", decoding: "async", draggable: "true" });
  img.addEventListener("error", () => img.classList.add("broken"), { once: true });
  img.addEventListener("dragstart", (e) => e.dataTransfer.setData("application/x-lookalike-doc", m.doc_id));
  const thumb = el(
    "a",
    { className: "thumb", href: `#photo=${encodeURIComponent(m.doc_id)}`, "aria-describedby": `meta-${i}` },
    img,
  );
  const region = Array.isArray(m.region) && m.region.length === 4 ? m.region : null;
  if (region) {
    // The part of the photo that matched a boxed query: placed once the photo's shape is known.
    const frame = el("span", { className: "box region-box", hidden: true });
    const place = (w, h) => {
      Object.assign(frame.style, boxStyle(regionBbox(region, w, h), w, h));
      frame.hidden = false;
    };
    if (m.width && m.height) place(m.width, m.height);
    else img.addEventListener("load", () => place(img.naturalWidth, img.naturalHeight), { once: true });
    thumb.append(frame);
  } else if (Array.isArray(m.bbox) && m.width && m.height) {
    thumb.append(el("span", { className: "box", style: boxStyle(m.bbox, m.width, m.height) })); // the matched face
  }
  // A search by a face ranks by Euclidean distance (lower is closer; under 0.6: the same person).
  const isDistance = typeof m.distance === "number";
  const score = isDistance ? `d ${m.distance.toFixed(3)}` : typeof m.score !== "number" ? "" : byTag ? pct(m.score) : m.score.toFixed(3);
  const partNote = region ? el("span", { className: "visually-hidden" }, "; the boxed part of it matched") : null;
  const level = m.match ? el("span", { className: `match match-${m.match}`, title: MATCH_HELP[m.match] }, MATCH_NAME[m.match]) : null;
  return el(
    "li",
    { className: m.match === "weak" ? "card weak" : "card", dataset: { docId: m.doc_id, match: m.match || "", index: String(i) } },
    thumb,
    el(
      "div",
      { className: "meta", id: `meta-${i}` },
      el("div", { className: "line" }, el("span", { className: "name", title: [m.uri || name, photoLine(m)].filter(Boolean).join("\n") }, name)),
      el(
        "div",
        { className: "line small" },
        el("span", { className: "score", title: isDistance ? "face distance" : byTag ? "tag probability" : "similarity" }, score),
        level,
        el("span", { className: "tags", title: tagText }, tagText),
        partNote,
      ),
    ),
  );
}

/** Where bbox (x, y, w, h in original pixels) lies over the whole image shown contain-fit in a square, in %. */
function boxStyle(bbox, width, height) {
  const scale = 1 / Math.max(width, height);
  const ox = (1 - width * scale) / 2, oy = (1 - height * scale) / 2;
  return {
    left: `${(bbox[0] * scale + ox) * 100}%`,
    top: `${(bbox[1] * scale + oy) * 100}%`,
    width: `${bbox[2] * scale * 100}%`,
    height: `${bbox[3] * scale * 100}%`,
  };
}

/** A region (fractions x0, y0, x1, y1 of a photo) as a bbox in its pixels (x, y, w, h). */
function regionBbox(region, width, height) {
  const [x0, y0, x1, y1] = region.map(Number);
  return [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height];
}

/** A background that shows only bbox of an image of width x height (the element is square). */
function cropStyle(url, bbox, width, height) {
  const [x, y, w, h] = bbox;
  const side = Math.max(w, h);
  const cx = x + w / 2 - side / 2, cy = y + h / 2 - side / 2;
  return {
    backgroundImage: `url("${url}")`,
    backgroundSize: `${(width / side) * 100}% ${(height / side) * 100}%`,
    backgroundPosition: `${width === side ? 0 : (cx / (width - side)) * 100}% ${height === side ? 0 : (cy / (height - side)) * 100}%`,
  };
}

/** Where bbox lies over an image shown in a box of its own shape, in %. */
function shapeBox(bbox, width, height) {
  return {
    left: `${(bbox[0] / width) * 100}%`,
    top: `${(bbox[1] / height) * 100}%`,
    width: `${(bbox[2] / width) * 100}%`,
    height: `${(bbox[3] / height) * 100}%`,
  };
}

// When and with what a photo was taken, as its header says (a file date is no "taken" date).
function photoLine(m) {
  const day = m.taken_from === "exif" && m.taken_at ? `taken ${m.taken_at.slice(0, 10)}` : "";
  return [day, m.camera || ""].filter(Boolean).join(" · ");
}

export function queryKey(query) {
  if (query.kind === "doc") return `${query.minMatch ? "dupes" : "doc"}:${query.docId}${query.face != null ? `/face:${query.face}` : ""}`;
  if (query.kind === "tag") return `tag:${query.q}`;
  return `file:${query.upload}`;
}

function emptyMessage(query, stats, filters) {
  if (stats && stats.docs === 0) return "No matches: the library is empty. Add photos, or index a folder with “lookalike index FOLDER”.";
  const within = [...filters.keys()].length ? " within the filters" : "";
  if (query.minMatch) return `No duplicates of this photo${within}.`;
  if (query.kind === "tag") {
    return `No photos tagged “${query.q}”${within}. Tags are ImageNet labels and the WordNet words above them, such as daisy, dog, bird or vehicle.`;
  }
  return `No matches${within}.`;
}
