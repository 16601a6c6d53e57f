"""Small readers over recorded resources, so assertions say what they check."""

from __future__ import annotations

from typing import Any

from tools.offline.mocks import is_secret


def dig(data: Any, path: str, default: Any = None) -> Any:
    """`dig(inputs, "settings.ipConfiguration.ipv4Enabled")`; list indices allowed as numbers."""
    for part in path.split("."):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return default
    return data


def plain(value: Any) -> Any:
    """The value inside a secret wrapper, for checks that must look at it."""
    return value["value"] if is_secret(value) else value


def children_of(run, component_name: str) -> list:
    parent = next(r for r in run.resources if r.name == component_name and not r.custom)
    return [r for r in run.resources if r.parent == parent.urn]


def pod_spec(record) -> dict:
    """The pod template of a Deployment or Job, or of a CronJob's Jobs."""
    spec = record.inputs["spec"]
    return (spec["jobTemplate"]["spec"] if "jobTemplate" in spec else spec)["template"]["spec"]


def containers(record) -> list[dict]:
    spec = pod_spec(record)
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def container(record, name: str) -> dict:
    found = [c for c in containers(record) if c["name"] == name]
    assert len(found) == 1, f"{record.urn}: {len(found)} containers named {name!r}"
    return found[0]


def env_of(container_spec: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container_spec.get("env", [])}
