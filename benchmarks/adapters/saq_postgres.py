"""SAQ on PostgreSQL (psycopg 3), in its own venv; worker: ``saq saq_postgres.settings`` (see
`_saq`). Its tables live in schema ``saq_bench`` (the connection's ``search_path``), dropped and
re-created before each run; SAQ creates its tables on connect.
"""

from __future__ import annotations

import _harness
import _peers
import _saq
import _servers
import psycopg
from _harness import Params

SCHEMA = _servers.bench_schema("saq_bench")

settings = _saq.worker_settings() if __name__ != "__main__" else None


def resolve(params: Params) -> str:
    """``--url`` with ``search_path=saq_bench``."""
    return _servers.with_search_path(_servers.postgres_url(params.url), SCHEMA)


async def fresh_schema(url: str) -> None:
    """DROP and CREATE schema saq_bench."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await conn.execute(f"CREATE SCHEMA {SCHEMA}")


if __name__ == "__main__":
    _harness.main(
        "saq-postgres",
        _peers.workloads(lambda: _saq.SaqClient("saq_postgres", resolve, fresh_schema)),
        distributions=("saq", "psycopg"),
        notes=_saq.NOTES,
    )
