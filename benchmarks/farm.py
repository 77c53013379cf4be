"""Load generator: N simulated workers against a manager, with the real worker's rhythm.

Each simulated worker is a :class:`flamenco_worker_client.AsyncClient` (its own connection, no
retries, so every failure is counted) that registers, signs on and then does what a Flamenco
Worker does:

* asks for a task (``POST /task``); with none, asks again after ``--idle-poll`` s (5 s, as the
  real worker);
* while it "runs" a task (``--task-seconds``, 60 s varied by ±50 %), asks ``/may-i-run`` every
  ``--may-i-run`` s (5 s) and sends an update carrying ``--log-kib`` KiB of log every
  ``--update-interval`` s (15 s: the real worker's ``push_act_max_interval_seconds``), then
  reports ``completed`` with a last log line.

``--pace flat-out`` drops every wait (fetch, one log update, complete, fetch again...): the
manager's capacity rather than a farm's realistic load; use it to compare set-ups (1 process
against 2). Workers start spread over ``--ramp`` s, the run lasts ``--duration`` s, and then it
stops by itself and prints, per endpoint: requests, requests/s, p50 and p99 latency, errors; and
the manager's memory (VmRSS now and VmHWM, its peak, of the server process and its children).

Against a running manager (its jobs must be queued already)::

    python benchmarks/farm.py --url http://127.0.0.1:8080 --workers 200 --pid 12345

Or let it seed a manager and serve it (SQLite, or a fresh schema in a PostgreSQL database that
it drops afterwards)::

    python benchmarks/farm.py --spawn --workers 1000 --tasks 100000 --duration 60
    python benchmarks/farm.py --spawn --database postgresql://postgres@127.0.0.1/test \\
        --processes 2 --workers 1000 --pace flat-out

``--generators K`` runs the workers in K processes (the generator is Python too: on a big run it
must not be the bottleneck); their figures are merged.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import os
import random
import resource
import secrets
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flamenco_protocol import (  # noqa: E402
    MayKeepRunningResponse,
    Task,
    TaskUpdate,
    WorkerRegistration,
    WorkerSignonDoc,
)
from flamenco_worker_client import (  # noqa: E402
    NO_RETRIES,
    AsyncClient,
    Credentials,
    NoTask,
    StatusChangeRequested,
)

T = TypeVar("T")
TASK_TYPES = ("sleep", "blender-render", "file-management")
FAILED = object()
"""What :meth:`Recorder.timed` returns for a request that failed."""
ONE_OFF = frozenset({"register", "sign-on"})
"""Endpoints a worker calls once, when it joins; counted apart from the load."""
LOG_LINE = "Fra:1 Mem:1234.56M (Peak 2345.67M) | Time:00:12.34 | Rendering 12 / 64 samples\n"


@attrs.frozen
class Plan:
    """What each simulated worker does; the command-line options."""

    url: str
    workers: int
    duration: float
    ramp: float
    pace: str
    idle_poll: float
    task_seconds: float
    may_i_run: float
    update_interval: float
    log_kib: float
    timeout: float
    repeat: int


@attrs.define
class Figures:
    """Latencies (seconds) and errors per endpoint, mergeable across generator processes."""

    latencies: dict[str, list[float]] = attrs.Factory(lambda: defaultdict(list))
    errors: dict[str, Counter[str]] = attrs.Factory(lambda: defaultdict(Counter))
    tasks_done: int = 0
    registered: int = 0

    def merge(self, other: Figures) -> None:
        for name, values in other.latencies.items():
            self.latencies[name].extend(values)
        for name, counts in other.errors.items():
            self.errors[name].update(counts)
        self.tasks_done += other.tasks_done
        self.registered += other.registered


class Recorder:
    """Times requests into :class:`Figures`; the load phase counts only from ``measure_from``."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures
        self.measure_from = float("inf")

    async def timed(self, name: str, call: Callable[[], Awaitable[T]]) -> T | object:
        """Run one request, recording its latency or its error; :data:`FAILED` when it failed."""
        started = time.perf_counter()
        counted = name in ONE_OFF or time.monotonic() >= self.measure_from
        try:
            result = await call()
        except Exception as error:
            if counted:
                self.figures.errors[name][type(error).__name__] += 1
            return FAILED
        if counted:
            self.figures.latencies[name].append(time.perf_counter() - started)
        return result


async def _pause(seconds: float, stop_at: float) -> bool:
    """Sleep, but not past the end of the run; False when the run is over."""
    remaining = stop_at - time.monotonic()
    if remaining <= 0:
        return False
    await asyncio.sleep(min(seconds, remaining))
    return time.monotonic() < stop_at


async def _join(
    client: AsyncClient, index: int, recorder: Recorder, gate: asyncio.Semaphore
) -> bool:
    """Register and sign on (a few at a time, as the registration burst of a new farm)."""
    secret = secrets.token_hex(16)
    registration = WorkerRegistration(
        secret=secret,
        platform="linux",
        supported_task_types=TASK_TYPES,
        nickname=f"sim-{os.getpid()}-{index}",
    )
    async with gate:
        for _attempt in range(5):
            register = functools.partial(client.register_worker, registration)
            worker = await recorder.timed("register", register)
            if worker is not FAILED:
                break
            await asyncio.sleep(2)
        else:
            return False
    assert worker.id is not None
    client.credentials = Credentials(worker.id, secret)
    signon = WorkerSignonDoc(supported_task_types=TASK_TYPES, nickname=registration.nickname)
    await recorder.timed("sign-on", functools.partial(client.sign_on, signon))
    recorder.figures.registered += 1
    return True


async def _work(
    plan: Plan, client: AsyncClient, recorder: Recorder, start_at: float, stop_at: float
) -> None:
    """The worker's loop: fetch, run (updates with logs, may-i-run), complete; until stop_at."""
    flat_out = plan.pace == "flat-out"
    timed = recorder.timed
    log = LOG_LINE * max(1, round(plan.log_kib * 1024 / len(LOG_LINE)))
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    while time.monotonic() < stop_at:
        result = await timed("task", client.fetch_task)
        if result is FAILED:
            if not await _pause(plan.idle_poll, stop_at):
                return
            continue
        if isinstance(result, StatusChangeRequested):
            status = str(result.status)
            await timed("ack-status-change", functools.partial(client.ack_status_change, status))
            continue
        if isinstance(result, NoTask):
            if not await _pause(0.05 if flat_out else plan.idle_poll, stop_at):
                return
            continue
        assert isinstance(result, Task)
        assert result.id is not None
        task_id = str(result.id)
        active = TaskUpdate(task_status="active", activity="rendering", log=log)
        if flat_out:
            await timed("update", functools.partial(client.update_task, task_id, active))
        else:
            finish_at = time.monotonic() + plan.task_seconds * random.uniform(0.5, 1.5)
            ticks_per_update = max(1, round(plan.update_interval / plan.may_i_run))
            tick = 0
            while time.monotonic() < finish_at:
                if tick % ticks_per_update == 0:
                    await timed("update", functools.partial(client.update_task, task_id, active))
                tick += 1
                if not await _pause(min(plan.may_i_run, finish_at - time.monotonic()), stop_at):
                    return
                if time.monotonic() >= finish_at:
                    break
                answer = await timed("may-i-run", functools.partial(client.may_i_run, task_id))
                if isinstance(answer, MayKeepRunningResponse) and not answer.may_keep_running:
                    break
        done = TaskUpdate(task_status="completed", log="Task completed")
        if await timed("update", functools.partial(client.update_task, task_id, done)) is FAILED:
            continue
        if time.monotonic() >= recorder.measure_from:
            recorder.figures.tasks_done += 1
        if not flat_out and not await _pause(0.2, stop_at):  # the worker's fetch_after_task
            return


async def _run_workers(plan: Plan, first: int, count: int) -> list[Figures]:
    """Join ``count`` workers, then run ``plan.repeat`` rounds of load; figures per round."""
    recorder = Recorder(Figures())
    joining = recorder.figures
    timeout = httpx.Timeout(plan.timeout, connect=plan.timeout)
    # One connection per worker, as a farm has; the TLS context (costly to load, and unused on
    # http://) is shared instead of made for each client.
    tls = ssl.create_default_context()
    clients = [
        AsyncClient(
            plan.url,
            retry=NO_RETRIES,
            timeout=timeout,
            transport=httpx.AsyncHTTPTransport(verify=tls, limits=httpx.Limits(max_connections=2)),
        )
        for _ in range(count)
    ]
    rounds: list[Figures] = []
    try:
        gate = asyncio.Semaphore(8)
        joined = await asyncio.gather(
            *(_join(client, first + i, recorder, gate) for i, client in enumerate(clients))
        )
        for _ in range(plan.repeat):
            recorder.figures = Figures()
            begin = time.monotonic()
            recorder.measure_from = begin + plan.ramp
            stop_at = recorder.measure_from + plan.duration
            runs = [
                _work(plan, client, recorder, begin + random.uniform(0, plan.ramp), stop_at)
                for client, ok in zip(clients, joined, strict=True)
                if ok
            ]
            await asyncio.wait_for(asyncio.gather(*runs), timeout=plan.ramp + plan.duration + 60)
            rounds.append(recorder.figures)
    finally:
        for client in clients:
            await client.aclose()
    rounds[0].merge(joining)
    return rounds


def _generator_process(plan: Plan, first: int, count: int) -> list[Figures]:
    _raise_open_files(count * 2 + 64)
    try:
        import uvloop

        return uvloop.run(_run_workers(plan, first, count))
    except ImportError:
        return asyncio.run(_run_workers(plan, first, count))


def _raise_open_files(needed: int) -> None:
    """Raise the soft limit of open files to ``needed`` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        if wanted < needed:
            print(f"warning: only {wanted} open files allowed, {needed} wanted", file=sys.stderr)


# --- the manager's memory -------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for thread in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{thread}/children").read_text()
                found.extend(int(child) for child in text.split())
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(_children(current))
    return tree


def memory_kib(pid: int) -> dict[int, tuple[int, int]]:
    """``{pid: (VmRSS, VmHWM)}`` in KiB, for ``pid`` and its descendants."""
    result = {}
    for member in process_tree(pid):
        fields = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0])
        if fields:
            result[member] = (fields.get("VmRSS", 0), fields.get("VmHWM", 0))
    return result


class MemoryWatch:
    """Samples the manager's memory every second while the load runs."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.peak_total_rss = 0
        self.last: dict[int, tuple[int, int]] = {}

    def sample(self) -> None:
        if self.pid is None:
            return
        self.last = memory_kib(self.pid) or self.last
        self.peak_total_rss = max(self.peak_total_rss, sum(rss for rss, _ in self.last.values()))


# --- a manager of our own --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh schema in ``base_url``'s database, dropped afterwards; yields the manager's URL."""
    from flamenco_manager.storage.database import create_engine

    schema = f"bench_{secrets.token_hex(5)}"
    engine = create_engine(base_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base_url}{'&' if '?' in base_url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        engine.dispose()


def seed(data_dir: Path, database: str, tasks: int, per_job: int = 1000) -> float:
    """Queue ``tasks`` tasks in jobs of ``per_job``; return the seconds it took."""
    from flamenco_manager.config import Settings
    from flamenco_manager.manager import Manager
    from flamenco_manager.services.jobs import TaskSpec

    started = time.monotonic()
    manager = Manager(Settings(data_dir=data_dir, database=database, no_auth=True))
    try:
        made = 0
        while made < tasks:
            count = min(per_job, tasks - made)
            manager.jobs.create_job(
                name=f"bench {made // per_job}",
                job_type="bench",
                tasks=[
                    TaskSpec(
                        name=f"frame {made + index}",
                        task_type=TASK_TYPES[index % 2],
                        commands=[{"name": "sleep", "settings": {"time_in_seconds": 1}}],
                    )
                    for index in range(count)
                ],
            )
            made += count
    finally:
        manager.close()
    return time.monotonic() - started


@contextlib.contextmanager
def spawned_manager(
    data_dir: Path, database: str, processes: int, open_files: int
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``flamenco-manager serve`` on a free port, stopped at the end."""
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "flamenco_manager.cli",
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(data_dir),
        "--processes",
        str(processes),
        "--no-auth",
        "true",
        "--log-level",
        "warning",
    ]
    if database:
        args += ["--database", database]
    _raise_open_files(open_files)
    output = (data_dir / "manager.out").open("wb")
    server = subprocess.Popen(
        args, stdout=output, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the manager exited:\n{(data_dir / 'manager.out').read_text()}")
            try:
                httpx.get(f"{url}/nope", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("the manager did not answer within 60 s") from None
                time.sleep(0.2)
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        output.close()


# --- the run and the report -------------------------------------------------------------------


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_load(plan: Plan, generators: int, watch: MemoryWatch) -> tuple[list[Figures], float]:
    """Run the simulated workers in ``generators`` processes; figures per round, wall time."""
    base, extra = divmod(plan.workers, generators)
    shares = [base + (i < extra) for i in range(generators)]
    firsts = [sum(shares[:i]) for i in range(generators)]
    started = time.monotonic()
    executor: concurrent.futures.Executor = (
        concurrent.futures.ThreadPoolExecutor(1)
        if generators == 1
        else concurrent.futures.ProcessPoolExecutor(generators)
    )
    with executor as pool:
        futures = [
            pool.submit(_generator_process, plan, first, share)
            for first, share in zip(firsts, shares, strict=True)
        ]
        while not all(future.done() for future in futures):
            watch.sample()
            time.sleep(1)
        rounds = [Figures() for _ in range(plan.repeat)]
        for future in futures:
            for merged, part in zip(rounds, future.result(), strict=True):
                merged.merge(part)
    watch.sample()
    return rounds, time.monotonic() - started


def report_rounds(
    plan: Plan, rounds: list[Figures], seconds: float, watch: MemoryWatch
) -> dict[str, Any]:
    """Report every round, then the medians; the last round's summary with the medians."""
    summaries = []
    for number, figures in enumerate(rounds, 1):
        if len(rounds) > 1:
            print(f"\n--- round {number} of {len(rounds)}")
        summaries.append(report(plan, figures, seconds, watch if number == len(rounds) else None))
    summary = summaries[-1]
    if len(rounds) > 1:
        median = {
            key: statistics.median(one[key] for one in summaries)
            for key in ("rate", "p99", "errors", "tasks")
        }
        print(
            f"\nmedian of {len(rounds)} rounds: {median['rate']:.1f} requests/s, "
            f"p99 {median['p99']:.1f} ms, {median['errors']:.0f} errors, "
            f"{median['tasks']:.0f} tasks completed per round"
        )
        summary = {**summary, "median": median}
    summary["errors"] = sum(one["errors"] for one in summaries)
    return summary


def report(
    plan: Plan, figures: Figures, seconds: float, watch: MemoryWatch | None
) -> dict[str, Any]:
    """Print the figures; return them as a dict (for scripts that repeat runs).

    Rates are over the measured ``duration`` (after every worker joined and the ramp); register
    and sign-on, once per worker, are shown but left out of the "load" line.
    """
    print(
        f"\n{plan.workers} workers ({figures.registered} joined), pace {plan.pace}, "
        f"{plan.duration:.0f} s measured ({seconds:.0f} s wall), "
        f"{figures.tasks_done} tasks completed in it"
    )
    print(f"{'endpoint':<18}{'requests':>10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    total = errors = 0
    summary: dict[str, Any] = {"endpoints": {}}

    def line(name: str, ordered: list[float], failed: int, rate: bool = True) -> None:
        p50 = _percentile(ordered, 0.50) * 1000 if ordered else float("nan")
        p99 = _percentile(ordered, 0.99) * 1000 if ordered else float("nan")
        count = len(ordered) + failed
        shown = f"{count / plan.duration:>10.1f}" if rate else f"{'-':>10}"
        print(f"{name:<18}{count:>10}{shown}{p50:>10.1f}{p99:>10.1f}{failed:>8}")
        summary["endpoints"][name] = {"requests": count, "p50": p50, "p99": p99, "errors": failed}

    for name in sorted(set(figures.latencies) | set(figures.errors)):
        ordered = sorted(figures.latencies.get(name, []))
        failed = sum(figures.errors.get(name, Counter()).values())
        line(name, ordered, failed, rate=name not in ONE_OFF)
        if name not in ONE_OFF:
            total += len(ordered) + failed
            errors += failed
    load = sorted(
        value
        for name, values in figures.latencies.items()
        if name not in ONE_OFF
        for value in values
    )
    line("load (all above)", load, errors)
    for name, counts in sorted(figures.errors.items()):
        for kind, count in counts.most_common():
            print(f"  error {name}: {kind} x{count}")
    summary.update(
        requests=total,
        rate=total / plan.duration,
        p99=summary["endpoints"]["load (all above)"]["p99"],
        errors=errors + sum(sum(figures.errors.get(name, Counter()).values()) for name in ONE_OFF),
        tasks=figures.tasks_done,
    )
    if watch is not None and watch.last:
        rss = sum(rss for rss, _ in watch.last.values()) / 1024
        hwm = sum(hwm for _, hwm in watch.last.values()) / 1024
        print(
            f"manager memory: {len(watch.last)} process(es), VmRSS {rss:.0f} MiB at the end, "
            f"{watch.peak_total_rss / 1024:.0f} MiB at most while sampled, VmHWM sum {hwm:.0f} MiB"
        )
        for pid, (one_rss, one_hwm) in sorted(watch.last.items()):
            print(f"  pid {pid}: VmRSS {one_rss / 1024:.0f} MiB, VmHWM {one_hwm / 1024:.0f} MiB")
        summary.update(rss_mib=rss, hwm_mib=hwm, peak_rss_mib=watch.peak_total_rss / 1024)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running manager")
    target.add_argument("--spawn", action="store_true", help="seed and serve a manager of our own")
    parser.add_argument("--pid", type=int, help="the running manager's PID, for its memory")
    parser.add_argument("--database", default="", help="with --spawn: SQLite if empty, or a PG URL")
    parser.add_argument("--processes", type=int, default=1, help="with --spawn: serve processes")
    parser.add_argument("--tasks", type=int, default=20000, help="with --spawn: tasks to queue")
    parser.add_argument("--data-dir", type=Path, help="with --spawn: keep the data here")
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds after the ramp")
    parser.add_argument(
        "--ramp", type=float, default=5.0, help="seconds over which joined workers start working"
    )
    parser.add_argument("--pace", choices=["realistic", "flat-out"], default="realistic")
    parser.add_argument("--idle-poll", type=float, default=5.0)
    parser.add_argument("--task-seconds", type=float, default=60.0)
    parser.add_argument("--may-i-run", type=float, default=5.0)
    parser.add_argument("--update-interval", type=float, default=15.0)
    parser.add_argument("--log-kib", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of load after joining once; medians shown"
    )
    parser.add_argument("--generators", type=int, default=1, help="load-generator processes")
    args = parser.parse_args(argv)

    plan = Plan(
        url=args.url or "",
        workers=args.workers,
        duration=args.duration,
        ramp=args.ramp,
        pace=args.pace,
        idle_poll=args.idle_poll,
        task_seconds=args.task_seconds,
        may_i_run=args.may_i_run,
        update_interval=args.update_interval,
        log_kib=args.log_kib,
        timeout=args.timeout,
        repeat=args.repeat,
    )
    _raise_open_files(args.workers * 2 + 256)
    if not args.spawn:
        watch = MemoryWatch(args.pid)
        rounds, seconds = run_load(plan, args.generators, watch)
        summary = report_rounds(plan, rounds, seconds, watch)
        return 1 if summary["errors"] else 0

    with contextlib.ExitStack() as stack:
        data_dir = args.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        database = args.database
        if database.startswith("postgres"):
            database = stack.enter_context(postgres_schema(database))
        elif database:
            raise SystemExit("--database: empty (SQLite in the data directory) or postgresql://")
        seconds = seed(data_dir, database, args.tasks)
        print(f"seeded {args.tasks} tasks in {seconds:.1f} s")
        url, server = stack.enter_context(
            spawned_manager(data_dir, database, args.processes, args.workers * 2 + 256)
        )
        watch = MemoryWatch(server.pid)
        watch.sample()
        idle = sum(rss for rss, _ in watch.last.values()) / 1024
        print(f"manager serving at {url}, {args.processes} process(es), {idle:.0f} MiB idle")
        rounds, seconds = run_load(attrs.evolve(plan, url=url), args.generators, watch)
        summary = report_rounds(plan, rounds, seconds, watch)
        if args.data_dir is None:
            shutil.rmtree(data_dir / "task-logs", ignore_errors=True)
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
