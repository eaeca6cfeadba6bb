"""The backend conformance suite: one set of tests every backend must pass (see conftest.py)."""
