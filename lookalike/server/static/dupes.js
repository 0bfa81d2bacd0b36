// Duplicates to review: groups of exact copies and near duplicates (the one definition the badges
// and `lookalike dupes` use), each with a suggested photo to keep that the user can change. The
// others are taken out of the index, or their files moved into a folder (never deleted), which an
// Undo puts back.

import { $, api, el, fileName, plural, postJson, sizeText, thumbUrl } from "./util.js";

export class DupesView {
  /** hooks: notify(message, undo, isError): a line for the status, with Undo when a move can be
   *  undone; changed(): photos left the index or came back; failed(): the groups could not be had. */
  constructor({ notify, changed, failed }) {
    this.notify = notify;
    this.changed = changed;
    this.failed = failed;
    this.root = $("dupes-list");
    this.summary = $("dupes-summary");
    this.groups = [];
    this.root.addEventListener("click", (e) => this.onClick(e));
  }

  async load() {
    this.summary.textContent = "Looking for duplicates…";
    this.root.setAttribute("aria-busy", "true");
    try {
      const found = await api("/api/dupes");
      this.groups = found.groups;
      this.render(found);
      return true;
    } catch (e) {
      this.summary.textContent = "";
      this.notify(e.message, null, true);
      this.failed();
      return false;
    } finally {
      this.root.setAttribute("aria-busy", "false");
    }
  }

  render(found) {
    const redundant = this.groups.reduce((n, g) => n + g.files.length - 1, 0);
    this.summary.textContent = this.groups.length
      ? `${plural(this.groups.length, "group")} of duplicates among ${plural(found.docs, "photo")}: ` +
        `${plural(redundant, "photo")} could go. The suggested photo to keep has the most pixels, then the most ` +
        "camera details, then is the oldest; choose another if you like."
      : `No duplicates among ${plural(found.docs, "photo")}.`;
    if (this.groups.length && document.body.classList.contains("read-only")) {
      this.summary.textContent += " This server is read-only: it shows the groups, and `lookalike dupes` acts on them.";
    }
    this.root.replaceChildren(...this.groups.map((g, n) => this.group(g, n)));
  }

  group(g, n) {
    const title = g.kind === "exact" ? "Exact copies (the same bytes)" : `Near duplicates (similarity ≥ ${g.similarity.toFixed(2)})`;
    const files = g.files.map((f) => {
      const name = fileName(f);
      const id = `keep-${n}-${f.doc_id}`;
      return el(
        "li",
        { className: "dupe-file", dataset: { id: f.doc_id } },
        el("img", { src: thumbUrl(f.doc_id, 160), alt: name, loading: "lazy", decoding: "async" }),
        el(
          "div",
          { className: "dupe-meta" },
          el("input", { type: "radio", name: `keep-${n}`, id, value: f.doc_id, checked: f.doc_id === g.keep }),
          el("label", { for: id }, el("span", { className: "dupe-name", title: f.path || name }, name)),
          el(
            "span",
            { className: "hint" },
            [f.width && f.height ? `${f.width}×${f.height}` : "", sizeText(f.bytes), f.taken ? f.taken.slice(0, 10) : ""]
              .filter(Boolean)
              .join(" · "),
          ),
        ),
      );
    });
    const folderId = `move-to-${n}`;
    return el(
      "section",
      { className: "dupe-group", dataset: { group: String(n) }, "aria-labelledby": `dupe-title-${n}` },
      el("h3", { id: `dupe-title-${n}` }, `${title}: ${plural(g.files.length, "photo")}`),
      el("fieldset", {}, el("legend", { className: "visually-hidden" }, "The photo to keep"), el("ol", { className: "dupe-files" }, ...files)),
      el(
        "div",
        { className: "dupe-actions" },
        el("button", { type: "button", className: "dupe-remove", dataset: { group: String(n) } }, "Remove the others from the index"),
        el("label", { for: folderId }, "or move their files to"),
        el("input", { id: folderId, className: "dupe-folder", type: "text", value: "duplicates", spellcheck: "false",
          autocapitalize: "none", "aria-describedby": "dupes-folder-help" }),
        el("button", { type: "button", className: "dupe-move", dataset: { group: String(n) } }, "Move"),
      ),
    );
  }

  /** The group's files other than the one chosen to keep. */
  others(n) {
    const section = this.root.querySelector(`[data-group="${n}"]`);
    const keep = section.querySelector("input[type=radio]:checked");
    return this.groups[n].files.map((f) => f.doc_id).filter((id) => !keep || id !== keep.value);
  }

  async onClick(e) {
    const button = e.target.closest("button[data-group]");
    if (!button) return;
    const n = Number(button.dataset.group);
    const ids = this.others(n);
    button.disabled = true;
    try {
      if (button.classList.contains("dupe-remove")) {
        const done = await postJson("/api/remove", { doc_ids: ids });
        this.notify(`Took ${plural(done.removed, "photo")} out of the index; the files are where they were.`);
      } else {
        const folder = button.parentElement.querySelector(".dupe-folder").value.trim();
        const batch = await postJson("/api/dupes/move", { doc_ids: ids, folder });
        const moved = batch.moves;
        const to = moved.length ? moved[0].to.replace(/\/[^/]*$/, "") : folder;
        this.notify(`Moved ${plural(moved.length, "file")} to ${to}.`, () => this.undo(batch.batch));
      }
      this.changed();
      await this.load();
      const next = this.root.querySelector(`[data-group="${Math.min(n, this.groups.length - 1)}"] button`);
      (next || $("nav-dupes")).focus();
    } catch (err) {
      button.disabled = false;
      this.notify(err.message, null, true);
    }
  }

  async undo(batch) {
    try {
      const done = await postJson("/api/dupes/undo", batch ? { batch } : {});
      const back = done.moves;
      this.notify(`Put ${plural(back.length, "file")} back where they were, and indexed them again.`);
      this.changed();
      if (!this.root.closest("[hidden]")) await this.load();
    } catch (err) {
      this.notify(err.message, null, true);
    }
  }
}
