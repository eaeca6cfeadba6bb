"""Internals of the PostgreSQL backend (`taskflow.postgres`): schema migrations and SQL."""
