"""Package-level promises: the public names, and what the package imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import flamenco_worker_client

PUBLIC_NAMES = {
    "EXIT_OK", "EXIT_REFUSED", "NO_RETRIES", "AsyncClient", "BadRequest", "Call", "Client",
    "CommandError", "CommandFailed", "CommandRegistry", "ConnectError", "CredentialStore",
    "Credentials", "EmptyOutputList", "FetchResult", "FlamencoClientError", "InvalidResponse",
    "InvalidSettings", "ManagerError", "NetworkError", "NoStatusChange", "NoTask", "NoTaskTypes",
    "ProcessLimits", "RegistrationRefused", "ReportIntervals", "RequestCore", "RequestRejected",
    "RequestTimeout", "RetryPolicy", "ServerError", "StateChanged", "StatusChangeRequested",
    "StatusResult", "TaskConflict", "TaskContext", "TaskFinished", "TaskNotFound",
    "TaskProgress", "TaskStarted", "TokenExpired", "TransportError", "Unauthorized",
    "UnexpectedStatus", "UpdateQueue", "Worker", "WorkerEvent", "WorkerListener", "WorkerState",
    "WorkerTimings", "builtin_commands", "default_data_dir", "generate_secret", "manager_root",
    "registration_token", "run_process",
}  # fmt: skip

ALLOWED_TOP_LEVEL = {"attr", "attrs", "httpx", "flamenco_protocol", "flamenco_worker_client"}


def test_the_public_names_are_exactly_these() -> None:
    assert set(flamenco_worker_client.__all__) == PUBLIC_NAMES
    for name in PUBLIC_NAMES:
        assert getattr(flamenco_worker_client, name) is not None


def test_public_classes_and_functions_have_docstrings() -> None:
    for name in PUBLIC_NAMES:
        value = getattr(flamenco_worker_client, name)
        ours = getattr(value, "__module__", "").startswith("flamenco_worker_client")
        if ours and (isinstance(value, type) or callable(value)):
            assert value.__doc__, f"{name} has no docstring"


def test_the_package_imports_only_the_standard_library_httpx_and_the_protocol() -> None:
    package = Path(flamenco_worker_client.__file__).parent
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in ALLOWED_TOP_LEVEL, (
                    f"{source.name} imports {name}"
                )
