"""Attacks on federated learning.

:mod:`fedsec.attacks.evasion` is the registry of evasion (adversarial-example)
attacks on the Adversarial Robustness Toolbox (ART) that FDA³ (Song et al.,
"FDA³: Federated Defense Against Adversarial Attacks for Cloud-Based IIoT
Applications") assigns to devices for adversarial training and that DiPSeN is
evaluated against: FGSM, BIM, PGD, JSMA, CW-L2, DeepFool and the black-box SimBA.
:func:`generate` runs one of them, reproducibly under a seed.
"""

from fedsec.attacks.evasion import (
    ATTACKS,
    NORMS,
    AttackRunner,
    AttackSpec,
    ExpectationOverTransformation,
    art_classifier,
    generate,
)

__all__ = [
    "ATTACKS",
    "NORMS",
    "AttackRunner",
    "AttackSpec",
    "ExpectationOverTransformation",
    "art_classifier",
    "generate",
]
