"""The Redis backend's own tests: races, reconnects, routing, crashes, the listener and the lane."""
