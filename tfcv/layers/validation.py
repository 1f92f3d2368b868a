"""Argument checks shared by the layers (one wording everywhere)."""

import math
import numbers


def check_epsilon(epsilon, name="epsilon"):
    """Raises unless `epsilon` is a finite real number > 0.

    Raises:
      TypeError: if `epsilon` is not a real number.
      ValueError: if it is not finite and > 0.
    """
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise TypeError(
            f"`{name}` must be a real number > 0, got "
            f"{type(epsilon).__name__} {epsilon!r}."
        )
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(
            f"`{name}` must be a finite number > 0, got {epsilon!r}."
        )


def check_positive_integer(value, name):
    """Raises unless `value` is an integer >= 1 (bools are not integers).

    Raises:
      ValueError: naming `name` and the value received.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < 1
    ):
        raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
