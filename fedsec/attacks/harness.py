"""Attack harnesses: which loss a white-box attack differentiates, and how often its input gradient is zero.

DiPSeN (Ibitoye, Shafiq and Matrawy, "DiPSeN: Differentially Private
Self-normalizing Neural Networks For Adversarial Robustness in Federated
Learning", 2021) reports FGSM / BIM / PGD accuracies at ε = 0.3 far above its
basic CNN's.  How the attack is wired decides much of that number, so fedsec
offers two harnesses and reports both:

``"logits"`` (fedsec's)
    ART attacks the model's logits through ``CrossEntropyLoss`` (log-softmax
    computed stably from the logits), with fedsec's step sizes (BIM/PGD
    ``eps_step`` 0.01, 40 steps) and PGD's random start.
``"paper"`` (§VI-E of the paper)
    ART attacks the model's **softmax output** through a cross-entropy on
    probabilities clipped to ``[1e-7, 1 − 1e-7]``, as Keras's categorical
    cross-entropy does (:class:`ClippedSoftmax`, :class:`ClippedProbabilityNLL`),
    with ART's own default step sizes (BIM/PGD ``eps_step`` 0.1, ``max_iter``
    100) and PGD **without** a random start (``num_random_init`` 0).

Under the paper harness the input gradient of an input the model classifies
with probability above ``1 − 1e-7`` is exactly zero: the clip cuts the
gradient.  FGSM's sign step is then zero and BIM/PGD without a random start
never move, so such inputs stay classified correctly whatever the model's
robustness: gradient masking in the attack (Athalye, Carlini and Wagner, 2018,
"Obfuscated Gradients Give a False Sense of Security").
:func:`zero_gradient_fraction` measures how many test inputs that concerns.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from fedsec.errors import ConfigError

__all__ = [
    "HARNESSES",
    "KERAS_EPSILON",
    "PAPER_PARAMS",
    "ClippedProbabilityNLL",
    "ClippedSoftmax",
    "harness_label",
    "harness_params",
    "input_gradients",
    "zero_gradient_fraction",
]

#: The harnesses :func:`fedsec.attacks.evasion.generate` knows.
HARNESSES: tuple[str, ...] = ("logits", "paper")

#: Keras's ``backend.epsilon()``: categorical cross-entropy clips probabilities to ``[ε, 1 − ε]``.
KERAS_EPSILON = 1e-7

#: ART's own defaults for its FGSM, BIM and PGD classes (ART 1.20), which the paper's §VI-E uses:
#: BIM/PGD step 0.1 for 100 steps, PGD without a random start.  ``eps`` follows ``attack-params``.
PAPER_PARAMS: Mapping[str, Mapping[str, float | int]] = {
    "fgsm": {"eps": 0.3},
    "bim": {"eps": 0.3, "eps_step": 0.1, "max_iter": 100},
    "pgd": {"eps": 0.3, "eps_step": 0.1, "max_iter": 100, "num_random_init": 0},
}

#: Row suffix of each harness in result tables (the logit harness keeps the plain attack name).
_LABELS = {"logits": "", "paper": " (paper harness: clipped softmax)"}


def _check_harness(harness: str) -> str:
    if harness not in HARNESSES:
        raise ConfigError(f"harness must be one of: {', '.join(HARNESSES)}, got {harness!r}")
    return harness


def harness_label(harness: str) -> str:
    """What a table row appends to an attack's name for ``harness`` (``""`` for the logit loss)."""
    return _LABELS[_check_harness(harness)]


def harness_params(
    harness: str, attack: str, params: Mapping[str, float | int] | None = None
) -> dict[str, float | int]:
    """The parameter overrides ``attack`` runs with under ``harness``.

    ``"logits"`` returns ``params`` unchanged; ``"paper"`` returns
    :data:`PAPER_PARAMS` for the attack with only ``eps`` taken from ``params``
    (the budget is the experiment's, the steps are ART's defaults).

    Raises
    ------
    fedsec.errors.ConfigError
        For an unknown harness, or an attack the paper harness does not define
        (only FGSM, BIM and PGD).
    """
    _check_harness(harness)
    given = dict(params or {})
    if harness == "logits":
        return given
    if attack not in PAPER_PARAMS:
        raise ConfigError(
            f"the paper harness runs {', '.join(PAPER_PARAMS)} only (the paper's attacks), got {attack!r}"
        )
    merged = dict(PAPER_PARAMS[attack])
    if "eps" in given:
        merged["eps"] = given["eps"]
    return merged


class ClippedSoftmax(nn.Module):
    """``clamp(softmax(model(x)), ε, 1 − ε)``: a logits model seen as a Keras softmax output.

    Parameters
    ----------
    model
        A network returning ``(B, K)`` logits; wrapped, not copied.
    epsilon
        The clip ``ε`` in ``(0, 0.5)`` (Keras: ``1e-7``).

    Raises
    ------
    ValueError
        If ``epsilon`` is outside ``(0, 0.5)``.
    """

    def __init__(self, model: nn.Module, *, epsilon: float = KERAS_EPSILON) -> None:
        super().__init__()
        if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not 0.0 < epsilon < 0.5:
            raise ValueError(f"epsilon must be a number in (0, 0.5), got {epsilon!r}")
        self.model = model
        self.epsilon = float(epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clipped class probabilities ``(B, K)``; the clip's gradient is zero outside ``[ε, 1 − ε]``."""
        probabilities = torch.softmax(self.model(x), dim=1)
        return torch.clamp(probabilities, self.epsilon, 1.0 - self.epsilon)


class ClippedProbabilityNLL(nn.NLLLoss):
    """Cross-entropy on (already clipped) probabilities: ``−mean log p_y``, Keras's categorical cross-entropy.

    A subclass of :class:`torch.nn.NLLLoss`, so ART's ``PyTorchClassifier``
    hands it integer labels as it does for ``NLLLoss``.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``NLLLoss(log(input), target)`` for probabilities ``input`` ``(B, K)``."""
        return super().forward(torch.log(input), target)


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, harness: str) -> torch.Tensor:
    """The gradient of each input's own loss under ``harness`` with respect to that input.

    The loss is summed over the batch, so row ``i`` is the gradient of input
    ``i``'s loss alone (the model treats inputs independently in eval mode).
    Parameters are left untouched (no ``.grad`` is written).  A model that is
    random at inference (DiPSeN's noise layer) gives one draw's gradient.

    Parameters
    ----------
    model
        A network returning ``(B, K)`` logits, on the device of ``x``.
    x
        Float inputs ``(B, ...)``; not modified.
    y
        Integer labels ``(B,)``.
    harness
        ``"logits"``: cross-entropy on the logits; ``"paper"``: clipped-probability
        cross-entropy on the softmax output.

    Returns
    -------
    torch.Tensor
        Gradients of the same shape as ``x``.
    """
    _check_harness(harness)
    inputs = x.detach().clone().requires_grad_(True)
    outputs = model(inputs)
    if harness == "logits":
        loss = F.cross_entropy(outputs, y, reduction="sum")
    else:
        probabilities = torch.clamp(torch.softmax(outputs, dim=1), KERAS_EPSILON, 1.0 - KERAS_EPSILON)
        loss = F.nll_loss(torch.log(probabilities), y, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, inputs)
    return gradient.detach()


def zero_gradient_fraction(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, harness: str, batch_size: int = 100
) -> float:
    """The fraction of inputs whose input gradient under ``harness`` is exactly zero everywhere.

    Such an input cannot be moved by FGSM's sign step, nor by BIM or PGD
    without a random start.  The model is put in eval mode for the call and
    its modes restored afterwards.

    Raises
    ------
    ValueError
        If ``x`` is empty or ``batch_size`` is not an int >= 1.
    """
    if len(x) == 0:
        raise ValueError("x must hold at least one input")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    zero = 0
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            gradient = input_gradients(model, xb, yb, harness=harness)
            zero += int((gradient.flatten(1) == 0).all(dim=1).sum())
    finally:
        for module, mode in modes:
            module.training = mode
    return zero / len(x)
