"""Pictures of a flow's DAG: text for the terminal, Mermaid for Markdown, Graphviz dot for .svg/.png
(`lookalike flow show`)."""

from __future__ import annotations

from lookalike.flow.graph import GATEWAY, Flow, Pod
from lookalike.store.spaces import DEFAULT_SPACE


def _scale(pod: Pod) -> str:
    bits = []
    if pod.config.parallel > 1:
        bits.append(f"x{pod.config.parallel} replicas")
    if pod.config.shards > 1:
        bits.append(f"{pod.config.shards} shards, polling {pod.config.polling}")
    if pod.executor.stores_vectors and pod.config.space != DEFAULT_SPACE:
        bits.append(f"space {pod.config.space}")
    return ", ".join(bits)


def describe(flow: Flow) -> str:
    """The DAG as text: one pod a line, with its executor, scale and inputs."""
    width = max(len(n) for n in flow.pods)
    uses_w = max(len(p.uses) for p in flow.pods.values())
    lines = [f"{flow.file}  (prefetch {flow.prefetch})"]
    for pod in flow.pods.values():
        inputs = ", ".join(pod.needs) or GATEWAY
        scale = _scale(pod)
        lines.append(f"  {pod.name:<{width}}  {pod.uses:<{uses_w}}  <- {inputs}" + (f"  [{scale}]" if scale else ""))
    lines.append(f"  result <- {flow.sink}")
    return "\n".join(lines)


def mermaid(flow: Flow) -> str:
    lines = ["flowchart LR", f"  {GATEWAY}([input])"]
    for pod in flow.pods.values():
        scale = _scale(pod)
        label = f"{pod.name}<br/>{pod.uses}" + (f"<br/>{scale}" if scale else "")
        shape = f'{{{{"{label}"}}}}' if pod.is_merge else f'["{label}"]'
        lines.append(f"  {pod.name}{shape}")
    for pod in flow.pods.values():
        for n in pod.needs or [GATEWAY]:
            lines.append(f"  {n} --> {pod.name}")
    lines.append(f"  {flow.sink} --> result([result])")
    return "\n".join(lines) + "\n"


def dot(flow: Flow) -> str:
    lines = [
        "digraph flow {",
        "  rankdir=LR;",
        '  node [shape=box, fontname="Helvetica"];',
        f'  {GATEWAY} [label="input", shape=oval];',
        '  result [label="result", shape=oval];',
    ]
    for pod in flow.pods.values():
        scale = _scale(pod)
        label = f"{pod.name}\\n{pod.uses}" + (f"\\n{scale}" if scale else "")
        shape = "diamond" if pod.is_merge else ("box3d" if pod.config.parallel > 1 or pod.config.shards > 1 else "box")
        lines.append(f'  "{pod.name}" [label="{label}", shape={shape}];')
    for pod in flow.pods.values():
        for n in pod.needs or [GATEWAY]:
            lines.append(f'  "{n}" -> "{pod.name}";')
    lines.append(f'  "{flow.sink}" -> result;')
    lines.append("}")
    return "\n".join(lines) + "\n"
