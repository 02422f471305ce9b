"""Static checks of docker-compose.yml, the Dockerfile and the Kubernetes manifests (no
Docker engine or cluster on our machines; `docker compose config` runs where available)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_runs_the_demo_on_apache_kafka_in_kraft_mode():
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = doc["services"]
    assert {"kafka", "topics", "worker", "paper-venue", "market-data", "oms"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    for name in ("worker", "paper-venue", "market-data", "oms"):
        assert services[name]["build"] == "." and services[name]["environment"]["SOR_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert services["worker"]["command"] == ["worker"]
    assert services["worker"]["environment"]["SOR_ENABLE_IDEMPOTENCE"] == "true"
    assert (ROOT / "deploy/compose/venues.toml").exists()


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_compose_config_when_the_plugin_is_there():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed")
    subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], check=True)


def test_dockerfile_is_slim_and_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert "python:3.11-slim" in text and "USER 10001" in text and 'ENTRYPOINT ["sor"]' in text


def _manifests():
    docs = {}
    for path in sorted((ROOT / "deploy/base").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.setdefault(doc["kind"], []).append(doc)
    return docs


def test_kustomize_base_lists_existing_files():
    kust = yaml.safe_load((ROOT / "deploy/base/kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (ROOT / "deploy/base" / res).exists(), res
    for gen in kust["configMapGenerator"]:
        for f in gen.get("files", []):
            assert (ROOT / "deploy/base" / f).exists(), f
    overlay = yaml.safe_load((ROOT / "deploy/overlays/production/kustomization.yaml").read_text())
    assert overlay["resources"] == ["../../base"]


def test_manifests_have_probes_limits_secrets_pdb_and_keda():
    docs = _manifests()
    dep = docs["Deployment"][0]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    secret_refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    assert secret_refs == {"sor-kafka-sasl", "sor-venue-credentials"}
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert docs["PodDisruptionBudget"][0]["spec"]["maxUnavailable"] == 1
    so = docs["ScaledObject"][0]
    env = yaml.safe_load((ROOT / "deploy/base/kustomization.yaml").read_text())["configMapGenerator"][1]["literals"]
    partitions = int(next(x.split("=")[1] for x in env if x.startswith("SOR_TOPIC_PARTITIONS=")))
    assert so["spec"]["maxReplicaCount"] == partitions
    assert so["spec"]["triggers"][0]["type"] == "kafka" and so["spec"]["triggers"][0]["metadata"]["topic"] == "sor.intents.v1"
    assert "Secret" not in docs  # referenced, never committed
