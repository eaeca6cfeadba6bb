"""The core's tests: app, tasks, worker, run, outcome, facades, context, config, errors, typing."""
