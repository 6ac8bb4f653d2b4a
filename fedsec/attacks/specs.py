"""The evasion-attack registry: what each attack is, its paper-style defaults, and how ART runs it.

:data:`ATTACKS` maps each name to an :class:`AttackSpec` (norm family, black-box flag,
paper-style defaults, description, runner). Every runner calls ART's own implementation
(Nicolae et al., "Adversarial Robustness Toolbox v1.0.0", 2018) on an ART
:class:`~art.estimators.classification.PyTorchClassifier`: FGSM (Goodfellow et al.,
2015), BIM (Kurakin et al., 2017), PGD (Madry et al., 2018), JSMA (Papernot et al.,
2016), CW-L2 (Carlini & Wagner, 2017), DeepFool (Moosavi-Dezfooli et al., 2016) and
SimBA (Guo et al., 2019).  :func:`fedsec.attacks.evasion.generate` runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

import numpy as np
from art.attacks import EvasionAttack
from art.attacks.evasion import (
    BasicIterativeMethod,
    CarliniL2Method,
    DeepFool,
    FastGradientMethod,
    ProjectedGradientDescent,
    SaliencyMapMethod,
    SimBA,
)
from art.estimators.classification import PyTorchClassifier
from art.utils import random_targets, to_categorical

from fedsec.errors import ConfigError
from fedsec.numbers import is_real
from fedsec.registry import Registry

__all__ = ["ATTACKS", "NORMS", "AttackRunner", "AttackSpec"]

#: The norm families an :class:`AttackSpec` may declare.
NORMS: tuple[str, ...] = ("linf", "l0", "l2")

#: Runs an attack: ``runner(classifier, x, y, params, batch_size) -> x_adv``, where ``x`` is a
#: float32 ``(N, C, H, W)`` array in ``[0, 1]`` (the runner's own copy), ``y`` the true integer
#: labels ``(N,)`` or None, and ``params`` the spec's defaults merged with the caller's overrides.
AttackRunner = Callable[
    [PyTorchClassifier, np.ndarray, np.ndarray | None, Mapping[str, float | int], int], np.ndarray
]

_AttackT = TypeVar("_AttackT", bound=EvasionAttack)

# ---------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class AttackSpec:
    """One registered evasion attack.

    Attributes
    ----------
    name
        Registry name (``"fgsm"``, ``"pgd"``, ...).
    norm
        Norm family of the perturbation: ``"linf"``, ``"l0"`` or ``"l2"``.
    black_box
        True if the attack only queries the model's outputs (no gradients).
    defaults
        Paper-style default parameters (ART keyword names); :func:`generate` lets the
        caller override any of them and refuses names not listed here.  Read-only.
    description
        One paragraph: the attack, its ART class and the meaning of each default.
    run
        The :data:`AttackRunner` that builds the ART attack and generates the examples.
    probabilities
        True if the attack needs a classifier that outputs probabilities (softmax)
        rather than logits.
    """

    name: str
    norm: str
    black_box: bool
    defaults: Mapping[str, float | int]
    description: str
    run: AttackRunner = field(repr=False, compare=False)
    probabilities: bool = False

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        for key, value in self.defaults.items():
            if not is_real(value):
                raise ValueError(f"default {key!r} of attack {self.name!r} must be a number, got {value!r}")
        # A read-only copy, so neither the caller's dict nor anyone else can change the defaults.
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


# ---------------------------------------------------------------------------- runners


def _construct(cls: Callable[..., _AttackT], **kwargs: Any) -> _AttackT:
    """``cls(**kwargs)``, turning ART's parameter checks (ValueError) into :class:`ConfigError`."""
    try:
        return cls(**kwargs)
    except ValueError as err:
        shown = {key: value for key, value in kwargs.items() if key not in ("estimator", "classifier")}
        raise ConfigError(
            f"ART {getattr(cls, '__name__', cls)} rejected the parameters {shown}: {err}"
        ) from err


def _one_hot(y: np.ndarray | None, num_classes: int) -> np.ndarray | None:
    return None if y is None else to_categorical(y, nb_classes=num_classes).astype(np.float32)


def _run_fgsm(
    clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray | None, p: Mapping[str, float | int], bs: int
) -> np.ndarray:
    attack = _construct(FastGradientMethod, estimator=clf, norm=np.inf, eps=p["eps"], batch_size=bs)
    return attack.generate(x=x, y=_one_hot(y, clf.nb_classes))


def _run_bim(
    clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray | None, p: Mapping[str, float | int], bs: int
) -> np.ndarray:
    attack = _construct(
        BasicIterativeMethod,
        estimator=clf,
        eps=p["eps"],
        eps_step=p["eps_step"],
        max_iter=int(p["max_iter"]),
        batch_size=bs,
        verbose=False,
    )
    return attack.generate(x=x, y=_one_hot(y, clf.nb_classes))


def _run_pgd(
    clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray | None, p: Mapping[str, float | int], bs: int
) -> np.ndarray:
    attack = _construct(
        ProjectedGradientDescent,
        estimator=clf,
        norm=np.inf,
        eps=p["eps"],
        eps_step=p["eps_step"],
        max_iter=int(p["max_iter"]),
        num_random_init=int(p["num_random_init"]),
        batch_size=bs,
        verbose=False,
    )
    return attack.generate(x=x, y=_one_hot(y, clf.nb_classes))


def _run_jsma(
    clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray | None, p: Mapping[str, float | int], bs: int
) -> np.ndarray:
    # JSMA is targeted: ART reads ``y`` as target classes.  Our ``y`` holds the true labels,
    # so draw a random target different from each true label (as ART does from the
    # predictions when y is None); numpy's global generator is seeded by ``generate``.
    targets = None if y is None else random_targets(y, clf.nb_classes).astype(np.float32)
    attack = _construct(
        SaliencyMapMethod, classifier=clf, theta=p["theta"], gamma=p["gamma"], batch_size=bs, verbose=False
    )
    return attack.generate(x=x, y=targets)


def _run_cw2(
    clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray | None, p: Mapping[str, float | int], bs: int
) -> np.ndarray:
    attack = _construct(
        CarliniL2Method,
        classifier=clf,
        confidence=p["confidence"],
        learning_rate=p["learning_rate"],
        binary_search_steps=int(p["binary_search_steps"]),
        max_iter=int(p["max_iter"]),
        initial_const=p["initial_const"],
        batch_size=bs,
        verbose=False,
    )
    return attack.generate(x=x, y=_one_hot(y, clf.nb_classes))


def _run_deepfool(
    clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray | None, p: Mapping[str, float | int], bs: int
) -> np.ndarray:
    attack = _construct(
        DeepFool,
        classifier=clf,
        max_iter=int(p["max_iter"]),
        epsilon=p["epsilon"],
        nb_grads=int(p["nb_grads"]),
        batch_size=bs,
        verbose=False,
    )
    return attack.generate(x=x)  # DeepFool ignores labels: it moves away from the predicted class


def _run_simba(
    clf: PyTorchClassifier, x: np.ndarray, y: np.ndarray | None, p: Mapping[str, float | int], bs: int
) -> np.ndarray:
    # ART's SimBA works one example at a time and insists on batch_size=1; it loops over x itself.
    attack = _construct(
        SimBA,
        classifier=clf,
        attack="dct",
        max_iter=int(p["max_iter"]),
        epsilon=p["epsilon"],
        freq_dim=int(p["freq_dim"]),
        stride=int(p["stride"]),
        batch_size=1,
        verbose=False,
    )
    return attack.generate(x=x, y=_one_hot(y, clf.nb_classes))  # SimBA reads y only as one-hot


# ---------------------------------------------------------------------------- registry

#: The evasion-attack registry; unknown names raise :class:`fedsec.errors.UnknownNameError`.
ATTACKS: Registry[AttackSpec] = Registry(
    "attack",
    {
        "fgsm": AttackSpec(
            name="fgsm",
            norm="linf",
            black_box=False,
            defaults={"eps": 0.3},
            description=(
                "Fast Gradient Sign Method (Goodfellow et al., 2015), ART FastGradientMethod with "
                "norm=inf: one step x + eps*sign(grad). eps=0.3: L-inf budget (MNIST convention, "
                "DiPSeN's ε)."
            ),
            run=_run_fgsm,
        ),
        "bim": AttackSpec(
            name="bim",
            norm="linf",
            black_box=False,
            defaults={"eps": 0.3, "eps_step": 0.01, "max_iter": 40},
            description=(
                "Basic Iterative Method (Kurakin et al., 2017), ART BasicIterativeMethod: iterated "
                "FGSM projected on the L-inf ball, no random start. eps=0.3: L-inf budget; "
                "eps_step=0.01: step size; max_iter=40: number of steps."
            ),
            run=_run_bim,
        ),
        "pgd": AttackSpec(
            name="pgd",
            norm="linf",
            black_box=False,
            defaults={"eps": 0.3, "eps_step": 0.01, "max_iter": 40, "num_random_init": 1},
            description=(
                "Projected Gradient Descent (Madry et al., 2018), ART ProjectedGradientDescent with "
                "norm=inf: BIM from a uniform random start in the L-inf ball. eps=0.3: L-inf budget; "
                "eps_step=0.01: step size; max_iter=40: steps per start; num_random_init=1: random "
                "starts (the best one is kept)."
            ),
            run=_run_pgd,
        ),
        "jsma": AttackSpec(
            name="jsma",
            norm="l0",
            black_box=False,
            defaults={"theta": 1.0, "gamma": 0.1},
            description=(
                "Jacobian-based Saliency Map Attack (Papernot et al., 2016), ART SaliencyMapMethod: "
                "targeted, changes the most salient pixel pairs towards a random target class "
                "different from the true label (or from the prediction when y is None). theta=1.0: "
                "change added to each chosen pixel; gamma=0.1: at most 10% of the pixels are changed."
            ),
            run=_run_jsma,
        ),
        "cw2": AttackSpec(
            name="cw2",
            norm="l2",
            black_box=False,
            defaults={
                "confidence": 0.0,
                "max_iter": 10,
                "binary_search_steps": 5,
                "learning_rate": 0.01,
                "initial_const": 1.0,
            },
            description=(
                "Carlini & Wagner L2 attack (Carlini & Wagner, 2017), ART CarliniL2Method, untargeted. "
                "confidence=0.0: required logit margin; max_iter=10: optimizer steps per search step; "
                "binary_search_steps=5: binary-search rounds over the trade-off constant; "
                "learning_rate=0.01: initial step of ART's line search; initial_const=1.0: starting "
                "trade-off constant (ART's 0.01 barely moves MNIST models within 5 search steps). Budget "
                "kept small so 100 MNIST images take seconds."
            ),
            run=_run_cw2,
        ),
        "deepfool": AttackSpec(
            name="deepfool",
            norm="l2",
            black_box=False,
            defaults={"max_iter": 50, "epsilon": 1e-6, "nb_grads": 10},
            description=(
                "DeepFool (Moosavi-Dezfooli et al., 2016), ART DeepFool: minimal L2 steps to the "
                "linearised nearest decision boundary; ignores y. max_iter=50: maximum steps; "
                "epsilon=1e-6: overshoot; nb_grads=10: class gradients considered (the top-10 classes)."
            ),
            run=_run_deepfool,
        ),
        "simba": AttackSpec(
            name="simba",
            norm="l2",
            black_box=True,
            defaults={"max_iter": 1000, "epsilon": 0.2, "freq_dim": 4, "stride": 1},
            description=(
                "Simple Black-box Attack (Guo et al., 2019), ART SimBA with attack='dct': score-based, "
                "queries probabilities only, tries ±epsilon along random low-frequency DCT directions "
                "one example at a time (batch size 1). max_iter=1000: maximum directions (2 queries "
                "each) per example; epsilon=0.2: step along each direction; freq_dim=4: size of the "
                "initial low-frequency block; stride=1: growth of that block. FDA³'s unseen attack."
            ),
            run=_run_simba,
            probabilities=True,
        ),
    },
)
