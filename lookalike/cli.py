"""The `lookalike` command: index a folder of photos, then find images like a given one.

Every command maps its flags to the library's options and requests (:mod:`lookalike.library`),
and renders what the library reports; nothing here searches, indexes or measures by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from lookalike.atomic import atomic_write
from lookalike.document import Document, display_path
from lookalike.errors import BadInput, LookalikeError
from lookalike.filters import Filters
from lookalike.metadata import FORMAT_NAMES
from lookalike.relevance import NEAR_DUPLICATE_FLOOR
from lookalike.settings import SETTINGS, Options, markdown_table, parse_bytes, raw_value, setting

if TYPE_CHECKING:
    from lookalike.dupes import DupeReport
    from lookalike.library import Hit, IndexReport, InfoReport, Library, SearchReport
    from lookalike.library.moving import MoveReport
    from lookalike.store.moves import MoveBatch
    from lookalike.watch import WatchBatch

app = typer.Typer(
    name="lookalike",
    help="Neural image search for a folder of photos, offline: index it, then find images like a given one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
flow_app = typer.Typer(help="Inspect flow YAML files.", no_args_is_help=True)
app.add_typer(flow_app, name="flow")
datasets_app = typer.Typer(help="Sample photo datasets with labels, cached locally.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
executor_app = typer.Typer(
    help="Run one executor as a network service, for a flow's pods to call.", no_args_is_help=True
)
app.add_typer(executor_app, name="executor")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class MinMatch(str, Enum):
    same = "same"
    near_duplicate = "near_duplicate"
    similar = "similar"
    weak = "weak"


LEVEL_STYLE = {"same": "[bold green]", "near_duplicate": "[green]", "similar": "[cyan]", "weak": "[dim]"}


class Preset(str, Enum):
    default = "default"
    faces = "faces"
    regions = "regions"


class RuntimeKind(str, Enum):
    local = "local"
    ray = "ray"


def setting_option(env: str, *names: str, **kw: Any) -> Any:
    """A typer option for a setting: its flag and help from the settings table. It defaults to None
    (not given), so that the settings, which alone read the environment, fall back on the variable
    and then the default; the help names both."""
    s = setting(env)
    flags = [f for f in (s.flag, *names) if f]
    shown_default = kw.pop("show_default", s.default)
    text = f"{s.help[0].upper()}{s.help[1:]} (env var: {s.env}; default: {shown_default})."
    return typer.Option(*flags, help=text, show_default=False, **kw)


WorkspaceOpt = Annotated[Path | None, setting_option("LOOKALIKE_WORKSPACE", "-w")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
IndexMemoryOpt = Annotated[
    str | None,
    setting_option(
        "LOOKALIKE_INDEX_MEMORY",
        metavar="SIZE",
        show_default=setting("LOOKALIKE_INDEX_MEMORY").default + ", or as remembered",
    ),
]
IndexLatencyOpt = Annotated[
    float | None,
    setting_option(
        "LOOKALIKE_INDEX_LATENCY_MS",
        min=0.1,
        max=10_000,
        show_default=setting("LOOKALIKE_INDEX_LATENCY_MS").default + ", or as remembered",
    ),
]
RuntimeOpt = Annotated[
    RuntimeKind | None, setting_option("LOOKALIKE_RUNTIME", show_default="the flow's own runtime: key, else local")
]
RayAddressOpt = Annotated[str | None, setting_option("LOOKALIKE_RAY_ADDRESS", metavar="HOST:PORT")]
PortOpt = Annotated[int | None, setting_option("LOOKALIKE_PORT", min=1, max=65535)]
HostOpt = Annotated[str, typer.Option(help="Address to listen on; beyond loopback, writes need --token.")]


def options(
    *,
    runtime: RuntimeKind | None = None,
    index_memory: str | None = None,
    **flags: Any,
) -> Options:
    """The options of this command: its flags (those given), then the LOOKALIKE_* variables, then
    the defaults."""
    if index_memory is not None:
        flags["index_memory"] = parse_bytes(index_memory, "--index-memory")
    return Options.from_env(runtime=runtime.value if runtime else None, **flags)


def shown(value: object) -> str:
    """A path (or any value) for rich output: non-UTF-8 bytes escaped, and "[" never read as markup."""
    return escape(display_path(str(value)))


def _open(opts: Options, *, write: bool, reset: bool = False) -> Library:
    from lookalike.library import open as open_library

    return open_library(opts, write=write, reset=reset)


# --- index ---------------------------------------------------------------------------------------


class _ProgressBar:
    """Draws indexing progress on stderr, and reports every skipped file as it happens."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("[bold]indexing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not enabled,
        )
        self.task = self.bar.add_task("index", total=None, rate="")
        self.start = time.perf_counter()
        self.count = 0

    def __enter__(self) -> _ProgressBar:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def planned(self, total: int) -> None:
        self.bar.update(self.task, total=total)
        self.start = time.perf_counter()

    def _advance(self) -> None:
        self.count += 1
        rate = self.count / max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.task, advance=1, rate=f"{rate:.1f} files/s")

    def done(self, doc: Document) -> None:
        self._advance()

    def skipped(self, doc: Document) -> None:
        self._advance()
        self.bar.console.print(f"skipped {display_path(doc.uri or doc.id)}: {doc.error}", markup=False)

    def still_bad(self, path: str, message: str) -> None:
        self.bar.console.print(
            f"skipped {display_path(path)}: {message} (unchanged since it failed before; --retry-skipped reads it "
            "again)",
            markup=False,
        )

    def unusable(self, path: str, message: str) -> None:
        self.bar.console.print(f"skipped {display_path(path)}: {message}", markup=False)

    def note(self, message: str) -> None:
        err.print(f"{message}...", markup=False)


FacesOpt = Annotated[
    bool,
    typer.Option(
        "--faces",
        help="Also find every face and index it in the workspace's faces space, for `search --face`, "
        "`lookalike people` and `--person` (pip install 'lookalike[faces]'). Remembered by the workspace; "
        "a workspace of photos indexed without faces needs --reset to add them.",
    ),
]
RegionsOpt = Annotated[
    bool,
    typer.Option(
        "--regions",
        help="Also index 4 regions of every photo (from the same model pass) in the workspace's regions space, "
        "for searches by a part of a photo (`search --box`). Remembered by the workspace; a workspace of photos "
        "indexed without regions needs --reset to add them.",
    ),
]


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    workspace: WorkspaceOpt = None,
    glob: Annotated[
        str | None, typer.Option(help="Only files matching this pattern, e.g. '*.jpg' or 'birds/*'.")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Index at most N files (nothing is removed).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Documents per request.")] = 16,
    flow: Annotated[Path | None, typer.Option(help="Index flow YAML (default: the built-in one).")] = None,
    query_flow: Annotated[
        Path | None, typer.Option(help="Query flow YAML to remember for `search` on this workspace.")
    ] = None,
    reset: Annotated[
        bool,
        typer.Option(help="Empty the workspace first, forgetting remembered bad files (e.g. to change the encoder)."),
    ] = False,
    retry_skipped: Annotated[
        bool,
        typer.Option(
            "--retry-skipped", help="Read files remembered as undecodable again, even if unchanged since they failed."
        ),
    ] = False,
    preset: Annotated[
        Preset | None,
        typer.Option(
            help="Built-in flows: default (whole photos), faces (whole photos and every face: as --faces) "
            "or regions (whole photos and 4 regions of each: as --regions)."
        ),
    ] = None,
    faces: FacesOpt = False,
    regions: RegionsOpt = False,
    index_memory: IndexMemoryOpt = None,
    index_latency_ms: IndexLatencyOpt = None,
    runtime: RuntimeOpt = None,
    ray_address: RayAddressOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Index images: new and changed files are encoded, unchanged ones skipped, deleted ones removed.

    The vector index follows the collection: exact search while a full scan meets --index-latency-ms,
    then an ANN index (IVF with SQ8 or PQ codes, re-ranked exactly) that fits --index-memory, built in
    the background as the collection grows. The workspace remembers both.

    With --runtime ray the same flow runs on a Ray cluster: every pod replica and shard is an actor
    (the image folders and the workspace must be at the same path on every node)."""
    from lookalike.library import IndexRequest

    opts = options(
        workspace=workspace,
        index_flow=flow,
        query_flow=query_flow,
        preset=_preset(preset, faces=faces, regions=regions),
        index_memory=index_memory,
        index_latency_ms=index_latency_ms,
        runtime=runtime,
        ray_address=ray_address,
    )
    request = IndexRequest(tuple(map(str, paths)), glob, limit, batch_size, retry_skipped)
    with _open(opts, write=True, reset=reset) as library:
        with _ProgressBar(enabled=err.is_terminal) as bar:
            report = library.index(request, progress=bar)
    _print_index_report(report, as_json)


def _preset(preset: Preset | None, *, faces: bool, regions: bool) -> str | None:
    """The preset ``index`` runs: --faces and --regions name theirs."""
    if faces and regions:
        raise typer.BadParameter(
            "a workspace holds faces or regions, not both yet: index one of them", param_hint="--regions"
        )
    flag = "faces" if faces else "regions" if regions else None
    if flag is not None and preset not in (None, Preset(flag)):
        raise typer.BadParameter(
            f"--{flag} is the {flag} preset; leave out --preset {preset.value}", param_hint=f"--{flag}"
        )
    return flag or (preset.value if preset else None)


def _print_index_report(report: IndexReport, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    out.print(
        f"{report.indexed} indexed, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.removed} removed, {report.moved} moved, {report.skipped_total} skipped "
        f"in {report.seconds:.1f}s ({report.files_per_second:.1f} files/s); "
        f"workspace {shown(report.workspace)} holds {report.docs} images"
    )
    if report.without_vectors:
        out.print(f"{report.without_vectors} of them indexed without vectors (nothing to embed)")
    if report.set_aside:
        out.print(f"{report.set_aside} files left out: moved as duplicates (`lookalike dupes --undo` puts them back)")
    if report.people is not None and (report.people.new_faces or report.people.gone_faces):
        g = report.people
        out.print(
            f"faces: {g.new_faces} new, {g.gone_faces} gone, {g.assigned} given a person; "
            f"{g.people} {'person' if g.people == 1 else 'people'} (`lookalike people`)"
        )
    if report.skipped:
        out.print("skipped: " + ", ".join(f"{n} {reason}" for reason, n in report.skipped.items()), markup=False)


# --- search --------------------------------------------------------------------------------------


LikeOpt = Annotated[
    str | None,
    typer.Option(
        "--like",
        metavar="PATH_OR_ID",
        help="Search for more like an indexed photo (its path, or its document id), by its stored vectors; "
        "the photo itself is left out of the results.",
    ),
]
TagOpt = Annotated[
    str | None,
    typer.Option(
        "--tag",
        help="Search by tag instead of by image: a word like dog, bird, fruit or vehicle finds every "
        "ImageNet class under it in WordNet, ranked by summed probability; other text matches inside labels.",
    ),
]
FaceOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Search by a face of the query photo (0 = the largest) among the indexed faces, instead of by the "
        "whole photo (a workspace indexed with --faces).",
    ),
]
BoxOpt = Annotated[
    str | None,
    typer.Option(
        metavar="X0,Y0,X1,Y1",
        help="Search by a part of the query photo: its box as fractions of the width and height "
        "(0,0 is the top left; 0.5,0,1,0.5 the top right quarter). Each result says which part of it matched "
        "(a workspace indexed with --regions).",
    ),
]
# --- filters: the same on every search and listing ---------------------------------------------------

FILTERS_PANEL = "Filters (every result meets each one given)"


class OrientationChoice(str, Enum):
    landscape = "landscape"
    portrait = "portrait"
    square = "square"


FormatChoice = Enum("FormatChoice", {name: name for name in FORMAT_NAMES}, type=str)  # type: ignore[misc]

TakenAfterOpt = Annotated[
    str | None,
    typer.Option(
        "--taken-after",
        metavar="DATE",
        help="Photos taken on or after this day (YYYY-MM-DD, their local date; without an EXIF date, their file's).",
        rich_help_panel=FILTERS_PANEL,
    ),
]
TakenBeforeOpt = Annotated[
    str | None,
    typer.Option(
        "--taken-before", metavar="DATE", help="Photos taken on or before this day.", rich_help_panel=FILTERS_PANEL
    ),
]
CameraOpt = Annotated[
    str | None,
    typer.Option(
        metavar="TEXT",
        help="Text in the camera's make or model, any case (iphone, 'canon eos').",
        rich_help_panel=FILTERS_PANEL,
    ),
]
NearOpt = Annotated[
    str | None,
    typer.Option(
        metavar="LAT,LON,KM", help="Within KM kilometres of a place (48.858,2.294,5).", rich_help_panel=FILTERS_PANEL
    ),
]
FolderOpt = Annotated[
    list[Path] | None,
    typer.Option(metavar="PATH", help="In this folder or below it; repeat for several.", rich_help_panel=FILTERS_PANEL),
]
OrientationOpt = Annotated[
    OrientationChoice | None,
    typer.Option(help="Wider than high, higher than wide, or square.", rich_help_panel=FILTERS_PANEL),
]
FormatOpt = Annotated[
    FormatChoice | None,
    typer.Option("--format", help="The file's format.", rich_help_panel=FILTERS_PANEL),
]
PersonOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--person",
        metavar="NAME_OR_ID",
        help="With this person in the photo (`lookalike people` lists them); repeat: with every one of them.",
        rich_help_panel=FILTERS_PANEL,
    ),
]


def _filters(
    taken_after: str | None,
    taken_before: str | None,
    camera: str | None,
    near: str | None,
    folder: list[Path] | None,
    orientation: OrientationChoice | None,
    fmt: Enum | None,
    person: list[str] | None = None,
) -> Filters:
    """The filter flags as one :class:`Filters`; a bad value is a usage error naming its flag."""
    given = {
        "taken_after": taken_after,
        "taken_before": taken_before,
        "camera": camera,
        "near": near,
        "folder": [str(f) for f in folder] if folder else None,
        "orientation": orientation.value if orientation else None,
        "format": fmt.value if fmt else None,
        "person": person or None,
    }
    try:
        return Filters.from_dict({k: v for k, v in given.items() if v is not None})
    except BadInput as e:
        key = str(e).split(" ", 1)[0].split(".", 1)[0]
        raise typer.BadParameter(str(e), param_hint=f"--{key.replace('_', '-')}") from None


MinMatchOpt = Annotated[
    MinMatch | None,
    typer.Option(
        "--min-match",
        help="Keep only results at this match level or better (same > near_duplicate > similar > weak); "
        "the levels are calibrated on the collection's own scores.",
    ),
]


@app.command()
def search(
    images: Annotated[list[Path] | None, typer.Argument(help="Query image(s).", show_default=False)] = None,
    like: LikeOpt = None,
    tag: TagOpt = None,
    workspace: WorkspaceOpt = None,
    k: Annotated[int | None, setting_option("LOOKALIKE_TOP_K", "-k", min=1, max=1000)] = None,
    flow: Annotated[
        Path | None, typer.Option(help="Query flow YAML (default: the workspace's, else built-in).")
    ] = None,
    preset: Annotated[Preset | None, typer.Option(help="Built-in query flow (default: the workspace's).")] = None,
    face: FaceOpt = None,
    box: BoxOpt = None,
    min_match: MinMatchOpt = None,
    runtime: RuntimeOpt = None,
    ray_address: RayAddressOpt = None,
    as_json: JsonOpt = False,
    taken_after: TakenAfterOpt = None,
    taken_before: TakenBeforeOpt = None,
    camera: CameraOpt = None,
    near: NearOpt = None,
    folder: FolderOpt = None,
    orientation: OrientationOpt = None,
    fmt: FormatOpt = None,
    person: PersonOpt = None,
) -> None:
    """Find the indexed images most like each query image (or like an indexed one, with --like), or
    (with --tag) those tagged with a word; with filters, the best among the photos they keep.

    Every result is labelled with its match level: same (the same picture, re-encoded or resized),
    near_duplicate (the same picture, edited), similar, or weak.
    """
    from lookalike.library import SearchRequest

    _check_search_flags(images, like, tag, min_match=min_match, face=face, box=box, flow=flow)
    if box is not None and face is not None:
        raise typer.BadParameter(
            "search by a face (--face) or by a part of the photo (--box), not both", param_hint="--box"
        )
    query_box = _box(box)
    filters = _filters(taken_after, taken_before, camera, near, folder, orientation, fmt, person)
    opts = options(
        workspace=workspace,
        top_k=k,
        query_flow=flow,
        preset=preset.value if preset else None,
        runtime=runtime,
        ray_address=ray_address,
    )
    level = min_match.value if min_match else None
    if tag is not None:
        requests = [SearchRequest(tag=tag, filters=filters)]
    elif like is not None:
        requests = [SearchRequest(like=like, face=face, box=query_box, min_match=level, filters=filters)]  # type: ignore[arg-type]
    else:
        requests = [
            SearchRequest(image=str(i), face=face, box=query_box, min_match=level, filters=filters)  # type: ignore[arg-type]
            for i in images or []
        ]
    with _open(opts, write=False) as library:
        reports = library.search_many(requests)
    if as_json:
        _print_search_json(reports)
    else:
        for report in reports:
            _print_search_text(report, heading=len(reports) > 1)


@app.command()
def explain(
    query: Annotated[
        str,
        typer.Argument(
            metavar="QUERY",
            help="The query: an image file, or an indexed photo (its path or document id).",
            show_default=False,
        ),
    ],
    result: Annotated[
        str,
        typer.Argument(
            metavar="RESULT", help="A result: an indexed photo (its path or document id).", show_default=False
        ),
    ],
    workspace: WorkspaceOpt = None,
    box: BoxOpt = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="PNG", help="Write both pictures side by side, each with its heat map, to this PNG."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Why RESULT matched QUERY: which parts of each picture make them alike.

    Each cell of the 7 x 7 grid the model sees is greyed out in turn; its heat is how much the
    similarity falls without it (1 = the cell that matters most). With --box, the query is that part
    of QUERY and the result's best region (a workspace indexed with --regions)."""
    from lookalike.library import ExplainRequest

    opts = options(workspace=workspace)
    query_box = _box(box)
    with _open(opts, write=False) as library:
        as_file = os.path.isfile(query)
        request = ExplainRequest(
            result, image=query if as_file else None, like=None if as_file else query, box=query_box
        )
        explanation = library.explain(request)
    if out_file is not None:
        try:
            atomic_write(out_file, explanation.png())
        except OSError as e:
            raise LookalikeError(f"cannot write {display_path(str(out_file))}: {e.strerror or e}") from e
    if as_json:
        out.print_json(data=explanation.to_dict() | ({"out": str(out_file)} if out_file else {}))
        return
    out.print(
        f"similarity {explanation.score:.3f} ({'query box against its best region' if query_box else 'whole photos'})"
    )
    for name, grid in (("result", explanation.heat), ("query", explanation.query_heat)):
        out.print(f"[bold]{name}[/bold] heat, 7 x 7 cells of the part the model sees (# hottest):")
        for row in grid:
            out.print("  " + " ".join(_heat_char(v) for v in row))
    if explanation.region is not None:
        out.print("matched region of the result: " + ",".join(f"{v:.3f}" for v in explanation.region))
    if out_file is not None:
        err.print(f"wrote {display_path(str(out_file))}")


def _heat_char(v: float) -> str:
    return " .:-=+*#"[min(7, int(v * 8))]


def _box(text: str | None) -> tuple[float, float, float, float] | None:
    """--box as the library's box; a usage error says what is wrong with it."""
    from lookalike.library.types import check_box

    if text is None:
        return None
    try:
        return check_box(text)
    except BadInput as e:
        raise typer.BadParameter(str(e), param_hint="--box") from None


def _check_search_flags(images: list[Path] | None, like: str | None, tag: str | None, **others: Any) -> None:
    """One way to start a search, and only the options it can use."""
    starts = [
        name
        for name, given in (("IMAGES", bool(images)), ("--like", like is not None), ("--tag", tag is not None))
        if given
    ]
    if len(starts) != 1:
        what = "give query images, --like PATH_OR_ID or --tag WORD"
        raise typer.BadParameter(what + (f", not {' and '.join(starts)}" if starts else ""), param_hint="IMAGES")
    if tag is not None:
        given = [f"--{n.replace('_', '-')}" for n, v in others.items() if v is not None]
        if given:  # a tag search runs no query flow and has no similarity to label
            raise typer.BadParameter(f"{', '.join(given)} cannot be used with --tag", param_hint="--tag")


def _hit_dict(rank: int, hit: Hit) -> dict[str, Any]:
    return {"rank": rank, "path": display_path(hit.path) if hit.path else None} | hit.to_dict()


def _print_search_json(reports: list[SearchReport]) -> None:
    payload = []
    for report in reports:
        entry: dict[str, Any] = {
            "query": report.query,
            "weak": report.weak,
            "total": report.total,
            "total_exact": report.total_exact,
            "results": [_hit_dict(i + 1, h) for i, h in enumerate(report.hits)],
        }
        if report.request.tag is not None:
            entry = {
                "tag": report.request.tag,
                "concept": report.concept.to_dict() if report.concept else None,
                "total": report.total,
                "results": [_hit_dict(i + 1, h) | {"score": round(h.score, 4)} for i, h in enumerate(report.hits)],
            }
        payload.append(entry)
    out.print_json(json.dumps(payload if len(payload) > 1 else payload[0]))


def _print_search_text(report: SearchReport, heading: bool) -> None:
    request = report.request
    if request.tag is not None:
        _print_tag_text(report)
        return
    if heading:
        out.print(f"[bold]{escape(report.query)}[/bold]")
    if report.hits and report.weak:
        out.print("[yellow]nothing indexed is really like it: even the best match is weak[/yellow]")
    if report.total is not None and report.hits:
        total = f"{report.total:,}" + ("" if report.total_exact else "+")
        out.print(f"[dim]{total} at {request.min_match} or better; showing {len(report.hits):,}[/dim]")
    if not report.hits:
        out.print(
            f"no results at {request.min_match} or better"
            if request.min_match
            else "no results: no indexed photo meets the filters"
            if request.filters.active
            else "no results: nothing else is indexed"
            if request.like is not None
            else "no results: the workspace is empty"
        )
    for i, hit in enumerate(report.hits, 1):
        level = f"{LEVEL_STYLE.get(hit.match or '', '')}{hit.match or '':<14}[/]" if hit.match else ""
        path = escape(display_path(hit.path or ""))
        if hit.distance is not None:  # faces: Euclidean distance, lower is closer; under 0.6 is the same person
            box = f"face at {','.join(map(str, hit.bbox))}" if hit.bbox else ""
            out.print(f"{i:3d}  distance {hit.distance:.3f}  {level} {path}  [dim]{box}[/dim]")
        else:
            tags = ", ".join(f"{t} {p:.0%}" for t, p in hit.tags[:3])
            where = f"region {','.join(f'{v:.2f}' for v in hit.region)} · " if hit.region is not None else ""
            line = escape(where + _photo_line(hit.photo, tags))
            out.print(f"{i:3d}  {hit.score:.3f}  {level} {path}  [dim]{line}[/dim]")


def _photo_line(photo: dict[str, Any], tags: str) -> str:
    """A result's day taken and camera, then its tags: the dim tail of a result's line."""
    day = (photo.get("taken_at") or "")[:10] if photo.get("taken_from") == "exif" else ""
    return " · ".join(p for p in (day, photo.get("camera") or "", tags) if p)


def _print_tag_text(report: SearchReport) -> None:
    tag, named = report.request.tag or "", report.concept
    if named is not None:
        out.print(f"[dim]{escape(tag)}: {escape(', '.join(named.names[:4]))} ({named.classes} ImageNet classes)[/dim]")
    if not report.hits:
        out.print(f"no indexed image is tagged {escape(tag)!r}")
    elif report.total is not None:
        out.print(f"[dim]{report.total:,} photos tagged {escape(tag)!r}; showing {len(report.hits):,}[/dim]")
    for i, hit in enumerate(report.hits, 1):
        tags = ", ".join(f"{t} {p:.0%}" for t, p in hit.tags[:3])
        shown = escape(display_path(hit.path or ""))
        out.print(f"{i:3d}  {hit.score:.3f}  {shown}  [dim]{escape(_photo_line(hit.photo, tags))}[/dim]")


# --- info / remove -------------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@app.command()
def info(
    workspace: WorkspaceOpt = None,
    recall: Annotated[
        bool,
        typer.Option(
            "--recall",
            help="Measure each ANN shard's recall@10 against exact search now, on 200 of its vectors "
            "(reads every stored vector once), instead of showing the figure measured when it was built.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show what a workspace holds: documents, chunks, shards and their vector index (type, memory,
    measured recall@10), encoder, size on disk, and whether the store and the shards agree."""
    with _open(options(workspace=workspace), write=False) as library:
        report = library.info(recall=recall)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    _print_info(report)


def _print_info(report: InfoReport) -> None:
    i, problems = report.info, report.problems or []
    table = Table(show_header=False, box=None)
    table.add_row("workspace", shown(i.path))
    table.add_row("documents", str(i.docs))
    table.add_row("chunks", str(i.chunks))
    for name, space in i.spaces.items():
        table.add_row(f"{name} vectors", f"{space.dim}-d {space.metric}, {space.shards} shards, {space.encoder or '-'}")
    table.add_row("shards", ", ".join(f"#{k}: {v} vectors" for k, v in i.shards.items()))
    for x in i.indexes:
        if x["type"] == "flat":
            what = f"exact (Flat), {_size(x['memory_bytes'])}"
        else:
            shown_recall = f"{x['recall_at_10']:.3f}" if x["recall_at_10"] is not None else "-"
            what = (
                f"{x['type']} ({x['factory']}, nprobe {x['nprobe']}), {_size(x['memory_bytes'])}, "
                f"recall@10 {shown_recall} on {x['recall_queries']} held-out queries"
            )
        if x["building"]:
            what += "; a new index is being built"
        table.add_row(f"index #{x.get('label', x['shard'])}", what)
    table.add_row(
        "index budget",
        f"{_size(i.budget.memory_bytes)}, {i.budget.latency_ms:g} ms a query (--index-memory, --index-latency-ms)",
    )
    table.add_row("preset", i.preset)
    table.add_row("size on disk", _size(i.size_bytes))
    table.add_row("consistency", "ok" if not problems else "; ".join(problems))
    out.print(table)


class SortChoice(str, Enum):
    taken = "taken"
    indexed = "indexed"
    name = "name"
    size = "size"


@app.command("list")
def list_command(
    workspace: WorkspaceOpt = None,
    sort: Annotated[
        SortChoice, typer.Option(help="By date taken, date indexed, path (name) or file size.")
    ] = SortChoice.taken,
    desc: Annotated[bool, typer.Option("--desc", help="Newest, last or largest first.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Photos on this page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Start where the page that printed this cursor ended.")] = None,
    as_json: JsonOpt = False,
    taken_after: TakenAfterOpt = None,
    taken_before: TakenBeforeOpt = None,
    camera: CameraOpt = None,
    near: NearOpt = None,
    folder: FolderOpt = None,
    orientation: OrientationOpt = None,
    fmt: FormatOpt = None,
    person: PersonOpt = None,
) -> None:
    """Browse the indexed photos, a page at a time: with filters, those they keep, and how many in all.

    Example: lookalike list --camera iphone --taken-after 2024-06-01 --sort taken --desc
    """
    from lookalike.library import ListRequest

    filters = _filters(taken_after, taken_before, camera, near, folder, orientation, fmt, person)
    request = ListRequest(filters, sort.value, desc, limit, cursor)
    with _open(options(workspace=workspace), write=False) as library:
        report = library.list(request)
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    table = Table("taken", "camera", "size", "path", box=None, header_style="dim")
    for doc in report.docs:
        meta = doc.meta
        taken = (meta.taken_at or "").replace("T", " ")[:16] + ("" if meta.taken_from == "exif" else " (file)")
        size = f"{doc.width}x{doc.height}" if doc.width else ""
        table.add_row(taken, escape(meta.camera or ""), size, escape(display_path(doc.uri or doc.id)))
    if report.docs:
        out.print(table)
    shown = f"{len(report.docs):,} of {report.total:,} photo{'s' if report.total != 1 else ''}"
    out.print(
        f"[dim]{shown}" + (f"; next page: --cursor {report.next_cursor}" if report.next_cursor else "") + "[/dim]"
    )


@app.command()
def remove(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to take out of the index.")],
    workspace: WorkspaceOpt = None,
    runtime: RuntimeOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Remove files (or every file under folders) from the index. The files themselves stay."""
    opts = options(workspace=workspace, runtime=runtime, ray_address=ray_address)
    with _open(opts, write=True) as library:
        n = library.remove(paths)
    out.print(f"removed {n} image{'s' if n != 1 else ''} from {shown(opts.workspace)}")


# --- watch ---------------------------------------------------------------------------------------


class _WatchStopped(BaseException):
    """A stop signal that came while an index run was in flight: it abandons the run (the index is
    crash-consistent; the next start's reconcile scan finishes the job)."""


@app.command()
def watch(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Folders to watch (default: the workspace's indexed folders).")
    ] = None,
    workspace: WorkspaceOpt = None,
    glob: Annotated[
        str | None, typer.Option(help="Only files matching this pattern, e.g. '*.jpg' or 'birds/*'.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Documents per request.")] = 16,
    settle: Annotated[float | None, setting_option("LOOKALIKE_WATCH_SETTLE", min=0, max=3600)] = None,
    poll: Annotated[float | None, setting_option("LOOKALIKE_WATCH_POLL", min=0.1, max=86_400)] = None,
    reconcile: Annotated[float | None, setting_option("LOOKALIKE_WATCH_RECONCILE", min=0, max=1e7)] = None,
    max_watches: Annotated[int | None, setting_option("LOOKALIKE_WATCH_MAX_DIRS", min=1)] = None,
    runtime: RuntimeOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Keep the index equal to folders until stopped: new and changed photos are indexed once they
    have settled, deleted ones removed; one line per batch. SIGTERM or Ctrl-C stops it."""

    import threading

    from lookalike.watch import Watcher, WatchRequest

    opts = options(
        workspace=workspace,
        watch_settle=settle,
        watch_poll=poll,
        watch_reconcile=reconcile,
        watch_max_dirs=max_watches,
        runtime=runtime,
        ray_address=ray_address,
    )
    request = WatchRequest(tuple(map(str, paths or ())), glob, batch_size)
    with _open(opts, write=True) as library:
        watcher = Watcher(library, request, _WatchLines())

        def stopping(signum: int, frame: object) -> None:
            if watcher.busy or watcher.stopping:
                raise _WatchStopped
            # Not watcher.stop() here: it takes locks the interrupted main thread may hold.
            threading.Thread(target=watcher.stop, name="watch-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, stopping)
        signal.signal(signal.SIGINT, stopping)
        try:
            watcher.run()
        except _WatchStopped:
            err.print("stopped: the index run in flight was abandoned; the next start finishes it")
            return
    err.print("stopped")


class _WatchLines:
    """The watcher's progress, one line per index run (stdout) and its notes (stderr)."""

    def started(self, roots: list[str]) -> None:
        err.print(f"watching {', '.join(shown(r) for r in roots)} (SIGTERM or Ctrl-C stops)")

    def batch(self, batch: WatchBatch) -> None:
        r = batch.report
        for path, message in r.skipped_files:
            err.print(f"skipped {shown(path)}: {escape(message)}")
        out.print(f"{time.strftime('%H:%M:%S')} {batch.summary()}", markup=False)
        sys.stdout.flush()

    def note(self, message: str) -> None:
        err.print(f"note: {message}", markup=False)


# --- flow show -----------------------------------------------------------------------------------


class FlowFormat(str, Enum):
    text = "text"
    mermaid = "mermaid"
    dot = "dot"


@flow_app.command("show")
def flow_show(
    file: Annotated[
        str,
        typer.Argument(
            help="A flow YAML file, or a built-in one: index, query, index-faces (--faces), faces-query (--face N), "
            "index-regions (--regions), regions-query (--box)."
        ),
    ],
    fmt: Annotated[
        FlowFormat, typer.Option("--format", "-f", help="text, mermaid or dot (Graphviz).")
    ] = FlowFormat.text,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file; .svg/.png are rendered with Graphviz's dot."),
    ] = None,
) -> None:
    """Print a flow's DAG with its replicas and shards, or write it as a Mermaid or Graphviz picture."""
    from lookalike.flow import render
    from lookalike.flow.graph import builtin_flow_path, open_flow

    builtin = "/" not in file and not file.endswith((".yml", ".yaml")) and builtin_flow_path(file).exists()
    flow = open_flow(None if builtin else file, file if builtin else "index", options(), start_containers=False)
    if output is not None and output.suffix.lower() in (".svg", ".png"):
        dot_bin = shutil.which("dot")
        if dot_bin is None:
            raise LookalikeError("rendering .svg/.png needs Graphviz (apt-get install graphviz); or write .dot/.mmd")
        subprocess.run(
            [dot_bin, f"-T{output.suffix[1:].lower()}", "-o", str(output)],
            input=render.dot(flow),
            text=True,
            check=True,
        )
        out.print(f"wrote {shown(output)}")
        return
    if output is not None and fmt is FlowFormat.text:
        fmt = {".mmd": FlowFormat.mermaid, ".dot": FlowFormat.dot, ".gv": FlowFormat.dot}.get(output.suffix, fmt)
    text = {
        FlowFormat.text: render.describe(flow) + "\n",
        FlowFormat.mermaid: render.mermaid(flow),
        FlowFormat.dot: render.dot(flow),
    }[fmt]
    if output is None:
        out.print(text, end="", markup=False)
    else:
        output.write_text(text)
        out.print(f"wrote {shown(output)}")


# --- serve ---------------------------------------------------------------------------------------


def _serve(
    opts: Options,
    host: str,
    *,
    read_only: bool = False,
    allowed_hosts: list[str] | None = None,
    trash: Path | None = None,
    watch: bool = False,
) -> None:
    import uvicorn

    from lookalike.server.app import ServerConfig, create_app

    hosts = tuple(allowed_hosts or ())
    config = ServerConfig(opts, host=host, read_only=read_only, allowed_hosts=hosts, trash=trash, watch=watch)
    if not config.writes_enabled and not read_only:
        err.print("note: listening beyond loopback without LOOKALIKE_TOKEN: upload and delete are disabled")
    where = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    err.print(f"serving {opts.workspace} at http://{where}:{opts.port}/  (API docs at /docs; Ctrl-C stops)")
    uvicorn.run(create_app(config), host=host, port=opts.port, log_level="warning", access_log=False)


@app.command()
def serve(
    workspace: WorkspaceOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = None,
    token: Annotated[str | None, setting_option("LOOKALIKE_TOKEN")] = None,
    max_upload_mb: Annotated[float | None, setting_option("LOOKALIKE_MAX_UPLOAD_MB", min=0.1)] = None,
    max_batch: Annotated[int | None, setting_option("LOOKALIKE_MAX_BATCH", min=1, max=256)] = None,
    flow: Annotated[Path | None, typer.Option(help="Index flow for uploads (default: built-in).")] = None,
    query_flow: Annotated[Path | None, typer.Option(help="Query flow (default: the workspace's).")] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="No uploads or deletes; `lookalike index` may run meanwhile.")
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="A Host name to answer besides localhost and 127.0.0.1 (repeatable); beyond loopback, "
            "the only names answered.",
        ),
    ] = None,
    trash: Annotated[
        Path | None,
        typer.Option(
            "--trash",
            metavar="DIR",
            show_default=False,
            help="The folder the page's 'move duplicates' may use besides the indexed folders (a folder a "
            "request names is taken inside it) [default: WORKSPACE/trash].",
        ),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Keep the index equal to the indexed folders, as `lookalike watch` does (its settle time, "
            "polling, reconcile interval and watch limit come from the same settings: `lookalike settings`).",
        ),
    ] = False,
    index_memory: IndexMemoryOpt = None,
    index_latency_ms: IndexLatencyOpt = None,
    runtime: RuntimeOpt = None,
    ray_address: RayAddressOpt = None,
) -> None:
    """Serve the web page and the REST API (/api/search, /docs) over a workspace.

    With --runtime ray the HTTP server stays here (on the head) while the encoder replicas and the
    shard actors run on the cluster."""
    opts = options(
        workspace=workspace,
        port=port,
        token=token,
        max_upload_mb=max_upload_mb,
        max_batch=max_batch,
        index_flow=flow,
        query_flow=query_flow,
        index_memory=index_memory,
        index_latency_ms=index_latency_ms,
        runtime=runtime,
        ray_address=ray_address,
    )
    if watch and read_only:
        raise BadInput("--watch indexes what changes: it cannot go with --read-only")
    _serve(
        opts,
        host,
        read_only=read_only,
        allowed_hosts=allowed_host,
        trash=trash.absolute() if trash else None,
        watch=watch,
    )


# --- executor serve ------------------------------------------------------------------------------


@executor_app.command("serve")
def executor_serve(
    uses: Annotated[str, typer.Argument(help="A built-in executor, a class from --py-modules, or an executor YAML.")],
    with_: Annotated[str | None, setting_option("LOOKALIKE_EXECUTOR_WITH", metavar="JSON")] = None,
    py_modules: Annotated[
        list[Path] | None, typer.Option("--py-modules", help="Python file(s) defining the executor (repeatable).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 45700,
) -> None:
    """Serve one executor on a port. A flow pod with `host:` and `port:` sends it its requests
    (tensors and embeddings as raw bytes); GET /info tells the flow what it runs, /readyz when it can.
    SIGTERM (or Ctrl-C) stops it after the requests in flight."""
    import uvicorn

    from lookalike.executors.base import ExecutorContext
    from lookalike.executors.service import create_service_app, serve_check
    from lookalike.flow.config import load_flow_text
    from lookalike.flow.graph import Flow
    from lookalike.models.encoder import available_cores

    opts = options(executor_with=with_)
    try:
        params = json.loads(opts.executor_with) if opts.executor_with else {}
    except ValueError as e:
        raise LookalikeError(f"--with is not JSON: {e}") from e
    if not isinstance(params, dict):
        raise LookalikeError("--with must be a JSON object, such as '{\"threads\": 2}'")
    spec = {"uses": uses, "with": params, "py_modules": [str(p.resolve()) for p in py_modules or []]}
    text = json.dumps({"pods": {"executor": spec}})
    flow = Flow(load_flow_text(text, "<executor serve>"), "service", start_containers=False, options=opts)
    pod = flow.pods["executor"]
    serve_check(pod.executor)
    executor = pod.executor(pod.params, ExecutorContext(pod=uses, threads=available_cores(), options=opts))
    err.print(f"serving {pod.executor.__name__} ({uses}) at http://{host}:{port}/  (GET /info; Ctrl-C stops)")
    uvicorn.run(create_service_app(executor, uses), host=host, port=port, log_level="warning", access_log=False)


# --- settings ------------------------------------------------------------------------------------


def _shown_value(env: str) -> str | None:
    value = raw_value(env)
    return "(set)" if env == "LOOKALIKE_TOKEN" and value else value  # never print a secret


@app.command("settings")
def settings_command(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the README's table instead.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List every setting: its environment variable, flag, default and the value in effect here."""
    if markdown:
        out.print(markdown_table(), end="", markup=False)
        return
    rows = [
        {"env": s.env, "flag": s.flag, "default": s.default, "value": _shown_value(s.env), "help": s.help}
        for s in SETTINGS
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("flag", "default", "in effect", "what")
    table.columns.insert(0, Column("variable", no_wrap=True))
    for r in rows:
        value = r["value"] if r["value"] is not None else "(default)"
        table.add_row(
            str(r["env"]), r["flag"] or "", escape(str(r["default"])), escape(str(value)), escape(str(r["help"]))
        )
    out.print(table)


# --- datasets and demo ---------------------------------------------------------------------------


class DatasetName(str, Enum):
    tuxpaint = "tuxpaint"
    openclipart = "openclipart"
    flowers17 = "flowers17"
    skimage = "skimage"


class DemoDataset(str, Enum):
    auto = "auto"
    flowers17 = "flowers17"
    tuxpaint = "tuxpaint"
    skimage = "skimage"


def _say(message: str) -> None:
    err.print(message, markup=False)


@datasets_app.command("list")
def datasets_list(as_json: JsonOpt = False) -> None:
    """Show each dataset: size, classes, and where it is cached."""
    from lookalike.datasets import list_datasets

    rows = list_datasets(options().dataset_cache)
    if as_json:
        out.print_json(json.dumps([{**r.__dict__, "path": str(r.path)} for r in rows]))
        return
    table = Table("name", "images", "classes", "cached at", "source")
    for r in rows:
        where = shown(r.path) if r.cached else "not fetched" + (" (needs internet)" if r.online_only else "")
        table.add_row(r.name, str(r.n_images or "-"), str(r.n_classes or "-"), where, r.source)
    out.print(table)


@datasets_app.command("fetch")
def datasets_fetch(
    name: Annotated[DatasetName, typer.Argument(help="Which dataset.")],
    force: Annotated[bool, typer.Option(help="Fetch again even if cached.")] = False,
) -> None:
    """Download a dataset into the cache (apt for tuxpaint/openclipart, the web for flowers17)."""
    from lookalike.datasets import fetch

    ds = fetch(name.value, force=force, progress=_say, cache_dir=options().dataset_cache)
    out.print(f"{ds.name}: {len(ds.images)} images in {len(ds.classes)} classes at {shown(ds.root)}")


def _pick_dataset(choice: DemoDataset, cache: Path) -> Any:
    """The demo's photos: flowers17 when online, else tuxpaint from Debian, else scikit-image's."""
    from lookalike.datasets import fetch, is_online

    if choice is not DemoDataset.auto:
        return fetch(choice.value, progress=_say, cache_dir=cache)
    order = (["flowers17"] if is_online() else []) + ["tuxpaint", "skimage"]
    for name in order:
        try:
            return fetch(name, progress=_say, cache_dir=cache)
        except LookalikeError as e:
            err.print(f"{name} is not available ({e}); trying the next dataset", markup=False)
    raise LookalikeError("no demo dataset could be fetched; see the messages above")


@app.command()
def demo(
    dataset: Annotated[
        DemoDataset, typer.Option(help="auto: flowers17 if online, else tuxpaint (Debian), else skimage.")
    ] = DemoDataset.auto,
    workspace: WorkspaceOpt = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Stop after the example search.")] = False,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = None,
    allowed_host: Annotated[
        list[str] | None, typer.Option("--allowed-host", help="A Host name to answer (as for serve; repeatable).")
    ] = None,
) -> None:
    """Fetch sample photos, index them, run an example search, then serve the web page."""
    opts = options(workspace=workspace, port=port)
    ds = _pick_dataset(dataset, opts.dataset_cache)
    err.print(f"dataset {ds.name}: {len(ds.images)} photos in {len(ds.classes)} classes, at {shown(ds.root)}")
    with _open(opts, write=True) as library:
        with _ProgressBar(enabled=err.is_terminal) as bar:
            report = library.index([ds.root], progress=bar)
        out.print(
            f"indexed {report.indexed} new, {report.unchanged} unchanged, {report.skipped_total} skipped "
            f"in {report.seconds:.1f}s; workspace {shown(opts.workspace)}"
        )
        _demo_search(library, ds)
    if not no_serve:
        out.print(f"\nopen http://{host}:{opts.port}/ and drop a photo on the page")
        _serve(opts, host, allowed_hosts=allowed_host)


def _demo_search(library: Library, ds: Any) -> None:
    """The example search: a photo of the largest class, mirrored and cropped (so not in the index)."""
    import io

    from PIL import Image, ImageOps

    from lookalike.library import SearchRequest

    counts: dict[str, int] = {}
    for label in ds.labels.values():
        counts[label] = counts.get(label, 0) + 1
    label = max(counts, key=lambda c: (counts[c], c))
    original = next(p for p in ds.images if ds.labels[p] == label)
    img = Image.open(original)
    w, h = img.size
    buf = io.BytesIO()
    ImageOps.mirror(img.crop((w // 10, h // 10, w - w // 10, h - h // 10))).save(buf, "PNG")
    report = library.search(SearchRequest(image=buf.getvalue(), top_k=5))
    out.print(f"\nexample search: {shown(original.relative_to(ds.root))} mirrored and cropped to 80% ({label})")
    labels = {str(p): ds.labels[p] for p in ds.images}
    for i, hit in enumerate(report.hits, 1):
        tags = ", ".join(f"{t} {p:.0%}" for t, p in hit.tags[:2])
        rel = os.path.relpath(hit.path or "", ds.root)
        score = hit.similarity if hit.similarity is not None else hit.distance
        out.print(f"{i:3d}  {score:.3f}  {shown(rel)}  [dim]({labels.get(hit.path or '', '?')}; {tags})[/dim]")
    same = sum(labels.get(h.path or "") == label for h in report.hits)
    out.print(
        f"{same} of the top {len(report.hits)} are {label}. "
        f"Try: lookalike search YOUR.jpg -w {shown(library.workspace.path)}"
    )


# --- eval and dupes ------------------------------------------------------------------------------


class EvalEncoder(str, Enum):
    efficientnet = "efficientnet"
    histogram = "histogram"


@app.command("eval")
def eval_command(
    folder: Annotated[Path, typer.Argument(help="A folder of images in label folders, e.g. birds/robin.jpg.")],
    label_depth: Annotated[
        int | None, typer.Option(min=1, help="Label by the first N folder levels only (animals/birds -> animals).")
    ] = None,
    min_class_size: Annotated[int, typer.Option(min=2, help="Leave out classes with fewer images.")] = 9,
    max_per_class: Annotated[
        int | None, typer.Option(min=2, help="Use at most N images per class (a seeded random sample).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the --max-per-class sample.")] = 0,
    encoder: Annotated[
        EvalEncoder, typer.Option(help="efficientnet (lookalike) or histogram (the colour-histogram baseline).")
    ] = EvalEncoder.efficientnet,
    robustness: Annotated[
        bool, typer.Option("--robustness", help="Also measure copy detection: flip, crop, resize, JPEG, rotate, grey.")
    ] = False,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG: per-class P@10, robustness per transform.")] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write an HTML contact sheet of the worst queries with their top 5.")
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            help="Eval's own workspace, kept for next time (it holds exactly the evaluated images; "
            "default: a temporary one).",
        ),
    ] = None,
    flow: Annotated[
        Path | None,
        typer.Option(
            help="Index with this index flow YAML instead of the built-in one (another model, pooling, "
            "replicas...), so encoders and descriptors compare on one command line."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure retrieval quality on labelled folders: leave-one-out P@1, P@5, P@10 and mAP per class,
    through the same search path as every search."""
    from lookalike.eval_report import check_can_plot
    from lookalike.evaluate import evaluate

    if plot is not None:
        check_can_plot()
    with _ProgressBar(enabled=err.is_terminal) as bar:
        result = evaluate(
            folder,
            options=options(),
            label_depth=label_depth,
            min_class_size=min_class_size,
            max_per_class=max_per_class,
            seed=seed,
            encoder=encoder.value,
            workspace=workspace,
            robustness=robustness,
            index_progress=bar,
            progress=_say,
            flow=flow,
        )
    _eval_outputs(result, plot, report, as_json)


def _eval_outputs(result: Any, plot: Path | None, report: Path | None, as_json: bool) -> None:
    from lookalike.eval_report import write_plot, write_report

    if plot is not None:
        write_plot(result, plot)
    n_shown = write_report(result, report) if report is not None else 0
    data = result.to_dict()
    if as_json:
        data.update(plot=str(plot) if plot else None, report=str(report) if report else None)
        out.print_json(json.dumps(data))
        return
    _print_eval(result, data)
    if plot is not None:
        out.print(f"wrote {shown(plot)}")
    if report is not None:
        out.print(f"wrote {shown(report)} ({n_shown} worst queries)")


def _print_eval(result: Any, data: dict[str, Any]) -> None:
    table = Table("class", "images", "P@1", "P@5", "P@10", "AP", box=None, pad_edge=False)
    for c in data["per_class"]:
        table.add_row(
            shown(c["label"]), str(c["images"]), *(f"{c[k]:.3f}" for k in ("p_at_1", "p_at_5", "p_at_10", "map"))
        )
    out.print(table)
    m, left = data["metrics"], data["left_out"]
    out.print(
        f"\n{result.encoder} on {shown(result.root)}: {data['images']} images in {data['classes']} classes "
        f"(left out {left['classes']} classes with fewer than {result.min_class_size} usable images: "
        f"{left['images']} images; {len(data['skipped'])} files could not be read)"
    )
    out.print(
        f"[bold]P@1 {m['p_at_1']:.3f}   P@5 {m['p_at_5']:.3f}   P@10 {m['p_at_10']:.3f}   mAP {m['map']:.3f}[/bold]"
    )
    if result.robustness is not None:
        rob = Table("copy detection", "original first", "median similarity", box=None, pad_edge=False)
        for name, score in result.robustness.top1.items():
            rob.add_row(name, f"{score:.3f}", f"{result.robustness.similarity[name]:.3f}")
        out.print()
        out.print(rob)
        out.print(
            f"[bold]copy detection: {result.robustness.mean_single:.3f} mean over the single edits, "
            f"{result.robustness.top1.get('combined', 0.0):.3f} combined[/bold]"
        )
    if result.cutoff is not None:
        c = result.cutoff
        out.print(
            f"match levels: the 'similar' cut keeps {c.mean_kept:.1f} results per query at precision "
            f"{c.precision:.3f} (a fixed top 10: {c.precision_top10:.3f}); {c.none_kept:.1%} of queries keep none"
        )
        if c.copies_labelled:
            labelled = ", ".join(f"{e} {v:.0%}" for e, v in c.copies_labelled.items())
            out.print(f"copies labelled same or near-duplicate: {labelled}")


@app.command()
def dupes(
    workspace: WorkspaceOpt = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            show_default=False,
            help="Cosine similarity from which two images are near duplicates [default: the floor search "
            f"results are badged near_duplicate from: {NEAR_DUPLICATE_FLOOR:g}, higher in a collection of "
            "near-identical frames]",
        ),
    ] = None,
    move_to: Annotated[
        str | None,
        typer.Option(
            "--move-to",
            metavar="FOLDER",
            help="Move every file but the one to keep of each group into FOLDER, and out of the index: a "
            "folder inside the indexed folders, or a name inside the workspace's trash folder "
            "(WORKSPACE/trash). Never deletes, never overwrites; logged, and --undo puts them back.",
        ),
    ] = None,
    undo: Annotated[
        bool,
        typer.Option("--undo", help="Put the files of a move back where they were, and index them again."),
    ] = False,
    batch: Annotated[
        str | None,
        typer.Argument(
            metavar="BATCH", show_default=False, help="With --undo: the batch to undo (default: the latest)."
        ),
    ] = None,
    moves: Annotated[bool, typer.Option("--moves", help="List the moves made, by batch.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find groups of near-duplicate images, and exact copies (same bytes), in a workspace.

    Near duplicates are the same picture edited (resized, cropped, recoloured, mirrored): every file
    of a group is at least the threshold from the first, the one to keep (the most pixels, then the
    most camera metadata, then the oldest). Frames of a burst (the same camera, another moment) are
    not duplicates. --move-to moves the others out of the way; --undo brings a move back."""
    chosen = [
        flag for flag, given in (("--move-to", move_to is not None), ("--undo", undo), ("--moves", moves)) if given
    ]
    if len(chosen) > 1:
        raise typer.BadParameter(f"give one of --move-to, --undo and --moves, not {' and '.join(chosen)}")
    if batch is not None and not undo:
        raise typer.BadParameter("a BATCH is only for --undo", param_hint="BATCH")
    opts = options(workspace=workspace)
    if undo or moves:
        with _open(opts, write=undo) as library:
            if undo:
                _print_undo(library.undo_move(batch), as_json)
            else:
                _print_moves(library.moves(), as_json)
        return
    with _open(opts, write=move_to is not None) as library:
        found = library.dupes(threshold)
        others = [f.doc_id for g in found.groups for f in g.others]
        moved = library.move(others, move_to) if move_to is not None and others else None
    if as_json:
        extra = {"move": moved.to_dict()} if moved is not None else {}
        out.print_json(json.dumps({"workspace": str(opts.workspace), **found.to_dict(), **extra}))
        return
    _print_dupes(found, opts)
    if move_to is not None:
        _print_moved(moved)


def _print_dupes(found: DupeReport, opts: Options) -> None:
    plural = lambda n, word: f"{n} {word}{'s' if n != 1 else ''}"  # noqa: E731
    out.print(
        f"{plural(len(found.exact), 'group')} of exact copies ({plural(found.redundant_exact, 'redundant file')}), "
        f"{plural(len(found.near), 'group')} of near duplicates (similarity >= {found.threshold:g}) "
        f"among {found.docs} images in {shown(opts.workspace)}"
    )
    if found.distinct_shots:
        out.print(f"{plural(found.distinct_shots, 'pair')} of look-alikes left out: distinct shots of a burst")
    if found.exact:
        out.print("\n[bold]exact copies[/bold] (same bytes; the first is the one to keep)")
        for n, g in enumerate(found.exact, 1):
            out.print(f"group {n}: {len(g.files)} files of {_size(g.files[0].size or 0)}")
            for i, f in enumerate(g.files):
                out.print(f"  {'keep' if i == 0 else '    '}  {display_path(f.path)}", markup=False)
    if found.near:
        out.print("\n[bold]near duplicates[/bold] (the first is the one to keep; similarity to it)")
        for n, g in enumerate(found.near, 1):
            out.print(f"group {n}: {len(g.files)} images, similarity >= {g.similarity:.3f}")
            for i, f in enumerate(g.files):
                size = f"{f.width}x{f.height}, {_size(f.size or 0)}"
                out.print(
                    f"  {'keep ' if i == 0 else f'{f.similarity:.3f}'}  {display_path(f.path)}  ({size})", markup=False
                )


def _print_moved(moved: MoveReport | None) -> None:
    if moved is None:
        out.print("\nnothing to move")
        return
    out.print(f"\nmoved {len(moved.moves)} files out of the index (batch {moved.batch}):")
    for m in moved.moves:
        out.print(f"  {display_path(m.source)} -> {display_path(m.target)}", markup=False)
    out.print(f"undo with: lookalike dupes --undo {moved.batch}", markup=False)


def _print_undo(report: MoveReport, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(report.to_dict() | {"index": report.index.to_dict() if report.index else None}))
        return
    out.print(f"put back {len(report.moves)} files of batch {report.batch}:")
    for m in report.moves:
        out.print(f"  {display_path(m.source)} -> {display_path(m.target)}", markup=False)
    if report.index is not None:
        out.print(f"indexed again: {report.index.indexed}; workspace holds {report.index.docs} images")


def _print_moves(batches: list[MoveBatch], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({"batches": [b.to_dict() for b in batches]}))
        return
    if not batches:
        out.print("no files were moved")
    for b in batches:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b.at))
        state = "undone" if not b.open else f"{len(b.moves) - len(b.undone)} away"
        out.print(f"{b.batch}  {when}  {len(b.moves)} files moved, {state}")


# --- entry point ---------------------------------------------------------------------------------


# --- people --------------------------------------------------------------------------------------

people_app = typer.Typer(
    help="The people in a workspace indexed with --faces: faces grouped into people as photos are indexed. "
    "Without a command, lists them (3 faces or more, or a name), the most photographed first. Name them, "
    "merge two, move a face, hide one; search with --person NAME.",
    invoke_without_command=True,
)
app.add_typer(people_app, name="people")
PersonArg = Annotated[str, typer.Argument(metavar="PERSON", help="A person's id or name.", show_default=False)]


@people_app.callback()
def people(
    ctx: typer.Context,
    workspace: WorkspaceOpt = None,
    show_all: Annotated[bool, typer.Option("--all", help="Hidden people too.")] = False,
    recluster: Annotated[
        bool,
        typer.Option(
            "--recluster",
            help="Group every face afresh first (after changing the rule, or many corrections); names, merges "
            "and corrections are kept.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the people found (with 3 faces or more, or a name), the most photographed first: id, name,
    faces, photos. Photos of a named person indexed later join that person."""
    ctx.obj = {"workspace": workspace}
    if ctx.invoked_subcommand is not None:
        if show_all or recluster or as_json:
            raise typer.BadParameter(
                f"--all, --recluster and --json go after `people {ctx.invoked_subcommand}`", param_hint="--json"
            )
        return
    with _open(options(workspace=workspace), write=recluster) as library:
        library.people._need()
        grouped = library.people.recluster() if recluster else None
        listed = library.people.list(hidden=show_all)
        store = library.workspace.store
        paths = {p.row.id: _person_paths(library, store.docs_of_person(p.row.id)) for p in listed}
    if as_json:
        people = [p.to_dict() | {"photo_paths": paths[p.row.id]} for p in listed]
        extra = {"regrouped": grouped.to_dict()} if grouped is not None else {}
        out.print_json(json.dumps({"people": people, **extra}))
        return
    if grouped is not None:
        out.print(f"regrouped {grouped.assigned} faces in {grouped.seconds:.1f}s")
    if not listed:
        out.print("no people yet: a person needs 3 faces or more (index more photos)")
    table = Table("id", "name", "faces", "photos", "some of their photos", box=None)
    for p in listed:
        r = p.row
        shown_paths = ", ".join(os.path.basename(x) for x in paths[r.id][:3]) + (" ..." if r.photos > 3 else "")
        name = (r.name or "[dim]unnamed[/dim]") + (" [dim](hidden)[/dim]" if r.hidden else "")
        table.add_row(str(r.id), name, str(r.faces), str(r.photos), escape(shown_paths))
    if listed:
        out.print(table)


def _person_paths(library: Library, doc_ids: list[str]) -> list[str]:
    docs = library.workspace.store.get_docs(doc_ids)
    return sorted(display_path(d.uri) for d in docs.values() if d.uri)


def _people_workspace(ctx: typer.Context, workspace: Path | None) -> Path | None:
    """A people command's workspace: given after the command, or before it (`people -w WS name ...`)."""
    return workspace or (ctx.obj or {}).get("workspace")


def _people_change(ctx: typer.Context, workspace: Path | None, change: Any, as_json: bool) -> None:
    """Run ``change(library)`` on a writable library and print the person (or face) it returns."""
    from lookalike.library.people import Person

    with _open(options(workspace=_people_workspace(ctx, workspace)), write=True) as library:
        done = change(library)
    if as_json:
        out.print_json(json.dumps(done.to_dict() if isinstance(done, Person) else vars(done)))
    elif isinstance(done, Person):
        r = done.row
        hidden = " (hidden)" if r.hidden else ""
        out.print(f"person {r.id}: {r.name or 'unnamed'}, {r.faces} faces in {r.photos} photos{hidden}")
    else:
        who = f"person {done.person}" + (f" ({done.name})" if done.name else "") if done.person else "nobody"
        out.print(f"face {done.face} is now {who}")


@people_app.command("name")
def people_name(
    ctx: typer.Context,
    person: PersonArg,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help='The name, e.g. "John Simm" (empty: no name).', show_default=False)
    ],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Name a person. No two people share a name: merge them instead."""
    _people_change(ctx, workspace, lambda library: library.people.name(person, name or None), as_json)


@people_app.command("merge")
def people_merge(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="The person whose faces move.", show_default=False)],
    target: Annotated[str, typer.Argument(metavar="TARGET", help="The person who takes them.", show_default=False)],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Merge SOURCE into TARGET: every face of SOURCE becomes TARGET's (TARGET keeps its id and name)."""
    _people_change(ctx, workspace, lambda library: library.people.merge(source, target), as_json)


@people_app.command("move")
def people_move(
    ctx: typer.Context,
    face: Annotated[
        int,
        typer.Argument(
            metavar="FACE",
            min=1,
            max=2**63 - 1,
            help="A face's id (`people show PERSON` lists them).",
            show_default=False,
        ),
    ],
    person: Annotated[
        str,
        typer.Argument(
            metavar="PERSON",
            help="The person it is (id or name), 'new' for someone new, 'none' for nobody.",
            show_default=False,
        ),
    ],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Say whose a face is. The grouping never moves it back, nor links it to the person it was taken from."""
    target: str | None = None if person.lower() == "none" else person
    _people_change(ctx, workspace, lambda library: library.people.move(face, target), as_json)


@people_app.command("hide")
def people_hide(
    ctx: typer.Context,
    person: PersonArg,
    undo: Annotated[bool, typer.Option("--undo", help="Show the person again.")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hide a person from the list (their faces stay theirs); --undo shows them again."""
    _people_change(ctx, workspace, lambda library: library.people.hide(person, not undo), as_json)


@people_app.command("show")
def people_show(
    ctx: typer.Context, person: PersonArg, workspace: WorkspaceOpt = None, as_json: JsonOpt = False
) -> None:
    """One person: their photos, and the id and box of their face in each (for `people move`)."""
    with _open(options(workspace=_people_workspace(ctx, workspace)), write=False) as library:
        found = library.people.person(person)
        ids = found.photos or []
        paths = {d.id: display_path(d.uri) for d in library.workspace.store.get_docs(ids).values() if d.uri}
        faces = [f for fs in library.people.faces(ids).values() for f in fs if f.person == found.row.id]
    if as_json:
        listed = [{"face": f.face, "doc_id": f.doc_id, "path": paths.get(f.doc_id), "bbox": f.bbox} for f in faces]
        out.print_json(json.dumps(found.to_dict() | {"faces_listed": listed}))
        return
    r = found.row
    out.print(f"person {r.id}: {r.name or 'unnamed'}, {r.faces} faces in {r.photos} photos")
    for f in sorted(faces, key=lambda f: paths.get(f.doc_id, "")):
        box = ",".join(map(str, f.bbox)) if f.bbox else "-"
        out.print(f"  face {f.face:<6} {escape(paths.get(f.doc_id, f.doc_id))}  [dim]at {box}[/dim]")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and a distinct exit code."""
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not valid UTF-8 must never crash output: escape what cannot be encoded.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    # SIGTERM (kill, systemd, timeout) unwinds like Ctrl-C: the flows' containers are stopped and
    # nothing is half-written. `serve` and `executor serve` install uvicorn's own handler instead.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        app(args=argv)  # standalone: typer reports usage errors itself and raises SystemExit
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except LookalikeError as e:
        err.print(f"error: {e}", markup=False)
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the last line of defence: a bug, reported in one line
        if raw_value("LOOKALIKE_DEBUG"):
            raise
        err.print(f"internal error: {type(e).__name__}: {e} (set LOOKALIKE_DEBUG=1 for the traceback)", markup=False)
        return 70
    return 0


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
