"""Every exception taskflow raises, under one root.

```
TaskflowError
├── ConfigError (ValueError, TypeError)  a bad GlobalConfig value, or a QueueTasks argument of the
│                                     wrong kind; raised by GlobalConfig / QueueTasks
├── BackendUnavailable                a URL scheme whose driver is not installed; a server that
│   │                                 cannot be reached; a backend that cannot do what was asked
│   └── AuthenticationFailed          the server refused the login (user, password): not retried
├── LifecycleError (RuntimeError)     an app used from a loop while another owns it; blocking on one
├── TaskRegistrationError (ValueError) bad @app.task usage, duplicate task name
├── UnknownTaskError (LookupError)    a name-based add_task for a task this app does not know
├── ScheduleNotFound (LookupError)    pause_schedule / resume_schedule of a name this app does
│                                     not declare with @app.periodic
├── InvalidOption (ValueError, TypeError)  a task option of the wrong type or out of range, or an
│                                     unknown option name (decorator or per call)
├── InvalidArguments (TypeError)      arguments that do not fit the task's signature (add_task,
│                                     prepare; on the worker: a failed task's error type)
├── EncodeError (TypeError)           an argument msgspec cannot encode (producer side)
├── TaskNotFound (LookupError)        AsyncResult for an id the storage has never seen
├── ResultExpired                     the result TTL passed; raised at once by result()
├── TaskFailed                        the task ended failed; carries the remote error
│   ├── TaskCancelled                 the task was cancelled
│   └── TaskExpired                   the task was not started before its `expires`
├── TimeoutError (builtins.TimeoutError)  result(timeout=...) gave up waiting
├── TaskTimeout                       a task ran past its own `timeout` (the run's error)
├── UnencodableResult (TypeError)     a task returned or yielded a value msgspec cannot encode
│                                     (the run's error, never retried)
├── Retry                             raised *inside* a task to ask for a retry
├── LeaseLost                         raised *inside* a task whose checkpoint write was refused
│                                     (another run holds the task now): the run stops, unstored
├── NotResumable (TypeError)          ctx.chunks over a one-shot iterator without resume=False
├── ArtifactNotFound (LookupError)    no artifact of that name is stored for the task (never put,
│                                     still being written, or already deleted or expired)
├── LockLost                          a held lock lapsed before it was renewed (its holder was
│                                     paused past its lease); raised by `async with app.lock()`
├── LeadershipLost                    a held role lapsed and was taken, or the store stayed
│                                     unreachable past its lease; `async with app.leadership()`
├── InvalidArtifactName (ValueError)  a name that cannot name an artifact (``/``, ``..``, NUL,
│                                     empty, too long); raised by ctx.artifacts.put and fetches
├── OrderNotFound (KeyError)          no order has this id (taskflow.supervisor)
├── OrderError (ValueError)           an order or amendment that cannot be carried out
│                                     (taskflow.supervisor)
├── InvalidFlow (ValueError)          a flow graph refused at submit (a cycle, inputs naming a
│   │                                 node that is not a parent or a parameter the task lacks),
│   │                                 or a fan-out that cannot be made (ctx.fan_out)
│   └── FlowCycle                     the graph's edges close a circle
├── FlowNotFound (LookupError)        app.get_flow of an id no stored task names
└── FlowFailed                        FlowHandle.result() of a flow that ended failed or
                                      cancelled; carries its FlowStatus
```

`TaskTimeout` and `UnencodableResult` are not raised to callers: a run that ends with one fails
with an error whose type is its name, visible through `TaskFailed.error_type`. `TaskTimeout` is
public so that ``retry_on=(TaskTimeout, ...)`` and ``dont_retry_on=TaskTimeout`` can name it;
`UnencodableResult` is never retried, so nothing needs to name it and it is not exported.
`OrderNotFound` and `OrderError` are raised by the orders' `Supervisor` and exported from
`taskflow.supervisor`.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._message import LockMode

__all__ = [
    "ArtifactNotFound",
    "AuthenticationFailed",
    "BackendUnavailable",
    "ConfigError",
    "EncodeError",
    "FlowCycle",
    "FlowFailed",
    "FlowNotFound",
    "InvalidArguments",
    "InvalidArtifactName",
    "InvalidFlow",
    "InvalidOption",
    "LeadershipLost",
    "LeaseLost",
    "LifecycleError",
    "LockLost",
    "NotResumable",
    "OrderError",
    "OrderNotFound",
    "ResultExpired",
    "Retry",
    "ScheduleNotFound",
    "TaskCancelled",
    "TaskExpired",
    "TaskFailed",
    "TaskNotFound",
    "TaskRegistrationError",
    "TaskTimeout",
    "TaskflowError",
    "TimeoutError",
    "UnencodableResult",
    "UnknownTaskError",
]


class TaskflowError(Exception):
    """The root of every error taskflow raises."""


class ConfigError(TaskflowError, ValueError, TypeError):
    """A setting has a bad value, or `QueueTasks` got an argument of the wrong kind; the message
    names the setting and what it accepts."""


class BackendUnavailable(TaskflowError):
    """A backend cannot be used as asked: its driver is missing, its server cannot be reached
    (or refuses the login), or it cannot do the operation."""


class AuthenticationFailed(BackendUnavailable):
    """The server refused the login: a wrong user or password (or one the server does not let
    in). Raised at once, never retried, by whatever opened the connection (``async with app``,
    `postgres.upgrade`, a call that had to reconnect); the message names the server with its
    password masked."""


class LifecycleError(TaskflowError, RuntimeError):
    """An app (or a backend) used where it cannot be: from an event loop while another one,
    running in another thread, owns its connections; a blocking call (``add_task_sync``,
    `SyncTask`, `SyncResult`) made on a thread that runs an event loop; a `Worker` run twice; a
    backend used before `open()` outside an app."""


class TaskRegistrationError(TaskflowError, ValueError):
    """`@app.task` was used on something it cannot run, or a task name is taken."""


class UnknownTaskError(TaskflowError, LookupError):
    """A task name is not registered on this app (raised by name-based `add_task`)."""


class ScheduleNotFound(TaskflowError, LookupError):
    """No schedule of this name is declared on the app with `QueueTasks.periodic` (raised by
    `QueueTasks.pause_schedule` and `QueueTasks.resume_schedule`)."""


class InvalidOption(TaskflowError, ValueError, TypeError):
    """A task option has the wrong type, is out of range, or does not exist.

    Raised where the option is given: by `@app.task(...)` for the task's defaults, by
    `TaskFunc.options(...)` / `TaskCall.options(...)`, and by name-based `add_task(...)`. Every
    option has one rule, checked once, the same wherever it is given; the message names the
    option, the rule and the value.
    """


class InvalidArguments(TaskflowError, TypeError):
    """Arguments that do not fit the task function's signature.

    Raised by `add_task(...)` and `prepare(...)` (typed or by name) before anything is stored;
    a task sent by a process that does not know the task fails on the worker with this error
    type instead (never retried). Also raised by `app.add_tasks` given anything but prepared
    calls.
    """


class EncodeError(TaskflowError, TypeError):
    """An argument or result cannot be encoded with msgspec; the message names it."""


class TaskNotFound(TaskflowError, LookupError):
    """The storage has no record of this task id."""

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"no task with id {task_id!r} is known to the storage: check the id, and that the "
            "producer and this handle use the same backend"
        )
        self.task_id = task_id


class ArtifactNotFound(TaskflowError, LookupError):
    """No artifact of this name is stored for the task."""

    def __init__(self, task_id: str, name: str, why: str = "") -> None:
        super().__init__(
            f"task {task_id!r} has no artifact {name!r}"
            + (f": {why}" if why else ": check the name against the task's artifacts")
        )
        self.task_id = task_id
        self.name = name


class LockLost(TaskflowError):
    """A held lock was lost: a renewal found that it had lapsed (its holder was paused or cut
    off from the backend for longer than the lock's lease), so another holder may have it now.

    Raised from ``async with app.lock(...)``, whose block is cancelled when the loss is found.
    Writes made under the lock's fencing token must be refused from then on; take the lock
    again to go on.

    Attributes:
        name: The lock's name.
        mode: How it was held (`LockMode.SHARED` or `LockMode.EXCLUSIVE`).
        token: The fencing token that is no longer valid.
        reason: Why it counts as lost.
    """

    def __init__(self, name: str, mode: LockMode, token: int, reason: str) -> None:
        super().__init__(
            f"lock {name!r} ({mode.value}, fencing token {token}) was lost: {reason}. Writes "
            "under this token must be refused from now on; take the lock again to go on"
        )
        self.name = name
        self.mode = mode
        self.token = token
        self.reason = reason


class LeadershipLost(TaskflowError):
    """A role held with ``app.leadership(...)`` was lost: a renewal found that its lease had
    lapsed and been taken (the holder was paused or cut off for longer than the lease), or the
    store stayed unreachable until the lease ran out.

    Raised from ``async with app.leadership(...)``, whose block is cancelled when the loss is
    found. Another candidate may lead now: writes fenced by the old token must be refused from
    then on. Enter ``app.leadership(...)`` again to campaign anew.

    Attributes:
        role: The role's name.
        owner: This candidate's owner id.
        token: The fencing token that is no longer valid.
        reason: Why it counts as lost.
    """

    def __init__(self, role: str, owner: str, token: int, reason: str) -> None:
        super().__init__(
            f"leadership of role {role!r} (owner {owner!r}, fencing token {token}) was lost: "
            f"{reason}. Writes fenced by this token must be refused from now on; enter "
            "app.leadership() again to campaign anew"
        )
        self.role = role
        self.owner = owner
        self.token = token
        self.reason = reason


class InvalidArtifactName(TaskflowError, ValueError):
    """A name that cannot name an artifact: empty, longer than 200 bytes of UTF-8, or holding
    ``/``, ``\\``, ``..`` or NUL (a store may use the name as a file name).

    Raised by ``ctx.artifacts.put`` and by the result handle's artifact calls.
    """


class ResultExpired(TaskflowError):
    """The task finished, but its result outlived the result TTL and was dropped."""

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"the result of task {task_id!r} expired (GlobalConfig.result_ttl_s); "
            "raise the TTL or read results sooner"
        )
        self.task_id = task_id


class TaskFailed(TaskflowError):
    """The task ended without a value. Carries the remote error's type, message and traceback.

    Raised by `AsyncResult.result()` / `SyncResult.result()`.
    """

    def __init__(
        self,
        task_id: str,
        error_type: str,
        message: str,
        traceback: str = "",
    ) -> None:
        super().__init__(f"task {task_id!r} failed: {error_type}: {message}")
        self.task_id = task_id
        self.error_type = error_type
        self.error_message = message
        self.remote_traceback = traceback


class TaskCancelled(TaskFailed):
    """The task was cancelled before it finished."""


class TaskExpired(TaskFailed):
    """The task was not started before its `expires` time, so it was never run."""


class TimeoutError(TaskflowError, builtins.TimeoutError):  # noqa: A001 - deliberate builtin twin
    """Waiting for a result took longer than the `timeout` given."""


class TaskTimeout(TaskflowError):
    """A task ran longer than its `timeout`; its run fails with this error (then is retried if
    retries remain and the retry filters allow it)."""


class UnencodableResult(TaskflowError, TypeError):
    """A task returned or yielded a value msgspec cannot encode; its run fails with this error
    (never retried: the same value would fail again). The message names the value's type."""


class Retry(TaskflowError):
    """Raise inside a task to run it again later: ``raise Retry(delay=30)``.

    The retry counts as an attempt, so it stops at the task's `retries`; after that the task is
    dead-lettered with this exception as its error.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.delay = delay
        self.reason = reason


class LeaseLost(TaskflowError):
    """Raised inside a task when the backend refused what its run wrote under its fencing token
    (a checkpoint of ``ctx.chunks``): the lease was taken over, so another run holds the task
    now (this worker was paused or cut off past its lease). The run stops as one whose lease
    the heartbeat found lost: nothing of it is stored, and the other run carries on. Let it
    propagate; an async task usually sees it as a cancellation instead."""


class NotResumable(TaskflowError, TypeError):
    """``ctx.chunks`` was given a source that cannot be read again from a position (a one-shot
    iterator: a generator, an async generator, a file object, any iterator that is its own
    iterable), so a re-run could not resume where the last one stopped. Pass a re-iterable
    source (a range, a sequence, an object whose ``__iter__`` starts over), or
    ``resume=False`` to walk it from the start on every run."""


class OrderNotFound(TaskflowError, KeyError):
    """No order has this id (raised by `Supervisor.status`, `cancel`, `amend`, `events`)."""


class OrderError(TaskflowError, ValueError):
    """An order or an amendment that cannot be carried out; the message says why (raised by
    `Supervisor.submit` and `Supervisor.amend`)."""


class InvalidFlow(TaskflowError, ValueError):
    """A flow that cannot be stored, or a fan-out that cannot be made; the message names the
    node and what to change.

    Raised by `Flow.add` and `Flow.submit` before anything is stored (inputs that name a node
    that is not a parent, or a parameter the task lacks; a node of another flow; an empty flow;
    a flow submitted twice), and by ``ctx.fan_out`` (no shards, a second fan-out in one run). A
    task unknown by name raises `UnknownTaskError`, arguments that do not bind
    `InvalidArguments`, as for `add_task`.
    """


class FlowCycle(InvalidFlow):
    """The flow's edges close a circle (``a -> b -> a``): no node of it could ever start.
    Raised by `Flow.submit`; the message names the nodes of one circle in order."""


class FlowNotFound(TaskflowError, LookupError):
    """No stored task names this flow id (raised by `QueueTasks.get_flow`): the id is wrong,
    the flow lives on another backend, or its records were cleaned up."""

    def __init__(self, flow_id: str) -> None:
        super().__init__(
            f"no task of flow {flow_id!r} is stored: check the id, that this app uses the "
            "backend the flow was submitted to, and that its records are still kept "
            "(GlobalConfig.result_ttl_s)"
        )
        self.flow_id = flow_id


class FlowFailed(TaskflowError):
    """A flow ended without every node done (raised by `FlowHandle.result`).

    Attributes:
        flow_id: The flow's id.
        status: The flow's `FlowStatus` when it ended (its `summary` says what failed; typed
            loosely here so the exceptions import nothing of the flows).
    """

    def __init__(self, flow_id: str, state: str, summary: str, status: Any) -> None:
        super().__init__(f"flow {flow_id!r} {state}: {summary}")
        self.flow_id = flow_id
        self.status = status
