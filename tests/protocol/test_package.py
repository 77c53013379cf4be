"""Package-level promises: what flamenco_protocol imports, and its public names."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import flamenco_protocol

# "attr" is the attrs distribution's older name for itself.
ALLOWED_TOP_LEVEL = {"attr", "attrs", "cattrs", "flamenco_protocol"}
PACKAGE_DIR = Path(flamenco_protocol.__file__).parent


def test_the_source_imports_only_the_standard_library_attrs_and_cattrs() -> None:
    for source in PACKAGE_DIR.glob("*.py"):
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


def test_flamenco_protocol_imports_only_the_standard_library_attrs_and_cattrs() -> None:
    # A fresh interpreter, so that nothing else the test run imported hides in sys.modules.
    script = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import flamenco_protocol, flamenco_protocol.codec, flamenco_protocol.endpoints\n"
        "import flamenco_protocol.task_states, flamenco_protocol.worker_states\n"
        "import flamenco_protocol.job_states\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    imported = {name.split(".")[0] for name in result.stdout.split()}
    foreign = {
        name
        for name in imported - ALLOWED_TOP_LEVEL
        if name not in sys.stdlib_module_names and not name.startswith("_")
    }
    # typing_extensions comes with cattrs itself; this package does not import it.
    assert foreign <= {"typing_extensions"}, foreign


def test_public_names_are_exported_and_documented() -> None:
    # The list is the package's promise: adding a name is fine, losing one breaks users.
    assert set(flamenco_protocol.__all__) == EXPORTED
    for name in flamenco_protocol.__all__:
        assert getattr(flamenco_protocol, name).__doc__, name


def test_every_module_documents_its_public_names() -> None:
    for module_name in MODULES:
        module = importlib.import_module(f"flamenco_protocol.{module_name}")
        assert module.__doc__, module_name
        for name in module.__all__:
            item = getattr(module, name)
            if callable(item):
                assert item.__doc__, f"{module_name}.{name}"


MODULES = (
    "codec",
    "documents",
    "endpoints",
    "errors",
    "ids",
    "job_states",
    "statuses",
    "task_states",
    "worker_states",
)

EXPORTED = {
    "ENDPOINTS",
    "Auth",
    "Command",
    "DecodeError",
    "Endpoint",
    "FileProduced",
    "InvalidObjectId",
    "InvalidTransition",
    "Job",
    "JobStatus",
    "MayKeepRunningResponse",
    "ObjectId",
    "ProtocolError",
    "ScheduleInfo",
    "Task",
    "TaskMetrics",
    "TaskStatus",
    "TaskUpdate",
    "TimeOfDay",
    "Worker",
    "WorkerBlacklistEntry",
    "WorkerRef",
    "WorkerRegistration",
    "WorkerSignonDoc",
    "WorkerStatus",
    "WorkerStatusRequest",
    "decode",
    "dumps",
    "encode",
    "endpoint",
    "loads",
}
