"""The security rules of the `mlflow-platform-security` policy pack, as plain functions.

Every rule is `check_<name>(resource_type, props) -> list[str]`: the violation messages for one
resource's inputs (camelCase, as the engine passes them), empty when it complies; a stack rule
`check_<name>(resources) -> list[str]` judges every resource of the stack at once. Keeping them free of
the policy runtime lets the offline tests run them over the mocked dev and prod stacks;
`tools/policy/__main__.py` only wraps them in `ResourceValidationPolicy`s and `StackValidationPolicy`s.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any, Callable, NamedTuple

# Offline (mocked) inputs keep secrets wrapped as {SIG_KEY: SECRET_SIG, "value": ...};
# the policy runtime unwraps them itself. Either way rules see the plain value.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


class _Unknown:
    """A value a preview cannot know yet (it depends on a resource not created); the pack maps to it."""

    def __repr__(self) -> str:
        return "<unknown until apply>"


UNKNOWN = _Unknown()

KEY_TYPE = "gcp:serviceaccount/key:Key"
SQL_TYPE = "gcp:sql/databaseInstance:DatabaseInstance"
SQL_USER_TYPE = "gcp:sql/user:User"
IAM_SQL_USER_TYPES = frozenset({"CLOUD_IAM_SERVICE_ACCOUNT", "CLOUD_IAM_USER", "CLOUD_IAM_GROUP"})
BUCKET_TYPE = "gcp:storage/bucket:Bucket"
CLUSTER_TYPE = "gcp:container/cluster:Cluster"
NODE_POOL_TYPE = "gcp:container/nodePool:NodePool"
# What a prod `pulumi destroy` must not reach: the data, and what reads or unlocks it. Pulumi's `protect`
# fails the destroy in its preview, before anything is deleted; provider-side deletion protection stops it
# only at the cluster or the instance, after the secrets (and their values) and the keys are gone.
STATEFUL_TYPES = frozenset({
    CLUSTER_TYPE, SQL_TYPE, "gcp:sql/database:Database", BUCKET_TYPE, "gcp:kms/keyRing:KeyRing",
    "gcp:kms/cryptoKey:CryptoKey", "gcp:secretmanager/secret:Secret", "gcp:secretmanager/secretVersion:SecretVersion",
    "gcp:bigquery/dataset:Dataset",
})
# Member grants carry `member`; the Binding variants carry `members` and would otherwise be a way around.
IAM_TYPES = frozenset({
    "gcp:projects/iAMMember:IAMMember", "gcp:storage/bucketIAMMember:BucketIAMMember",
    "gcp:serviceaccount/iAMMember:IAMMember", "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
    "gcp:projects/iAMBinding:IAMBinding", "gcp:storage/bucketIAMBinding:BucketIAMBinding",
    "gcp:serviceaccount/iAMBinding:IAMBinding", "gcp:artifactregistry/repositoryIamBinding:RepositoryIamBinding",
    "gcp:iap/webIamMember:WebIamMember", "gcp:iap/webIamBinding:WebIamBinding",
    "gcp:bigquery/datasetIamMember:DatasetIamMember", "gcp:bigquery/datasetIamBinding:DatasetIamBinding",
})
DATASET_TYPE = "gcp:bigquery/dataset:Dataset"
DATASET_ACCESS_TYPE = "gcp:bigquery/datasetAccess:DatasetAccess"
SINK_TYPE = "gcp:logging/projectSink:ProjectSink"
BIGQUERY_DESTINATION = re.compile(r"^bigquery\.googleapis\.com/projects/(?P<project>[^/]+)/datasets/(?P<dataset>\w+)$")
# BigQuery's public grants: an IAM-style member, or the legacy access entry's special group.
PUBLIC_DATASET_GROUPS = frozenset({"allAuthenticatedUsers"})
PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
BASIC_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
K8S_SECRET_TYPE = "kubernetes:core/v1:Secret"
# A Secret key named like a credential, or a value shaped like one (checked on every key; `data` decoded).
CREDENTIAL_KEY = re.compile(r"pass(word|wd)?|secret|token|api[-_.]?key|private[-_.]?key|credential|"
                            r"\.(pem|key|p12|pfx|jks)$|key\.json$", re.IGNORECASE)
CREDENTIAL_VALUES = (
    (re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE), "a URI with a password"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r'"private_key"\s*:'), "a service-account key"),
    (re.compile(r"(?im)^\s*[\w.-]*(password|passwd|secret|token|api_?key)[\w.-]*\s*[=:]\s*\S"),
     "a password or key setting"),
    # A whole value of 24+ letters and digits (both): a generated password or token.
    (re.compile(r"\A\s*(?=[A-Za-z0-9+/=_-]*[0-9])(?=[A-Za-z0-9+/=_-]*[A-Za-z])[A-Za-z0-9+/=_-]{24,}\s*\Z"),
     "a random token"),
)
# Where each workload type keeps its pod spec.
POD_SPEC_PATHS = {
    "kubernetes:apps/v1:Deployment": "spec.template.spec",
    "kubernetes:apps/v1:StatefulSet": "spec.template.spec",
    "kubernetes:apps/v1:DaemonSet": "spec.template.spec",
    "kubernetes:batch/v1:Job": "spec.template.spec",
    "kubernetes:batch/v1:CronJob": "spec.jobTemplate.spec.template.spec",
    "kubernetes:core/v1:Pod": "spec",
}
# Per type: where its `env` label is, and what prod requires. A policy pack does not know the stack it
# runs against, so the label the program puts on every GCP resource tells prod resources apart.
PROD_PROTECTION: dict[str, tuple[str, dict[str, bool]]] = {
    CLUSTER_TYPE: ("resourceLabels.env", {"deletionProtection": True}),
    # Provider-side and API-side protection are two different switches; prod needs both.
    SQL_TYPE: ("settings.userLabels.env", {"deletionProtection": True, "settings.deletionProtectionEnabled": True}),
    BUCKET_TYPE: ("labels.env", {"forceDestroy": False}),
    # The payload log: a prod `destroy` fails while the dataset holds entries, it never deletes them.
    "gcp:bigquery/dataset:Dataset": ("labels.env", {"deleteContentsOnDestroy": False}),
}


def plain(value: Any) -> Any:
    """`value` without its secret wrapper."""
    while isinstance(value, Mapping) and value.get(SIG_KEY) == SECRET_SIG:
        value = value.get("value")
    return value


def get(props: Any, path: str, default: Any = None) -> Any:
    """`get(props, "settings.ipConfiguration.ipv4Enabled")`, looking through secrets; default when absent."""
    value = plain(props)
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return default
        value = plain(value[part])
    return value


def check_no_service_account_keys(resource_type: str, props: dict) -> list[str]:
    if resource_type == KEY_TYPE:
        return ["service-account keys are forbidden: they leak and never expire; use Workload Identity"]
    return []


def check_sql_private_and_tls(resource_type: str, props: dict) -> list[str]:
    if resource_type != SQL_TYPE:
        return []
    violations = []
    ipv4 = get(props, "settings.ipConfiguration.ipv4Enabled")
    if ipv4 is not False:
        violations.append(f"Cloud SQL instance must have no public IP: settings.ipConfiguration.ipv4Enabled "
                          f"must be false (is {ipv4!r})")
    ssl_mode = get(props, "settings.ipConfiguration.sslMode")
    if ssl_mode != "ENCRYPTED_ONLY":
        violations.append(f"Cloud SQL instance must require TLS: settings.ipConfiguration.sslMode "
                          f"must be 'ENCRYPTED_ONLY' (is {ssl_mode!r})")
    return violations


def check_sql_iam_logins(resource_type: str, props: dict) -> list[str]:
    """Workloads log in to Cloud SQL as their IAM identity: no database password exists to leak."""
    if resource_type == SQL_TYPE:
        flags = {get(flag, "name"): get(flag, "value") for flag in get(props, "settings.databaseFlags", []) or []}
        if flags.get("cloudsql.iam_authentication") != "on":
            return ["Cloud SQL instance must accept IAM logins: database flag cloudsql.iam_authentication must be "
                    f"'on' (is {flags.get('cloudsql.iam_authentication')!r})"]
    if resource_type == SQL_USER_TYPE:
        violations = []
        user_type = get(props, "type") or "BUILT_IN"
        if user_type not in IAM_SQL_USER_TYPES:
            violations.append(f"Cloud SQL user {get(props, 'name')!r} is of type {user_type}: a password-holding "
                              f"user; declare an IAM user ({', '.join(sorted(IAM_SQL_USER_TYPES))})")
        if any(get(props, field) is not None for field in ("password", "passwordWo")):
            violations.append(f"Cloud SQL user {get(props, 'name')!r} has a password: IAM users log in without one")
        return violations
    return []


def check_bucket_not_public(resource_type: str, props: dict) -> list[str]:
    if resource_type != BUCKET_TYPE:
        return []
    violations = []
    prevention = get(props, "publicAccessPrevention")
    if prevention != "enforced":
        violations.append(f"bucket must prevent public access: publicAccessPrevention must be 'enforced' "
                          f"(is {prevention!r})")
    uniform = get(props, "uniformBucketLevelAccess")
    if uniform is not True:
        violations.append(f"bucket must use IAM only, no object ACLs: uniformBucketLevelAccess must be true "
                          f"(is {uniform!r})")
    return violations


def check_iam_no_public_or_basic_roles(resource_type: str, props: dict) -> list[str]:
    if resource_type not in IAM_TYPES:
        return []
    members = get(props, "members")
    members = [get(props, "member")] + (members if isinstance(members, list) else [])
    violations = [f"IAM grant to the public: member {member!r} is forbidden"
                  for member in map(plain, members) if member in PUBLIC_MEMBERS]
    role = get(props, "role")
    if role in BASIC_ROLES:
        violations.append(f"IAM grant of basic role {role!r} is forbidden: grant a predefined role "
                          "on the narrowest resource")
    return violations


def _public_access(entry: Any) -> bool:
    return get(entry, "iamMember") in PUBLIC_MEMBERS or get(entry, "specialGroup") in PUBLIC_DATASET_GROUPS


def check_dataset_private_and_expiring(resource_type: str, props: dict) -> list[str]:
    """A BigQuery dataset (the payload log's: requests people sent) is never public and forgets by itself."""
    if resource_type == DATASET_ACCESS_TYPE:
        return ["BigQuery dataset access granted to the public is forbidden"] if _public_access(props) else []
    if resource_type != DATASET_TYPE:
        return []
    violations = [f"BigQuery dataset {get(props, 'datasetId')!r} must not be public: access entry {plain(entry)!r}"
                  for entry in get(props, "accesses") or [] if _public_access(entry)]
    expiry = get(props, "defaultPartitionExpirationMs")
    if expiry is not UNKNOWN and not (isinstance(expiry, (int, float)) and expiry > 0):
        violations.append(f"BigQuery dataset {get(props, 'datasetId')!r} must expire its partitions: "
                          f"defaultPartitionExpirationMs must be set (is {expiry!r})")
    return violations


# Authoritative IAM: a Binding sets a role's whole member list and a Policy a resource's whole policy, so
# applying or destroying one removes grants this stack never made (the platform's, another stack's, a human's).
AUTHORITATIVE_IAM = re.compile(r":[A-Za-z]*I[Aa][Mm](Binding|Policy)$")


def check_iam_members_only(resource_type: str, props: dict) -> list[str]:
    if not AUTHORITATIVE_IAM.search(resource_type):
        return []
    return [f"{resource_type} is authoritative: it replaces grants this stack did not make; grant with the "
            "matching *IamMember / IAMMember type, one member each"]


def check_gke_private_workload_identity(resource_type: str, props: dict) -> list[str]:
    if resource_type != CLUSTER_TYPE:
        return []
    violations = []
    private_nodes = get(props, "privateClusterConfig.enablePrivateNodes")
    if private_nodes is not True:
        violations.append(f"GKE cluster nodes must have no public IPs: privateClusterConfig.enablePrivateNodes "
                          f"must be true (is {private_nodes!r})")
    if not get(props, "workloadIdentityConfig.workloadPool"):
        violations.append("GKE cluster must enable Workload Identity: workloadIdentityConfig.workloadPool "
                          "must be set")
    return violations


# GKE removed workload vulnerability scanning (basic 2025-07-31, enterprise 2026-06-16): the API refuses both.
REMOVED_VULNERABILITY_MODES = frozenset({"VULNERABILITY_BASIC", "VULNERABILITY_ENTERPRISE"})


def check_gke_cluster_first_up(resource_type: str, props: dict) -> list[str]:
    """What the GKE API refuses or a first `up` regrets, though the provider schema accepts it."""
    if resource_type != CLUSTER_TYPE:
        return []
    violations = []
    mode = get(props, "securityPostureConfig.vulnerabilityMode")
    if mode in REMOVED_VULNERABILITY_MODES:
        violations.append(f"securityPostureConfig.vulnerabilityMode {mode!r} is no longer offered by GKE; "
                          "use VULNERABILITY_DISABLED")
    if not get(props, "nodeConfig.serviceAccount"):
        violations.append("nodeConfig.serviceAccount must be set: otherwise the default node pool GKE creates "
                          "first runs as the Compute Engine default service account")
    if is_prod(resource_type, props):
        private_endpoint = get(props, "privateClusterConfig.enablePrivateEndpoint") is True
        authorized = get(props, "masterAuthorizedNetworksConfig.cidrBlocks") or []
        if not private_endpoint and not authorized:
            violations.append("prod control plane must not be open to the internet: set "
                              "privateClusterConfig.enablePrivateEndpoint (DNS endpoint) or "
                              "masterAuthorizedNetworksConfig.cidrBlocks")
    return violations


# Per type: where prod must name a Cloud KMS key.
PROD_ENCRYPTION: dict[str, str] = {
    CLUSTER_TYPE: "databaseEncryption.keyName",
    SQL_TYPE: "encryptionKeyName",
    BUCKET_TYPE: "encryption.defaultKmsKeyName",
    "gcp:bigquery/dataset:Dataset": "defaultEncryptionConfiguration.kmsKeyName",
}


def is_prod(resource_type: str, props: dict) -> bool:
    """Labelled env=prod, where the type keeps its labels (PROD_PROTECTION)."""
    return resource_type in PROD_PROTECTION and get(props, PROD_PROTECTION[resource_type][0]) == "prod"


def check_prod_encryption_keys(resource_type: str, props: dict) -> list[str]:
    """Prod encrypts Kubernetes Secrets, the database and the artifacts with keys the project holds."""
    if resource_type not in PROD_ENCRYPTION or not is_prod(resource_type, props):
        return []
    key_path = PROD_ENCRYPTION[resource_type]
    violations = []
    if not get(props, key_path):
        violations.append(f"prod resource must be encrypted with a Cloud KMS key: {key_path} must be set")
    if resource_type == CLUSTER_TYPE and get(props, "databaseEncryption.state") != "ENCRYPTED":
        violations.append("prod cluster must encrypt Secrets at the application layer: "
                          f"databaseEncryption.state must be 'ENCRYPTED' (is {get(props, 'databaseEncryption.state')!r})")
    return violations


def check_node_pool_gke_metadata(resource_type: str, props: dict) -> list[str]:
    if resource_type != NODE_POOL_TYPE:
        return []
    mode = get(props, "nodeConfig.workloadMetadataConfig.mode")
    if mode != "GKE_METADATA":
        # Without it pods reach the node's metadata server and act as the node service account.
        return [f"node pool must serve Workload Identity: nodeConfig.workloadMetadataConfig.mode "
                f"must be 'GKE_METADATA' (is {mode!r})"]
    return []


def check_workload_hardening(resource_type: str, props: dict) -> list[str]:
    if resource_type not in POD_SPEC_PATHS:
        return []
    pod = get(props, POD_SPEC_PATHS[resource_type]) or {}
    pod_non_root = get(pod, "securityContext.runAsNonRoot")
    violations = []
    for field in ("initContainers", "containers"):
        containers = get(pod, field)
        for container in containers if isinstance(containers, list) else []:
            where = f"{field[:-1]} {get(container, 'name')!r}"
            # The pod-level setting applies to every container that does not override it.
            non_root = get(container, "securityContext.runAsNonRoot", pod_non_root)
            if non_root is not True:
                violations.append(f"{where}: securityContext.runAsNonRoot must be true (is {non_root!r})")
            read_only = get(container, "securityContext.readOnlyRootFilesystem")
            if read_only is not True:
                violations.append(f"{where}: securityContext.readOnlyRootFilesystem must be true "
                                  f"(is {read_only!r})")
            escalation = get(container, "securityContext.allowPrivilegeEscalation")
            if escalation is not False:
                violations.append(f"{where}: securityContext.allowPrivilegeEscalation must be false "
                                  f"(is {escalation!r})")
            dropped = get(container, "securityContext.capabilities.drop") or []
            if not isinstance(dropped, list) or "ALL" not in map(plain, dropped):
                violations.append(f"{where}: securityContext.capabilities.drop must contain 'ALL' "
                                  f"(is {dropped!r})")
            if not get(container, "resources.limits.memory"):
                violations.append(f"{where}: resources.limits.memory must be set")
            image = get(container, "image")
            # A freshly built image is unknown during preview; it is checked again at apply.
            if isinstance(image, str) and "@sha256:" not in image:
                violations.append(f"{where}: image {image!r} must be pinned by digest (@sha256:...)")
    return violations


def _pre_stop_seconds(hook: Any) -> Any:
    """Seconds a preStop hook keeps the container up: a sleep action, or None when it is not one."""
    if get(hook, "sleep.seconds") is not None:
        return get(hook, "sleep.seconds")
    command = get(hook, "exec.command") or []
    return command[1] if isinstance(command, list) and len(command) == 2 and command[0] == "sleep" else None


def check_deployment_drains(resource_type: str, props: dict) -> list[str]:
    """A Deployment's containers that serve traffic (a port named http) drain before SIGTERM, within
    the grace period: otherwise every rollout fails the requests still routed to the old pods."""
    if resource_type != "kubernetes:apps/v1:Deployment":
        return []
    pod = get(props, "spec.template.spec") or {}
    grace = get(pod, "terminationGracePeriodSeconds", 30)
    violations = []
    for container in get(pod, "containers") or []:
        if "http" not in [get(port, "name") for port in get(container, "ports") or []]:
            continue
        where = f"container {get(container, 'name')!r}"
        drain = _pre_stop_seconds(get(container, "lifecycle.preStop"))
        if not isinstance(drain, (int, float, str)) or float(drain) <= 0:
            violations.append(f"{where}: lifecycle.preStop must drain (a sleep) before SIGTERM")
        elif isinstance(grace, (int, float)) and grace <= float(drain):
            violations.append(f"{where}: terminationGracePeriodSeconds ({grace}) must exceed the preStop "
                              f"drain ({drain}s), or requests in flight are killed")
    return violations


def _secret_entries(props: dict) -> list[tuple[str, Any]]:
    """(key, plain value) of a Secret's stringData and data (base64-decoded; undecodable stays as is)."""
    entries = [(key, plain(value)) for key, value in (get(props, "stringData") or {}).items()]
    for key, value in (get(props, "data") or {}).items():
        value = plain(value)
        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                pass
        entries.append((key, value))
    return entries


def check_kubernetes_secrets_hold_no_credentials(resource_type: str, props: dict) -> list[str]:
    if resource_type != K8S_SECRET_TYPE:
        return []
    name = f"{get(props, 'metadata.namespace', '?')}/{get(props, 'metadata.name', '?')}"
    violations = []
    for key, value in _secret_entries(props):
        if CREDENTIAL_KEY.search(key):
            violations.append(f"Secret {name}: key {key!r} is named like a password or key; keep it in Secret "
                              "Manager and mount it with the Secret Manager add-on")
            continue
        # Only the shape is named, never the value.
        shape = next((what for pattern, what in CREDENTIAL_VALUES
                      if isinstance(value, str) and pattern.search(value)), None)
        if shape:
            violations.append(f"Secret {name}: key {key!r} holds {shape}; keep it in Secret Manager (or use no "
                              "credential at all, e.g. IAM database authentication)")
    return violations


GATEWAY_TYPE = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
HTTP_ROUTE_TYPE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
SERVICE_TYPE = "kubernetes:core/v1:Service"
DEPLOYMENT_TYPE = "kubernetes:apps/v1:Deployment"
# GKE's GatewayClasses whose load balancer has only an internal address
# (https://cloud.google.com/kubernetes-engine/docs/how-to/gatewayclass-capabilities); any other class
# (gke-l7-global-external-managed, gke-l7-regional-external-managed, gke-l7-gxlb, …) faces the internet.
INTERNAL_GATEWAY_CLASSES = frozenset({"gke-l7-rilb", "gke-l7-rilb-mc", "gke-l7-cross-regional-internal-managed-mc"})
TRACK_LABEL = "mlflow.org/track"


def check_gateway_internal(resource_type: str, props: dict) -> list[str]:
    """Model serving is reached from inside the VPC only: a Gateway of an external class would publish the
    model on the internet without IAP or Cloud Armor."""
    if resource_type != GATEWAY_TYPE:
        return []
    gateway_class = get(props, "spec.gatewayClassName")
    if gateway_class not in INTERNAL_GATEWAY_CLASSES:
        return [f"spec.gatewayClassName {gateway_class!r} is not an internal class; allowed: "
                f"{', '.join(sorted(INTERNAL_GATEWAY_CLASSES))}"]
    return []


def check_route_weights(resource_type: str, props: dict) -> list[str]:
    """Each rule of an HTTPRoute states every backend's weight, whole percents summing to 100: a share is what
    the settings say, never what an implementation's default weight of 1 makes of it."""
    if resource_type != HTTP_ROUTE_TYPE:
        return []
    violations = []
    for index, rule in enumerate(get(props, "spec.rules") or []):
        weights = [get(ref, "weight") for ref in get(rule, "backendRefs") or []]
        if not weights or any(not isinstance(w, (int, float)) or not 0 <= w <= 100 for w in weights):
            violations.append(f"spec.rules[{index}].backendRefs: every backend needs a weight of 0-100 (are {weights})")
        elif sum(weights) != 100:
            violations.append(f"spec.rules[{index}].backendRefs: weights must sum to 100 (are {weights}, sum {sum(weights)})")
    return violations


def check_prod_deletion_protection(resource_type: str, props: dict) -> list[str]:
    if not is_prod(resource_type, props):
        return []
    required = PROD_PROTECTION[resource_type][1]
    return [f"prod resource must be protected against deletion: {path} must be {str(expected).lower()} "
            f"(is {get(props, path)!r})"
            for path, expected in required.items() if get(props, path) is not expected]


class StackResource(NamedTuple):
    """One resource of a stack, as a stack rule sees it."""

    urn: str
    type: str
    props: dict
    protect: bool


def check_prod_stateful_protected(resources: Iterable[StackResource]) -> list[str]:
    """In a stack with any resource labelled env=prod, every stateful resource is protected; labels tell the
    stack apart, though key rings, databases and secret versions carry none."""
    resources = list(resources)
    if not any(is_prod(r.type, r.props) for r in resources):
        return []
    return [f"{r.urn}: prod's stateful resources must be protected (resource option protect=True), or "
            "`pulumi destroy` deletes them before deletion protection stops it at the cluster or instance"
            for r in resources if r.type in STATEFUL_TYPES and not r.protect]


PROJECT_IAM_TYPES = frozenset({"gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding"})
# Roles that read or write data: granted on the dataset or bucket that holds it, never on the project, where
# they would reach every dataset and bucket (the payload log's redacted requests among others' data).
DATA_ROLE = re.compile(r"^roles/(bigquery\.(dataViewer|dataEditor|dataOwner|admin)|"
                       r"storage\.(objectViewer|objectUser|objectCreator|objectAdmin|admin)|"
                       r"logging\.(viewer|privateLogViewer|admin))$")


def check_no_project_wide_data_roles(resource_type: str, props: dict) -> list[str]:
    role = get(props, "role")
    if resource_type in PROJECT_IAM_TYPES and isinstance(role, str) and DATA_ROLE.match(role):
        return [f"{role} is granted on the whole project: grant it on the dataset or bucket the workload reads "
                "(e.g. gcp.bigquery.DatasetIamMember)"]
    return []


ALERT_POLICY_TYPE = "gcp:monitoring/alertPolicy:AlertPolicy"
CHANNEL_TYPE = "gcp:monitoring/notificationChannel:NotificationChannel"


def check_alert_policies_notify(resources: Iterable[StackResource]) -> list[str]:
    """In a stack that declares notification channels (`monitoring.notify`), no alert policy notifies nobody:
    a policy without channels fires unseen."""
    resources = list(resources)
    if not any(r.type == CHANNEL_TYPE for r in resources):
        return []
    return [f"{r.urn}: the stack declares notification channels, yet this alert policy names none"
            for r in resources if r.type == ALERT_POLICY_TYPE and not get(r.props, "notificationChannels")]


TOPIC_TYPE = "gcp:pubsub/topic:Topic"
TOPIC_PATH = re.compile(r"projects/(?P<project>[^/]+)/topics/(?P<topic>[^/]+)")


def check_channels_keep_urls_out(resources: Iterable[StackResource]) -> list[str]:
    """No `webhook_*` notification channel: its URL is a plain label, in state and plans (only tokens and
    passwords may be sensitive labels). A `pubsub` channel publishes to a topic the stack declares, the one the
    chat relay pulls, not to someone else's."""
    resources = list(resources)
    topics = {(get(r.props, "project"), get(r.props, "name")) for r in resources if r.type == TOPIC_TYPE}
    violations = []
    for channel in (r for r in resources if r.type == CHANNEL_TYPE):
        kind, topic = get(channel.props, "type"), get(channel.props, "labels.topic")
        if isinstance(kind, str) and kind.startswith("webhook"):
            violations.append(f"{channel.urn}: channel type {kind!r} keeps its URL in a plain label; relay through "
                              "a pubsub channel (monitoring.notify.chat)")
        if kind == "pubsub" and topic is not UNKNOWN:
            match = TOPIC_PATH.fullmatch(topic or "")
            if not match or (match["project"], match["topic"]) not in topics:
                violations.append(f"{channel.urn}: pubsub channel publishes to {topic!r}, not a topic of this stack")
    return violations


CONFIG_MAP_TYPE = "kubernetes:core/v1:ConfigMap"
# MLflow's auth config: its `authorization_function` is where a tracking server learns who a person is.
AUTH_FUNCTION = re.compile(r"(?m)^\s*authorization_function\s*=\s*(\S+)")
BASIC_AUTH_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"


def auth_functions(resources: Iterable[StackResource]) -> list[tuple[str, str]]:
    """(urn, authorization function) of every MLflow auth config a ConfigMap of the stack holds."""
    return [(r.urn, match[1]) for r in resources if r.type == CONFIG_MAP_TYPE
            for text in (get(r.props, "data") or {}).values() if isinstance(text, str)
            for match in [AUTH_FUNCTION.search(text)] if match]


def check_prod_people_identity(resources: Iterable[StackResource]) -> list[str]:
    """In a prod stack, a person is who an identity source says (IAP's signed assertion), not the holder of a
    password: an MLflow auth config that still authenticates by basic auth alone is refused."""
    resources = list(resources)
    if not any(is_prod(r.type, r.props) for r in resources):
        return []
    return [f"{urn}: prod's tracking server authenticates people with basic-auth passwords "
            f"(authorization_function = {function}); turn on mlflow-platform:edge.iap so people sign in with "
            "their Google identity" for urn, function in auth_functions(resources) if function == BASIC_AUTH_FUNCTION]


def check_sinks_write_to_own_datasets(resources: Iterable[StackResource]) -> list[str]:
    """Every Logging sink of the stack writes to a BigQuery dataset the stack declares, into partitioned
    tables (which the dataset's partition expiry then empties): never a store the stack does not govern."""
    resources = list(resources)
    datasets = {(get(r.props, "project"), get(r.props, "datasetId")) for r in resources if r.type == DATASET_TYPE}
    violations = []
    for sink in (r for r in resources if r.type == SINK_TYPE):
        destination = get(sink.props, "destination")
        if destination is UNKNOWN:
            continue
        match = BIGQUERY_DESTINATION.match(destination or "")
        if not match or (match["project"], match["dataset"]) not in datasets:
            violations.append(f"{sink.urn}: sink destination {destination!r} is not a BigQuery dataset of this stack")
        if get(sink.props, "bigqueryOptions.usePartitionedTables") is not True:
            violations.append(f"{sink.urn}: bigqueryOptions.usePartitionedTables must be true, or the dataset's "
                              "partition expiry never applies (a table per day instead)")
    return violations


def _named(resources: list[StackResource], resource_type: str) -> set[tuple[Any, Any]]:
    return {(get(r.props, "metadata.namespace"), get(r.props, "metadata.name")) for r in resources
            if r.type == resource_type}


def check_routes_reference_declared_objects(resources: Iterable[StackResource]) -> list[str]:
    """An HTTPRoute sends traffic (or mirrored copies) only to Services and through Gateways the stack declares in
    its namespace: a dangling reference is a backend GKE leaves out, and its share of requests fails."""
    resources = list(resources)
    services, gateways = _named(resources, SERVICE_TYPE), _named(resources, GATEWAY_TYPE)
    violations = []
    for route in (r for r in resources if r.type == HTTP_ROUTE_TYPE):
        namespace = get(route.props, "metadata.namespace")
        refs = [(get(ref, "name"), "backend Service", services, get(ref, "kind", "Service"))
                for rule in get(route.props, "spec.rules") or []
                for ref in [*(get(rule, "backendRefs") or []),
                            *(get(f, "requestMirror.backendRef") for f in get(rule, "filters") or [] if get(f, "requestMirror"))]]
        refs += [(get(ref, "name"), "parent Gateway", gateways, get(ref, "kind", "Gateway"))
                 for ref in get(route.props, "spec.parentRefs") or []]
        for name, what, declared, kind in refs:
            if kind not in ("Service", "Gateway") or (namespace, name) not in declared:
                violations.append(f"{route.urn}: {what} {kind}/{name!r} is not declared by the stack in namespace "
                                  f"{namespace!r}")
    return violations


FIREWALL_TYPE = "gcp:compute/firewall:Firewall"
SUBNETWORK_TYPE = "gcp:compute/subnetwork:Subnetwork"
PROXY_ONLY_PURPOSES = frozenset({"REGIONAL_MANAGED_PROXY", "GLOBAL_MANAGED_PROXY"})
# Google's health-check probers (https://cloud.google.com/load-balancing/docs/health-checks#fw-rule); the pack
# runs without the program's modules, tests/test_policy_pack.py keeps this equal to infra.cloud_rules'.
GOOGLE_HEALTH_CHECK_RANGES = frozenset({"35.191.0.0/16", "130.211.0.0/22"})


def check_firewall_admits_the_load_balancer_only(resources: Iterable[StackResource]) -> list[str]:
    """The stack's one ingress firewall rule lets the serving Gateway's load balancer reach the serving pods: its
    sources are exactly the proxy-only subnet(s) the stack declares and Google's health-check ranges. Anything
    wider (0.0.0.0/0, the whole VPC) would let other callers past the load balancer and its split."""
    resources = list(resources)
    proxies = {get(r.props, "ipCidrRange") for r in resources
               if r.type == SUBNETWORK_TYPE and get(r.props, "purpose") in PROXY_ONLY_PURPOSES}
    allowed = proxies | GOOGLE_HEALTH_CHECK_RANGES
    violations = []
    for firewall in (r for r in resources if r.type == FIREWALL_TYPE and get(r.props, "direction", "INGRESS") == "INGRESS"):
        sources = get(firewall.props, "sourceRanges")
        if sources is UNKNOWN or UNKNOWN in proxies:
            continue
        sources = set(plain(sources) or [])
        if sources != allowed:
            violations.append(f"{firewall.urn}: sourceRanges must be exactly the proxy-only subnet and Google's "
                              f"health-check ranges {sorted(allowed)}; extra {sorted(sources - allowed)}, "
                              f"missing {sorted(allowed - sources)}")
    return violations


def track(deployment: StackResource) -> Any:
    """The serving track of a Deployment's pods (its label's key has dots, which `get` splits on)."""
    labels = get(deployment.props, "spec.template.metadata.labels")
    return plain(labels.get(TRACK_LABEL)) if isinstance(labels, Mapping) else None


def _serving_container(deployment: StackResource) -> dict:
    containers = get(deployment.props, "spec.template.spec.containers") or []
    return next((c for c in containers if "http" in [get(p, "name") for p in get(c, "ports") or []]), {})


def check_challenger_like_champion(resources: Iterable[StackResource]) -> list[str]:
    """A challenger Deployment takes part of the champion's traffic: it gets the same resources and probes, so
    its numbers differ by its model alone and a canary compares like with like."""
    resources = list(resources)
    deployments = [r for r in resources if r.type == DEPLOYMENT_TYPE]
    violations = []
    for challenger in (d for d in deployments if track(d) == "challenger"):
        namespace = get(challenger.props, "metadata.namespace")
        champion = next((d for d in deployments if track(d) == "champion"
                         and get(d.props, "metadata.namespace") == namespace), None)
        if champion is None:
            violations.append(f"{challenger.urn}: a challenger needs a champion Deployment in namespace {namespace!r}")
            continue
        ours, theirs = _serving_container(challenger), _serving_container(champion)
        violations += [f"{challenger.urn}: {field} differs from the champion's ({get(theirs, field)!r} vs "
                       f"{get(ours, field)!r})"
                       for field in ("resources", "readinessProbe", "livenessProbe", "startupProbe", "lifecycle")
                       if get(ours, field) != get(theirs, field)]
    return violations


# (policy name, description, rule): the pack registers exactly these, in this order.
POLICIES: list[tuple[str, str, Callable[[str, dict], list[str]]]] = [
    ("no-service-account-keys",
     "No service-account JSON keys: workloads authenticate through Workload Identity.",
     check_no_service_account_keys),
    ("cloud-sql-private-ip-and-tls",
     "Cloud SQL instances have no public IPv4 address and accept only TLS connections.",
     check_sql_private_and_tls),
    ("cloud-sql-iam-database-logins",
     "Cloud SQL accepts IAM database logins and declares no password-holding (BUILT_IN) user.",
     check_sql_iam_logins),
    ("bucket-not-public",
     "Storage buckets enforce public access prevention and uniform bucket-level access.",
     check_bucket_not_public),
    ("iam-no-public-members-or-basic-roles",
     "IAM grants never name allUsers/allAuthenticatedUsers nor the basic roles owner, editor, viewer.",
     check_iam_no_public_or_basic_roles),
    ("iam-members-only",
     "IAM is granted by members (*IamMember), never by authoritative bindings or policies (*IamBinding, "
     "*IamPolicy), so applying or destroying a stack never removes a grant it did not make.",
     check_iam_members_only),
    ("gke-private-nodes-and-workload-identity",
     "GKE clusters have private nodes and Workload Identity enabled.",
     check_gke_private_workload_identity),
    ("gke-cluster-first-up",
     "GKE clusters ask only for what GKE still offers, run the default pool as the node account, and in "
     "prod keep the control plane off the internet.",
     check_gke_cluster_first_up),
    ("gke-node-pool-metadata-server",
     "GKE node pools run the GKE metadata server (workloadMetadataConfig.mode GKE_METADATA).",
     check_node_pool_gke_metadata),
    ("kubernetes-deployments-drain",
     "Containers of a Deployment that serve traffic drain in a preStop sleep before SIGTERM, within a "
     "longer grace period, so a rollout fails no request.",
     check_deployment_drains),
    ("kubernetes-workload-hardening",
     "Every container runs as non-root with a read-only root filesystem, no privilege escalation, "
     "all capabilities dropped, a memory limit, and an image pinned by digest.",
     check_workload_hardening),
    ("prod-encryption-keys",
     "Resources labelled env=prod are encrypted with Cloud KMS keys: cluster Secrets (application layer), "
     "Cloud SQL, the artifact bucket and the payload dataset (CMEK).",
     check_prod_encryption_keys),
    ("kubernetes-secrets-hold-no-credentials",
     "No Kubernetes Secret carries a password or key (by key name or value shape): application secrets live "
     "in Secret Manager and are mounted by GKE's Secret Manager add-on.",
     check_kubernetes_secrets_hold_no_credentials),
    ("bigquery-dataset-private-and-expiring",
     "BigQuery datasets are never granted to allUsers or allAuthenticatedUsers and expire their partitions "
     "(defaultPartitionExpirationMs): the payload log keeps requests only as long as settings say.",
     check_dataset_private_and_expiring),
    ("prod-deletion-protection",
     "Resources labelled env=prod are protected against deletion: cluster and Cloud SQL deletion "
     "protection on, bucket forceDestroy off, payload dataset deleteContentsOnDestroy off.",
     check_prod_deletion_protection),
    ("no-project-wide-data-roles",
     "Roles that read or write data (BigQuery data, Cloud Storage objects, private logs) are granted on the "
     "dataset or bucket, never on the project: the drift job reads the payload dataset and nothing else.",
     check_no_project_wide_data_roles),
    ("gateway-internal-only",
     "Gateways are of an internal GatewayClass (gke-l7-rilb): model serving is reached from inside the VPC, "
     "never from the internet.",
     check_gateway_internal),
    ("http-route-weights-sum-to-100",
     "Every rule of an HTTPRoute weights each backend explicitly, 0-100, summing to 100.",
     check_route_weights),
]

# (policy name, description, stack rule): registered after POLICIES.
STACK_POLICIES: list[tuple[str, str, Callable[[Iterable[StackResource]], list[str]]]] = [
    ("prod-stateful-resources-protected",
     "In a stack labelled env=prod, Pulumi protects every stateful resource (clusters, Cloud SQL instance and "
     "databases, bucket, KMS key ring and keys, Secret Manager secrets and versions): `pulumi destroy` fails "
     "before it deletes anything.",
     check_prod_stateful_protected),
    ("prod-people-sign-in-with-an-identity",
     "In a stack labelled env=prod, the tracking server takes people's identity from an identity source "
     "(IAP's signed assertion), never from shared or hand-made basic-auth passwords.",
     check_prod_people_identity),
    ("logging-sinks-write-to-own-datasets",
     "Every Cloud Logging sink writes into partitioned tables of a BigQuery dataset the stack declares.",
     check_sinks_write_to_own_datasets),
    ("alert-policies-notify",
     "In a stack that declares notification channels, every alert policy (serving, tracking, database, drift, "
     "platform events) notifies at least one of them.",
     check_alert_policies_notify),
    ("notification-channels-keep-urls-out",
     "No notification channel of a webhook type (its URL is a plain label, in state and plans); a pubsub "
     "channel publishes to a topic the stack declares.",
     check_channels_keep_urls_out),
    ("http-routes-reference-declared-objects",
     "An HTTPRoute's backends, mirror targets and parent Gateways are Services and Gateways the stack declares "
     "in the route's namespace.",
     check_routes_reference_declared_objects),
    ("challenger-like-champion",
     "A challenger Deployment (label mlflow.org/track=challenger) has a champion in its namespace and the same "
     "resources, probes and drain as it.",
     check_challenger_like_champion),
    ("firewall-admits-the-load-balancer-only",
     "The ingress firewall rule admitting the serving Gateway's load balancer has exactly the proxy-only subnet "
     "and Google's health-check ranges as sources (never 0.0.0.0/0).",
     check_firewall_admits_the_load_balancer_only),
]
