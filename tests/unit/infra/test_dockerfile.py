"""The image copies every package the wheel is built from: a package left out of the Dockerfile
would build a wheel whose `gpumeter` fails at its first import (as kernel/ and analytics/ did
when they were created)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_every_packaged_folder_is_copied_into_the_build_stage() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = set(
        re.findall(r"^COPY (\w+) \./\1$", (ROOT / "infra" / "Dockerfile").read_text(), re.M)
    )
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"
