"""The worker runtime: register or sign on, fetch and run tasks, obey the manager, sign off.

One asyncio loop runs four things side by side:

* the **main loop**: fetch a task (``POST /task``), run its commands, wait, fetch again; while
  asleep, poll ``/status-change`` instead;
* the **update delivery**: posts the rows of the SQLite update queue in order
  (:mod:`~flamenco_worker_client.update_queue`);
* the **may-I-run poller**, while a task runs: when the manager says stop, the running command
  is cancelled (its subprocess terminated, then killed), the task's log is pushed and the task
  is returned to the manager;
* background ``/output-produced`` posts, at most one per ``output_produced_interval``.

Status changes come from a 423 on ``/task``, from ``/status-change``, from a may-I-run "no",
and from signals (SIGUSR1 asleep, SIGUSR2 awake). ``asleep``, ``awake``, ``error`` and
``testing`` are acknowledged; ``shutdown`` is not: the worker signs off instead. SIGINT and
SIGTERM shut down cleanly: the running command is stopped, pending updates get one delivery
attempt, and ``/sign-off`` tells the manager to queue the worker's task again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Final

import attrs
import httpx

from flamenco_protocol import (
    ObjectId,
    Task,
    TaskStatus,
    WorkerRegistration,
    WorkerSignonDoc,
    WorkerStatus,
)

from .client import AsyncClient, manager_root
from .commands import (
    CommandError,
    CommandFunction,
    CommandRegistry,
    InvalidSettings,
    ProcessLimits,
    TaskContext,
    builtin_commands,
)
from .credentials import Credentials, CredentialsFileError, CredentialStore, generate_secret
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
    FlamencoClientError,
    InvalidResponse,
    NoTaskTypes,
    RegistrationRefused,
    TransportError,
    Unauthorized,
)
from .reporter import ReportIntervals, TaskReporter
from .results import NoTask, StatusChangeRequested
from .retry import RetryPolicy
from .update_queue import UpdateQueue, deliver_queued_updates

__all__ = [
    "EXIT_DATA_DIR_IN_USE",
    "EXIT_FORCED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "DataDirError",
    "DataDirInUse",
    "Worker",
    "WorkerTimings",
    "default_data_dir",
]

log = logging.getLogger(__name__)

EXIT_OK: Final = 0
"""Clean shutdown."""
EXIT_REFUSED: Final = 3
"""The manager refused the worker: registration secret wrong, or credentials refused twice."""
EXIT_DATA_DIR_IN_USE: Final = 4
"""``flamenco-worker`` only: another worker process holds the data directory."""
EXIT_FORCED: Final = 5
"""A second SIGINT or SIGTERM ended a stop that did not finish (a command ignoring its
cancellation): no sign-off."""

LOCK_FILE = "worker.lock"
"""Name of the lock file in the data directory."""


class DataDirError(Exception):
    """The data directory cannot be used (not a directory, not writable, ...)."""


class DataDirInUse(DataDirError):
    """Another worker process holds the data directory (its lock file is locked)."""


def _lock_data_dir(data_dir: Path) -> IO[str]:
    """Create ``data_dir`` and lock its lock file; the lock lasts while the file is open.

    One worker per data directory: two would share credentials and the update queue, run the
    same task twice and post every update twice.
    """
    path = data_dir / LOCK_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        stream = path.open("a+", encoding="utf-8")
    except OSError as error:
        raise DataDirError(f"cannot use data directory {data_dir}: {error}") from None
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the data directory is not locked there
        return stream
    try:
        fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        stream.seek(0)
        holder = stream.read().strip() or "unknown"
        stream.close()
        raise DataDirInUse(
            f"data directory {data_dir} is in use by another worker (pid {holder}); "
            "give each worker its own --data-dir"
        ) from None
    stream.seek(0)
    stream.truncate()
    stream.write(f"{os.getpid()}\n")
    stream.flush()
    return stream


_F = Callable[[CommandFunction], CommandFunction]


@attrs.frozen
class WorkerTimings:
    """Every wait of the runtime, in seconds; the defaults are the real worker's."""

    fetch_after_no_task: float = 5.0
    """Wait after a 204 from ``/task``."""
    fetch_after_task: float = 3.0
    """Wait after a task ended."""
    fetch_after_error: float = 10.0
    """Wait after ``/task`` failed, or while too many updates are queued."""
    fetch_after_wake: float = 3.0
    """Wait after waking up."""
    start_retry: float = 30.0
    """Wait between attempts to register or sign on."""
    may_i_run_interval: float = 5.0
    """Between two ``/may-i-run`` polls while a task runs."""
    status_poll_interval: float = 30.0
    """Between two ``/status-change`` polls while asleep."""
    update_retry: float = 5.0
    """Wait before trying again to deliver a queued update."""
    error_state_duration: float = 600.0
    """How long the ``error`` state lasts before the worker wakes up."""
    output_produced_interval: float = 30.0
    """At most one ``/output-produced`` per this interval; others are dropped."""
    report: ReportIntervals = attrs.field(factory=ReportIntervals)
    """How task updates are batched."""
    process: ProcessLimits = attrs.field(factory=ProcessLimits)
    """How subprocesses are watched and stopped."""


def default_data_dir() -> Path:
    """``$FLAMENCO_WORKER_DATA_DIR``, else ``$XDG_DATA_HOME/flamenco-worker``
    (``~/.local/share/flamenco-worker``)."""
    if configured := os.environ.get("FLAMENCO_WORKER_DATA_DIR"):
        return Path(configured)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "flamenco-worker"


def _platform() -> str:
    if sys.platform.startswith("win"):
        return "windows"
    if sys.platform == "darwin":
        return "darwin"
    return "linux"


@attrs.define
class _RunningTask:
    task: Task
    runner: asyncio.Task[None]
    abort_reason: str = ""
    """Why it was cancelled: ``manager`` (may-I-run said no), ``asleep`` or ``shutdown``."""


class Worker:
    """A Flamenco worker: give it a manager URL and task types, add commands, :meth:`run` it.

    ::

        worker = Worker("http://manager:8080/", ["sleep", "greeting"])

        @worker.command("greet")
        async def greet(ctx: TaskContext, name: str) -> None:
            ctx.log(f"Hello, {name}!")

        worker.run()

    The built-in Flamenco Worker 2.x commands are registered already; a command registered
    under an existing name replaces it. Credentials and the update queue live in ``data_dir``.
    """

    def __init__(
        self,
        manager_url: str,
        task_types: Sequence[str],
        *,
        nickname: str | None = None,
        data_dir: str | Path | None = None,
        registration_secret: str = "",
        commands: CommandRegistry | None = None,
        timings: WorkerTimings | None = None,
        single: bool = False,
        test_mode: bool = False,
        reregister: bool = False,
        listener: WorkerListener | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | httpx.Timeout | None = None,
    ) -> None:
        manager_root(manager_url)  # refuse a bad URL now, not at the first request
        self.manager_url = manager_url
        self.task_types = tuple(task_types)
        """Task types the worker accepts."""
        self.nickname = nickname or socket.gethostname()
        """The name the manager shows for this worker."""
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        """Where credentials and the update queue are kept."""
        self.commands = commands if commands is not None else builtin_commands()
        """The command registry; add to it with :meth:`command`."""
        self.timings = timings or WorkerTimings()
        """Every wait of the runtime."""
        self.single = single
        """Run one task, then sign off."""
        self.test_mode = test_mode
        """Start in the ``testing`` status."""
        self.reregister = reregister
        """Ignore stored credentials and register anew."""
        self.listener = listener
        """Receives :mod:`~flamenco_worker_client.events`."""
        self.state = WorkerState.STARTING
        """The worker's state now."""
        self.credential_store = CredentialStore(self.data_dir / "credentials.json")
        """Where the worker's ID and secret are kept."""
        self._registration_secret = registration_secret
        self._transport = transport
        self._retry = retry
        self._timeout = timeout
        self._stop = asyncio.Event()
        self._nudge = asyncio.Event()
        self._updates_waiting = asyncio.Event()
        self._delivery_lock = asyncio.Lock()
        self._registration_lock = asyncio.Lock()
        self._refused = False
        """Whether the manager refused a registration after start (a wrong secret)."""
        self._current: _RunningTask | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._last_output = -float("inf")
        self._client: AsyncClient | None = None
        self._queue: UpdateQueue | None = None
        self._reporter: TaskReporter | None = None
        self.tasks_run = 0
        """How many tasks this worker ran since it started."""

    # --- public API -----------------------------------------------------------------------

    def command(self, name: str) -> _F:
        """Decorator: register an async function as the command ``name`` (see
        :class:`~flamenco_worker_client.commands.CommandRegistry`)."""
        return self.commands.command(name)

    @property
    def worker_id(self) -> str:
        """The worker's ID, once registered (``""`` before)."""
        client = self._client
        if client is not None and client.credentials is not None:
            return str(client.credentials.worker_id)
        return ""

    def request_shutdown(self) -> None:
        """Stop cleanly: abort the running command, deliver what is queued, sign off."""
        if self._stop.is_set():
            return
        log.info("shutting down")
        self._stop.set()
        self._nudge.set()
        self._abort_current("shutdown")

    def _stop_signal(self) -> None:
        """SIGINT or SIGTERM: stop cleanly; again while stopping, exit at once.

        A command that ignores its cancellation keeps a clean stop waiting for ever; the usual
        second Ctrl-C (or ``kill``) then ends the process, unsigned-off: the manager queues the
        worker's task again once the worker times out. The update queue is on disk already.
        """
        if not self._stop.is_set():
            self.request_shutdown()
            return
        log.warning(
            "stop signal while stopping: exiting now, without signing off; the manager queues "
            "this worker's task again when the worker times out"
        )
        logging.shutdown()
        os._exit(EXIT_FORCED)

    def request_status(self, status: str) -> None:
        """Take ``status`` as if the manager asked for it (signals use this)."""
        self._spawn(self._take_status(status, cancel_task=True))

    def run(self) -> int:
        """Run until shut down, with SIGINT/SIGTERM/SIGUSR1/SIGUSR2 handled; return the exit
        status."""
        return asyncio.run(self.run_async(handle_signals=True))

    async def run_async(self, *, handle_signals: bool = False) -> int:
        """Run in the current event loop until shut down; return the exit status.

        :raises DataDirInUse: another worker process runs on the same data directory.
        :raises DataDirError: the data directory cannot be created or written.
        """
        lock = _lock_data_dir(self.data_dir)
        try:
            return await self._run_locked(handle_signals)
        finally:
            lock.close()  # releases the lock

    async def _run_locked(self, handle_signals: bool) -> int:
        self._stop = asyncio.Event()
        self._nudge = asyncio.Event()
        self._updates_waiting = asyncio.Event()
        self._delivery_lock = asyncio.Lock()
        self._registration_lock = asyncio.Lock()
        self._refused = False
        try:
            queue = UpdateQueue(self.data_dir / "task-updates.sqlite")
        except (OSError, sqlite3.Error) as error:
            raise DataDirError(f"cannot use data directory {self.data_dir}: {error}") from None
        if handle_signals:
            self._install_signal_handlers()
        self._queue = queue
        self._reporter = TaskReporter(queue, self.timings.report, self._updates_waiting.set)
        self._reporter.listener = self._report_progress
        options: dict[str, Any] = {"transport": self._transport, "retry": self._retry}
        if self._timeout is not None:
            options["timeout"] = self._timeout
        async with AsyncClient(
            self.manager_url, registration_secret=self._registration_secret, **options
        ) as client:
            self._client = client
            delivery = asyncio.create_task(self._deliver_updates())
            self._updates_waiting.set()  # rows left from an earlier run go out first
            signed_on = False
            try:
                signed_on = await self._start()
                if signed_on:
                    await self._work()
            finally:
                await self._finish(signed_on)
                delivery.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await delivery
                queue.close()
                if handle_signals:
                    self._remove_signal_handlers()
        if self._refused or (not signed_on and not self._stop.is_set()):
            return EXIT_REFUSED
        return EXIT_OK

    # --- start-up -------------------------------------------------------------------------

    async def _start(self) -> bool:
        """Register or sign on, retrying while the manager is away; False when refused."""
        client = self._require_client()
        credentials: Credentials | None = None
        if not self.reregister:
            try:
                credentials = self.credential_store.load()
            except CredentialsFileError as error:
                log.error("%s; registering anew", error)
        secret = generate_secret()
        while not self._stop.is_set():
            try:
                if credentials is None:
                    credentials = await self._register(secret)
                else:
                    client.credentials = credentials
                    try:
                        await client.sign_on(self._sign_on_doc())
                    except Unauthorized:
                        log.warning("manager does not know these credentials; registering again")
                        credentials = await self._register(secret)
                        await client.sign_on(self._sign_on_doc())
                log.info("worker %s (%s) is known to the manager", self.worker_id, self.nickname)
                self._set_state(WorkerState.TESTING if self.test_mode else WorkerState.AWAKE)
                if self.test_mode:
                    await self._ack(WorkerStatus.TESTING)
                return True
            except RegistrationRefused as error:
                log.error("registration refused, check the registration secret: %s", error)
                return False
            except Unauthorized as error:
                log.error("the manager refused the new credentials too: %s", error)
                return False
            except FlamencoClientError as error:
                log.warning("cannot reach the manager yet (%s); trying again", error)
            await self._pause(self.timings.start_retry)
        return False

    async def _register(self, secret: str) -> Credentials:
        client = self._require_client()
        registration = WorkerRegistration(
            secret=secret,
            platform=_platform(),
            supported_task_types=self.task_types,
            nickname=self.nickname,
        )
        worker = await client.register_worker(registration)
        assert worker.id is not None
        credentials = Credentials(worker.id, secret)
        self.credential_store.save(credentials)
        client.credentials = credentials
        log.info("registered as worker %s", worker.id)
        return credentials

    async def _register_again(self) -> None:
        """Register under a new identity once the manager no longer knows this one: its
        database was replaced, or the worker was forgotten after a long absence (its tasks went
        to other workers then). Refused registration (a wrong registration secret) stops the
        worker; a manager out of reach is tried again at the next request."""
        client = self._require_client()
        forgotten = client.credentials
        async with self._registration_lock:
            if client.credentials is not forgotten:
                return  # the delivery loop and the fetch both met it: registered once already
            log.warning("the manager no longer knows worker %s; registering again", self.worker_id)
            try:
                await self._register(generate_secret())
                await client.sign_on(self._sign_on_doc())
            except RegistrationRefused as error:
                log.error("registration refused, check the registration secret: %s", error)
                self._refused = True
                self.request_shutdown()
            except FlamencoClientError as error:
                log.warning("cannot register again now: %s", error)
            else:
                log.info("worker %s (%s) is known to the manager", self.worker_id, self.nickname)

    def _sign_on_doc(self) -> WorkerSignonDoc:
        return WorkerSignonDoc(supported_task_types=self.task_types, nickname=self.nickname)

    # --- the main loop --------------------------------------------------------------------

    async def _work(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            if self.state is WorkerState.ASLEEP:
                if not await self._pause(self.timings.status_poll_interval):
                    await self._poll_status_change()
                delay = self.timings.fetch_after_wake
                continue
            if self.state is WorkerState.ERROR:
                if not await self._pause(self.timings.error_state_duration):
                    await self._take_status(WorkerStatus.AWAKE)
                delay = self.timings.fetch_after_wake
                continue
            if await self._pause(delay):
                continue
            delay = await self._fetch_and_run()
            if self.single and self.tasks_run:
                log.info("single-task mode: the task is done")
                self.request_shutdown()

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; True when a shutdown or status change cut the wait short."""
        if seconds <= 0 and not self._nudge.is_set():
            return False
        try:
            await asyncio.wait_for(self._nudge.wait(), seconds)
        except TimeoutError:
            return False
        self._nudge.clear()
        return True

    async def _fetch_and_run(self) -> float:
        """One fetch; returns how long to wait before the next."""
        queue = self._require_queue()
        # Deliver first: until the last task's final update arrives, the manager still counts
        # that task as ours and /task would hand it out again, to be run a second time.
        if len(queue) and not await self._deliver_once():
            log.info("%d task updates wait for delivery; not fetching a task yet", len(queue))
            return self.timings.fetch_after_error
        try:
            result = await self._require_client().fetch_task()
        except NoTaskTypes as error:
            log.error("the manager says this worker supports no task types: %s", error)
            return self.timings.fetch_after_error
        except InvalidResponse as error:
            log.error("the manager sent a task this worker cannot read: %s", error)
            self._fail_unreadable_task(error)
            return self.timings.fetch_after_error
        except Unauthorized:
            await self._register_again()
            return self.timings.fetch_after_error
        except FlamencoClientError as error:
            log.warning("unable to fetch a task: %s", error)
            return self.timings.fetch_after_error
        if isinstance(result, NoTask):
            return self.timings.fetch_after_no_task
        if isinstance(result, StatusChangeRequested):
            await self._take_status(result.status)
            return self.timings.fetch_after_wake
        await self._run_task(result)
        return self.timings.fetch_after_task

    def _fail_unreadable_task(self, error: InvalidResponse) -> None:
        """Fail a task whose body has an ID but cannot be decoded, so it is not handed out to
        this worker over and over."""
        try:
            task_id = ObjectId(json.loads(error.body)["_id"])
        except (ValueError, TypeError, KeyError):
            return
        reporter = self._require_reporter()
        reporter.start_task(str(task_id), 1)
        activity = f"Worker cannot read this task: {error}"
        reporter.log(activity)
        reporter.set_status(TaskStatus.FAILED, activity)
        reporter.finish_task()

    # --- running a task -------------------------------------------------------------------

    async def _run_task(self, task: Task) -> None:
        assert task.id is not None
        reporter = self._require_reporter()
        task_id = str(task.id)
        log.info("running task %s (%s), %d commands", task_id, task.name, len(task.commands))
        self._emit(TaskStarted(task))
        reporter.start_task(task_id, len(task.commands))
        runner = asyncio.create_task(self._execute(task))
        running = _RunningTask(task, runner)
        self._current = running
        poller = asyncio.create_task(self._poll_may_i_run(running))
        try:
            await asyncio.wait({runner})
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            self._current = None
        self.tasks_run += 1
        status = reporter.task_status if not runner.cancelled() else None
        if runner.cancelled():
            await self._after_abort(running)
            status = reporter.task_status if running.abort_reason == "asleep" else None
        activity = reporter.activity
        reporter.finish_task()
        self._emit(TaskFinished(task_id, status, activity))

    async def _after_abort(self, running: _RunningTask) -> None:
        reporter = self._require_reporter()
        task_id = str(running.task.id)
        if running.abort_reason == "asleep":
            reporter.log("Task was canceled")
            reporter.set_status(TaskStatus.CANCELED, "Task was canceled")
        elif running.abort_reason == "manager":
            reporter.log(
                f"Worker {self.worker_id} ({self.nickname}) stopped running this task, "
                "no longer allowed to run by Manager"
            )
            reporter.flush_log()
            await self._deliver_once()
            try:
                await self._require_client().return_task(task_id)
                log.info("returned task %s to the manager's queue", task_id)
            except FlamencoClientError as error:
                log.warning("could not return task %s: %s", task_id, error)
        else:
            reporter.log(f"Worker {self.worker_id} ({self.nickname}) is shutting down")
            reporter.flush_log()

    async def _execute(self, task: Task) -> None:
        """Run the task's commands in order; report the outcome as the task status."""
        reporter = self._require_reporter()
        started = time.monotonic()
        for index, command in enumerate(task.commands):
            where = f"{command.name}.(task_id={task.id}, command_idx={index})"
            spec = self.commands.get(command.name)
            if spec is None:
                self._fail(
                    f"{where}: Unknown command: command {index} of task {task.id} "
                    f"has unknown command name {command.name!r}"
                )
                return
            try:
                arguments = spec.bind(command.settings)
            except InvalidSettings as error:
                self._fail(f"{where}: Invalid settings: {error}")
                return
            context = TaskContext(
                task=task,
                command_index=index,
                command_name=command.name,
                worker_id=self.worker_id,
                nickname=self.nickname,
                limits=self.timings.process,
                reporter=reporter,
                output=self._output_produced,
            )
            reporter.log(f"{command.name}: Starting")
            reporter.set_activity(
                f"starting {command.name}", command_index=index, command_progress=0
            )
            command_started = time.monotonic()
            try:
                await spec.function(context, **arguments)
            except InvalidSettings as error:
                self._fail(f"{where}: Invalid settings: {error}")
                return
            except CommandError as error:
                self._fail(f"{where}: Error executing: {error}")
                return
            except Exception as error:
                reporter.log("".join(traceback.format_exception(error)))
                self._fail(f"{where}: Error executing: {type(error).__name__}: {error}")
                return
            seconds = time.monotonic() - command_started
            reporter.timing[command.name] = reporter.timing.get(command.name, 0.0) + seconds
            reporter.log(f"{command.name}: Finished in {seconds:.3f} s")
            reporter.set_activity(f"finished {command.name}", command_progress=100)
        reporter.timing["total"] = time.monotonic() - started
        reporter.command_index = max(0, len(task.commands) - 1)
        reporter.command_progress = 100
        reporter.log(f"Task completed in {reporter.timing['total']:.3f} s")
        reporter.set_status(TaskStatus.COMPLETED, "Task completed")

    def _fail(self, activity: str) -> None:
        reporter = self._require_reporter()
        log.warning("task %s failed: %s", reporter.task_id, activity)
        reporter.log(activity)
        reporter.set_status(TaskStatus.FAILED, activity)

    async def _poll_may_i_run(self, running: _RunningTask) -> None:
        client = self._require_client()
        task_id = str(running.task.id)
        while not running.runner.done():
            await asyncio.sleep(self.timings.may_i_run_interval)
            try:
                answer = await client.may_i_run(task_id)
            except TransportError as error:
                log.debug("may-i-run skipped: %s", error)
                continue
            except Unauthorized:
                # Forgotten by the manager, which has given this task to another worker.
                log.warning("the manager no longer knows this worker: stopping task %s", task_id)
                running.abort_reason = running.abort_reason or "manager"
                running.runner.cancel()
                return
            except FlamencoClientError as error:
                # The real worker's poller dies here; one bad answer is no reason to stop asking.
                log.warning("may-i-run answer not understood: %s", error)
                continue
            if answer.may_keep_running:
                continue
            log.warning("the manager says stop running task %s: %s", task_id, answer.reason)
            running.abort_reason = running.abort_reason or "manager"
            if answer.status_requested:
                await self._take_status(answer.status_requested, cancel_task=False)
            running.runner.cancel()
            return

    def _abort_current(self, reason: str) -> None:
        running = self._current
        if running is not None and not running.runner.done():
            running.abort_reason = running.abort_reason or reason
            running.runner.cancel()

    # --- status changes -------------------------------------------------------------------

    async def _take_status(self, requested: str, *, cancel_task: bool = True) -> None:
        if requested == WorkerStatus.SHUTDOWN:
            log.info("the manager asks this worker to shut down")
            self.request_shutdown()
            return
        targets: dict[str, WorkerState] = {
            WorkerStatus.ASLEEP: WorkerState.ASLEEP,
            WorkerStatus.AWAKE: WorkerState.AWAKE,
            WorkerStatus.ERROR: WorkerState.ERROR,
            WorkerStatus.TESTING: WorkerState.TESTING,
        }
        target = targets.get(str(requested))
        if target is None:
            log.warning("no way to go to status %r; going asleep instead", requested)
            target = WorkerState.ASLEEP
        if target is WorkerState.ASLEEP and cancel_task:
            self._abort_current("asleep")
        self._set_state(target)
        self._nudge.set()
        await self._ack(target.value)

    async def _ack(self, status: str) -> None:
        try:
            await self._require_client().ack_status_change(status)
        except FlamencoClientError as error:
            log.warning("could not acknowledge status %s: %s", status, error)

    async def _poll_status_change(self) -> None:
        try:
            result = await self._require_client().status_change()
        except FlamencoClientError as error:
            log.warning("unable to ask for a status change: %s", error)
            return
        if isinstance(result, StatusChangeRequested):
            await self._take_status(result.status)

    def _set_state(self, state: WorkerState) -> None:
        if state is not self.state:
            log.info("worker state: %s", state)
            self.state = state
            self._emit(StateChanged(state))

    # --- updates, output, shutdown --------------------------------------------------------

    async def _deliver_updates(self) -> None:
        while True:
            await self._updates_waiting.wait()
            self._updates_waiting.clear()
            if not await self._deliver_once():
                await asyncio.sleep(self.timings.update_retry)
                self._updates_waiting.set()

    async def _deliver_once(self) -> bool:
        async with self._delivery_lock:
            try:
                return await deliver_queued_updates(self._require_queue(), self._require_client())
            except Unauthorized:
                # Updates of tasks the manager gave the forgotten identity: under the new one
                # it refuses them as another worker's (and they are dropped), so the queue
                # drains instead of holding back every fetch for ever.
                await self._register_again()
                return False

    def _output_produced(self, paths: list[str]) -> None:
        now = time.monotonic()
        if not paths or now - self._last_output < self.timings.output_produced_interval:
            log.debug("output-produced throttled: %s", paths)
            return
        self._last_output = now
        self._spawn(self._send_output(paths))

    async def _send_output(self, paths: list[str]) -> None:
        try:
            await self._require_client().output_produced(paths)
        except FlamencoClientError as error:
            log.warning("output-produced not accepted: %s", error)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish(self, signed_on: bool) -> None:
        self._set_state(WorkerState.SHUTTING_DOWN)
        self._abort_current("shutdown")
        for task in list(self._background):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, self.timings.process.terminate_grace)
        if self._reporter is not None:
            self._reporter.flush_log()
        if not signed_on:
            return
        if not await self._deliver_once():
            log.warning(
                "%d task updates stay queued for the next start", len(self._require_queue())
            )
        try:
            await self._require_client().sign_off()
            log.info("signed off")
        except FlamencoClientError as error:
            log.warning("sign-off failed: %s", error)

    def _report_progress(self, reporter: TaskReporter) -> None:
        if reporter.task_id is not None:
            self._emit(
                TaskProgress(
                    reporter.task_id,
                    reporter.activity,
                    reporter.command_index,
                    reporter.command_count,
                    reporter.task_progress,
                )
            )

    def _emit(self, event: WorkerEvent) -> None:
        if self.listener is not None:
            try:
                self.listener(event)
            except Exception:
                log.exception("worker listener failed on %r", event)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._stop_signal)
        loop.add_signal_handler(signal.SIGTERM, self._stop_signal)
        if hasattr(signal, "SIGUSR1"):
            loop.add_signal_handler(signal.SIGUSR1, self.request_status, WorkerStatus.ASLEEP)
            loop.add_signal_handler(signal.SIGUSR2, self.request_status, WorkerStatus.AWAKE)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2"):
            if hasattr(signal, name):
                loop.remove_signal_handler(getattr(signal, name))

    def _require_client(self) -> AsyncClient:
        assert self._client is not None, "the worker is not running"
        return self._client

    def _require_queue(self) -> UpdateQueue:
        assert self._queue is not None, "the worker is not running"
        return self._queue

    def _require_reporter(self) -> TaskReporter:
        assert self._reporter is not None, "the worker is not running"
        return self._reporter
