"""Checkpoints: written whole or not at all, read back exactly."""

import numpy as np
import pytest

from fedsec.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_a_checkpoint_reads_back_exactly(tmp_path):
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(7, dtype=np.int64)]
    state = {"own": {"step": 3, "moments": [np.ones(2), np.zeros(3)], "label": "x"}, "inner": {"own": {}}}
    save_checkpoint(
        tmp_path / "checkpoint", round=4, arrays=arrays, state=state, meta={"config": {"seed": 1}}
    )
    loaded = load_checkpoint(tmp_path / "checkpoint")
    assert loaded.round == 4 and loaded.meta == {"config": {"seed": 1}}
    for got, want in zip(loaded.arrays, arrays, strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    assert loaded.state["own"]["step"] == 3 and loaded.state["own"]["label"] == "x"
    np.testing.assert_array_equal(loaded.state["own"]["moments"][1], np.zeros(3))


def test_a_new_checkpoint_replaces_the_old_and_an_interrupted_swap_falls_back_to_it(tmp_path):
    directory = tmp_path / "checkpoint"
    save_checkpoint(directory, round=1, arrays=[np.zeros(2)])
    save_checkpoint(directory, round=2, arrays=[np.ones(2)])
    assert load_checkpoint(directory).round == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    directory.rename(tmp_path / "checkpoint.old")  # a crash between the two renames of a save
    assert load_checkpoint(directory).round == 2


def test_no_checkpoint_and_foreign_state_are_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "checkpoint")
    with pytest.raises(TypeError, match="holds a object"):
        save_checkpoint(tmp_path / "checkpoint", round=1, arrays=[], state={"x": object()})
