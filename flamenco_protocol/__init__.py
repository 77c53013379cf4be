"""The Flamenco 2.x protocol, pure: documents, codec, IDs, statuses, state machines, endpoints.

Nothing here does I/O. The manager, the worker client and Shaman all speak through these
definitions, so that each wire document and each rule exists once.

* :mod:`~flamenco_protocol.documents`: the wire documents (frozen attrs classes);
* :mod:`~flamenco_protocol.codec`: JSON to documents and back, with the Go manager's rules;
* :mod:`~flamenco_protocol.ids`: ObjectId-compatible IDs that sort in creation order;
* :mod:`~flamenco_protocol.statuses`: task, worker and job statuses;
* :mod:`~flamenco_protocol.task_states`, :mod:`~flamenco_protocol.worker_states`,
  :mod:`~flamenco_protocol.job_states`: the state machines and the decisions built on them;
* :mod:`~flamenco_protocol.endpoints`: the catalogue of every worker and Shaman endpoint;
* :mod:`~flamenco_protocol.errors`: the exceptions.
"""

from .codec import decode, dumps, encode, loads
from .documents import (
    Command,
    FileProduced,
    Job,
    MayKeepRunningResponse,
    ScheduleInfo,
    Task,
    TaskMetrics,
    TaskUpdate,
    TimeOfDay,
    Worker,
    WorkerBlacklistEntry,
    WorkerRef,
    WorkerRegistration,
    WorkerSignonDoc,
    WorkerStatusRequest,
)
from .endpoints import ENDPOINTS, Auth, Endpoint, endpoint
from .errors import DecodeError, InvalidObjectId, InvalidTransition, ProtocolError
from .ids import ObjectId
from .statuses import JobStatus, TaskStatus, WorkerStatus

__version__ = "0.1.0"

__all__ = [
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
]
