"""The worker's logging level: Faust's terminal spinner must not turn on DEBUG.

Faust's Worker installs a spinner that spins on every log record and sets the root logger to
DEBUG for it; then every debug call of aiokafka and Faust (several per message sent or fetched)
builds a record that the handlers drop. py-spy measured it at a fifth of the worker's main
thread. The worker keeps the level it was given.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import faust
import pytest

from streams.cli import _make_worker


@pytest.mark.parametrize("level", [logging.WARNING, logging.INFO])
def test_the_root_logger_keeps_the_level_given(level: int) -> None:
    app = faust.App("gpumeter-test-logging", broker="kafka://127.0.0.1:9")
    worker = _make_worker(app, SimpleNamespace(stop_requested=None), loglevel=level, quiet=True)
    logger = logging.Logger("root-under-test", level)
    logger.addHandler(logging.StreamHandler())
    # when Faust configures the root logger
    worker.on_setup_root_logger(logger, level)
    # then debug messages are not even built
    assert logger.level == level and not logger.isEnabledFor(logging.DEBUG)
    assert worker.spinner is None
