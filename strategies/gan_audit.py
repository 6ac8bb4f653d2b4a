"""PDGAN's server-side audit as a wrapper around any Flower strategy.

Implements Algorithm 1 of Zhao, Chen, Chen, Xiang and Chen, "Detecting and
mitigating poisoning attacks in federated learning using generative adversarial
networks" (PDGAN).  Every round the server

1. refreshes a ``K + 1``-class discriminator from the global model and trains it
   against a generator on its small auxiliary set (a semi-supervised GAN,
   :func:`fedsec.defenses.audit.train_gan`);
2. from round ``d_iter`` (``audit-start-round``) on, generates an audit set,
   runs every participant's model on it, labels each sample by majority vote and
   drops the participants whose accuracy against those labels is below ``θ``
   (:func:`fedsec.defenses.audit.audit`); before ``d_iter`` everyone is kept.

Where the discriminator starts each round is ``discriminator_init``
(``gan-discriminator-init``).  Algorithm 1, line 6 initialises it from
``M_{t-1} + mean(u_t)``, the previous global model plus the mean of this
round's client updates (``"aggregate"``,
:func:`fedsec.aggregation.mean_update_model`, attackers' updates included).
fedsec's default, ``"previous"``, copies ``M_{t-1}``, the global model the
clients of round ``t`` started from (what :attr:`StrategyWrapper.global_arrays`
holds when ``aggregate_train`` runs), so the audit's GAN is not pulled towards
the very updates it is about to judge.  The generator is ``gan_generator``
(``"fedsec"`` or the paper's 32×32 one, see :mod:`fedsec.models.gan`); the
audit starts at ``start_round``, or, with ``d_iter`` > 0, in the first round by
which the GAN has trained ``d_iter`` iterations
(:func:`fedsec.defenses.audit.first_audit_round`).  ``audit="inversion"`` replaces the generator by model
inversion of the global model (:func:`fedsec.defenses.inversion.invert_classes`),
the weaker alternative the paper compares against; no GAN is trained then.

The wrapped strategy aggregates only the kept clients' models, so the audit
composes with FedAvg, FedMedian, Krum or any other Flower strategy.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.serverapp.strategy import Strategy
from torch import nn

from fedsec.aggregation import mean_update_model
from fedsec.data import TensorSplit
from fedsec.defenses.audit import SCORES, audit, audit_set, first_audit_round, predict_all, train_gan
from fedsec.defenses.inversion import invert_classes
from fedsec.errors import ConfigError
from fedsec.experiment import derive_seed, torch_generator
from fedsec.models.gan import (
    GENERATOR_ARCHITECTURES,
    ImageGenerator,
    build_generator,
    discriminator_from,
    refresh_discriminator,
)
from fedsec.results import RunRecorder
from fedsec.training import set_weights
from strategies.wrapper import FilteringStrategy, GroundTruth, NDArrays, Verdict

__all__ = ["AUDIT_STREAM", "DISCRIMINATOR_INITS", "GENERATORS", "AuditStrategy", "parse_classes", "save_grid"]

logger = logging.getLogger(__name__)

#: Seed stream of the audit (generator/discriminator init, GAN batches, audit samples).
AUDIT_STREAM = 0x5D6A
#: Sub-streams of one round under :data:`AUDIT_STREAM`.
_GAN_TRAINING, _AUDIT_SAMPLES = 0, 1
#: Audit-data generators.
GENERATORS = ("gan", "inversion")
#: Where the discriminator starts each round: ``M_{t-1}`` (fedsec) or ``M_{t-1} + mean(u_t)`` (the paper).
DISCRIMINATOR_INITS = ("previous", "aggregate")
#: Images shown in the per-round PNG grid.
GRID_IMAGES = 32


def parse_classes(text: str, *, num_classes: int, key: str = "auxiliary-classes") -> tuple[int, ...]:
    """Parse ``"0,4"`` into ``(0, 4)``; empty text means every class.

    Raises
    ------
    ConfigError
        If an entry is not an integer in ``[0, num_classes)`` or repeats (the message names ``key``).
    """
    if not text.strip():
        return tuple(range(num_classes))
    classes: list[int] = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise ConfigError(
                f"config key {key!r} must be comma-separated class indices like '0,4', got {text!r}"
            ) from None
        if not 0 <= value < num_classes:
            raise ConfigError(
                f"config key {key!r}: class {value} is outside [0, {num_classes}), got {text!r}"
            )
        if value in classes:
            raise ConfigError(f"config key {key!r}: class {value} is listed twice in {text!r}")
        classes.append(value)
    return tuple(classes)


def save_grid(images: torch.Tensor, path: Path, *, columns: int = 8) -> Path:
    """Write up to :data:`GRID_IMAGES` images ``(n, C, H, W)`` in ``[0, 1]`` as one PNG grid."""
    from matplotlib.image import imsave  # imported here: only runs that write records need it

    shown = images[:GRID_IMAGES].detach().cpu().clamp(0.0, 1.0).numpy()
    n, channels, height, width = shown.shape
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (height + 1) + 1, cols * (width + 1) + 1, channels), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = 1 + r * (height + 1), 1 + c * (width + 1)
        grid[top : top + height, left : left + width] = shown[i].transpose(1, 2, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if channels == 1:
        imsave(path, grid[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        imsave(path, grid[:, :, :3])
    return path


class AuditStrategy(FilteringStrategy):
    """Drop the clients whose models disagree with the majority on generated audit data (PDGAN).

    Parameters
    ----------
    inner
        The strategy that aggregates the kept clients' models.
    generator
        ``"gan"`` (Algorithm 1) or ``"inversion"`` (model inversion of the global model).
    start_round
        The first audited round: rounds before it only train the GAN and keep
        every client; >= 1.  Ignored when ``d_iter`` > 0.
    d_iter
        The paper's ``d_iter`` in GAN iterations (>= 0): when > 0 the audit starts
        in round ``max(1, ceil(d_iter / gan_steps))``, the first round by which the
        GAN has trained ``d_iter`` iterations; ``"gan"`` only.  0: ``start_round``.
    theta
        ``θ`` in ``[0, 1]``: clients whose audit accuracy is below it are dropped.
    relative
        ``θ`` multiplies the round's median audit accuracy.
    consensus
        In ``[0, 1]``: score only the audit samples whose majority label at least
        this fraction of the round's clients predicts (0: every sample).
    per_class
        Score at most this many audit samples of each majority-vote class (0: all).
    score
        ``"accuracy"`` (the paper) or ``"worst-class"`` (a client's lowest per-class agreement).
    audit_size
        Generated audit samples per round (``"inversion"``: ``ceil(audit_size / K)``
        per class, so up to ``K - 1`` more); >= 1.
    model
        A model of the global architecture (a template: it is copied, never changed).
    model_name, input_shape, num_classes
        Its registry name, ``(C, H, W)`` input and number of classes ``K``.
    auxiliary
        The server's labelled auxiliary set (already restricted to the auxiliary
        classes); required and non-empty for ``"gan"``.
    gan_steps, gan_batch_size, gan_learning_rate, gan_class_balance
        GAN training per round (:func:`~fedsec.defenses.audit.train_gan`);
        ``gan_class_balance`` (>= 0) weights the term that spreads the
        generated samples over all classes.
    gan_generator
        The generator architecture, a name in
        :data:`~fedsec.models.gan.GENERATOR_ARCHITECTURES`: ``"fedsec"``
        (Linear + 2 transposed convolutions at the dataset's size) or ``"paper"``
        (4 transposed convolutions to 32×32, resized to the dataset's size).
    discriminator_init
        ``"previous"`` (``M_{t-1}``) or ``"aggregate"`` (``M_{t-1} + mean(u_t)``,
        Algorithm 1 line 6): the model the discriminator is refreshed from each round.
    inversion_steps, inversion_learning_rate
        Model inversion per audited round (:func:`~fedsec.defenses.inversion.invert_classes`).
    seed
        The run seed; every random draw comes from streams derived from it.
    out_dir
        Where ``audit/round-XXX.png`` grids of the audit images go; ``None`` writes none.
    latent_dim, base_channels
        Size of the generator (see :class:`~fedsec.models.gan.Generator`).
    recorder, truth
        As for :class:`~strategies.wrapper.FilteringStrategy`.
    device
        Where the GAN trains, the inversion runs and the clients' models are
        audited (the networks are moved there).  ``None``: the CPU.

    Raises
    ------
    ValueError
        If a parameter is invalid (the message names it).
    """

    def __init__(
        self,
        *,
        inner: Strategy,
        generator: str,
        start_round: int,
        theta: float,
        audit_size: int,
        model: nn.Module,
        relative: bool = False,
        consensus: float = 0.0,
        per_class: int = 0,
        score: str = "accuracy",
        model_name: str,
        input_shape: tuple[int, int, int],
        num_classes: int,
        auxiliary: TensorSplit | None,
        gan_steps: int = 100,
        gan_batch_size: int = 32,
        gan_learning_rate: float = 2e-4,
        gan_class_balance: float = 0.0,
        gan_generator: str = "fedsec",
        discriminator_init: str = "previous",
        d_iter: int = 0,
        inversion_steps: int = 100,
        inversion_learning_rate: float = 0.1,
        seed: int = 0,
        out_dir: Path | None = None,
        latent_dim: int = 100,
        base_channels: int = 64,
        recorder: RunRecorder | None = None,
        truth: GroundTruth | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__(inner=inner, name="audit", recorder=recorder, truth=truth)
        if generator not in GENERATORS:
            raise ValueError(f"generator must be one of {', '.join(GENERATORS)}, got {generator!r}")
        _check_int("start_round", start_round, 1)
        _check_unit("theta", theta)
        _check_int("audit_size", audit_size, 1)
        _check_unit("consensus", consensus)
        _check_int("per_class", per_class, 0)
        if score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch nn.Module, got {type(model).__name__}")
        _check_int("num_classes", num_classes, 2)
        _check_int("gan_steps", gan_steps, 1)
        _check_int("d_iter", d_iter, 0)
        if d_iter and generator != "gan":
            raise ValueError(f"d_iter counts GAN iterations: it needs generator='gan', got {generator!r}")
        if gan_generator not in GENERATOR_ARCHITECTURES:
            raise ValueError(
                f"gan_generator must be one of {', '.join(GENERATOR_ARCHITECTURES)}, got {gan_generator!r}"
            )
        if discriminator_init not in DISCRIMINATOR_INITS:
            raise ValueError(
                f"discriminator_init must be one of {', '.join(DISCRIMINATOR_INITS)}, "
                f"got {discriminator_init!r}"
            )
        _check_int("gan_batch_size", gan_batch_size, 1)
        _check_int("inversion_steps", inversion_steps, 1)
        _check_int("seed", seed, 0)
        for name, rate in (
            ("gan_learning_rate", gan_learning_rate),
            ("inversion_learning_rate", inversion_learning_rate),
        ):
            if (
                isinstance(rate, bool)
                or not isinstance(rate, int | float)
                or not math.isfinite(rate)
                or rate <= 0
            ):
                raise ValueError(f"{name} must be a finite number > 0, got {rate!r}")
        if (
            isinstance(gan_class_balance, bool)
            or not isinstance(gan_class_balance, int | float)
            or not math.isfinite(gan_class_balance)
            or gan_class_balance < 0
        ):
            raise ValueError(f"gan_class_balance must be a finite number >= 0, got {gan_class_balance!r}")
        if generator == "gan":
            if auxiliary is None or len(auxiliary) == 0:
                raise ValueError("auxiliary must be a non-empty labelled set for generator='gan'")
            if tuple(auxiliary.x.shape[1:]) != tuple(input_shape):
                raise ValueError(
                    f"auxiliary images have shape {tuple(auxiliary.x.shape[1:])}, "
                    f"input_shape is {tuple(input_shape)}"
                )
        self.generator_kind = generator
        self.d_iter = int(d_iter)
        self.start_round = first_audit_round(self.d_iter, int(gan_steps)) if d_iter else int(start_round)
        self.discriminator_init = discriminator_init
        self.theta = float(theta)
        self.relative = relative
        self.consensus = float(consensus)
        self.per_class = int(per_class)
        self.score = score
        self.audit_size = int(audit_size)
        self.model_name = model_name
        self.input_shape: tuple[int, int, int] = (
            int(input_shape[0]),
            int(input_shape[1]),
            int(input_shape[2]),
        )
        self.num_classes = int(num_classes)
        self.auxiliary = auxiliary
        self.gan_steps = int(gan_steps)
        self.gan_batch_size = int(gan_batch_size)
        self.gan_learning_rate = float(gan_learning_rate)
        self.gan_class_balance = float(gan_class_balance)
        self.inversion_steps = int(inversion_steps)
        self.inversion_learning_rate = float(inversion_learning_rate)
        self.seed = int(seed)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        # One copy holds the global model, one is the scratch model every client's weights go into.
        self._global = copy.deepcopy(model).to(self.device)
        self._scratch = copy.deepcopy(model).to(self.device)
        self.generator: ImageGenerator | None = None
        self.discriminator: nn.Module | None = None
        if generator == "gan":
            self.generator = build_generator(
                gan_generator,
                latent_dim=latent_dim,
                output_shape=self.input_shape,
                base_channels=base_channels,
                seed=derive_seed(self.seed, AUDIT_STREAM),
            ).to(self.device)

    def checkpoint_state(self) -> dict[str, Any]:
        """The generator's and the discriminator's weights (the GAN trains on across rounds)."""
        return {
            name: [t.detach().cpu().numpy().copy() for t in network.state_dict().values()]
            for name, network in (("generator", self.generator), ("discriminator", self.discriminator))
            if network is not None
        }

    def new_discriminator(self, source: nn.Module | None = None) -> nn.Module:
        """The ``K + 1``-class discriminator initialised from ``source`` (default: the global model)."""
        return discriminator_from(
            self._global if source is None else source,
            model_name=self.model_name,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            seed=derive_seed(self.seed, AUDIT_STREAM),
        ).to(self.device)

    def restore_state(self, state: dict[str, Any]) -> None:
        if "discriminator" in state and self.discriminator is None:
            self.discriminator = self.new_discriminator()
        for name, network in (("generator", self.generator), ("discriminator", self.discriminator)):
            if network is not None and name in state:
                set_weights(network, list(state[name]))

    def start_discriminator(self, updates: list[NDArrays]) -> nn.Module:
        """Refresh (or, the first time, build) the discriminator for this round and return it.

        Its shared layers and first ``K`` output rows become ``M_{t-1}`` (the global
        model, ``discriminator_init="previous"``) or ``M_{t-1} + mean(u_t)`` over the
        round's client models ``updates`` (``"aggregate"``); its "fake" row carries on.
        """
        previous = self.require_global()
        if self.discriminator_init == "aggregate":
            set_weights(self._scratch, mean_update_model(previous, updates))
            source = self._scratch
        else:
            set_weights(self._global, previous)
            source = self._global
        if self.discriminator is None:
            self.discriminator = self.new_discriminator(source)
        else:
            refresh_discriminator(self.discriminator, source)
        return self.discriminator

    def train_generator(self, server_round: int, updates: list[NDArrays]) -> dict[str, float]:
        """Refresh the discriminator (:meth:`start_discriminator`) and train the GAN one round; its losses."""
        assert self.generator is not None and self.auxiliary is not None
        self.start_discriminator(updates)
        assert self.discriminator is not None
        stats = train_gan(
            self.generator,
            self.discriminator,
            self.auxiliary,
            num_classes=self.num_classes,
            steps=self.gan_steps,
            batch_size=self.gan_batch_size,
            lr=self.gan_learning_rate,
            class_balance=self.gan_class_balance,
            rng=torch_generator(self.seed, AUDIT_STREAM, server_round, _GAN_TRAINING),
            device=self.device,
        )
        logger.debug(
            "round %s: GAN d_loss %s, g_loss %s, class entropy %s",
            server_round,
            stats.d_loss,
            stats.g_loss,
            stats.class_entropy,
        )
        return {"d_loss": stats.d_loss, "g_loss": stats.g_loss, "class_entropy": stats.class_entropy}

    def audit_data(self, server_round: int) -> torch.Tensor:
        """This round's unlabelled audit images ``(n, C, H, W)``."""
        rng = torch_generator(self.seed, AUDIT_STREAM, server_round, _AUDIT_SAMPLES)
        if self.generator is not None:
            return audit_set(self.generator, self.audit_size, rng=rng)
        return invert_classes(
            self._global,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            per_class=math.ceil(self.audit_size / self.num_classes),
            steps=self.inversion_steps,
            lr=self.inversion_learning_rate,
            rng=rng,
            device=self.device,
        ).x

    def predictions(self, updates: list[NDArrays], x: torch.Tensor) -> np.ndarray:
        """``int64 (k, n)``: each client's predicted labels on ``x``, one scratch model reused."""
        rows = np.empty((len(updates), len(x)), dtype=np.int64)
        for i, weights in enumerate(updates):
            set_weights(self._scratch, weights)
            rows[i] = predict_all([self._scratch], x)[0]
        return rows

    def select(self, server_round: int, labels: list[str], updates: list[NDArrays]) -> Verdict:
        if self.global_arrays is None:
            raise RuntimeError("configure_train must run before aggregate_train (no global model yet)")
        set_weights(self._global, self.global_arrays)
        record: dict[str, Any] = {"audit": self.generator_kind}
        if self.generator is not None:
            record["gan"] = self.train_generator(server_round, updates)
        if server_round < self.start_round:
            record["audit"] = "warm-up"
            logger.info(
                "round %s: PDGAN warm-up (audit starts at round %s), keeping all %s clients",
                server_round,
                self.start_round,
                len(updates),
            )
            return Verdict(kept=tuple(range(len(updates))), record=record)
        x = self.audit_data(server_round)
        result = audit(
            self.predictions(updates, x),
            theta=self.theta,
            relative=self.relative,
            consensus=self.consensus,
            per_class=self.per_class,
            score=self.score,
        )
        record["audit_accuracy"] = {label: float(result.accuracies[i]) for i, label in enumerate(labels)}
        record["audit_scored"] = result.scored
        # Which classes the audit set covers, by its majority-vote labels (what the audit can test).
        record["audit_label_counts"] = {str(c): int(n) for c, n in enumerate(np.bincount(result.labels)) if n}
        if self.out_dir is not None:
            path = save_grid(x, self.out_dir / "audit" / f"round-{server_round:03d}.png")
            logger.debug("round %s: audit images written to %s", server_round, path)
        logger.info(
            "round %s: PDGAN audit on %s samples kept %s, dropped %s",
            server_round,
            len(x),
            [labels[i] for i in result.kept],
            {labels[i]: reason for i, reason in result.dropped.items()},
        )
        return Verdict(kept=result.kept, dropped=dict(result.dropped), record=record)


def _check_unit(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
