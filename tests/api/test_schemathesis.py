"""schemathesis over /api/openapi.json, in-process: no 500s, every answer matches the document.

Positive generation only: the worker protocol decodes leniently like Go (unknown keys ignored,
missing ones zero), so "negative" bodies are often valid on purpose. User routes get a user
token, worker routes a registered worker's credentials; the event stream never ends, so it is
left out (tests/api/test_workers_api.py covers it).
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from flamenco_manager.manager import Manager  # noqa: E402
from flamenco_manager.web.app import create_app  # noqa: E402
from flamenco_protocol.documents import WorkerRegistration  # noqa: E402
from tests.manager.harness import (  # noqa: E402
    BACKENDS,
    database_server,
    fresh_database,
    make_settings,
)

MAX_EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# Filled by the fixture: the schema is copied per operation, so it cannot carry them.
HEADERS: dict[str, dict[str, str]] = {}


@pytest.fixture(scope="module", params=BACKENDS)
def farm_schema(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The document of a manager on each backend, for the whole module (one database each)."""
    with (
        tempfile.TemporaryDirectory(prefix="flamenco-schemathesis-") as directory,
        fresh_database(database_server(request.param)) as database,
    ):
        manager = Manager(make_settings(Path(directory), database=database))
        try:
            yield _schema_of(manager)
        finally:
            manager.close()


def _schema_of(manager: Manager) -> Any:
    app = create_app(manager, run_loops=False)
    token = manager.mint_user_token("schemathesis", timedelta(hours=1))
    worker = manager.workers.register(
        WorkerRegistration(
            secret="s3cret", platform="linux", supported_task_types=("sleep",), nickname="st"
        ),
        "127.0.0.1",
    )
    # Something to look at: a job with tasks.
    asyncio.run(
        manager.submission.submit(
            name="fixture",
            job_type="sleep",
            settings={"frames": "1-3", "chunk_size": 1, "time_in_seconds": 1},
        )
    )
    basic = base64.b64encode(f"{worker.id}:s3cret".encode()).decode()
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE], max_examples=MAX_EXAMPLES, allow_x00=False
    )
    HEADERS["user"] = {"Authorization": f"Bearer {token}"}
    HEADERS["worker"] = {"Authorization": f"Basic {basic}"}
    return schema


# The exclusion belongs here: the lazy schema replaces the filters of the fixture's schema.
schema = schemathesis.pytest.from_fixture("farm_schema").exclude(path="/api/events")


@schema.parametrize()
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_api_keeps_its_document(case: Any) -> None:
    security = str(case.operation.definition.raw.get("security", []))
    role = "worker" if "workerBasic" in security else "user"
    case.call_and_validate(headers=HEADERS[role], checks=CHECKS)
