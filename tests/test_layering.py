"""The code's layering: Flower's current API only, and no Flower at all in the ``fedsec`` library."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedsec", "strategies", "clients", "simulations", "examples", "tests")
#: Flower's deprecated layers: the legacy server (strategies, start_grid, ClientManager), the compat
#: package and the legacy simulation entry point.
LEGACY_MODULES = ("flwr.server", "flwr.compat", "flwr.simulation")
#: Deprecated names re-exported elsewhere: the legacy Context and the client_fn ClientApp.
LEGACY_NAMES = {"flwr.common": {"Context"}, "flwr.client": {"ClientApp", "Client", "start_client"}}


def imports(path: Path) -> list[tuple[str, str | None, int]]:
    """``(module, name or None, line)`` for every import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name, node.lineno) for alias in node.names]
    return found


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_flowers_deprecated_layers(package):
    offences = []
    for path in python_files(package):
        for module, name, line in imports(path):
            legacy = any(module == m or module.startswith(m + ".") for m in LEGACY_MODULES)
            if legacy or (name is not None and name in LEGACY_NAMES.get(module, set())):
                offences.append(f"{path.relative_to(ROOT)}:{line}: {module}{'.' + name if name else ''}")
    assert offences == []


def test_the_fedsec_library_does_not_import_flower():
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in python_files("fedsec")
        for module, _, line in imports(path)
        if module == "flwr" or module.startswith("flwr.")
    ]
    assert offences == []
