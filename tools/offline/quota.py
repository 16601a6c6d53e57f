"""What a stack needs of Compute Engine's quotas, per region, from what the program declares.

Like the cost estimate, it reads the recorded resources (not the settings): node pools at their
autoscaling minimum and maximum, the default pools GKE creates and removes while a cluster is created,
Cloud NAT's addresses and the reserved ones.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass

from tools.offline.cost import zone_count
from tools.offline.stack import StackRun

PHASES = ("first_up", "minimum", "maximum", "upgrading")
PHASE_TITLES = ("First `up`", "Minimum", "Maximum", "Maximum, upgrading")
GLOBAL = "global"
# E2's shared-core machine types have 2 vCPUs (https://cloud.google.com/compute/docs/general-purpose-machines).
SHARED_CORE_VCPUS = 2
# GKE's surge upgrade adds one node at a time unless the pool says otherwise
# (https://cloud.google.com/kubernetes-engine/docs/concepts/node-pool-upgrade-strategies).
DEFAULT_MAX_SURGE = 1
# Cloud NAT's automatic allocation reserves static regional external addresses as VMs need ports: 64 per VM
# by default, 64,512 per address (https://cloud.google.com/nat/docs/ports-and-addresses).
NAT_PORTS_PER_VM = 64
NAT_PORTS_PER_ADDRESS = 64_512
# Boot disk type -> the regional quota its size counts against; balanced and SSD disks share one
# (https://cloud.google.com/kubernetes-engine/docs/how-to/custom-boot-disks, "Balanced and SSD Persistent
# Disks have disk quotas which are different from standard Persistent Disk quotas").
DISK_QUOTAS = {"pd-standard": "DISKS_TOTAL_GB", "pd-balanced": "SSD_TOTAL_GB", "pd-ssd": "SSD_TOTAL_GB",
               "hyperdisk-balanced": "HYPERDISK_BALANCED_TOTAL_GB"}
METRICS = {
    "CPUS": "vCPUs of every node (Spot ones too, unless the region grants `PREEMPTIBLE_CPUS`)",
    "PREEMPTIBLE_CPUS": "vCPUs of Spot nodes",
    "SSD_TOTAL_GB": "pd-balanced and pd-ssd boot disks, GB",
    "DISKS_TOTAL_GB": "pd-standard boot disks, GB (the temporary default pools)",
    "HYPERDISK_BALANCED_TOTAL_GB": "Hyperdisk Balanced boot disks, GB",
    "INSTANCES": "nodes",
    "IN_USE_ADDRESSES": "external IPv4 addresses in use: Cloud NAT's (nodes have none)",
    "STATIC_ADDRESSES": "static external addresses: Cloud NAT reserves its automatically",
    "INTERNAL_ADDRESSES": "reserved internal addresses (internal load balancers)",
    "GLOBAL_INTERNAL_ADDRESSES": "the private services access range (Cloud SQL's peering)",
    "global static external addresses": "the Ingress address",
}


@dataclass(frozen=True)
class Nodes:
    """Some identical nodes in one region."""

    region: str
    machine_type: str
    spot: bool
    disk_type: str
    disk_gb: int
    count: int


def region_of(location: str) -> str:
    return location[:-2] if re.search(r"-[a-z]$", location) else location


def vcpus(machine_type: str) -> int:
    cpus = re.search(r"-(\d+)$", machine_type)
    return int(cpus[1]) if cpus else SHARED_CORE_VCPUS


def family_metric(machine_type: str) -> str:
    return f"{machine_type.split('-', 1)[0].upper()}_CPUS"


def node_groups(run: StackRun) -> dict[str, list[Nodes]]:
    """Nodes per phase: at the pools' minimum and maximum, upgrading at the maximum (each pool's surge in
    each zone), and during the first `up` at the minimum plus every cluster's default pool, which GKE
    creates and removes while the cluster is created (two clusters may be created at once)."""
    phases: dict[str, list[Nodes]] = {phase: [] for phase in PHASES}
    for pool in run.of_type("gcp:container/nodePool:NodePool"):
        inputs, node = pool.inputs, pool.inputs["nodeConfig"]
        zones = len(inputs.get("nodeLocations") or []) or zone_count(inputs["location"])
        surge = (inputs.get("upgradeSettings") or {}).get("maxSurge", DEFAULT_MAX_SURGE)
        counts = {"minimum": inputs["autoscaling"]["minNodeCount"] * zones,
                  "maximum": inputs["autoscaling"]["maxNodeCount"] * zones}
        counts |= {"first_up": counts["minimum"], "upgrading": counts["maximum"] + surge * zones}
        for phase, count in counts.items():
            phases[phase].append(Nodes(region_of(inputs["location"]), node["machineType"], bool(node.get("spot")),
                                       node["diskType"], node["diskSizeGb"], count))
    for cluster in run.of_type("gcp:container/cluster:Cluster"):
        node = cluster.inputs["nodeConfig"]
        count = cluster.inputs["initialNodeCount"] * zone_count(cluster.inputs["location"])
        phases["first_up"].append(Nodes(region_of(cluster.inputs["location"]), node["machineType"], False,
                                        node["diskType"], node["diskSizeGb"], count))
    return phases


def nat_addresses(vms: int) -> int:
    return max(1, math.ceil(vms * NAT_PORTS_PER_VM / NAT_PORTS_PER_ADDRESS))


def usage(run: StackRun) -> dict[str, dict[str, dict[str, int]]]:
    """Region (or GLOBAL) -> metric -> phase -> amount; metrics nothing uses are left out."""
    found: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: dict.fromkeys(PHASES, 0)))

    def add(region: str, metric: str, phase: str, amount: int) -> None:
        if amount:
            found[region][metric][phase] += amount

    for phase, groups in node_groups(run).items():
        for nodes in groups:
            cpus = vcpus(nodes.machine_type) * nodes.count
            add(nodes.region, "CPUS", phase, cpus)
            if not nodes.machine_type.startswith("n1-"):  # N1 has no family quota: CPUS is its quota
                add(nodes.region, family_metric(nodes.machine_type), phase, cpus)
            add(nodes.region, "PREEMPTIBLE_CPUS", phase, cpus if nodes.spot else 0)
            add(nodes.region, DISK_QUOTAS[nodes.disk_type], phase, nodes.disk_gb * nodes.count)
            add(nodes.region, "INSTANCES", phase, nodes.count)
        for nat in run.of_type("gcp:compute/routerNat:RouterNat"):
            vms = sum(nodes.count for nodes in groups if nodes.region == nat.inputs["region"])
            for metric in ("IN_USE_ADDRESSES", "STATIC_ADDRESSES"):
                add(nat.inputs["region"], metric, phase, nat_addresses(vms))
        for address in run.of_type("gcp:compute/address:Address"):
            add(address.inputs["region"], "INTERNAL_ADDRESSES", phase, int(address.inputs.get("addressType") == "INTERNAL"))
        for address in run.of_type("gcp:compute/globalAddress:GlobalAddress"):
            internal = address.inputs.get("addressType") == "INTERNAL"
            add(GLOBAL, "GLOBAL_INTERNAL_ADDRESSES" if internal else "global static external addresses", phase, 1)
    return found


def _table(metrics: dict[str, dict[str, int]]) -> list[str]:
    def order(metric: str) -> tuple:
        return (list(METRICS).index(metric) if metric in METRICS else 1, metric)

    lines = [f"| Metric | What counts | {' | '.join(PHASE_TITLES)} |", "|---|---|" + "---:|" * len(PHASES)]
    for metric in sorted(metrics, key=order):
        what = METRICS.get(metric, f"vCPUs of {metric.split('_')[0].lower()} nodes, where the region lists this "
                                   "family quota (otherwise `CPUS` alone applies)")
        name = metric if metric.islower() else f"`{metric}`"
        lines.append(f"| {name} | {what} | " + " | ".join(str(metrics[metric][phase]) for phase in PHASES) + " |")
    return lines


def quota_markdown(run: StackRun) -> str:
    found = usage(run)
    regions = sorted(region for region in found if region != GLOBAL)
    lines = [f"# Quotas: stack `{run.stack}`", "",
             "What the stack needs of Compute Engine's quotas, counted from the resources the plan declares. "
             "Check it against the project before the first `pulumi up` (a quota below what a column needs, "
             "plus what the project already uses, fails the `up` or stops the autoscaler):", "",
             "```bash", *(f"gcloud compute regions describe {region} --project PROJECT_ID \\\n"
                          "  --flatten=quotas --format='table(quotas.metric,quotas.limit,quotas.usage)'"
                          for region in regions),
             "gcloud compute project-info describe --project PROJECT_ID \\\n"
             "  --flatten=quotas --format='table(quotas.metric,quotas.limit,quotas.usage)'   # global ones",
             "```", "",
             "and raise what falls short on the console's *IAM & Admin > Quotas* page. *First `up`*: the node "
             "pools at their minimum plus each cluster's temporary default pool (GKE creates it with the cluster "
             "and removes it; clusters may be created at once). *Maximum, upgrading*: the maximum plus each "
             "pool's upgrade surge in each zone, an upper bound.", ""]
    for region in regions:
        lines += [f"## {region}", "", *_table(found[region]), ""]
    if GLOBAL in found:
        lines += ["## Project-wide", "", *_table(found[GLOBAL]), ""]
    instances = run.of_type("gcp:sql/databaseInstance:DatabaseInstance")
    lines += ["## Not Compute Engine's", "",
              f"Cloud SQL ({len(instances)} instance(s): "
              f"{', '.join(i.inputs['settings']['tier'] for i in instances)}) counts against Cloud SQL's own "
              "quotas, not the ones above: its vCPUs and disk are not in `CPUS` or `SSD_TOTAL_GB`. Spot VMs take "
              "standard CPU and disk quota where the region grants no preemptible quota "
              "(https://cloud.google.com/compute/docs/instances/create-use-spot); the e2-medium of a default pool "
              "is counted as its 2 vCPUs.", ""]
    return "\n".join(lines)
