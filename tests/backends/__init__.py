"""Tests of the backends beyond the conformance suite: shared components, a package per backend."""
