"""Tests for the CSV (tabular) dataset path of DiPSeN (Ibitoye et al., 2021)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedsec.data import DATASETS, load_csv, load_dataset
from fedsec.data import tabular as tabular_module
from fedsec.errors import ConfigError, DataUnavailableError


def _write(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _flows(tmp_path: Path) -> Path:
    """50 flows: 20 'botnet', 30 'normal'; three numeric features."""
    rng = np.random.default_rng(0)
    rows: list[list[object]] = []
    for i in range(50):
        label = "botnet" if i % 5 < 2 else "normal"
        rows.append([round(float(rng.uniform(0, 100)), 3), int(rng.integers(1, 500)), i * 7, label])
    return _write(tmp_path / "flows.csv", ["Dur", "TotPkts", "TotBytes", "label"], rows)


def _flat(split_x: torch.Tensor) -> np.ndarray:
    return split_x.reshape(split_x.shape[0], -1).numpy()


# ----------------------------------------------------------------------------- loading


def test_csv_becomes_padded_28x28_images_with_stratified_split(tmp_path: Path) -> None:
    bundle = load_csv(_flows(tmp_path), seed=0)

    assert bundle.name == "csv"
    assert bundle.input_shape == (1, 28, 28)
    assert bundle.num_classes == 2
    assert bundle.class_names == ("botnet", "normal")
    assert (len(bundle.train), len(bundle.test)) == (40, 10)
    assert torch.bincount(bundle.train.y).tolist() == [16, 24]
    assert torch.bincount(bundle.test.y).tolist() == [4, 6]
    for split in (bundle.train, bundle.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1:] == (1, 28, 28)
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
        assert not _flat(split.x)[:, 3:].any()  # zero padding beyond the 3 features
    train = _flat(bundle.train.x)[:, :3]
    assert np.allclose(train.min(axis=0), 0.0) and np.allclose(train.max(axis=0), 1.0)


def test_scaling_uses_the_training_split_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # prepare: rows 0-3 train, rows 4-5 test (fixed split); f2 is constant
    path = _write(
        tmp_path / "tiny.csv",
        ["f1", "f2", "f3", "label"],
        [[1, 5, 0, "a"], [3, 5, 10, "b"], [5, 5, 20, "a"], [2, 5, 30, "b"], [7, 5, -5, "a"], [4, 5, 15, "b"]],
    )
    monkeypatch.setattr(
        tabular_module, "_train_test_indices", lambda labels, **_: (np.arange(4), np.array([4, 5]))
    )

    # execute
    bundle = load_csv(path, seed=0)

    # assert: train min/max f1 = 1/5, f3 = 0/30; test clipped to [0, 1]; constant f2 -> 0
    expected_train = np.array(
        [[0.0, 0.0, 0.0], [0.5, 0.0, 1 / 3], [1.0, 0.0, 2 / 3], [0.25, 0.0, 1.0]], dtype=np.float32
    )
    expected_test = np.array([[1.0, 0.0, 0.0], [0.75, 0.0, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(_flat(bundle.train.x)[:, :3], expected_train)
    np.testing.assert_array_equal(_flat(bundle.test.x)[:, :3], expected_test)
    assert bundle.train.y.tolist() == [0, 1, 0, 1] and bundle.test.y.tolist() == [0, 1]
    assert bundle.class_names == ("a", "b")


def test_feature_columns_choose_and_order_the_features(tmp_path: Path) -> None:
    rows: list[list[object]] = [[i, 3 * i % 7, 10 * (i % 2), 99, "x" if i % 2 else "y"] for i in range(20)]
    path = _write(tmp_path / "sel.csv", ["a", "b", "c", "d", "label"], rows)

    bundle = load_csv(path, feature_columns=["c", "a"], seed=1)

    for split in (bundle.train, bundle.test):
        flat = _flat(split.x)
        assert not flat[:, 2:].any()  # only the two chosen columns fill positions
        assert set(np.unique(flat[:, 0]).tolist()) <= {0.0, 1.0}  # c is binary (0 or 10)
    assert len(np.unique(_flat(bundle.train.x)[:, 1])) > 2  # a takes many values
    same = load_csv(path, feature_columns="c, a", seed=1)  # comma-separated string form
    assert torch.equal(same.train.x, bundle.train.x)


def test_numeric_labels_are_sorted_numerically(tmp_path: Path) -> None:
    rows: list[list[object]] = [[i, (10, 2, 1)[i % 3]] for i in range(12)]
    bundle = load_csv(_write(tmp_path / "num.csv", ["f", "label"], rows), seed=0)
    assert bundle.class_names == ("1", "2", "10")
    assert sorted(torch.cat([bundle.train.y, bundle.test.y]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4


def test_singleton_class_falls_back_to_unstratified_split(tmp_path: Path) -> None:
    rows: list[list[object]] = [[i, "rare" if i == 0 else "common"] for i in range(10)]
    bundle = load_csv(_write(tmp_path / "rare.csv", ["f", "label"], rows), seed=0)
    assert len(bundle.train) + len(bundle.test) == 10 and len(bundle.test) == 2


# ----------------------------------------------------------------------------- errors


def test_missing_feature_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'Bytes'") as info:
        load_csv(_flows(tmp_path), feature_columns=["Dur", "Bytes"], seed=0)
    assert "available columns: Dur, TotPkts, TotBytes, label" in str(info.value)


def test_missing_label_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="label column 'Label'"):
        load_csv(_flows(tmp_path), label_column="Label", seed=0)


def test_non_numeric_cell_names_column_row_and_value(tmp_path: Path) -> None:
    rows: list[list[object]] = [[1, 2, "a"], [3, 4, "b"], [5, "oops", "a"], [6, 7, "b"]]
    path = _write(tmp_path / "bad.csv", ["f1", "f2", "label"], rows)
    with pytest.raises(ConfigError) as info:
        load_csv(path, seed=0)
    message = str(info.value)
    assert "'f2'" in message and "row 3" in message and "'oops'" in message


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(DataUnavailableError) as info:
        load_csv(missing, seed=0)
    assert str(missing) in str(info.value) and "header row" in str(info.value)


def test_more_than_784_features_is_refused(tmp_path: Path) -> None:
    header = [f"f{i}" for i in range(785)] + ["label"]
    rows: list[list[object]] = [[0] * 785 + ["a"], [1] * 785 + ["b"]]
    with pytest.raises(ConfigError, match="785 feature columns"):
        load_csv(_write(tmp_path / "wide.csv", header, rows), seed=0)


# ----------------------------------------------------------------------------- registry


def test_load_dataset_csv_with_options(tmp_path: Path) -> None:
    path = _flows(tmp_path)
    bundle = load_dataset(
        "csv",
        root=str(path),
        seed=0,
        options={"label_column": "label", "feature_columns": "TotBytes,Dur", "test_fraction": "0.4"},
    )
    assert "csv" in DATASETS
    assert (len(bundle.train), len(bundle.test)) == (30, 20)
    assert not _flat(bundle.train.x)[:, 2:].any()
    direct = load_csv(path, feature_columns=["TotBytes", "Dur"], seed=0, test_fraction=0.4)
    assert torch.equal(direct.train.x, bundle.train.x) and torch.equal(direct.test.y, bundle.test.y)


def test_load_dataset_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="dataset 'csv' needs data-root set to a CSV file"):
        load_dataset("csv", root="", seed=0)
    with pytest.raises(ConfigError, match="'Bytes'"):
        load_dataset("csv", root=str(_flows(tmp_path)), options={"feature_columns": "Dur,Bytes"})
    with pytest.raises(ConfigError, match="dataset 'csv' takes no option 'sep'"):
        load_dataset("csv", root=str(_flows(tmp_path)), options={"sep": ";"})
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset("csv", root=str(_flows(tmp_path)), options={"test_fraction": "half"})


def test_options_to_a_dataset_without_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="dataset 'synthetic' takes no option 'label_column'"):
        load_dataset("synthetic", seed=0, options={"label_column": "y"})
