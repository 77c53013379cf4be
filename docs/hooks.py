"""MkDocs hooks: reference tables and diagrams generated from the code, so they cannot drift.

A page asks for a generated block with a marker line:

* ``<!-- generated: settings -->``: every manager setting, from ``flamenco_manager.config``;
* ``<!-- generated: endpoints -->``: the endpoint catalogue of ``flamenco_protocol.endpoints``;
* ``<!-- generated: state-machines -->``: the task, worker and job transition tables as diagrams.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from enum import Enum
from typing import Any

import attrs


def settings_table() -> str:
    """A table of every manager setting: name, flag, environment variable, default, meaning."""
    from flamenco_manager.config import ENV_PREFIX, Settings, format_duration

    rows = [
        "| setting (TOML) | flag | environment | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for field in attrs.fields(Settings):
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            shown = "(empty)"
        elif isinstance(default, timedelta):
            shown = format_duration(default)
        elif isinstance(default, tuple):
            shown = ", ".join(default) or "(empty)"
        elif default in ("", None):
            shown = "(empty)"
        else:
            shown = str(default)
        flag = "--" + field.name.replace("_", "-")
        if field.name == "variables":
            flag = "(TOML only)"
        env = f"{ENV_PREFIX}{field.name.upper()}" if field.name != "variables" else "-"
        rows.append(
            f"| `{field.name}` | `{flag}` | `{env}` | `{shown}` | {field.metadata['help']} |"
        )
    return "\n".join(rows)


def endpoints_tables() -> str:
    """One section per endpoint: methods, path, auth, request and every reply."""
    from flamenco_protocol.endpoints import ENDPOINTS

    parts = []
    for item in ENDPOINTS:
        request = item.request.value
        if item.request_document is not None:
            request = f"JSON `{item.request_document.__name__}`"
        parts.append(f"### `{' | '.join(item.methods)} {item.path}`\n")
        parts.append(f"{item.summary}\n")
        parts.append(f"* group: {item.group}; auth: **{item.auth.value}**; request: {request}\n")
        parts.append("| status | body | when |\n|---|---|---|")
        for reply in item.replies:
            body = reply.body.value
            if reply.document is not None:
                body = f"JSON `{reply.document.__name__}`"
            parts.append(f"| {reply.status} | {body} | {reply.meaning} |")
        parts.append("")
    return "\n".join(parts)


def _diagram(title: str, table: Mapping[Enum, Mapping[Enum, Enum]]) -> str:
    lines = [f"### {title}\n", "```mermaid", "stateDiagram-v2"]

    def node(state: Enum) -> str:
        return str(state.value).replace("-", "_") or "new"

    for source, row in table.items():
        for event, target in row.items():
            if source is target:
                continue
            lines.append(f"    {node(source)} --> {node(target)}: {event.value}")
    lines.append("```\n")
    return "\n".join(lines)


def state_machine_diagrams() -> str:
    """The three transition tables as Mermaid state diagrams."""
    from flamenco_protocol.job_states import JOB_TRANSITIONS
    from flamenco_protocol.task_states import TASK_TRANSITIONS
    from flamenco_protocol.worker_states import WORKER_TRANSITIONS

    return "\n".join(
        [
            _diagram("Tasks", TASK_TRANSITIONS),
            _diagram("Workers", WORKER_TRANSITIONS),
            _diagram("Jobs", JOB_TRANSITIONS),
        ]
    )


GENERATORS: dict[str, Callable[[], str]] = {
    "settings": settings_table,
    "endpoints": endpoints_tables,
    "state-machines": state_machine_diagrams,
}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Replace each marker line with its generated block."""
    for name, generate in GENERATORS.items():
        marker = f"<!-- generated: {name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown
