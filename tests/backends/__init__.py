"""Tests of the backends beyond the conformance suite: shared components, one package per backend."""
