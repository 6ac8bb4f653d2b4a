"""The floor of each defense: the least numpy work it cannot avoid, on the same replies.

A defense has to decode the replies into one float32 ``(n, d)`` matrix of
updates and then do at least one pass of its kind over it: pairwise cosines or
distances need the Gram matrix ``X Xᵀ`` (one GEMM), an average needs one
weighted sum ``v X``, a coordinate-wise median or trimmed mean needs every
coordinate's ``n`` values sorted (Bulyan: the ``n − 2f`` values it keeps).
:data:`FLOORS` names the steps each defense's floor is made of; :func:`time_steps`
times every step once on a round's replies, and a defense's floor is the sum of
its steps.  Every step returns what it computes, so tests can check it against
fedsec's own results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from flwr.app import Message

from fedsec.bench import measure
from fedsec.robust import BLOCK
from fedsec.updates import flatten_into
from strategies.messages import arrays_of, reply_views

__all__ = [
    "FLOORS",
    "STEPS",
    "STEP_TEXT",
    "column_sort_median",
    "decode_matrix",
    "floor_seconds",
    "gram",
    "layout",
    "time_steps",
    "weighted_sum",
]

#: What each step of a floor does.
STEP_TEXT = {
    "decode": "each reply's arrays read in place from its payload (no copy), w_i − w written into one "
    "float32 (n, d) matrix",
    "gram": "X Xᵀ: one float32 matrix product (every pairwise cosine, distance and norm follows from it)",
    "combine": "v X: one weighted sum of the rows",
    "history": "H += X: the round's rows added in place to the clients' accumulated histories (FoolsGold "
    "compares histories, not updates)",
    "sort": "every coordinate's n values sorted (transposed blocks of columns, numpy's vectorised sort, "
    "the blocks shared between the row's threads)",
    "sort-kept": "as sort, on the θ = n − 2f rows that Bulyan's Multi-Krum keeps (taken as the first θ, "
    "which costs no gather)",
}
STEPS = tuple(STEP_TEXT)

#: The steps of each defense's floor.  Pairwise defenses (Krum, the clustering and similarity
#: defenses, the detectors) need the Gram matrix and a weighted sum of what they keep; averages only
#: the weighted sum; coordinate-wise rules the sort; Bulyan both the Gram matrix (its Multi-Krum
#: selection) and the sort of the θ rows that selection keeps; FoolsGold also adds the round to its
#: history.  The GAN audit has no matrix floor: it trains a GAN every round.
FLOORS: dict[str, tuple[str, ...]] = {
    "fedavg": ("decode", "combine"),
    "fda3": ("decode", "combine"),
    "krum": ("decode", "gram", "combine"),
    "multikrum": ("decode", "gram", "combine"),
    "fedmedian": ("decode", "sort"),
    "fedtrimmedavg": ("decode", "sort"),
    "bulyan": ("decode", "gram", "sort-kept"),
    "layered": ("decode", "gram", "combine"),
    "flame": ("decode", "gram", "combine"),
    "foolsgold": ("decode", "history", "gram", "combine"),
    "detectors": ("decode", "gram", "combine"),
}


def decode_matrix(replies: Sequence[Message], reference: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The replies' float arrays (minus ``reference``), one float32 row each, decoded one reply at a time."""
    d = sum(int(np.prod(shape)) for shape, _ in layout(replies[0]))
    matrix = np.empty((len(replies), d), dtype=np.float32)
    for row, msg in zip(matrix, replies, strict=True):
        flatten_into(row, reply_views(msg), reference)
    return matrix


def layout(reply: Message) -> list[tuple[tuple[int, ...], np.dtype]]:
    """``(shape, dtype)`` of each float array of ``reply``, read from the record (nothing decoded)."""
    record = arrays_of(reply)
    if record is None:
        raise ValueError("the reply carries no ArrayRecord")
    arrays = [(tuple(array.shape), np.dtype(array.dtype)) for array in record.values()]
    return [entry for entry in arrays if np.issubdtype(entry[1], np.floating)]


def gram(matrix: np.ndarray) -> np.ndarray:
    """``X Xᵀ`` in the matrix's precision."""
    return matrix @ matrix.T


def weighted_sum(matrix: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``Σ_i w_i x_i`` in the matrix's precision."""
    return np.asarray(weights, dtype=matrix.dtype) @ matrix


def column_sort_median(matrix: np.ndarray, *, block: int = BLOCK, threads: int = 1) -> np.ndarray:
    """The coordinate-wise median, from every column sorted in transposed blocks (the mean of the two
    middle values for even ``n``); the blocks shared between ``threads`` threads."""
    n, d = matrix.shape
    out = np.empty(d, dtype=matrix.dtype)
    middle = n // 2

    def one(start: int) -> None:
        part = np.array(matrix[:, start : start + block].T, order="C")
        part.sort(axis=1)
        columns = slice(start, start + part.shape[0])
        out[columns] = part[:, middle] if n % 2 else (part[:, middle - 1] + part[:, middle]) / 2

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(one, range(0, d, block)))
    return out


def time_steps(
    replies: Sequence[Message],
    reference: Sequence[np.ndarray],
    *,
    repeat: int,
    steps: Sequence[str] = STEPS,
    threads: int = 1,
    kept: int | None = None,
) -> dict[str, float]:
    """Median seconds of each of ``steps`` on ``replies`` (the others on the decoded matrix), each after
    one untimed call; ``sort-kept`` sorts the first ``kept`` rows (default: all of them).

    The decode is timed first, with no other matrix alive: at 100 CNN clients a matrix is 660 MB, and a
    first call (or one made while another matrix is held) pays several times the steady cost in page
    faults, which a defense in a round does not.
    """
    times: dict[str, float] = {}
    if "decode" in steps:
        times["decode"] = measure(lambda: decode_matrix(replies, reference), repeat=repeat, warmup=1)
    matrix = decode_matrix(replies, reference)
    rows = len(replies) if kept is None else kept
    if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= len(replies):
        raise ValueError(f"kept must be an integer in [1, {len(replies)}], got {kept!r}")
    weights = np.full(len(replies), 1.0 / len(replies))
    history = np.zeros_like(matrix) if "history" in steps else matrix
    calls: Mapping[str, Callable[[], object]] = {
        "gram": lambda: gram(matrix),
        "combine": lambda: weighted_sum(matrix, weights),
        "history": lambda: np.add(history, matrix, out=history),
        "sort": lambda: column_sort_median(matrix, threads=threads),
        "sort-kept": lambda: column_sort_median(matrix[:rows], threads=threads),
    }
    times.update({step: measure(calls[step], repeat=repeat, warmup=1) for step in steps if step != "decode"})
    return {step: times[step] for step in steps}


def floor_seconds(label: str, steps: Mapping[str, float]) -> float | None:
    """The floor of defense ``label`` from the step times; None if it has no matrix floor."""
    if label not in FLOORS:
        return None
    return sum(steps[step] for step in FLOORS[label])
