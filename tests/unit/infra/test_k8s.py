"""infra/k8s, validated offline against the Kubernetes JSON schemas bundled in the PyPI package
`kubernetes-validate` (strict: unknown fields are errors), plus what the schemas cannot know:
the agent's NVIDIA runtime without a GPU request, host PID, spool on the host, limits; secrets
by reference only; every GPUMETER_* variable a real setting; every command a real CLI command.
"""

from __future__ import annotations

import datetime as dt
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kernel.settings import Settings, env_name, known_variables
from tests.unit.infra.conftest import INFRA

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate comes with the test extra"
)

#: The oldest Kubernetes these manifests support (CronJob timeZone is GA from 1.27) and the
#: newest the package bundles.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
#: Variables that are not gpumeter settings but belong in the containers.
OTHER_VARIABLES = {"NODE_NAME", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"}
SECRET_SETTINGS = {
    env_name(name)
    for name, field in Settings.model_fields.items()
    if "SecretStr" in str(field.annotation)
}


def _documents(yaml_module: Any) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        for doc in yaml_module.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


@pytest.fixture(scope="module")
def manifests(yaml_module: Any) -> list[tuple[str, dict[str, Any]]]:
    return _documents(yaml_module)


def _kind(manifests: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests if doc["kind"] == kind]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def _containers(manifests: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (doc["metadata"]["name"], c)
        for _, doc in manifests
        if doc["kind"] in ("DaemonSet", "Deployment", "Job", "CronJob")
        for c in _pod_spec(doc)["containers"]
    ]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _period_expression(script: str) -> str:
    """The shell expression the CronJob passes to --period: ``$(date ... +%Y-%m)``."""
    start = script.index("$(date")
    end = script.index("+%Y-%m)", start) + len("+%Y-%m)")
    return script[start:end]


def test_the_schemas_are_bundled_and_used_offline() -> None:
    # kubernetes-validate ships the schemas inside the package; nothing is downloaded
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    assert (schemas / "v1.29.0-local-strict").is_dir()


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(manifests, version: str) -> None:
    assert manifests
    for path, doc in manifests:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{path} ({doc['kind']} {doc['metadata']['name']}) on {version}: {exc.message}"
            )


def test_the_validator_catches_what_it_should(manifests) -> None:
    # given a valid Deployment with a misspelt field and a wrong type
    deployment = _kind(manifests, "Deployment")[0]
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, VERSIONS[-1], strict=True)


def test_the_workloads_are_all_there(manifests) -> None:
    names = {(doc["kind"], doc["metadata"]["name"]) for _, doc in manifests}
    assert {
        ("Namespace", "gpumeter"),
        ("ConfigMap", "gpumeter-config"),
        ("DaemonSet", "gpumeter-agent"),
        ("Deployment", "gpumeter-worker"),
        ("Job", "gpumeter-migrate"),
        ("CronJob", "gpumeter-invoices"),
    } <= names
    assert all(doc["metadata"].get("namespace", "gpumeter") == "gpumeter" for _, doc in manifests)


def test_the_agent_sees_every_gpu_through_the_nvidia_runtime_without_taking_one(manifests) -> None:
    (agent,) = _kind(manifests, "DaemonSet")
    pod = _pod_spec(agent)
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["hostPID"] is True  # NVML reports host pids; attribution reads their environ
    (container,) = pod["containers"]
    env = _env(container)
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    resources = container["resources"]
    for section in ("requests", "limits"):
        assert not any(k.startswith("nvidia.com/") for k in resources.get(section, {}))
    assert {"cpu", "memory"} <= set(resources["limits"])
    assert "--nvml" in container["args"]


def test_the_agent_spool_is_on_the_host(manifests) -> None:
    (agent,) = _kind(manifests, "DaemonSet")
    pod = _pod_spec(agent)
    (container,) = pod["containers"]
    spool_arg = next(a for a in container["args"] if a.startswith("--spool-dir="))
    spool_dir = spool_arg.split("=", 1)[1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in container["volumeMounts"] if spool_dir.startswith(m["mountPath"]))
    assert "hostPath" in volumes[mount["name"]], "the spool must survive the pod"


def test_workers_are_a_deployment_with_limits(manifests) -> None:
    (worker,) = _kind(manifests, "Deployment")
    (container,) = _pod_spec(worker)["containers"]
    assert container["args"][0] == "worker"
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_migrations_are_a_job(manifests) -> None:
    (job,) = _kind(manifests, "Job")
    (container,) = _pod_spec(job)["containers"]
    assert container["args"] == ["db", "migrate"]
    assert _pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")


def test_the_invoice_run_is_monthly_for_the_previous_month(manifests) -> None:
    (cron,) = _kind(manifests, "CronJob")
    minute, hour, day, month, weekday = cron["spec"]["schedule"].split()
    assert (day, month, weekday) == ("1", "*", "*") and cron["spec"]["timeZone"] == "Etc/UTC"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = _pod_spec(cron)["containers"]
    script = container["args"][0]
    assert "gpumeter invoices run" in script and "--period" in script
    # the period expression, run by this machine's shell and GNU date as the image's would
    period = subprocess.run(
        ["sh", "-c", f"echo {_period_expression(script)}"],
        capture_output=True,
        text=True,
        check=True,
    )
    first = dt.datetime.now(dt.UTC).date().replace(day=1)
    assert period.stdout.strip() == (first - dt.timedelta(days=1)).strftime("%Y-%m")


def test_every_variable_is_a_real_setting_and_secrets_are_referenced(manifests) -> None:
    known = known_variables()
    (config,) = _kind(manifests, "ConfigMap")
    for key in config["data"]:
        assert key in known, f"ConfigMap: {key} is not a setting"
        assert key not in SECRET_SETTINGS, f"ConfigMap: {key} is a secret; use a Secret"
    for owner, container in _containers(manifests):
        for name, entry in _env(container).items():
            assert name in known or name in OTHER_VARIABLES, f"{owner}: {name} is not a setting"
            if name in SECRET_SETTINGS:
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{owner}: {name} in clear"
        for source in container.get("envFrom", []):
            assert source.get("configMapRef", {}).get("name") == "gpumeter-config", owner


def test_the_shared_configuration_validates_as_settings(manifests, monkeypatch, tmp_path) -> None:
    from kernel.settings import load_settings

    (config,) = _kind(manifests, "ConfigMap")
    ca = tmp_path / "ca.crt"
    ca.write_text("stand-in for the mounted Secret")
    for key, value in config["data"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GPUMETER_KAFKA_SSL_CAFILE", str(ca))  # mounted from a Secret in the pod
    monkeypatch.setenv("GPUMETER_DATA_DIR", str(tmp_path))  # an emptyDir / hostPath in the pod
    monkeypatch.setenv("GPUMETER_KAFKA_SASL_PASSWORD", "from-the-secret")
    settings = load_settings()
    assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_replication_factor >= 3


def test_every_gpumeter_command_in_the_manifests_parses(manifests) -> None:
    from gpumeter.cli import build_parser

    parser = build_parser()
    for owner, container in _containers(manifests):
        if container.get("command"):  # a shell wrapper: parse the gpumeter command in it
            script = container["args"][0]
            script = script.replace(_period_expression(script), "2026-01")
            args = shlex.split(script.split("exec gpumeter ", 1)[1])
        else:
            args = [a.replace("$(NODE_NAME)", "node-1") for a in container["args"]]
        try:
            parser.parse_args(args)
        except SystemExit:  # argparse's answer to an unknown command or flag
            pytest.fail(f"{owner}: `gpumeter {' '.join(args)}` does not parse")
