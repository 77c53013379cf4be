"""``/logfile/{job_id}/{task_id}``: a task's current log, as the Go manager served it.

``?download=1`` (the dashboard's "Download full log") sends the whole log as an attachment,
whatever the client; without it a large log is trimmed for all but ``curl`` and ``Wget``.

A log is sent as it was when the request came: the bytes it held then, however much a worker
appends while they are being sent, and from that run's file even when a new run of the task
rotates it meanwhile. ``Range`` requests are answered too.
"""

from __future__ import annotations

from starlette.concurrency import iterate_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from flamenco_manager.manager import Manager
from flamenco_manager.services.task_logs import TaskLogError
from flamenco_manager.web.responses import TEXT, text
from flamenco_manager.web.user_auth import as_user
from flamenco_protocol.endpoints import endpoint
from flamenco_protocol.ids import ObjectId


def log_routes(manager: Manager) -> list[Route]:
    """The ``/logfile`` route, with the methods the catalogue lists."""

    async def task_log(request: Request, user: str) -> Response:
        job_id = request.path_params["job_id"]
        task_id = request.path_params["task_id"]
        for name, value in (("job-id", job_id), ("task-id", task_id)):
            if not ObjectId.is_valid(value):
                return text(404, f"Invalid ObjectID used for {name}: {value}")
        # The dashboard's "Download full log": all of it, as an attachment, to any client.
        download = request.query_params.get("download") == "1"
        try:
            view = manager.logs.serve(
                job_id.lower(),
                task_id.lower(),
                request.headers.get("user-agent", ""),
                whole=download,
            )
        except TaskLogError:
            return text(500, "unable to access task log file")
        if view is None:
            return text(404, "unable to stat task log file")
        if view.gzip:
            return FileResponse(
                view.path,
                headers={
                    "Content-Encoding": "gzip",
                    "Content-Disposition": f'attachment; filename="{view.filename}"',
                },
                media_type=TEXT,
            )
        if view.whole and "range" in request.headers:
            # A file response sends the ranges asked for, and never more than they hold.
            view.close()
            filename = view.filename if download else None
            return FileResponse(view.path, media_type=TEXT, filename=filename)
        if view.whole:
            # Not a file response: that reads to the end of the file, which an update may have
            # moved on meanwhile, and sends more than its Content-Length (the connection breaks).
            headers = {"Content-Length": str(view.content_length), "Accept-Ranges": "bytes"}
            if download:
                headers["Content-Disposition"] = f'attachment; filename="{view.filename}"'
            return StreamingResponse(
                iterate_in_threadpool(view.iter_bytes()), media_type=TEXT, headers=headers
            )
        return StreamingResponse(
            iterate_in_threadpool(view.iter_bytes()),
            media_type=TEXT,
            headers={"Content-Length": str(view.content_length)},
        )

    item = endpoint("task_log")
    return [Route(item.path, as_user(manager, task_log), methods=list(item.methods))]
