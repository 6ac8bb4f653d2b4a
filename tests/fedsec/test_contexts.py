import os

import pytest
import torch

from fedsec.contexts import torch_threads, usable_cores


def test_torch_threads_sets_the_count_inside_and_restores_it_even_on_error():
    previous = torch.get_num_threads()
    target = 2 if previous != 2 else 1
    with pytest.raises(RuntimeError, match="inside"), torch_threads(target):
        assert torch.get_num_threads() == target
        raise RuntimeError("inside")
    assert torch.get_num_threads() == previous


def test_zero_threads_means_every_core_this_process_may_use():
    previous = torch.get_num_threads()
    with torch_threads(0):
        assert torch.get_num_threads() == usable_cores()
    assert torch.get_num_threads() == previous
    if hasattr(os, "sched_getaffinity"):
        assert usable_cores() == len(os.sched_getaffinity(0))


def test_a_negative_thread_count_is_refused_before_anything_changes():
    previous = torch.get_num_threads()
    with pytest.raises(ValueError, match="threads must be >= 0, got -1"), torch_threads(-1):
        pass
    assert torch.get_num_threads() == previous
