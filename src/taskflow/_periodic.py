"""`Periodic`: an app's declared schedules, and listing, pausing and resuming them.

`QueueTasks.periodic`, `schedules`, `pause_schedule` and `resume_schedule` are thin calls into
this. The first declaration registers the `Scheduler` (`_scheduler.py`) as a worker service, so
every worker process of the app enqueues slots; the backend's dedup keeps each slot to one run.

What does not live here: slot arithmetic (`_schedule.py`), the shared record
(`_schedule_state.py`), the enqueue loop (`_scheduler.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from ._clock import Clock
from ._context import WorkerState
from ._exceptions import ScheduleNotFound, TaskRegistrationError
from ._schedule import Schedule, make_schedule
from ._schedule_state import ScheduleInfo, read_record, schedule_info, set_paused
from ._scheduler import Scheduler, SchedulerApp
from ._task import TaskFunc
from .abc import Coordination

__all__ = ["Periodic"]


class _PeriodicApp(SchedulerApp, Protocol):
    name: str
    clock: Clock
    coordination: Coordination

    def worker_service(self, fn: Any) -> Any:
        """Register a worker service."""
        ...


class Periodic:
    """The schedules one app declares (see the module docstring)."""

    def __init__(self) -> None:
        self._schedules: dict[str, Schedule] = {}
        self.schedules: Mapping[str, Schedule] = MappingProxyType(self._schedules)

    def declare(
        self,
        app: _PeriodicApp,
        task: TaskFunc[Any, Any],
        **declared: Any,
    ) -> Schedule:
        """Check and add one schedule of `task` (the keyword arguments of `QueueTasks.periodic`).

        Raises:
            TaskRegistrationError: `task` is not a task of this app (``@app.task`` missing or
                placed above), a bad schedule (`make_schedule`), a name already taken.
            InvalidArguments: `args` / `kwargs` do not fit the task's signature.
        """
        definition = getattr(task, "definition", None)
        if not isinstance(task, TaskFunc) or app.tasks.get(task.name) is not definition:
            raise TaskRegistrationError(
                f"@app.periodic goes on a task of app {app.name!r}, above @app.task:\n"
                "    @app.periodic(every=timedelta(seconds=30))\n"
                "    @app.task\n"
                "    async def tick() -> None: ..."
            )
        schedule = make_schedule(task.name, **declared)
        task.definition.check_arguments(schedule.args, schedule.kwargs)
        if schedule.name in self._schedules:
            raise TaskRegistrationError(
                f"a schedule named {schedule.name!r} is already declared on app {app.name!r}; "
                "give this one another name with @app.periodic(name=...)"
            )
        if not self._schedules:
            app.worker_service(_run_scheduler)
        self._schedules[schedule.name] = schedule
        return schedule

    def get(self, name: str) -> Schedule:
        """The schedule declared as `name`.

        Raises:
            ScheduleNotFound: no such schedule.
        """
        schedule = self._schedules.get(name)
        if schedule is None:
            known = ", ".join(sorted(self._schedules)) or "none"
            raise ScheduleNotFound(f"no schedule named {name!r} is declared (declared: {known})")
        return schedule

    async def infos(self, coordination: Coordination, now: float) -> list[ScheduleInfo]:
        """Every declared schedule with its shared state, by name."""
        infos = []
        for name in sorted(self._schedules):
            record, _ = await read_record(coordination, name)
            infos.append(schedule_info(self._schedules[name], record, now))
        return infos

    async def set_paused(self, app: _PeriodicApp, name: str, paused: bool) -> None:
        """Pause or resume the named schedule for every worker.

        Raises:
            ScheduleNotFound: no such schedule.
        """
        self.get(name)
        await set_paused(app.coordination, name, paused, app.clock.time())


async def _run_scheduler(app: SchedulerApp, state: WorkerState) -> None:
    """The worker service every worker process of an app with schedules runs."""
    await Scheduler(app).run()
