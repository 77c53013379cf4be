"""Flamenco worker client: a typed client for the worker protocol and a runtime for workers.

* :class:`Client` and :class:`AsyncClient`: one typed method per worker endpoint;
* :mod:`~flamenco_worker_client.exceptions`: every error, as one tree;
* :class:`CredentialStore`: the worker's ID and secret, kept in a 0600 file;
* :class:`Worker`: the runtime; register commands on it with ``@worker.command(name)``;
* :class:`TaskContext`: what a command sees (log, activity, progress, output files);
* :func:`builtin_commands`: the Flamenco Worker 2.x commands.
"""

from .calls import Call, RequestCore
from .client import AsyncClient, Client, manager_root
from .commands import (
    CommandError,
    CommandFailed,
    CommandRegistry,
    InvalidSettings,
    ProcessLimits,
    TaskContext,
    builtin_commands,
    run_process,
)
from .credentials import Credentials, CredentialStore, generate_secret, registration_token
from .events import (
    StateChanged,
    TaskFinished,
    TaskProgress,
    TaskStarted,
    WorkerEvent,
    WorkerListener,
    WorkerState,
)
from .exceptions import (
    BadRequest,
    ConnectError,
    EmptyOutputList,
    FlamencoClientError,
    InvalidResponse,
    ManagerError,
    NetworkError,
    NoTaskTypes,
    RegistrationRefused,
    RequestRejected,
    RequestTimeout,
    ServerError,
    TaskConflict,
    TaskNotFound,
    TokenExpired,
    TransportError,
    Unauthorized,
    UnexpectedStatus,
)
from .reporter import ReportIntervals
from .results import FetchResult, NoStatusChange, NoTask, StatusChangeRequested, StatusResult
from .retry import NO_RETRIES, RetryPolicy
from .update_queue import UpdateQueue
from .worker import EXIT_OK, EXIT_REFUSED, Worker, WorkerTimings, default_data_dir

__version__ = "0.1.0"

__all__ = [
    "EXIT_OK",
    "EXIT_REFUSED",
    "NO_RETRIES",
    "AsyncClient",
    "BadRequest",
    "Call",
    "Client",
    "CommandError",
    "CommandFailed",
    "CommandRegistry",
    "ConnectError",
    "CredentialStore",
    "Credentials",
    "EmptyOutputList",
    "FetchResult",
    "FlamencoClientError",
    "InvalidResponse",
    "InvalidSettings",
    "ManagerError",
    "NetworkError",
    "NoStatusChange",
    "NoTask",
    "NoTaskTypes",
    "ProcessLimits",
    "RegistrationRefused",
    "ReportIntervals",
    "RequestCore",
    "RequestRejected",
    "RequestTimeout",
    "RetryPolicy",
    "ServerError",
    "StateChanged",
    "StatusChangeRequested",
    "StatusResult",
    "TaskConflict",
    "TaskContext",
    "TaskFinished",
    "TaskNotFound",
    "TaskProgress",
    "TaskStarted",
    "TokenExpired",
    "TransportError",
    "Unauthorized",
    "UnexpectedStatus",
    "UpdateQueue",
    "Worker",
    "WorkerEvent",
    "WorkerListener",
    "WorkerState",
    "WorkerTimings",
    "builtin_commands",
    "default_data_dir",
    "generate_secret",
    "manager_root",
    "registration_token",
    "run_process",
]
