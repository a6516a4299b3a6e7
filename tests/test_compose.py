"""compose.yaml is for users (no Docker engine here): check its shape, not that it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "compose.yaml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return dict(doc["services"])


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {str(k): str(v) for k, v in raw.items()}


def test_qdrant_is_pinned_with_volume_and_healthcheck(services: dict[str, Any]) -> None:
    q = services["qdrant"]
    image, _, tag = q["image"].partition(":")
    assert image == "qdrant/qdrant"
    assert tag.startswith("v1.") and tag != "latest"
    # create_vector_name (adding a model to a live collection) needs a server from v1.18
    assert tuple(int(x) for x in tag[1:].split(".")[:2]) >= (1, 18)
    assert any(str(v).endswith(":/qdrant/storage") for v in q["volumes"])
    assert q["healthcheck"]["test"]


def test_app_uses_the_server(services: dict[str, Any]) -> None:
    app = services["app"]
    assert env(app)["QDRANT_URL"] == "http://qdrant:6333"
    assert app["depends_on"]["qdrant"]["condition"] == "service_healthy"
    command = app["command"]
    command = command if isinstance(command, str) else " ".join(command)
    assert command.startswith("devise serve") and "--host 0.0.0.0" in command


def test_cluster_profile_has_three_nodes(services: dict[str, Any]) -> None:
    nodes = {
        name: s
        for name, s in services.items()
        if "cluster" in s.get("profiles", []) and str(s.get("image", "")).startswith("qdrant/")
    }
    assert len(nodes) == 3
    for s in nodes.values():
        assert env(s)["QDRANT__CLUSTER__ENABLED"] == "true"
        assert s["image"] == services["qdrant"]["image"]
    commands = sorted(" ".join(s["command"]) for s in nodes.values())
    assert sum("--uri http://qdrant-node1:6335" in c for c in commands) == 1
    assert sum("--bootstrap http://qdrant-node1:6335" in c for c in commands) == 2
