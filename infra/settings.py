"""The stack's settings: one frozen pydantic sub-model per component, each bound beside its field.

Each sub-model is one structured Pulumi config key (`mlflow-platform:network`, …) whose fields are set
with `pulumi config set --path mlflow-platform:network.subnetCidr VALUE`. A validator names keys with
`ref("subnetCidr")`, relative to its own model; `infra/config.py` writes them out in full
(`mlflow-platform:network.subnetCidr`) when it reports a refusal.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from infra import cloud_rules
from infra.naming import SERVICE_ACCOUNT_ROLES, service_account_id

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
_BY_DIGEST = "must reference the image by digest: REGISTRY/REPO/NAME@sha256:<64 hex>"
_WEEKDAYS = {"MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6, "SUN": 7}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
# The longest namePrefix: every GCP name the program builds fits GCP's rules with it (the tightest, a GKE
# cluster's or node pool's 40 characters, with room to spare), as tests/test_first_up.py checks over both stacks.
NAME_PREFIX_MAX_LENGTH = 12
SQL_PROXY_IMAGE = ("gcr.io/cloud-sql-connectors/cloud-sql-proxy:2.14.2"
                   "@sha256:a77c72c56747cf2f431a4ed5e4a45e62003ca0fb94dc9f0c9cd390e84be2fa0e")


def ref(path: str) -> str:
    """A config key named in a refusal, relative to the model that refuses (`gcp:` keys are absolute)."""
    return f"«{path}»"


def problem(path: str, value: Any, text: str) -> str:
    return f"{ref(path)} = {value!r}: {text}"


def _refuse(errors: list[str]) -> None:
    if errors:
        raise ValueError("\n".join(errors))


def _cidr(value: str) -> str:
    try:
        ipaddress.IPv4Network(value, strict=True)
    except ValueError as err:
        raise ValueError(f"must be an IPv4 network in CIDR form with no host bits set, e.g. 10.0.0.0/20 ({err})") from None
    return value


def _json_list(value: Any) -> Any:
    if isinstance(value, str):  # `pulumi config set` without --path stores a structured value as JSON text
        try:
            return json.loads(value) if value.strip() else []
        except json.JSONDecodeError:
            raise ValueError('must be a JSON list, e.g. ["203.0.113.0/24"] or ["group:ml@example.com"]') from None
    return value


def _matching(pattern: re.Pattern, allowed: str) -> AfterValidator:
    """An optional text that must match `pattern` when set; empty means not set."""
    def check(value: Optional[str]) -> Optional[str]:
        if value and not pattern.match(value):
            raise ValueError(allowed)
        return value or None
    return AfterValidator(check)


def _pinned(value: str) -> str:
    if not _IMAGE_BY_DIGEST.match(value):
        raise ValueError(_BY_DIGEST)
    return value


def _cpu(value: str) -> str:
    if not re.fullmatch(r"[1-9]\d*m|\d+(\.\d+)?", value) or value in ("0", "0.0"):
        raise ValueError("must be a positive Kubernetes CPU quantity, e.g. 500m or 2")
    return value


# A container's CPU limit is this many times its request: it may burst when the node has room.
CPU_BURST = 2


def cpu_millis(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)m|(\d+(?:\.\d+)?)", quantity)
    if not match:
        raise ValueError(f"cpu quantity {quantity!r}: allowed forms 500m or 1.5")
    return int(match[1]) if match[1] else int(float(match[2]) * 1000)


def cpu_limit_millis(request: str) -> int:
    """A container's CPU limit for its CPU request."""
    return CPU_BURST * cpu_millis(request)


def _memory(value: str) -> str:
    if not re.fullmatch(r"[1-9]\d*(Mi|Gi)", value):
        raise ValueError("must be a positive Kubernetes memory quantity in Mi or Gi, e.g. 512Mi or 2Gi")
    return value


Cidr = Annotated[str, AfterValidator(_cidr)]


def _at_least(max_prefix: int, what: str) -> AfterValidator:
    """A CIDR setting of `max_prefix` or a shorter prefix (a larger range), as GCP requires of `what`."""
    def check(value: str) -> str:
        if ipaddress.IPv4Network(value).prefixlen > max_prefix:
            raise ValueError(f"{what} needs a /{max_prefix} or larger range (prefix length 8-{max_prefix})")
        return value
    return AfterValidator(check)
Unset = Annotated[Optional[str], AfterValidator(lambda value: value or None)]  # "" as the stack file's "not set"
CidrList = Annotated[tuple[str, ...], BeforeValidator(_json_list)]
ImageByDigest = Annotated[Optional[str], _matching(_IMAGE_BY_DIGEST, _BY_DIGEST)]
Cpu = Annotated[str, AfterValidator(_cpu)]
Memory = Annotated[str, AfterValidator(_memory)]


class Section(BaseModel):
    """A group of settings; field names in camelCase are its config keys."""

    # `pulumi config set --path KEY 1` stores the number 1: a text setting takes it as "1".
    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              validate_default=True, coerce_numbers_to_str=True)


# --- network ---------------------------------------------------------------------------------------
class NetworkSettings(Section):
    subnet_cidr: Cidr = Field("10.10.0.0/20", description="Primary range of the subnet (nodes).")
    pods_cidr: Cidr = Field("10.16.0.0/14", description="Secondary range for pods.")
    services_cidr: Cidr = Field("10.12.0.0/20", description="Secondary range for services.")
    serving_pods_cidr: Cidr = Field("10.24.0.0/16", description="Secondary range for pods of the serving cluster.")
    serving_services_cidr: Cidr = Field("10.12.16.0/20", description="Secondary range for services of the serving cluster.")
    master_cidr: Cidr = Field("172.16.0.0/28", description="Control-plane range of the platform cluster (/28).")
    serving_master_cidr: Cidr = Field("172.16.0.16/28", description="Control-plane range of the serving cluster (/28).")
    private_services_cidr: Annotated[Cidr, _at_least(cloud_rules.PRIVATE_SERVICES_MAX_PREFIX, "private services access")] = Field("10.64.0.0/16", description="Range reserved for private services access (Cloud SQL), /24 or larger.")
    proxy_only_cidr: Annotated[Cidr, _at_least(cloud_rules.PROXY_ONLY_MAX_PREFIX, "a proxy-only subnet")] = Field("10.129.0.0/23", description="Proxy-only subnet of the region (/26 or larger, /23 recommended): the source of the serving Gateway's internal load balancer proxies; declared with a served model. Cannot change after the first up (one ACTIVE proxy-only subnet per region and VPC, in use by the Gateway).")
    tracking_internal_ip: Unset = Field(None, description="Address of tracking's internal load balancer (separate serving cluster); empty takes the subnet's last usable address.")

    @field_validator("master_cidr", "serving_master_cidr")
    @classmethod
    def _master_size(cls, value: str) -> str:
        if ipaddress.IPv4Network(value).prefixlen != cloud_rules.CONTROL_PLANE_PREFIX:
            raise ValueError(f"GKE control-plane ranges must be exactly /{cloud_rules.CONTROL_PLANE_PREFIX}")
        return value

    @model_validator(mode="after")
    def _internal_ip_in_subnet(self) -> "NetworkSettings":
        if self.tracking_internal_ip:
            found = cloud_rules.internal_address_problem(self.subnet_cidr, self.tracking_internal_ip)
            _refuse([problem("trackingInternalIp", self.tracking_internal_ip, found)] if found else [])
        return self

    def ranges(self, serving_cluster: bool, serving_gateway: bool) -> dict[str, str]:
        """The ranges in use, by key: they share one routing domain, so they must be disjoint."""
        names = ["subnet_cidr", "pods_cidr", "services_cidr", "master_cidr", "private_services_cidr"]
        if serving_cluster:
            names += ["serving_pods_cidr", "serving_services_cidr", "serving_master_cidr"]
        if serving_gateway:
            names.append("proxy_only_cidr")
        return {to_camel(name): getattr(self, name) for name in names}

    @property
    def tracking_lb_address(self) -> str:
        """Reserved for tracking's internal load balancer."""
        return self.tracking_internal_ip or cloud_rules.last_usable_address(self.subnet_cidr)


# --- clusters --------------------------------------------------------------------------------------
class NodePoolSettings(Section):
    machine_type: str = Field("e2-standard-4", description="Node machine type.")
    min_nodes: int = Field(1, ge=0, le=100, description="Minimum nodes per zone.")
    max_nodes: int = Field(3, ge=1, le=100, description="Maximum nodes per zone.")
    spot: bool = Field(False, description="Run the pool on Spot VMs (cheap, preemptible).")
    disk_type: Literal["auto", "pd-balanced", "pd-ssd", "hyperdisk-balanced"] = Field(
        "auto", description="Boot disk type; auto: pd-balanced, or hyperdisk-balanced on C4/N4.")

    @field_validator("machine_type")
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

    @model_validator(mode="after")
    def _consistent(self) -> "NodePoolSettings":
        errors = []
        if self.min_nodes > self.max_nodes:
            errors.append(problem("minNodes", self.min_nodes, f"must be <= {ref('maxNodes')} ({self.max_nodes})"))
        if self.disk_type != "auto":
            found = cloud_rules.boot_disk_problem(self.machine_type, self.disk_type)
            errors += [problem("diskType", self.disk_type, found)] if found else []
        _refuse(errors)
        return self

    @property
    def boot_disk_type(self) -> str:
        return cloud_rules.default_boot_disk_type(self.machine_type) if self.disk_type == "auto" else self.disk_type


class ClustersSettings(Section):
    regional: bool = Field(False, description="Regional (3-zone) control planes and nodes; otherwise zonal in `gcp:zone`.")
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = Field("REGULAR", description="GKE release channel.")
    node_disk_size_gb: int = Field(50, ge=20, le=2000, description="Boot disk size of each node, GB.")
    deletion_protection: bool = Field(True, description="Refuse to delete the clusters (must be true in prod); on, it or `database.deletionProtection`, also protects every stateful resource in Pulumi (`protect`).")
    control_plane_endpoint: Literal["ip", "dns"] = Field("dns", description="How kubectl and Pulumi reach the control planes: `dns` (public IP endpoint off; DNS endpoint authorized by IAM) or `ip` (public IP endpoint, limited by `masterAuthorizedCidrs`).")
    master_authorized_cidrs: CidrList = Field((), description="CIDRs allowed to reach the control-plane IP endpoint; empty allows any (refused in prod unless `controlPlaneEndpoint` is dns).")
    separate_serving: bool = Field(False, description="Run model serving on a cluster of its own (pool `serving`).")
    platform: NodePoolSettings = Field(NodePoolSettings(), description="Node pool of the platform cluster.")
    serving: NodePoolSettings = Field(NodePoolSettings(), description="Node pool of the serving cluster (with `separateServing`).")

    @field_validator("master_authorized_cidrs")
    @classmethod
    def _authorized(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.IPv4Network(cidr, strict=True)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IPv4 CIDR with no host bits set") from None
        return value

    @property
    def dns_endpoint(self) -> bool:
        """The public IP endpoint is off; clients reach the control plane by its DNS name, authorized by IAM."""
        return self.control_plane_endpoint == "dns"

    def open_control_plane(self) -> bool:
        """The control plane's public IP endpoint answers any address (dev only; `make plan` warns)."""
        return not self.dns_endpoint and not self.master_authorized_cidrs


# --- database --------------------------------------------------------------------------------------
class DatabaseSettings(Section):
    tier: str = Field("db-custom-1-3840", description="Cloud SQL machine tier.")
    edition: Literal["ENTERPRISE", "ENTERPRISE_PLUS"] = Field("ENTERPRISE", description="Cloud SQL edition; must match the tier.")
    disk_size_gb: int = Field(10, ge=10, le=65536, description="Initial SSD size, GB; grows automatically.")
    high_availability: bool = Field(False, description="REGIONAL availability (standby in another zone).")
    backups: bool = Field(True, description="Automated daily backups (must be true in prod).")
    point_in_time_recovery: bool = Field(False, description="Write-ahead-log retention for point-in-time recovery (needs backups; must be true in prod).")
    backup_retention_count: int = Field(3, ge=1, le=365, description="Automated backups kept.")
    log_retention_days: int = Field(1, description="Days of transaction logs for point-in-time recovery (1-7 ENTERPRISE, 1-35 ENTERPRISE_PLUS).")
    deletion_protection: bool = Field(True, description="Refuse to delete the instance, provider- and API-side (must be true in prod); on, it or `clusters.deletionProtection`, also protects every stateful resource in Pulumi (`protect`).")
    maintenance_day: Literal["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"] = Field("SUN", description="Maintenance window day.")
    maintenance_hour: int = Field(3, ge=0, le=23, description="Maintenance window start hour, UTC.")

    @field_validator("tier")
    @classmethod
    def _tier(cls, value: str) -> str:
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

    @model_validator(mode="after")
    def _cloud_sql_rules(self) -> "DatabaseSettings":
        """What Cloud SQL itself would refuse (infra/cloud_rules.py names each rule's source)."""
        checks = [
            ("tier", self.tier, cloud_rules.tier_edition_problem(self.tier, self.edition)),
            ("highAvailability", True,
             cloud_rules.high_availability_problem(self.tier) if self.high_availability else None),
            ("logRetentionDays", self.log_retention_days,
             cloud_rules.retention_problem(self.backup_retention_count, self.log_retention_days)),
            ("pointInTimeRecovery", True,
             f"needs {ref('backups')}=true" if self.point_in_time_recovery and not self.backups else None),
        ]
        max_log_days = cloud_rules.max_log_retention_days(self.edition)
        if not 1 <= self.log_retention_days <= max_log_days:
            checks.append(("logRetentionDays", self.log_retention_days,
                           f"must be between 1 and {max_log_days} for edition {self.edition}"))
        _refuse([problem(key, value, found) for key, value, found in checks if found])
        return self

    @property
    def maintenance_day_number(self) -> int:
        return _WEEKDAYS[self.maintenance_day]


# --- storage and registry --------------------------------------------------------------------------
class StorageSettings(Section):
    nearline_after_days: int = Field(30, ge=1, le=3650, description="Move artifacts to Nearline after this many days.")
    noncurrent_retention_days: int = Field(7, ge=1, le=3650, description="Delete overwritten/deleted artifact versions after this many days.")
    force_destroy: bool = Field(False, description="Let `pulumi destroy` delete a non-empty bucket (must be false in prod).")
    registry_keep_versions: int = Field(5, ge=1, le=1000, description="Image versions the registry cleanup policy keeps.")


# --- tracking server -------------------------------------------------------------------------------
class TrackingSettings(Section):
    image: ImageByDigest = Field(None, description="Prebuilt tracking image by digest (`repo@sha256:…`); empty builds it.")
    replicas: int = Field(1, ge=1, le=20, description="Tracking server replicas.")
    workers: int = Field(1, ge=1, le=8, description="Server workers per tracking pod; scale with replicas instead.")
    cpu: Cpu = Field("250m", description="CPU request of the tracking container.")
    memory: Memory = Field("1Gi", description="Memory request and limit of the tracking container.")
    job_execution: bool = Field(False, description="Run MLflow's job runner in the server (+~2 GB RSS).")
    sql_proxy_image: Annotated[str, AfterValidator(_pinned)] = Field(SQL_PROXY_IMAGE, description="Cloud SQL Auth Proxy image by digest.")
    auth_default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = Field("READ", description="Permission users get on resources they did not create.")
    auth_cache_ttl_seconds: int = Field(300, ge=0, le=3600, description="Seconds a verified credential stays cached; 0 checks scrypt on every request.")


# --- edge: Ingress, Cloud Armor, IAP ---------------------------------------------------------------
class EdgeSettings(Section):
    ingress_host: Annotated[Optional[str], _matching(
        _HOSTNAME, "must be a fully qualified lowercase DNS name, e.g. mlflow.example.com")] = Field(None, description="Public host name; set to expose tracking through an Ingress with a managed certificate.")
    cloud_armor: bool = Field(False, description="Cloud Armor per-client rate limiting on the Ingress (needs `ingressHost`).")
    armor_requests_per_minute: int = Field(600, ge=10, le=100_000, description="Requests per minute one client IP may make before 429.")
    iap: bool = Field(False, description="Identity-Aware Proxy on the Ingress, with IAP's Google-managed OAuth client, which admits only identities of the project's organization (needs `ingressHost`; GKE 1.29.4+).")
    iap_oauth_client_id: Unset = Field(None, description="OAuth client id that programs (the mlflow-iap-auth plugin) get IAP tokens for: allowed as IAP's programmatic client; its secret is never needed.")
    iap_backend_service_id: Annotated[Optional[str], _matching(re.compile(r"^\d+$"), "must be the numeric id of the Ingress's backend service")] = Field(None, description="Numeric id of the backend service the GKE Ingress made for tracking, known after the first `up` (IAP console: the backend's More menu → Signed Header JWT Audience; or README, Access): pins the audience the tracking server accepts in IAP's assertions to it; empty accepts any backend service of this project, so `make plan` warns. It changes when the Ingress is recreated: re-pin it.")
    iap_members: Annotated[tuple[str, ...], BeforeValidator(_json_list)] = Field((), description="Who may pass IAP (`user:`, `group:`, `serviceAccount:` or `domain:` members of the project's organization: IAP's Google-managed OAuth client admits no one else, so `allUsers`, `allAuthenticatedUsers` and consumer accounts such as `user:…@gmail.com` are refused); needed with `iap`.")

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

    @model_validator(mode="after")
    def _needs_an_ingress(self) -> "EdgeSettings":
        errors = [problem(key, True, f"needs {ref('ingressHost')}: edge protection sits on the Ingress")
                  for key, on in (("cloudArmor", self.cloud_armor), ("iap", self.iap)) if on and not self.ingress_host]
        if self.iap and not self.iap_members:
            errors.append(problem("iap", True, f"needs {ref('iapMembers')}: IAP refuses everyone not granted access"))
        _refuse(errors)
        return self


# --- access: teams and what they may do in MLflow ---------------------------------------------------
# MLflow's permissions a team rule may grant; NO_PERMISSIONS becomes MLflow's explicit DENY, which wins over any
# other grant the team's members hold on the resource.
TEAM_PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
TeamPermission = Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"]
_TEAM_NAME = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
# Whom IAP's assertion names (its `email`): a person, a service account, or everyone of a domain. Groups are
# refused: the assertion carries no group membership, so MLflow could not tell who is in one.
_TEAM_MEMBER = re.compile(r"^(?:(?:user|serviceAccount):[^@\s:]+@|domain:)(?:[a-z0-9-]+\.)+[a-z]{2,63}$")
_TEAM_MEMBER_FORMS = "user:EMAIL, serviceAccount:EMAIL or domain:DOMAIN (lowercase; IAP's assertion names no group)"


def _team_member(value: str) -> str:
    if not _TEAM_MEMBER.match(value):
        raise ValueError(f"{value!r} is not a team member; allowed: {_TEAM_MEMBER_FORMS}")
    return value


def iap_admits(member: str, iap_members: tuple[str, ...]) -> bool:
    """Whether `edge.iapMembers` lets a team member through IAP, as far as the names tell: the member itself,
    any group (who is in it cannot be known here) or, for a user or a domain, its domain or a parent of it.
    Never a `domain:` for a service account: service accounts are not members of the Workspace domain
    (https://cloud.google.com/iam/docs/service-account-overview)."""
    if member in iap_members or any(granted.startswith("group:") for granted in iap_members):
        return True
    kind, _, name = member.partition(":")
    if kind == "serviceAccount":
        return False
    labels = name.rsplit("@", 1)[-1].split(".")
    return any(f"domain:{'.'.join(labels[i:])}" in iap_members for i in range(len(labels) - 1))


def _json_object(value: Any) -> Any:
    if isinstance(value, str):  # `pulumi config set` without --path stores a structured value as JSON text
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError('must be a JSON object, e.g. {"fraud-": "EDIT"}') from None
    return value


PrefixRules = Annotated[dict[str, TeamPermission], BeforeValidator(_json_object)]


def overlapping_prefixes(prefixes: list[str]) -> list[tuple[str, str]]:
    """(shorter, longer) pairs where one prefix starts the other: a name matching both would get two answers."""
    ordered = sorted(prefixes)
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:] if b.startswith(a)]


class TeamSettings(Section):
    members: Annotated[tuple[Annotated[str, AfterValidator(_team_member)], ...], BeforeValidator(_json_list)] = Field(
        (), description=f"Who is in the team: {_TEAM_MEMBER_FORMS}.")
    experiments: PrefixRules = Field({}, description="Experiment name prefix -> permission (READ, EDIT, MANAGE or NO_PERMISSIONS) on every experiment whose name starts with it.")
    models: PrefixRules = Field({}, description="Registered model name prefix -> permission (READ, EDIT, MANAGE or NO_PERMISSIONS) on every registered model whose name starts with it.")

    @model_validator(mode="after")
    def _no_overlap(self) -> "TeamSettings":
        _refuse([problem(f"{key}.{longer}", rules[longer], f"overlaps the rule for prefix {shorter!r} "
                         f"({rules[shorter]}): a name starting with {longer!r} matches both; keep one")
                 for key, rules in (("experiments", self.experiments), ("models", self.models))
                 for shorter, longer in overlapping_prefixes(list(rules))])
        return self


class AccessSettings(Section):
    teams: dict[str, TeamSettings] = Field({}, description="Teams by name (lowercase letters, digits, hyphens), each `{members: [user:EMAIL | serviceAccount:EMAIL | domain:DOMAIN], experiments: {NAME_PREFIX: PERMISSION}, models: {NAME_PREFIX: PERMISSION}}` with PERMISSION one of READ, EDIT, MANAGE, NO_PERMISSIONS; applied by the access Job on every `up` and every 10 minutes, and what the settings no longer grant is removed (README, Access). Needs `edge.iap`: people and service accounts are who IAP says they are.")

    @field_validator("teams", mode="before")
    @classmethod
    def _team_names(cls, value: Any) -> Any:
        value = _json_object(value)
        if isinstance(value, dict):
            bad = [name for name in value if not _TEAM_NAME.match(name)]
            if bad:
                raise ValueError(f"team names {bad} must be 2-40 lowercase letters, digits and hyphens, "
                                 "starting with a letter")
        return value


# --- observability ---------------------------------------------------------------------------------
_CRON_FIELD = r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*"


def _cron(value: str) -> str:
    if not re.fullmatch(rf"{_CRON_FIELD}( {_CRON_FIELD}){{4}}", value):
        raise ValueError("must be a five-field cron schedule of numbers, ranges, lists, steps and *, e.g. 0 * * * *")
    return value


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("must be an e-mail address, e.g. oncall@example.com")
    return value


class DriftSettings(Section):
    schedule: Annotated[str, AfterValidator(_cron)] = Field("0 * * * *", description="When the drift job runs (cron, in the cluster's time zone, UTC).")
    window_hours: int = Field(24, ge=1, le=744, description="Hours of logged requests each run scores.")
    psi_threshold: float = Field(0.2, gt=0, le=10, description="PSI above which a column has drifted: the drift alert fires (0.1: moderate, 0.2: significant, the usual conventions).")
    min_rows: int = Field(100, ge=10, le=1_000_000, description="A version with fewer logged rows in the window is not scored (PSI of a few rows is noise).")


class NotifySettings(Section):
    emails: Annotated[tuple[Annotated[str, AfterValidator(_email)], ...], BeforeValidator(_json_list)] = Field(
        (), description="Addresses notified of every alert, registry event, refused promotion, rollback and drift; one e-mail channel each.")
    chat: bool = Field(False, description="Also post every notification to a chat webhook (Google Chat, Slack) whose URL the Secret Manager secret `chat-webhook-url` holds: `make chat-webhook` sets it. Alerts reach a Pub/Sub channel the notification receiver relays; the URL is never in config, state or plans.")


class MonitoringSettings(Section):
    @model_validator(mode="before")
    @classmethod
    def _alert_email(cls, data: Any) -> Any:
        """A stack set before `notify.emails` holds `alertEmail` (one address): it becomes that list."""
        if isinstance(data, dict) and "alertEmail" in data:
            data = dict(data)
            address = data.pop("alertEmail")
            notify = dict(data.get("notify") or {})
            if address and "emails" not in notify:
                notify["emails"] = [address]
            data["notify"] = notify
        return data

    alerts_enabled: bool = Field(True, description="Alert policies evaluate and notify (dev may turn them off).")
    notify: NotifySettings = Field(NotifySettings(), description="Who is notified, and how.")
    drift: DriftSettings = Field(DriftSettings(), description="The drift job (with serving and its payload log).")
    serving_p99_ms: int = Field(250, ge=10, le=60_000, description="Alert when serving p99 latency exceeds this, ms.")
    serving_error_percent: int = Field(5, ge=1, le=100, description="Alert when serving 5xx exceed this share, percent.")
    db_storage_percent: int = Field(85, ge=50, le=99, description="Alert when Cloud SQL storage exceeds this, percent.")


# --- model serving ---------------------------------------------------------------------------------
MAX_SERVING_WORKERS = 8


ColumnNames = Annotated[tuple[Annotated[str, Field(min_length=1)], ...], BeforeValidator(_json_list)]


class RedactSettings(Section):
    drop: ColumnNames = Field((), description="Input columns never logged: absent from every payload entry.")
    hash: ColumnNames = Field((), description="Input columns logged as `h:` + HMAC-SHA256 (hex, 128 bits) of the value with the stack's key (Secret Manager secret `payload-hash-key`): joinable and countable, not readable.")

    @model_validator(mode="after")
    def _disjoint(self) -> "RedactSettings":
        errors = [problem(key, list(names), "names a column twice") for key, names in (("drop", self.drop),
                  ("hash", self.hash)) if len(set(names)) != len(names)]
        both = sorted(set(self.drop) & set(self.hash))
        if both:
            errors.append(problem("hash", both, f"also in {ref('drop')}: a column is either dropped or hashed"))
        _refuse(errors)
        return self


class PayloadLogSettings(Section):
    sample_rate: float = Field(0.0, ge=0, le=1, description="Share of `/invocations` requests logged with their inputs (redacted) and outputs, sampled in the pod; 0 logs none and costs nothing on the request path.")
    redact: RedactSettings = Field(RedactSettings(), description="Input columns redacted in the pod before an entry is written.")
    retention_days: int = Field(30, ge=1, le=3650, description="Days the BigQuery dataset keeps each day's partition of payload entries (partition expiry).")


def _alias(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]{0,254}", value) or re.fullmatch(r"v\d+", value, re.I):
        raise ValueError("must be letters, digits, '_' or '-', not starting with a digit and not of the form vN")
    return value


Alias = Annotated[str, AfterValidator(_alias)]


class ChallengerSettings(Section):
    alias: Alias = Field("challenger", description="Registry alias the challenger Deployment serves (`models:/NAME@ALIAS`); must differ from `modelAlias`.")
    weight: int = Field(0, ge=0, le=100, description="Share of requests the challenger answers, percent; the champion answers the rest.")
    mirror: bool = Field(False, description="The challenger gets a copy of every request and its answers are discarded (needs `weight` 0).")

    @model_validator(mode="after")
    def _split_or_mirror(self) -> "ChallengerSettings":
        if self.mirror and self.weight:
            _refuse([problem("weight", self.weight, f"must be 0 when {ref('mirror')}=true: a request is either "
                             "split or mirrored, never both")])
        return self


def _steps(value: tuple[int, ...]) -> tuple[int, ...]:
    allowed = ("must be strictly increasing percentages, each 1-100, the last 100 and at least one below it (the "
               "champion's numbers with traffic are the baseline), e.g. [10, 50, 100]")
    if len(value) < 2 or value[-1] != 100 or any(not 1 <= step <= 100 for step in value) or \
            any(later <= earlier for earlier, later in zip(value, value[1:])):
        raise ValueError(allowed)
    return value


class CanarySettings(Section):
    steps: Annotated[tuple[int, ...], BeforeValidator(_json_list), AfterValidator(_steps)] = Field(
        (10, 50, 100), description="Challenger weights `make promote STRATEGY=canary` goes through, percent; strictly increasing, the last 100, at least one below it.")
    window_seconds: int = Field(60, ge=10, le=3600, description="Observation window of each canary step, seconds; at least 60 on GKE (two Managed Prometheus scrapes), shorter only on make local.")
    min_requests: int = Field(100, ge=1, le=1_000_000, description="Challenger requests a step needs in its window; with fewer it waits (up to 5 windows), then fails as not enough traffic.")
    max_error_rate_increase: float = Field(1.0, ge=0, le=100, description="Breach when the challenger's share of errors (answers >= 400: a model raising answers 400) exceeds the champion's by more than this, percentage points.")
    max_p99_ratio: float = Field(1.5, ge=1, le=100, description="Breach when the challenger's p99 latency exceeds this many times the champion's (and 10 ms).")


class ServingSettings(Section):
    model_name: Annotated[Optional[str], _matching(
        _MODEL_NAME, "must be 1-128 chars of letters, digits, '_', '.', '-'")] = Field(None, description="Registered model to serve; empty creates no serving Deployment.")
    model_alias: Alias = Field("champion", description="Registry alias served (`models:/NAME@ALIAS`): the champion track.")
    rollout_token: str = Field("", description="Change to roll the serving pods without changing the alias.")
    image: ImageByDigest = Field(None, description="Prebuilt serving image by digest (`repo@sha256:…`); empty builds it.")
    min_replicas: int = Field(1, ge=1, le=100, description="HPA minimum serving replicas.")
    max_replicas: int = Field(2, ge=1, le=100, description="HPA maximum serving replicas.")
    target_cpu_percent: int = Field(70, ge=10, le=95, description="HPA target CPU utilisation, percent.")
    workers: Optional[int] = Field(None, ge=1, le=MAX_SERVING_WORKERS, description="Server processes per serving pod, each batching on its own core; empty: one per whole core of the pod's CPU limit (twice `cpu`), at least one. Every process loads the model: memory grows with them.")
    max_batch_size: int = Field(1024, ge=1, le=10_000, description="Rows one predict answers at most when concurrent requests are batched; 1 turns batching off.")
    max_batch_delay_ms: int = Field(2, ge=0, le=100, description="How long a batch waits for requests already arriving, ms.")
    cpu: Cpu = Field("250m", description="CPU request of the serving container.")
    memory: Memory = Field("1Gi", description="Memory request and limit of the serving container.")
    env_timeout_seconds: int = Field(300, ge=30, le=1800, description="Time limit of restoring a model's recorded environment in a serving pod, seconds.")
    env_cache_gi: int = Field(4, ge=1, le=100, description="Size limit of each serving pod's volume of restored model environments, GiB.")
    private_python_repository: bool = Field(False, description="Also declare a standard Artifact Registry Python repository for private packages, read by serving before PyPI.")
    challenger: Optional[ChallengerSettings] = Field(None, description="A second track: its own Deployment serving another alias beside the champion, given `weight` percent of the requests through the serving Gateway (or a mirrored copy); empty: none.")
    canary: CanarySettings = Field(CanarySettings(), description="Steps and thresholds of `make promote STRATEGY=canary`.")
    payload_log: PayloadLogSettings = Field(PayloadLogSettings(), description="Request logging: a sample of `/invocations` with redacted inputs, routed by a Cloud Logging sink to a BigQuery dataset (README, Payload log).")

    @model_validator(mode="after")
    def _replicas(self) -> "ServingSettings":
        errors = []
        if self.min_replicas > self.max_replicas:
            errors.append(problem("minReplicas", self.min_replicas, f"must be <= {ref('maxReplicas')} ({self.max_replicas})"))
        if self.challenger and self.challenger.alias == self.model_alias:
            errors.append(problem("challenger.alias", self.challenger.alias, f"must differ from {ref('modelAlias')}: "
                                  "the two tracks serve different aliases"))
        if self.workers is not None and self.workers > self.cores:
            errors.append(problem("workers", self.workers, (
                f"must be <= {self.cores}, the whole cores of the pod's CPU limit ({CPU_BURST} × {ref('cpu')} = "
                f"{cpu_limit_millis(self.cpu)}m): a worker without a core of its own only adds memory; "
                f"raise {ref('cpu')} or leave {ref('workers')} unset")))
        _refuse(errors)
        return self

    @property
    def cores(self) -> int:
        """Whole cores of the serving container's CPU limit, at least one."""
        return max(1, cpu_limit_millis(self.cpu) // 1000)

    @property
    def server_workers(self) -> int:
        """Server processes per pod: as set, or one per core of the CPU limit, at most the setting's bound."""
        return self.workers or min(self.cores, MAX_SERVING_WORKERS)


# --- the stack -------------------------------------------------------------------------------------
class Settings(Section):
    """Every setting of one stack. Top-level keys are `mlflow-platform:<key>`, except GCP's own."""

    project: str = Field(description="GCP project id (`gcp:project`).", alias="gcp:project")
    region: str = Field("us-central1", description="GCP region (`gcp:region`).", alias="gcp:region")
    zone: str = Field("us-central1-a", description="Zone of zonal clusters (`gcp:zone`).", alias="gcp:zone")
    environment: Literal["dev", "prod"] = Field(description="Environment; prod enforces protection and backups.")
    decommission: bool = Field(False, description="Deliberate teardown: prod then accepts `clusters.deletionProtection` and `database.deletionProtection` false and `storage.forceDestroy` true, so a `pulumi up` lifts every protection before `pulumi destroy` (README, Tearing down).")
    name_prefix: str = Field("mlflow", description=(
        f"Prefix of every resource name (lowercase, 3-{NAME_PREFIX_MAX_LENGTH} chars). Set it before the first `up`: "
        "changing it renames every resource, so Pulumi creates a new stack's worth and deletes the old, the "
        "database and the artifact bucket included (prod's protect refuses that in the preview)."))
    cmek: bool = Field(False, description=(
        "Encrypt Cloud SQL and the artifact bucket with a Cloud KMS key the program holds (must be true in prod). "
        "Decide before the first `up`: turning it on later replaces the Cloud SQL instance (its key cannot change "
        "in place) and so loses its data unless restored; the bucket keeps its objects, new ones use the key."))
    network: NetworkSettings = Field(NetworkSettings(), description="Address ranges of the VPC, the clusters and private services access.")
    clusters: ClustersSettings = Field(ClustersSettings(), description="The GKE clusters and their node pools.")
    database: DatabaseSettings = Field(DatabaseSettings(), description="The Cloud SQL instance.")
    storage: StorageSettings = Field(StorageSettings(), description="The artifact bucket and the image registry.")
    tracking: TrackingSettings = Field(TrackingSettings(), description="The tracking server.")
    serving: ServingSettings = Field(ServingSettings(), description="Model serving.")
    edge: EdgeSettings = Field(EdgeSettings(), description="Public exposure of tracking: Ingress, Cloud Armor, IAP.")
    access: AccessSettings = Field(AccessSettings(), description="Teams and their permissions in MLflow.")
    monitoring: MonitoringSettings = Field(MonitoringSettings(), description="Alert policies.")

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

    @model_validator(mode="after")
    def _across_components(self) -> "Settings":
        errors: list[str] = []
        if not self.zone.startswith(self.region + "-") or not re.fullmatch(r"[a-f]", self.zone[len(self.region) + 1:]):
            errors.append(problem("gcp:zone", self.zone, f"must be a zone of region {self.region}: {self.region}-a … {self.region}-f"))
        named = [("gcp:serviceaccount/account:Account", account_id) for account_id in self.service_account_ids.values()]
        named.append(("gcp:storage/bucket:Bucket", self.bucket_name))
        errors += [problem("namePrefix", self.name_prefix, found)
                   for found in (cloud_rules.name_problem(*pair) for pair in named) if found]
        ranges = self.network.ranges(self.clusters.separate_serving, bool(self.serving.model_name))
        errors += [problem(f"network.{a}", ranges[a], f"overlaps {ref(f'network.{b}')} ({ranges[b]}); ranges must be disjoint")
                   for a, b in cloud_rules.overlapping_ranges(ranges)]
        if self.access.teams and not self.edge.iap:
            errors.append(problem("access.teams", sorted(self.access.teams), f"needs {ref('edge.iap')}=true: team "
                                  "members are who IAP's assertion says they are, and without it they cannot sign in"))
        errors += [problem(f"access.teams.{name}.members", member, f"is not let through by {ref('edge.iapMembers')} "
                           f"{list(self.edge.iap_members)}: add it there (a domain: admits that domain's users, "
                           "not service accounts)")
                   for name, team in sorted(self.access.teams.items()) for member in team.members
                   if self.edge.iap and not iap_admits(member, self.edge.iap_members)]
        if self.environment == "prod":
            errors += self._prod_problems()
        _refuse(errors)
        return self

    def _prod_problems(self) -> list[str]:
        """Prod is protected against deletion and loss, encrypted with its own keys, not open to the internet;
        its deletion protection comes off only for a teardown declared as such (`decommission`)."""
        errors = []
        if self.clusters.open_control_plane():
            errors.append(problem("clusters.masterAuthorizedCidrs", [], "must list the ranges you deploy from when "
                                  f"environment is prod, or set {ref('clusters.controlPlaneEndpoint')}=dns"))
        teardown = f" (a deliberate teardown sets {ref('decommission')}=true first)"
        for key, on in (("clusters.deletionProtection", self.clusters.deletion_protection),
                        ("database.deletionProtection", self.database.deletion_protection)):
            if not on and not self.decommission:
                errors.append(problem(key, False, "must be true when environment is prod" + teardown))
        for key, on in (("database.backups", self.database.backups),
                        ("database.pointInTimeRecovery", self.database.point_in_time_recovery), ("cmek", self.cmek)):
            if not on:
                errors.append(problem(key, False, "must be true when environment is prod"))
        if self.storage.force_destroy and not self.decommission:
            errors.append(problem("storage.forceDestroy", True, "must be false when environment is prod" + teardown))
        return errors

    # --- derived values ------------------------------------------------------------------
    @property
    def cluster_location(self) -> str:
        return self.region if self.clusters.regional else self.zone

    @property
    def bucket_name(self) -> str:
        """Named, not autonamed: the manifests then show the real artifact destination."""
        return f"{self.project}-{self.name_prefix}-artifacts"

    @property
    def service_account_ids(self) -> dict[str, str]:
        """Workload role -> GCP service account id, unique per namePrefix and environment."""
        return {role: service_account_id(self.name_prefix, role, self.environment) for role in SERVICE_ACCOUNT_ROLES}

    @property
    def protect(self) -> bool:
        """Pulumi's `protect` on every stateful resource, so `pulumi destroy` refuses before it deletes anything.
        On wherever deletion protection is: otherwise a destroy deletes the secrets and keys, then stops at the
        protected cluster or instance."""
        return self.clusters.deletion_protection or self.database.deletion_protection

    @property
    def workload_pool(self) -> str:
        return f"{self.project}.svc.id.goog"
