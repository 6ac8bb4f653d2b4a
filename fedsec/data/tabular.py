"""Tabular (CSV) data as image-shaped tensors: the heterogeneous-data path of DiPSeN.

Ibitoye, Shafiq and Matrawy, "DiPSeN: Differentially Private Self-normalizing
Neural Networks For Adversarial Robustness in Federated Learning" (2021),
evaluate DiPSeN not only on images but also on network-flow records (the CTU-13
botnet captures).  :func:`load_csv` turns such a table into a
:class:`~fedsec.data.containers.DatasetBundle` that every fedsec model accepts:

1. read the file with the stdlib :mod:`csv` module (header row required);
2. take the configured numeric feature columns (default: every column except the
   label) and parse each cell as a finite float;
3. map the distinct label values to classes ``0..K-1`` in sorted order (numeric
   order if every label is a number, else string order); ``class_names`` are
   those values as strings;
4. split train/test stratified by label with scikit-learn's ``train_test_split``
   under ``seed`` (non-stratified if some class has fewer than 2 rows);
5. min-max scale each feature to ``[0, 1]`` with the **training split's** min and
   max (test values are clipped to ``[0, 1]``; a column constant on the training
   split becomes 0), so no test statistics leak into training;
6. zero-pad each feature vector to 784 values and reshape it to ``(1, 28, 28)``
   (at most 784 features), so the MNIST-sized models (``lenet``, ``cnn``,
   ``dipsen``) run unchanged.

Through the dataset registry this is dataset ``csv``: set ``data-root`` to the CSV
file itself and pass options ``label_column``, ``feature_columns`` (comma-separated)
and ``test_fraction``::

    load_dataset("csv", root="/data/ctu13/capture20110810.binetflow.csv", seed=0,
                 options={"label_column": "class", "feature_columns": "Dur,TotPkts,TotBytes,SrcBytes"})

Pointing it at a real flow export (CTU-13)
------------------------------------------
CTU-13's bidirectional NetFlow files (``*.binetflow``) are comma-separated with a
header ``StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,
TotPkts,TotBytes,SrcBytes,Label``.  Choose numeric columns such as
``Dur,TotPkts,TotBytes,SrcBytes`` (addresses, ports, protocol and state are not
numbers; ``sTos``/``dTos`` have empty cells, which are rejected).  The ``Label``
column holds long descriptive strings (``flow=From-Botnet-V42-TCP-...``,
``flow=Background-...``, ``flow=To-Normal-...``); since fedsec maps every
**distinct** value to its own class, pre-derive a clean label column first (for
example ``botnet`` when ``Label`` contains ``Botnet``, ``normal`` when it contains
``Normal``, else ``background``, or drop background flows) and name it with
``label_column``.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedsec.data.containers import DatasetBundle, _split
from fedsec.errors import ConfigError, DataUnavailableError

__all__ = ["CSV_IMAGE_SHAPE", "MAX_FEATURES", "load_csv", "load_csv_dataset"]

logger = logging.getLogger(__name__)

#: Shape every CSV row is padded and reshaped to.
CSV_IMAGE_SHAPE: tuple[int, int, int] = (1, 28, 28)
#: Most feature columns a CSV may contribute (1 * 28 * 28).
MAX_FEATURES = 784

_FORMAT_HINT = (
    "expected a comma-separated file with a header row naming numeric feature columns "
    "and a label column ({label!r})"
)


def _columns(feature_columns: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """Normalise ``feature_columns`` (a comma-separated string is split) to a tuple of names."""
    if feature_columns is None:
        return None
    names = feature_columns.split(",") if isinstance(feature_columns, str) else list(feature_columns)
    if not all(isinstance(n, str) for n in names):
        raise ConfigError(f"feature_columns must be column names (strings), got {feature_columns!r}")
    cleaned = tuple(n.strip() for n in names)
    if not cleaned or any(not n for n in cleaned):
        raise ConfigError(
            f"feature_columns must be a non-empty list of column names, got {feature_columns!r}"
        )
    duplicates = sorted({n for n in cleaned if cleaned.count(n) > 1})
    if duplicates:
        raise ConfigError(f"feature_columns names a column twice: {', '.join(duplicates)}")
    return cleaned


def _read_table(path: Path, label_column: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (stripped names) and ``(file line, cells)`` for every non-blank data row."""
    hint = _FORMAT_HINT.format(label=label_column)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise DataUnavailableError(f"CSV file {path} {what}; {hint}")
    rows: list[tuple[int, list[str]]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataUnavailableError(f"CSV file {path} is empty; {hint}")
            for cells in reader:
                if cells and any(c.strip() for c in cells):
                    rows.append((reader.line_num, cells))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataUnavailableError(f"cannot read CSV file {path}: {exc}; {hint}") from exc
    return [name.strip() for name in header], rows


def _column_index(header: list[str], name: str, what: str, path: Path) -> int:
    matches = [i for i, column in enumerate(header) if column == name]
    if not matches:
        raise ConfigError(
            f"{what} {name!r} is not a column of {path}; available columns: {', '.join(header)}"
        )
    if len(matches) > 1:
        raise ConfigError(f"{what} {name!r} appears {len(matches)} times in the header of {path}")
    return matches[0]


def _label_classes(raw: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map label strings to ``0..K-1`` in sorted order; returns ``(labels, class_names)``."""
    try:
        numbers = [float(v) for v in raw]
    except ValueError:
        numbers = None
    if numbers is not None and all(math.isfinite(v) for v in numbers):
        values = sorted(set(numbers))
        index = {v: i for i, v in enumerate(values)}
        names = tuple(str(int(v)) if v.is_integer() else repr(v) for v in values)
        return np.array([index[v] for v in numbers], dtype=np.int64), names
    distinct = sorted(set(raw))
    lookup = {v: i for i, v in enumerate(distinct)}
    return np.array([lookup[v] for v in raw], dtype=np.int64), tuple(distinct)


def _train_test_indices(
    labels: np.ndarray, *, test_fraction: float, seed: int, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    indices = np.arange(labels.shape[0])
    counts = np.bincount(labels)
    if counts.min() >= 2:
        try:
            tr, te = train_test_split(indices, test_size=test_fraction, stratify=labels, random_state=seed)
            return np.sort(tr), np.sort(te)
        except ValueError as exc:  # e.g. fewer test rows than classes
            logger.warning(
                "%s: stratified split impossible (%s); splitting without stratification", path, exc
            )
    else:
        logger.warning(
            "%s: a class has fewer than 2 rows (counts %s); splitting without stratification",
            path,
            counts.tolist(),
        )
    try:
        tr, te = train_test_split(indices, test_size=test_fraction, random_state=seed)
    except ValueError as exc:
        raise ConfigError(
            f"{path}: cannot split {labels.shape[0]} rows into train and test with "
            f"test_fraction={test_fraction}: {exc}"
        ) from exc
    return np.sort(tr), np.sort(te)


def _to_images(x: np.ndarray) -> np.ndarray:
    """Zero-pad ``(N, F)`` features to ``(N, 784)`` and reshape to ``(N, 1, 28, 28)`` (a new array)."""
    out = np.zeros((x.shape[0], MAX_FEATURES), dtype=np.float32)
    out[:, : x.shape[1]] = x
    return out.reshape(-1, *CSV_IMAGE_SHAPE)


def load_csv(
    path: str | Path,
    *,
    label_column: str = "label",
    feature_columns: Sequence[str] | str | None = None,
    seed: int,
    test_fraction: float = 0.2,
) -> DatasetBundle:
    """Load a CSV table of numeric features and a label column as a ``(1, 28, 28)`` dataset.

    See the module docstring for the steps (feature selection, label mapping,
    stratified split, train-split min-max scaling, zero-padding to 784).

    Parameters
    ----------
    path
        The CSV file (comma-separated, header row, UTF-8).
    label_column
        Name of the label column; its distinct values (strings or numbers) become
        classes ``0..K-1`` in sorted order.
    feature_columns
        Names of the feature columns, in the order they fill the image (a
        comma-separated string is split); ``None`` takes every column except the
        label, in file order.
    seed
        Seed of the train/test split.
    test_fraction
        Fraction of rows in the test split, in ``(0, 1)``.

    Returns
    -------
    DatasetBundle
        ``name="csv"``, float32 images of shape ``(N, 1, 28, 28)`` in ``[0, 1]``
        (positions beyond the feature count are 0), int64 labels, ``class_names``
        the label values as strings.

    Raises
    ------
    DataUnavailableError
        If the file is missing, unreadable, empty or has no data rows (the
        message names the path and the expected format).
    ConfigError
        If a named column is missing (the message lists the available columns),
        a feature cell is not a finite number (the message names column, data row
        number and value), a row has the wrong number of cells, there are more
        than 784 features, fewer than 2 classes, or too few rows to split.
    ValueError
        If ``seed`` or ``test_fraction`` is invalid (the message names it).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, int | float)
        or not 0.0 < test_fraction < 1.0
    ):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not isinstance(label_column, str) or not label_column.strip():
        raise ConfigError(f"label_column must be a non-empty column name, got {label_column!r}")
    label_column = label_column.strip()
    wanted = _columns(feature_columns)
    file = Path(path).expanduser()

    header, rows = _read_table(file, label_column)
    label_at = _column_index(header, label_column, "label column", file)
    if wanted is None:
        wanted = tuple(name for i, name in enumerate(header) if i != label_at)
        if not wanted:
            raise ConfigError(f"{file} has no feature columns besides the label column {label_column!r}")
    elif label_column in wanted:
        raise ConfigError(f"feature_columns must not include the label column {label_column!r}")
    if len(wanted) > MAX_FEATURES:
        raise ConfigError(
            f"{file}: {len(wanted)} feature columns do not fit a 28x28 image; choose at most "
            f"{MAX_FEATURES} with feature_columns"
        )
    feature_at = [_column_index(header, name, "feature column", file) for name in wanted]
    if not rows:
        raise DataUnavailableError(f"CSV file {file} has a header but no data rows")

    features = np.empty((len(rows), len(wanted)), dtype=np.float64)
    raw_labels: list[str] = []
    for row, (line, cells) in enumerate(rows, start=1):
        if len(cells) != len(header):
            raise ConfigError(
                f"{file}: row {row} (line {line}) has {len(cells)} cells, the header has {len(header)}"
            )
        for j, (name, at) in enumerate(zip(wanted, feature_at, strict=True)):
            cell = cells[at]
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise ConfigError(
                    f"{file}: column {name!r}, row {row} (line {line}): value {cell!r} is not a finite number"
                )
            features[row - 1, j] = value
        label = cells[label_at].strip()
        if not label:
            raise ConfigError(f"{file}: column {label_column!r}, row {row} (line {line}): empty label")
        raw_labels.append(label)

    labels, class_names = _label_classes(raw_labels)
    if len(class_names) < 2:
        raise ConfigError(
            f"{file}: label column {label_column!r} has {len(class_names)} distinct value(s); need at least 2"
        )
    train_idx, test_idx = _train_test_indices(
        labels, test_fraction=float(test_fraction), seed=seed, path=file
    )

    x_train, x_test = features[train_idx], features[test_idx]
    low = x_train.min(axis=0)
    span = x_train.max(axis=0) - low
    constant = span == 0
    scale = np.where(constant, 1.0, span)
    x_train = np.where(constant, 0.0, (x_train - low) / scale)
    x_test = np.where(constant, 0.0, np.clip((x_test - low) / scale, 0.0, 1.0))

    bundle = DatasetBundle(
        name="csv",
        train=_split(_to_images(x_train), labels[train_idx]),
        test=_split(_to_images(x_test), labels[test_idx]),
        num_classes=len(class_names),
        input_shape=CSV_IMAGE_SHAPE,
        class_names=class_names,
    )
    logger.debug(
        "read %s: %s rows, %s features (%s), classes %s",
        file,
        len(rows),
        len(wanted),
        ",".join(wanted),
        ",".join(class_names),
    )
    return bundle


def load_csv_dataset(
    *,
    root: str | None = None,
    seed: int = 0,
    label_column: str = "label",
    feature_columns: str | None = None,
    test_fraction: str | None = None,
) -> DatasetBundle:
    """Registry loader of dataset ``csv``: :func:`load_csv` with string options.

    Parameters
    ----------
    root
        Path of the CSV file (the run config's ``data-root``).
    seed
        Seed of the train/test split.
    label_column
        Option ``label_column`` (default ``"label"``).
    feature_columns
        Option ``feature_columns``: comma-separated column names; unset or empty
        takes every column except the label.
    test_fraction
        Option ``test_fraction``: a number in ``(0, 1)`` as text (default 0.2).

    Raises
    ------
    DataUnavailableError
        If ``root`` is unset or the file cannot be read.
    ConfigError
        If an option value is malformed, or as :func:`load_csv`.
    """
    if not root:
        raise DataUnavailableError(
            f"dataset 'csv' needs data-root set to a CSV file with a label column ({label_column!r}; "
            "option label_column) and numeric feature columns (option feature_columns); no data-root is set"
        )
    fraction = 0.2
    if test_fraction is not None and test_fraction.strip():
        try:
            fraction = float(test_fraction)
        except ValueError:
            raise ConfigError(
                f"option test_fraction must be a number in (0, 1), got {test_fraction!r}"
            ) from None
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"option test_fraction must be a number in (0, 1), got {test_fraction!r}")
    columns = feature_columns if feature_columns is not None and feature_columns.strip() else None
    return load_csv(
        root, label_column=label_column, feature_columns=columns, seed=seed, test_fraction=fraction
    )
