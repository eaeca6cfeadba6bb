"""The live WebSocket over real backends, through a real uvicorn server: events arrive in
batches with their cursors, a filter keeps other tasks' events out while the cursors still
advance, and a page that reconnects with its cursors after the server restarted gets every
event it missed exactly once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from taskflow import QueueTasks
from taskflow.web import create_app
from tests.web.conftest import served
from tests.web.test_web_api import make_app

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def app(web_url: str) -> AsyncIterator[QueueTasks]:
    app = make_app(web_url)
    async with app:
        yield app


def per_task(events: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Each task's event kinds, in the order given."""
    kinds: dict[str, list[str]] = {}
    for task_id, kind in events:
        kinds.setdefault(task_id, []).append(kind)
    return kinds


def ws_url(http: str) -> str:
    return http.replace("http://", "ws://") + "/ws"


async def read_until(
    socket: Any, cursors: dict[str, Any], done: int, seen: list[dict[str, Any]]
) -> None:
    """Read messages into `seen` (and the cursors) until `done` tasks have a ``done`` event."""
    while sum(1 for e in seen if e["kind"] == "done") < done:
        message = json.loads(await socket.recv())
        if message["type"] == "events":
            seen.extend(message["events"])
            cursors.update(message["cursors"])


async def test_a_reconnect_after_a_restart_misses_nothing_and_repeats_nothing(
    app: QueueTasks,
) -> None:
    cursors: dict[str, Any] = {}
    seen: list[dict[str, Any]] = []
    async with app.running(4), served(create_app(app)) as server:
        async with websockets.connect(ws_url(server.url)) as socket:
            await socket.send(json.dumps({"type": "subscribe", "queues": {"default": "$"}}))
            first = json.loads(await socket.recv())
            assert first["type"] == "events" and first["events"] == []
            cursors.update(first["cursors"])
            before = [await app.add_task("add", (i,)) for i in range(5)]
            await read_until(socket, cursors, 5, seen)
        await server.stop()
        during = [await app.add_task("add", (i,)) for i in range(5)]  # while nobody watches
        for handle in during:
            await handle.result(timeout=10)
        await server.start()
        async with websockets.connect(ws_url(server.url)) as socket:
            await socket.send(json.dumps({"type": "subscribe", "queues": cursors}))
            after = [await app.add_task("add", (i,)) for i in range(5)]
            await read_until(socket, cursors, 15, seen)
    stream = await app.storage.read_events("default", limit=10_000)
    # Each event once, each task's in order; compared by what they say, not by their cursors
    # (opaque), and not across tasks: on PostgreSQL a follower sees an event committed late
    # when it commits, after events a fresh read puts behind it.
    assert per_task([(e["task_id"], e["kind"]) for e in seen]) == per_task(
        [(e.task_id, e.kind.value) for e in stream]
    )
    done = Counter(e["task_id"] for e in seen if e["kind"] == "done")
    assert set(done) == {h.task_id for h in before + during + after}
    assert set(done.values()) == {1}


async def test_a_filtered_page_gets_its_tasks_and_every_cursor(app: QueueTasks) -> None:
    async with app.running(2), served(create_app(app)) as server:
        mine = await app.add_task("add", (1,))
        other = await app.add_task("add", (2,))
        await mine.result(timeout=10)
        await other.result(timeout=10)
        async with websockets.connect(ws_url(server.url)) as socket:
            await socket.send(
                json.dumps(
                    {
                        "type": "subscribe",
                        "queues": {"default": None},
                        "tasks": [mine.task_id],
                        "stats": True,
                    }
                )
            )
            shown: list[dict[str, Any]] = []
            last: dict[str, Any] = {}
            stats = None
            at_end = False
            while not at_end or stats is None:
                message = json.loads(await socket.recv())
                if message["type"] == "stats":
                    stats = message["queues"]
                elif message["type"] == "events":
                    shown += message["events"]
                    last.update(message["cursors"])
                    # The page's cursor moved past the events it was not shown too: nothing
                    # is left after it (cursors are opaque: asked of the backend, not compared).
                    after = last["default"]
                    at_end = after is not None and not await app.storage.read_events(
                        "default", after=after, limit=1
                    )
    assert {e["task_id"] for e in shown} == {mine.task_id}
    assert [e["kind"] for e in shown][-1] == "done"
    assert stats[0]["queue"] == "default"


async def test_a_bad_subscription_is_answered_not_dropped(app: QueueTasks) -> None:
    await app.add_task("add", (1,))  # a stream to check cursors against
    async with (
        served(create_app(app)) as server,
        websockets.connect(ws_url(server.url)) as socket,
    ):
        await socket.send("not json")
        assert json.loads(await socket.recv())["error"] == "bad_request"
        await socket.send(json.dumps({"type": "subscribe", "queues": {"default": 5}}))
        assert json.loads(await socket.recv())["error"] == "bad_request"
        await socket.send(json.dumps({"type": "subscribe", "queues": {"default": "x-y.z"}}))
        assert json.loads(await socket.recv())["error"] == "bad_request"
        await socket.send(json.dumps({"type": "subscribe", "queues": {"default": "$"}}))
        assert json.loads(await socket.recv())["type"] == "events"
