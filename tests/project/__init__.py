"""Project-level tests: docs, examples, benchmarks' quick mode, the test services."""
