"""What is known about artifacts, and where it is kept: the record of each artifact in the
backend's `Coordination` key-value space, the public `ArtifactInfo` read from it, the name
rule, and the layout of the keys.

Layout (every key in the key-value space, so every host of a deployment sees the same):

* ``artifacts:<task id>`` / ``<name>``: the `ArtifactRecord` of one artifact. A task's
  artifacts are one namespace, so listing them reads only them.
* ``artifacts-due:<bucket>`` / ``<name>/<task id>``: the due-time index. An entry says "look
  at this artifact at this time" (its expiry, a write that should have finished, a record
  to forget); ``bucket`` is the due time divided by `BUCKET_S`. A housekeeping pass lists only
  the buckets from its cursor to now, never every artifact ever made. Names hold no ``/``, so
  the key splits at its first one.
* ``artifacts-due`` / ``cursor``: the lowest bucket that may still hold entries.

What does not live here: putting and fetching (`_artifacts.py`), the housekeeping pass
(`_artifact_sweep.py`), the bytes (`abc/_artifacts.py` and the stores).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Final

import msgspec

from ._exceptions import InvalidArtifactName

__all__ = [
    "BUCKET_S",
    "CURSOR_KEY",
    "ENDED",
    "INDEX_NAMESPACE",
    "NAME_MAX_BYTES",
    "STALE_WRITE_S",
    "ArtifactInfo",
    "ArtifactRecord",
    "ArtifactState",
    "bucket_of",
    "check_artifact_name",
    "decode_cursor",
    "decode_due",
    "decode_record",
    "encode_cursor",
    "encode_due",
    "encode_record",
    "index_key",
    "index_namespace",
    "kept_for",
    "next_due",
    "records_namespace",
    "split_index_key",
]

NAME_MAX_BYTES: Final = 200
"""Longest artifact name, in bytes of UTF-8 (a file name of most file systems holds 255)."""
BUCKET_S: Final = 600.0
"""Width of one bucket of the due-time index, in seconds."""
STALE_WRITE_S: Final = 6 * 3600.0
"""A put not finished this long after it began is taken for abandoned (its worker died): its
record is dropped and its leftovers swept."""
INDEX_NAMESPACE: Final = "artifacts-due"
CURSOR_KEY: Final = "cursor"


class ArtifactState(enum.StrEnum):
    """Where an artifact is in its life.

    ``writing`` and ``abandoned`` are never listed: a put not finished (or that failed, or
    whose worker died) leaves nothing visible.
    """

    WRITING = "writing"
    READY = "ready"
    DELETED = "deleted"
    """Deleted after its first complete fetch."""
    EXPIRED = "expired"
    """Deleted by a worker's housekeeping when its time to keep it ran out."""
    ABANDONED = "abandoned"


ENDED: Final = frozenset({ArtifactState.DELETED, ArtifactState.EXPIRED, ArtifactState.ABANDONED})


class ArtifactRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The stored record of one artifact (a map, so fields can be added with defaults).

    `blob` is the store's name of the bytes of the put that made it (the name and a write id),
    so a put that replaces an artifact never writes over bytes someone may be reading.
    """

    task_id: str
    name: str
    blob: str
    state: ArtifactState
    created_at: float
    size: int = 0
    sha256: str = ""
    ready_at: float | None = None
    keep_s: float | None = None
    delete_after_fetch: bool = False
    ended_at: float | None = None
    ended_why: str | None = None
    forget_at: float | None = None
    """When the record of an ended artifact is dropped (it stays listed until then)."""

    @property
    def expires_at(self) -> float | None:
        """When a ready artifact's time to be kept runs out (None: it has none)."""
        if self.ready_at is None or self.keep_s is None:
            return None
        return self.ready_at + self.keep_s


_record_encoder: Final = msgspec.msgpack.Encoder()
_record_decoder: Final = msgspec.msgpack.Decoder(ArtifactRecord)
_due_decoder: Final = msgspec.msgpack.Decoder(float)


def encode_record(record: ArtifactRecord) -> bytes:
    return _record_encoder.encode(record)


def decode_record(data: bytes) -> ArtifactRecord:
    return _record_decoder.decode(data)


def encode_due(due: float) -> bytes:
    return _record_encoder.encode(due)


def decode_due(data: bytes) -> float:
    return _due_decoder.decode(data)


def records_namespace(task_id: str) -> str:
    return f"artifacts:{task_id}"


def bucket_of(when: float) -> int:
    return math.floor(when / BUCKET_S)


def index_namespace(bucket: int) -> str:
    return f"{INDEX_NAMESPACE}:{bucket}"


def index_key(task_id: str, name: str) -> str:
    return f"{name}/{task_id}"


def split_index_key(key: str) -> tuple[str, str]:
    """``(task_id, name)`` of an index key."""
    name, _, task_id = key.partition("/")
    return task_id, name


def next_due(record: ArtifactRecord) -> float | None:
    """When housekeeping must next look at `record` (None: never)."""
    if record.state is ArtifactState.WRITING:
        return record.created_at + STALE_WRITE_S
    if record.state is ArtifactState.READY:
        return record.expires_at
    return record.forget_at


@dataclasses.dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """One artifact of a task, as `AsyncResult.artifacts()` and `ctx.artifacts.put` return it.

    Attributes:
        task_id: The task that put it.
        name: Its name.
        state: ``ready``, or ``deleted`` (after its first complete fetch) or ``expired`` (its
            time to be kept ran out): then its bytes are gone and `ended_at` / `ended_why` say
            when and why.
        size: Its size in bytes.
        sha256: The SHA-256 of its bytes (hex).
        created_at: When its put began (epoch seconds, the app's clock).
        ready_at: When its put finished and it could be fetched.
        expires_at: When it expires (None: it is kept until fetched, or until deleted).
        delete_after_fetch: True if its first complete fetch deletes it.
        ended_at: When it was deleted or expired (None while ready).
        ended_why: Why, in words (for example ``"kept 72 h after it was ready"``).
    """

    task_id: str
    name: str
    state: ArtifactState
    size: int
    sha256: str
    created_at: float
    ready_at: float | None
    expires_at: float | None
    delete_after_fetch: bool
    ended_at: float | None = None
    ended_why: str | None = None

    @classmethod
    def of(cls, record: ArtifactRecord, now: float) -> ArtifactInfo:
        """What `record` says at `now`: a ready artifact past its expiry reads as expired at
        once, before any housekeeping has deleted it (as results do)."""
        state, ended_at, ended_why = record.state, record.ended_at, record.ended_why
        expires_at = record.expires_at
        if state is ArtifactState.READY and expires_at is not None and expires_at <= now:
            state, ended_at, ended_why = ArtifactState.EXPIRED, expires_at, kept_for(record)
        return cls(
            task_id=record.task_id,
            name=record.name,
            state=state,
            size=record.size,
            sha256=record.sha256,
            created_at=record.created_at,
            ready_at=record.ready_at,
            expires_at=expires_at,
            delete_after_fetch=record.delete_after_fetch,
            ended_at=ended_at,
            ended_why=ended_why,
        )


def kept_for(record: ArtifactRecord) -> str:
    """Why an artifact expired, in words: ``"kept 72 h after it was ready"``."""
    keep_s = record.keep_s or 0.0
    hours = keep_s >= 3600 and keep_s % 3600 == 0
    span = f"{keep_s / 3600:g} h" if hours else f"{keep_s:g} s"
    return f"kept {span} after it was ready"


def check_artifact_name(name: object) -> str:
    """`name` if it can name an artifact (a store may use it as a file name).

    Raises:
        InvalidArtifactName: not a string, empty, longer than `NAME_MAX_BYTES` bytes of UTF-8, or
            holding ``/``, ``\\``, ``..`` or NUL.
    """
    if not isinstance(name, str):
        raise InvalidArtifactName(f"an artifact name is a string, got {name!r}")
    problem = _name_problem(name)
    if problem is not None:
        raise InvalidArtifactName(
            f"artifact name {name!r} {problem}; use a plain file name such as 'sales-2024.csv'"
        )
    return name


def _name_problem(name: str) -> str | None:
    if not name:
        return "is empty"
    if "\x00" in name:
        return "holds a NUL character"
    if "/" in name or "\\" in name:
        return "holds a path separator ('/' or '\\'): an artifact name is one file name"
    if ".." in name:
        return "holds '..'"
    if name.strip() != name or name == ".":
        return "starts or ends with white space, or is '.'"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "cannot be encoded as UTF-8"
    if size > NAME_MAX_BYTES:
        return f"is {size} bytes long in UTF-8; the longest is {NAME_MAX_BYTES}"
    return None


_cursor_decoder: Final = msgspec.msgpack.Decoder(int)


def encode_cursor(bucket: int) -> bytes:
    return _record_encoder.encode(bucket)


def decode_cursor(data: bytes) -> int:
    return _cursor_decoder.decode(data)
