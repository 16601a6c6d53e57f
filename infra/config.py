"""Stack settings read once from Pulumi config into the model of `infra/settings.py`.

Each component's settings are one structured key (`mlflow-platform:database`), the GCP provider's
`gcp:project` / `gcp:region` / `gcp:zone` stay its own. An invalid stack raises :class:`ConfigError`
naming each bad key in full (`mlflow-platform:database.tier`), its value and what is allowed, before any
resource is declared. A flat key of the settings before they nested is refused with its new place.
"""

from __future__ import annotations

import json
import re
import shlex
import typing
from typing import Any, Iterator, Optional, Union

import pulumi
from pulumi.runtime import config as pulumi_config
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from infra.settings import Settings

PROJECT_NAMESPACE = "mlflow-platform"

# The flat keys of the settings before they nested by component, and where each went.
FLAT_KEYS = {
    **{key: f"network.{key}" for key in (
        "subnetCidr", "podsCidr", "servicesCidr", "servingPodsCidr", "servingServicesCidr", "masterCidr",
        "servingMasterCidr", "privateServicesCidr", "trackingInternalIp")},
    "masterAuthorizedCidrs": "clusters.masterAuthorizedCidrs", "controlPlaneEndpoint": "clusters.controlPlaneEndpoint",
    "regionalCluster": "clusters.regional", "releaseChannel": "clusters.releaseChannel",
    "nodeDiskSizeGb": "clusters.nodeDiskSizeGb", "clusterDeletionProtection": "clusters.deletionProtection",
    "servingCluster": "clusters.separateServing",
    "machineType": "clusters.platform.machineType", "minNodes": "clusters.platform.minNodes",
    "maxNodes": "clusters.platform.maxNodes", "spotNodes": "clusters.platform.spot",
    "nodeDiskType": "clusters.platform.diskType",
    "servingMachineType": "clusters.serving.machineType", "servingMinNodes": "clusters.serving.minNodes",
    "servingMaxNodes": "clusters.serving.maxNodes", "servingSpotNodes": "clusters.serving.spot",
    "servingNodeDiskType": "clusters.serving.diskType",
    **{f"db{key[0].upper()}{key[1:]}": f"database.{key}" for key in (
        "tier", "edition", "diskSizeGb", "highAvailability", "backups", "pointInTimeRecovery",
        "backupRetentionCount", "logRetentionDays", "deletionProtection", "maintenanceDay", "maintenanceHour")},
    "artifactNearlineAfterDays": "storage.nearlineAfterDays", "noncurrentRetentionDays": "storage.noncurrentRetentionDays",
    "bucketForceDestroy": "storage.forceDestroy", "registryKeepVersions": "storage.registryKeepVersions",
    "trackingImage": "tracking.image", "trackingReplicas": "tracking.replicas", "trackingWorkers": "tracking.workers",
    "trackingCpu": "tracking.cpu", "trackingMemory": "tracking.memory", "trackingJobExecution": "tracking.jobExecution",
    "sqlProxyImage": "tracking.sqlProxyImage", "authDefaultPermission": "tracking.authDefaultPermission",
    "authCacheTtlSeconds": "tracking.authCacheTtlSeconds",
    **{key: f"edge.{key}" for key in (
        "ingressHost", "cloudArmor", "armorRequestsPerMinute", "iap", "iapOauthClientId", "iapMembers")},
    "alertsEnabled": "monitoring.alertsEnabled", "alertEmail": "monitoring.notify.emails",
    "alertServingP99Ms": "monitoring.servingP99Ms", "alertServingErrorPercent": "monitoring.servingErrorPercent",
    "alertDbStoragePercent": "monitoring.dbStoragePercent",
    **{key: f"serving.{key}" for key in ("modelName", "modelAlias", "rolloutToken", "privatePythonRepository")},
    **{f"serving{key[0].upper()}{key[1:]}": f"serving.{key}" for key in (
        "image", "minReplicas", "maxReplicas", "targetCpuPercent", "workers", "maxBatchSize", "maxBatchDelayMs",
        "cpu", "memory", "envTimeoutSeconds", "envCacheGi")},
}
# Settings of the cluster load test, now a Pulumi project of its own (loadtest/).
LOAD_TEST_KEYS = ("loadTesting", "loadTestMachineType", "loadTestWorkers", "loadTestSpotNodes")
_MOVED = FLAT_KEYS.keys() | set(LOAD_TEST_KEYS)
_REF = re.compile(r"«([^»]+)»")
_BOUND_ERRORS = ("greater_than_equal", "less_than_equal", "greater_than", "less_than")


class ConfigError(ValueError):
    """A stack setting is invalid; the message names every bad key and what is allowed."""


def full_key(path: str) -> str:
    """The config key a user writes for a setting's path (`database.tier`); `gcp:` keys are already full."""
    return path if ":" in path else f"{PROJECT_NAMESPACE}:{path}"


def _section_model(annotation: Any) -> Optional[type[BaseModel]]:
    """The settings group a field holds, itself or optional (`serving.challenger`); None for a plain setting."""
    if typing.get_origin(annotation) is Union and type(None) in typing.get_args(annotation):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _section(annotation: Any) -> bool:
    return _section_model(annotation) is not None


def _leaves(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, FieldInfo]]:
    for field in model.model_fields.values():
        path = prefix + field.alias
        section = _section_model(field.annotation)
        if section is not None:
            yield from _leaves(section, path + ".")
        else:
            yield path, field


def setting_fields() -> dict[str, FieldInfo]:
    """Every single setting, by full key (`mlflow-platform:clusters.platform.minNodes`), in model order."""
    return {full_key(path): field for path, field in _leaves(Settings, "")}


def top_level_keys() -> dict[str, FieldInfo]:
    """The keys of the stack file: GCP's, the top-level settings and one structured key per component."""
    return {full_key(field.alias): field for field in Settings.model_fields.values()}


def bounds(field: FieldInfo) -> tuple[Union[int, None], Union[int, None]]:
    """The field's (ge, le), None where unbounded."""
    low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    return low, high


def _field_at(path: list[str]) -> FieldInfo:
    model: type[BaseModel] = Settings
    for part in path:
        field = next(f for f in model.model_fields.values() if f.alias == part)
        model = _section_model(field.annotation) or field.annotation
    return field


def _migration(key: str, value: Any) -> str:
    short = key.removeprefix(PROJECT_NAMESPACE + ":")
    if short in LOAD_TEST_KEYS:
        return (f"{key}: the cluster load test is a Pulumi project of its own now (loadtest/); "
                f"remove the key with `pulumi config rm {key}`")
    new = full_key(FLAT_KEYS[short])
    if (isinstance(_field_at(FLAT_KEYS[short].split(".")).default, tuple) and isinstance(value, str)
            and not value.lstrip().startswith("[")):
        value = [value]  # one value then (alertEmail: an address), a list now (monitoring.notify.emails)
    text = value if isinstance(value, str) else json.dumps(value)
    return (f"{key} = {value!r}: settings nest by component now; its place is {new}: run "
            f"`pulumi config rm {key} && pulumi config set --path {new} {shlex.quote(text)}`")


def settings_from_values(values: dict[str, Any]) -> Settings:
    """Validate raw config values keyed by full config key; raise ConfigError on any problem."""
    known = top_level_keys()
    refused = sorted(_migration(key, value) if key.removeprefix(PROJECT_NAMESPACE + ":") in _MOVED
                     else f"{key}: unknown setting; see the configuration reference in README.md"
                     for key, value in values.items() if key.startswith(PROJECT_NAMESPACE + ":") and key not in known)
    if refused:
        raise ConfigError("\n".join(refused))
    by_alias = {}
    for key, value in values.items():
        if key in known:
            if isinstance(value, str) and _section(known[key].annotation):
                try:  # the engine hands a structured key to the program as JSON text
                    value = json.loads(value)
                except json.JSONDecodeError:
                    raise ConfigError(f"{key} = {value!r}: must be an object; set its fields with "
                                      f"`pulumi config set --path {key}.FIELD VALUE`") from None
            by_alias[key.removeprefix(PROJECT_NAMESPACE + ":")] = value
    try:
        return Settings.model_validate(by_alias)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def _describe(err: ValidationError) -> str:
    lines = []
    for found in err.errors():
        path = [str(part) for part in found["loc"]]
        prefix = "".join(part + "." for part in path)
        message = found["msg"].removeprefix("Value error, ")
        if found["type"] == "value_error" and _REF.search(message):
            # a model's own check: its message names keys relative to the model
            lines.append(_REF.sub(lambda match: full_key(match[1] if ":" in match[1] else prefix + match[1]), message))
            continue
        key = full_key(".".join(path))
        if found["type"] == "missing":
            lines.append(f"{key}: required setting is missing; set it with `pulumi config set {key} VALUE`")
        elif found["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting; see the configuration reference in README.md")
        elif found["type"] in _BOUND_ERRORS:
            low, high = bounds(_field_at(path))
            allowed = f"must be between {low} and {high}" if None not in (low, high) else message
            lines.append(f"{key} = {found.get('input')!r}: {allowed}")
        else:
            lines.append(f"{key} = {found.get('input')!r}: {message}")
    return "\n".join(lines)


def load_settings() -> Settings:
    """Read the current stack's config into Settings, failing before any resource exists."""
    present = {**pulumi_config.get_config_env(), **pulumi_config.CONFIG.get()}
    keys = {key for key in present if key.startswith(PROJECT_NAMESPACE + ":")} | set(top_level_keys())
    values: dict[str, Any] = {}
    for key in keys:
        namespace, _, short = key.partition(":")
        raw = pulumi.Config(namespace).get(short)
        if raw is not None and raw != "":
            values[key] = raw
    return settings_from_values(values)
