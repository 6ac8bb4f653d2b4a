"""Tables of a poisoning run, from its per-round records (Chen et al.'s Tables 2 and 3 and curves).

Each run contributes one row, named after its variant (``PK``, ``LK``,
``SNAL2``, ``SAnoDC``, ``none``), so a variant scenario's merged tables put the
attackers side by side, one column per iteration:

* ``Cosine similarity per iteration (Table 2)`` — mean over the attacking
  clients of ``cos(δ_m, Σ others)``, in the attack rounds (``attack-start-round``
  to ``attack-end-round``) and over the attackers that took part in the round;
  for a run without attackers, the benign clients' mean (the reference row);
* ``Max L2 distance per iteration (Table 3)`` — the largest L2 distance from
  an attacker's update to a benign update (benign clients' own for the
  reference row);
* ``Targeted accuracy per iteration`` / ``Global accuracy per iteration`` /
  ``Backdoor ASR per iteration`` — the curves, as tables (for Chen et al.'s
  class-level target, targeted accuracy is the share of the held-out test
  split's source class read as the target; for a ``targeted-samples`` run, of
  the chosen images);
* ``Detection (rounds flagged)`` — per detector, the rounds in which it flagged
  an attacker, and the rounds in which it flagged a benign client;
* ``Attack summary`` — final global and targeted accuracy / ASR, mean cosine,
  largest L2 distance, and the attack rounds in which an attacker took part;
* ``PDGAN Table 1`` — for PDGAN scenarios (names ``pdgan-*``): row = variant
  (``Before detection``, ``GAN``, ``Model inversion``), columns ``overall
  accuracy`` and ``poisoning accuracy`` (final), and over the rounds from the
  first audited round (``audit-start-round``, or the round ``gan-d-iter``
  gives) on the audit's ``detection recall`` and ``false-positive rate``; and
  ``images per client``, the mean of the run's client partition sizes (the
  paper's clients hold 600 images each);
* ``Attack × defense: ASR and clean accuracy`` — for runs of an attack × defense
  grid (``defense`` set): row = attack, columns ``<defense> ASR`` and
  ``<defense> clean accuracy`` (the layered-defense paper's Tables 2–4; the
  ASR of a label-flip row is its targeted accuracy).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from fedsec.config import RunConfig
from fedsec.defenses.audit import first_audit_round
from fedsec.defenses.detection import detection_rates, parse_detectors

COSINE_TABLE = "Cosine similarity per iteration (Table 2)"
L2_TABLE = "Max L2 distance per iteration (Table 3)"
TARGETED_TABLE = "Targeted accuracy per iteration"
GLOBAL_TABLE = "Global accuracy per iteration"
ASR_TABLE = "Backdoor ASR per iteration"
DETECTION_TABLE = "Detection (rounds flagged)"
SUMMARY_TABLE = "Attack summary"
GRID_TABLE = "Attack × defense: ASR and clean accuracy"
PDGAN_TABLE = "PDGAN Table 1"
#: Rounds averaged in the PDGAN table's "last rounds" columns.
LAST_ROUNDS = 5

Rounds = Sequence[Mapping[str, Any]]


def is_pdgan(config: RunConfig) -> bool:
    """Whether the run belongs to a PDGAN scenario (it gets the ``PDGAN Table 1`` row)."""
    return config.scenario.startswith("pdgan")


def audit_start_round(config: RunConfig) -> int:
    """The first round the PDGAN audit judges: ``audit-start-round``, or the round ``gan-d-iter`` gives."""
    if config.gan_d_iter and config.audit == "gan":
        return first_audit_round(config.gan_d_iter, config.gan_steps)
    return config.audit_start_round


def row_name(config: RunConfig) -> str:
    """The run's row label: its variant, else its scenario."""
    return config.variant or config.scenario


def _stat(record: Mapping[str, Any], key: str, clients: set[str]) -> list[float]:
    stats = record.get("update_stats", {})
    return [float(s[key]) for label, s in stats.items() if label in clients and s.get(key) is not None]


def poisoning_tables(
    config: RunConfig, rounds: Rounds, *, malicious: set[str], partition_sizes: Collection[int] = ()
) -> dict[str, dict[str, dict[str, Any]]]:
    """The tables above for one run (empty when the run recorded no update statistics).

    ``partition_sizes`` are the clients' training-set sizes (for the PDGAN table's
    ``images per client``; left out when empty).
    """
    row = row_name(config)
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    if config.defense and rounds:
        final = rounds[-1]
        asr = final.get("asr", final.get("targeted_accuracy"))
        tables[GRID_TABLE] = {
            row: {f"{config.defense} ASR": asr, f"{config.defense} clean accuracy": final.get("accuracy")}
        }
    if is_pdgan(config) and rounds:
        tables[PDGAN_TABLE] = {row: pdgan_row(config, rounds, partition_sizes=partition_sizes)}
    if config.defense or not any("update_stats" in r for r in rounds):
        return tables  # a grid run's row is its attack, shared by every defense: only the grid table
    cosine: dict[str, Any] = {}
    l2: dict[str, Any] = {}
    attack_rounds = []
    for record in rounds:
        stats = record.get("update_stats")
        if not stats:
            continue
        column = str(record["round"])
        # Attackers that sent an update this round (with partial participation some may not have).
        attacking = malicious & set(stats) if config.attacks_in(record["round"]) else set()
        clients = attacking or (set(stats) if not malicious else set())
        if attacking:
            attack_rounds.append(record["round"])
        values = _stat(record, "cosine", clients)
        if values:
            cosine[column] = float(np.mean(values))
            l2[column] = float(np.max(_stat(record, "max_l2_benign", clients)))
    tables[COSINE_TABLE] = {row: cosine}
    tables[L2_TABLE] = {row: l2}
    tables[GLOBAL_TABLE] = {row: {str(r["round"]): r.get("accuracy") for r in rounds}}
    for key, name in (("targeted_accuracy", TARGETED_TABLE), ("asr", ASR_TABLE)):
        if any(key in r for r in rounds):
            tables[name] = {row: {str(r["round"]): r.get(key) for r in rounds if key in r}}
    detection = _detection_rows(rounds, malicious, config, parse_detectors(config.detectors))
    if detection:
        tables[DETECTION_TABLE] = {row: detection}
    final = rounds[-1] if rounds else {}
    summary: dict[str, Any] = {"global accuracy": final.get("accuracy")}
    for key, label in (
        ("targeted_accuracy", "targeted accuracy"),
        ("class_flip_rate", "class flip rate"),
        ("other_class_accuracy", "other-class accuracy"),
        ("asr", "ASR"),
    ):
        if key in final:
            summary[label] = final[key]
    if cosine:
        summary["mean cosine"] = float(np.mean(list(cosine.values())))
        summary["max L2 distance"] = float(np.max(list(l2.values())))
    summary["attack rounds"] = len(attack_rounds)
    tables[SUMMARY_TABLE] = {row: summary}
    return tables


def _detection_rows(
    rounds: Rounds, malicious: set[str], config: RunConfig, detectors: Sequence[str]
) -> dict[str, int]:
    """``{"<detector> on attackers": rounds, "<detector> on benign": rounds}`` over the judged rounds."""
    judged = [r for r in rounds if "flagged_by" in r]
    if not judged or not detectors:
        return {}
    row: dict[str, int] = {"rounds judged": len(judged)}
    for detector in detectors:
        on_attackers = on_benign = 0
        for record in judged:
            flagged = {c for c, names in record["flagged_by"].items() if detector in names}
            attacking = malicious if config.attacks_in(record["round"]) else set()
            on_attackers += bool(flagged & attacking)
            on_benign += bool(flagged - attacking)
        row[f"{detector} on attackers"] = on_attackers
        row[f"{detector} on benign"] = on_benign
    return row


def pdgan_row(config: RunConfig, rounds: Rounds, *, partition_sizes: Collection[int] = ()) -> dict[str, Any]:
    """Final overall and poisoning accuracy, the audit's recall / FPR over its active rounds, and the
    mean of ``partition_sizes`` as ``images per client`` (when given)."""
    final = rounds[-1]
    row: dict[str, Any] = {
        "overall accuracy": final.get("accuracy"),
        "poisoning accuracy": final.get("targeted_accuracy"),
    }
    # One admitted attacker in the final round moves the two figures above a lot: the mean
    # over the last rounds shows where the run settled.
    last = [r for r in rounds[-LAST_ROUNDS:] if r.get("accuracy") is not None]
    if last:
        row[f"overall accuracy, last {len(last)} rounds"] = float(np.mean([r["accuracy"] for r in last]))
        poisoning = [r["targeted_accuracy"] for r in last if r.get("targeted_accuracy") is not None]
        if poisoning:
            row[f"poisoning accuracy, last {len(last)} rounds"] = float(np.mean(poisoning))
    start = audit_start_round(config)
    active = [r for r in rounds if r["round"] >= start and "audit" in r.get("detection", {})]
    if active:
        totals = {k: sum(int(r["detection"]["audit"][k]) for r in active) for k in ("tp", "fp", "fn", "tn")}
        rates = detection_rates(totals)
        row["detection recall"] = rates["recall"]
        row["false-positive rate"] = rates["false_positive_rate"]
        row["audited rounds"] = len(active)
    if partition_sizes:
        row["images per client"] = float(np.mean(list(partition_sizes)))
    return row
