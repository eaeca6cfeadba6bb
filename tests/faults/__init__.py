"""The fault suite: a steady workload on real worker processes and a server of the suite's own,
a fault injected mid-run, then the invariants checked (see `_harness`)."""
