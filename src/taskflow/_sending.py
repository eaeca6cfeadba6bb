"""`Sender`: the send path of one app, from a call to an enqueued `TaskMessage` and its handle.

check the arguments -> open the app on the running loop if it is not open there -> build the
message (encode the arguments, apply the options over the task's defaults over the app's
`GlobalConfig`, a new id from the broker) -> one `Broker.enqueue` call -> an `AsyncResult`.
A call with no per-call options builds its message from a template made once per task (the
hot path); `send_many` sends many calls in one backend call; `send_sync` runs `send` from
synchronous code on the loop that owns the app.

Package-internal: the app makes one (``app.sender``) and its task handles send through it.
What does not live here: the options and their rules (`_options.py`), the task definition and
its argument check (`_task.py`), the handles (`_client.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

import msgspec

from ._client import AsyncResult, ClientApp, SyncResult
from ._config import GlobalConfig
from ._context import IDEMPOTENCY_HEADER
from ._exceptions import EncodeError, InvalidArguments, UnknownTaskError
from ._message import TaskMessage, encode_value
from ._options import NO_OPTIONS, TaskOptions, given
from ._task import PreparedTask, TaskDefinition

__all__ = ["Sender", "SendingApp"]

_NO_HEADERS: Final[dict[str, str]] = {}
# Distinct from NO_OPTIONS (same values) so building a template takes the general path.
_TEMPLATE_OPTIONS: Final = TaskOptions(task_id="template")

_running_loop = asyncio.get_running_loop


class SendingApp(ClientApp, Protocol):
    """What the send path uses of its app (a `QueueTasks`), beyond what the handles use."""

    name: str
    config: GlobalConfig

    @property
    def tasks(self) -> Mapping[str, TaskDefinition]:
        """Registered tasks by name."""
        ...


class Sender:
    """Builds and enqueues the messages of one app's calls (see the module docstring)."""

    __slots__ = ("_app", "_templates")

    def __init__(self, app: SendingApp) -> None:
        self._app = app
        self._templates: dict[str, TaskMessage] = {}

    def definition(self, task_name: str) -> TaskDefinition:
        """The task registered as `task_name`.

        Raises:
            UnknownTaskError: no task of that name is registered on the app.
        """
        app = self._app
        definition = app.tasks.get(task_name)
        if definition is None:
            known = ", ".join(sorted(app.tasks)) or "none"
            raise UnknownTaskError(
                f"no task named {task_name!r} is registered on app {app.name!r} "
                f"(registered: {known})"
            )
        return definition

    async def send(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
    ) -> AsyncResult[Any]:
        """Check, build and enqueue one call; its result handle.

        Raises:
            InvalidArguments: the arguments do not fit the task's signature (nothing is sent).
            EncodeError: an argument cannot be encoded.
            LifecycleError: the app is open on an event loop running in another thread.
        """
        definition.check_arguments(args, kwargs)
        app = self._app
        life = app.lifecycle
        if life.loop is not _running_loop():  # the hot path's check, inlined
            await life.ensure_open()
        now = app.clock.time()
        message = self.build_message(definition, args, kwargs, options, now)
        result = (await app.broker.enqueue((message,), now=now, connection=options.connection))[0]
        return AsyncResult(result.task_id, app)

    def send_sync(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
    ) -> SyncResult[Any]:
        """`send` from synchronous code (``add_task_sync``), on the loop that owns the app."""
        app = self._app
        handle = app.lifecycle.call_sync(self.send, definition, args, kwargs, options)
        return SyncResult(handle.task_id, app)

    async def send_many(
        self, calls: Sequence[PreparedTask[Any]], *, connection: Any = None
    ) -> list[AsyncResult[Any]]:
        """Enqueue prepared calls in one backend call; one handle per call, in order.

        Raises:
            InvalidArguments: `calls` holds something other than prepared calls.
        """
        prepared = _prepared_calls(calls)
        app = self._app
        await app.lifecycle.ensure_open()
        now = app.clock.time()
        messages = [
            self.build_message(call.definition, call.args, call.kwargs, call.options, now)
            for call in prepared
        ]
        results = await app.broker.enqueue(messages, now=now, connection=connection)
        return [AsyncResult(r.task_id, app) for r in results]

    def build_message(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: TaskOptions,
        now: float,
    ) -> TaskMessage:
        """The `TaskMessage` of one call: the options given, else the task's defaults, else the
        app's `GlobalConfig`.

        Raises:
            EncodeError: an argument cannot be encoded (the message names it).
        """
        if options is NO_OPTIONS:
            return self._from_template(definition, args, kwargs, now)
        app = self._app
        config = app.config
        payload = _encode_payload(definition, args, kwargs)
        queue = given(options.queue, definition.queue) or config.default_queue
        retries = given(options.retries, definition.retries)
        backoff = given(options.retry_backoff, definition.retry_backoff_s)
        return TaskMessage(
            id=given(options.task_id, None) or app.broker.new_task_id(queue),
            name=definition.name,
            queue=queue,
            payload=payload,
            priority=given(options.priority, definition.priority),
            eta=_eta(options, now),
            created_at=now,
            retries=config.default_retries if retries is None else retries,
            retry_backoff_s=config.default_retry_backoff_s if backoff is None else backoff,
            timeout_s=given(options.timeout, definition.timeout_s),
            expires_at=_expires_at(given(options.expires, definition.expires), now),
            dedup_key=given(options.dedup_key, None),
            dedup_ttl_s=given(options.dedup_ttl, None),
            store_result=given(options.store_result, definition.store_result),
            parent_id=given(options.parent_id, None),
            order_id=given(options.order_id, None),
            headers=_headers(options),
            locks=[(lock.name, lock.mode) for lock in given(options.locks, definition.locks)],
            hedge=given(options.hedge, definition.hedge),
        )

    def _from_template(
        self,
        definition: TaskDefinition,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        now: float,
    ) -> TaskMessage:
        """The hot path: a call with no per-call options, from a template made once per task."""
        template = self._templates.get(definition.name)
        if template is None or template.name != definition.name:
            template = self.build_message(definition, (), {}, _TEMPLATE_OPTIONS, now)
            self._templates[definition.name] = template
        return msgspec.structs.replace(
            template,
            id=self._app.broker.new_task_id(template.queue),
            payload=_encode_payload(definition, args, kwargs),
            created_at=now,
            expires_at=(
                None if definition.expires is None else _expires_at(definition.expires, now)
            ),
        )


# -- helpers -------------------------------------------------------------------------------


def _encode_payload(
    definition: TaskDefinition, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> bytes:
    try:
        return encode_value((args, kwargs))
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(_describe_unencodable(definition, args, kwargs, exc)) from None


def _describe_unencodable(
    definition: TaskDefinition,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    exc: Exception,
) -> str:
    names = list(definition.call_signature.parameters)
    for index, value in enumerate(args):
        try:
            encode_value(value)
        except (TypeError, ValueError, OverflowError) as err:
            label = names[index] if index < len(names) else f"#{index}"
            return (
                f"argument {label!r} (position {index}) of task {definition.name!r} cannot be "
                f"encoded: {err}. Pass plain data (str, numbers, dict, list, datetime; a "
                "dataclass or msgspec.Struct arrives as a dict) or an id to look it up by"
            )
    for key, value in kwargs.items():
        try:
            encode_value(value)
        except (TypeError, ValueError, OverflowError) as err:
            return f"argument {key!r} of task {definition.name!r} cannot be encoded: {err}"
    return f"the arguments of task {definition.name!r} cannot be encoded: {exc}"


def _prepared_calls(calls: object) -> list[PreparedTask[Any]]:
    """`calls` as a list, or `InvalidArguments` saying what `add_tasks` takes."""
    example = "e.g. app.add_tasks([add.prepare(1, 2), add.options(priority=9).prepare(3, 4)])"
    if isinstance(calls, PreparedTask):
        raise InvalidArguments(f"app.add_tasks takes a list of prepared calls, not one: {example}")
    if isinstance(calls, str | bytes | Mapping) or not isinstance(calls, Iterable):
        raise InvalidArguments(
            "app.add_tasks takes a list of prepared calls (what task.prepare(...) returns), "
            f"got a {type(calls).__name__}: {example}"
        )
    checked = list(calls)
    for index, call in enumerate(checked):
        if not isinstance(call, PreparedTask):
            raise InvalidArguments(
                "app.add_tasks takes prepared calls (what task.prepare(...) returns), got a "
                f"{type(call).__name__} at index {index} ({call!r:.60}): {example}"
            )
    return checked


def _headers(options: TaskOptions) -> dict[str, str]:
    headers = given(options.headers, _NO_HEADERS)
    key = given(options.idempotency_key, None)
    if key is not None:
        headers = {**headers, IDEMPOTENCY_HEADER: key}
    return headers


def _eta(options: TaskOptions, now: float) -> float | None:
    """When the task becomes due: its `eta`, or now plus its `delay` (never both: TaskOptions
    refuses that), or None for now."""
    eta = given(options.eta, None)
    if eta is not None:
        return eta
    delay = given(options.delay, None)
    return None if delay is None else now + delay


def _expires_at(expires: float | datetime | None, now: float) -> float | None:
    """The epoch time after which the task is not started: a duration counts from `now`."""
    if expires is None:
        return None
    if isinstance(expires, datetime):
        return expires.timestamp()
    return now + expires
