"""The house's import rules (README, "How it fits together"): the kernel imports no context,
contexts do not import each other (analytics reads billing's tables, not its code), and nothing
but tests imports the app package `gpumeter`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kernel", "schemas", "agents", "streams", "billing", "analytics", "infra", "gpumeter")
#: What each package may import besides itself (the standard library and third parties aside).
ALLOWED = {
    "kernel": set(),
    "schemas": {"kernel"},
    "agents": {"kernel", "schemas", "infra"},  # infra: the embedded broker for a smoke run
    "streams": {"kernel", "schemas", "infra"},
    "billing": {"kernel", "schemas"},
    "analytics": {"kernel", "schemas"},
    "infra": {"kernel", "schemas"},
    "gpumeter": set(PACKAGES),
    "bench": set(PACKAGES) - {"gpumeter"},
}


def _imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)} imports {other}"
        for path in (ROOT / package).rglob("*.py")
        for other in _imported_packages(path) - ALLOWED[package] - {package}
    }
    assert not wrong, sorted(wrong)


#: Top-level folders that hold Python but are not layers: the tests (they may import anything).
NOT_LAYERS = {"tests"}


def test_every_top_level_python_folder_is_a_checked_layer() -> None:
    # A new context (or a script folder) must be given its place in ALLOWED: otherwise its
    # imports are never checked, and nothing stops it importing the app or a sibling.
    folders = {
        d.name
        for d in ROOT.iterdir()
        if d.is_dir()
        and not d.name.startswith(".")
        and (any(d.glob("*.py")) or any(d.glob("*/*.py")))
    }
    unchecked = folders - set(ALLOWED) - NOT_LAYERS
    assert not unchecked, f"add these folders to ALLOWED (their layer): {sorted(unchecked)}"
