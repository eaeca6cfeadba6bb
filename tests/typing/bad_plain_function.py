"""mypy must reject exactly the marked lines: a plain typed function called with wrong types.

A minimal sample that keeps `check_typing.py` honest; the task-handle cases live beside it.
"""


def double(x: int) -> int:
    return 2 * x


double("21")  # E: arg-type
double(21, 2)  # E: call-arg
text: str = double(21)  # E: assignment
