"""The user REST API under ``/api/``: HTTP in, service call, HTTP out. No rule lives here.

Every route is declared once in :func:`user_api_routes` as an :class:`ApiRoute`: method, path,
the document of its JSON body, its query parameters and every reply with its document. The
Starlette routes and the OpenAPI document (:mod:`flamenco_manager.web.openapi`) are both built
from those declarations.

Errors are JSON :class:`~flamenco_manager.web.api_documents.ApiError` documents: 400 for a body
or query that is malformed or breaks a rule (naming each bad field), 401/498 for a missing, bad,
revoked or expired token, 404 for unknown or malformed IDs, 409 when the state of the job, task
or worker does not allow the request, 413 for a body over the route's limit.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

import attrs
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from flamenco_manager import __version__
from flamenco_manager.manager import Manager
from flamenco_manager.services.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServiceError,
    StorageFailure,
)
from flamenco_manager.services.events import DEFAULT_BACKLOG, KINDS, Event
from flamenco_manager.services.farm import BlocklistEntry
from flamenco_manager.services.jobs import JobSummary, TaskDetails
from flamenco_manager.services.workers import worker_document
from flamenco_manager.storage.workers import WorkerRecord
from flamenco_protocol import codec
from flamenco_protocol.documents import (
    ScheduleInfo,
    TaskMetrics,
    Worker,
    WorkerBlacklistEntry,
)
from flamenco_protocol.errors import DecodeError, InvalidTransition
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import JobStatus, TaskStatus
from shaman_core.errors import TokenError

from .api_documents import (
    ApiError,
    ApiJob,
    ApiTask,
    Blocklist,
    BlocklistCleared,
    DeletedJobs,
    FarmStatusDoc,
    HealthDoc,
    JobList,
    JobPriorityChange,
    JobStatusChange,
    JobSubmissionDoc,
    JobTypeInfo,
    JobTypeList,
    TaskAction,
    TaskList,
    WorkerList,
    WorkerStatusChange,
)
from .metrics import PROMETHEUS_TEXT, RequestCounts, prometheus_text
from .responses import JSON, TEXT, BodyTooLarge, load_document, read_body

__all__ = [
    "ApiReply",
    "ApiRoute",
    "QueryParameter",
    "error",
    "json_document",
    "user_api_routes",
]

SMALL_BODY: Final = 64 * 1024
JOB_BODY: Final = 16 * 1024 * 1024
"""A ``custom`` job lists its tasks and commands in the body."""
HEARTBEAT_SECONDS: Final = 15.0
"""How often the event stream sends a comment, so proxies and clients see it is alive."""
ENCODED_EVENTS_KEPT: Final = 2 * DEFAULT_BACKLOG
"""Events kept encoded for the event streams: more than a stream may fall behind."""
MAX_PAGE: Final = 500
MAX_TASK_PAGE: Final = 1000
"""Tasks one page of ``/api/jobs/{job_id}/tasks?limit=…`` may hold."""
MAX_IDS: Final = 200
"""IDs one ``?id=…`` of a job's tasks or of the workers may name (about 5 KiB of query string)."""
EVENT_STREAM: Final = "text/event-stream"
JPEG: Final = "image/jpeg"

UserHandler = Callable[[Request, str], Awaitable[Response]]


@attrs.frozen
class ApiReply:
    """One status code a route answers with."""

    status: int
    meaning: str
    document: type | None = None
    """The document of a JSON body; ``None`` with ``media_type`` JSON means an ApiError."""
    media_type: str | None = JSON
    """``None`` for no body."""


@attrs.frozen
class QueryParameter:
    """One query parameter of a route."""

    name: str
    description: str
    schema: dict[str, Any]


@attrs.frozen
class ApiRoute:
    """One operation of the user API."""

    name: str
    method: str
    path: str
    summary: str
    handler: UserHandler
    replies: tuple[ApiReply, ...]
    request: type | None = None
    """The JSON body's document."""
    body_required: bool = True
    query: tuple[QueryParameter, ...] = ()
    auth: bool = True

    @property
    def path_parameters(self) -> list[str]:
        """The names of the ``{variables}`` in the path."""
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


def json_document(doc: Any, status: int = 200) -> Response:
    """A document as JSON (newline-terminated, like the worker API's answers)."""
    return Response(codec.dumps(doc) + b"\n", status_code=status, media_type=JSON)


def error(status: int, message: str, errors: Sequence[str] = ()) -> Response:
    """A JSON :class:`ApiError` answer."""
    return json_document(ApiError(message=message, errors=tuple(errors)), status)


_SERVICE_STATUS: Final[dict[type[ServiceError], int]] = {
    NotFound: 404,
    Conflict: 409,
    Forbidden: 403,
    Invalid: 400,
    StorageFailure: 507,
}


def _service_error(exc: ServiceError) -> Response:
    problems = getattr(exc, "problems", None)
    if problems is not None:  # JobSettingsError: one entry per bad setting.
        return error(400, exc.message, [f"settings.{problem}" for problem in problems])
    for kind, status in _SERVICE_STATUS.items():
        if isinstance(exc, kind):
            return error(status, exc.message)
    return error(500, exc.message)


class _BadRequest(Exception):
    """A path or query parameter is malformed: 400 (or 404 for IDs)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _guard(manager: Manager, route: ApiRoute) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, then run the handler, turning every known failure into its answer."""
    handler = route.handler

    async def guarded(request: Request) -> Response:
        user = ""
        if route.auth:
            try:
                user = manager.user_auth.authenticate(request.headers, request.cookies)
            except TokenError as exc:
                return error(exc.status, str(exc))
        try:
            return await handler(request, user)
        except _BadRequest as exc:
            return error(exc.status, exc.message)
        except DecodeError as exc:
            return error(400, f"The body is not a valid {exc.document}.", exc.errors)
        except BodyTooLarge as exc:
            return error(413, str(exc))
        except InvalidTransition as exc:
            return error(409, str(exc))
        except ServiceError as exc:
            return _service_error(exc)

    return guarded


# --- request parsing -------------------------------------------------------------------------


def _path_id(request: Request, name: str) -> str:
    value = str(request.path_params[name])
    if not ObjectId.is_valid(value):
        raise _BadRequest(404, f"{name}: not a 24-character hexadecimal ID: {value!r}")
    return value.lower()


async def _body(request: Request, doc: type, limit: int = SMALL_BODY, *, required: bool) -> Any:
    raw = await read_body(request, limit)
    if not raw.strip():
        if required:
            raise _BadRequest(400, f"A JSON {doc.__name__} body is required.")
        return doc()
    return load_document(doc, raw)


def _query_list(request: Request, name: str) -> list[str]:
    """Values of a repeatable, comma-separable query parameter."""
    return [
        part.strip()
        for value in request.query_params.getlist(name)
        for part in value.split(",")
        if part.strip()
    ]


def _query_ids(request: Request, what: str) -> list[str] | None:
    """The object IDs of the ``id`` query parameter (at most :data:`MAX_IDS`), lower case;
    ``None`` without one."""
    if "id" not in request.query_params:
        return None
    ids = _query_list(request, "id")
    malformed = [value for value in ids if not ObjectId.is_valid(value)]
    if malformed:
        raise _BadRequest(400, f"id: not 24-character hexadecimal IDs: {malformed[:5]}")
    if len(ids) > MAX_IDS:
        raise _BadRequest(400, f"id: at most {MAX_IDS} {what} IDs, not {len(ids)}")
    return [value.lower() for value in ids]


def _ids_parameter(plural: str, one: str) -> QueryParameter:
    """The ``id`` query parameter that :func:`_query_ids` reads, as the API documents it."""
    return QueryParameter(
        "id",
        f"only these {plural} (repeated or comma-separated, at most {MAX_IDS}); "
        f"IDs of no {one} are left out",
        {"type": "string"},
    )


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(400, f"{name}: expected an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise _BadRequest(400, f"{name}: must be between {low} and {high}, not {value}")
    return value


# --- documents from service results ------------------------------------------------------------


def _job(summary: JobSummary) -> ApiJob:
    job = summary.job
    return ApiJob(
        id=job.id,
        created=job.created,
        updated=job.updated,
        name=job.name,
        job_type=job.job_type,
        description=job.description,
        status=job.status,
        status_reason=job.status_reason,
        priority=job.priority,
        start_paused=job.start_paused,
        submitter=job.submitter,
        settings=job.settings,
        task_counts=summary.task_counts,
    )


def _task(details: TaskDetails) -> ApiTask:
    task = details.task
    return ApiTask(
        id=task.id,
        job=task.job_id,
        name=task.name,
        status=task.status,
        priority=task.priority,
        job_priority=task.job_priority,
        job_type=task.job_type,
        task_type=task.task_type,
        commands=details.commands,
        parents=details.parents,
        activity=task.activity,
        worker=task.worker_nickname,
        worker_id=task.worker_id,
        failed_by_workers=details.failed_by_workers,
        task_progress_percentage=task.task_progress_percentage,
        current_command_idx=task.current_command_idx,
        command_progress_percentage=task.command_progress_percentage,
        metrics=codec.decode(TaskMetrics, task.metrics) if task.metrics else None,
        last_updated=task.last_updated,
        log=details.log_tail,
    )


def _task_list(
    manager: Manager,
    job_id: str,
    task_ids: list[str] | None = None,
    *,
    statuses: Sequence[str] = (),
    offset: int = 0,
    limit: int | None = None,
) -> TaskList:
    tasks = manager.jobs.tasks(job_id, task_ids, statuses=statuses, offset=offset, limit=limit)
    return TaskList(tasks=tuple(_task(task) for task in tasks))


def _workers(
    records: Sequence[WorkerRecord], manager: Manager, *, details: bool = False
) -> list[Worker]:
    """The documents of workers, each with the name and job of its current task (one query for
    them all) and, with ``details``, its blocklist."""
    current = manager.jobs.names_and_jobs(
        {str(record.current_task) for record in records if record.current_task is not None}
    )
    documents = []
    for record in records:
        doc = worker_document(record)
        name, job = current.get(str(record.current_task), ("", ""))
        doc = attrs.evolve(doc, current_task_name=name, current_job=ObjectId(job) if job else None)
        if details:
            doc = attrs.evolve(doc, blacklist=_blocklist(manager.farm.blocklist(str(record.id))))
        documents.append(doc)
    return documents


def _blocklist(entries: Iterable[BlocklistEntry]) -> tuple[WorkerBlacklistEntry, ...]:
    return tuple(
        WorkerBlacklistEntry(
            created=entry.created,
            worker_id=entry.worker_id,
            job_id=entry.job_id,
            task_type=entry.task_type,
        )
        for entry in entries
    )


def _worker(record: WorkerRecord, manager: Manager) -> Worker:
    """One worker's document, with its blocklist."""
    [document] = _workers([record], manager, details=True)
    return document


# --- the routes --------------------------------------------------------------------------------

_E400 = ApiReply(400, "the body or a query parameter is malformed; `errors` names each field")
_E404_JOB = ApiReply(404, "no such job, or the ID is malformed")
_E404_TASK = ApiReply(404, "no such task, or the ID is malformed")
_E404_WORKER = ApiReply(404, "no such worker, or the ID is malformed")
_E409 = ApiReply(409, "the job's, task's or worker's state does not allow this")
_E413 = ApiReply(413, "the body is larger than this endpoint accepts")


def user_api_routes(
    manager: Manager,
    *,
    heartbeat: float = HEARTBEAT_SECONDS,
    requests: RequestCounts | None = None,
) -> list[ApiRoute]:
    """Every route of the user API, bound to ``manager``; ``/metrics`` reports ``requests``,
    the answers the app counts."""
    encoded = _EncodedEvents()

    async def list_job_types(request: Request, user: str) -> Response:
        registry = manager.job_types
        return json_document(
            JobTypeList(
                job_types=tuple(
                    JobTypeInfo(
                        name=name,
                        description=registry.get(name).description,
                        settings_schema=registry.get(name).settings_schema(),
                    )
                    for name in registry.names()
                )
            )
        )

    async def submit_job(request: Request, user: str) -> Response:
        doc = await _body(request, JobSubmissionDoc, JOB_BODY, required=True)
        assert isinstance(doc, JobSubmissionDoc)
        if doc.type and doc.job_type and doc.type != doc.job_type:
            raise _BadRequest(400, "type and job_type name different job types; give one")
        job_type = doc.type or doc.job_type
        if not job_type:
            raise _BadRequest(400, "type: required (the job type, see GET /api/job-types)")
        job = await manager.submission.submit(
            name=doc.name,
            job_type=job_type,
            settings=doc.settings,
            priority=doc.priority,
            description=doc.description,
            start_paused=doc.start_paused,
            submitter=user,
            platform=doc.platform,
        )
        return json_document(_job(manager.jobs.summary(str(job.id))), 201)

    async def list_jobs(request: Request, user: str) -> Response:
        statuses = _query_list(request, "status")
        unknown = [status for status in statuses if status not in set(JobStatus)]
        if unknown:
            raise _BadRequest(400, f"status: unknown job status(es) {', '.join(unknown)}")
        page = manager.jobs.page(
            statuses=statuses,
            job_types=_query_list(request, "type"),
            name_contains=request.query_params.get("search", ""),
            limit=_query_int(request, "limit", 50, 1, MAX_PAGE),
            cursor=request.query_params.get("cursor", ""),
        )
        return json_document(
            JobList(jobs=tuple(_job(job) for job in page.jobs), next_cursor=page.next_cursor)
        )

    async def get_job(request: Request, user: str) -> Response:
        return json_document(_job(manager.jobs.summary(_path_id(request, "job_id"))))

    async def delete_job(request: Request, user: str) -> Response:
        manager.jobs.delete(_path_id(request, "job_id"))
        return Response(status_code=204)

    async def delete_finished_jobs(request: Request, user: str) -> Response:
        raw = request.query_params.get("finished_before")
        if not raw:
            raise _BadRequest(400, "finished_before: required (an RFC 3339 time)")
        try:
            before = codec.parse_time(raw)
        except ValueError as exc:
            raise _BadRequest(400, f"finished_before: {exc}") from None
        deleted = await manager.jobs.delete_finished(before)
        return json_document(DeletedJobs(deleted=tuple(ObjectId(job) for job in deleted)))

    async def job_tasks(request: Request, user: str) -> Response:
        job_id = _path_id(request, "job_id")
        task_ids = _query_ids(request, "task")
        statuses = _query_list(request, "status")
        unknown = [status for status in statuses if status not in set(TaskStatus)]
        if unknown:
            raise _BadRequest(400, f"status: unknown task status(es) {', '.join(unknown)}")
        offset = _query_int(request, "offset", 0, 0, 2**31)
        limit = (
            _query_int(request, "limit", MAX_TASK_PAGE, 1, MAX_TASK_PAGE)
            if "limit" in request.query_params
            else None
        )

        def answer() -> Response:
            tasks = _task_list(
                manager, job_id, task_ids, statuses=statuses, offset=offset, limit=limit
            )
            return json_document(tasks)

        if task_ids is not None:
            return answer()
        # A whole job: 0.75 s of reading and encoding for 10,000 tasks, on a thread so that the
        # event loop goes on answering workers meanwhile.
        return await run_in_threadpool(answer)

    async def set_job_status(request: Request, user: str) -> Response:
        job_id = _path_id(request, "job_id")
        doc = await _body(request, JobStatusChange, required=True)
        assert isinstance(doc, JobStatusChange)
        allowed = ("cancel-requested", "paused", "queued", "requeued")
        if doc.status not in allowed:
            raise _BadRequest(
                400, f"status: must be one of {', '.join(allowed)}, not {doc.status!r}"
            )
        manager.jobs.get(job_id)  # 404 before 409.
        manager.jobs.request_status(job_id, doc.status, doc.reason)
        return json_document(_job(manager.jobs.summary(job_id)))

    async def set_job_priority(request: Request, user: str) -> Response:
        job_id = _path_id(request, "job_id")
        doc = await _body(request, JobPriorityChange, required=True)
        assert isinstance(doc, JobPriorityChange)
        manager.jobs.set_priority(job_id, doc.priority)
        return json_document(_job(manager.jobs.summary(job_id)))

    async def get_task(request: Request, user: str) -> Response:
        lines = _query_int(request, "log_lines", 10, 0, 1000)
        return json_document(
            _task(manager.jobs.task(_path_id(request, "task_id"), log_lines=lines))
        )

    async def requeue_task(request: Request, user: str) -> Response:
        task_id = _path_id(request, "task_id")
        doc = await _body(request, TaskAction, required=False)
        manager.jobs.requeue_task(task_id, doc.reason)
        return json_document(_task(manager.jobs.task(task_id)))

    async def cancel_task(request: Request, user: str) -> Response:
        task_id = _path_id(request, "task_id")
        doc = await _body(request, TaskAction, required=False)
        manager.jobs.cancel_task(task_id, doc.reason)
        return json_document(_task(manager.jobs.task(task_id)))

    async def list_workers(request: Request, user: str) -> Response:
        records = manager.workers.list(_query_ids(request, "worker"))
        return json_document(WorkerList(workers=tuple(_workers(records, manager))))

    async def get_worker(request: Request, user: str) -> Response:
        record = manager.workers.get(_path_id(request, "worker_id"))
        return json_document(_worker(record, manager))

    async def forget_worker(request: Request, user: str) -> Response:
        manager.workers.forget(_path_id(request, "worker_id"))
        return Response(status_code=204)

    async def set_worker_status(request: Request, user: str) -> Response:
        worker_id = _path_id(request, "worker_id")
        doc = await _body(request, WorkerStatusChange, required=True)
        assert isinstance(doc, WorkerStatusChange)
        allowed = ("asleep", "awake", "shutdown")
        if doc.status not in allowed:
            raise _BadRequest(
                400, f"status: must be one of {', '.join(allowed)}, not {doc.status!r}"
            )
        record = manager.workers.request_status(worker_id, doc.status, lazy=doc.lazy)
        return json_document(_worker(record, manager))

    async def get_sleep_schedule(request: Request, user: str) -> Response:
        record = manager.workers.get(_path_id(request, "worker_id"))
        return json_document(worker_document(record).sleep_schedule)

    async def set_sleep_schedule(request: Request, user: str) -> Response:
        worker_id = _path_id(request, "worker_id")
        doc = await _body(request, ScheduleInfo, required=True)
        assert isinstance(doc, ScheduleInfo)
        record = manager.workers.set_sleep_schedule(worker_id, doc)
        return json_document(worker_document(record).sleep_schedule)

    async def get_blocklist(request: Request, user: str) -> Response:
        entries = manager.farm.blocklist(_path_id(request, "worker_id"))
        return json_document(Blocklist(entries=_blocklist(entries)))

    async def clear_blocklist(request: Request, user: str) -> Response:
        worker_id = _path_id(request, "worker_id")
        job_id = request.query_params.get("job_id")
        task_type = request.query_params.get("task_type")
        if (job_id is None) != (task_type is None):
            raise _BadRequest(400, "job_id and task_type: give both (one entry) or neither (all)")
        if job_id is not None and not ObjectId.is_valid(job_id):
            raise _BadRequest(400, f"job_id: not a 24-character hexadecimal ID: {job_id!r}")
        removed = manager.farm.clear_blocklist(
            worker_id, job_id=job_id.lower() if job_id else None, task_type=task_type
        )
        return json_document(BlocklistCleared(removed=removed))

    async def farm_status(request: Request, user: str) -> Response:
        status = manager.farm.status()
        return json_document(
            FarmStatusDoc(
                state=status.state.value,
                workers=status.workers,
                jobs=status.jobs,
                tasks=status.tasks,
            )
        )

    async def health(request: Request, user: str) -> Response:
        database = manager.farm.database_kind()
        return json_document(HealthDoc(version=__version__, database=database))

    async def metrics(request: Request, user: str) -> Response:
        status = manager.farm.status(every_task_status=True)
        body = prometheus_text(
            status,
            version=__version__,
            database=manager.farm.database_kind(),
            event_streams=manager.events.subscriber_count,
            requests=requests,
        )
        return Response(body, media_type=PROMETHEUS_TEXT)

    async def latest_image(request: Request, user: str) -> Response:
        path = manager.latest_image.output_path
        if not path.is_file():
            return error(404, "No image has been rendered yet.")
        return FileResponse(path, media_type=JPEG, headers={"Cache-Control": "no-cache"})

    async def events(request: Request, user: str) -> Response:
        kinds = _query_list(request, "types") or sorted(KINDS)
        unknown = [kind for kind in kinds if kind not in KINDS]
        if unknown:
            raise _BadRequest(
                400, f"types: unknown event type(s) {', '.join(unknown)}; use job, task, worker"
            )

        def still_allowed() -> bool:
            try:
                manager.user_auth.authenticate(request.headers, request.cookies)
            except TokenError:
                return False
            return True

        return StreamingResponse(
            _event_stream(manager, kinds, heartbeat, encoded, still_allowed),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    job_id_404 = (_E404_JOB,)
    return [
        ApiRoute(
            "list_job_types",
            "GET",
            "/api/job-types",
            "The job types this manager compiles, with their settings as JSON Schema.",
            list_job_types,
            (ApiReply(200, "the job types", JobTypeList),),
        ),
        ApiRoute(
            "submit_job",
            "POST",
            "/api/jobs",
            "Submit a job: its settings are validated and compiled into tasks at once.",
            submit_job,
            (
                ApiReply(201, "stored with its tasks (or construction-failed)", ApiJob),
                ApiReply(400, "bad name, type, priority or settings; `errors` lists each"),
                _E413,
            ),
            request=JobSubmissionDoc,
        ),
        ApiRoute(
            "list_jobs",
            "GET",
            "/api/jobs",
            "Jobs, newest first, filtered and paginated.",
            list_jobs,
            (ApiReply(200, "a page of jobs", JobList), _E400),
            query=(
                QueryParameter(
                    "status", "only jobs in these statuses (comma-separated)", {"type": "string"}
                ),
                QueryParameter(
                    "type", "only jobs of these job types (comma-separated)", {"type": "string"}
                ),
                QueryParameter(
                    "search", "only jobs whose name contains this text", {"type": "string"}
                ),
                QueryParameter(
                    "limit",
                    "jobs per page (default 50)",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                ),
                QueryParameter("cursor", "`next_cursor` of the previous page", {"type": "string"}),
            ),
        ),
        ApiRoute(
            "delete_finished_jobs",
            "DELETE",
            "/api/jobs",
            "Delete every job finished (completed, canceled, failed) and unchanged since before "
            "`finished_before`, with its tasks and logs; a job with a task still stopping stays.",
            delete_finished_jobs,
            (ApiReply(200, "the jobs deleted", DeletedJobs), _E400),
            query=(
                QueryParameter(
                    "finished_before",
                    "an RFC 3339 time; required",
                    {"type": "string", "format": "date-time"},
                ),
            ),
        ),
        ApiRoute(
            "get_job",
            "GET",
            "/api/jobs/{job_id}",
            "One job, with its task counts.",
            get_job,
            (ApiReply(200, "the job", ApiJob), *job_id_404),
        ),
        ApiRoute(
            "delete_job",
            "DELETE",
            "/api/jobs/{job_id}",
            "Delete a job, its tasks and their logs (not while a task runs).",
            delete_job,
            (ApiReply(204, "deleted", media_type=None), *job_id_404, _E409),
        ),
        ApiRoute(
            "job_tasks",
            "GET",
            "/api/jobs/{job_id}/tasks",
            "The tasks of a job, in creation order; with `id`, only those of them; with "
            "`status`, only those in these statuses; with `limit`, one page of them.",
            job_tasks,
            (ApiReply(200, "the tasks", TaskList), _E400, *job_id_404),
            query=(
                _ids_parameter("tasks", "task of the job"),
                QueryParameter(
                    "status", "only tasks in these statuses (comma-separated)", {"type": "string"}
                ),
                QueryParameter(
                    "limit",
                    "tasks per page (default: every task)",
                    {"type": "integer", "minimum": 1, "maximum": MAX_TASK_PAGE},
                ),
                QueryParameter(
                    "offset",
                    "tasks to skip before the page (default 0)",
                    {"type": "integer", "minimum": 0},
                ),
            ),
        ),
        ApiRoute(
            "set_job_status",
            "POST",
            "/api/jobs/{job_id}/status",
            "Cancel (cancel-requested), pause, resume (queued) or requeue a job.",
            set_job_status,
            (
                ApiReply(200, "the job after the change", ApiJob),
                _E400,
                *job_id_404,
                _E409,
                _E413,
            ),
            request=JobStatusChange,
        ),
        ApiRoute(
            "set_job_priority",
            "POST",
            "/api/jobs/{job_id}/priority",
            "Change a job's priority; its tasks follow.",
            set_job_priority,
            (ApiReply(200, "the job after the change", ApiJob), _E400, *job_id_404, _E413),
            request=JobPriorityChange,
        ),
        ApiRoute(
            "get_task",
            "GET",
            "/api/tasks/{task_id}",
            "One task, with the last lines of its log.",
            get_task,
            (ApiReply(200, "the task", ApiTask), _E400, _E404_TASK),
            query=(
                QueryParameter(
                    "log_lines",
                    "how many log lines to include (default 10)",
                    {"type": "integer", "minimum": 0, "maximum": 1000},
                ),
            ),
        ),
        ApiRoute(
            "requeue_task",
            "POST",
            "/api/tasks/{task_id}/requeue",
            "Run one task again; who failed it is forgotten.",
            requeue_task,
            (ApiReply(200, "the task", ApiTask), _E400, _E404_TASK, _E409, _E413),
            request=TaskAction,
            body_required=False,
        ),
        ApiRoute(
            "cancel_task",
            "POST",
            "/api/tasks/{task_id}/cancel",
            "Cancel one task; its job goes on.",
            cancel_task,
            (ApiReply(200, "the task", ApiTask), _E400, _E404_TASK, _E409, _E413),
            request=TaskAction,
            body_required=False,
        ),
        ApiRoute(
            "list_workers",
            "GET",
            "/api/workers",
            "Every worker, by nickname; with `id`, only those of them.",
            list_workers,
            (ApiReply(200, "the workers", WorkerList), _E400),
            query=(_ids_parameter("workers", "worker"),),
        ),
        ApiRoute(
            "get_worker",
            "GET",
            "/api/workers/{worker_id}",
            "One worker, with its blocklist and current job.",
            get_worker,
            (ApiReply(200, "the worker", Worker), _E404_WORKER),
        ),
        ApiRoute(
            "forget_worker",
            "DELETE",
            "/api/workers/{worker_id}",
            "Forget a worker; its running tasks are queued again.",
            forget_worker,
            (ApiReply(204, "forgotten", media_type=None), _E404_WORKER),
        ),
        ApiRoute(
            "set_worker_status",
            "POST",
            "/api/workers/{worker_id}/status",
            "Ask a worker to sleep, wake up or shut down, now or after its task (lazy).",
            set_worker_status,
            (ApiReply(200, "the worker", Worker), _E400, _E404_WORKER, _E413),
            request=WorkerStatusChange,
        ),
        ApiRoute(
            "get_sleep_schedule",
            "GET",
            "/api/workers/{worker_id}/sleep-schedule",
            "A worker's sleep schedule.",
            get_sleep_schedule,
            (ApiReply(200, "the schedule", ScheduleInfo), _E404_WORKER),
        ),
        ApiRoute(
            "set_sleep_schedule",
            "PUT",
            "/api/workers/{worker_id}/sleep-schedule",
            "Replace a worker's sleep schedule and apply it now (`{}` turns it off).",
            set_sleep_schedule,
            (ApiReply(200, "the stored schedule", ScheduleInfo), _E400, _E404_WORKER, _E413),
            request=ScheduleInfo,
        ),
        ApiRoute(
            "get_blocklist",
            "GET",
            "/api/workers/{worker_id}/blocklist",
            "The jobs and task types a worker may not run any more.",
            get_blocklist,
            (ApiReply(200, "the entries", Blocklist), _E404_WORKER),
        ),
        ApiRoute(
            "clear_blocklist",
            "DELETE",
            "/api/workers/{worker_id}/blocklist",
            "Clear a worker's blocklist, or one entry of it.",
            clear_blocklist,
            (ApiReply(200, "cleared", BlocklistCleared), _E400, _E404_WORKER),
            query=(
                QueryParameter(
                    "job_id",
                    "the entry's job (with task_type)",
                    {"type": "string", "pattern": "^[0-9a-fA-F]{24}$"},
                ),
                QueryParameter(
                    "task_type", "the entry's task type (with job_id)", {"type": "string"}
                ),
            ),
        ),
        ApiRoute(
            "farm_status",
            "GET",
            "/api/farm",
            "The farm at a glance: its state and counts of workers, jobs and tasks.",
            farm_status,
            (ApiReply(200, "the farm", FarmStatusDoc),),
        ),
        ApiRoute(
            "health",
            "GET",
            "/api/health",
            "Whether this manager process answers and reaches its database (no token needed: "
            "for load balancers and monitoring).",
            health,
            (
                ApiReply(200, "the process and its database work", HealthDoc),
                ApiReply(503, "the database cannot be reached", media_type=TEXT),
            ),
            auth=False,
        ),
        ApiRoute(
            "metrics",
            "GET",
            "/metrics",
            "The farm's counts (workers, jobs and tasks per status) for Prometheus.",
            metrics,
            (
                ApiReply(
                    200, "the metrics, in Prometheus's text format", media_type=PROMETHEUS_TEXT
                ),
            ),
        ),
        ApiRoute(
            "latest_image",
            "GET",
            "/api/latest-image",
            "The latest rendered image, as JPEG.",
            latest_image,
            (
                ApiReply(200, "the image", media_type=JPEG),
                ApiReply(404, "nothing rendered yet"),
            ),
        ),
        ApiRoute(
            "events",
            "GET",
            "/api/events",
            "Server-Sent Events: `job`, `task` and `worker` changes as they happen.",
            events,
            (
                ApiReply(200, "the event stream (never ends by itself)", media_type=EVENT_STREAM),
                _E400,
            ),
            query=(
                QueryParameter(
                    "types",
                    "event types to receive, comma-separated (default: job,task,worker)",
                    {"type": "string"},
                ),
            ),
        ),
    ]


async def _event_stream(
    manager: Manager,
    kinds: Sequence[str],
    heartbeat: float,
    encoded: _EncodedEvents,
    still_allowed: Callable[[], bool],
) -> AsyncIterator[bytes]:
    """The SSE body: a comment at once and every ``heartbeat`` seconds, events as they come.

    The subscription is made when the body starts and closed however it ends (the client went
    away, the server stops, the subscriber fell too far behind, or its token expired or was
    revoked: ``still_allowed`` is asked every ``heartbeat`` seconds, busy or not, and the stream
    ends with an ``unauthorized`` event when it says no).
    """
    subscription = manager.events.subscribe(kinds)
    next_check = time.monotonic() + heartbeat
    try:
        yield b": flamenco events\nretry: 3000\n\n"
        while True:
            if time.monotonic() >= next_check:
                if not still_allowed():
                    yield b'event: unauthorized\ndata: {"message": "token expired or revoked"}\n\n'
                    return
                next_check = time.monotonic() + heartbeat
            try:
                events = await asyncio.wait_for(subscription.get_waiting(), heartbeat)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if not events:
                if subscription.overflowed:
                    yield b'event: overflow\ndata: {"message": "too slow; reconnect"}\n\n'
                return
            yield b"".join(map(encoded, events))
    finally:
        subscription.close()


class _EncodedEvents:
    """Events as server-sent, each encoded once for every stream that sends it.

    Every open stream sends the same events: with ten dashboards open, a farm that took 12,560
    task updates a second without them took 8,550 while each stream encoded every event itself,
    11,040 with each event encoded once. The newest :data:`ENCODED_EVENTS_KEPT` encodings are
    kept, by event number; a stream further behind than that encodes its events again.
    """

    def __init__(self) -> None:
        self._kept: dict[int, bytes] = {}

    def __call__(self, event: Event) -> bytes:
        """``event`` as an SSE message."""
        kept = self._kept.get(event.number)
        if kept is None:
            kept = self._kept[event.number] = _server_sent(event)
            if len(self._kept) > ENCODED_EVENTS_KEPT:
                del self._kept[next(iter(self._kept))]
        return kept


def _server_sent(event: Event) -> bytes:
    data = json.dumps({"id": event.id, **event.data}, separators=(",", ":"), default=str)
    return f"id: {event.number}\nevent: {event.kind}\ndata: {data}\n\n".encode()


def user_routes(
    manager: Manager,
    *,
    heartbeat: float = HEARTBEAT_SECONDS,
    requests: RequestCounts | None = None,
) -> list[Route]:
    """The Starlette routes of the user API; ``/metrics`` reports ``requests``."""
    return [
        Route(route.path, _guard(manager, route), methods=[route.method], name=route.name)
        for route in user_api_routes(manager, heartbeat=heartbeat, requests=requests)
    ]
