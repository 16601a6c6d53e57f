"""Every difference between a rendered container and the process `make local` runs for it.

A container of plan/<stack>/k8s/ runs inside the image it names, built here from the real
Dockerfile (tools/local/images.py), as the kubelet runs it (tools/local/container.py): read-only root
filesystem, the pod's uid and gid, the image's env then the container's, each volume at its
mountPath (a local directory of the pod), with its command, args and env exactly as rendered,
except for these cluster-specific things (the complete list; `LocalCommand.changes` names each
one made):

1. Secrets: a `secretKeyRef` env value, or a file of a secret volume, is the value generated for
   this machine (the rendered Secrets are masked); a key the rendered Secret lacks is an error.
   A file of a CSI volume of GKE's Secret Manager add-on is the value of the version its
   SecretProviderClass names, read from the local Secret Manager stand-in (tools/local/secretmanager.py).
2. The Cloud SQL Auth Proxy address of the pod (its sidecar's --address:--port, 127.0.0.1:5432)
   becomes the local Postgres, 127.0.0.1:PORT, in env values, secret values and configMap files.
3. Service DNS names, and a load balancer's static address, in URLs
   (http://mlflow-tracking.mlflow.svc.cluster.local:5000, prod's http://10.10.15.253:5000) become
   http://127.0.0.1:LOCAL_PORT of the workload that Service selects.
4. `--host 0.0.0.0` becomes `--host 127.0.0.1`: the pods share this machine's network, and
   nothing listens beyond it.
5. `--port N` becomes the local port chosen for the workload.
6. `--allowed-hosts LIST` becomes `LIST,127.0.0.1:LOCAL_PORT,127.0.0.1:SERVICE_PORT`: the Host
   headers clients send here, to the pod itself (the manifest's 127.0.0.1:PORT of a port-forward)
   and through the local load balancer standing in for the Service.
7. `$(VAR)` in command and args is expanded from the container env, as the kubelet does
   (after the rules above, so it expands to the local values).
8. `--package-index URL` (the cluster's Artifact Registry) becomes `--package-index ""`: model
   environments are restored from the package index this machine reaches (pypi.org).
9. Google's IAP key URL in an env value becomes the key URL of the local stand-in for IAP
   (tools/local/iap.py), when the platform runs one: the server trusts the stand-in's key as it
   trusts Google's.

The process environment is the image's (PATH, HOME=/tmp, PYTHONPATH, ...) with the manifest env
over it, plus the explicit `extra_env` of a workload (the tracking server's STORAGE_EMULATOR_HOST:
the GCS emulator standing in for GCS). Nothing is inherited from the caller's environment.

Pure functions: no files are written here (`LocalCommand.files` lists what to write).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Optional

import yaml

from k8s.secret_files import CSI_DRIVER, SPC_PROVIDER
from k8s.tracking import GOOGLE_IAP_KEYS_URL
from tools.local.container import Bind, container_argv
from tools.local.images import ImageRoot

SECRET_PLACEHOLDER = "[secret]"
LOCAL_HOST = "127.0.0.1"
CLUSTER_TMP = "/tmp"


class LocalizeError(ValueError):
    """A container refers to something the local platform cannot provide."""


@dataclass(frozen=True)
class LocalSite:
    """Where the cluster's endpoints and files are on this machine, for one pod."""

    image: ImageRoot
    """The built image the containers name."""
    volume_root: Path
    """Local directory of this pod: each volume is a subdirectory named after it."""
    secrets: Mapping[tuple[str, str], str]
    """(secret name, key) -> local value, for the pod's namespace."""
    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """configMap name -> its data (from the rendered ConfigMap)."""
    provider_classes: Mapping[str, dict] = field(default_factory=dict)
    """SecretProviderClass name -> its spec (from the rendered manifests), for the pod's namespace."""
    secret_versions: Mapping[str, str] = field(default_factory=dict)
    """Secret Manager version name (projects/P/secrets/S/versions/V) -> its local value."""
    proxy_address: Optional[str] = None
    """host:port of the pod's Cloud SQL proxy sidecar, if any."""
    postgres_address: Optional[str] = None
    """host:port of the local Postgres that replaces the proxy."""
    services: Mapping[str, str] = field(default_factory=dict)
    """cluster host:port (every DNS form of a Service) -> 127.0.0.1:local port."""
    listen_port: Optional[int] = None
    """Local port this container listens on (replaces --port)."""
    service_port: Optional[int] = None
    """Local port of the load balancer in front of this pod's workload (its Service)."""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Env the cluster gets from elsewhere (e.g. Workload Identity for GCS): explicit per workload."""
    pod_security: Mapping[str, object] = field(default_factory=dict)
    """The pod's securityContext (runAsUser, runAsGroup, fsGroup)."""
    iap_keys_url: Optional[str] = None
    """Key URL of the local stand-in for IAP, if one runs."""


@dataclass(frozen=True)
class LocalCommand:
    env: dict[str, str]
    cwd: Path
    files: dict[Path, tuple[str, int]]
    """Files to write before starting: path -> (text, mode)."""
    changes: list[str]
    """Each difference from the rendered container, secret values masked."""
    secret_env: frozenset[str]
    """Names of env vars whose values are secrets."""
    container_argv: list[str]
    """The container's own command line, as it runs in the image."""
    rootfs: Path
    """The image's root filesystem."""
    binds: list[Bind]
    """The pod's volumes: local directory -> mountPath in the image."""
    fs_group: Optional[int]
    """The pod's fsGroup: group owner of its volumes' files, as the kubelet sets it."""
    user: str
    """uid:gid the container runs as."""
    working_dir: str
    """Its working directory in the image."""

    @property
    def argv(self) -> list[str]:
        """What this machine runs: the launcher of `container_argv` in the image."""
        return container_argv(self.rootfs, self.container_argv, binds=self.binds, user=self.user,
                              working_dir=self.working_dir)


def volume_dir(site: LocalSite, volume_name: str) -> Path:
    return site.volume_root / volume_name


def _mounts(container: dict, volumes: list[dict], site: LocalSite) -> list[tuple[Bind, dict]]:
    """Each volume mount as a bind of the pod's local directory, with its volume, shortest path first
    (a mount inside another lands on top of it); only an emptyDir is writable, and only if the mount
    is not readOnly, as Kubernetes mounts them."""
    by_name = {volume["name"]: volume for volume in volumes}
    result = []
    for mount in container.get("volumeMounts", []):
        volume = by_name.get(mount["name"])
        if volume is None:
            raise LocalizeError(f"container {container['name']!r} mounts unknown volume {mount['name']!r}")
        writable = "emptyDir" in volume and not mount.get("readOnly", False)
        result.append((Bind(volume_dir(site, mount["name"]), mount["mountPath"].rstrip("/") or "/", writable), volume))
    return sorted(result, key=lambda item: len(item[0].target))


def _volume_files(mounts: list[tuple[Bind, dict]], site: LocalSite, rewrite) -> dict[Path, tuple[str, int]]:
    files: dict[Path, tuple[str, int]] = {}
    for bind, volume in mounts:
        local_dir = bind.source
        if "secret" in volume:
            source = volume["secret"]
            name = source["secretName"]
            items = source.get("items") or [{"key": key, "path": key} for (secret, key) in site.secrets
                                            if secret == name]
            for item in items:
                if (name, item["key"]) not in site.secrets:
                    raise LocalizeError(f"volume {volume['name']!r}: no local value for secret {name}/{item['key']}")
                files[local_dir / item["path"]] = (
                    rewrite(site.secrets[(name, item["key"])], f"secret file {name}/{item['key']}"), 0o600)
        elif "configMap" in volume:
            name = volume["configMap"]["name"]
            if name not in site.config_maps:
                raise LocalizeError(f"volume {volume['name']!r}: configMap {name!r} is not in the manifests")
            for key, text in site.config_maps[name].items():
                files[local_dir / key] = (rewrite(text, f"configMap file {name}/{key}"), 0o644)
        elif "csi" in volume:
            files.update(_secret_manager_files(volume, local_dir, site))
        elif "emptyDir" not in volume:
            raise LocalizeError(f"volume {volume['name']!r}: only emptyDir, secret, configMap and CSI volumes of "
                                "the Secret Manager add-on are supported")
    return files


def _secret_manager_files(volume: dict, local_dir: Path, site: LocalSite) -> dict[Path, tuple[str, int]]:
    """The files GKE's Secret Manager add-on mounts for a CSI volume: one per secret of its class."""
    csi = volume["csi"]
    if csi.get("driver") != CSI_DRIVER:
        raise LocalizeError(f"volume {volume['name']!r}: CSI driver {csi.get('driver')!r}; only {CSI_DRIVER} "
                            "(GKE's Secret Manager add-on) is supported")
    name = (csi.get("volumeAttributes") or {}).get("secretProviderClass")
    spec = site.provider_classes.get(name)
    if spec is None:
        raise LocalizeError(f"volume {volume['name']!r}: SecretProviderClass {name!r} is not in the manifests")
    if spec.get("provider") != SPC_PROVIDER:
        raise LocalizeError(f"SecretProviderClass {name!r}: provider {spec.get('provider')!r}; the add-on's is "
                            f"{SPC_PROVIDER!r}")
    files = {}
    for entry in yaml.safe_load(spec.get("parameters", {}).get("secrets", "")) or []:
        version = entry["resourceName"]
        if version not in site.secret_versions:
            raise LocalizeError(f"SecretProviderClass {name!r}: no local value for {version}")
        files[local_dir / entry["path"]] = (site.secret_versions[version], 0o600)
    return files


_URL_HOST = re.compile(r"(?P<scheme>https?://)(?P<hostport>[A-Za-z0-9.\-]+:\d+)")
_VAR_REF = re.compile(r"\$\$|\$\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)")


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined vars are replaced, `$$` is a literal `$`,
    references to undefined vars stay as written."""
    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match["name"], match.group(0))
    return _VAR_REF.sub(replace, text)


def localize_container(container: dict, volumes: list[dict], site: LocalSite) -> LocalCommand:
    """The local process for one rendered container (see the module docstring for every rule)."""
    changes: list[str] = []
    mounts = _mounts(container, volumes, site)

    def rewrite_value(value: str, where: str = "") -> str:
        """Rules 2, 3 and 9, on any env or secret value."""
        if site.iap_keys_url and value == GOOGLE_IAP_KEYS_URL:
            return site.iap_keys_url
        if site.proxy_address and site.postgres_address and site.proxy_address in value:
            value = value.replace(site.proxy_address, site.postgres_address)
            if where:
                changes.append(f"{where}: Cloud SQL proxy {site.proxy_address} -> Postgres {site.postgres_address}")
        return _URL_HOST.sub(
            lambda m: m["scheme"] + site.services.get(m["hostport"], m["hostport"]), value)

    # --- env (rules 1-3, 9) -----------------------------------------------------------------
    env: dict[str, str] = {}
    secret_names: set[str] = set()
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            original = str(entry["value"])
            local = rewrite_value(original)
            if local != original:
                changes.append(f"env {name}: {original} -> {local}")
            env[name] = local
            continue
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            raise LocalizeError(f"container {container['name']!r} env {name}: only value and secretKeyRef are supported")
        key = (ref["name"], ref["key"])
        if key not in site.secrets:
            raise LocalizeError(f"container {container['name']!r} env {name}: no local value for secret "
                                f"{ref['name']}/{ref['key']}")
        changes.append(f"env {name}: secret {ref['name']}/{ref['key']} -> local value")
        env[name] = rewrite_value(site.secrets[key], f"env {name}")
        secret_names.add(name)

    # --- args (rules 4, 5, 6, 8) -----------------------------------------------------
    args = list(container.get("args", []))
    for index, arg in enumerate(args):
        previous = args[index - 1] if index else None
        original = container["args"][index]
        if previous == "--host" and arg == "0.0.0.0":
            args[index] = LOCAL_HOST
        elif previous == "--port" or arg.startswith("--port="):
            if site.listen_port is None:
                raise LocalizeError(f"container {container['name']!r} listens on {arg} but has no local port")
            args[index] = f"--port={site.listen_port}" if arg.startswith("--port=") else str(site.listen_port)
        elif previous == "--package-index":
            args[index] = ""
        elif previous == "--allowed-hosts":
            if site.listen_port is None:
                raise LocalizeError(f"container {container['name']!r} has --allowed-hosts but no local port")
            added = ",".join(f"{LOCAL_HOST}:{port}" for port in dict.fromkeys((site.listen_port, site.service_port))
                             if port is not None)
            args[index] = f"{arg},{added}"
            changes.append(f"arg --allowed-hosts: appended {added}")
            continue
        if args[index] != original:
            label = previous if previous and previous.startswith("-") else f"args[{index}]"
            changes.append(f"arg {label}: {original} -> {args[index]}")

    command = list(container.get("command", []))
    if not command:
        raise LocalizeError(f"container {container['name']!r} has no command: the image default is not rendered")

    # --- $(VAR) (rule 7) -----------------------------------------------------------------
    argv = [expand_vars(part, env) for part in command + args]
    for index, (before, after) in enumerate(zip(command + args, argv)):
        if before != after:
            masked = SECRET_PLACEHOLDER if any(f"$({name})" in before for name in secret_names) else after
            changes.append(f"expand argv[{index}]: {before} -> {masked}")

    # --- process environment: the image's, then the container's (as the kubelet sets it) -----
    tmp = next((bind.source for bind, _ in mounts if bind.target == CLUSTER_TMP), None)
    if tmp is None:
        raise LocalizeError(f"container {container['name']!r} has no /tmp volume (HOME and scratch space)")
    process_env = {**site.image.env, **env}
    for name, value in site.extra_env.items():
        if name in env:
            raise LocalizeError(f"extra env {name} would override the manifest's value")
        process_env[name] = value
        changes.append(f"env {name}: added {value}")

    fs_group = site.pod_security.get("fsGroup")
    return LocalCommand(env=process_env, cwd=tmp, files=_volume_files(mounts, site, rewrite_value), changes=changes,
                        secret_env=frozenset(secret_names), container_argv=argv, rootfs=site.image.path,
                        binds=[bind for bind, _ in mounts], fs_group=int(fs_group) if fs_group is not None else None,
                        user=_run_as(container, site),
                        working_dir=container.get("workingDir") or site.image.working_dir)


def relaunched(command: LocalCommand, argv: list[str], *, env: Optional[dict[str, str]] = None,
               binds: tuple[Bind, ...] = ()) -> LocalCommand:
    """The same container with another command line, environment, or more volumes (a bind at a
    path already mounted replaces that mount): benchmark variants of a rendered container."""
    targets = {bind.target for bind in binds}
    all_binds = sorted([bind for bind in command.binds if bind.target not in targets] + list(binds),
                       key=lambda bind: len(bind.target))
    return replace(command, env=dict(command.env if env is None else env), container_argv=list(argv),
                   binds=all_binds)


def _run_as(container: dict, site: LocalSite) -> str:
    """uid:gid of the container: its securityContext, else the pod's, else the image's USER."""
    context = {**site.pod_security, **(container.get("securityContext") or {})}
    image_user, _, image_group = site.image.user.partition(":")
    uid = context.get("runAsUser", image_user)
    gid = context.get("runAsGroup", image_group or uid)
    return f"{int(uid)}:{int(gid)}"
