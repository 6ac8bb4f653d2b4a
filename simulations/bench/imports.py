"""Section 4b, imports: what a client process holds after each import, in a fresh interpreter.

A simulated client is a Ray actor that imports fedsec's ClientApp; the libraries only some
roles need (ART for clients that craft adversarial examples, ``torchvision.models`` for the
ResNet, flwr-datasets for partitioning without the on-disk cache) are imported on first use.
The steps run one after the other in one child process, so each row's RSS includes every
step above it; the rows marked ``+`` are the libraries imported on first use, so the last row
shows what a client would hold if it imported them eagerly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from simulations.bench.common import Context

__all__ = ["HEAVY", "STEPS", "bench_imports", "import_steps"]

#: (step, the statement it runs), cumulative.
STEPS: tuple[tuple[str, str], ...] = (
    ("interpreter", ""),
    ("numpy", "import numpy"),
    ("torch", "import torch"),
    ("flwr", "import flwr.app, flwr.clientapp"),
    ("fedsec ClientApp", "import simulations.client_app"),
    # torch's Optimizer methods are wrapped in torch._disable_dynamo, which imports torch._dynamo
    # (and sympy) on the first call: every client that trains pays it.
    (
        "first torch optimizer",
        "torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1).zero_grad()",
    ),
    ("+ ART (attacking roles)", "import fedsec.attacks.evasion"),
    ("+ torchvision.models (ResNet)", "import torchvision.models"),
    ("+ flwr-datasets (no partition cache)", "import flwr_datasets"),
)

#: Libraries whose first appearance in ``sys.modules`` each row names.
HEAVY = (
    "torch",
    "torchvision",
    "art",
    "sklearn",
    "scipy",
    "pandas",
    "pyarrow",
    "datasets",
    "flwr_datasets",
    "matplotlib",
    "seaborn",
    "sympy",
)

#: Shared libraries of torch's CUDA build, mapped even where there is no GPU.
_CUDA_LIBRARY = ("/nvidia/", "libcu", "libnv", "cuda", "cudnn")

_CHILD = r"""
import json, sys, time
steps, heavy, cuda = json.loads(sys.argv[1])

def status_kb(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0

def cuda_kb():
    total, counting = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                path = head[5] if len(head) > 5 else ""
                counting = any(part in path for part in cuda)
            elif counting and line.startswith("Rss:"):
                total += int(head[1])
    return total

seen = set()
for step, statement in steps:
    started = time.perf_counter()
    exec(statement)
    seconds = time.perf_counter() - started
    loaded = [name for name in heavy if name in sys.modules and name not in seen]
    seen.update(loaded)
    row = {"step": step, "statement": statement, "rss_kb": status_kb("VmRSS"), "seconds": seconds,
           "loaded": loaded, "cuda_kb": cuda_kb()}
    print(json.dumps(row), flush=True)
"""


def import_steps(
    steps: tuple[tuple[str, str], ...] = STEPS, *, timeout: float = 300.0
) -> list[dict[str, Any]]:
    """Run ``steps`` in one fresh interpreter (this one's executable, the project on its path) and return
    one row per step: ``step``, ``statement``, ``rss_mb`` (cumulative), ``added_mb``, ``seconds``,
    ``loaded`` (the :data:`HEAVY` libraries that step brought in, comma-separated) and ``cuda_mb``
    (resident pages of CUDA libraries).

    Raises
    ------
    RuntimeError
        If the child fails (an import error names the library to install).
    """
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps([list(steps), list(HEAVY), list(_CUDA_LIBRARY)])],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=root,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"import steps failed (exit {done.returncode}): {done.stderr.strip()[-600:]}")
    rows: list[dict[str, Any]] = []
    previous = 0.0
    for line in done.stdout.splitlines():
        if not line.startswith("{"):
            continue
        raw = json.loads(line)
        rss = raw["rss_kb"] / 1024
        rows.append(
            {
                "step": raw["step"],
                "statement": raw["statement"] or "–",
                "rss_mb": round(rss, 1),
                "added_mb": round(rss - previous, 1) if rows else None,
                "seconds": round(raw["seconds"], 3),
                "loaded": ", ".join(raw["loaded"]) or "–",
                "cuda_mb": round(raw["cuda_kb"] / 1024, 1),
                "status": "ok",
            }
        )
        previous = rss
    if len(rows) != len(steps):
        raise RuntimeError(f"import steps: {len(rows)} of {len(steps)} rows came back: {done.stderr[-600:]}")
    return rows


def bench_imports(ctx: Context) -> list[dict[str, Any]]:
    """Section 4b: RSS of a fresh client process after each of :data:`STEPS`."""
    ctx.say("imports: a fresh interpreter importing what a client process imports, step by step")
    try:
        return import_steps()
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        return [{"step": "all", "status": f"failed: {error}"[:300]}]
