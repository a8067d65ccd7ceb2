"""Deployment files, read as data: no Docker, no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[3] / "infra"


@pytest.fixture(scope="session")
def yaml_module():  # noqa: ANN201
    return pytest.importorskip(
        "yaml", reason="PyYAML comes with the test extra (pip install -e '.[test]')"
    )
