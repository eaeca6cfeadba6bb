"""mypy must accept this: a plain typed function called with the types it declares.

A minimal sample that keeps `check_typing.py` honest; the task-handle cases live beside it.
"""


def double(x: int) -> int:
    return 2 * x


result: int = double(21)
