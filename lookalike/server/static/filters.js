// Filters beside browsing and searching: date range, folder (a tree opened a level at a time),
// camera, place (around a photo's own position), orientation, format and, in a workspace with
// faces, people. Their state is a URLSearchParams of the API's own filter fields, so it goes into
// every request and the URL as is (person may come more than once: photos with all of them).

import { $, api, el, plural } from "./util.js";

export const FILTER_KEYS = ["taken_after", "taken_before", "folder", "camera", "near", "orientation", "format", "person"];
// Keys that may come more than once.
export const LIST_KEYS = ["person"];

const LABEL = {
  taken_after: "from",
  taken_before: "until",
  folder: "folder",
  camera: "camera",
  near: "near",
  orientation: "",
  format: "",
  person: "person",
};

export class FilterPanel {
  /** onChange(params): the filters changed (a URLSearchParams of filter fields). personName(ref):
   *  how a person filter reads on its chip (a name for an id), if known. */
  constructor(onChange, personName = (ref) => ref) {
    this.onChange = onChange;
    this.personName = personName;
    this.params = new URLSearchParams();
    this.form = $("filters");
    this.chips = $("chips");
    this.folder = $("f-folder");
    this.facets = null;
    this.form.addEventListener("change", (e) => this.fromForm(e.target));
    this.form.addEventListener("submit", (e) => e.preventDefault());
    $("f-clear").addEventListener("click", () => this.set(new URLSearchParams(), true));
    this.chips.addEventListener("click", (e) => {
      const chip = e.target.closest("[data-key]");
      if (!chip) return;
      const next = new URLSearchParams(this.params);
      const kept = next.getAll(chip.dataset.key).filter((v) => v !== chip.dataset.value);
      next.delete(chip.dataset.key);
      if (LIST_KEYS.includes(chip.dataset.key)) for (const v of kept) next.append(chip.dataset.key, v);
      this.set(next, true);
      // Keep the keyboard near: the next chip, or the filters button.
      const chips = this.chips.querySelectorAll("button[data-key]");
      (chips[0] || $("filters-toggle")).focus();
    });
  }

  async loadFacets() {
    try {
      this.facets = await api("/api/facets");
    } catch {
      return; // choices are a convenience: the panel still takes typed values
    }
    const camera = $("f-camera-list");
    camera.replaceChildren(...this.facets.cameras.map((c) => el("option", { value: c.name }, `${c.name} (${c.photos})`)));
    const format = $("f-format");
    const have = new Map(this.facets.formats.map((f) => [f.format, f.photos]));
    for (const option of format.options) {
      if (!option.value) continue;
      option.hidden = !have.has(option.value) && option.value !== this.params.get("format");
      option.textContent = `${option.value.toUpperCase()}${have.has(option.value) ? ` (${have.get(option.value)})` : ""}`;
    }
    this.foldersFor = null; // the counts may have changed: list the folders again
    this.fillFolders();
  }

  /** The folder list: the chosen folder's parent chain, the folder, and the folders below it. */
  async fillFolders() {
    const chosen = this.params.get("folder");
    const key = `${chosen}|${Boolean(this.facets)}`;
    if (key === this.foldersFor) return; // already listed (or being listed) for this folder
    this.foldersFor = key;
    let below = this.facets ? this.facets.folders : [];
    if (chosen) {
      try {
        below = (await api(`/api/folders?${new URLSearchParams({ parent: chosen })}`)).folders;
      } catch {
        below = [];
      }
      if (key !== this.foldersFor) return; // another folder was chosen meanwhile
    }
    const options = [el("option", { value: "" }, "Every folder")];
    if (chosen) {
      const roots = this.facets ? this.facets.folders.map((f) => f.path) : [];
      const parent = chosen.replace(/\/[^/]*$/, "") || "/";
      if (!roots.includes(chosen)) options.push(el("option", { value: parent }, `↑ ${parent}`));
      options.push(el("option", { value: chosen, selected: true }, chosen));
    }
    for (const f of below) {
      const name = chosen ? `  └ ${f.path.slice(chosen.length + 1)}` : f.name;
      options.push(el("option", { value: f.path }, `${name} (${f.photos.toLocaleString()})`));
    }
    this.folder.replaceChildren(...options);
    this.folder.value = chosen || "";
  }

  /** The people to choose from (a workspace with faces): [{id, label}], the most photos first. */
  setPeople(people) {
    this.people = people;
    this.fillPeople();
    this.renderChips();
  }

  fillPeople() {
    const select = $("f-person");
    const people = this.people || [];
    const chosen = this.params.get("person") || "";
    const options = [el("option", { value: "" }, "Anyone")];
    for (const p of people) options.push(el("option", { value: String(p.id) }, p.label));
    if (chosen && !people.some((p) => String(p.id) === chosen)) options.push(el("option", { value: chosen }, this.personName(chosen)));
    select.replaceChildren(...options);
    select.value = chosen;
  }

  fromForm(target) {
    const next = new URLSearchParams(this.params);
    const put = (key, value) => (value ? next.set(key, value) : next.delete(key));
    if (target.name === "km") {
      const near = (this.params.get("near") || "").split(",");
      if (near.length === 3 && Number(target.value) > 0) put("near", `${near[0]},${near[1]},${Number(target.value)}`);
    } else if (FILTER_KEYS.includes(target.name)) put(target.name, target.value.trim());
    this.set(next, true);
  }

  /** Take these filters (from the URL, a chip, the form); `changed`: tell the page. */
  set(params, changed = false) {
    const next = new URLSearchParams();
    for (const key of FILTER_KEYS) {
      const values = LIST_KEYS.includes(key) ? new Set(params.getAll(key)) : [params.get(key)];
      for (const value of values) if (value) next.append(key, value);
    }
    const same = next.toString() === this.params.toString();
    this.params = next;
    this.toForm();
    this.renderChips();
    if (changed && !same) this.onChange(next);
    return !same;
  }

  toForm() {
    for (const key of ["taken_after", "taken_before", "camera", "orientation", "format"]) {
      const input = this.form.elements.namedItem(key);
      if (input) input.value = this.params.get(key) || "";
    }
    const near = this.params.get("near");
    $("f-near").hidden = !near;
    if (near) {
      const [lat, lon, km] = near.split(",");
      $("f-near-at").textContent = `${Number(lat).toFixed(4)}, ${Number(lon).toFixed(4)}`;
      this.form.elements.namedItem("km").value = km;
    }
    this.fillFolders();
    this.fillPeople();
    const n = FILTER_KEYS.reduce((n, k) => n + this.params.getAll(k).filter(Boolean).length, 0);
    $("filters-toggle").textContent = n ? `Filters (${n})` : "Filters";
  }

  renderChips() {
    const chips = [];
    for (const [key, value] of this.params) {
      if (!value) continue;
      let text = value;
      if (key === "near") {
        const [lat, lon, km] = value.split(",");
        text = `${km} km of ${Number(lat).toFixed(3)}, ${Number(lon).toFixed(3)}`;
      } else if (key === "format") text = value.toUpperCase();
      else if (key === "person") text = this.personName(value);
      chips.push(
        el(
          "button",
          { type: "button", className: "chip", dataset: { key, value }, "aria-label": `Remove filter ${LABEL[key]} ${text}`.replace("  ", " ") },
          LABEL[key] ? el("span", { className: "chip-key" }, LABEL[key] + " ") : null,
          text,
          el("span", { "aria-hidden": "true", className: "chip-x" }, " ×"),
        ),
      );
    }
    this.chips.replaceChildren(...chips);
    this.chips.hidden = !chips.length;
  }

  /** Photos near a photo's own position (a radius of 1 km to start with); false if that filter
   *  was already the one in effect. */
  near(gps, km = 1) {
    const next = new URLSearchParams(this.params);
    next.set("near", `${gps.lat.toFixed(6)},${gps.lon.toFixed(6)},${km}`);
    return this.set(next, true);
  }

  get active() {
    return FILTER_KEYS.some((k) => this.params.get(k));
  }

  /** The people filtered on (ids or names, as the URL has them). */
  get persons() {
    return this.params.getAll("person");
  }

  /** "N of M photos" for what the filters keep. */
  static countText(kept, all) {
    return kept === all ? plural(all, "photo") : `${kept.toLocaleString()} of ${plural(all, "photo")}`;
  }
}
