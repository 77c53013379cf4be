"""``/logfile`` with user tokens, and Shaman served at the manager's root (spec §9.4, §3.5)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any, cast

import httpx
import pytest

from .harness import Farm, spec

pytestmark = pytest.mark.anyio


async def _task_with_log(farm: Farm, text: str) -> tuple[str, str]:
    job = farm.job(spec())
    worker = await farm.register()
    task_id = (await farm.fetch(worker)).json()["_id"]
    await farm.update(worker, task_id, log=text)
    return str(job.id), task_id


def _bearer(farm: Farm, name: str = "alice", hours: float = 1) -> dict[str, str]:
    token = farm.manager.mint_user_token(name, timedelta(hours=hours))
    return {"Authorization": f"Bearer {token}"}


async def test_the_log_needs_a_user_token(farm: Farm) -> None:
    job_id, task_id = await _task_with_log(farm, "hello")
    response = await farm.client.get(f"/logfile/{job_id}/{task_id}")
    assert response.status_code == 401
    assert response.text.startswith("JWT token authorization required")
    response = await farm.client.get(f"/logfile/{job_id}/{task_id}", headers=_bearer(farm))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.endswith("hello\n")
    assert "Manager assigned task" in response.text


async def test_a_cookie_token_works_and_an_expired_one_is_498(farm: Farm) -> None:
    job_id, task_id = await _task_with_log(farm, "hello")
    token = farm.manager.mint_user_token("bob", timedelta(hours=1))
    farm.client.cookies.set("jwtToken", token)
    assert (await farm.client.get(f"/logfile/{job_id}/{task_id}")).status_code == 200
    farm.client.cookies.clear()
    from shaman_core.jwt import mint_token

    assert farm.manager.keys is not None
    expired = mint_token(farm.manager.keys, "carol", lifetime=timedelta(seconds=-10))
    response = await farm.client.get(
        f"/logfile/{job_id}/{task_id}", headers={"Authorization": f"Bearer {expired}"}
    )
    assert (response.status_code, response.text) == (498, "JWT token expired\n")


async def test_large_logs_are_trimmed_unless_curl_asks(farm: Farm) -> None:
    lines = "".join(f"line {index:06d} of a long render log\n" for index in range(2000))
    job_id, task_id = await _task_with_log(farm, lines)
    headers = _bearer(farm)
    trimmed = await farm.client.get(f"/logfile/{job_id}/{task_id}", headers=headers)
    assert trimmed.status_code == 200
    assert "Skipped" in trimmed.text
    assert trimmed.text.endswith("line 001999 of a long render log\n")
    assert int(trimmed.headers["content-length"]) == len(trimmed.content)
    whole = await farm.client.get(
        f"/logfile/{job_id}/{task_id}", headers={**headers, "User-Agent": "curl/8.5.0"}
    )
    assert whole.text.endswith(lines)
    assert "Skipped" not in whole.text


async def test_download_sends_a_large_log_whole_to_a_browser(farm: Farm) -> None:
    lines = "".join(f"line {index:06d} of a long render log\n" for index in range(2000))
    job_id, task_id = await _task_with_log(farm, lines)
    browser = {**_bearer(farm), "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120"}
    trimmed = await farm.client.get(f"/logfile/{job_id}/{task_id}", headers=browser)
    assert "Skipped" in trimmed.text
    assert "content-disposition" not in trimmed.headers
    whole = await farm.client.get(f"/logfile/{job_id}/{task_id}?download=1", headers=browser)
    assert whole.status_code == 200
    assert whole.headers["content-type"].startswith("text/plain")
    assert whole.headers["content-disposition"] == f'attachment; filename="task-{task_id}.txt"'
    assert whole.text.endswith(lines)
    assert "Skipped" not in whole.text


async def test_missing_and_malformed_logs(farm: Farm) -> None:
    headers = _bearer(farm)
    job, task = "5f1e0c0a2b3c4d5e6f70b002", "5f1e0c0a2b3c4d5e6f70a101"
    response = await farm.client.get(f"/logfile/{job}/{task}", headers=headers)
    assert (response.status_code, response.text) == (404, "unable to stat task log file\n")
    response = await farm.client.get(f"/logfile/nope/{task}", headers=headers)
    assert (response.status_code, response.text) == (
        404,
        "Invalid ObjectID used for job-id: nope\n",
    )


async def test_a_compressed_log_is_sent_as_a_gzip_attachment(farm: Farm) -> None:
    job_id, task_id = await _task_with_log(farm, "compressed soon")
    farm.manager.logs.compress(job_id, task_id)
    farm.manager.logs.path(job_id, task_id).unlink()
    response = await farm.client.get(f"/logfile/{job_id}/{task_id}", headers=_bearer(farm))
    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        f'attachment; filename="task-{task_id}.txt.gz"'
    )
    # httpx decodes Content-Encoding: gzip for us.
    assert response.text.endswith("compressed soon\n")


async def test_shaman_is_served_at_the_root_with_the_same_tokens(farm: Farm) -> None:
    content = b"a frame of the shot"
    checksum = hashlib.sha256(content).hexdigest()
    definition = f"{checksum} {len(content)} frames/0001.png\n".encode()
    headers = {**_bearer(farm, "pipeline"), "Content-Type": "text/plain"}
    response = await farm.client.post("/checkout/requirements", content=definition, headers=headers)
    assert (response.status_code, response.text) == (200, "file-unknown frames/0001.png\n")
    upload = await farm.client.post(
        f"/files/{checksum}/{len(content)}", content=content, headers=_bearer(farm)
    )
    assert upload.status_code == 204
    created = await farm.client.post(
        "/checkout/create/shot_010", content=definition, headers=headers
    )
    assert (created.status_code, created.text) == (200, "10/shot_010")
    checkout = (
        farm.manager.settings.shaman_checkouts_dir / "10" / "shot_010" / "frames" / "0001.png"
    )
    assert checkout.read_bytes() == content
    # Without a token Shaman refuses, like the rest of the user surface.
    response = await farm.client.post("/checkout/requirements", content=definition)
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("user_agent", "query"), [("curl/8.5.0", ""), ("Mozilla/5.0", "?download=1"), ("Wget/1.21", "")]
)
async def test_a_log_appended_while_it_is_sent_whole_keeps_its_length(
    farm: Farm, user_agent: str, query: str
) -> None:
    # A worker's update appending to the log while it was being sent made the answer run past
    # its Content-Length: uvicorn broke the connection ("Response content longer than
    # Content-Length") and curl exited with 18.
    lines = "".join(f"line {index:06d} of a long render log\n" for index in range(10_000))
    job_id, task_id = await _task_with_log(farm, lines)
    log = farm.manager.logs.path(job_id, task_id)
    sent = log.read_bytes()
    assert len(sent) > 4 * 64 * 1024  # more than one chunk
    token = farm.manager.mint_user_token("alice", timedelta(hours=1))
    path = f"/logfile/{job_id}/{task_id}"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.removeprefix("?").encode(),
        "root_path": "",
        "headers": [
            (b"host", b"manager"),
            (b"user-agent", user_agent.encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("10.0.0.5", 53211),
        "server": ("manager", 80),
    }
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and len(messages) == 2:
            farm.manager.logs.append(job_id, task_id, "appended while the log is sent")

    app = cast(httpx.ASGITransport, farm.client._transport).app
    await app(scope, receive, send)
    start, *bodies = messages
    assert start["status"] == 200
    headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    body = b"".join(message.get("body", b"") for message in bodies)
    assert int(headers["content-length"]) == len(body)
    assert body == sent
    assert log.read_bytes().endswith(b"appended while the log is sent\n")
    if query:
        assert headers["content-disposition"] == f'attachment; filename="task-{task_id}.txt"'


async def test_a_range_of_a_log_is_sent(farm: Farm) -> None:
    lines = "".join(f"line {index:06d} of a long render log\n" for index in range(2000))
    job_id, task_id = await _task_with_log(farm, lines)
    last = "line 001999 of a long render log\n"
    headers = {**_bearer(farm), "User-Agent": "curl/8.5.0", "Range": f"bytes=-{len(last)}"}
    response = await farm.client.get(f"/logfile/{job_id}/{task_id}", headers=headers)
    assert response.status_code == 206
    assert response.text == last
