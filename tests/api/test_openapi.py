"""The OpenAPI document covers exactly the app's routes, and is valid OpenAPI 3.1."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest
from starlette.routing import Route

from flamenco_manager.manager import Manager
from flamenco_manager.web.app import create_app
from tests.manager.harness import make_settings


def _operations_of_app(tmp_path: Path, **settings: object) -> tuple[set[tuple[str, str]], dict]:  # type: ignore[type-arg]
    # SQLite only: the routes and the document do not depend on the database (the schemathesis
    # test checks the answers on both backends).
    manager = Manager(make_settings(tmp_path, **settings))
    app = create_app(manager, run_loops=False)
    served = {
        (method.lower(), route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }

    async def fetch() -> dict:  # type: ignore[type-arg]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://m") as client:
            return (await client.get("/api/openapi.json")).json()  # type: ignore[no-any-return]

    document = anyio.run(fetch)
    manager.close()
    return served, document


@pytest.mark.parametrize("shaman", [True, False])
def test_every_route_is_documented_and_every_operation_served(tmp_path: Path, shaman: bool) -> None:
    served, document = _operations_of_app(tmp_path, shaman_enabled=shaman)
    documented = {
        (method, path) for path, operations in document["paths"].items() for method in operations
    }
    assert served - documented == set(), "routes missing from the OpenAPI document"
    assert documented - served == set(), "documented operations the app does not serve"
    assert any(path.startswith("/files/") for _, path in documented) is shaman


def test_the_document_is_valid_openapi_31(tmp_path: Path) -> None:
    openapi_spec_validator = pytest.importorskip("openapi_spec_validator")
    _, document = _operations_of_app(tmp_path)
    openapi_spec_validator.validate(document)
    operation_ids = [
        operation["operationId"]
        for operations in document["paths"].values()
        for operation in operations.values()
    ]
    assert len(operation_ids) == len(set(operation_ids))


def test_document_schemas_follow_the_wire_fields(tmp_path: Path) -> None:
    _, document = _operations_of_app(tmp_path)
    schemas = document["components"]["schemas"]
    task = schemas["Task"]
    assert task["properties"]["_id"]["pattern"]
    assert "_id" not in task.get("required", [])  # omitempty
    assert "commands" in task["required"]
    assert task["properties"]["commands"]["items"] == {"$ref": "#/components/schemas/Command"}
    job = schemas["ApiJob"]
    assert job["properties"]["task_counts"]["additionalProperties"] == {"type": "integer"}
    may_i_run = schemas["MayKeepRunningResponse"]
    assert set(may_i_run["properties"]) == {"may_keep_running", "reason", "status_requested"}
