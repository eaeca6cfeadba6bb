"""The artifact store's SQL: staged uploads, their chunks, and the head of each artifact.

What lives here: the statements of `PostgresArtifactStore` and `ArtifactStatements`, which
formats them for one schema once. What does not live here: the tables (``_schema.py``, version
7), the coordination and task statements (``_sql_coordination.py``, ``_sql_broker.py``).
"""

from __future__ import annotations

from typing import Final

__all__ = ["ArtifactStatements"]

_STAGE: Final = """
INSERT INTO {s}.artifact_uploads (id, task_id, name, started_at) VALUES ($1, $2, $3, $4)
"""

# Only into an upload still staged: one that `sweep_partial` removed takes no more chunks. A
# retried insert whose first attempt was stored changes nothing.
_ADD_CHUNK: Final = """
INSERT INTO {s}.artifact_chunks (upload_id, seq, data)
SELECT $1, $2, $3 WHERE EXISTS (
    SELECT 1 FROM {s}.artifact_uploads WHERE id = $1 AND NOT committed
)
ON CONFLICT (upload_id, seq) DO NOTHING
"""

_MARK_COMMITTED: Final = """
UPDATE {s}.artifact_uploads SET committed = true WHERE id = $1 AND NOT committed
"""

_POINT_HEAD: Final = """
INSERT INTO {s}.artifacts (task_id, name, upload_id, size, sha256) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (task_id, name) DO UPDATE SET
    upload_id = EXCLUDED.upload_id, size = EXCLUDED.size, sha256 = EXCLUDED.sha256
"""

# Every committed upload of the key but the visible one: the version just replaced. (A
# concurrent commit's upload reads as staged until it commits, so it is never taken here.)
_DROP_REPLACED: Final = """
DELETE FROM {s}.artifact_uploads
WHERE task_id = $1 AND name = $2 AND committed AND id <> $3
"""

_DROP_HEAD: Final = """
DELETE FROM {s}.artifacts WHERE task_id = $1 AND name = $2 RETURNING upload_id
"""

_DROP_UPLOAD: Final = "DELETE FROM {s}.artifact_uploads WHERE id = $1"

_HEAD: Final = "SELECT upload_id FROM {s}.artifacts WHERE task_id = $1 AND name = $2"

_CHUNKS: Final = "SELECT data FROM {s}.artifact_chunks WHERE upload_id = $1 ORDER BY seq"

_SWEEP: Final = """
DELETE FROM {s}.artifact_uploads WHERE NOT committed AND started_at < $1
"""


class ArtifactStatements:
    """Every statement of the artifact store, formatted for one (quoted) schema."""

    def __init__(self, quoted_schema: str) -> None:
        s = quoted_schema
        self.stage = _STAGE.format(s=s)
        self.add_chunk = _ADD_CHUNK.format(s=s)
        self.mark_committed = _MARK_COMMITTED.format(s=s)
        self.point_head = _POINT_HEAD.format(s=s)
        self.drop_replaced = _DROP_REPLACED.format(s=s)
        self.drop_head = _DROP_HEAD.format(s=s)
        self.drop_upload = _DROP_UPLOAD.format(s=s)
        self.head = _HEAD.format(s=s)
        self.chunks = _CHUNKS.format(s=s)
        self.sweep = _SWEEP.format(s=s)
