"""Hypothesis strategies for every protocol document, shared by the test suites."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
from hypothesis import strategies as st

from flamenco_protocol import documents as d
from flamenco_protocol.ids import ObjectId
from flamenco_protocol.statuses import JobStatus, TaskStatus, WorkerStatus

# Text that UTF-8 can carry (no lone surrogates), as JSON strings must be.
text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
object_ids = st.binary(min_size=12, max_size=12).map(ObjectId.from_bytes)
optional_ids = st.none() | object_ids
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
times = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
optional_times = st.none() | times
json_values = st.recursive(
    st.none() | st.booleans() | int64 | finite_floats | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
settings = st.dictionaries(text, json_values, max_size=4)


def statuses(enum: Any) -> st.SearchStrategy[Any]:
    """Known statuses, plus now and then a string no enum knows."""
    return st.sampled_from(list(enum)) | text


times_of_day = st.builds(d.TimeOfDay, st.integers(0, 23), st.integers(0, 59)) | st.just(
    d.TimeOfDay(24, 0)
)

_BY_TYPE: dict[Any, st.SearchStrategy[Any]] = {
    str: text,
    int: int64,
    bool: st.booleans(),
    ObjectId | None: optional_ids,
    datetime | None: optional_times,
    d.TimeOfDay | None: st.none() | times_of_day,
    TaskStatus | str: statuses(TaskStatus),
    WorkerStatus | str: statuses(WorkerStatus),
    JobStatus | str: statuses(JobStatus),
    dict[str, Any]: settings,
    dict[str, float]: st.dictionaries(text, finite_floats, max_size=3),
    tuple[str, ...]: st.lists(text, max_size=3).map(tuple),
    tuple[ObjectId, ...]: st.lists(object_ids, max_size=3).map(tuple),
}


def documents(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Any instance of a document class, its fields drawn by type."""
    fields = attrs.fields(attrs.resolve_types(cls))
    return st.builds(cls, **{field.name: _strategy(field.type) for field in fields})


def _strategy(annotation: Any) -> st.SearchStrategy[Any]:
    if annotation in _BY_TYPE:
        return _BY_TYPE[annotation]
    if d.is_document(annotation):
        return st.deferred(lambda: documents(annotation))
    args = getattr(annotation, "__args__", ())
    if len(args) == 2 and args[1] is type(None) and d.is_document(args[0]):
        return st.none() | documents(args[0])
    if len(args) == 2 and args[1] is Ellipsis:
        return st.lists(_strategy(args[0]), max_size=3).map(tuple)
    raise TypeError(f"no strategy for {annotation!r}")


ALL_DOCUMENTS = (
    d.Command,
    d.WorkerRef,
    d.TaskMetrics,
    d.Task,
    d.TaskUpdate,
    d.WorkerRegistration,
    d.WorkerSignonDoc,
    d.WorkerStatusRequest,
    d.ScheduleInfo,
    d.WorkerBlacklistEntry,
    d.Worker,
    d.MayKeepRunningResponse,
    d.FileProduced,
    d.Job,
)
