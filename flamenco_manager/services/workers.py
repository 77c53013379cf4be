"""Workers: registration, sign-on and sign-off, status requests and acknowledgements.

The rules come from :mod:`flamenco_protocol.worker_states`; this module loads a worker, asks
those functions, and stores the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Final

import attrs
from sqlalchemy.engine import Connection

from flamenco_manager.storage import tasks as task_store
from flamenco_manager.storage import workers as worker_store
from flamenco_manager.storage.schema import PLATFORM_LENGTH
from flamenco_manager.storage.workers import WorkerRecord
from flamenco_protocol import codec
from flamenco_protocol.documents import ScheduleInfo, Worker, WorkerRegistration, WorkerSignonDoc
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import TIMEOUT_PRONE_WORKER_STATUSES, TaskStatus, WorkerStatus
from flamenco_protocol.task_states import TaskEvent, next_task_status
from flamenco_protocol.worker_states import (
    StatusRequest,
    WorkerEvent,
    decide_ack,
    decide_sign_off,
    next_worker_status,
    validate_request,
)

from .auth import WorkerAuthenticator, hash_secret
from .context import ServiceContext, log_change, log_timestamp
from .errors import Invalid, NotFound, UnknownWorker
from .jobs import refresh_job_status
from .sleep_schedule import clean_days_of_week, refresh

__all__ = [
    "Peer",
    "WorkerService",
    "mark_seen",
    "return_task",
    "seen_is_due",
    "seen_values",
    "sleep_schedule_of",
    "worker_document",
]


SEEN_RESOLUTION: Final = timedelta(seconds=1)
"""How far ``last_activity`` may lag behind the worker's last request."""


def seen_is_due(previous: datetime | None, now: datetime) -> bool:
    """Whether a "seen" time last set at ``previous`` moves to ``now``: they move in steps of
    :data:`SEEN_RESOLUTION`, so that a busy worker does not cost a write on every request."""
    return previous is None or now - previous >= SEEN_RESOLUTION


class Peer:
    """Where a request came from: the address and ``User-Agent`` recorded when a worker is seen."""

    __slots__ = ("host", "user_agent")

    def __init__(self, host: str, user_agent: str = "") -> None:
        self.host = host
        self.user_agent = user_agent


def seen_values(worker: WorkerRecord, peer: Peer, now: datetime) -> dict[str, object]:
    """The columns that mark a worker as seen now from ``peer``, leaving out what is unchanged.

    ``last_activity`` moves in steps of :data:`SEEN_RESOLUTION`: timeouts are minutes long, and
    a busy worker would otherwise cost a write on every request.
    """
    values: dict[str, object] = {}
    if seen_is_due(worker.last_activity, now):
        values["last_activity"] = now
    if peer.host and peer.host != worker.address:
        values["address"] = peer.host
    if peer.user_agent != worker.software:
        values["software"] = peer.user_agent
    return values


def mark_seen(
    connection: Connection, worker: WorkerRecord, peer: Peer, now: datetime, **values: object
) -> WorkerRecord:
    """Record that ``worker`` was seen now from ``peer`` (plus other columns); the new record.

    Columns that would not change are not written; with nothing to write, nothing is.
    """
    seen = seen_values(worker, peer, now)
    seen.update(
        (column, value) for column, value in values.items() if getattr(worker, column) != value
    )
    if not seen:
        return worker
    worker_store.update(connection, str(worker.id), **seen)
    return attrs.evolve(worker, **seen)  # type: ignore[arg-type]


def worker_document(worker: WorkerRecord) -> Worker:
    """The protocol document of a stored worker."""
    return Worker(
        id=worker.id,
        nickname=worker.nickname,
        address=worker.address,
        status=worker.status,
        platform=worker.platform,
        current_task=worker.current_task,
        last_activity=worker.last_activity,
        supported_task_types=worker.supported_task_types,
        software=worker.software,
        current_task_status=worker.current_task_status,
        current_task_updated=worker.current_task_updated,
        status_requested=worker.status_requested,
        lazy_status_request=worker.lazy_status_request,
        sleep_schedule=sleep_schedule_of(worker),
    )


def sleep_schedule_of(worker: WorkerRecord) -> ScheduleInfo:
    """A worker's stored sleep schedule (inactive when it has none)."""
    if not worker.sleep_schedule:
        return ScheduleInfo()
    return codec.decode(ScheduleInfo, worker.sleep_schedule)


def return_task(
    context: ServiceContext,
    connection: Connection,
    task_id: str,
    worker: WorkerRecord,
    reason: str,
) -> bool:
    """Give a running task of ``worker`` back to the queue; ``False`` when there is nothing to do.

    Nothing happens when the task belongs to another worker or is not running. The task keeps
    its worker's ID and nickname (the Go manager does too), so that a late update from that
    worker is still accepted as its own.
    """
    task = task_store.get(connection, task_id, for_update=True)
    if task is None:
        return False
    if task.worker_id is not None and task.worker_id != worker.id:
        return False
    if task.status not in (TaskStatus.ACTIVE, TaskStatus.CANCEL_REQUESTED):
        return False
    now = context.clock()
    new_status = next_task_status(task.status, TaskEvent.WORKER_STOPPED)
    verb = "re-queued" if new_status is TaskStatus.CLAIMED_BY_MANAGER else "canceled"
    context.announce(connection, "task", task.id, job=str(task.job_id), status=str(new_status))
    log_change(
        connection,
        f"task {verb}",
        task=str(task.id),
        job=str(task.job_id),
        worker=str(worker.id),
        nickname=worker.nickname,
        reason=reason,
    )
    task_store.set_status(
        connection,
        task,
        new_status,
        activity=f"{verb.capitalize()} task after unassigning from worker {worker.identifier}: "
        f"{reason}",
        last_updated=now,
    )
    context.append_log(
        connection,
        str(task.job_id),
        str(task.id),
        f"{log_timestamp(now)}: Manager {verb} task after unassigning it from worker "
        f"{worker.identifier}: {reason}",
    )
    refresh_job_status(
        connection,
        str(task.job_id),
        now,
        failed_ratio=context.settings.failed_task_ratio,
        events=context.events,
    )
    return True


def _log_worker_change(
    connection: Connection,
    message: str,
    worker: WorkerRecord,
    level: int = logging.INFO,
    **fields: object,
) -> None:
    """:func:`.context.log_change` a line about ``worker``, naming it by ID and nickname."""
    fields.update(worker=str(worker.id), nickname=worker.nickname)
    log_change(connection, message, level, **fields)


class WorkerService:
    """What workers and users do to workers."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.authenticator = WorkerAuthenticator(self._secret_hash)

    def _secret_hash(self, worker_id: str) -> str | None:
        if not ObjectId.is_valid(worker_id):
            return None
        # Runs on a thread: a write transaction there would wait for the event loop's open
        # commit group, and the loop for it.
        with self.context.database.reading() as connection:
            return worker_store.secret_hash(connection, worker_id.lower())

    def _announce(self, connection: Connection, worker: WorkerRecord) -> None:
        self.context.announce(
            connection,
            "worker",
            worker.id,
            status=str(worker.status),
            status_requested=worker.status_requested,
            lazy_status_request=worker.lazy_status_request,
            nickname=worker.nickname,
        )

    def _announce_stored(self, connection: Connection, worker_id: str) -> None:
        worker = worker_store.get(connection, worker_id)
        if worker is not None:
            self._announce(connection, worker)

    def _load(self, connection: Connection, worker_id: str) -> WorkerRecord:
        worker = worker_store.get(connection, worker_id)
        if worker is None:
            raise UnknownWorker(f"Unable to find worker: {worker_id}", worker_id)
        return worker

    def register(self, registration: WorkerRegistration, address: str) -> Worker:
        """Store a new worker; the document answers ``/register-worker``."""
        if len(registration.platform) > PLATFORM_LENGTH:
            raise Invalid(
                f"platform: at most {PLATFORM_LENGTH} characters, not {len(registration.platform)}"
            )
        now = self.context.clock()
        record = WorkerRecord(
            id=ObjectId.new(),
            secret_hash=hash_secret(registration.secret),
            nickname=registration.nickname,
            address=address,
            status=WorkerStatus.NEW,
            platform=registration.platform,
            supported_task_types=registration.supported_task_types,
            software="",
            current_task=None,
            current_task_status="",
            current_task_updated=None,
            last_activity=None,
            status_requested="",
            lazy_status_request=False,
            sleep_schedule=None,
            sleep_next_check=None,
            registered=now,
        )
        with self.context.database.transaction() as connection:
            worker_store.insert(connection, record)
            self._announce(connection, record)
            _log_worker_change(
                connection,
                "worker registered",
                record,
                address=address,
                platform=record.platform,
                task_types=list(record.supported_task_types),
            )
        # Its first request would pay scrypt again for the secret we just hashed.
        self.authenticator.remember(str(record.id), registration.secret)
        return worker_document(record)

    def sign_on(self, worker_id: str, doc: WorkerSignonDoc, peer: Peer) -> None:
        """A worker starts: status ``starting``; new nickname and task types when given."""
        now = self.context.clock()
        with self.context.database.transaction() as connection:
            worker = self._load(connection, worker_id)
            values: dict[str, object] = {}
            if doc.nickname and doc.nickname != worker.nickname:
                values["nickname"] = doc.nickname
            if doc.supported_task_types and doc.supported_task_types != (
                worker.supported_task_types
            ):
                values["supported_task_types"] = doc.supported_task_types
            values["status"] = next_worker_status(worker.status, WorkerEvent.SIGNED_ON).value
            values["current_task"] = None
            signed_on = mark_seen(connection, worker, peer, now, **values)
            self._announce(connection, signed_on)
            _log_worker_change(
                connection,
                "worker signed on",
                signed_on,
                address=signed_on.address,
                task_types=list(signed_on.supported_task_types),
            )

    def sign_off(self, worker_id: str) -> None:
        """A worker stops: its running tasks go back to the queue, its status is ``offline``."""
        with self.context.database.transaction() as connection:
            worker = self._load(connection, worker_id)
            self._return_all(connection, worker, "worker signed off")
            keep = decide_sign_off(worker.status, worker.request)
            worker_store.update(
                connection,
                worker_id,
                status=next_worker_status(worker.status, WorkerEvent.SIGNED_OFF).value,
                status_requested=keep.status.value if keep else "",
                lazy_status_request=keep.lazy if keep else worker.lazy_status_request,
            )
            self._announce_stored(connection, worker_id)
            _log_worker_change(connection, "worker signed off", worker)

    def _return_all(self, connection: Connection, worker: WorkerRecord, reason: str) -> None:
        running = task_store.held_by(
            connection, str(worker.id), [TaskStatus.ACTIVE, TaskStatus.CANCEL_REQUESTED]
        )
        for task_id in running:
            return_task(self.context, connection, str(task_id), worker, reason)

    def status_change(self, worker_id: str, peer: Peer) -> StatusRequest | None:
        """The pending status request of a worker (``/status-change``), marking it seen."""
        now = self.context.clock()
        with self.context.database.transaction() as connection:
            worker = self._load(connection, worker_id)
            return mark_seen(connection, worker, peer, now).request

    def acknowledge(self, worker_id: str, acked: str) -> bool:
        """``/ack-status-change/{acked}``; whether the worker acknowledged what was asked."""
        with self.context.database.transaction() as connection:
            worker = self._load(connection, worker_id)
            decision = decide_ack(worker.status, worker.request, acked)
            if decision.status is not None:
                worker_store.update(
                    connection, worker_id, status=decision.status.value, status_requested=""
                )
                self._announce_stored(connection, worker_id)
                _log_worker_change(
                    connection,
                    "worker acknowledged a status change",
                    worker,
                    status=decision.status.value,
                    previous=str(worker.status),
                )
            return decision.matches_request

    def request_status(self, worker_id: str, status: str, *, lazy: bool) -> WorkerRecord:
        """A user (or the sleep scheduler) asks a worker to become ``status``."""
        request = validate_request(status, lazy)
        with self.context.database.transaction() as connection:
            if not worker_store.update(
                connection,
                worker_id,
                status_requested=request.status.value,
                lazy_status_request=request.lazy,
            ):
                raise NotFound(f"Worker {worker_id} is unknown.")
            worker = worker_store.get(connection, worker_id)
            assert worker is not None
            self._announce(connection, worker)
            _log_worker_change(
                connection,
                "worker asked to change status",
                worker,
                status=request.status.value,
                lazy=request.lazy,
            )
        return worker

    def set_sleep_schedule(self, worker_id: str, schedule: ScheduleInfo) -> WorkerRecord:
        """Replace a worker's sleep schedule and apply it at once (spec §13.3).

        Raises :class:`Invalid` for day names that are not days, :class:`NotFound` for an
        unknown worker.
        """
        try:
            days = clean_days_of_week(schedule.days_of_week)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        schedule = attrs.evolve(schedule, days_of_week=days)
        with self.context.database.transaction() as connection:
            worker = worker_store.get(connection, worker_id)
            if worker is None:
                raise NotFound(f"Worker {worker_id} is unknown.")
            self.apply_sleep_schedule(connection, worker, schedule)
            updated = worker_store.get(connection, worker_id)
            assert updated is not None
        return updated

    def apply_sleep_schedule(
        self, connection: Connection, worker: WorkerRecord, schedule: ScheduleInfo
    ) -> None:
        """Store a schedule with its next check, and request the status it wants now, if any.

        The request is immediate and replaces any other, as the Go sleep scheduler's did. The
        worker is announced, and a request logged, as a user's request is.
        """
        now = self.context.clock().astimezone(self.context.zone)
        decision = refresh(schedule, now, str(worker.status), worker.status_requested)
        values: dict[str, object] = {
            "sleep_schedule": codec.encode(decision.schedule),
            "sleep_next_check": decision.schedule.next_check if schedule.schedule_active else None,
        }
        if decision.request is not None:
            values["status_requested"] = decision.request.value
            values["lazy_status_request"] = False
        worker_store.update(connection, str(worker.id), **values)
        self._announce_stored(connection, str(worker.id))
        if decision.request is not None:
            _log_worker_change(
                connection,
                "worker asked to change status",
                worker,
                status=decision.request.value,
                lazy=False,
                by="sleep schedule",
            )

    def get(self, worker_id: str) -> WorkerRecord:
        """A worker; :class:`NotFound` if there is none."""
        with self.context.database.transaction() as connection:
            worker = worker_store.get(connection, worker_id)
        if worker is None:
            raise NotFound(f"Worker {worker_id} is unknown.")
        return worker

    def list(self, ids: Collection[str] | None = None) -> Sequence[WorkerRecord]:
        """Every worker (only those of ``ids`` that exist, when given), by nickname.

        A page listing a big farm's workers asks for those that events named: every running
        worker sends progress a few times a minute.
        """
        with self.context.database.transaction() as connection:
            return worker_store.list_all(connection, ids)

    def forget(self, worker_id: str) -> None:
        """Delete a worker; its running tasks go back to the queue first."""
        with self.context.database.transaction() as connection:
            worker = worker_store.get(connection, worker_id)
            if worker is None:
                raise NotFound(f"Worker {worker_id} is unknown.")
            self._return_all(connection, worker, "worker was forgotten")
            worker_store.delete(connection, worker_id)
            self.context.announce(connection, "worker", worker_id, deleted=True)
            _log_worker_change(connection, "worker forgotten", worker)
        self.authenticator.forget(worker_id)

    def time_out(self, connection: Connection, worker: WorkerRecord, why: str) -> None:
        """A worker went silent: its running tasks go back to the queue.

        An awake worker also becomes ``timeout`` and, unless a request is pending, is asked to
        come back ``awake``; the Go manager overwrote a pending request here.
        """
        if worker.status in TIMEOUT_PRONE_WORKER_STATUSES:
            worker_store.update(
                connection,
                str(worker.id),
                status=next_worker_status(worker.status, WorkerEvent.TIMED_OUT).value,
                status_requested=worker.status_requested or WorkerStatus.AWAKE.value,
                lazy_status_request=worker.lazy_status_request and bool(worker.status_requested),
            )
        self._return_all(connection, worker, f"worker {worker.identifier} timed out ({why})")
        self._announce_stored(connection, str(worker.id))
        _log_worker_change(connection, "worker timed out", worker, logging.WARNING, reason=why)

    def remove(self, connection: Connection, worker: WorkerRecord) -> None:
        """The worker remover's deletion: tasks re-queued, then the worker forgotten."""
        self._return_all(connection, worker, "worker is being auto-removed")
        worker_store.delete(connection, str(worker.id))
        self.context.announce(connection, "worker", worker.id, deleted=True)
        _log_worker_change(connection, "worker removed after a long silence", worker)
        self.authenticator.forget(str(worker.id))
