"""Render a stack run to reviewable files: every resource, every Kubernetes manifest, a graph, counts.

The output is deterministic (byte-identical across runs) and never contains a secret value:
whatever Pulumi marks secret is written as `[secret]`.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import yaml

from tools.offline.cost import cost_markdown, load_test_cost_markdown
from tools.offline.mocks import ResourceRecord, is_secret
from tools.offline.quota import quota_markdown
from tools.offline.stack import PROJECT_NAMESPACE, StackRun

SECRET_MASK = "[secret]"
# Apply order a human expects when reading the manifests.
KIND_ORDER = ("Namespace", "ServiceAccount", "Role", "RoleBinding", "Secret", "ConfigMap", "Job", "Deployment", "Service",
              "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "BackendConfig",
              "FrontendConfig", "ManagedCertificate", "Ingress", "Gateway", "HTTPRoute", "HealthCheckPolicy",
              "PodMonitoring")
# Resources that only delay what depends on them (infra/kms.py: IAM grants propagating).
WAIT_TYPES = ("time:index/sleep:Sleep",)
MANIFEST_KEYS = ("apiVersion", "kind", "metadata", "spec", "type", "data", "stringData",
                 "automountServiceAccountToken", "rules", "roleRef", "subjects")  # RBAC: what a role grants, to whom


class _Dumper(yaml.SafeDumper):
    """Block-style YAML, multi-line strings as literal blocks, no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_presenter(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_presenter)


def to_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120,
                     allow_unicode=True)


def masked(value: Any) -> Any:
    """Secrets replaced by a mask; a secret map keeps its keys so reviewers see what it holds."""
    if is_secret(value):
        inner = value["value"]
        if isinstance(inner, dict):
            return {key: SECRET_MASK for key in sorted(inner)}
        return SECRET_MASK
    if isinstance(value, dict):
        return {key: masked(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [masked(item) for item in value]
    return value


def _short(urn: str) -> str:
    return urn.rsplit("::", 1)[-1] if urn else ""


def dependency_names(run: StackRun, record: ResourceRecord) -> list[str]:
    """What `pulumi up` creates before this resource: explicit `depends_on` and the resources whose
    outputs it consumes. A component all of whose resources are dependencies is shown by its name."""
    dependencies = set(record.dependencies)
    shown: list[str] = []
    for component in run.resources:
        children = {r.urn for r in run.resources if r.parent == component.urn and r.custom}
        if not component.custom and len(children) > 1 and children <= dependencies:
            dependencies -= children
            shown.append(f"{component.name} (all {len(children)})")
    return sorted(shown + [_short(urn) for urn in dependencies])


def resources_document(run: StackRun) -> list[dict]:
    return [
        {
            "type": record.type,
            "name": record.name,
            "parent": _short(record.parent) or f"{run.project}-{run.stack}",
            **({"provider": _short(record.provider)} if record.provider else {}),
            **({"dependsOn": dependency_names(run, record)} if record.dependencies else {}),
            **({"ignoreChanges": record.ignore_changes} if record.ignore_changes else {}),
            **({"customTimeouts": record.custom_timeouts} if record.custom_timeouts else {}),
            **({"protect": True} if record.protect else {}),
            "inputs": masked(record.inputs),
        }
        for record in sorted(run.resources, key=lambda r: r.urn)
    ]


def manifest(record: ResourceRecord) -> dict:
    """A Kubernetes object as `kubectl apply` would take it, keys in the usual order."""
    body = {key: masked(record.inputs[key]) for key in MANIFEST_KEYS if key in record.inputs}
    if "metadata" in body:
        body["metadata"] = _metadata_first(body["metadata"])
    if body.get("kind") == "Secret" and isinstance(body.get("stringData"), str):
        body["stringData"] = {"value": SECRET_MASK}
    return body


def _metadata_first(metadata: dict) -> dict:
    ordered = {key: metadata[key] for key in ("name", "namespace") if key in metadata}
    return {**ordered, **{key: value for key, value in metadata.items() if key not in ordered}}


def k8s_records(run: StackRun) -> list[ResourceRecord]:
    records = [r for r in run.resources if r.custom and r.type.startswith("kubernetes:")
               and not r.type.startswith("pulumi:providers")]

    def order(record: ResourceRecord) -> tuple:
        kind = record.inputs.get("kind", "")
        rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
        meta = record.inputs.get("metadata", {})
        return rank, _short(record.provider), meta.get("namespace", ""), meta.get("name", record.name), kind

    return sorted(records, key=order)


def manifest_files(run: StackRun) -> dict[str, str]:
    files = {}
    for index, record in enumerate(k8s_records(run), start=1):
        meta = record.inputs.get("metadata", {})
        kind = record.inputs.get("kind", record.type.rsplit(":", 1)[-1])
        slug = "-".join(part for part in (meta.get("namespace"), meta.get("name", record.name)) if part)
        filename = f"k8s/{index:02d}-{kind.lower()}-{re.sub(r'[^a-z0-9.-]+', '-', slug.lower())}.yaml"
        header = f"# cluster: {_short(record.provider).removesuffix('-k8s')}  (pulumi resource {record.name})\n"
        files[filename] = header + to_yaml(manifest(record))
    return files


def _node_id(urn: str) -> str:
    return "n" + re.sub(r"[^A-Za-z0-9]", "_", _short(urn))


def graph_markdown(run: StackRun) -> str:
    """A Mermaid tree of components and the resources they own; dotted arrows run through each wait, from
    what it waits for to what waits for it (a wait has no other purpose, so only the graph shows it)."""
    stack_id = "stack"
    lines = [f"# Resource graph: stack `{run.stack}`", "", "```mermaid", "flowchart LR",
             f'    {stack_id}(["{run.project}-{run.stack}"])']
    known = {record.urn for record in run.resources}
    records = sorted(run.resources, key=lambda r: r.urn)
    for record in records:
        token = record.type
        shape = f'["{record.name}<br/><small>{token}</small>"]' if record.custom else f'[["{record.name}"]]'
        lines.append(f"    {_node_id(record.urn)}{shape}")
        parent = _node_id(record.parent) if record.parent in known else stack_id
        lines.append(f"    {parent} --> {_node_id(record.urn)}")
    for wait in (record for record in records if record.type in WAIT_TYPES):
        lines += [f"    {_node_id(urn)} -.-> {_node_id(wait.urn)}" for urn in sorted(wait.dependencies)]
        lines += [f"    {_node_id(wait.urn)} -.-> {_node_id(record.urn)}"
                  for record in records if wait.urn in record.dependencies]
    lines += ["```", ""]
    return "\n".join(lines)


def summary_markdown(run: StackRun) -> str:
    counts = Counter(record.type for record in run.resources)
    lines = [f"# Plan summary: stack `{run.stack}`", "", "| Type | Count |", "|---|---|"]
    lines += [f"| `{token}` | {count} |" for token, count in sorted(counts.items())]
    lines += [f"| **total** | **{sum(counts.values())}** |", "", "## Outputs", "", "| Output | Value |", "|---|---|"]
    lines += [f"| `{name}` | {SECRET_MASK if name in run.secret_outputs else f'`{value}`'} |"
              for name, value in sorted(run.outputs.items())]
    return "\n".join(lines) + "\n"


def dashboard_files(run: StackRun) -> dict[str, str]:
    return {f"monitoring/{record.name}.json": record.inputs["dashboardJson"] + "\n"
            for record in run.of_type("gcp:monitoring/dashboard:Dashboard")}


def render(run: StackRun) -> dict[str, str]:
    """Relative path -> file content, for everything under plan/<stack>/ (the platform's) or
    plan/loadtest-<stack>/ (the load test's, priced per hour of a run)."""
    common = {"resources.yaml": to_yaml(resources_document(run)), "graph.md": graph_markdown(run),
              "summary.md": summary_markdown(run), **manifest_files(run)}
    if run.project != PROJECT_NAMESPACE:
        return {**common, "cost.md": load_test_cost_markdown(run)}
    return {**dashboard_files(run), **common, "cost.md": cost_markdown(run), "quota.md": quota_markdown(run)}
