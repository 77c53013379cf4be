"""The endpoint catalogue agrees with the behaviour references."""

from __future__ import annotations

import re

import pytest

from flamenco_protocol import documents as d
from flamenco_protocol.endpoints import ENDPOINTS, Auth, Body, endpoint, worker_endpoints

# (method, path) of every worker endpoint the real worker calls (spec/worker.md §3), and the
# status codes it understands from each.
REAL_WORKER_CALLS = {
    ("POST", "/register-worker"): {200, 403},
    ("POST", "/sign-on"): {204, 401},
    ("POST", "/task"): {200, 204, 406, 423},
    ("POST", "/tasks/{task_id}/update"): {204, 404, 409},
    ("GET", "/may-i-run/{task_id}"): {200},
    ("POST", "/tasks/{task_id}/return"): {204},
    ("GET", "/status-change"): {200, 204},
    ("POST", "/ack-status-change/{status}"): {204},
    ("POST", "/output-produced"): {204},
    ("POST", "/sign-off"): {204},
}


def test_every_call_of_the_real_worker_is_in_the_catalogue() -> None:
    offered = {(method, item.path): item for item in ENDPOINTS for method in item.methods}
    for call, statuses in REAL_WORKER_CALLS.items():
        assert call in offered, call
        assert statuses <= offered[call].statuses, call


def test_names_and_routes_are_unique() -> None:
    assert len({item.name for item in ENDPOINTS}) == len(ENDPOINTS)
    routes = [(method, item.path) for item in ENDPOINTS for method in item.methods]
    assert len(set(routes)) == len(routes)


def test_task_accepts_post_and_get_and_clients_use_post() -> None:
    assert endpoint("fetch_task").methods == ("POST", "GET")


def test_json_bodies_name_their_documents_and_others_do_not() -> None:
    for item in ENDPOINTS:
        assert (item.request is Body.JSON) == (item.request_document is not None), item.name
        for reply in item.replies:
            assert (reply.body is Body.JSON) == (reply.document is not None), (item.name, reply)
            if reply.document is not None:
                assert d.is_document(reply.document)


def test_worker_endpoints_answer_401_for_bad_credentials() -> None:
    # The real worker parses every answer of these two as JSON, refusals included.
    json_refusals = {"may_i_run": d.MayKeepRunningResponse, "return_task": d.ErrorMessage}
    for item in worker_endpoints():
        if item.auth is Auth.WORKER:
            reply = item.reply(401)
            if item.name in json_refusals:
                assert (reply.body, reply.document) == (Body.JSON, json_refusals[item.name])
            else:
                assert reply.body is Body.TEXT, item.name


def test_may_i_run_always_answers_a_document() -> None:
    assert endpoint("may_i_run").reply(200).document is d.MayKeepRunningResponse
    assert endpoint("fetch_task").reply(423).document is d.WorkerStatusRequest


def test_path_variables_fill_in() -> None:
    update = endpoint("update_task")
    assert update.format_path(task_id="5f1e0c0a2b3c4d5e6f70a101") == (
        "/tasks/5f1e0c0a2b3c4d5e6f70a101/update"
    )
    for item in ENDPOINTS:
        assert re.fullmatch(r"(/[a-z-]+|/\{[a-z_]+\})+", item.path), item.path


def test_shaman_endpoints_are_user_authenticated() -> None:
    shaman = [item for item in ENDPOINTS if item.group == "shaman"]
    assert {item.path for item in shaman} == {
        "/files/{checksum}/{filesize}",
        "/checkout/requirements",
        "/checkout/create/{checkout_id}",
    }
    assert all(item.auth is Auth.USER for item in shaman)


def test_unknown_names_and_statuses_raise_key_error() -> None:
    with pytest.raises(KeyError):
        endpoint("teleport")
    with pytest.raises(KeyError, match="never answers 418"):
        endpoint("fetch_task").reply(418)
