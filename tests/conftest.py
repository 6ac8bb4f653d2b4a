"""Test-wide setup: the task identity Flower stamps on every message it creates."""

import pytest
import torch

from simulations.local_grid import set_local_identity


@pytest.fixture(autouse=True, scope="session")
def flower_task_identity():
    """In-process tests build Flower ``Message`` objects outside a run; give this process a run's identity.

    (In a ServerApp process Flower sets these before the app runs.)
    """
    set_local_identity()
    yield


@pytest.fixture
def one_torch_thread():
    """Tiny networks run fastest (and steadiest on shared cores) on one torch thread; restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
