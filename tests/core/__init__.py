"""The core's tests: app, tasks, worker, client facades, context, config, ids, errors, typing."""
