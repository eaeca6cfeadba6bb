"""Tests of orders (taskflow.supervisor): plans, runs on every backend, crashes across processes."""
