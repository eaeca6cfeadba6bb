"""The PostgreSQL backend's own tests: migrations, reconnects, restarts, crashes, latency."""
