"""taskflow's benchmarks: one runner, adapters per system, peers in venvs of their own.

``python -m benchmarks`` runs the workloads (A1/A2 enqueue, B processing, E2E, C latency,
D sleeping tasks) for every system of a backend and a bare-asyncio floor, prints a markdown
table and saves JSON under ``benchmarks/results/``. `benchmarks.registry` lists the systems,
`benchmarks.runner` drives them, ``benchmarks/adapters/`` holds one script per system.
See docs/benchmarks.md.
"""
