"""What `lookalike eval` draws: a plot of its figures, and a contact sheet of its worst queries."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from lookalike.errors import BadInput, ConfigError
from lookalike.evaluate import EvalResult
from lookalike.images import decode


def check_can_plot() -> None:
    """A one-line error naming the extra when matplotlib (the ``plot`` extra) is missing: checked
    before an evaluation starts, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ConfigError("--plot needs matplotlib: pip install 'lookalike[plot]'") from e


def write_plot(result: EvalResult, path: str | os.PathLike) -> None:
    """A PNG: per-class P@10 bars, and one bar per transform when robustness was measured."""
    check_can_plot()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = sorted(result.per_class(), key=lambda c: (c.precision.get(10, 0.0), c.label))
    height = max(3.0, 0.8 + 0.24 * len(classes))
    fig = Figure(figsize=(11 if result.robustness else 7.5, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_rob = None
    if result.robustness is not None:
        # The robustness bars keep a readable height however many classes stretch the figure.
        rob_height = min(height, 4.5)
        grid = fig.add_gridspec(2, 2, width_ratios=[3, 2], height_ratios=[rob_height, max(height - rob_height, 1e-3)])
        ax, ax_rob = fig.add_subplot(grid[:, 0]), fig.add_subplot(grid[0, 1])
    else:
        ax = fig.add_subplot(1, 1, 1)
    p10 = [c.precision.get(10, 0.0) for c in classes]
    ax.barh(range(len(classes)), p10, color="#4c72b0")
    ax.set_yticks(range(len(classes)), [f"{c.label} ({c.images})" for c in classes], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(classes) - 0.4)
    ax.set_xlabel("P@10 (leave-one-out)")
    m = result.metrics()
    ax.set_title(
        f"{result.encoder}: {len(result.paths)} images, {len(classes)} classes\n"
        f"P@1 {m['p_at_1']:.3f}  P@10 {m['p_at_10']:.3f}  mAP {m['map']:.3f}",
        fontsize=10,
    )
    ax.axvline(m["p_at_10"], color="#444444", linestyle="--", linewidth=1, label="all queries")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    if ax_rob is not None and result.robustness is not None:
        names = list(result.robustness.top1)
        scores = [result.robustness.top1[n] for n in names]
        ax_rob.bar(range(len(names)), scores, color="#dd8452")
        ax_rob.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax_rob.set_ylim(0, 1.1)
        ax_rob.set_ylabel("original ranked first")
        ax_rob.set_title(f"copy detection ({result.robustness.images} images)", fontsize=10)
        for x, s in enumerate(scores):
            ax_rob.text(x, s + 0.01, f"{s:.2f}", ha="center", fontsize=8)
        ax_rob.grid(axis="y", alpha=0.3)
    fig.savefig(os.fspath(path), format="png")


def _thumbnail(path: str, side: int) -> str:
    """A small JPEG of the image as a data: URI (a grey square if it cannot be read any more)."""
    try:
        img = decode(path, draft_size=side).image
    except BadInput:
        img = Image.new("RGB", (side, side), (200, 200, 200))
    img.thumbnail((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _report_rows(result: EvalResult, worst: int, side: int) -> Iterator[str]:
    thumbs: dict[str, str] = {}

    def thumb(path: str) -> str:
        if path not in thumbs:
            thumbs[path] = _thumbnail(path, side)
        return thumbs[path]

    esc = html.escape
    for rank, i in enumerate(result.worst(worst), 1):
        cells = [
            f'<figure class="query"><img src="{thumb(result.paths[i])}" title="{esc(result.paths[i])}">'
            f"<figcaption><b>{esc(result.labels[i])}</b><br>query #{rank}, AP {result.loo.ap[i]:.3f}"
            "</figcaption></figure>"
        ]
        for j, score in zip(result.loo.top[i], result.loo.top_scores[i], strict=True):
            ok = result.labels[j] == result.labels[i]
            mark = "&#10003;" if ok else "&#10007;"
            cells.append(
                f'<figure class="{"ok" if ok else "bad"}"><img src="{thumb(result.paths[j])}" '
                f'title="{esc(result.paths[j])}"><figcaption>{mark} {esc(result.labels[j])}<br>{score:.3f}'
                "</figcaption></figure>"
            )
        yield '<div class="row">' + "".join(cells) + "</div>"


def write_report(result: EvalResult, path: str | os.PathLike, worst: int = 24, thumb_side: int = 120) -> int:
    """A self-contained HTML contact sheet of the ``worst`` queries (lowest AP), each with its
    top 5; thumbnails are embedded as small base64 JPEGs. Returns how many queries it shows."""
    m = result.metrics()
    rows = list(_report_rows(result, worst, thumb_side))
    head = (
        f"{html.escape(result.encoder)} on {html.escape(str(result.root))}: {len(result.paths)} images in "
        f"{len(result.classes)} classes. P@1 {m['p_at_1']:.3f}, P@5 {m['p_at_5']:.3f}, "
        f"P@10 {m['p_at_10']:.3f}, mAP {m['map']:.3f}."
    )
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lookalike eval: the worst queries</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 1.5em; color: #222; }}
.row {{ display: flex; gap: 8px; align-items: flex-start; border-bottom: 1px solid #ddd; padding: 8px 0; }}
figure {{ margin: 0; width: {thumb_side + 8}px; text-align: center; }}
figure img {{ width: {thumb_side}px; height: {thumb_side}px; object-fit: contain; background: #f4f4f4;
  border: 4px solid transparent; }}
figure.query img {{ border-color: #4c72b0; }}
figure.ok img {{ border-color: #2e9e44; }}
figure.bad img {{ border-color: #d33; }}
figure.ok figcaption {{ color: #1d6e2e; }}
figure.bad figcaption {{ color: #b22; }}
figcaption {{ font-size: 11px; overflow-wrap: anywhere; }}
.query {{ margin-right: 16px; }}
</style></head><body>
<h1>The {len(rows)} worst queries</h1>
<p>{head}</p>
<p>Each row: the query (blue), then its 5 nearest other images, &#10003; same label (green) or
&#10007; another label (red), with the cosine similarity. Hover a picture for its path.</p>
{chr(10).join(rows)}
</body></html>
"""
    Path(path).write_text(doc, encoding="utf-8")
    return len(rows)
