"""The backend contracts, the types they speak, and the components every backend uses.

A backend implements three small contracts on one server:

* `Broker` moves messages: enqueue, claim under a lease, renew, complete, cancel, dead letters,
  and the push that wakes idle workers (`Broker.watch_work`);
* `Storage` keeps what is known about tasks: records, results, progress, the event stream, and
  the result waiters of this process (`Storage.wait`);
* `Coordination` keeps named leases with fencing tokens, reader/writer locks, and a versioned
  key-value space.

Beside them, an `ArtifactStore` keeps the bytes of the files tasks produce (a directory, or the
task backend's own server).

The broker carries the other two (``broker.storage``, ``broker.coordination``) and opens and
closes them with itself: storing an outcome, checking its fencing token and acking its message
are **one atomic backend call** (`Broker.complete`), so the three live on the same server. The
base classes own the shared bookkeeping (lifecycle, counters, logging, task ids) and call the
backend's ``_hooks``. Two components do what every backend needs, once: `ResultWaiters` (the
registry of result waiters, woken by push) and `ReadCoalescer` (the reads of one loop turn as
one batched read). Every type a backend reads or writes is exported here too, with the codecs.

Rules every backend follows (the conformance suite in ``tests/conformance`` checks each one):

* **Time comes in.** Every call that needs "now" takes it as ``now`` (seconds since the epoch,
  from the caller's clock seam). A backend never reads its own clock for due times, leases or
  TTLs, so the whole suite runs under a fake clock, real servers included.
* **Batches.** Every call takes and returns a batch, in order: one round trip for many messages.
* **Fencing.** Each claim hands out a token strictly greater than any earlier token of that task.
  `Broker.complete`, `Broker.extend`, `Storage.report` and `Storage.save_checkpoints` with a
  stale token are refused and change nothing.
* **One terminal outcome.** done, failed, cancelled and expired are terminal. The first terminal
  write wins, is never overwritten, and a cancel racing a completion is decided by who writes
  first. A message claimed again after its outcome was stored is acked without being delivered.
* **At-least-once.** A claimed message is acked only by `Broker.complete`. A lease that lapses
  (its worker died) makes the message claimable again with a higher token; if that claim would
  exceed ``retries + 1`` attempts, the task is dead-lettered instead, with an error of type
  ``"LeaseExpired"`` (store `LEASE_EXPIRED`, the one error every backend stores then).
* **Events.** Every state change appends an `Event` to the task's queue stream, in the same
  atomic step as the change. Its cursor resumes reading right after it; `LATEST` starts after
  the newest event instead.
* **Pushed, never polled.** Result waiters are woken by the backend's push
  (`Storage.waiters`), idle workers by `Broker.watch_work`'s callback.
"""

from .._message import LEASE_EXPIRED as LEASE_EXPIRED
from .._message import SKIPPED as SKIPPED
from .._message import SUPERSEDED as SUPERSEDED
from .._message import UPSTREAM_FAILED as UPSTREAM_FAILED
from .._message import CancelResult as CancelResult
from .._message import Checkpoint as Checkpoint
from .._message import Delivery as Delivery
from .._message import EnqueueResult as EnqueueResult
from .._message import ErrorInfo as ErrorInfo
from .._message import Event as Event
from .._message import EventKind as EventKind
from .._message import FailedAttempt as FailedAttempt
from .._message import FailurePolicy as FailurePolicy
from .._message import Lease as Lease
from .._message import LeaseInfo as LeaseInfo
from .._message import LeaseState as LeaseState
from .._message import LockHold as LockHold
from .._message import LockHolder as LockHolder
from .._message import LockMode as LockMode
from .._message import LockRequest as LockRequest
from .._message import LockState as LockState
from .._message import LockWaiter as LockWaiter
from .._message import Outcome as Outcome
from .._message import OutcomeKind as OutcomeKind
from .._message import Progress as Progress
from .._message import ProgressUpdate as ProgressUpdate
from .._message import QueueStats as QueueStats
from .._message import TaskMessage as TaskMessage
from .._message import TaskOutcome as TaskOutcome
from .._message import TaskRecord as TaskRecord
from .._message import TaskStatus as TaskStatus
from .._message import Versioned as Versioned
from .._message import WorkerInfo as WorkerInfo
from .._message import decode_failed as decode_failed
from .._message import decode_message as decode_message
from .._message import decode_value as decode_value
from .._message import decode_worker as decode_worker
from .._message import encode_failed as encode_failed
from .._message import encode_message as encode_message
from .._message import encode_value as encode_value
from .._message import encode_worker as encode_worker
from ._artifacts import ArtifactBlob as ArtifactBlob
from ._artifacts import ArtifactStore as ArtifactStore
from ._broker import Broker as Broker
from ._coordination import Coordination as Coordination
from ._reads import ReadCoalescer as ReadCoalescer
from ._storage import LATEST as LATEST
from ._storage import Storage as Storage
from ._waiters import ResultWaiters as ResultWaiters

__all__ = [
    "LATEST",
    "LEASE_EXPIRED",
    "SKIPPED",
    "SUPERSEDED",
    "UPSTREAM_FAILED",
    "ArtifactBlob",
    "ArtifactStore",
    "Broker",
    "CancelResult",
    "Checkpoint",
    "Coordination",
    "Delivery",
    "EnqueueResult",
    "ErrorInfo",
    "Event",
    "EventKind",
    "FailedAttempt",
    "FailurePolicy",
    "Lease",
    "LeaseInfo",
    "LeaseState",
    "LockHold",
    "LockHolder",
    "LockMode",
    "LockRequest",
    "LockState",
    "LockWaiter",
    "Outcome",
    "OutcomeKind",
    "Progress",
    "ProgressUpdate",
    "QueueStats",
    "ReadCoalescer",
    "ResultWaiters",
    "Storage",
    "TaskMessage",
    "TaskOutcome",
    "TaskRecord",
    "TaskStatus",
    "Versioned",
    "WorkerInfo",
    "decode_failed",
    "decode_message",
    "decode_value",
    "decode_worker",
    "encode_failed",
    "encode_message",
    "encode_value",
    "encode_worker",
]
