"""taskflow: an embeddable asyncio task queue.

The one public surface. Implementation lives in ``_``-prefixed modules; backends are imported
lazily by URL scheme (``taskflow.memory``, ``taskflow.redis``, ``taskflow.postgres``); contracts
are in ``taskflow.abc`` and test helpers in ``taskflow.testing``.
"""

import logging as _logging

from ._app import QueueTasks as QueueTasks
from ._artifact_dir import DirectoryArtifactStore as DirectoryArtifactStore
from ._artifact_records import ArtifactInfo as ArtifactInfo
from ._artifact_records import ArtifactState as ArtifactState
from ._artifacts import TaskArtifacts as TaskArtifacts
from ._chunks import Chunks as Chunks
from ._client import AsyncResult as AsyncResult
from ._client import AsyncTask as AsyncTask
from ._client import SyncResult as SyncResult
from ._client import SyncTask as SyncTask
from ._client import TaskInfo as TaskInfo
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._config import GlobalConfig as GlobalConfig
from ._context import TaskContext as TaskContext
from ._context import WorkerState as WorkerState
from ._exceptions import ArtifactNotFound as ArtifactNotFound
from ._exceptions import AuthenticationFailed as AuthenticationFailed
from ._exceptions import BackendUnavailable as BackendUnavailable
from ._exceptions import ConfigError as ConfigError
from ._exceptions import EncodeError as EncodeError
from ._exceptions import FlowCycle as FlowCycle
from ._exceptions import FlowFailed as FlowFailed
from ._exceptions import FlowNotFound as FlowNotFound
from ._exceptions import InvalidArguments as InvalidArguments
from ._exceptions import InvalidArtifactName as InvalidArtifactName
from ._exceptions import InvalidFlow as InvalidFlow
from ._exceptions import InvalidOption as InvalidOption
from ._exceptions import LeadershipLost as LeadershipLost
from ._exceptions import LeaseLost as LeaseLost
from ._exceptions import LifecycleError as LifecycleError
from ._exceptions import LockLost as LockLost
from ._exceptions import NotResumable as NotResumable
from ._exceptions import ResultExpired as ResultExpired
from ._exceptions import Retry as Retry
from ._exceptions import ScheduleNotFound as ScheduleNotFound
from ._exceptions import TaskCancelled as TaskCancelled
from ._exceptions import TaskExpired as TaskExpired
from ._exceptions import TaskFailed as TaskFailed
from ._exceptions import TaskflowError as TaskflowError
from ._exceptions import TaskNotFound as TaskNotFound
from ._exceptions import TaskRegistrationError as TaskRegistrationError
from ._exceptions import TaskTimeout as TaskTimeout
from ._exceptions import TimeoutError as TimeoutError  # noqa: A004 - deliberate builtin twin
from ._exceptions import UnknownTaskError as UnknownTaskError
from ._fencing import FencedValue as FencedValue
from ._flow import Flow as Flow
from ._flow import FlowNode as FlowNode
from ._flow_inputs import NodeFailed as NodeFailed
from ._flow_status import FlowHandle as FlowHandle
from ._flow_status import FlowState as FlowState
from ._flow_status import FlowStatus as FlowStatus
from ._flow_status import NodeStatus as NodeStatus
from ._flow_status import SyncFlowHandle as SyncFlowHandle
from ._leadership import Leadership as Leadership
from ._lock_types import Exclusive as Exclusive
from ._lock_types import Shared as Shared
from ._locking import AppLock as AppLock
from ._message import CancelResult as CancelResult
from ._message import ErrorInfo as ErrorInfo
from ._message import Event as Event
from ._message import EventKind as EventKind
from ._message import FailedAttempt as FailedAttempt
from ._message import FailurePolicy as FailurePolicy
from ._message import Hedge as Hedge
from ._message import Progress as Progress
from ._message import TaskOutcome as TaskOutcome
from ._message import TaskRecord as TaskRecord
from ._message import TaskStatus as TaskStatus
from ._message import WorkerInfo as WorkerInfo
from ._options import NOT_GIVEN as NOT_GIVEN
from ._options import CallOptions as CallOptions
from ._options import TaskDefaults as TaskDefaults
from ._rollup import Counts as Counts
from ._rollup import summarize as summarize
from ._schedule import Schedule as Schedule
from ._schedule_state import ScheduleInfo as ScheduleInfo
from ._starter import Starter as Starter
from ._steps import Step as Step
from ._task import PreparedTask as PreparedTask
from ._task import TaskCall as TaskCall
from ._task import TaskFunc as TaskFunc
from ._worker import Worker as Worker

__version__ = "0.1.0"

# A library never prints: without the application's own logging setup, records go nowhere.
_logging.getLogger("taskflow").addHandler(_logging.NullHandler())

__all__ = [
    "NOT_GIVEN",
    "AppLock",
    "ArtifactInfo",
    "ArtifactNotFound",
    "ArtifactState",
    "AsyncResult",
    "AsyncTask",
    "AuthenticationFailed",
    "BackendUnavailable",
    "CallOptions",
    "CancelResult",
    "Chunks",
    "Clock",
    "ConfigError",
    "Counts",
    "DirectoryArtifactStore",
    "EncodeError",
    "ErrorInfo",
    "Event",
    "EventKind",
    "Exclusive",
    "FailedAttempt",
    "FailurePolicy",
    "FencedValue",
    "Flow",
    "FlowCycle",
    "FlowFailed",
    "FlowHandle",
    "FlowNode",
    "FlowNotFound",
    "FlowState",
    "FlowStatus",
    "GlobalConfig",
    "Hedge",
    "InvalidArguments",
    "InvalidArtifactName",
    "InvalidFlow",
    "InvalidOption",
    "Leadership",
    "LeadershipLost",
    "LeaseLost",
    "LifecycleError",
    "LockLost",
    "NodeFailed",
    "NodeStatus",
    "NotResumable",
    "PreparedTask",
    "Progress",
    "QueueTasks",
    "ResultExpired",
    "Retry",
    "Schedule",
    "ScheduleInfo",
    "ScheduleNotFound",
    "Shared",
    "Starter",
    "Step",
    "SyncFlowHandle",
    "SyncResult",
    "SyncTask",
    "SystemClock",
    "TaskArtifacts",
    "TaskCall",
    "TaskCancelled",
    "TaskContext",
    "TaskDefaults",
    "TaskExpired",
    "TaskFailed",
    "TaskFunc",
    "TaskInfo",
    "TaskNotFound",
    "TaskOutcome",
    "TaskRecord",
    "TaskRegistrationError",
    "TaskStatus",
    "TaskTimeout",
    "TaskflowError",
    "TimeoutError",
    "UnknownTaskError",
    "Worker",
    "WorkerInfo",
    "WorkerState",
    "summarize",
]
