"""Flow YAML: the built-in flows, every kind of mistake (named by file, line and key), ``${VAR}``,
executor files, ``py_modules``, the ``@requests`` checks, and the describe/mermaid/dot renderings.

Everything is real: the YAML files and the user's Python modules are written into ``tmp_path`` and
loaded the way ``lookalike index --flow FILE`` loads them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from lookalike.document import Document, Request
from lookalike.errors import ConfigError
from lookalike.executors import BUILTINS, Executor, requests
from lookalike.executors.crafters import ImageNormalizer
from lookalike.executors.encoders import ImageEncoder
from lookalike.executors.indexers import DocIndexer, VectorIndexer
from lookalike.executors.loader import ImageReader
from lookalike.executors.merge import Merge
from lookalike.executors.rankers import BestChunkRanker
from lookalike.flow import render
from lookalike.flow.config import load_flow, load_flow_text
from lookalike.flow.graph import Flow, builtin_flow_path, open_flow
from lookalike.settings import Options

# A user's module, as `py_modules:` loads it: one executor with parameters of its own.
FLIPPER_PY = """
from lookalike.document import Chunk
from lookalike.executors import Executor, requests


class Flipper(Executor):
    class Params(Executor.Params):
        mirror: bool = True
        size: int = 224

    @requests(on="index")
    def flip(self, docs):
        for doc in docs:
            doc.chunks.append(Chunk(kind="mirror"))
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def _config_error(path: Path) -> str:
    """The message of the ConfigError that loading and building the flow at ``path`` raises."""
    with pytest.raises(ConfigError) as e:
        Flow(load_flow(path, env={}))
    return str(e.value)


# --- the built-in flows ----------------------------------------------------------------------------


def _shape(flow: Flow) -> dict:
    """Each pod's executor, needs, parallel, shards and polling."""
    return {
        name: (pod.executor, pod.needs, pod.config.parallel, pod.config.shards, pod.config.polling)
        for name, pod in flow.pods.items()
    }


def test_builtin_index_flow_loads_with_its_pods_needs_and_shards():
    flow = open_flow(None, "index", Options())
    assert flow.name == "index" and flow.prefetch == 10
    shape = _shape(flow)
    assert shape == {
        "loader": (ImageReader, [], 2, 1, "any"),
        "normalizer": (ImageNormalizer, ["loader"], 2, 1, "any"),
        "encoder": (ImageEncoder, ["normalizer"], 2, 1, "any"),  # two 1-thread sessions beat one 2-thread
        "chunk_indexer": (VectorIndexer, ["encoder"], 1, 2, "any"),
        "doc_indexer": (DocIndexer, ["loader"], 1, 1, "any"),
        "join_all": (Merge, ["doc_indexer", "chunk_indexer"], 1, 1, "any"),
    }
    assert list(flow.pods) == list(shape)  # the order of the file
    assert flow.roots == ["loader"] and flow.sink == "join_all"
    assert flow.pods["loader"].downstream == ["normalizer", "doc_indexer"]
    assert flow.pods["join_all"].is_merge


def test_builtin_query_flow_searches_every_shard():
    flow = open_flow(None, "query", Options())
    assert flow.name == "query" and flow.prefetch == 10
    assert _shape(flow) == {
        "loader": (ImageReader, [], 2, 1, "any"),
        "normalizer": (ImageNormalizer, ["loader"], 2, 1, "any"),
        "encoder": (ImageEncoder, ["normalizer"], 1, 1, "any"),
        "chunk_indexer": (VectorIndexer, ["encoder"], 1, 2, "all"),
        "ranker": (BestChunkRanker, ["chunk_indexer"], 1, 1, "any"),
        "doc_indexer": (DocIndexer, ["ranker"], 1, 1, "any"),
    }
    # Between model calls the cores go to decoding and HTTP, not to spinning threads.
    assert flow.pods["encoder"].params.spin is False  # type: ignore[attr-defined]
    assert open_flow(None, "index", Options()).pods["encoder"].params.spin is True  # type: ignore[attr-defined]
    assert flow.roots == ["loader"] and flow.sink == "doc_indexer"


def test_builtin_flows_load_from_their_files_and_take_prefetch_from_the_environment():
    for name in ("index", "query"):
        path = builtin_flow_path(name)
        assert load_flow(path, env={}).config.prefetch == 10
        assert load_flow(path, env={"LOOKALIKE_PREFETCH": "3"}).config.prefetch == 3
        assert open_flow(None, name, Options(prefetch=4)).prefetch == 4
        assert open_flow(path, name, Options()).file == str(path)


def test_a_missing_flow_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"flow file not found: {tmp_path / 'nope.yml'}")):
        load_flow(tmp_path / "nope.yml")


# --- mistakes in the flow file, each named by file, line and key -----------------------------------


def test_typo_in_a_pod_key_names_file_line_and_key(tmp_path):
    path = _write(
        tmp_path / "flow.yml",
        "prefetch: 4\n"
        "pods:\n"
        "  loader:\n"
        "    uses: ImageReader\n"
        "    parralel: 2\n"  # line 5
        "  normalizer: {uses: ImageNormalizer}\n",
    )
    assert _config_error(path) == f"{path}:5: pods.loader.parralel: unknown key (check the spelling)"


def test_typo_in_a_flow_style_pod_names_its_line(tmp_path):
    path = _write(
        tmp_path / "flow.yml",
        "pods:\n  loader:     {uses: ImageReader}\n  normalizer: {uses: ImageNormalizer, parralel: 2}\n",
    )
    assert _config_error(path).startswith(f"{path}:3: pods.normalizer.parralel: unknown key")


def test_typo_in_an_executor_parameter_names_the_with_key_and_line(tmp_path):
    path = _write(
        tmp_path / "flow.yml",
        "pods:\n"
        "  loader: {uses: ImageReader}\n"
        "  normalizer:\n"
        "    uses: ImageNormalizer\n"
        "    with:\n"
        "      draft: false\n"
        "      sise: 224\n",  # line 7
    )
    assert _config_error(path) == f"{path}:7: pods.normalizer.with.sise: unknown key (check the spelling)"


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("parallel: many", "parallel", "Input should be a valid integer"),
        ("parallel: 0", "parallel", "Input should be greater than 0"),
        ("shards: -2", "shards", "Input should be greater than 0"),
        ("polling: some", "polling", "Input should be 'any' or 'all'"),
        ("needs: {a: 1}", "needs", "Input should be a valid list"),
        ("with: {size: big}", "with.size", "Input should be a valid integer"),
        ("with: {size: 8}", "with.size", "Input should be greater than or equal to 32"),
        ("resources: {num_cpu: 1}", "resources.num_cpu", "unknown key (check the spelling)"),
        ("resources: {num_gpus: -1}", "resources.num_gpus", "Input should be greater than or equal to 0"),
        ("resources: {memory: lots}", "resources.memory", "memory='lots' is not a size"),
    ],
)
def test_a_wrong_value_names_key_and_line(tmp_path, line, key, message):
    path = _write(
        tmp_path / "flow.yml",
        f"prefetch: 2\npods:\n  loader:\n    uses: ImageReader\n  normalizer:\n    uses: ImageNormalizer\n    {line}\n",
    )
    error = _config_error(path)
    assert error.startswith(f"{path}:7: pods.normalizer.{key}: {message}"), error


def test_a_pod_says_what_a_replica_reserves_and_a_flow_where_it_runs():
    from lookalike.flow.runtimes import RuntimeChoice

    flow = Flow(
        load_flow_text(
            "runtime: ray\npods:\n  loader: {uses: ImageReader, resources: {num_cpus: 1.5, memory: 2GB, "
            "custom: {workspace: 1}}}\n",
            "f.yml",
        )
    )
    res = flow.pods["loader"].config.resources
    assert (res.num_cpus, res.num_gpus, res.memory, res.custom) == (1.5, 0.0, 2 << 30, {"workspace": 1.0})
    assert RuntimeChoice.from_flow(flow) == RuntimeChoice("ray")
    assert RuntimeChoice.from_flow(open_flow(None, "index")) == RuntimeChoice("local")
    bad = "runtime: kubernetes\npods:\n  loader: {uses: ImageReader}\n"
    with pytest.raises(ConfigError, match="f.yml:1: runtime: Input should be 'local' or 'ray'"):
        load_flow_text(bad, "f.yml")


def test_a_wrong_top_level_value_names_its_line(tmp_path):
    path = _write(tmp_path / "flow.yml", "pods:\n  loader: {uses: ImageReader}\nprefetch: lots\n")
    assert _config_error(path).startswith(f"{path}:3: prefetch: Input should be a valid integer")


def test_a_pod_without_uses_names_the_pod(tmp_path):
    path = _write(tmp_path / "flow.yml", "pods:\n  loader: {uses: ImageReader}\n  encoder:\n    parallel: 2\n")
    assert _config_error(path) == (
        f"{path}:3: pods.encoder: uses is missing (a pod needs uses, or host/port of an executor service)"
    )


def test_a_flow_that_is_not_a_mapping_is_refused():
    with pytest.raises(ConfigError, match=r"^t\.yml:1: \(top level\): a flow file must be a mapping"):
        load_flow_text("- loader\n- encoder\n", "t.yml")
    with pytest.raises(ConfigError, match=r"^t\.yml:1: pods: Dictionary should have at least 1 item"):
        load_flow_text("pods: {}\n", "t.yml")


def test_needs_naming_an_undefined_pod(tmp_path):
    path = _write(
        tmp_path / "flow.yml",
        "pods:\n  loader: {uses: ImageReader}\n  normalizer:\n    uses: ImageNormalizer\n    needs: laoder\n",
    )
    assert _config_error(path) == f"{path}:5: pods.normalizer.needs: 'laoder' is not a pod of this flow (pods: loader)"


def test_needs_naming_a_pod_defined_below(tmp_path):
    path = _write(
        tmp_path / "flow.yml",
        "pods:\n"
        "  loader: {uses: ImageReader}\n"
        "  normalizer: {uses: ImageNormalizer, needs: [loader, encoder]}\n"
        "  encoder: {uses: ImageEncoder}\n",
    )
    assert _config_error(path) == f"{path}:3: pods.normalizer.needs: 'encoder' is not defined above (pods: loader)"


def test_two_sinks_without_a_join_are_refused(tmp_path):
    path = _write(
        tmp_path / "flow.yml",
        "prefetch: 2\n"
        "pods:\n"  # line 2
        "  loader: {uses: ImageReader}\n"
        "  normalizer: {uses: ImageNormalizer}\n"
        "  doc_indexer: {uses: DocIndexer, needs: loader}\n",
    )
    error = _config_error(path)
    assert error.startswith(f"{path}:2: pods: a flow must end in exactly one pod")
    assert "normalizer, doc_indexer" in error and "_merge" in error


def test_a_join_makes_two_branches_one_flow(tmp_path):
    path = _write(
        tmp_path / "flow.yml",
        "pods:\n"
        "  loader: {uses: ImageReader}\n"
        "  normalizer: {uses: ImageNormalizer}\n"
        "  doc_indexer: {uses: DocIndexer, needs: loader}\n"
        "  join: {uses: _merge, needs: [normalizer, doc_indexer]}\n",
    )
    flow = Flow(load_flow(path, env={}))
    assert flow.sink == "join" and flow.pods["join"].needs == ["normalizer", "doc_indexer"]


def test_gateway_marks_a_second_root_and_is_reserved(tmp_path):
    flow = Flow(
        load_flow_text(
            "pods:\n"
            "  a: {uses: ImageReader}\n"
            "  b: {uses: ImageReader, needs: gateway}\n"
            "  join: {uses: _merge, needs: [a, b]}\n",
            "t.yml",
        )
    )
    assert flow.roots == ["a", "b"] and flow.pods["b"].needs == []
    with pytest.raises(ConfigError, match=r"^t\.yml:2: pods\.gateway: 'gateway' is reserved"):
        Flow(load_flow_text("pods:\n  gateway: {uses: ImageReader}\n", "t.yml"))


def test_unknown_uses_lists_the_builtins(tmp_path):
    path = _write(
        tmp_path / "flow.yml",
        "pods:\n  loader: {uses: ImageReader}\n  normalizer:\n    uses: ImageNormaliser\n",
    )
    error = _config_error(path)
    assert error.startswith(f"{path}:4: pods.normalizer.uses: unknown executor 'ImageNormaliser'. Built-ins: ")
    assert set(BUILTINS) == {"ImageReader", "ImageNormalizer", "ImageEncoder", "VectorIndexer", "DocIndexer"} | {
        "BestChunkRanker",
        "ColorHistogramEncoder",
        "FaceDetector",
        "FaceEncoder",
        "_merge",
    }
    for name in BUILTINS:
        assert name in error
    assert "py_modules" in error


def test_unknown_uses_lists_what_the_py_modules_define(tmp_path):
    _write(tmp_path / "flipper.py", FLIPPER_PY)
    path = _write(tmp_path / "flow.yml", "pods:\n  flip:\n    uses: Fliper\n    py_modules: flipper.py\n")
    error = _config_error(path)
    assert error.startswith(f"{path}:3: pods.flip.uses: unknown executor 'Fliper'")
    assert error.endswith("flipper.py defines: Flipper")


def test_py_modules_pointing_at_a_missing_file(tmp_path):
    path = _write(
        tmp_path / "flow.yml",
        "pods:\n  flip:\n    uses: Flipper\n    py_modules: [executors/flipper.py]\n",
    )
    error = _config_error(path)
    assert error.startswith(f"{path}:4: pods.flip.py_modules: ")
    assert f"{tmp_path / 'executors' / 'flipper.py'} does not exist" in error


def test_a_py_module_that_raises_on_import_is_a_config_error_and_can_be_fixed(tmp_path):
    module = _write(tmp_path / "broken.py", FLIPPER_PY + "\nRATIO = 1 / 0\n")
    path = _write(tmp_path / "flow.yml", "pods:\n  flip:\n    uses: Flipper\n    py_modules: broken.py\n")
    error = _config_error(path)
    assert error.startswith(f"{path}:4: pods.flip.py_modules: ")
    assert f"importing {module} failed: ZeroDivisionError: division by zero" in error
    # A failed import is not cached: once the file is fixed, the same path loads.
    _write(module, FLIPPER_PY)
    assert Flow(load_flow(path, env={})).pods["flip"].executor.__name__ == "Flipper"


def test_a_py_module_class_is_resolved_relative_to_the_yaml_and_its_params_checked(tmp_path):
    _write(tmp_path / "lib" / "flipper.py", FLIPPER_PY)
    flow_dir = tmp_path / "lib"
    path = _write(
        flow_dir / "flow.yml",
        "pods:\n  flip:\n    uses: Flipper\n    py_modules: flipper.py\n    with: {mirror: false}\n",
    )
    pod = Flow(load_flow(path, env={})).pods["flip"]
    assert pod.executor.__name__ == "Flipper" and issubclass(pod.executor, Executor)
    assert pod.params.mirror is False and pod.params.size == 224
    # The class is real: it handles an index request.
    request = Request("index", [Document(id="d1")])
    pod.executor(pod.params).handle(request)
    assert [c.kind for c in request.docs[0].chunks] == ["mirror"]

    path.write_text("pods:\n  flip:\n    uses: Flipper\n    py_modules: flipper.py\n    with: {miror: false}\n")
    assert _config_error(path) == f"{path}:5: pods.flip.with.miror: unknown key (check the spelling)"


def test_invalid_yaml_syntax_names_the_line(tmp_path):
    path = _write(
        tmp_path / "flow.yml",
        "pods:\n  loader: {uses: ImageReader}\n  normalizer: uses: ImageNormalizer\n",
    )
    with pytest.raises(ConfigError) as e:
        load_flow(path)
    assert str(e.value) == f"{path}:3: invalid YAML: mapping values are not allowed here"
    with pytest.raises(ConfigError, match=r"^t\.yml:3: invalid YAML: "):
        load_flow_text("pods:\n  loader:\n\tuses: ImageReader\n", "t.yml")


# --- ${VAR} and ${VAR:-default} ------------------------------------------------------------------

VARS_FLOW = (
    "prefetch: ${PREFETCH:-7}\n"
    "pods:\n"
    "  loader: {uses: '${READER:-Image}Reader'}\n"
    "  normalizer:\n"
    "    uses: ImageNormalizer\n"
    "    parallel: ${REPLICAS:-1}\n"
    "    with:\n"
    "      size: ${SIZE}\n"  # line 8
)


def test_variables_with_defaults_unset():
    loaded = load_flow_text(VARS_FLOW, "t.yml", env={"SIZE": "96"})
    assert loaded.config.prefetch == 7
    assert loaded.config.pods["loader"].uses == "ImageReader"
    assert loaded.config.pods["normalizer"].parallel == 1
    assert Flow(loaded).pods["normalizer"].params.size == 96


def test_variables_with_defaults_set():
    env = {"PREFETCH": "3", "READER": "Image", "REPLICAS": "4", "SIZE": "128"}
    flow = Flow(load_flow_text(VARS_FLOW, "t.yml", env=env))
    assert flow.prefetch == 3 and flow.pods["normalizer"].config.parallel == 4
    assert flow.pods["normalizer"].params.size == 128
    # An empty variable counts as unset, as with the shell's ${VAR:-default}.
    assert load_flow_text(VARS_FLOW, "t.yml", env={"PREFETCH": "", "SIZE": "96"}).config.prefetch == 7


def test_variables_come_from_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("SIZE", "160")
    monkeypatch.setenv("PREFETCH", "5")
    monkeypatch.delenv("REPLICAS", raising=False)
    monkeypatch.delenv("READER", raising=False)
    flow = Flow(load_flow_text(VARS_FLOW, "t.yml"))
    assert flow.prefetch == 5 and flow.pods["normalizer"].params.size == 160
    assert flow.pods["normalizer"].config.parallel == 1


def test_an_unset_variable_without_default_names_the_key_and_line():
    with pytest.raises(ConfigError) as e:
        load_flow_text(VARS_FLOW, "t.yml", env={})
    assert str(e.value) == (
        "t.yml:8: pods.normalizer.with.size: environment variable SIZE is not set and ${SIZE} has no default"
    )


def test_a_substituted_value_is_validated_like_a_written_one():
    with pytest.raises(ConfigError, match=r"^t\.yml:6: pods\.normalizer\.parallel: Input should be a valid integer"):
        load_flow_text(VARS_FLOW, "t.yml", env={"SIZE": "96", "REPLICAS": "many"})


# --- executor files: `uses: some-executor.yml` ----------------------------------------------------


def test_an_executor_file_resolves_and_the_pods_with_overrides_its_own(tmp_path):
    _write(tmp_path / "executors" / "flipper.py", FLIPPER_PY)
    _write(
        tmp_path / "executors" / "flipper.yml",
        "uses: Flipper\nwith:\n  mirror: false\n  size: 64\npy_modules: [flipper.py]\n",
    )
    path = _write(
        tmp_path / "flow.yml",
        "pods:\n  flip:\n    uses: executors/flipper.yml\n    with: {size: 128}\n",
    )
    pod = Flow(load_flow(path, env={})).pods["flip"]
    assert pod.executor.__name__ == "Flipper"
    assert pod.params.size == 128  # the pod's with: wins
    assert pod.params.mirror is False  # the file's with: fills the rest


def test_an_executor_file_may_name_a_builtin(tmp_path):
    _write(tmp_path / "small.yml", "uses: ImageNormalizer\nwith: {size: 64, draft: false}\n")
    flow = Flow(load_flow_text("pods:\n  normalizer: {uses: small.yml}\n", "t.yml", base_dir=tmp_path))
    pod = flow.pods["normalizer"]
    assert pod.executor is ImageNormalizer and pod.params.size == 64 and pod.params.draft is False


def test_an_executor_file_takes_one_py_module_as_a_string_like_a_pod_does(tmp_path):
    # A pod accepts `py_modules: file.py`; so should an executor file.
    _write(tmp_path / "flipper.py", FLIPPER_PY)
    _write(tmp_path / "flipper.yml", "uses: Flipper\npy_modules: flipper.py\n")
    flow = Flow(load_flow_text("pods:\n  flip: {uses: flipper.yml}\n", "t.yml", base_dir=tmp_path))
    assert flow.pods["flip"].executor.__name__ == "Flipper"


def test_mistakes_in_an_executor_file_name_that_file(tmp_path):
    exe = _write(tmp_path / "small.yml", "uses: ImageNormalizer\nwiht: {size: 64}\n")
    with pytest.raises(ConfigError) as e:
        Flow(load_flow_text("pods:\n  normalizer: {uses: small.yml}\n", "t.yml", base_dir=tmp_path))
    assert str(e.value) == f"{exe}:2: wiht: unknown key (check the spelling)"

    with pytest.raises(ConfigError, match=r"^t\.yml:2: pods\.normalizer\.uses: cannot read executor file"):
        Flow(load_flow_text("pods:\n  normalizer: {uses: missing.yml}\n", "t.yml", base_dir=tmp_path))

    _write(tmp_path / "twice.yml", "uses: small.yml\n")
    with pytest.raises(ConfigError, match="an executor file must name a class, not another file"):
        Flow(load_flow_text("pods:\n  normalizer: {uses: twice.yml}\n", "t.yml", base_dir=tmp_path))


# --- @requests and Params, checked when the class is created ---------------------------------------


def test_handlers_register_by_kind_and_are_inherited():
    class Both(Executor):
        @requests(on="index")
        def add(self, docs):
            pass

        @requests(on=["search", "delete"])
        def look(self, docs, request):
            pass

    class Child(Both):
        @requests(on="delete")
        def remove(self, docs):
            pass

    assert Both.handlers == {"index": "add", "search": "look", "delete": "look"}
    assert Child.handlers == {"index": "add", "search": "look", "delete": "remove"}
    assert Executor.handlers == {}


@pytest.mark.parametrize(
    "source",
    [
        "def handle_it(self): pass",
        "def handle_it(self, docs, request, extra): pass",
        "def handle_it(self, docs, *, request): pass",
        "def handle_it(self, docs, **kwargs): pass",
        "def handle_it(self, *args): pass",
    ],
)
def test_a_handler_with_a_wrong_signature_fails_when_the_class_is_created(source):
    namespace: dict = {}
    exec(source, namespace)
    handler = requests(on="index")(namespace["handle_it"])
    with pytest.raises(TypeError, match="a handler takes \\(self, docs\\) or \\(self, docs, request\\)"):
        type("Broken", (Executor,), {"handle_it": handler})


def test_a_handler_must_be_a_plain_method():
    with pytest.raises(TypeError, match="@requests goes on a plain method"):

        class Static(Executor):
            @requests(on="index")
            @staticmethod
            def handle_it(docs):
                pass


def test_requests_on_an_unknown_kind_raises():
    with pytest.raises(TypeError, match=r"@requests\(on='bogus'\): the request kinds are index, search, delete"):
        requests(on="bogus")
    with pytest.raises(TypeError, match="bogus"):
        requests(on=["index", "bogus"])


def test_params_must_be_a_pydantic_model_that_forbids_extra_keys():
    with pytest.raises(TypeError, match=r"Plain\.Params must subclass Executor\.Params"):

        class Plain(Executor):
            class Params:
                size = 224

    with pytest.raises(TypeError, match=r"Lax\.Params must forbid extra keys"):

        class Lax(Executor):
            class Params(BaseModel):
                size: int = 224

    with pytest.raises(TypeError, match=r"Allowing\.Params must forbid extra keys"):

        class Allowing(Executor):
            class Params(Executor.Params):
                model_config = ConfigDict(extra="allow")

    class Good(Executor):
        class Params(Executor.Params):
            size: int = 224

    assert Good({"size": 64}).params.size == 64
    with pytest.raises(ValueError, match="sise"):
        Good({"sise": 64})


# --- rendering -------------------------------------------------------------------------------------

RENDER_FLOW = (
    "prefetch: 6\n"
    "pods:\n"
    "  loader:        {uses: ImageReader, parallel: 3}\n"
    "  normalizer:    {uses: ImageNormalizer}\n"
    "  chunk_indexer: {uses: VectorIndexer, shards: 4, polling: all}\n"
    "  doc_indexer:   {uses: DocIndexer, needs: loader, parallel: 2, shards: 2}\n"
    "  join_all:      {uses: _merge, needs: [doc_indexer, chunk_indexer]}\n"
)


def test_describe_lists_every_pod_with_its_inputs_and_scale():
    flow = Flow(load_flow_text(RENDER_FLOW, "render.yml"))
    text = render.describe(flow)
    lines = text.splitlines()
    assert lines[0] == "render.yml  (prefetch 6)"
    assert lines[-1] == "  result <- join_all"
    by_pod = {line.split()[0]: line for line in lines[1:-1]}
    assert list(by_pod) == list(flow.pods)
    assert by_pod["loader"].endswith("<- gateway  [x3 replicas]")
    assert "ImageReader" in by_pod["loader"]
    assert by_pod["normalizer"].rstrip().endswith("<- loader")
    assert by_pod["chunk_indexer"].endswith("<- normalizer  [4 shards, polling all]")
    assert by_pod["doc_indexer"].endswith("<- loader  [x2 replicas, 2 shards, polling any]")
    assert by_pod["join_all"].rstrip().endswith("<- doc_indexer, chunk_indexer")


def test_mermaid_has_every_pod_and_an_edge_per_need():
    flow = Flow(load_flow_text(RENDER_FLOW, "render.yml"))
    text = render.mermaid(flow)
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert '  loader["loader<br/>ImageReader<br/>x3 replicas"]' in lines
    assert '  normalizer["normalizer<br/>ImageNormalizer"]' in lines
    assert '  chunk_indexer["chunk_indexer<br/>VectorIndexer<br/>4 shards, polling all"]' in lines
    assert '  doc_indexer["doc_indexer<br/>DocIndexer<br/>x2 replicas, 2 shards, polling any"]' in lines
    assert '  join_all{{"join_all<br/>_merge"}}' in lines  # a join is drawn as a hexagon
    edges = [line.strip() for line in lines if "-->" in line]
    assert edges == [
        "gateway --> loader",
        "loader --> normalizer",
        "normalizer --> chunk_indexer",
        "loader --> doc_indexer",
        "doc_indexer --> join_all",
        "chunk_indexer --> join_all",
        "join_all --> result([result])",
    ]
    assert sum(len(p.needs) or 1 for p in flow.pods.values()) + 1 == len(edges)


def test_dot_has_every_pod_scale_and_edge():
    flow = Flow(load_flow_text(RENDER_FLOW, "render.yml"))
    text = render.dot(flow)
    assert text.startswith("digraph flow {\n") and text.endswith("}\n")
    assert '"loader" [label="loader\\nImageReader\\nx3 replicas", shape=box3d];' in text
    assert '"normalizer" [label="normalizer\\nImageNormalizer", shape=box];' in text
    assert '"chunk_indexer" [label="chunk_indexer\\nVectorIndexer\\n4 shards, polling all", shape=box3d];' in text
    assert '"doc_indexer" [label="doc_indexer\\nDocIndexer\\nx2 replicas, 2 shards, polling any", shape=box3d];' in text
    assert '"join_all" [label="join_all\\n_merge", shape=diamond];' in text
    edges = re.findall(r'^  "(\w+)" -> "?(\w+)"?;$', text, re.MULTILINE)
    assert edges == [
        ("gateway", "loader"),
        ("loader", "normalizer"),
        ("normalizer", "chunk_indexer"),
        ("loader", "doc_indexer"),
        ("doc_indexer", "join_all"),
        ("chunk_indexer", "join_all"),
        ("join_all", "result"),
    ]


def test_the_builtin_flows_render_every_pod():
    for name in ("index", "query"):
        flow = open_flow(None, name, Options())
        describe, mermaid, dot = render.describe(flow), render.mermaid(flow), render.dot(flow)
        for pod in flow.pods:
            assert f"  {pod}  " in describe
            assert f"  {pod}[" in mermaid or f"  {pod}{{{{" in mermaid
            assert f'  "{pod}" [label=' in dot
        assert "2 shards, polling" in describe and "2 shards, polling" in mermaid and "2 shards, polling" in dot
        edges = sum(len(p.needs) or 1 for p in flow.pods.values()) + 1
        assert mermaid.count(" --> ") == edges and dot.count(" -> ") == edges


def test_the_normalizer_follows_the_encoder_and_a_contradiction_names_both_pods(tmp_path):
    flow = (Path(__file__).resolve().parents[1] / "lookalike" / "flows" / "index.yml").read_text()
    lite1 = flow.replace("{uses: ImageEncoder", "{uses: ImageEncoder, with: {model: efficientnet-lite1}")
    assert lite1 != flow
    (tmp_path / "lite1.yml").write_text(lite1)
    built = open_flow(tmp_path / "lite1.yml", "index")
    assert built.pods["normalizer"].params.size == 240  # type: ignore[attr-defined]
    assert built.spaces()["image"].encoder.endswith("+pre1-240")  # type: ignore[union-attr]
    assert open_flow(None, "index").spaces()["image"].encoder.endswith("+pre1-224")  # type: ignore[union-attr]
    fixed = lite1.replace(
        "{uses: ImageNormalizer, parallel: 2}", "{uses: ImageNormalizer, parallel: 2, with: {size: 224}}"
    )
    (tmp_path / "bad.yml").write_text(fixed)
    with pytest.raises(
        ConfigError,
        match=r"bad.yml:\d+: pods.normalizer.with.size: pod normalizer makes 224x224.*pod encoder needs 240x240",
    ):
        open_flow(tmp_path / "bad.yml", "index")


def test_the_old_name_minranker_still_loads(tmp_path):
    """Workspaces store their flow text, so a flow written with MinRanker must keep working."""
    from lookalike.executors.rankers import BestChunkRanker

    flow = (Path(__file__).resolve().parents[1] / "lookalike" / "flows" / "query.yml").read_text()
    (tmp_path / "old.yml").write_text(flow.replace("BestChunkRanker", "MinRanker"))
    assert open_flow(tmp_path / "old.yml", "query").pods["ranker"].executor is BestChunkRanker
