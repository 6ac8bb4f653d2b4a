"""Section 3, attacks: seconds per 100 images for each evasion attack, against plain torch or ART.

fedsec's attacks run through :func:`fedsec.attacks.evasion.generate`; FGSM, BIM
and PGD are compared with the same attack in a few lines of batched torch
(:func:`fedsec.bench.plain_fgsm`, :func:`fedsec.bench.plain_pgd`), CW-L2,
DeepFool and JSMA with ART at its default batch size.
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsec.bench import measure_samples, per_100, plain_fgsm, plain_pgd, ratio
from simulations.bench.common import MNIST_SHAPE, NUM_CLASSES, Context, rounded, scenario_config

#: Seconds per 100 images at batch size 100 on an idle 2-core machine (ENVIRONMENT.md), and at
#: ART's default batch size: the starting point of the attack section's time predictions.
EXPECTED_PER_100 = {
    "fgsm": 0.012,
    "bim": 0.45,
    "pgd": 0.45,
    "jsma": 1.4,
    "deepfool": 5.7,
    "cw2": 13.0,
    "simba": 48.0,
}
EXPECTED_ART_DEFAULT_PER_100 = {"jsma": 4.9, "deepfool": 29.0, "cw2": 53.0}


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients, as fedsec's ``generate`` runs attacks; restored on exit."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        model.train(was_training)
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def attack_model(*, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """LeNet-5 trained one epoch on MNIST-5k, and the first 100 test images with labels."""
    from fedsec.experiment import load_bundle, torch_generator
    from fedsec.models import build_model
    from fedsec.training import make_optimizer, train

    config = scenario_config({"model": "lenet"})
    bundle = load_bundle(config)
    model = build_model("lenet", input_shape=bundle.input_shape, num_classes=bundle.num_classes, seed=seed)
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.05, momentum=0.9)
    train(
        model,
        bundle.train.x,
        bundle.train.y,
        epochs=1,
        batch_size=32,
        optimizer=optimizer,
        generator=torch_generator(seed, 0),
    )
    model.eval()
    return model, bundle.test.x[:100].clone(), bundle.test.y[:100].clone()


def art_default_reference(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[Callable[[], object], int]:
    """fedsec's own runner for ``name`` (same ART class and parameters) at ART's default batch size."""
    import inspect

    from art.attacks.evasion import CarliniL2Method, DeepFool, SaliencyMapMethod

    from fedsec.attacks.evasion import ATTACKS, art_classifier

    art_classes = {"cw2": CarliniL2Method, "deepfool": DeepFool, "jsma": SaliencyMapMethod}
    if name not in art_classes:
        raise ValueError(f"no ART-default reference for attack {name!r}")
    default_batch = int(inspect.signature(art_classes[name]).parameters["batch_size"].default)
    spec = ATTACKS[name]
    clf = art_classifier(model, input_shape=MNIST_SHAPE, num_classes=NUM_CLASSES)
    x_np = x.numpy().astype(np.float32)
    y_np = y.numpy()
    return (lambda: spec.run(clf, x_np, y_np, spec.defaults, default_batch)), default_batch


def _time_attack(fn: Callable[[], object], *, cheap_repeat: int = 5, cheap_below: float = 1.0) -> float:
    """Median seconds: one call, then more (up to ``cheap_repeat``) if a call is under ``cheap_below`` s."""
    samples = measure_samples(fn, repeat=1)
    if samples[0] < cheap_below:
        samples += measure_samples(fn, repeat=cheap_repeat - 1)
    return float(statistics.median(samples))


def bench_attacks(ctx: Context) -> list[dict[str, Any]]:
    """Section 3: seconds per 100 images per attack, against plain torch or ART's default batch size."""
    from fedsec.attacks.evasion import ATTACKS, generate

    plan = ctx.plan
    if not ctx.budget.allows(15.0):
        return [{"attack": name, "images": None, "status": "skipped (budget)"} for name in ATTACKS]
    ctx.say("attacks: training LeNet-5 one epoch on MNIST-5k")
    model, x_all, y_all = attack_model()
    plain: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "fgsm": lambda x, y: plain_fgsm(model, x, y, eps=float(ATTACKS["fgsm"].defaults["eps"])),
        "bim": lambda x, y: plain_pgd(
            model,
            x,
            y,
            eps=float(ATTACKS["bim"].defaults["eps"]),
            eps_step=float(ATTACKS["bim"].defaults["eps_step"]),
            max_iter=int(ATTACKS["bim"].defaults["max_iter"]),
            random_init=False,
        ),
        "pgd": lambda x, y: plain_pgd(
            model,
            x,
            y,
            eps=float(ATTACKS["pgd"].defaults["eps"]),
            eps_step=float(ATTACKS["pgd"].defaults["eps_step"]),
            max_iter=int(ATTACKS["pgd"].defaults["max_iter"]),
            generator=torch.Generator().manual_seed(0),
        ),
    }
    measured: dict[str, dict[str, Any]] = {}
    slowdowns: list[float] = []  # measured / expected seconds of the attacks run so far

    def predict(per_100_idle: float, images: int) -> float:
        factor = max(1.0, statistics.median(slowdowns)) if slowdowns else 1.0
        single = per_100_idle * images / 100 * factor
        return single * 5 if single < 1.0 else single  # cheap calls are repeated (see _time_attack)

    # Cheapest first, so that a tight deadline drops the costly ones, which are predicted from the
    # machine's measured slowdown against ENVIRONMENT.md's idle figures.
    for name in sorted(ATTACKS, key=lambda a: EXPECTED_PER_100.get(a, 10.0)):
        images = plan.simba_images if name == "simba" else plan.attack_images
        x, y = x_all[:images], y_all[:images]
        row: dict[str, Any] = {
            "attack": name,
            "images": images,
            "batch_size": 1 if name == "simba" else 100,
            "seconds": None,
            "per_100_s": None,
            "reference": None,
            "reference_images": None,
            "reference_per_100_s": None,
            "ratio": None,
            "status": "ok",
            "note": f"measured on {images} images, scaled to 100" if images != 100 else "",
        }
        measured[name] = row
        idle = EXPECTED_PER_100.get(name, 10.0)
        predicted = predict(idle, images)
        if not ctx.budget.allows(predicted):
            row["status"] = f"skipped (budget; ~{predicted:.0f}s predicted)"
            continue
        ctx.say(f"attacks: {name} on {images} images")
        seconds = _time_attack(
            lambda name=name, x=x, y=y: generate(name, model, x, y, num_classes=NUM_CLASSES, seed=0)  # type: ignore[misc]
        )
        if idle * images / 100 >= 0.1:  # too short a run says little about the machine's speed
            slowdowns.append(seconds / (idle * images / 100))
        row["seconds"] = round(seconds, 4)
        row["per_100_s"] = round(per_100(seconds, images), 4)
        reference_per_100: float | None = None
        if name in plain:
            row["reference"] = "plain batched torch"
            row["reference_images"] = images
            with frozen(model):
                ref = _time_attack(lambda name=name, x=x, y=y: plain[name](x, y))  # type: ignore[misc]
            reference_per_100 = per_100(ref, images)
        elif name in EXPECTED_ART_DEFAULT_PER_100:
            ref_images = min(plan.art_default_images, len(x_all))
            predicted = predict(EXPECTED_ART_DEFAULT_PER_100[name], ref_images)
            if ctx.budget.allows(predicted):
                ctx.say(f"attacks: {name} through ART at its default batch size on {ref_images} images")
                with frozen(model):
                    fn, size = art_default_reference(name, model, x_all[:ref_images], y_all[:ref_images])
                    ref = _time_attack(fn)
                row["reference"] = f"ART default batch_size={size}"
                row["reference_images"] = ref_images
                reference_per_100 = per_100(ref, ref_images)
                if ref_images != 100:
                    row["note"] = (row["note"] + "; " if row["note"] else "") + (
                        f"reference on {ref_images} images, scaled to 100"
                    )
            else:
                row["reference"] = f"ART default batch size: skipped (budget; ~{predicted:.0f}s predicted)"
        if reference_per_100 is not None:
            row["reference_per_100_s"] = round(reference_per_100, 4)
            row["ratio"] = rounded(ratio(row["per_100_s"], reference_per_100), 3)
    return [measured[name] for name in ATTACKS]
