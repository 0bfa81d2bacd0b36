"""Schemathesis against the app's own OpenAPI schema, in-process (ASGI), over a real workspace of
generated pictures indexed with the tiny encoder (tests/fixtures/tiny): what is checked is the API's
shape, which does not depend on the model.

Every operation, the writes included, gets a bounded number of generated requests, valid and not;
each answer must be no 5xx and must match the schema: its status is one the route declares, with
the declared content type and a body of the declared shape.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi

import lookalike
from lookalike import Options
from lookalike.server.app import ServerConfig, create_app

from conftest import TINY_FLOWS, quadrants

pytestmark = pytest.mark.slow


# The app answers only to loopback names; schemathesis' ASGI client would say "Host: testserver".
BASE = "http://127.0.0.1"
# Enough to reach every status each operation declares, few enough for seconds per operation.
MAX_EXAMPLES = 30
# A search decodes an image and runs the flow; the first ones also fill caches.
DEADLINE = timedelta(seconds=10)
READY_WAIT_S = 60

# The schema is the same whatever the workspace, and building the app opens nothing, so it is read
# at import. (schemathesis.pytest.from_fixture would load it from a fixture instead, but schemathesis
# 4.32 renames test nodes through an attribute that pytest 9.2 no longer has.) Requests go to the
# real app of the `app` fixture.
schema = schemathesis.openapi.from_dict(
    create_app(ServerConfig(Options(workspace=Path("unused")))).openapi(),
    config=SchemathesisConfig.from_dict(
        {
            "operations": [
                {
                    # A query "image" that is a string but no image is valid by the schema, which cannot
                    # say "decodable as an image"; it gets 400 with the reason. Uploads of non-images
                    # get 200, each file with its error.
                    "include-name": "POST /api/search",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "503"]},
                    },
                },
                {
                    # A cursor is a string by the schema, which cannot say "one this server gave": a made-up
                    # one gets 400 naming it.
                    "include-name": "GET /api/docs",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "503"]}},
                },
                {
                    # Drawn ids are never indexed documents (404), and a drawn folder may lead outside the
                    # indexed folders and the trash (400); nothing was moved, so an undo finds nothing (404).
                    "include-name": "POST /api/dupes/move",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "503"]}},
                },
                {
                    "include-name": "POST /api/dupes/undo",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "503"]}},
                },
                {
                    # The same for a query image; and a drawn result id is never an indexed photo (404), a
                    # drawn box on a workspace without regions is refused (400).
                    "include-name": "POST /api/explain",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "503"]}},
                },
                {
                    "include-name": "POST /api/remove",
                    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "404", "503"]}},
                },
            ]
        }
    ),
)

# Ids of the indexed photos, filled in by the `app` fixture; drawn ids never exist.
REAL_IDS: list[str] = []
# How many of the indexed photos the fuzzed deletes may remove.
DELETABLE = 3
# (method, path template) -> statuses answered, to show what the fuzzing reached.
SEEN: dict[tuple[str, str], set[int]] = {}


@schema.hook
def filter_body(context, body: Any) -> bool:
    """Leave out multipart bodies with a field mutated into an empty list: a form sends an empty
    list as no field at all, so the "invalid" request the server gets is a valid one (a form field
    can only be sent as text, once or repeated)."""
    multipart_search = isinstance(body, dict) and "file" in body  # (a JSON search has no "file")
    return not (multipart_search and any(v == [] for k, v in body.items() if k != "file"))


@schema.hook
def flatmap_path_parameters(context, path_parameters: dict[str, Any]):
    """Mix real ids into the drawn ones, so that images, thumbnails and deletes succeed too. Deletes
    get a few ids of their own, so that the other operations still find the rest."""
    if not path_parameters or "doc_id" not in path_parameters or not REAL_IDS:
        return st.just(path_parameters)
    ids = REAL_IDS[:DELETABLE] if context.operation.method.upper() == "DELETE" else REAL_IDS[DELETABLE:]
    return st.sampled_from([path_parameters, *({**path_parameters, "doc_id": i} for i in ids)])


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[Any]:
    """A writable app (loopback, no token) over nine indexed pictures, loaded and ready."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "photos").mkdir()
    for i in range(9):
        quadrants(i).save(root / "photos" / f"p{i}.png")
    options = Options(workspace=root / "ws", **TINY_FLOWS)
    with lookalike.open(options) as library:
        library.index([root / "photos"])
        REAL_IDS[:] = sorted(d.id for d in library.workspace.store.iter_docs())
    try:
        yield create_app(ServerConfig(options))
    finally:
        REAL_IDS.clear()


@pytest.fixture
def ready(app) -> Any:
    """``app`` with its library loaded. Schemathesis ends an ASGI app's lifespan after each test (and
    so closes the library); entering a client starts it again, and the library loads in the background."""
    with asgi.get_client(app) as client:
        client.base_url = BASE
        deadline = time.monotonic() + READY_WAIT_S
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.05)
    return app


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=DEADLINE,
    # The same examples every run: CI is a gate, and a new random find must not block unrelated
    # work. (To fuzz further by hand, set this False and raise MAX_EXAMPLES.)
    derandomize=True,
    # `ready` runs once per operation, not per example, which is what it is for.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_every_operation_conforms_to_the_schema(case, ready) -> None:
    response = case.call_and_validate(base_url=BASE, app=ready)
    SEEN.setdefault((case.method.upper(), case.path), set()).add(response.status_code)


def test_the_fuzzing_reached_the_writes() -> None:
    """Generated uploads were answered (indexed or refused as non-images) and real documents deleted."""
    if not SEEN:
        pytest.skip("reports on test_every_operation_conforms_to_the_schema, which did not run")
    assert 200 in SEEN[("POST", "/api/index")], SEEN
    assert 200 in SEEN[("DELETE", "/api/docs/{doc_id}")], SEEN
    assert 200 in SEEN[("GET", "/api/docs/{doc_id}/thumbnail")], SEEN
    assert 200 in SEEN[("GET", "/api/docs/{doc_id}/image")], SEEN


def test_the_schema_lists_the_errors_and_models() -> None:
    spec = schema.raw_schema
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            errors = {code for code in op["responses"] if code[0] in "45"}
            assert "400" in errors, (method, path)  # a Host this server does not answer to
            for code in errors:
                assert op["responses"][code]["content"]["application/json"]["schema"] == error_ref, (method, path)
    for op in [spec["paths"]["/api/index"]["post"], spec["paths"]["/api/docs/{doc_id}"]["delete"]]:
        assert {"401", "403", "503"} <= set(op["responses"])
    ok = spec["paths"]["/api/search"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/SearchResponse"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # 422s are ours, like every error
