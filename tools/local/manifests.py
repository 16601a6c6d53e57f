"""Read the rendered Kubernetes manifests (plan/<stack>/k8s/*.yaml): the source of truth that
`make local` runs. Nothing here knows MLflow; it only finds objects and their pod specs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import yaml

from k8s.serving import CHALLENGER, COMPONENT as SERVING_COMPONENT, TRACK_LABEL

ROOT = Path(__file__).resolve().parents[2]
COMPONENT_LABEL = "app.kubernetes.io/component"
SIDECAR_RESTART_POLICY = "Always"  # an init container with restartPolicy Always is a native sidecar


class ManifestError(RuntimeError):
    """The rendered manifests do not contain what the local platform needs."""


@dataclass(frozen=True)
class Manifests:
    directory: Path
    objects: tuple[dict, ...]

    @classmethod
    def load(cls, stack: str = "dev", plan_dir: Optional[Path] = None) -> "Manifests":
        directory = (plan_dir or ROOT / "plan") / stack / "k8s"
        files = sorted(directory.glob("*.yaml"))
        if not files:
            raise ManifestError(
                f"no rendered manifests in {directory}: run `.venv/bin/python -m tools.offline.plan --stack {stack} --quiet`")
        objects = []
        for path in files:
            for document in yaml.safe_load_all(path.read_text()):
                if document:
                    objects.append(document)
        return cls(directory, tuple(objects))

    def database_users(self) -> list[dict]:
        """The Cloud SQL users the program declares (plan/<stack>/resources.yaml): name, type and
        the database roles the Admin API grants them."""
        resources = yaml.safe_load((self.directory.parent / "resources.yaml").read_text())
        return [{"name": item["inputs"]["name"], "type": item["inputs"].get("type", "BUILT_IN"),
                 "roles": item["inputs"].get("databaseRoles", [])}
                for item in resources if item["type"] == "gcp:sql/user:User"]

    def all(self, kind: str) -> Iterator[dict]:
        return (obj for obj in self.objects if obj.get("kind") == kind)

    def optional(self, kind: str, *, component: str) -> Optional[dict]:
        """The one object of `kind` of `component`, or None where the stack declares none."""
        found = [obj for obj in self.all(kind) if obj["metadata"].get("labels", {}).get(COMPONENT_LABEL) == component]
        return self.one(kind, component=component) if found else None

    def one(self, kind: str, *, name: Optional[str] = None, namespace: Optional[str] = None,
            component: Optional[str] = None) -> dict:
        """Exactly one object of `kind` matching every given filter."""
        matches = [
            obj for obj in self.all(kind)
            if (name is None or obj["metadata"]["name"] == name)
            and (namespace is None or obj["metadata"].get("namespace") == namespace)
            and (component is None or obj["metadata"].get("labels", {}).get(COMPONENT_LABEL) == component)
        ]
        if len(matches) != 1:
            wanted = ", ".join(f"{k}={v}" for k, v in
                               (("name", name), ("namespace", namespace), ("component", component)) if v)
            raise ManifestError(f"expected exactly one {kind} with {wanted} in {self.directory}, found {len(matches)}")
        return matches[0]

    def secret_keys(self, namespace: str, name: str) -> set[str]:
        secret = self.one("Secret", name=name, namespace=namespace)
        return set(secret.get("stringData") or {}) | set(secret.get("data") or {})

    def config_map_data(self, namespace: str, name: str) -> dict[str, str]:
        return dict(self.one("ConfigMap", name=name, namespace=namespace).get("data") or {})


def pod_spec(workload: dict) -> dict:
    """The pod template of a Deployment or Job."""
    return workload["spec"]["template"]["spec"]


def container(workload: dict, name: str) -> dict:
    spec = pod_spec(workload)
    for candidate in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        if candidate["name"] == name:
            return candidate
    raise ManifestError(f"{workload['kind']} {workload['metadata']['name']} has no container {name!r}")


def serving_tracks(manifests: Manifests) -> tuple[dict, Optional[dict]]:
    """The champion's serving Deployment and the challenger's (None where the stack declares none),
    told apart by their pods' track label."""
    deployments = [d for d in manifests.all("Deployment")
                   if d["metadata"].get("labels", {}).get(COMPONENT_LABEL) == SERVING_COMPONENT]
    challengers = [d for d in deployments
                   if d["spec"]["template"]["metadata"].get("labels", {}).get(TRACK_LABEL) == CHALLENGER]
    champions = [d for d in deployments if all(d is not c for c in challengers)]
    if len(champions) != 1 or len(challengers) > 1:
        raise ManifestError(f"expected one champion and at most one challenger serving Deployment in "
                            f"{manifests.directory}, found {len(champions)} and {len(challengers)}")
    return champions[0], (challengers[0] if challengers else None)


def route_split(manifests: Manifests, challenger: dict) -> tuple[int, bool]:
    """(challenger weight percent, mirror) the rendered HTTPRoute declares for the `challenger`
    Deployment's Service: its backendRef weight over the total, and a RequestMirror filter to it."""
    services = {s["metadata"]["name"] for s in manifests.all("Service") if selects(s, challenger)}
    routes = list(manifests.all("HTTPRoute"))
    if len(routes) != 1:
        raise ManifestError(f"expected one HTTPRoute in {manifests.directory} beside a challenger, found {len(routes)}")
    weight, total, mirror = 0, 0, False
    for rule in routes[0]["spec"].get("rules", []):
        for ref in rule.get("backendRefs", []):
            total += ref.get("weight", 1)
            weight += ref.get("weight", 1) if ref["name"] in services else 0
        mirror |= any(f.get("type") == "RequestMirror" and f["requestMirror"]["backendRef"]["name"] in services
                      for f in rule.get("filters", []))
    return (round(100 * weight / total) if total else 0), mirror


def run_to_completion_containers(workload: dict) -> list[dict]:
    """What a Job runs, in order: init containers that are not sidecars, then the containers."""
    spec = pod_spec(workload)
    inits = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") != SIDECAR_RESTART_POLICY]
    return [*inits, *spec.get("containers", [])]


def workload_containers(manifests: "Manifests") -> Iterator[tuple[dict, dict]]:
    """(workload, container) of every container of every Deployment and Job."""
    for kind in ("Deployment", "Job"):
        for workload in manifests.all(kind):
            spec = pod_spec(workload)
            for item in [*spec.get("initContainers", []), *spec.get("containers", [])]:
                yield workload, item


def sidecars(workload: dict) -> list[dict]:
    return [c for c in pod_spec(workload).get("initContainers", [])
            if c.get("restartPolicy") == SIDECAR_RESTART_POLICY]


def flag_value(args: list[str], flag: str) -> Optional[str]:
    """Value of `--flag value` or `--flag=value` in a container's args."""
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def sql_proxy_address(workload: dict) -> Optional[str]:
    """host:port the Cloud SQL Auth Proxy sidecar listens on inside the pod, if the pod has one."""
    for sidecar in sidecars(workload):
        if "cloud-sql-proxy" in sidecar.get("image", "") or sidecar["name"] == "cloud-sql-proxy":
            args = sidecar.get("args", [])
            return f"{flag_value(args, '--address') or '127.0.0.1'}:{flag_value(args, '--port') or '5432'}"
    return None


def selects(service: dict, workload: dict) -> bool:
    """Whether a Service's selector matches a workload's pod template labels."""
    selector = service["spec"].get("selector") or {}
    labels = workload["spec"]["template"]["metadata"].get("labels", {})
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def service_dns_names(service: dict) -> list[str]:
    """Every in-cluster DNS name of a Service."""
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]


def service_addresses(service: dict) -> list[str]:
    """Every host a client may call a Service by: its DNS names and, for a load balancer with a
    static address (prod's internal one, which serving on its own cluster calls), that address."""
    static = service["spec"].get("loadBalancerIP")
    return service_dns_names(service) + ([static] if static else [])


_MODEL_URI = re.compile(r"^models:/(?P<name>[^@/]+)@(?P<alias>.+)$")


def served_model(serving_container: dict) -> tuple[str, str]:
    """(model name, alias) from `--model-uri models:/NAME@ALIAS` (or `mlflow models serve -m …`)."""
    args = serving_container.get("args", [])
    uri = flag_value(args, "--model-uri") or flag_value(args, "-m")
    match = _MODEL_URI.match(uri or "")
    if not match:
        raise ManifestError(f"serving container {serving_container['name']!r} serves {uri!r}, not models:/NAME@ALIAS")
    return match["name"], match["alias"]


_GS_URI = re.compile(r"^gs://(?P<bucket>[^/]+)(?:/(?P<prefix>.*))?$")


def artifacts_bucket(tracking_container: dict) -> tuple[str, str]:
    """(bucket, prefix) of `--artifacts-destination gs://BUCKET/PREFIX`."""
    destination = flag_value(tracking_container.get("args", []), "--artifacts-destination")
    match = _GS_URI.match(destination or "")
    if not match:
        raise ManifestError(f"tracking --artifacts-destination is {destination!r}, not gs://BUCKET/PREFIX")
    return match["bucket"], (match["prefix"] or "").strip("/")
