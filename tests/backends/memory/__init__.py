"""The memory backend's own tests (its contract is checked by tests/conformance)."""
