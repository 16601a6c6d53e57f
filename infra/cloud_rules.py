"""GCP's rules that Pulumi mocks cannot see, in one place, each with its source.

A real `pulumi up` fails (or leaves a platform that misbehaves) when a stack breaks one of these;
the settings model (`infra/config.py`) applies them before any resource is declared. Every
function returns the problem as text, or None, so the model can name the key and the value.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from dataclasses import dataclass
from typing import Optional

# --- network --------------------------------------------------------------------------------------
# https://cloud.google.com/vpc/docs/subnets#unusable-ip-addresses-in-every-subnet: in every primary
# IPv4 range the network address, the default gateway, the second-to-last address and the broadcast
# address are reserved; a compute.Address asking for one of them is refused.
RESERVED_POSITIONS = (0, 1, -2, -1)


def reserved_addresses(cidr: str) -> tuple[str, ...]:
    network = ipaddress.IPv4Network(cidr)
    return tuple(str(network[position]) for position in RESERVED_POSITIONS)


def last_usable_address(cidr: str) -> str:
    """The highest address GCP lets an internal address take: far from where nodes are allocated."""
    return str(ipaddress.IPv4Network(cidr)[-3])


def internal_address_problem(cidr: str, address: str) -> Optional[str]:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return "must be an IPv4 address"
    if ip not in ipaddress.IPv4Network(cidr):
        return f"must lie in the subnet {cidr}"
    if address in reserved_addresses(cidr):
        return (f"is reserved by GCP in {cidr} (first two and last two addresses: "
                f"{', '.join(reserved_addresses(cidr))}); allowed: any other address of the subnet")
    return None


# https://cloud.google.com/kubernetes-engine/docs/how-to/legacy/network-isolation: a private
# cluster's control-plane range is exactly a /28.
CONTROL_PLANE_PREFIX = 28
# https://cloud.google.com/vpc/docs/configure-private-services-access#allocating-range: the
# allocated range must be a /24 or larger.
PRIVATE_SERVICES_MAX_PREFIX = 24
# https://cloud.google.com/load-balancing/docs/proxy-only-subnets: a proxy-only subnet is a /26 or larger
# (a /23 recommended); one per region and VPC carries every Envoy-based load balancer there.
PROXY_ONLY_MAX_PREFIX = 26
# https://cloud.google.com/load-balancing/docs/health-check-concepts#ip-ranges: where Google's health
# check probes come from, for Application Load Balancers among others.
HEALTH_CHECK_RANGES = ("35.191.0.0/16", "130.211.0.0/22")


def overlapping_ranges(ranges: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs of named ranges that overlap. GKE, the subnet and the peered producer network
    share one routing domain, so every range must be disjoint
    (https://cloud.google.com/kubernetes-engine/docs/concepts/alias-ips#cluster_sizing)."""
    networks = {name: ipaddress.IPv4Network(cidr) for name, cidr in ranges.items()}
    return [(a, b) for a, b in itertools.combinations(ranges, 2) if networks[a].overlaps(networks[b])]


# --- Compute Engine boot disks -------------------------------------------------------------------
# https://cloud.google.com/compute/docs/disks#disk-types ("Machine series support"): C4 and N4
# attach only Hyperdisk; C3/C3D take both; the older series take no Hyperdisk boot disk.
BOOT_DISK_TYPES = ("pd-balanced", "pd-ssd", "hyperdisk-balanced")
_HYPERDISK_ONLY = ("c4", "n4")
_BOTH = ("c3", "c3d")


def boot_disk_types(family: str) -> tuple[str, ...]:
    if family in _HYPERDISK_ONLY:
        return ("hyperdisk-balanced",)
    if family in _BOTH:
        return BOOT_DISK_TYPES
    return ("pd-balanced", "pd-ssd")


def machine_family(machine_type: str) -> str:
    return machine_type.split("-", 1)[0]


def default_boot_disk_type(machine_type: str) -> str:
    """pd-balanced (GKE's default) where the series takes it, otherwise Hyperdisk Balanced."""
    return boot_disk_types(machine_family(machine_type))[0]


def boot_disk_problem(machine_type: str, disk_type: str) -> Optional[str]:
    allowed = boot_disk_types(machine_family(machine_type))
    if disk_type not in allowed:
        return (f"machine type {machine_type} ({machine_family(machine_type)} series) cannot boot from "
                f"{disk_type}; allowed: {', '.join(allowed)}")
    return None


# --- Cloud SQL -------------------------------------------------------------------------------------
# https://cloud.google.com/sql/docs/postgres/editions-intro: Enterprise Plus runs only the
# performance-optimized (db-perf-optimized-N-*) machines, which Enterprise does not offer; shared-core
# tiers have no high availability (https://cloud.google.com/sql/docs/postgres/instance-settings).
DB_PERF_TIER = re.compile(r"^db-perf-optimized-N-(?P<cpus>\d+)$")
SHARED_CORE_TIERS = ("db-f1-micro", "db-g1-small")


def tier_edition_problem(tier: str, edition: str) -> Optional[str]:
    perf = bool(DB_PERF_TIER.match(tier))
    if edition == "ENTERPRISE_PLUS" and not perf:
        return "edition ENTERPRISE_PLUS accepts only db-perf-optimized-N-<vCPUs> tiers"
    if edition == "ENTERPRISE" and perf:
        return "db-perf-optimized tiers need db_edition ENTERPRISE_PLUS"
    return None


def high_availability_problem(tier: str) -> Optional[str]:
    return f"shared-core tier {tier} has no high availability" if tier in SHARED_CORE_TIERS else None


# BackupConfiguration.transactionLogRetentionDays: 1-7, 1-35 on Enterprise Plus
# (https://cloud.google.com/sql/docs/postgres/admin-api/rest/v1/instances#backupconfiguration).
def max_log_retention_days(edition: str) -> int:
    return 35 if edition == "ENTERPRISE_PLUS" else 7


def retention_problem(retained_backups: int, log_retention_days: int) -> Optional[str]:
    """The API refuses more days of transaction logs than backups kept ("Invalid request: backup
    retention should be > transaction log retention", terraform-google-sql-db PR #785); its own
    defaults, 7 backups and 7 days, are accepted, so equal counts pass."""
    if log_retention_days > retained_backups:
        return f"must be <= the backups kept ({retained_backups}): Cloud SQL keeps logs only as far back as backups"
    return None


# --- GKE -----------------------------------------------------------------------------------------
# NodeConfig.diskSizeGb: "The smallest allowed disk size is 10GB"
# (https://cloud.google.com/kubernetes-engine/docs/reference/rest/v1/NodeConfig; pulumi-gcp's
# ClusterNodeConfig.disk_size_gb says the same).
MIN_NODE_DISK_GB = 10
# https://cloud.google.com/kubernetes-engine/docs/deprecations/vulnerability-scanning-gkee: the
# standard tier (VULNERABILITY_BASIC) was removed on 2025-07-31, Advanced Vulnerability Insights
# (VULNERABILITY_ENTERPRISE) on 2026-06-16; a removed tier cannot be enabled.
SUPPORTED_VULNERABILITY_MODES = ("VULNERABILITY_DISABLED",)
# Managed Service for Prometheus runs its collectors here: Standard clusters, then Autopilot
# (https://cloud.google.com/stackdriver/docs/managed-prometheus/setup-managed).
MANAGED_COLLECTOR_NAMESPACES = ("gmp-system", "gke-gmp-system")
# Google front ends and health checkers, the sources of Ingress and load-balancer health-check
# traffic (https://cloud.google.com/load-balancing/docs/health-check-concepts#ip-ranges).
GOOGLE_LB_RANGES = ("130.211.0.0/22", "35.191.0.0/16")


# --- resource names --------------------------------------------------------------------------------
# A `name` input the program leaves unset is filled by Pulumi: the logical name, "-" and 7 random hex
# digits (pulumi-gcp provider/resources.go `SetAutonaming`; the suffix shows in pulumi/pulumi-gcp#1510).
AUTONAME_SUFFIX_LENGTH = 8
# RFC 1035 labels, as most Compute Engine names: a lowercase letter, then lowercase letters, digits and
# hyphens, not ending with a hyphen (pulumi-gcp's `name` docstrings of Network, Subnetwork, Router, NAT,
# Address, GlobalAddress, SSLPolicy: "1-63 characters long, and comply with RFC1035").
_RFC1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_COMPUTE = ("name", 63, _RFC1035, "1-63 lowercase letters, digits and hyphens (RFC 1035)")
_KMS = ("name", 63, r"[a-zA-Z0-9_-]+", "1-63 letters, digits, '_' and '-'")


@dataclass(frozen=True)
class NameRule:
    field: str
    """The input that holds the name."""
    max_length: int
    pattern: str
    """What GCP accepts, as a full-match regular expression."""
    allowed: str
    """The rule in words, for refusals."""


_PUBSUB = r"(?!goog)[A-Za-z][-A-Za-z0-9_.~+%]{2,254}"
_PUBSUB_ALLOWED = "3-255 letters, digits and -_.~+%, starting with a letter, not with 'goog'"
NAME_RULES: dict[str, NameRule] = {token: NameRule(*rule) for token, rule in {
    # GKE: "a lowercase letter followed by up to 39 lowercase letters, numbers, or hyphens", not ending
    # with a hyphen; the API refuses longer node pool names with the regex '[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?'
    # (pulumi/pulumi-gcp#1510).
    "gcp:container/cluster:Cluster": ("name", 40, _RFC1035, "1-40 lowercase letters, digits and hyphens"),
    "gcp:container/nodePool:NodePool": ("name", 40, _RFC1035, "1-40 lowercase letters, digits and hyphens"),
    "gcp:compute/network:Network": _COMPUTE,
    "gcp:compute/subnetwork:Subnetwork": _COMPUTE,
    "gcp:compute/router:Router": _COMPUTE,
    "gcp:compute/routerNat:RouterNat": _COMPUTE,
    "gcp:compute/address:Address": _COMPUTE,
    "gcp:compute/firewall:Firewall": _COMPUTE,
    "gcp:compute/globalAddress:GlobalAddress": _COMPUTE,
    "gcp:compute/sSLPolicy:SSLPolicy": _COMPUTE,
    "gcp:compute/securityPolicy:SecurityPolicy": _COMPUTE,
    # Cloud KMS CreateKeyRingRequest.key_ring_id and CreateCryptoKeyRequest.crypto_key_id: [a-zA-Z0-9_-]{1,63}.
    "gcp:kms/keyRing:KeyRing": _KMS,
    "gcp:kms/cryptoKey:CryptoKey": _KMS,
    # Cloud SQL Admin API v1: the instance ID (without the project) has lowercase letters, digits and
    # hyphens, starts with a letter, at most 98 characters.
    "gcp:sql/databaseInstance:DatabaseInstance": ("name", 98, r"[a-z][-a-z0-9]*",
                                                  "1-98 lowercase letters, digits and hyphens, starting with a letter"),
    # PostgreSQL keeps at most NAMEDATALEN-1 = 63 bytes of a database or role name and truncates the rest
    # (postgresql.org/docs, "Identifiers and Key Words"): an IAM user's name (SA@PROJECT.iam) must fit whole.
    "gcp:sql/database:Database": ("name", 63, r"[a-z_][a-z0-9_]*", "1-63 lowercase letters, digits and '_'"),
    "gcp:sql/user:User": ("name", 63, r"\S+", "1-63 characters"),
    # Secret Manager CreateSecretRequest.secret_id: at most 255 letters, digits, '-' and '_'.
    "gcp:secretmanager/secret:Secret": ("secretId", 255, r"[a-zA-Z0-9_-]+", "1-255 letters, digits, '_' and '-'"),
    # Artifact Registry repository ids: lowercase letters, digits and hyphens, starting with a letter and
    # ending with a letter or digit, at most 63 characters.
    "gcp:artifactregistry/repository:Repository": ("repositoryId", 63, _RFC1035,
                                                   "1-63 lowercase letters, digits and hyphens"),
    # https://cloud.google.com/iam/docs/service-accounts-create#creating: a service account id is 6-30
    # characters, lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen.
    "gcp:serviceaccount/account:Account": ("accountId", 30, r"[a-z][a-z0-9-]{4,28}[a-z0-9]",
                                           "6-30 lowercase letters, digits and hyphens"),
    # https://cloud.google.com/storage/docs/buckets#naming: 3-63 lowercase letters, digits, '-' and '_'
    # (dots allow more, but none are used), starting and ending with a letter or digit.
    "gcp:storage/bucket:Bucket": ("name", 63, r"[a-z0-9][-a-z0-9_]{1,61}[a-z0-9]",
                                  "3-63 lowercase letters, digits, '-' and '_'"),
    # BigQuery datasets.insert: a dataset id has letters, digits and underscores, at most 1,024 characters.
    "gcp:bigquery/dataset:Dataset": ("datasetId", 1024, r"\w+", "1-1024 letters, digits and '_'"),
    # Logging API LogSink.name: "limited to 100 characters", letters, digits, '_', '-', '.', the first a
    # letter or digit; LogExclusion.name alike.
    "gcp:logging/projectSink:ProjectSink": ("name", 100, r"[A-Za-z0-9][A-Za-z0-9_.-]*",
                                            "1-100 letters, digits, '_', '-', '.', starting with a letter or digit"),
    "gcp:logging/projectExclusion:ProjectExclusion": ("name", 100, r"[A-Za-z0-9][A-Za-z0-9_.-]*",
                                                      "1-100 letters, digits, '_', '-', '.', starting with a letter "
                                                      "or digit"),
    # Pub/Sub topic and subscription ids (google.pubsub.v1 Topic.name): a letter, then letters, digits and
    # -_.~+%, 3-255 characters in all, not starting with "goog".
    "gcp:pubsub/topic:Topic": ("name", 255, _PUBSUB, _PUBSUB_ALLOWED),
    "gcp:pubsub/subscription:Subscription": ("name", 255, _PUBSUB, _PUBSUB_ALLOWED),
    # Logging LogMetric.name: at most 100 characters of letters, digits and _-.,+!*',()%/ (no leading slash).
    "gcp:logging/metric:Metric": ("name", 100, r"[A-Za-z0-9_.,+!*'()%-][A-Za-z0-9_.,+!*'()%/-]*",
                                  "1-100 letters, digits and _-.,+!*',()%/, not starting with '/'"),
}.items()}


def name_problem(type_token: str, name: str) -> Optional[str]:
    """Whether GCP accepts `name` for a resource of this type (NAME_RULES has the type)."""
    rule = NAME_RULES[type_token]
    if len(name) <= rule.max_length and re.fullmatch(rule.pattern, name):
        return None
    return f"makes the {rule.field} {name!r} ({len(name)} chars) of a {type_token}; GCP allows {rule.allowed}"
