// The viewer: one photo large, in a modal <dialog>, with previous/next (arrow keys, buttons,
// swipes), zoom, what the camera recorded, and actions. It walks whatever list opened it (the
// browse grid or a result list) through that list's `item(i)` and `total`. In a workspace with
// faces, each face is boxed on the photo and listed beside it, with whose it is (people.js). A
// result of a search by a part of a photo frames the part that matched, and a result of any image
// search can say why it matched ("Why?": a heat map, regions.js).

import { $, api, el, fileName, MATCH_HELP, MATCH_NAME, sizeText, takenText } from "./util.js";

const SWIPE_PX = 48;

export class Viewer {
  /** actions: {more(item), dupes(item), near(item), remove(item) -> Promise, closed(index)};
   *  faces: the photo's faces (a ViewerFaces), or null; regions: the part that matched and why (a
   *  ViewerRegions), or null. */
  constructor(actions, faces = null, regions = null) {
    this.actions = actions;
    this.faces = faces;
    this.regions = regions;
    this.dialog = $("viewer");
    this.img = $("viewer-img");
    this.stage = $("viewer-stage");
    this.info = $("viewer-info");
    this.title = $("viewer-title");
    this.position = $("viewer-position");
    this.list = null;
    this.index = -1;
    this.item = null;
    this.seq = 0;
    $("viewer-prev").addEventListener("click", () => this.step(-1));
    $("viewer-next").addEventListener("click", () => this.step(1));
    $("viewer-close").addEventListener("click", () => this.dialog.close());
    $("viewer-zoom").addEventListener("click", () => this.zoom());
    $("viewer-more").addEventListener("click", () => this.item && this.actions.more(this.item));
    $("viewer-dupes").addEventListener("click", () => this.item && this.actions.dupes(this.item));
    $("viewer-near").addEventListener("click", () => this.item && this.actions.near(this.item));
    $("viewer-remove").addEventListener("click", () => this.remove());
    this.img.addEventListener("dblclick", () => this.zoom());
    this.dialog.addEventListener("keydown", (e) => this.onKey(e));
    this.dialog.addEventListener("close", () => this.onClose());
    this.swipe();
  }

  get open() {
    return this.dialog.open;
  }

  /** Show photo `index` of `list` (an object with total and async item(i)); `item` if known. */
  async show(list, index, item = null) {
    const seq = ++this.seq;
    item = item || (await list.item(index));
    if (seq !== this.seq) return false;
    if (!item && this.dialog.open && this.item) {
      // Stepping to a photo that could not be fetched: stay on this one, and say so.
      this.position.textContent = "Could not load the next photo: try again";
      return false;
    }
    this.list = list;
    this.index = index;
    if (!this.dialog.open) this.dialog.showModal();
    if (!item) {
      this.item = null;
      if (this.faces) this.faces.show(null);
      if (this.regions) this.regions.show(null);
      this.img.removeAttribute("src");
      this.info.replaceChildren();
      this.title.textContent = "This photo is no longer in the index.";
      return false;
    }
    this.item = item;
    this.stage.classList.remove("zoomed");
    $("viewer-zoom").setAttribute("aria-pressed", "false");
    const name = fileName(item);
    this.img.alt = name;
    this.img.src = item.image_url || `/api/docs/${encodeURIComponent(item.doc_id)}/image`;
    this.title.textContent = name;
    this.title.title = item.uri || name;
    const total = list.total;
    this.position.textContent = total ? `${(index + 1).toLocaleString()} of ${total.toLocaleString()}` : "";
    $("viewer-prev").disabled = index <= 0;
    $("viewer-next").disabled = index >= total - 1;
    $("viewer-original").href = item.image_url || `/api/docs/${encodeURIComponent(item.doc_id)}/image`;
    $("viewer-near").hidden = !item.gps;
    const remove = $("viewer-remove");
    remove.dataset.confirm = "";
    remove.textContent = "Remove from index";
    this.renderInfo(item);
    if (this.faces) this.faces.show(item);
    if (this.regions) this.regions.show(item);
    return true;
  }

  renderInfo(m) {
    const rows = [];
    const add = (term, value) => {
      if (value !== null && value !== undefined && value !== "") rows.push(el("dt", {}, term), el("dd", {}, String(value)));
    };
    if (m.match) add("Match", `${MATCH_NAME[m.match]} (${MATCH_HELP[m.match]})`);
    if (typeof m.similarity === "number") add("Similarity", m.similarity.toFixed(3));
    if (Array.isArray(m.region)) add("Matched", "the part framed on the photo");
    add("Folder", m.folder);
    add("Taken", takenText(m));
    add("Camera", m.camera);
    add("Lens", m.lens);
    const exposure = [
      m.exposure_s ? (m.exposure_s >= 1 ? `${m.exposure_s} s` : `1/${Math.round(1 / m.exposure_s)} s`) : "",
      m.f_number ? `f/${m.f_number}` : "",
      m.focal_mm ? `${m.focal_mm} mm` : "",
      m.iso ? `ISO ${m.iso}` : "",
    ].filter(Boolean);
    add("Exposure", exposure.join(" · "));
    add("Size", [m.width && m.height ? `${m.width} × ${m.height}` : "", sizeText(m.size)].filter(Boolean).join(", "));
    if (m.gps) add("Place", `${m.gps.lat.toFixed(5)}, ${m.gps.lon.toFixed(5)}`);
    add("Format", m.format ? m.format.toUpperCase() : "");
    add("Tags", (m.tags || []).slice(0, 5).map((t) => t.label).join(", "));
    this.info.replaceChildren(...rows);
    if (!("folder" in m) && m.doc_id) {
      // A search result carries less than a stored document: ask for the rest.
      const seq = this.seq;
      api(`/api/docs/${encodeURIComponent(m.doc_id)}`).then((doc) => {
        if (seq === this.seq) this.renderInfo({ ...doc, match: m.match, similarity: m.similarity, region: m.region });
      }, () => {});
    }
  }

  async step(delta) {
    if (!this.list) return;
    const next = this.index + delta;
    if (next < 0 || next >= this.list.total) return;
    if (await this.show(this.list, next)) this.actions.moved(this.index, this.item);
  }

  zoom() {
    const on = !this.stage.classList.contains("zoomed");
    this.stage.classList.toggle("zoomed", on);
    $("viewer-zoom").setAttribute("aria-pressed", String(on));
  }

  async remove() {
    const button = $("viewer-remove");
    if (!button.dataset.confirm) {
      button.dataset.confirm = "1";
      button.textContent = "Remove? Press again";
      return;
    }
    if (this.item) await this.actions.remove(this.item);
  }

  onKey(e) {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    if (e.key === "ArrowRight") this.step(1);
    else if (e.key === "ArrowLeft") this.step(-1);
    else if (e.key === "+" || e.key === "=") this.zoom();
    else return;
    e.preventDefault();
  }

  onClose() {
    this.img.removeAttribute("src");
    this.seq++;
    if (this.faces) this.faces.show(null);
    if (this.regions) this.regions.show(null);
    this.actions.closed(this.index);
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  /** A horizontal swipe on the photo goes to the previous or next one (not while zoomed). */
  swipe() {
    let start = null;
    this.stage.addEventListener("pointerdown", (e) => {
      if (!this.stage.classList.contains("zoomed")) start = [e.clientX, e.clientY];
    });
    this.stage.addEventListener("pointerup", (e) => {
      if (!start) return;
      const dx = e.clientX - start[0], dy = e.clientY - start[1];
      start = null;
      if (Math.abs(dx) > SWIPE_PX && Math.abs(dx) > 2 * Math.abs(dy)) this.step(dx < 0 ? 1 : -1);
    });
    this.stage.addEventListener("pointercancel", () => (start = null));
  }
}
