"""Every query of the provisioned Grafana dashboard runs against the real schema.

Grafana's ClickHouse plugin expands its macros before sending SQL; this test expands them the
same way (epoch seconds into toDateTime) so a renamed column or view breaks here, not on a wall
display.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from analytics.ledger_facts import sync_asset_rates
from tests.integration.analytics.scenario import START, insert_minutes, register, two_gpu_scenario

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = sorted((ROOT / "infra/grafana/dashboards").glob("*.json"))
PROVIDER = ROOT / "infra/grafana/provisioning/dashboards/gpumeter.yaml"
DATASOURCES = ROOT / "infra/grafana/provisioning/datasources/clickhouse.yaml"


def expand_macros(sql: str, start: int, end: int, interval_s: int = 60) -> str:
    """The grafana-clickhouse-datasource macros used by the dashboards."""
    sql = re.sub(
        r"\$__timeFilter\(\s*([^)]+?)\s*\)",
        lambda m: f"{m.group(1)} >= toDateTime({start}) AND {m.group(1)} <= toDateTime({end})",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({start})").replace(
        "$__toTime", f"toDateTime({end})"
    )
    sql = sql.replace("$__interval_s", str(interval_s))
    assert "$" not in sql, f"unexpanded macro or variable in: {sql}"
    return sql


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for panel in dashboard["panels"]:
        out += [(panel["title"], t) for t in panel.get("targets", [])]
        for inner in panel.get("panels", []):  # collapsed rows
            out += [(inner["title"], t) for t in inner.get("targets", [])]
    return out


def test_dashboards_exist_and_use_the_provisioned_datasource() -> None:
    assert DASHBOARDS and PROVIDER.exists()
    uid = re.search(r"uid:\s*(\S+)", DATASOURCES.read_text()).group(1)
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["panels"]
        for title, target in _targets(dashboard):
            assert target["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": uid}, (
                title
            )
            assert target["rawSql"].strip(), title


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_runs(clickhouse, path: Path) -> None:  # type: ignore[no-untyped-def]
    # given the hand-built two-GPU day, rates synced, and the invoice tables present (0010)
    insert_minutes(clickhouse, two_gpu_scenario())
    sync_asset_rates(clickhouse, register())
    start = int(START.timestamp())
    end = int((START + timedelta(days=1)).timestamp())
    answered = 0
    for title, target in _targets(json.loads(path.read_text())):
        sql = expand_macros(target["rawSql"], start, end)
        result = clickhouse.query(sql)  # raises on any broken query
        answered += bool(result.result_rows)
        if title == "Utilization (allocated / available)":
            assert float(result.result_rows[0][0]) == 75.0  # 10 800 / 14 400 s
        if title == "Idle value at spot":
            assert float(result.result_rows[0][0]) == 1.0  # 1 idle h x 1.00
    assert answered >= 8
