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


def test_compose_ccxt_override_runs_the_feed_in_place_of_the_simulators_quotes():
    doc = yaml.safe_load((ROOT / "docker-compose.ccxt.yml").read_text())
    services = doc["services"]
    feed = services["feed"]
    assert feed["build"] == "." and feed["command"][0] == "feed" and feed["environment"]["SOR_BOOTSTRAP_SERVERS"] == "kafka:9092"
    books = services["market-data"]["environment"]["SOR_TOPICS__QUOTES"]
    assert books != "sor.quotes.v1" and services["paper-venue"]["environment"]["SOR_TOPICS__QUOTES"] == books
    assert services["worker"]["depends_on"]["feed"]["condition"] == "service_healthy"
    from worker.config import load_venues

    mounted = {v.split(":")[0] for s in ("feed", "worker") for v in services[s]["volumes"]}
    [path] = mounted
    assert all(v.adapter == "ccxt" and v.symbols for v in load_venues(ROOT / path))


def test_live_overlay_adds_the_feed_and_ccxt_venues():
    overlay = ROOT / "deploy/overlays/live"
    kust = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert "../../base" in kust["resources"]
    for res in kust["resources"][1:] + [p["path"] for p in kust["patches"]]:
        assert (overlay / res).exists(), res
    [venues] = kust["configMapGenerator"]
    assert venues["name"] == "sor-venues" and venues["behavior"] == "replace"
    feed = yaml.safe_load((overlay / "feed-deployment.yaml").read_text())
    c = feed["spec"]["template"]["spec"]["containers"][0]
    assert feed["kind"] == "Deployment" and feed["spec"]["replicas"] == 1 and c["args"] == ["feed"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["limits"]["memory"] and feed["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert not any("sor-venue-credentials" in str(e) for e in c["env"])  # the feed reads public books only
    from worker.config import load_venues

    live = load_venues(overlay / "venues.toml")
    assert len(live) >= 2 and all(v.adapter == "ccxt" and v.exchange and v.symbols for v in live)
    patch = yaml.safe_load((overlay / "worker-credentials.yaml").read_text())
    keys = {e["name"] for e in patch["spec"]["template"]["spec"]["containers"][0]["env"]}
    worker = _manifests()["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]
    keys |= {e["name"] for e in worker["env"]}
    for v in live:
        assert {f"SOR_VENUE_CREDENTIALS__{v.name.upper()}__API_KEY", f"SOR_VENUE_CREDENTIALS__{v.name.upper()}__API_SECRET"} <= keys
