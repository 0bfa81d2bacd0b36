// Shared by every view: building elements, talking to the server, wording numbers. Every string
// from the server goes into the page as text (textContent, attributes), never as HTML.

export const $ = (id) => document.getElementById(id);

/** Build an element: el("a", {href: u, className: "x"}, "text", child). Strings become text nodes. */
export function el(tag, props = {}, ...children) {
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

export class ApiError extends Error {
  constructor(type, message, status) {
    super(message);
    this.type = type;
    this.status = status;
  }
}

/** fetch + JSON; a non-2xx answer throws ApiError with the server's {"error": {type, message}}. */
export async function api(path, options = {}) {
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

/** POST a JSON body (writes: the server checks their Origin; the page's own pass). */
export const postJson = (path, body, options = {}) =>
  api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
    ...options,
  });

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const plural = (n, one, many = one + "s") => `${n.toLocaleString()} ${n === 1 ? one : many}`;
export const pct = (p) => (p >= 0.995 ? "100%" : p < 0.01 ? "<1%" : `${Math.round(p * 100)}%`);
export const fileName = (m) => m.name || (m.uri || m.doc_id).split(/[\\/]/).pop();

// Thumbnails come in a few sizes, so that the server's cache and the browser's serve every view.
const THUMB_SIZES = [128, 256, 512, 1024];

/** The thumbnail of a document for a box of `cssPx` pixels on this screen (its longer side). */
export function thumbUrl(docId, cssPx) {
  const want = cssPx * (window.devicePixelRatio || 1);
  const size = THUMB_SIZES.find((s) => s >= want) || THUMB_SIZES[THUMB_SIZES.length - 1];
  return `/api/docs/${encodeURIComponent(docId)}/thumbnail?size=${size}`;
}

export const MATCH_NAME = { same: "same", near_duplicate: "near-duplicate", similar: "similar", weak: "weak" };
export const MATCH_HELP = {
  same: "the same picture (re-encoded or resized)",
  near_duplicate: "the same picture, edited (cropped, rotated, recoloured)",
  similar: "alike, by this collection's standards",
  weak: "only weakly alike: below this collection's bar for similar",
};

const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
  "October", "November", "December"];

/** "2024-06" as "June 2024" (short: "Jun 2024"). */
export function monthName(month, short = false) {
  const [y, m] = month.split("-").map(Number);
  const name = MONTHS[m - 1] || month;
  return `${short ? name.slice(0, 3) : name} ${y}`;
}

/** The last day of a "YYYY-MM" month, as YYYY-MM-DD. */
export function monthEnd(month) {
  const [y, m] = month.split("-").map(Number);
  const last = new Date(Date.UTC(y, m, 0)).getUTCDate();
  return `${month}-${String(last).padStart(2, "0")}`;
}

/** A date taken as the photo's own clock read it: "2024-06-01T14:03:00" -> "1 June 2024, 14:03". */
export function takenText(m) {
  if (!m.taken_at) return "";
  const [day, time = ""] = m.taken_at.split("T");
  const [y, mo, d] = day.split("-").map(Number);
  const when = `${d} ${MONTHS[mo - 1] || mo} ${y}${time ? ", " + time.slice(0, 5) : ""}`;
  return m.taken_from === "exif" ? when : `${when} (file date)`;
}

export function sizeText(bytes) {
  if (typeof bytes !== "number") return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** An announcement for screen readers and a visible line: the page's one status. */
export function announce(text) {
  const status = $("status");
  status.textContent = text;
}

/** Where an image's picture lies inside its element (object-fit: contain), relative to its offset
 *  parent; null until it has loaded. */
function pictureRect(img) {
  const nw = img.naturalWidth, nh = img.naturalHeight;
  if (!nw || !nh || !img.complete) return null;
  const bw = img.offsetWidth, bh = img.offsetHeight;
  const s = Math.min(bw / nw, bh / nh);
  const w = nw * s, h = nh * s;
  return { left: img.offsetLeft + (bw - w) / 2, top: img.offsetTop + (bh - h) / 2, width: w, height: h };
}

/** Lay ``layer`` exactly over ``img``'s picture (boxes drawn in it then use the picture's own
 *  coordinates); the picture's rect, or null (the layer left as it was) until it has loaded. */
export function overPicture(layer, img) {
  const rect = pictureRect(img);
  if (rect) {
    const { left, top, width, height } = rect;
    Object.assign(layer.style, { left: `${left}px`, top: `${top}px`, width: `${width}px`, height: `${height}px` });
  }
  return rect;
}

