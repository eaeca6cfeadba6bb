"""The `taskflow` command line: run workers, look at tasks and queues, send and manage tasks.

```
taskflow [--log-level LEVEL] [--version] COMMAND ...
  worker MODULE:APP [-c M] [-p N] [-q a,b]             run workers until SIGINT/SIGTERM
  status MODULE:APP TASK_ID [--watch] [--json]         a task: status, progress, result, error
  monitor MODULE:APP [--spawn N] [--role NAME]         a live view; --spawn starts N workers
  send MODULE:APP TASK [--args JSON] [--kwargs JSON]   send a task by name, print its id
  cancel MODULE:APP TASK_ID [TASK_ID ...]              cancel tasks
  stats MODULE:APP [-q a,b] [--json]                   count each queue's tasks by state
  purge MODULE:APP QUEUE [--yes]                       drop every waiting task of a queue
  dead-letters MODULE:APP [--queue Q] [--limit N]      list dead letters
  requeue MODULE:APP (TASK_ID ... | --all)             run dead letters again as new tasks
  db upgrade POSTGRES_URL [--app NAME] [--schema NAME] create or migrate an app's PostgreSQL tables
```

The CLI is an application, so unlike the library it configures logging and installs signal
handlers. Errors are one line on stderr with an exit status per kind (`ExitCode`, listed by
``taskflow --help``). The modules, by job: ``_main`` (parser, app loader, `main`), ``_errors``
(exit statuses, error lines), ``_workers`` (the worker command and the supervisor of worker
processes), ``_tasks`` (status, send, cancel), ``_queues`` (stats, purge, dead letters,
requeue, db upgrade), ``_show`` (text and JSON output).
"""

from ._common import load_app
from ._errors import ExitCode
from ._main import main

__all__ = ["ExitCode", "load_app", "main"]
