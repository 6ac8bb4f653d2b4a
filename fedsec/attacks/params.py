"""Attack names (as the papers print them) and parameter overrides from flat run-config strings.

``eval-attacks = "fgsm,bim,simba"`` names attacks; ``attack-params =
"cw2.max_iter=10,simba.max_iter=300"`` overrides the registry's defaults.  Both
are checked against :data:`fedsec.attacks.evasion.ATTACKS`, and errors name the
config key and the offending piece.
"""

from __future__ import annotations

from fedsec.attacks.evasion import ATTACKS
from fedsec.roles import piece_error

AttackParams = dict[str, dict[str, float | int]]

#: How the paper names each attack in its tables.
DISPLAY_NAMES = {
    "fgsm": "FGSM",
    "bim": "BIM",
    "pgd": "PGD",
    "jsma": "JSMA",
    "cw2": "CW2",
    "deepfool": "DeepFool",
    "simba": "SimBA",
}


def display_name(attack: str) -> str:
    """The paper's name for ``attack`` (``cw2`` → ``CW2``)."""
    return DISPLAY_NAMES.get(attack, attack.upper())


def parse_attack_names(text: str, *, key: str = "eval-attacks") -> tuple[str, ...]:
    """``"fgsm, bim"`` → ``("fgsm", "bim")``; unknown names raise naming the key."""
    names: list[str] = []
    for piece in (p.strip() for p in text.split(",")) if text.strip() else ():
        if piece not in ATTACKS:
            raise piece_error(key, piece, f"is not an attack; known attacks: {', '.join(ATTACKS)}")
        if piece not in names:
            names.append(piece)
    return tuple(names)


def parse_attack_params(text: str, *, key: str = "attack-params") -> AttackParams:
    """``"cw2.max_iter=10,simba.epsilon=0.1"`` → ``{"cw2": {"max_iter": 10}, "simba": {"epsilon": 0.1}}``."""
    params: AttackParams = {}
    for piece in (p.strip() for p in text.split(",")) if text.strip() else ():
        target, equals, value_text = piece.partition("=")
        attack, dot, name = target.strip().partition(".")
        if not equals or not dot or not attack or not name:
            raise piece_error(key, piece, "is malformed: expected ATTACK.PARAM=VALUE, e.g. 'cw2.max_iter=10'")
        if attack not in ATTACKS:
            raise piece_error(
                key, piece, f"names unknown attack {attack!r}; known attacks: {', '.join(ATTACKS)}"
            )
        defaults = ATTACKS[attack].defaults
        if name not in defaults:
            raise piece_error(
                key, piece, f"names unknown {attack} parameter {name!r}; known: {', '.join(defaults)}"
            )
        default = defaults[name]
        try:
            value: float | int = int(value_text) if isinstance(default, int) else float(value_text)
        except ValueError:
            kind = "an integer" if isinstance(default, int) else "a number"
            raise piece_error(key, piece, f"must set {kind}, got {value_text.strip()!r}") from None
        params.setdefault(attack, {})[name] = value
    return params


def parse_attack_sizes(text: str, *, key: str = "eval-attack-sizes") -> dict[str, int]:
    """``"simba=500,cw2=500"`` → ``{"simba": 500, "cw2": 500}`` (test-set sizes per attack)."""
    sizes: dict[str, int] = {}
    for piece in (p.strip() for p in text.split(",")) if text.strip() else ():
        attack, equals, value = (part.strip() for part in piece.partition("="))
        if not equals or not value.isdigit() or int(value) < 1:
            raise piece_error(key, piece, "is malformed: expected ATTACK=N with N >= 1, e.g. 'simba=500'")
        if attack not in ATTACKS:
            raise piece_error(
                key, piece, f"names unknown attack {attack!r}; known attacks: {', '.join(ATTACKS)}"
            )
        sizes[attack] = int(value)
    return sizes
