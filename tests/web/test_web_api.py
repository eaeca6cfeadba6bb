"""The web view's JSON API over real backends (memory, Redis, PostgreSQL): read-only refusal,
CSRF and sign-in refusal, the submission form's schema and checks, raw text in the JSON,
server-side paging, dead letters, the mutating actions and streamed artifact downloads.

The view is driven through httpx's ASGI transport in the test's event loop, where the test's
worker runs too (a memory backend is only visible there)."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Literal

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Mount
from starlette.testclient import TestClient

from taskflow import GlobalConfig, QueueTasks, TaskContext, TaskFailed, TaskFunc
from taskflow.supervisor import Order, Plan, Supervisor
from taskflow.web import create_app
from taskflow.web._paging import SCAN_LIMIT
from tests.web.conftest import client_of, signed_in

TOKEN = "s3cret-token"
SCRIPT = "<script>alert('x')</script> & <b>"


def make_app(url: str) -> QueueTasks:
    app = QueueTasks(
        f"web{uuid.uuid4().hex[:8]}",
        broker=url,
        config=GlobalConfig(default_retries=0, heartbeat_s=0.2, lease_s=2.0),
    )

    @app.task(name="add")
    async def add(a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    @app.task(name="report")
    async def report(
        day: str, kind: Literal["csv", "json"] = "csv", rows: list[int] | None = None
    ) -> str:
        return f"{day}:{kind}:{rows}"

    @app.task(name="boom")
    async def boom(text: str) -> None:
        raise ValueError(text)

    @app.task(name="export")
    async def export(ctx: TaskContext, rows: int) -> int:
        await ctx.artifacts.put(
            "rows é.csv", b"".join(b"%d\n" % i for i in range(rows)), delete_after_fetch=True
        )
        return rows

    return app


def app_task(app: QueueTasks) -> TaskFunc[[int], int]:
    """The app's ``add`` task as a `TaskFunc`, to prepare calls in bulk."""
    return TaskFunc(app.sender, app.tasks["add"])


@pytest.fixture
async def app(web_url: str) -> AsyncIterator[QueueTasks]:
    app = make_app(web_url)
    async with app:
        yield app


MUTATIONS = [
    ("/api/tasks", {"name": "add", "args": [1]}),
    ("/api/tasks/some-id/cancel", {}),
    ("/api/dead/requeue", {"ids": ["some-id"]}),
    ("/api/queues/default/purge", {}),
    ("/api/schedules/nightly/pause", {}),
    ("/api/schedules/nightly/resume", {}),
    ("/api/login", {"token": TOKEN}),
]


async def test_without_a_token_every_change_is_refused(app: QueueTasks) -> None:
    sent = await app.add_task("add", (1,))
    async with client_of(create_app(app)) as client:
        session = (await client.get("/api/session")).json()
        assert session["read_only"] is True and session["csrf"] is None
        for path, body in MUTATIONS:
            answer = await client.post(path, json=body, headers={"X-CSRF-Token": "x"})
            assert (answer.status_code, answer.json()["error"]) == (403, "read_only"), path
        stats = (await client.get("/api/queues")).json()["queues"]
    assert stats[0]["queued"] == 1  # nothing was purged, sent or cancelled
    record = await app.get(sent.task_id)
    assert record is not None and record.status.value == "queued"


async def test_changes_need_the_csrf_token_and_a_signed_in_session(app: QueueTasks) -> None:
    sent = await app.add_task("add", (1,))
    cancel = f"/api/tasks/{sent.task_id}/cancel"
    async with client_of(create_app(app, token=TOKEN)) as client:
        session = (await client.get("/api/session")).json()
        assert session["read_only"] is False and session["signed_in"] is False
        anonymous = {"X-CSRF-Token": session["csrf"]}
        assert (await client.post(cancel, headers=anonymous)).status_code == 401
        wrong = await client.post("/api/login", json={"token": "nope"}, headers=anonymous)
        assert wrong.json()["error"] == "not_signed_in"
        assert (await client.post("/api/login", json={"token": TOKEN})).json()["error"] == "csrf"
        headers = await signed_in(client, TOKEN)
        # The anonymous CSRF token died with the anonymous session; none, or a wrong one: refused.
        for bad in ({}, anonymous, {"X-CSRF-Token": headers["X-CSRF-Token"][:-2] + "xx"}):
            answer = await client.post(cancel, headers=bad)
            assert (answer.status_code, answer.json()["error"]) == (403, "csrf")
        assert (await app.get(sent.task_id)).status.value == "queued"  # type: ignore[union-attr]
        cookie = (await client.post(cancel, headers=headers)).json()
        assert cookie == {"result": "cancelled"}
        out = await client.post("/api/logout", headers=headers)
        assert (
            await client.post(cancel, headers={"X-CSRF-Token": out.json()["csrf"]})
        ).status_code == 401


async def test_the_session_cookie_is_signed_http_only_and_same_site(app: QueueTasks) -> None:
    async with client_of(create_app(app, token=TOKEN)) as client:
        answer = await client.get("/api/session")
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        value = client.cookies["taskflow_session"]
        client.cookies.set("taskflow_session", value[:-3] + "abc")  # a forged signature
        again = (await client.get("/api/session")).json()
        assert again["csrf"] != answer.json()["csrf"]  # a new session, not the forged one


async def test_the_form_schema_follows_the_annotations(app: QueueTasks) -> None:
    async with client_of(create_app(app)) as client:
        types = {t["name"]: t for t in (await client.get("/api/task-types")).json()["items"]}
    add = types["add"]
    assert add["doc"] == "Add two numbers."
    assert [(p["name"], p["type"], p["required"], p["default"]) for p in add["params"]] == [
        ("a", "int", True, None),
        ("b", "int", False, 2),
    ]
    params = {p["name"]: p for p in types["report"]["params"]}
    assert params["kind"]["choices"] == ["csv", "json"] and params["kind"]["type"] == "str"
    assert params["rows"]["type"] == "list" and params["rows"]["optional"] is True
    assert [p["name"] for p in types["export"]["params"]] == ["rows"]  # no TaskContext


async def test_a_submitted_form_is_checked_converted_and_sent(app: QueueTasks) -> None:
    async with app.running(2), client_of(create_app(app, token=TOKEN)) as client:
        headers = await signed_in(client, TOKEN)
        sent = await client.post(
            "/api/tasks", json={"name": "add", "kwargs": {"a": "40", "b": 2}}, headers=headers
        )
        assert sent.status_code == 201, sent.text
        assert await app.result(sent.json()["task_id"]).result(timeout=10) == 42
        for kwargs, expected in [
            ({"a": "forty"}, "'a'"),
            ({"b": 1}, "a"),
            ({"a": 1, "c": 3}, "c"),
        ]:
            answer = await client.post(
                "/api/tasks", json={"name": "add", "kwargs": kwargs}, headers=headers
            )
            assert answer.status_code == 422 and expected in answer.json()["message"], kwargs
        bad_choice = await client.post(
            "/api/tasks",
            json={"name": "report", "kwargs": {"day": "x", "kind": "xml"}},
            headers=headers,
        )
        assert bad_choice.status_code == 422
        unknown = await client.post("/api/tasks", json={"name": "nope"}, headers=headers)
        assert unknown.status_code == 404
        option = await client.post(
            "/api/tasks",
            json={"name": "add", "args": [1], "options": {"priority": "high"}},
            headers=headers,
        )
        assert option.status_code == 422


async def test_the_json_carries_raw_text(app: QueueTasks) -> None:
    async with app.running(1), client_of(create_app(app)) as client:
        handle = await app.add_task("boom", (SCRIPT,))
        with pytest.raises(TaskFailed):
            await handle.result(timeout=10)
        task = (await client.get(f"/api/tasks/{handle.task_id}")).json()
        errors = (await client.get("/api/errors")).json()["items"]
        raw = (await client.get(f"/api/tasks/{handle.task_id}")).text
    assert task["error"]["message"] == SCRIPT and task["status"] == "failed"
    assert (task["args"], task["kwargs"]) == ([SCRIPT], {})  # the arguments it was sent with
    assert "ValueError" in task["error"]["traceback"]
    assert task["failed_attempts"][0]["message"] == SCRIPT
    assert errors[0]["message"] == SCRIPT
    assert "&lt;" not in raw and "\\u003c" not in raw  # not escaped on the server


async def test_a_queue_pages_on_the_server(app: QueueTasks) -> None:
    sent = [(await app.add_task("add", (i,))).task_id for i in range(120)]
    await app.add_task("report", ("d",))
    async with client_of(create_app(app)) as client:
        seen: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            params = {"limit": "50", "name": "add"} | ({"after": after} if after else {})
            page = (await client.get("/api/queues/default/tasks", params=params)).json()
            seen += [t["id"] for t in page["items"]]
            pages += 1
            after = page["next"]
            if after is None:
                break
        assert seen == sent and pages == 3
        queued = (
            await client.get("/api/queues/default/tasks", params={"status": "done", "limit": "500"})
        ).json()
        assert queued["items"] == [] and queued["next"] is None
        assert (
            await client.get("/api/queues/default/tasks", params={"limit": "0"})
        ).status_code == 400
        found = (await client.get("/api/search", params={"q": sent[7]})).json()["task"]
        assert found["id"] == sent[7] and found["status"] == "queued"
        assert (await client.get("/api/tasks/no-such-task")).status_code == 404


async def test_dead_letters_page_and_requeue(app: QueueTasks) -> None:
    async with app.running(2), client_of(create_app(app, token=TOKEN)) as client:
        handles = [await app.add_task("boom", (f"e{i}",)) for i in range(5)]
        for h in handles:
            with pytest.raises(TaskFailed):
                await h.result(timeout=10)
        first = (await client.get("/api/queues/default/dead", params={"limit": "3"})).json()
        second = (
            await client.get(
                "/api/queues/default/dead", params={"limit": "3", "offset": first["next"]}
            )
        ).json()
        ids = [t["id"] for t in first["items"] + second["items"]]
        assert sorted(ids) == sorted(h.task_id for h in handles) and second["next"] is None
        headers = await signed_in(client, TOKEN)
        answer = (
            await client.post("/api/dead/requeue", json={"ids": ids[:2]}, headers=headers)
        ).json()
        assert all(answer["new_ids"]) and len(answer["new_ids"]) == 2


async def test_purge_and_schedules(app: QueueTasks) -> None:
    for i in range(3):
        await app.add_task("add", (i,))
    async with client_of(create_app(app, token=TOKEN)) as client:
        headers = await signed_in(client, TOKEN)
        purged = (await client.post("/api/queues/default/purge", headers=headers)).json()
        assert purged == {"purged": 3}
        missing = await client.post("/api/schedules/nope/pause", headers=headers)
        assert missing.status_code == 404
        assert (await client.get("/api/schedules")).json() == {"items": []}
        assert (await client.get("/api/locks")).json() == {"items": []}
        assert (await client.get("/api/workers")).json() == {"items": []}


async def test_an_artifact_downloads_streamed_and_counts_as_the_fetch(app: QueueTasks) -> None:
    async with app.running(1), client_of(create_app(app)) as client:
        handle = await app.add_task("export", (50_000,))
        assert await handle.result(timeout=10) == 50_000
        listed = (await client.get(f"/api/tasks/{handle.task_id}/artifacts")).json()["items"]
        assert [(a["name"], a["delete_after_fetch"]) for a in listed] == [("rows é.csv", True)]
        url = f"/api/tasks/{handle.task_id}/artifacts/{httpx.URL('rows%20%C3%A9.csv')}"
        async with client.stream("GET", url) as answer:
            assert answer.status_code == 200
            assert "filename*=UTF-8''rows%20%C3%A9.csv" in answer.headers["content-disposition"]
            body = b"".join([piece async for piece in answer.aiter_bytes()])
        assert body == b"".join(b"%d\n" % i for i in range(50_000))
        assert int(answer.headers["content-length"]) == len(body)
        gone = await client.get(url)
        assert gone.status_code == 410 and "deleted" in gone.json()["message"]


async def test_the_view_mounts_under_a_prefix(app: QueueTasks) -> None:
    outer = FastAPI(routes=[Mount("/tasks", app=create_app(app, token=TOKEN))])
    await app.add_task("add", (1,))
    async with client_of(outer) as client:
        session = await client.get("/tasks/api/session")
        assert "path=/tasks" in session.headers["set-cookie"].lower()
        headers = await signed_in(client, TOKEN, prefix="/tasks")
        stats = (await client.get("/tasks/api/queues")).json()["queues"]
        assert stats[0]["queued"] == 1
        purged = await client.post("/tasks/api/queues/default/purge", headers=headers)
        assert purged.json() == {"purged": 1}


async def test_orders_show_their_roll_up(app: QueueTasks) -> None:
    supervisor = Supervisor(app)
    today = dt.datetime.fromtimestamp(app.clock.time()).date()
    order_id = await supervisor.submit(
        Order(
            task="add",
            args=[1, 2],
            total=3,
            plan=Plan.quotas_per_day({today: 3}),
            label="<i>three</i>",
        )
    )
    async with client_of(create_app(app)) as client:
        listed = (await client.get("/api/orders")).json()["items"]
        one = (await client.get(f"/api/orders/{order_id}")).json()
        missing = await client.get("/api/orders/no-such-order")
    assert [o["order_id"] for o in listed] == [order_id]
    assert one["label"] == "<i>three</i>" and one["total"] == 3
    assert one["summary"] == (await supervisor.status(order_id)).summary
    assert missing.status_code == 404


async def test_a_status_filter_pages_through_the_matches(app: QueueTasks) -> None:
    sent = [(await app.add_task("add", (i,))).task_id for i in range(30)]
    cancelled = sent[::3]
    for task_id in cancelled:
        await app.cancel(task_id)
    async with client_of(create_app(app)) as client:
        seen: list[str] = []
        params = {"status": "cancelled", "limit": "4"}
        while True:
            page = (await client.get("/api/queues/default/tasks", params=params)).json()
            assert len(page["items"]) <= 4
            seen += [t["id"] for t in page["items"]]
            if page["next"] is None:
                break
            params["after"] = page["next"]
        last = page["items"][-1]
        events = (
            await client.get(
                f"/api/tasks/{last['id']}/events", params={"after": last["events_after"]}
            )
        ).json()
    assert seen == cancelled
    assert [e["kind"] for e in events["items"]] == ["queued", "cancelled"]


async def test_a_page_scans_a_bounded_part_of_a_large_stream() -> None:
    app = make_app("memory://")
    async with app:
        await app.add_tasks([app_task(app).prepare(i) for i in range(6_000)])
        async with client_of(create_app(app)) as client:
            params = {"status": "done", "limit": "50"}
            page = (await client.get("/api/queues/default/tasks", params=params)).json()
            assert page["items"] == [] and page["scanned"] == SCAN_LIMIT
            params["after"] = page["next"]
            rest = (await client.get("/api/queues/default/tasks", params=params)).json()
    assert rest["scanned"] == 1_000 and rest["next"] is None


async def test_answers_carry_a_content_security_policy_and_unknown_routes_are_json() -> None:
    async with client_of(create_app(make_app("memory://"))) as client:
        answer = await client.get("/api/no-such-route")
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_a_memory_app_mounted_beside_its_worker_is_live() -> None:
    """The memory recipe: the view mounted in the user's app, whose lifespan runs the worker
    on the same loop; a task sent through the form is followed to its end on the socket."""
    app = make_app("memory://")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with app.running(1):
            yield

    outer = FastAPI(lifespan=lifespan, routes=[Mount("/tasks", app=create_app(app, token=TOKEN))])
    with TestClient(outer) as client:
        session = client.get("/tasks/api/session").json()
        login = client.post(
            "/tasks/api/login", json={"token": TOKEN}, headers={"X-CSRF-Token": session["csrf"]}
        )
        with client.websocket_connect("/tasks/ws") as socket:
            socket.send_json({"type": "subscribe", "queues": {"default": "$"}})
            assert socket.receive_json()["type"] == "events"
            sent = client.post(
                "/tasks/api/tasks",
                json={"name": "add", "args": [1, 2]},
                headers={"X-CSRF-Token": login.json()["csrf"]},
            ).json()
            kinds: list[str] = []
            while "done" not in kinds:
                message = socket.receive_json()
                kinds += [e["kind"] for e in message["events"] if e["task_id"] == sent["task_id"]]
        assert client.get(f"/tasks/api/tasks/{sent['task_id']}").json()["result"] == 3
    assert kinds == ["queued", "running", "done"]


async def test_a_flow_shows_its_graph_and_roll_up(app: QueueTasks) -> None:
    flow = app.flow("nightly")
    first = flow.add("add", 1, 2)
    second = flow.add("add", 3, after=[first])
    flow.add("boom", "<b>late</b>", after=[second, first])
    async with client_of(create_app(app)) as client:
        handle = await flow.submit()
        waiting = (await client.get(f"/api/flows/{handle.flow_id}")).json()
        async with app.running(2):
            await handle.wait(timeout=10)
        ended = (await client.get(f"/api/flows/{handle.flow_id}")).json()
        missing = await client.get("/api/flows/no-such-flow")
    assert waiting["state"] == "running"
    depth = {n["task_id"]: n["depth"] for n in waiting["nodes"]}
    assert sorted(depth.values()) == [0, 1, 2]
    assert len(waiting["edges"]) == 3
    assert ended["state"] == "failed" and ended["summary"] == (await handle.status()).summary
    failed = [n for n in ended["nodes"] if n["status"] == "failed"]
    assert failed[0]["reason"] == "ValueError: <b>late</b>"
    assert missing.status_code == 404
