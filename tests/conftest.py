"""Test-wide setup: the task identity Flower stamps on every message it creates."""

from collections.abc import Iterator

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


def _one_thread() -> Iterator[None]:
    """Tiny networks run fastest (and steadiest on shared cores) on one torch thread; restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


one_torch_thread = pytest.fixture(_one_thread, name="one_torch_thread")
"""One torch thread for the test (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""

one_torch_thread_per_module = pytest.fixture(_one_thread, scope="module", name="one_torch_thread_per_module")
"""The same for a whole module, for module-scoped fixtures that train (they may depend on it)."""
