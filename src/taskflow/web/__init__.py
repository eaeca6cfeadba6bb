"""taskflow's web view: a live page over a WebSocket for an app's queues, tasks, workers,
errors, locks, schedules and artifacts, with a JSON API paged on the server.

```python
from taskflow.web import create_app

asgi = create_app(app, token="s3cret")   # or run: taskflow web myproject.tasks:app
```

Needs the ``web`` extra (``pip install 'taskflow[web]'``: Starlette and uvicorn). See
docs/web.md; the routes and the WebSocket protocol are in WEB_API.md.
"""

from ._server import create_app as create_app

__all__ = ["create_app"]
