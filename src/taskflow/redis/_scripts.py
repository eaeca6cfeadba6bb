"""The Lua scripts of the Redis backend: loaded once per process, run with EVALSHA.

Queue scripts (``enqueue``, ``claim``, ...) get the shared prelude ``lua/common.lua`` prepended
and follow its argument convention; ``lease``, ``kv_set`` and ``lock`` stand alone. A server
that lost its script cache (restart, failover) answers NOSCRIPT; the script is then loaded and
the call repeated once.

What does not live here: the scripts themselves (``lua/``), the arguments they take
(``_codec.py``), the connection they run on (``_lane.py`` or the client).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any, Final

from redis.exceptions import NoScriptError

__all__ = ["QUEUE_SCRIPTS", "STANDALONE_SCRIPTS", "Script", "load_scripts"]

QUEUE_SCRIPTS: Final = (
    "enqueue",
    "claim",
    "extend",
    "complete",
    "cancel",
    "wake",
    "report",
    "checkpoint",
    "get",
    "requeue",
    "inspect",
    "cleanup",
    "purge",
    "arrive",
)
STANDALONE_SCRIPTS: Final = (
    "lease",
    "kv_set",
    "workers",
    "lock",
    "artifact_commit",
    "artifact_delete",
    "artifact_sweep",
)


def _read(name: str) -> str:
    return (resources.files("taskflow.redis") / "lua" / f"{name}.lua").read_text("utf-8")


class Script:
    """One Lua script: its source, its SHA1, and how to run it on a client or cluster."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()

    async def run(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA on `client` (routed by `keys[0]` on a cluster); load and retry on NOSCRIPT."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


def load_scripts() -> dict[str, Script]:
    """Every script by name, queue scripts with the prelude prepended."""
    prelude = _read("common")
    scripts = {name: Script(name, f"{prelude}\n{_read(name)}") for name in QUEUE_SCRIPTS}
    scripts.update({name: Script(name, _read(name)) for name in STANDALONE_SCRIPTS})
    return scripts
