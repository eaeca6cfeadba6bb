"""Orders: a client's plan of many units ("buy article X, 10 a day for two weeks"), split by the
`Supervisor` into daily jobs that a `TaskManager` turns into tasks when due.

```python
from taskflow.supervisor import FailurePolicy, Order, Plan, Supervisor

supervisor = Supervisor(app, notifier=order_finished)
supervisor.attach()            # every worker process hosts a leader candidate
order_id = await supervisor.submit(
    Order(task=buy.name, total=140, plan=Plan.spread(date(2026, 12, 1), date(2026, 12, 14),
          window=(time(9), time(21)), tz="Europe/Moscow"), retries=2)
)
```

Planning is pure (`_plan.py`), records are msgspec structs (`_model.py`) stored in the
coordination's key-value records (`_store.py`); `_manager.py` runs one job, `_supervisor.py`
the rest.
See ``docs/orders.md``.
"""

from .._exceptions import OrderError as OrderError
from .._exceptions import OrderNotFound as OrderNotFound
from ._manager import TaskManager as TaskManager
from ._manager import unit_idempotency_key as unit_idempotency_key
from ._manager import unit_task_id as unit_task_id
from ._model import Counts as Counts
from ._model import FailurePolicy as FailurePolicy
from ._model import JobState as JobState
from ._model import JobStatus as JobStatus
from ._model import Order as Order
from ._model import OrderEvent as OrderEvent
from ._model import OrderReport as OrderReport
from ._model import OrderState as OrderState
from ._model import OrderStatus as OrderStatus
from ._model import UnitFailure as UnitFailure
from ._plan import Plan as Plan
from ._plan import day_bounds as day_bounds
from ._supervisor import Supervisor as Supervisor

__all__ = [
    "Counts",
    "FailurePolicy",
    "JobState",
    "JobStatus",
    "Order",
    "OrderError",
    "OrderEvent",
    "OrderNotFound",
    "OrderReport",
    "OrderState",
    "OrderStatus",
    "Plan",
    "Supervisor",
    "TaskManager",
    "UnitFailure",
    "day_bounds",
    "unit_idempotency_key",
    "unit_task_id",
]
