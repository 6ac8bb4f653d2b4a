"""Stealthy targeted model poisoning: Chen et al.'s colluders and the single-node baselines.

Implements the attackers of Chen et al., "Towards multi-party targeted model
poisoning attacks against federated learning systems" (High-Confidence
Computing 2021): colluding stealthy clients with perfect (PK) or limited (LK)
knowledge of the benign updates, and the single-node baselines SNAL2 (L2
bound, no cosine term) and SAnoDC (no distance constraint).  They build on
the explicit boosting and stealth of Bhagoji et al., "Analyzing Federated
Learning through an Adversarial Lens" (ICML 2019).

Targets.  With ``targeted-samples = 0`` (the paper's, and ``multiparty-*``'s
default) the attacker flips the class: its poison set ``D_tar`` is its own
training partition's source-class samples relabelled to the target, ``D_m``
the rest of its data with true labels, and the server measures the targeted
accuracy on the held-out test split's source class, which no client holds.
``targeted-samples = k`` is Bhagoji et al.'s attack on ``k`` chosen test images
(attackers and server draw the same ones).

Objectives (``stealth-objective``).  ``boosted-step`` (fedsec's default) sends
``mean B + λ_m·δ_t``, ``B`` the benign updates it knows, ``δ_t`` a malicious step
(alternating minimisation).  ``eq4`` trains Eq. 4 as written from the global
model, ``λ·F(D_tar) + F(D_m) + p·(1 − cos(Δ, Δ_benign))``, and projects the update
onto ``‖Δ − Δ_benign‖ ≤ C``.

Perfect knowledge — seeing the round's benign updates — is a named,
simulation-only hook (:func:`simulated_benign_updates`): the colluder
recomputes what the benign clients send this round from their partitions,
which only a simulation holds.  It is refused unless the run sets
``perfect-knowledge-hook = true``; ``fedsec deploy`` refuses that setting.
Limited knowledge uses the hook for ``lk-known-clients`` benign clients
(``lk-draw = "random"``: the paper's, drawn anew each round), or, without it,
estimates the benign update from the global-model history kept in the node's
Flower ``Context.state`` and from its own honest training.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from flwr.common import NDArrays, Scalar
from torch import nn

from clients.attacker import HISTORY_KEY, POISON_STREAM, MaliciousClient, attacker_parts
from clients.benign import BenignClient, client_parts, local_splits
from fedsec.attacks.poisoning import apply_update, project_l2, select_lambda
from fedsec.attacks.stealth import StealthObjective, known_clients, stealth_direction
from fedsec.config import RunConfig
from fedsec.data import TensorSplit
from fedsec.data.poisoning import chosen_targets, targeted_subset
from fedsec.errors import ConfigError
from fedsec.experiment import derive_seed, load_bundle, torch_generator
from fedsec.roles import parse_roles
from fedsec.training import evaluate, flatten, set_weights

logger = logging.getLogger(__name__)

#: Seed-derivation key of the targeted minibatches of Eq. 4's training.
EQ4_STREAM = 0xE04


@dataclass(frozen=True)
class Stealth:
    """How a stealthy attacker behaves (the paper's variants).

    Attributes
    ----------
    knowledge
        ``"perfect"`` (every benign update of the round, via the simulation hook),
        ``"limited"`` (``lk-known-clients`` of them via the hook, or the
        history estimate when 0) or ``"estimate"`` (history + own honest training).
    cosine
        Train with the cosine penalty toward the benign update.
    bounded
        Keep the L2 distance to the known benign updates within C.
    """

    knowledge: str
    cosine: bool
    bounded: bool


STEALTH_VARIANTS = {
    "colluding-pk": Stealth(knowledge="perfect", cosine=True, bounded=True),
    "colluding-lk": Stealth(knowledge="limited", cosine=True, bounded=True),
    "snal2": Stealth(knowledge="estimate", cosine=False, bounded=True),
    "sanodc": Stealth(knowledge="estimate", cosine=False, bounded=False),
}


def targeted_examples(config: RunConfig) -> TensorSplit:
    """The ``targeted-samples`` chosen source-class test images, labelled the target.

    Attackers and the server's evaluation draw the same images from the run seed.
    """
    return chosen_targets(
        load_bundle(config).test,
        source=config.attack_source,
        target=config.attack_target,
        count=config.targeted_samples,
        seed=derive_seed(config.seed, POISON_STREAM) % 2**32,
    )


def poison_sets(config: RunConfig, train_data: TensorSplit) -> tuple[TensorSplit, TensorSplit]:
    """``(D_tar, D_m)``: what a stealthy attacker poisons toward, and its benign-labelled data.

    ``targeted-samples = 0`` (class-level, Chen et al.): ``D_tar`` is the
    attacker's own source-class training samples relabelled to the target and
    ``D_m`` its other samples.  Otherwise (Bhagoji et al.): ``D_tar`` is the
    chosen test images (:func:`targeted_examples`) and ``D_m`` all its data.
    """
    if config.targeted_samples:
        return targeted_examples(config), train_data
    source = config.attack_source
    targeted = targeted_subset(train_data, source=source, target=config.attack_target)
    if len(targeted) == 0:
        raise ConfigError(
            f"a stealthy attacker's partition holds no sample of class attack-source={source}, so the "
            "class-level target (targeted-samples = 0) has nothing to poison: choose another "
            "attack-source or partitioning, or a one-image target (targeted-samples >= 1)"
        )
    return targeted, train_data.subset(np.flatnonzero(train_data.y.numpy() != source))


def benign_partitions(config: RunConfig, num_partitions: int) -> list[int]:
    """Partitions the scenario makes benign (what a perfect-knowledge colluder simulates)."""
    return [p for p, role in parse_roles(config.roles, num_partitions).items() if role == "benign"]


def known_benign_partitions(config: RunConfig, num_partitions: int, server_round: int) -> list[int]:
    """The ``lk-known-clients`` benign partitions a limited-knowledge colluder sees in ``server_round``.

    Drawn by ``lk-draw`` (:func:`fedsec.attacks.stealth.known_clients`).
    """
    benign = benign_partitions(config, num_partitions)
    try:
        return known_clients(
            benign, config.lk_known_clients, draw=config.lk_draw, seed=config.seed, server_round=server_round
        )
    except ValueError as exc:
        raise ConfigError(
            f"config key 'lk-known-clients' must be between 1 and the {len(benign)} benign clients, "
            f"got {config.lk_known_clients}"
        ) from exc


def _require_hook(config: RunConfig) -> None:
    if not config.perfect_knowledge_hook:
        raise ConfigError(
            "colluders with perfect (or hook-based limited) knowledge need the simulation-only hook: "
            "set perfect-knowledge-hook = true in the scenario (never available in deployment)"
        )


def check_stealthy_roles(config: RunConfig, num_partitions: int) -> None:
    """Raise, before a run starts, the ``ConfigError`` its stealthy colluders would raise in their first
    attack round: the knowledge hook switched off, ``lk-known-clients`` out of range, or a colluder's
    partition without a sample of ``attack-source`` for the class-level target."""
    roles = parse_roles(config.roles, num_partitions)
    stealthy = {p: STEALTH_VARIANTS[r] for p, r in roles.items() if r in STEALTH_VARIANTS}
    kinds = {s.knowledge for s in stealthy.values()}
    hooked_lk = "limited" in kinds and config.lk_known_clients > 0
    if "perfect" in kinds or hooked_lk:
        _require_hook(config)
    if hooked_lk:
        known_benign_partitions(config, num_partitions, server_round=1)
    if stealthy and not config.targeted_samples:
        bundle = load_bundle(config)
        for partition in sorted(stealthy):
            train, _ = local_splits(config, bundle, partition_id=partition, num_partitions=num_partitions)
            poison_sets(config, train)


def simulated_benign_updates(
    config: RunConfig, parameters: NDArrays, server_round: int, partitions: list[int], num_partitions: int
) -> list[np.ndarray]:
    """**Simulation-only hook**: the benign updates of ``partitions`` in ``server_round``.

    Rebuilds each benign client from its partition and trains it from
    ``parameters`` exactly as it trains itself this round (same data, same
    seeded shuffling), which is possible only where every partition lives in
    one place.  Refused unless ``perfect-knowledge-hook`` is on.
    """
    _require_hook(config)
    updates = []
    for partition in partitions:
        honest = BenignClient(**client_parts(config, partition_id=partition, num_partitions=num_partitions))
        honest.local_train(parameters, server_round)
        updates.append(honest.local_update(parameters))
    return updates


def spread(vectors: list[np.ndarray]) -> float:
    """The largest pairwise L2 distance among ``vectors`` (the norm of a single one)."""
    if len(vectors) == 1:
        return float(np.linalg.norm(vectors[0]))
    return max(float(np.linalg.norm(a - b)) for i, a in enumerate(vectors) for b in vectors[i + 1 :])


class StealthyClient(MaliciousClient):
    """Chen et al.'s stealthy targeted poisoning (Eq. 4) and its single-node baselines.

    Each round it estimates the benign updates ``B`` (by ``stealth.knowledge``),
    with mean ``Δ_benign`` and bound C (``l2-bound``, or the spread of ``B``), and
    then, by ``stealth-objective``:

    ``boosted-step`` (alternating minimisation, Bhagoji et al.)
        takes the malicious step ``δ_t`` from ``w + Δ_benign``: ``stealth-steps``
        descent steps on the targeted loss plus the cosine penalty
        ``p·(1 − cos(δ, Δ_benign))`` (off for SNAL2/SAnoDC), each with the part
        that would raise its benign-data loss removed and scaled to
        ``stealth-step`` × ‖Δ_benign‖
        (:func:`fedsec.attacks.stealth.stealth_direction`), and sends
        ``Δ_benign + λ_m·δ_t`` for the largest ``λ_m`` in ``stealth-lambdas`` whose
        L2 distance to every update in ``B`` is at most C.  If no λ fits, the
        smallest λ's update is shrunk toward ``Δ_benign`` until it does.
    ``eq4`` (Chen et al.'s Eq. 4 as written)
        trains from the global model ``w`` with the clients' SGD on ``D_m`` with
        the loss ``λ·F(D_tar) + F(D_m) + p·(1 − cos(Δ, Δ_benign))`` (divided by
        ``1 + λ`` with ``eq4-normalise``) and projects the update onto
        ``‖Δ − Δ_benign‖ ≤ C``, for the largest λ in ``stealth-lambdas``; a λ whose
        training diverges is skipped.

    Either way a candidate must also keep the attacker's own accuracy within
    ``accuracy-slack`` of the benign estimate's (awareness of the server's
    accuracy check), else the next smaller λ is tried.  SAnoDC has no bound.
    """

    def __init__(self, *, stealth: Stealth, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stealth = stealth
        self.targeted, self.clean = poison_sets(self.config, self.train_data)

    def benign_estimates(self, parameters: NDArrays, server_round: int) -> list[np.ndarray]:
        """The benign updates this attacker knows or estimates this round."""
        config = self.config
        if self.stealth.knowledge == "perfect":
            partitions = benign_partitions(config, self.num_partitions)
            return simulated_benign_updates(config, parameters, server_round, partitions, self.num_partitions)
        if self.stealth.knowledge == "limited" and config.lk_known_clients > 0:
            partitions = known_benign_partitions(config, self.num_partitions, server_round)
            return simulated_benign_updates(config, parameters, server_round, partitions, self.num_partitions)
        self.local_train(parameters, server_round)
        estimates = [self.local_update(parameters)]
        previous = self.state.get(HISTORY_KEY) if self.state is not None else None
        if isinstance(previous, ArrayRecord):
            history = flatten(parameters) - flatten(previous.to_numpy_ndarrays())
            if np.linalg.norm(history) > 0:
                estimates.append(history)
        return estimates

    def local_accuracy(self, parameters: NDArrays, update: np.ndarray) -> float:
        """Accuracy of ``w + update`` on all the attacker's clean data (its guess at the server's check)."""
        set_weights(self.model, apply_update(parameters, update))
        return evaluate(
            self.model, self.clean.x, self.clean.y, num_classes=self.num_classes, device=self.device
        ).accuracy

    def objective(
        self, parameters: NDArrays, center: np.ndarray, lam: float, **kwargs: Any
    ) -> StealthObjective:
        """Eq. 4's loss with weight ``lam`` around the global model ``parameters``."""
        set_weights(self.model, parameters)
        return StealthObjective(
            targeted=self.targeted,
            lam=lam,
            penalty=self.config.stealth_penalty if self.stealth.cosine else 0.0,
            global_params=[p.detach().clone() for p in self.model.parameters()],
            benign_update=center if self.stealth.cosine else None,
            **kwargs,
        )

    def targeted_step(self, parameters: NDArrays, center: np.ndarray, server_round: int) -> np.ndarray:
        """The malicious step ``δ_t`` from ``w + center`` (``boosted-step``), as a state-dict vector."""
        config = self.config
        objective = self.objective(parameters, center, 0.0)
        set_weights(self.model, apply_update(parameters, center))
        targeted_x, targeted_y = self.targeted.x.to(self.device), self.targeted.y.to(self.device)
        clean_x, clean_y = self.clean.x.to(self.device), self.clean.y.to(self.device)
        step = stealth_direction(
            self.model,
            objective=lambda model: objective(model, targeted_x, targeted_y),
            benign_loss=lambda model: nn.functional.cross_entropy(model(clean_x), clean_y),
            steps=config.stealth_steps,
            step_norm=config.stealth_step * float(np.linalg.norm(center)),
        )
        return parameter_to_state_vector(self.model, step)

    def eq4_update(
        self, parameters: NDArrays, center: np.ndarray, radius: float, lam: float, server_round: int
    ) -> np.ndarray | None:
        """Eq. 4 trained with weight ``lam``, projected onto the ball of ``radius`` around ``center``.

        None when the training diverges (a non-finite loss).
        """
        config = self.config
        objective = self.objective(
            parameters,
            center,
            lam,
            generator=torch_generator(config.seed, self.partition_id, server_round, EQ4_STREAM),
            scale=StealthObjective.normalised_scale(lam) if config.eq4_normalise else 1.0,
        )
        try:
            self.local_train(parameters, server_round, data=self.clean, loss_fn=objective)
        except FloatingPointError as exc:
            logger.warning(
                "client %s round %s: Eq. 4 with λ=%s diverged (%s)", self.partition_id, server_round, lam, exc
            )
            return None
        return project_l2(self.local_update(parameters), center=center, radius=radius)

    def attack(self, parameters: NDArrays, server_round: int) -> tuple[NDArrays, dict[str, Scalar]]:
        config = self.config
        benign = self.benign_estimates(parameters, server_round)
        center = np.mean(benign, axis=0)
        radius = (config.l2_bound or spread(benign)) if self.stealth.bounded else math.inf
        floor = self.local_accuracy(parameters, center) - config.accuracy_slack

        def accurate(update: np.ndarray) -> bool:
            return not self.stealth.bounded or self.local_accuracy(parameters, update) >= floor

        lambdas = parse_lambdas(config.stealth_lambdas)
        if config.stealth_objective == "eq4":
            choice = select_lambda(
                lambdas,
                lambda lam: self.eq4_update(parameters, center, radius, lam, server_round),
                benign=[center],
                radius=math.inf,  # the projection already keeps the bound
                accept=accurate,
            )
        else:
            step = self.targeted_step(parameters, center, server_round)
            choice = select_lambda(
                lambdas, lambda lam: center + lam * step, benign=benign, radius=radius, accept=accurate
            )
        logger.info(
            "client %s round %s: %s λ=%s accepted=%s (C=%.3f)",
            self.partition_id,
            server_round,
            config.stealth_objective,
            choice.lam,
            choice.within_bound,
            radius,
        )
        return apply_update(parameters, choice.update), {
            "attack-lambda": choice.lam,
            "attack-within-bound": int(choice.within_bound),
            "attack-radius": float(radius) if math.isfinite(radius) else -1.0,
        }


def parameter_to_state_vector(model: nn.Module, vector: np.ndarray) -> np.ndarray:
    """A vector over ``model.parameters()`` laid out over ``state_dict()`` (zeros for buffers)."""
    parameter_ids = {id(p): i for i, p in enumerate(model.parameters())}
    offsets = np.cumsum([0] + [p.numel() for p in model.parameters()])
    pieces = []
    for tensor in model.state_dict(keep_vars=True).values():
        index = parameter_ids.get(id(tensor))
        if index is None:
            pieces.append(np.zeros(tensor.numel()))
        else:
            pieces.append(vector[offsets[index] : offsets[index + 1]])
    return np.concatenate(pieces)


def parse_lambdas(text: str) -> list[float]:
    """``"1,2,4"`` → ``[1.0, 2.0, 4.0]``; ConfigError naming ``stealth-lambdas`` otherwise."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"config key 'stealth-lambdas' must be comma-separated numbers, got {text!r}"
        ) from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise ConfigError(f"config key 'stealth-lambdas' must list positive numbers, got {text!r}")
    return values


def _stealthy(name: str) -> Any:
    def factory(
        config: RunConfig, *, partition_id: int, num_partitions: int, state: RecordDict | None = None
    ) -> MaliciousClient:
        return StealthyClient(
            stealth=STEALTH_VARIANTS[name], **attacker_parts(config, partition_id, num_partitions, state)
        )

    factory.__doc__ = f"Stealthy targeted poisoning, variant {name!r} ({STEALTH_VARIANTS[name]})."
    return factory


#: The roles of this module and their factories (merged into :data:`clients.CLIENT_ROLES`).
STEALTHY_FACTORIES: dict[str, Any] = {name: _stealthy(name) for name in STEALTH_VARIANTS}
