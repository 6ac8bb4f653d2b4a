"""Attacks on federated learning.

:mod:`fedsec.attacks.evasion` is the registry of evasion (adversarial-example)
attacks on the Adversarial Robustness Toolbox (ART) that FDA³ (Song et al.,
"FDA³: Federated Defense Against Adversarial Attacks for Cloud-Based IIoT
Applications") assigns to devices for adversarial training and that DiPSeN is
evaluated against: FGSM, BIM, PGD, JSMA, CW-L2, DeepFool and the black-box SimBA.
:func:`generate` runs one of them, reproducibly under a seed.

The names below are imported from :mod:`fedsec.attacks.evasion` on first use:
importing ART costs ~200 MB and seconds, and most client roles never attack
with it (a benign client imports :mod:`fedsec.attacks.poisoning` only).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ATTACKS",
    "NORMS",
    "AttackRunner",
    "AttackSpec",
    "ExpectationOverTransformation",
    "art_classifier",
    "generate",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("fedsec.attacks.evasion"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
