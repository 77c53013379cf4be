"""Flamenco worker client: a typed client for the worker protocol and a runtime for workers.

* :class:`Client` and :class:`AsyncClient`: one typed method per worker endpoint;
* :mod:`~flamenco_worker_client.exceptions`: every error, as one tree;
* :class:`CredentialStore`: the worker's ID and secret, kept in a 0600 file.
"""

from .calls import Call, RequestCore
from .client import AsyncClient, Client, manager_root
from .credentials import Credentials, CredentialStore, generate_secret, registration_token
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
from .results import FetchResult, NoStatusChange, NoTask, StatusChangeRequested, StatusResult
from .retry import NO_RETRIES, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "NO_RETRIES",
    "AsyncClient",
    "BadRequest",
    "Call",
    "Client",
    "ConnectError",
    "CredentialStore",
    "Credentials",
    "EmptyOutputList",
    "FetchResult",
    "FlamencoClientError",
    "InvalidResponse",
    "ManagerError",
    "NetworkError",
    "NoStatusChange",
    "NoTask",
    "NoTaskTypes",
    "RegistrationRefused",
    "RequestCore",
    "RequestRejected",
    "RequestTimeout",
    "RetryPolicy",
    "ServerError",
    "StatusChangeRequested",
    "StatusResult",
    "TaskConflict",
    "TaskNotFound",
    "TokenExpired",
    "TransportError",
    "Unauthorized",
    "UnexpectedStatus",
    "generate_secret",
    "manager_root",
    "registration_token",
]
