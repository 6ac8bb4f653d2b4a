"""Test-wide setup: the task identity Flower stamps on every message it creates."""

import pytest

from simulations.local_grid import set_local_identity


@pytest.fixture(autouse=True, scope="session")
def flower_task_identity():
    """In-process tests build Flower ``Message`` objects outside a run; give this process a run's identity.

    (In a ServerApp process Flower sets these before the app runs.)
    """
    set_local_identity()
    yield
