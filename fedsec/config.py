"""Typed, frozen run configuration parsed once from Flower's run config.

Flower hands every ServerApp and ClientApp a flat ``run_config`` mapping of
kebab-case keys to ``bool | int | float | str``.  :class:`RunConfig` is the one
schema for those keys: each field's name is the key with ``-`` turned into
``_``, its default is the key's default (``pyproject.toml``'s
``[tool.flwr.app.config]`` repeats them, and a test keeps the two equal), and
its ``check`` (from :mod:`fedsec.config_values`) says which values are
allowed.  Unknown keys and bad values raise :class:`~fedsec.errors.ConfigError`
naming the key and what is allowed.

Names that live in registries outside this package (strategy, client role) are
checked where those registries live; dataset, model, optimizer and partitioner
names are checked here.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedsec.config_rules import combination_problem
from fedsec.config_values import (
    ConfigValue,
    _absolute_or_empty,
    _at_least,
    _attack_sizes,
    _choice,
    _coerce,
    _fraction,
    _half_open_fraction,
    _harnesses,
    _open_unit,
    _positive,
    _registry_names,
    _unit,
    _unit_interval,
    _zero_or_above_one,
)
from fedsec.errors import ConfigError

PARTITION_SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "pathological")

#: Values of the ``device`` key (resolved by :func:`fedsec.device.resolve_device`).
DEVICES = ("auto", "cpu", "cuda")


def _option(default: ConfigValue, help: str, check: Callable[[Any], str | None] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "check": check})


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Every setting of a fedsec run; build it with :meth:`from_run_config`."""

    # --- run
    scenario: str = _option("quickstart", "name of the scenario this run came from (for the records)")
    seed: int = _option(42, "the one seed every random choice derives from", _at_least(0))
    num_server_rounds: int = _option(5, "federated rounds", _at_least(1))
    out_dir: str = _option(
        "", "absolute directory for metrics.jsonl, summary.json and plots", _absolute_or_empty
    )
    torch_threads: int = _option(1, "intra-op threads per process (per simulated client)", _at_least(1))
    eval_threads: int = _option(
        0,
        "intra-op threads of the server's per-round evaluation (0: one per core this process may use); "
        "the clients wait while it runs",
        _at_least(0),
    )
    device: str = _option(
        "auto",
        "where models train and run: 'auto' (CUDA if this process sees a GPU, else the CPU), 'cpu' or "
        "'cuda' (an error without one)",
        _choice(*DEVICES),
    )
    client_resources_num_gpus: float = _option(
        0.0,
        "GPUs (a fraction shares one) Ray gives each simulated client; 0: clients see no GPU",
        _at_least(0),
    )
    round_timeout: float = _option(
        900.0,
        "seconds the server waits for clients' replies each round (a client still busy then counts as "
        "failed); 0 waits forever",
        _at_least(0),
    )
    node_wait: float = _option(
        5.0,
        "seconds the federation's node count must stay unchanged before the server uses or refuses it",
        _positive,
    )
    update_norm_bound: float = _option(
        100.0,
        "the guard rejects an update whose norm exceeds this multiple of the round's median update norm "
        "(or of the global model's norm + 1); 0: off, defenses see whatever attackers send",
        _zero_or_above_one,
    )
    num_examples_bound: float = _option(
        10.0,
        "the guard clamps a reported num-examples above this multiple of the round's median; 0: off",
        _zero_or_above_one,
    )
    plugins: str = _option(
        "", "comma-separated modules to import first; they register models, datasets, roles, strategies"
    )
    resume: bool = _option(
        False, "continue the run in out-dir from its checkpoint (set by `fedsec run --resume OUT`)"
    )
    sweep: str = _option("", "a scenario's sweep 'KEY=V1,V2,...' (such scenarios run through `fedsec run`)")
    sweep_table: str = _option("", "title of a sweep's or variants' comparison table")
    variants: str = _option(
        "", "a scenario's file of [variants.*] / [defenses.*] runs (such scenarios run through `fedsec run`)"
    )
    seeds: str = _option(
        "",
        "seeds every run of a scenario repeats at, e.g. '42,1,2' (`fedsec run`; tables report mean ± std)",
    )
    # --- data
    dataset: str = _option("mnist-5k", "dataset name (see fedsec.data.DATASETS)")
    data_root: str = _option("", "directory holding dataset files, for datasets that need one")
    csv_label_column: str = _option("label", "label column of a 'csv' dataset")
    csv_feature_columns: str = _option(
        "", "comma-separated feature columns of a 'csv' dataset (empty: all others)"
    )
    partitioning: str = _option("iid", "how client data is split", _choice(*PARTITION_SCHEMES))
    dirichlet_alpha: float = _option(0.5, "concentration of the Dirichlet label split", _positive)
    classes_per_partition: int = _option(2, "classes per client for the pathological split", _at_least(1))
    validation_size: int = _option(200, "server-held validation examples carved from train", _at_least(0))
    auxiliary_size: int = _option(0, "server-held auxiliary examples (PDGAN)", _at_least(0))
    clean_size: int = _option(0, "server-held clean examples (server-side distillation)", _at_least(0))
    # --- model and local training
    model: str = _option("lenet", "model name (see fedsec.models.MODELS)")
    optimizer: str = _option("sgd", "client optimizer (see fedsec.training.OPTIMIZERS)")
    learning_rate: float = _option(0.05, "client learning rate", _positive)
    momentum: float = _option(0.9, "SGD momentum", _at_least(0))
    weight_decay: float = _option(0.0, "L2 weight decay", _at_least(0))
    local_epochs: int = _option(2, "local epochs per round", _at_least(1))
    batch_size: int = _option(32, "local batch size", _at_least(1))
    eval_batch_size: int = _option(500, "batch size for evaluation", _at_least(1))
    # --- federation and aggregation
    num_clients: int = _option(
        0, "clients (simulated SuperNodes / partitions); 0: every node the federation has", _at_least(0)
    )
    fraction_fit: float = _option(1.0, "fraction of clients sampled for training each round", _fraction)
    fraction_evaluate: float = _option(0.0, "fraction of clients asked for local evaluation", _at_least(0))
    strategy: str = _option("fedavg", "server strategy (see strategies.STRATEGIES)")
    num_malicious_clients: int = _option(0, "f assumed by Krum/Multi-Krum/Bulyan", _at_least(0))
    multikrum_keep: int = _option(0, "updates Multi-Krum averages; 0 keeps n - f", _at_least(0))
    trim_beta: float = _option(0.2, "fraction trimmed from each end by FedTrimmedAvg", _half_open_fraction)

    # --- roles, caches and evaluation under attack
    roles: str = _option("", "client roles by partition, e.g. 'fda3-device:0-9' (unlisted: benign)")
    cache_dir: str = _option(
        "", "absolute cache directory (empty: $FEDSEC_CACHE or ~/.cache/fedsec)", _absolute_or_empty
    )
    pretrain_epochs: int = _option(
        0, "epochs of clean pre-training of the initial model (cached)", _at_least(0)
    )
    eval_attacks: str = _option(
        "", "attacks for robust test sets against the initial model, e.g. 'fgsm,simba'"
    )
    pretrain_size: int = _option(
        0,
        "training examples held out for pre-training only, never on a client "
        "(0: pre-train on the clients' training data)",
        _at_least(0),
    )
    eval_attack_size: int = _option(100, "held-out test images per adversarial test set", _at_least(1))
    eval_attack_sizes: str = _option(
        "", "per-attack test-set sizes overriding eval-attack-size, e.g. 'simba=500,cw2=500'", _attack_sizes
    )
    attack_params: str = _option("", "attack parameter overrides, e.g. 'cw2.max_iter=10,simba.max_iter=300'")
    # --- FDA³ (Song et al.)
    fda3_assign: str = _option("even:fgsm+bim+jsma+cw2+deepfool", "attack schemes per device (AttackMonitor)")
    fda3_new_attacks: str = _option("", "schemes added mid-run, e.g. 'pgd@10:0-1;simba@20:3'")
    fda3_alpha: float = _option(0.5, "weight of the natural loss in α·CE(nat)+(1-α)·CE(adv)", _unit_interval)
    fda3_buffer_size: int = _option(
        100, "natural examples a device keeps for adversarial training", _at_least(1)
    )
    fda3_confidence: float = _option(
        0.9, "prediction confidence a natural example needs to enter the buffer", _unit
    )
    fda3_batch_size: int = _option(100, "pairs per gradient a device sends each round", _at_least(1))
    fda3_baselines: bool = _option(False, "also train and table None / X+AdvTrain / ALL+AdvTrain at the end")
    fda3_buffer_labels: str = _option(
        "predicted",
        "buffer of confident naturals: 'predicted' (paper: the model's labels) or 'verified' "
        "(only those it gets right, true labels)",
        _choice("predicted", "verified"),
    )
    fda3_baseline_epochs: int = _option(
        50,
        "epochs of local training for X+AdvTrain / ALL+AdvTrain (paper: 50); "
        "0: one step per server round only",
        _at_least(0),
    )
    fda3_white_box: str = _option(
        "none",
        "white-box rows in the FDA3 table: 'none', 'final' (FL+AdvTrain) or 'all' (every trained model)",
        _choice("none", "final", "all"),
    )
    fda3_white_box_size: int = _option(
        100, "held-out test images per white-box cell of the FDA3 table", _at_least(1)
    )
    server_learning_rate: float = _option(0.001, "server Adam learning rate (FDA³)", _positive)
    server_beta1: float = _option(0.9, "server Adam β1", _unit)
    server_beta2: float = _option(0.999, "server Adam β2", _unit)

    # --- DiPSeN (Ibitoye et al.) and white-box robustness of the final model
    dipsen_sigma: float = _option(0.1, "DiPSeN noise multiplier σ (noise std = sensitivity·σ)", _at_least(0))
    dipsen_sensitivity: float = _option(
        1.0,
        "DiPSeN S_f: a constant that scales the noise (std = S_f·σ); the paper calls it block 1's "
        "sensitivity, but nothing bounds block 1's output, so it is no sensitivity bound",
        _positive,
    )
    dipsen_dropout: float = _option(0.05, "DiPSeN AlphaDropout rate", _unit)
    dipsen_test_noise: bool = _option(
        True, "DiPSeN's noise layer stays on at inference and under attack (the paper); false: training only"
    )
    dp_sgd_clip: float = _option(
        0.0,
        "DiPSeN clients train with DP-SGD (Abadi et al.; the paper's Alg. 1): clip each per-sample "
        "gradient to this L2 norm C and add N(0, (σ·C)²) to the batch sum; 0: plain SGD",
        _at_least(0),
    )
    dp_sgd_noise: float = _option(
        1.0, "DP-SGD noise multiplier σ (noise std σ·C on the summed gradient)", _at_least(0)
    )
    dp_sgd_delta: float = _option(1e-5, "δ at which DP-SGD's ε is reported (RDP accountant)", _open_unit)
    robust_attacks: str = _option("", "white-box attacks on the final model, e.g. 'fgsm,bim,pgd'")
    robust_harness: str = _option(
        "logits",
        "comma-separated attack harnesses for robust-attacks: 'logits' (cross-entropy on logits, fedsec's "
        "steps) and/or 'paper' (DiPSeN §VI-E: clipped-softmax cross-entropy, ART's default steps, PGD "
        "without random start; fgsm, bim, pgd only)",
        _harnesses,
    )
    robust_eot_samples: int = _option(
        0, "also attack with gradients averaged over this many passes (0: off)", _at_least(0)
    )
    measure_overhead: bool = _option(False, "time a training step of this model and of its basic counterpart")

    # --- poisoning attacks (Chen et al. multi-party; backdoors for the defenses)
    variant: str = _option("", "this run's variant name (row label in comparison tables); set by scenarios")
    defense: str = _option("", "this run's defense name (column label in attack × defense tables)")
    attack_source: int = _option(5, "class the targeted/label-flip attacks poison (source)", _at_least(0))
    attack_target: int = _option(7, "class the adversary wants (target of flips and backdoors)", _at_least(0))
    targeted_samples: int = _option(
        0,
        "stealthy attacks aim at this many chosen source-class test images (0: the whole class)",
        _at_least(0),
    )
    attack_start_round: int = _option(
        1, "first round malicious clients attack (before it they train honestly)", _at_least(1)
    )
    attack_end_round: int = _option(
        0,
        "last round malicious clients attack (after it they train honestly again; 0: to the end). "
        "Equal to attack-start-round: a single-round attack",
        _at_least(0),
    )
    poison_fraction: float = _option(
        1.0, "fraction of source-class (flip) or all (trigger) samples an attacker poisons", _unit_interval
    )
    boost_factor: float = _option(10.0, "λ of boosted model replacement (update × λ)", _positive)
    boost_estimate: bool = _option(
        False,
        "boosted, and data poisoners with poison-scale != 1: poison from the attacker's own honest update "
        "(Bhagoji et al.'s estimate of the others') and scale only the poisoned part",
    )
    stealth_lambdas: str = _option(
        "1,2,4,8,16,32", "candidate boosts λ_m of the targeted step; the largest within the bounds is used"
    )
    targeted_epochs: int = _option(
        5, "epochs of the stealthy attackers' step on the targeted samples", _at_least(1)
    )
    stealth_steps: int = _option(5, "descent steps of the stealthy attackers' malicious step", _at_least(1))
    stealth_step: float = _option(
        0.1, "length of each malicious step, as a fraction of the benign estimate's norm", _positive
    )
    stealth_penalty: float = _option(
        1.0, "p: weight of the cosine penalty 1 − cos(δ_m, δ_benign)", _at_least(0)
    )
    stealth_objective: str = _option(
        "boosted-step",
        "stealthy attackers: 'boosted-step' (benign estimate + λ·malicious step, alternating minimisation) "
        "or 'eq4' (Chen et al.'s Eq. 4 as written: SGD on λ·F(D_tar) + F(D_m) + p·(1 − cos), "
        "then projection onto the L2 bound)",
        _choice("boosted-step", "eq4"),
    )
    eq4_normalise: bool = _option(
        True,
        "eq4: divide the loss by 1 + λ (same minimiser, one SGD step size for every λ); "
        "false: the plain sum at learning-rate, whose steps grow with λ",
    )
    l2_bound: float = _option(
        0.0,
        "C: max L2 distance of a stealthy update to each benign one (0: the benign updates' own spread)",
        _at_least(0),
    )
    accuracy_slack: float = _option(
        0.05, "stealthy attackers keep local accuracy within this of the benign estimate's", _unit_interval
    )
    perfect_knowledge_hook: bool = _option(
        False, "simulation-only hook: colluders may compute the round's benign updates (PK, LK subset)"
    )
    lk_known_clients: int = _option(
        0,
        "limited knowledge: benign updates a colluder sees via the hook (0: estimate from history)",
        _at_least(0),
    )
    lk_draw: str = _option(
        "first",
        "limited knowledge: which lk-known-clients benign clients, 'first' (the same ones every round) "
        "or 'random' (drawn anew each round from the run seed and round, as in Chen et al.)",
        _choice("first", "random"),
    )
    trigger: str = _option("square", "backdoor trigger pattern", _choice("square", "dba"))
    trigger_size: int = _option(4, "trigger side/bar length in pixels", _at_least(1))
    dba_parts: int = _option(4, "pieces the DBA global trigger is split into", _at_least(1))
    scale_factor: float = _option(
        0.0, "constrain-and-scale γ (0: n/η = clients sampled per round)", _at_least(0)
    )
    poison_epochs: int = _option(
        0,
        "local epochs of data-poisoning attackers (label-flip, badnets, dba, clean-label) and of boosted; "
        "0: local-epochs. Other than 0 they control their training and skip the edge defense",
        _at_least(0),
    )
    poison_scale: float = _option(
        1.0,
        "data-poisoning attackers send their update × this (model replacement); "
        "other than 1 they control their training and skip the edge defense",
        _positive,
    )
    anomaly_weight: float = _option(
        0.3, "constrain-and-scale: weight of the anomaly (distance-to-global) loss term", _unit
    )
    clean_label_eps: float = _option(
        0.3, "clean-label backdoor: PGD ε of the target-class perturbation", _positive
    )
    clean_label_iterations: int = _option(10, "clean-label backdoor: PGD iterations", _at_least(1))
    clean_label_copies: int = _option(
        1, "clean-label backdoor: poisons made from each target-class image (PGD random starts)", _at_least(1)
    )
    # --- server detectors (Chen et al.)
    detectors: str = _option("", "server detectors to apply, e.g. 'accuracy,l2,cosine' (empty: only measure)")
    detectors_drop: bool = _option(True, "drop flagged updates (false: only flag and record them)")
    calibration_rounds: int = _option(
        0, "rounds whose updates calibrate detector thresholds (nothing is flagged in them)", _at_least(0)
    )
    detector_margin: float = _option(
        0.1, "calibrated thresholds are widened by this fraction of the calibrated value", _at_least(0)
    )
    accuracy_gamma: float = _option(
        0.0,
        "accuracy check: flag if acc(w+δ_i) < acc(w+δ_others) − γ (0: calibrate)",
        _at_least(0),
    )
    l2_ratio_threshold: float = _option(
        0.0, "L2 check: flag if ‖δ_i‖ / median ‖δ‖ exceeds this (0: calibrate)", _at_least(0)
    )
    cosine_gap: float = _option(
        0.0,
        "cosine check: flag if cos(δ_i, Σ others) is this far below the round's median (0: calibrate)",
        _at_least(0),
    )
    # --- layered backdoor defense (edge ABL + distillation; server cosine/HDBSCAN + distillation)
    edge_defense: str = _option(
        "", "edge defense of clients that control their training", _choice("", "abl", "abl+distill")
    )
    abl_isolation_epochs: int = _option(1, "ABL: epochs of loss-threshold (LGA) training", _at_least(1))
    abl_gamma: float = _option(0.5, "ABL: loss threshold γ of sign(L − γ)·L", _at_least(0))
    abl_fraction: float = _option(0.1, "ABL: fraction ρ of lowest-loss samples isolated", _unit)
    abl_unlearning_epochs: int = _option(
        1, "ABL: epochs of gradient ascent on the isolated set", _at_least(1)
    )
    abl_unlearning_lr: float = _option(
        0.0005, "ABL: SGD learning rate of the unlearning (ascent) phase", _positive
    )
    abl_schedule: str = _option(
        "every-round",
        "ABL schedule: 'every-round' (LGA, isolation and unlearning in every round) or 'phased' (Eq. 9: "
        "LGA training in rounds 1..abl-isolation-rounds, then clean training + unlearning on the isolated "
        "set, kept in the node's state)",
        _choice("every-round", "phased"),
    )
    abl_isolation_rounds: int = _option(
        5, "ABL, phased schedule: T_te, the rounds of LGA training before unlearning starts", _at_least(0)
    )
    layered_drop_negative: bool = _option(
        True, "layered: drop updates with negative cosine to the last global update"
    )
    layered_cluster: bool = _option(True, "layered: keep only the HDBSCAN majority cluster")
    layered_min_samples: int = _option(
        0,
        "layered: HDBSCAN min_samples (0: the cluster size, as scikit-learn; 1: single linkage, as FLAME)",
        _at_least(0),
    )
    layered_clip: bool = _option(
        False, "layered: clip kept updates to the round's median update norm (as FLAME; not in the paper)"
    )
    server_distill: bool = _option(
        False, "fine-tune each aggregate with attention distillation on the clean set"
    )
    distill_delta: float = _option(1.0, "weight δ of the self-attention distillation loss", _at_least(0))
    distill_epochs: int = _option(1, "epochs of distillation (edge and server)", _at_least(1))
    server_distill_epochs: int = _option(
        0, "epochs of server-side distillation (0: distill-epochs)", _at_least(0)
    )
    distill_learning_rate: float = _option(
        0.01, "SGD learning rate (no momentum) of self-attention distillation (edge and server)", _positive
    )
    foolsgold_kappa: float = _option(1.0, "FoolsGold logit confidence κ", _positive)
    flame_noise: float = _option(0.001, "FLAME noise level λ (noise std = λ · median norm)", _at_least(0))
    # --- PDGAN (Zhao et al.)
    malicious_per_round: int = _option(
        0,
        "sample exactly this many malicious clients per round (an experiment control; 0: uniform sampling)",
        _at_least(0),
    )
    audit: str = _option("", "audit clients with generated data", _choice("", "gan", "inversion"))
    audit_start_round: int = _option(5, "d_iter: first round the audit may drop clients", _at_least(1))
    audit_threshold: float = _option(
        0.5, "θ: clients whose audit accuracy is below this are dropped", _unit_interval
    )
    audit_relative: bool = _option(
        False, "θ is relative: drop clients below θ × the round's median audit accuracy"
    )
    audit_consensus: float = _option(
        0.0,
        "score only audit samples whose majority label this fraction of the clients predicts (0: all)",
        _unit_interval,
    )
    audit_per_class: int = _option(
        0, "score at most this many audit samples of each majority-vote class (0: all)", _at_least(0)
    )
    audit_score: str = _option(
        "accuracy",
        "audit score: agreement with the vote overall (the paper) or on the client's worst class",
        _choice("accuracy", "worst-class"),
    )
    audit_size: int = _option(200, "generated audit samples per round", _at_least(1))
    auxiliary_classes: str = _option("", "classes the server's auxiliary set keeps, e.g. '0,4' (empty: all)")
    gan_steps: int = _option(100, "GAN training steps per round", _at_least(1))
    gan_batch_size: int = _option(32, "GAN batch size", _at_least(1))
    gan_learning_rate: float = _option(0.0002, "GAN Adam learning rate", _positive)
    gan_class_balance: float = _option(
        0.0,
        "weight of the CatGAN class-balance term that makes the generator cover every class (0: plain GAN)",
        _at_least(0),
    )
    gan_generator: str = _option(
        "fedsec",
        "GAN generator: fedsec's (Linear + 2 transposed convs at the data's size) or the paper's "
        "(4 transposed convs to 32x32, resized to the data's size)",
        _choice("fedsec", "paper"),
    )
    gan_discriminator_init: str = _option(
        "previous",
        "discriminator start each round: previous global model M(t-1), or M(t-1) + mean client update "
        "(the paper's Alg. 1)",
        _choice("previous", "aggregate"),
    )
    gan_d_iter: int = _option(
        0,
        "d_iter in GAN iterations: audit from the first round by which the GAN trained this many "
        "(ceil(d_iter / gan-steps); overrides audit-start-round; 0: off)",
        _at_least(0),
    )
    inversion_steps: int = _option(100, "model-inversion ascent steps", _at_least(1))
    inversion_learning_rate: float = _option(0.1, "model-inversion Adam learning rate", _positive)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def keys(cls) -> dict[str, dataclasses.Field[Any]]:
        """The kebab-case keys this schema accepts, mapped to their fields."""
        return {f.name.replace("_", "-"): f for f in dataclasses.fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, ConfigValue]:
        """Every key with its default value (what ``pyproject.toml`` must list)."""
        return {key: f.default for key, f in cls.keys().items()}  # type: ignore[misc]

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Parse and validate Flower's run config (kebab-case keys).

        Raises
        ------
        ConfigError
            For an unknown key, a value of the wrong type, or a value outside
            what the key allows; the message names the key.
        """
        fields = cls.keys()
        values: dict[str, Any] = {}
        for key, raw in run_config.items():
            spec = fields.get(key)
            if spec is None:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown config key {key!r}{hint}; `fedsec keys` lists the known keys")
            values[spec.name] = _coerce(key, raw, type(spec.default))
        config = cls(**values)
        config._check()
        return config

    def _check(self) -> None:
        from fedsec.plugins import load_plugins

        load_plugins(self.plugins)
        for key, spec in self.keys().items():
            value = getattr(self, spec.name)
            check = spec.metadata["check"]
            problem = check(value) if check is not None else None
            if problem is not None:
                raise ConfigError(f"config key {key!r} must be {problem}, got {value!r}")
        for key, kind in (("dataset", "dataset"), ("model", "model"), ("optimizer", "optimizer")):
            names = _registry_names(kind)
            if getattr(self, key) not in names:
                raise ConfigError(
                    f"config key {key!r} must be one of: {', '.join(names)}, got {getattr(self, key)!r}"
                )

        problem = combination_problem(self)
        if problem is not None:
            raise ConfigError(problem)

    def attacks_in(self, server_round: int) -> bool:
        """Whether malicious clients attack in ``server_round`` (``attack-start-round`` to ``-end-round``)."""
        end = self.attack_end_round
        return server_round >= self.attack_start_round and (end == 0 or server_round <= end)

    def to_run_config(self) -> dict[str, ConfigValue]:
        """The kebab-case mapping Flower expects (inverse of :meth:`from_run_config`)."""
        return {key: getattr(self, f.name) for key, f in self.keys().items()}

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with some fields changed (snake_case names)."""
        updated = dataclasses.replace(self, **changes)
        updated._check()
        return updated
