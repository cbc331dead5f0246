"""The input check losses share: tensors that are combined elementwise must have one shape.

It guards against silent broadcasting, e.g. (B, 1) against (B,) giving a (B, B) loss matrix.
"""

from torch import Tensor

SHAPE_NAMES = {1: "(B,)", 2: "(N, T)"}


def require_same_shape(what: str, ndim: int, first: Tensor, *others: Tensor) -> None:
    """Raise ValueError naming `what` unless `first` has `ndim` dimensions (1: per example, 2: per token)
    and every tensor of `others` has its shape."""
    if first.ndim != ndim or any(t.shape != first.shape for t in others):
        shapes = [tuple(t.shape) for t in (first, *others)]
        raise ValueError(f"{what} must all have the same shape {SHAPE_NAMES[ndim]}, got {shapes}")
