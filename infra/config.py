"""Typed, validated stack settings: read once from Pulumi config, frozen afterwards.

Every key lives in the project namespace (``mlflow-platform:<key>``) except the GCP
provider's own ``gcp:project`` / ``gcp:region`` / ``gcp:zone``. An invalid stack raises
:class:`ConfigError` naming each bad key, its value and what is allowed, before any
resource is declared.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Literal, Optional

import pulumi
from pulumi.runtime import config as pulumi_config
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from infra import cloud_rules
from infra.naming import SERVICE_ACCOUNT_ROLES, service_account_id

PROJECT_NAMESPACE = "mlflow-platform"

# Regions where GKE, Cloud SQL and Artifact Registry are all offered.
KNOWN_REGIONS = (
    "africa-south1", "asia-east1", "asia-east2", "asia-northeast1", "asia-northeast2",
    "asia-northeast3", "asia-south1", "asia-south2", "asia-southeast1", "asia-southeast2",
    "australia-southeast1", "australia-southeast2", "europe-central2", "europe-north1",
    "europe-north2", "europe-southwest1", "europe-west1", "europe-west2", "europe-west3",
    "europe-west4", "europe-west6", "europe-west8", "europe-west9", "europe-west10",
    "europe-west12", "me-central1", "me-central2", "me-west1", "northamerica-northeast1",
    "northamerica-northeast2", "northamerica-south1", "southamerica-east1",
    "southamerica-west1", "us-central1", "us-east1", "us-east4", "us-east5", "us-south1",
    "us-west1", "us-west2", "us-west3", "us-west4",
)
MACHINE_FAMILIES = ("e2", "n1", "n2", "n2d", "n4", "c2", "c2d", "c3", "c3d", "c4", "t2d")
_MACHINE_TYPE = re.compile(
    r"^(?P<family>[a-z0-9]+)-(?:(?:standard|highmem|highcpu)-(?P<cpus>\d+)|micro|small|medium)$"
)
DB_TIER_FORMATS = (
    "db-f1-micro", "db-g1-small", "db-custom-<vCPUs>-<MiB>", "db-perf-optimized-N-<vCPUs>",
)
_DB_CUSTOM = re.compile(r"^db-custom-(?P<cpus>\d+)-(?P<mib>\d+)$")
# Per node pool: the settings naming its machine type and its boot disk type.
_POOL_KEYS = {"platform": ("machine_type", "node_disk_type"),
              "serving": ("serving_machine_type", "serving_node_disk_type")}
_IAM_MEMBER = re.compile(r"^(user|group|serviceAccount|domain):[^\s:]+$")
# IAP's Google-managed OAuth client admits only identities of the project's organization; external users
# would need a custom OAuth client, which the program does not configure
# (https://cloud.google.com/iap/docs/custom-oauth-configuration). What can be told from the name alone:
_IAP_OUTSIDERS = {
    "allUsers": "would make the tracking server public: IAP lets everyone through without signing in",
    "allAuthenticatedUsers": "promises every Google account, yet IAP's Google-managed OAuth client admits only "
                             "identities of the project's organization",
}
_CONSUMER_DOMAINS = ("gmail.com", "googlemail.com")  # consumer Google accounts belong to no organization
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
_IMAGE_BY_DIGEST = re.compile(r"^[a-z0-9.\-/:_]+@sha256:[0-9a-f]{64}$")
_WEEKDAYS = {"MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6, "SUN": 7}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
# The longest namePrefix: every GCP name the program builds fits GCP's rules with it (the tightest, the
# load-test node pool's 40 characters, with 2 to spare), as tests/test_first_up.py checks over both stacks.
NAME_PREFIX_MAX_LENGTH = 12




class ConfigError(ValueError):
    """A stack setting is invalid; the message names every bad key and what is allowed."""


class Settings(BaseModel):
    """Every setting of one stack. Field aliases are the Pulumi config keys."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True,
        validate_default=True,
    )

    # --- where ---------------------------------------------------------------------------
    project: str = Field(description="GCP project id (`gcp:project`).", alias="gcp:project")
    region: str = Field("us-central1", description="GCP region (`gcp:region`).", alias="gcp:region")
    zone: str = Field("us-central1-a", description="Zone of zonal clusters (`gcp:zone`).", alias="gcp:zone")
    environment: Literal["dev", "prod"] = Field(description="Environment; prod enforces protection and backups.")
    decommission: bool = Field(False, description="Deliberate teardown: prod then accepts `clusterDeletionProtection` and `dbDeletionProtection` false and `bucketForceDestroy` true, so a `pulumi up` lifts every protection before `pulumi destroy` (README, Tearing down).")
    name_prefix: str = Field("mlflow", description=(
        f"Prefix of every resource name (lowercase, 3-{NAME_PREFIX_MAX_LENGTH} chars). Set it before the first `up`: "
        "changing it renames every resource, so Pulumi creates a new stack's worth and deletes the old, the "
        "database and the artifact bucket included (prod's protect refuses that in the preview)."))

    # --- network -------------------------------------------------------------------------
    subnet_cidr: str = Field("10.10.0.0/20", description="Primary range of the subnet (nodes).")
    pods_cidr: str = Field("10.16.0.0/14", description="Secondary range for pods.")
    services_cidr: str = Field("10.12.0.0/20", description="Secondary range for services.")
    serving_pods_cidr: str = Field("10.24.0.0/16", description="Secondary range for pods of the serving cluster.")
    serving_services_cidr: str = Field("10.12.16.0/20", description="Secondary range for services of the serving cluster.")
    master_cidr: str = Field("172.16.0.0/28", description="Control-plane range of the platform cluster (/28).")
    serving_master_cidr: str = Field("172.16.0.16/28", description="Control-plane range of the serving cluster (/28).")
    private_services_cidr: str = Field("10.64.0.0/16", description="Range reserved for private services access (Cloud SQL), /24 or larger.")
    master_authorized_cidrs: tuple[str, ...] = Field((), description="CIDRs allowed to reach the control-plane IP endpoint (JSON list); empty allows any (refused in prod unless `controlPlaneEndpoint` is dns).")
    control_plane_endpoint: Literal["ip", "dns"] = Field("ip", description="How kubectl and Pulumi reach the control plane: `ip` (public IP endpoint, limited by `masterAuthorizedCidrs`) or `dns` (public IP endpoint off; DNS endpoint authorized by IAM).")
    tracking_internal_ip: Optional[str] = Field(None, description="Address of tracking's internal load balancer (separate serving cluster); empty takes the subnet's last usable address.")

    # --- clusters ------------------------------------------------------------------------
    regional_cluster: bool = Field(False, description="Regional (3-zone) control plane and nodes; otherwise zonal in `gcp:zone`.")
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = Field("REGULAR", description="GKE release channel.")
    machine_type: str = Field("e2-standard-4", description="Node machine type of the platform cluster.")
    min_nodes: int = Field(1, description="Minimum nodes per zone of the platform pool.")
    max_nodes: int = Field(3, description="Maximum nodes per zone of the platform pool.")
    spot_nodes: bool = Field(False, description="Run the platform pool on Spot VMs (cheap, preemptible).")
    node_disk_size_gb: int = Field(50, description="Boot disk size of each node, GB (20-2000).")
    node_disk_type: Literal["auto", "pd-balanced", "pd-ssd", "hyperdisk-balanced"] = Field("auto", description="Boot disk type of the platform pool; auto: pd-balanced, or hyperdisk-balanced on C4/N4.")
    cluster_deletion_protection: bool = Field(True, description="Refuse to delete the clusters (must be true in prod); on, it or `dbDeletionProtection`, also protects every stateful resource in Pulumi (`protect`).")
    serving_cluster: bool = Field(False, description="Run model serving on a separate GKE cluster.")
    serving_machine_type: str = Field("e2-standard-4", description="Node machine type of the serving cluster.")
    serving_min_nodes: int = Field(1, description="Minimum nodes per zone of the serving pool.")
    serving_max_nodes: int = Field(3, description="Maximum nodes per zone of the serving pool.")
    serving_spot_nodes: bool = Field(False, description="Run the serving pool on Spot VMs.")
    serving_node_disk_type: Literal["auto", "pd-balanced", "pd-ssd", "hyperdisk-balanced"] = Field("auto", description="Boot disk type of the serving pool; auto as for `nodeDiskType`.")

    # --- database ------------------------------------------------------------------------
    db_tier: str = Field("db-custom-1-3840", description="Cloud SQL machine tier.")
    db_edition: Literal["ENTERPRISE", "ENTERPRISE_PLUS"] = Field("ENTERPRISE", description="Cloud SQL edition; must match the tier.")
    db_disk_size_gb: int = Field(20, description="Initial SSD size, GB (10-65536); grows automatically.")
    db_high_availability: bool = Field(False, description="REGIONAL availability (standby in another zone).")
    db_backups: bool = Field(True, description="Automated daily backups (must be true in prod).")
    db_point_in_time_recovery: bool = Field(False, description="Write-ahead-log retention for point-in-time recovery (needs backups).")
    db_backup_retention_count: int = Field(7, description="Automated backups kept (1-365).")
    db_log_retention_days: int = Field(7, description="Days of transaction logs for point-in-time recovery (1-7 ENTERPRISE, 1-35 ENTERPRISE_PLUS).")
    db_deletion_protection: bool = Field(True, description="Refuse to delete the instance, provider- and API-side (must be true in prod); on, it or `clusterDeletionProtection`, also protects every stateful resource in Pulumi (`protect`).")
    db_maintenance_day: Literal["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"] = Field("SUN", description="Maintenance window day.")
    db_maintenance_hour: int = Field(3, description="Maintenance window start hour, UTC (0-23).")

    # --- storage and registry ------------------------------------------------------------
    artifact_nearline_after_days: int = Field(90, description="Move artifacts to Nearline after this many days (1-3650).")
    noncurrent_retention_days: int = Field(30, description="Delete overwritten/deleted artifact versions after this many days (1-3650).")
    bucket_force_destroy: bool = Field(False, description="Let `pulumi destroy` delete a non-empty bucket (must be false in prod).")
    cmek: bool = Field(False, description=(
        "Encrypt Cloud SQL and the artifact bucket with a Cloud KMS key the program holds (must be true in prod). "
        "Decide before the first `up`: turning it on later replaces the Cloud SQL instance (its key cannot change "
        "in place) and so loses its data unless restored; the bucket keeps its objects, new ones use the key."))
    registry_keep_versions: int = Field(10, description="Image versions the registry cleanup policy keeps (1-1000).")

    # --- images --------------------------------------------------------------------------
    tracking_image: Optional[str] = Field(None, description="Prebuilt tracking image by digest (`repo@sha256:…`); empty builds it.")
    serving_image: Optional[str] = Field(None, description="Prebuilt serving image by digest (`repo@sha256:…`); empty builds it.")

    # --- tracking server -----------------------------------------------------------------
    tracking_replicas: int = Field(1, description="Tracking server replicas (1-20).")
    tracking_workers: int = Field(1, description="Server workers per tracking pod (1-8); scale with replicas instead.")
    tracking_cpu: str = Field("500m", description="CPU request of the tracking container.")
    tracking_memory: str = Field("1Gi", description="Memory request and limit of the tracking container.")
    sql_proxy_image: str = Field(
        "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.2@sha256:a77c72c56747cf2f431a4ed5e4a45e62003ca0fb94dc9f0c9cd390e84be2fa0e",
        description="Cloud SQL Auth Proxy image by digest.")
    tracking_job_execution: bool = Field(False, description="Run MLflow's job runner in the server (+~2 GB RSS).")
    ingress_host: Optional[str] = Field(None, description="Public host name; set to expose tracking through an Ingress with a managed certificate.")
    cloud_armor: bool = Field(False, description="Cloud Armor per-client rate limiting on the Ingress (needs `ingressHost`).")
    armor_requests_per_minute: int = Field(600, description="Requests per minute one client IP may make before 429 (10-100000).")
    iap: bool = Field(False, description="Identity-Aware Proxy on the Ingress, with IAP's Google-managed OAuth client, which admits only identities of the project's organization (needs `ingressHost`; GKE 1.29.4+).")
    iap_oauth_client_id: Optional[str] = Field(None, description="OAuth client id that programs (the mlflow-iap-auth plugin) get IAP tokens for: allowed as IAP's programmatic client; its secret is never needed.")
    iap_members: tuple[str, ...] = Field((), description="Who may pass IAP (JSON list of `user:`, `group:`, `serviceAccount:` or `domain:` members of the project's organization: IAP's Google-managed OAuth client admits no one else, so `allUsers`, `allAuthenticatedUsers` and consumer accounts such as `user:…@gmail.com` are refused); needed with `iap`.")
    auth_default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = Field("READ", description="Permission users get on resources they did not create.")
    auth_cache_ttl_seconds: int = Field(300, description="Seconds a verified credential stays cached (0-3600); 0 checks scrypt on every request.")

    # --- observability ---------------------------------------------------------------------
    alerts_enabled: bool = Field(True, description="Alert policies evaluate and notify (dev may turn them off).")
    alert_email: Optional[str] = Field(None, description="E-mail address notified by every alert; empty: none.")
    alert_serving_p99_ms: int = Field(250, description="Alert when serving p99 latency exceeds this, ms (10-60000).")
    alert_serving_error_percent: int = Field(5, description="Alert when serving 5xx exceed this share, percent (1-100).")
    alert_db_storage_percent: int = Field(85, description="Alert when Cloud SQL storage exceeds this, percent (50-99).")

    # --- model serving -------------------------------------------------------------------
    model_name: Optional[str] = Field(None, description="Registered model to serve; empty creates no serving Deployment.")
    model_alias: str = Field("champion", description="Registry alias served (`models:/NAME@ALIAS`).")
    rollout_token: str = Field("", description="Change to roll the serving pods without changing the alias.")
    serving_min_replicas: int = Field(1, description="HPA minimum serving replicas (1-100).")
    serving_max_replicas: int = Field(3, description="HPA maximum serving replicas (1-100).")
    serving_target_cpu_percent: int = Field(70, description="HPA target CPU utilisation, percent (10-95).")
    serving_workers: int = Field(1, description="Server workers per serving pod (1-8); scale with replicas instead.")
    serving_max_batch_size: int = Field(1024, description="Rows one predict answers at most when concurrent requests are batched (1-10000); 1 turns batching off.")
    serving_max_batch_delay_ms: int = Field(2, description="How long a batch waits for requests already arriving, ms (0-100).")
    serving_cpu: str = Field("500m", description="CPU request of the serving container.")
    serving_memory: str = Field("1Gi", description="Memory request and limit of the serving container.")
    serving_env_timeout_seconds: int = Field(300, description="Time limit of restoring a model's recorded environment in a serving pod, seconds (30-1800).")
    serving_env_cache_gi: int = Field(4, description="Size limit of each serving pod's volume of restored model environments, GiB (1-100).")
    private_python_repository: bool = Field(False, description="Also declare a standard Artifact Registry Python repository for private packages, read by serving before PyPI.")

    # --- validators ----------------------------------------------------------------------
    @field_validator("project")
    @classmethod
    def _project_id(cls, value: str) -> str:
        if not _PROJECT_ID.match(value):
            raise ValueError("must be a GCP project id: 6-30 chars, lowercase letters, digits, hyphens, starting with a letter")
        return value

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value not in KNOWN_REGIONS:
            raise ValueError(f"unknown region; allowed: {', '.join(KNOWN_REGIONS)}")
        return value

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(rf"[a-z][a-z0-9-]{{1,{NAME_PREFIX_MAX_LENGTH - 2}}}[a-z0-9]", value):
            raise ValueError(f"must be 3-{NAME_PREFIX_MAX_LENGTH} chars of lowercase letters, digits and hyphens, "
                             "starting with a letter")
        return value

    @field_validator("subnet_cidr", "pods_cidr", "services_cidr", "serving_pods_cidr", "serving_services_cidr",
                     "master_cidr", "serving_master_cidr", "private_services_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            ipaddress.IPv4Network(value, strict=True)
        except ValueError as err:
            raise ValueError(f"must be an IPv4 network in CIDR form with no host bits set, e.g. 10.0.0.0/20 ({err})") from None
        return value

    @field_validator("master_authorized_cidrs", "iap_members", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # the CLI stores structured values as JSON text
            try:
                return json.loads(value) if value.strip() else []
            except json.JSONDecodeError:
                raise ValueError('must be a JSON list, e.g. ["203.0.113.0/24"] or ["group:ml@example.com"]') from None
        return value

    @field_validator("iap_members")
    @classmethod
    def _iap_members(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        organization_only = ("list users, groups, service accounts or the domain of the project's organization "
                             "(IAP's Google-managed OAuth client admits no one else)")
        for member in value:
            if member in _IAP_OUTSIDERS:
                raise ValueError(f"{member!r} {_IAP_OUTSIDERS[member]}; {organization_only}")
            if not _IAM_MEMBER.match(member):
                raise ValueError(f"{member!r} is not an IAM member; allowed: user:EMAIL, group:EMAIL, "
                                 "serviceAccount:EMAIL, domain:DOMAIN")
            if member.startswith("user:") and member.rsplit("@", 1)[-1].lower() in _CONSUMER_DOMAINS:
                raise ValueError(f"{member!r} is a consumer Google account, outside any organization; "
                                 f"{organization_only}")
        return value

    @field_validator("master_authorized_cidrs")
    @classmethod
    def _authorized(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.IPv4Network(cidr, strict=True)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IPv4 CIDR with no host bits set") from None
        return value

    @field_validator("master_cidr", "serving_master_cidr")
    @classmethod
    def _master_size(cls, value: str) -> str:
        if ipaddress.IPv4Network(value).prefixlen != cloud_rules.CONTROL_PLANE_PREFIX:
            raise ValueError(f"GKE control-plane ranges must be exactly /{cloud_rules.CONTROL_PLANE_PREFIX}")
        return value

    @field_validator("private_services_cidr")
    @classmethod
    def _psa_size(cls, value: str) -> str:
        if ipaddress.IPv4Network(value).prefixlen > cloud_rules.PRIVATE_SERVICES_MAX_PREFIX:
            raise ValueError(f"private services access needs a /{cloud_rules.PRIVATE_SERVICES_MAX_PREFIX} "
                             f"or larger range (prefix length 8-{cloud_rules.PRIVATE_SERVICES_MAX_PREFIX})")
        return value

    @field_validator("machine_type", "serving_machine_type")
    @classmethod
    def _machine_type(cls, value: str) -> str:
        match = _MACHINE_TYPE.match(value)
        if not match or match["family"] not in MACHINE_FAMILIES:
            raise ValueError(
                f"unknown machine type; allowed: FAMILY-(standard|highmem|highcpu)-N or e2-micro/small/medium, "
                f"FAMILY one of {', '.join(MACHINE_FAMILIES)}"
            )
        if match["cpus"] is None and match["family"] != "e2":
            raise ValueError("shared-core sizes (micro, small, medium) exist only in the e2 family")
        return value

    @field_validator("db_tier")
    @classmethod
    def _db_tier(cls, value: str) -> str:
        if value in cloud_rules.SHARED_CORE_TIERS or cloud_rules.DB_PERF_TIER.match(value):
            return value
        custom = _DB_CUSTOM.match(value)
        if not custom:
            raise ValueError(f"unknown tier format; allowed: {', '.join(DB_TIER_FORMATS)}")
        cpus, mib = int(custom["cpus"]), int(custom["mib"])
        if cpus != 1 and (cpus % 2 or cpus > 96):
            raise ValueError("db-custom vCPUs must be 1 or an even number up to 96")
        if mib % 256 or not 0.9 * 1024 * cpus <= mib <= 6.5 * 1024 * cpus:
            raise ValueError("db-custom memory must be a multiple of 256 MiB, 0.9-6.5 GiB per vCPU")
        return value

    @field_validator("tracking_image", "serving_image", "sql_proxy_image")
    @classmethod
    def _by_digest(cls, value: Optional[str]) -> Optional[str]:
        if value and not _IMAGE_BY_DIGEST.match(value):
            raise ValueError("must reference the image by digest: REGISTRY/REPO/NAME@sha256:<64 hex>")
        return value or None

    @field_validator("ingress_host")
    @classmethod
    def _host(cls, value: Optional[str]) -> Optional[str]:
        if value and not _HOSTNAME.match(value):
            raise ValueError("must be a fully qualified lowercase DNS name, e.g. mlflow.example.com")
        return value or None

    @field_validator("alert_email")
    @classmethod
    def _email(cls, value: Optional[str]) -> Optional[str]:
        if value and not _EMAIL.match(value):
            raise ValueError("must be an e-mail address, e.g. oncall@example.com")
        return value or None

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: Optional[str]) -> Optional[str]:
        if value and not _MODEL_NAME.match(value):
            raise ValueError("must be 1-128 chars of letters, digits, '_', '.', '-'")
        return value or None

    @field_validator("model_alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]{0,254}", value) or re.fullmatch(r"v\d+", value, re.I):
            raise ValueError("must be letters, digits, '_' or '-', not starting with a digit and not of the form vN")
        return value

    @field_validator("tracking_cpu", "serving_cpu")
    @classmethod
    def _cpu(cls, value: str) -> str:
        if not re.fullmatch(r"[1-9]\d*m|\d+(\.\d+)?", value) or value in ("0", "0.0"):
            raise ValueError("must be a positive Kubernetes CPU quantity, e.g. 500m or 2")
        return value

    @field_validator("tracking_memory", "serving_memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not re.fullmatch(r"[1-9]\d*(Mi|Gi)", value):
            raise ValueError("must be a positive Kubernetes memory quantity in Mi or Gi, e.g. 512Mi or 2Gi")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> "Settings":
        errors: list[str] = []

        def bounded(key: str, low: int, high: int) -> None:
            value = getattr(self, key)
            if not low <= value <= high:
                errors.append(_line(key, value, f"must be between {low} and {high}"))

        for key, low, high in (
            ("min_nodes", 0, 100), ("max_nodes", 1, 100), ("serving_min_nodes", 0, 100),
            ("serving_max_nodes", 1, 100), ("node_disk_size_gb", 20, 2000),
            ("db_disk_size_gb", 10, 65536), ("db_backup_retention_count", 1, 365),
            ("db_maintenance_hour", 0, 23), ("artifact_nearline_after_days", 1, 3650),
            ("noncurrent_retention_days", 1, 3650), ("registry_keep_versions", 1, 1000),
            ("tracking_replicas", 1, 20), ("tracking_workers", 1, 8),
            ("auth_cache_ttl_seconds", 0, 3600), ("serving_min_replicas", 1, 100),
            ("serving_max_replicas", 1, 100), ("serving_target_cpu_percent", 10, 95),
            ("serving_workers", 1, 8), ("serving_max_batch_size", 1, 10_000),
            ("serving_max_batch_delay_ms", 0, 100), ("armor_requests_per_minute", 10, 100_000),
            ("alert_serving_p99_ms", 10, 60_000), ("alert_serving_error_percent", 1, 100),
            ("alert_db_storage_percent", 50, 99),
            ("serving_env_timeout_seconds", 30, 1800), ("serving_env_cache_gi", 1, 100),
        ):
            bounded(key, low, high)

        for low_key, high_key in (("min_nodes", "max_nodes"), ("serving_min_nodes", "serving_max_nodes"),
                                  ("serving_min_replicas", "serving_max_replicas")):
            if getattr(self, low_key) > getattr(self, high_key):
                errors.append(_line(low_key, getattr(self, low_key),
                                    f"must be <= {_key(high_key)} ({getattr(self, high_key)})"))

        if not self.zone.startswith(self.region + "-") or not re.fullmatch(r"[a-f]", self.zone[len(self.region) + 1:]):
            errors.append(_line("zone", self.zone, f"must be a zone of region {self.region}: {self.region}-a … {self.region}-f"))

        errors += self._cloud_rules()
        if self.db_point_in_time_recovery and not self.db_backups:
            errors.append(_line("db_point_in_time_recovery", True, f"needs {_key('db_backups')}=true"))

        for key in ("cloud_armor", "iap"):
            if getattr(self, key) and not self.ingress_host:
                errors.append(_line(key, True, f"needs {_key('ingress_host')}: edge protection sits on the Ingress"))
        if self.iap and not self.iap_members:
            errors.append(_line("iap", True, f"needs {_key('iap_members')}: IAP refuses everyone not granted access"))
        if self.environment == "prod":
            errors += self._prod_problems()
        if errors:
            raise ValueError("\n".join(errors))
        return self

    def _prod_problems(self) -> list[str]:
        """Prod is protected against deletion and loss, encrypted with its own keys, not open to the internet;
        its deletion protection comes off only for a teardown declared as such (`decommission`)."""
        errors = []
        if self.control_plane_endpoint == "ip" and not self.master_authorized_cidrs:
            errors.append(_line("master_authorized_cidrs", [], "must list the ranges you deploy from when "
                                f"environment is prod, or set {_key('control_plane_endpoint')}=dns"))
        protections = ("cluster_deletion_protection", "db_deletion_protection")
        teardown = f" (a deliberate teardown sets {_key('decommission')}=true first)"
        for key in (*protections, "db_backups", "db_point_in_time_recovery"):
            if not getattr(self, key) and not (self.decommission and key in protections):
                errors.append(_line(key, False, "must be true when environment is prod"
                                    + (teardown if key in protections else "")))
        if self.bucket_force_destroy and not self.decommission:
            errors.append(_line("bucket_force_destroy", True, f"must be false when environment is prod{teardown}"))
        if not self.cmek:
            errors.append(_line("cmek", False, "must be true when environment is prod"))
        return errors

    def _cloud_rules(self) -> list[str]:
        """What GCP itself would refuse (infra/cloud_rules.py names each rule's source)."""
        keys = ["subnet_cidr", "pods_cidr", "services_cidr", "master_cidr", "private_services_cidr"]
        if self.serving_cluster:
            keys += ["serving_pods_cidr", "serving_services_cidr", "serving_master_cidr"]
        named = [("gcp:serviceaccount/account:Account", account_id) for account_id in self.service_account_ids.values()]
        named.append(("gcp:storage/bucket:Bucket", self.bucket_name))
        errors = [_line("name_prefix", self.name_prefix, problem)
                  for problem in (cloud_rules.name_problem(*pair) for pair in named) if problem]
        errors += [
            _line(a, getattr(self, a), f"overlaps {_key(b)} ({getattr(self, b)}); ranges must be disjoint")
            for a, b in cloud_rules.overlapping_ranges({key: getattr(self, key) for key in keys})
        ]
        checks = [
            ("db_tier", self.db_tier, cloud_rules.tier_edition_problem(self.db_tier, self.db_edition)),
            ("db_high_availability", True,
             cloud_rules.high_availability_problem(self.db_tier) if self.db_high_availability else None),
            ("db_log_retention_days", self.db_log_retention_days,
             cloud_rules.retention_problem(self.db_backup_retention_count, self.db_log_retention_days)),
        ]
        max_log_days = cloud_rules.max_log_retention_days(self.db_edition)
        if not 1 <= self.db_log_retention_days <= max_log_days:
            checks.append(("db_log_retention_days", self.db_log_retention_days,
                           f"must be between 1 and {max_log_days} for edition {self.db_edition}"))
        if self.tracking_internal_ip:
            checks.append(("tracking_internal_ip", self.tracking_internal_ip,
                           cloud_rules.internal_address_problem(self.subnet_cidr, self.tracking_internal_ip)))
        for machine_key, disk_key in _POOL_KEYS.values():
            disk_type = getattr(self, disk_key)
            if disk_type != "auto":
                checks.append((disk_key, disk_type,
                               cloud_rules.boot_disk_problem(getattr(self, machine_key), disk_type)))
        return errors + [_line(key, value, problem) for key, value, problem in checks if problem]

    # --- derived values ------------------------------------------------------------------
    @property
    def cluster_location(self) -> str:
        return self.region if self.regional_cluster else self.zone

    @property
    def bucket_name(self) -> str:
        """Named, not autonamed: the manifests then show the real artifact destination."""
        return f"{self.project}-{self.name_prefix}-artifacts"

    @property
    def service_account_ids(self) -> dict[str, str]:
        """Workload role -> GCP service account id, unique per namePrefix and environment."""
        return {role: service_account_id(self.name_prefix, role, self.environment) for role in SERVICE_ACCOUNT_ROLES}

    @property
    def tracking_lb_address(self) -> str:
        """Reserved for tracking's internal load balancer."""
        return self.tracking_internal_ip or cloud_rules.last_usable_address(self.subnet_cidr)

    def boot_disk_type(self, pool: Literal["platform", "serving"]) -> str:
        machine_type, disk_type = (getattr(self, key) for key in _POOL_KEYS[pool])
        return cloud_rules.default_boot_disk_type(machine_type) if disk_type == "auto" else disk_type

    @property
    def protect(self) -> bool:
        """Pulumi's `protect` on every stateful resource, so `pulumi destroy` refuses before it deletes anything.
        On wherever deletion protection is: otherwise a destroy deletes the secrets and keys, then stops at the
        protected cluster or instance."""
        return self.cluster_deletion_protection or self.db_deletion_protection

    def open_control_plane(self) -> bool:
        """The control plane's public IP endpoint answers any address (dev only; `make plan` warns)."""
        return self.control_plane_endpoint == "ip" and not self.master_authorized_cidrs

    @property
    def workload_pool(self) -> str:
        return f"{self.project}.svc.id.goog"

    @property
    def maintenance_day_number(self) -> int:
        return _WEEKDAYS[self.db_maintenance_day]


def _key(field_name: str) -> str:
    """The config key a user writes for a field."""
    field = Settings.model_fields[field_name]
    alias = field.alias or to_camel(field_name)
    return alias if ":" in alias else f"{PROJECT_NAMESPACE}:{alias}"


def _line(field_name: str, value: Any, problem: str) -> str:
    return f"{_key(field_name)} = {value!r}: {problem}"


def config_keys() -> dict[str, str]:
    """Field name -> full config key, for documentation and for reading config."""
    return {name: _key(name) for name in Settings.model_fields}


def settings_from_values(values: dict[str, Any]) -> Settings:
    """Validate raw config values keyed by full config key; raise ConfigError on any problem."""
    known = set(config_keys().values())
    unknown = sorted(k for k in values if k.startswith(PROJECT_NAMESPACE + ":") and k not in known)
    if unknown:
        raise ConfigError("\n".join(f"{k}: unknown setting; see the configuration reference in README.md" for k in unknown))
    by_alias = {k.removeprefix(PROJECT_NAMESPACE + ":"): v for k, v in values.items() if k in known}
    try:
        return Settings.model_validate(by_alias)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None


def _describe(err: ValidationError) -> str:
    lines = []
    for problem in err.errors():
        loc = [str(part) for part in problem["loc"]]
        if not loc:  # model-level validator: the message already names keys
            lines.append(problem["msg"].removeprefix("Value error, "))
            continue
        name = loc[0]
        key = _key(name) if name in Settings.model_fields else (
            name if ":" in name else f"{PROJECT_NAMESPACE}:{name}")
        if problem["type"] == "missing":
            lines.append(f"{key}: required setting is missing; set it with `pulumi config set {key} VALUE`")
        else:
            lines.append(f"{key} = {problem.get('input')!r}: {problem['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def load_settings() -> Settings:
    """Read the current stack's config into Settings, failing before any resource exists."""
    present = {**pulumi_config.get_config_env(), **pulumi_config.CONFIG.get()}
    values: dict[str, Any] = {key: "" for key in present if key.startswith(PROJECT_NAMESPACE + ":")}
    for name, key in config_keys().items():
        namespace, _, short = key.partition(":")
        config = pulumi.Config(namespace)
        if Settings.model_fields[name].annotation == tuple[str, ...]:
            raw = config.get_object(short)
        else:
            raw = config.get(short)
        values.pop(key, None)
        if raw is not None and raw != "":
            values[key] = raw
    return settings_from_values(values)
