"""Internals of the Redis backend (`taskflow.redis`): Lua scripts, key layout, the listener.

Nothing here is public; `taskflow.redis` is the import surface.
"""
