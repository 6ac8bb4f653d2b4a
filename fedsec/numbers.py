"""Type checks for numbers read from configs, records and keyword arguments.

``bool`` is a subclass of ``int`` in Python, so ``isinstance(True, int)`` holds;
a setting such as ``rounds = true`` must still be refused, which is what these
two predicates add to a plain ``isinstance``.  numpy scalars count as numbers.
"""

from __future__ import annotations

from typing import TypeGuard

import numpy as np


def is_int(value: object) -> TypeGuard[int | np.integer]:
    """An integer (Python or numpy), not a ``bool``."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_real(value: object) -> TypeGuard[int | float | np.integer | np.floating]:
    """A real number (Python or numpy int or float), not a ``bool``."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
