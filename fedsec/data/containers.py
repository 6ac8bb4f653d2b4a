"""In-memory data containers: :class:`TensorSplit` and :class:`DatasetBundle`.

Every data module passes these around: a :class:`TensorSplit` holds one split's
float32 ``(N, C, H, W)`` images in ``[0, 1]`` and int64 labels, a
:class:`DatasetBundle` a loaded dataset (train and test splits plus what a model
needs to know about them) as :func:`fedsec.data.datasets.load_dataset` returns it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DatasetBundle", "TensorSplit"]


@dataclass(frozen=True, eq=False)
class TensorSplit:
    """Images and labels of one split, held in memory.

    Parameters
    ----------
    x
        float32 images of shape ``(N, C, H, W)`` with values in ``[0, 1]``.
    y
        int64 labels of shape ``(N,)``.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ValueError(f"x must have shape (N, C, H, W), got {tuple(self.x.shape)}")
        if self.y.ndim != 1:
            raise ValueError(f"y must have shape (N,), got {tuple(self.y.shape)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x and y disagree on N: {self.x.shape[0]} images, {self.y.shape[0]} labels")
        if self.x.dtype != torch.float32:
            raise ValueError(f"x must be float32, got {self.x.dtype}")
        if self.y.dtype != torch.int64:
            raise ValueError(f"y must be int64, got {self.y.dtype}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray | Sequence[int]) -> TensorSplit:
        """Return a new split holding copies of the samples at ``indices`` (in that order).

        Parameters
        ----------
        indices
            Integer positions into this split; may be empty.

        Returns
        -------
        TensorSplit
            Fresh tensors; writing to them never changes this split.
        """
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"indices must be a 1-D sequence of integers, got dtype {idx.dtype}, shape {idx.shape}"
            )
        n = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"indices must be in 0..{n - 1} for a split of {n} samples")
        t = torch.from_numpy(idx.astype(np.int64))
        # Indexing with an index tensor (advanced indexing) always copies, never views.
        return TensorSplit(x=self.x[t], y=self.y[t])

    def labels(self) -> np.ndarray:
        """The labels as a fresh int64 numpy array."""
        return self.y.numpy().copy()


@dataclass(frozen=True, eq=False)
class DatasetBundle:
    """A loaded dataset: train and test splits plus what a model needs to know about them.

    Parameters
    ----------
    name
        Registry name of the dataset.
    train, test
        The splits as shipped (or as split by the loader, for datasets shipped whole).
    num_classes
        Number of classes; labels are in ``range(num_classes)``.
    input_shape
        ``(C, H, W)`` of one image.
    class_names
        One human-readable name per class.
    """

    name: str
    train: TensorSplit
    test: TensorSplit
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        for split_name, split in (("train", self.train), ("test", self.test)):
            if tuple(split.x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"{split_name} images have shape {tuple(split.x.shape[1:])}, expected {self.input_shape}"
                )
            if len(split) and (int(split.y.min()) < 0 or int(split.y.max()) >= self.num_classes):
                raise ValueError(f"{split_name} labels must be in 0..{self.num_classes - 1}")


def _split(x: np.ndarray, y: np.ndarray) -> TensorSplit:
    """Wrap numpy arrays (x already scaled to [0, 1], shape (N, C, H, W)) as a TensorSplit."""
    xs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    ys = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    return TensorSplit(x=xs, y=ys)
