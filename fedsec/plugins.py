"""Extensions from outside fedsec: modules that register models, datasets, client roles and strategies.

A plugin is an ordinary Python module that adds entries to fedsec's registries
when it is imported (``fedsec.models.MODELS``, ``fedsec.data.DATASETS``,
``clients.CLIENT_ROLES``, ``strategies.STRATEGIES``).  Two ways load it, in
every process of a run (the ``fedsec`` CLI, the ServerApp, every ClientApp):

* the run-config key ``plugins = "mypackage.fedsec_ext,other_module"``, imported
  whenever a run config is parsed (so Ray's workers and SuperNodes import it too);
* the entry-point group ``fedsec.plugins`` of an installed package, loaded once
  per process the first time a run config is parsed.

The current working directory is searched first, as ``python -m`` does, so a
module next to the user's scenario file loads without installing it.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path

from fedsec.errors import ConfigError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "fedsec.plugins"


def plugin_names(text: str) -> list[str]:
    """``"a.b, c"`` → ``["a.b", "c"]`` (empty entries dropped)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def load_plugins(text: str) -> list[str]:
    """Import the ``plugins`` modules (and, once per process, the entry points); return the module names.

    Raises
    ------
    ConfigError
        If a module cannot be imported; the message names the key and the module.
    """
    _load_entry_points()
    names = plugin_names(text)
    if names:
        cwd = str(Path.cwd())
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(
                f"config key 'plugins': cannot import {name!r} ({error}); put it on PYTHONPATH or in the "
                "working directory"
            ) from None
    return names


@functools.cache
def _load_entry_points() -> None:
    for point in entry_points(group=ENTRY_POINT_GROUP):
        logger.info("loading fedsec plugin %s (%s)", point.name, point.value)
        point.load()
