"""Validation shared by every model constructor: input shape and class count."""

from __future__ import annotations

from collections.abc import Sequence


def check_model_args(
    input_shape: Sequence[int], num_classes: int, *, min_size: int = 1, model: str = "the model"
) -> tuple[int, int, int]:
    """Return ``(C, H, W)`` or raise ``ValueError`` naming ``input_shape`` / ``num_classes``.

    ``input_shape`` must be three positive ints with ``H, W >= min_size``;
    ``num_classes`` an int ``>= 2``.
    """
    if (
        not isinstance(input_shape, tuple | list)
        or len(input_shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    ):
        raise ValueError(f"input_shape must be three positive ints (C, H, W), got {input_shape!r}")
    channels, height, width = (int(d) for d in input_shape)
    if height < min_size or width < min_size:
        raise ValueError(f"input_shape: {model} needs H, W >= {min_size}, got {tuple(input_shape)!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return channels, height, width
