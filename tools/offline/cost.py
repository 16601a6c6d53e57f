"""Estimated monthly cost of a stack, itemised, from what the program declares and a price table.

The estimate reads the recorded resources (not the settings), so it prices exactly the plan:
clusters, node pools at min and max autoscaling, Cloud SQL, NAT, load balancers, storage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from loadtest.stack.templates import POOL_LABEL
from tools.offline.stack import ROOT, StackRun

PRICES_FILE = ROOT / "tools" / "pricing" / "prices.yaml"
MEMORY_PER_VCPU = {"standard": 4, "highmem": 8, "highcpu": 1}
ZONES_PER_REGION = 3
KIB_PER_GIB = 1024 ** 2
DAYS_PER_MONTH = 30
MS_PER_DAY = 86_400_000
SAMPLE_RATE_ARG = "--payload-sample-rate"


@dataclass(frozen=True)
class LineItem:
    item: str
    detail: str
    monthly_min: float
    monthly_max: float


def load_prices(path: Path = PRICES_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def machine_hourly(machine_type: str, prices: dict) -> float:
    compute = prices["compute"]
    if machine_type in compute["shared_core"]:
        return compute["shared_core"][machine_type]
    family, shape, cpus = re.fullmatch(r"([a-z0-9]+)-(standard|highmem|highcpu)-(\d+)", machine_type).groups()
    per_cpu, per_gb = compute["families"][family]
    return int(cpus) * (per_cpu + MEMORY_PER_VCPU[shape] * per_gb)


def sql_hourly(tier: str, edition: str, prices: dict) -> float:
    sql = prices["cloud_sql"]
    if tier in sql["shared_core"]:
        return sql["shared_core"][tier]
    custom = re.fullmatch(r"db-custom-(\d+)-(\d+)", tier)
    if custom:
        cpus, memory_gb = int(custom[1]), int(custom[2]) / 1024
    else:
        cpus = int(re.fullmatch(r"db-perf-optimized-N-(\d+)", tier)[1])
        memory_gb = 8 * cpus
    rates = sql["enterprise_plus" if edition == "ENTERPRISE_PLUS" else "enterprise"]
    return cpus * rates["vcpu"] + memory_gb * rates["memory_gb"]


def node_hourly(node: dict, prices: dict) -> float:
    """One node of a pool per hour: machine (Spot discounted) and boot disk."""
    hourly = machine_hourly(node["machineType"], prices)
    if node.get("spot"):
        hourly *= prices["compute"]["spot_fraction"]
    return hourly + node["diskSizeGb"] * prices["compute"]["balanced_disk_per_gb_month"] / prices["hours_per_month"]


def load_test_cost_markdown(run: StackRun, prices: dict | None = None) -> str:
    """Per hour of a load-test run: the declared pool beside the alternative, a separate small cluster."""
    prices = prices or load_prices()
    [pool] = [p for p in run.of_type("gcp:container/nodePool:NodePool")
              if p.inputs["nodeConfig"].get("labels", {}).get("pool") == POOL_LABEL]
    lines = [f"# Estimated cost: load-test stack `{run.stack}`", "",
             f"List prices, {prices['region']}, {prices['currency']}, from `tools/pricing/prices.yaml`, "
             "per hour of a run (`make loadtest TARGET=cluster`):", ""]
    node, nodes = pool.inputs["nodeConfig"], pool.inputs["autoscaling"]["maxNodeCount"]
    pool_hourly = nodes * (node_hourly(node, prices) + prices["network"]["nat_gateway_per_vm_hour"])
    fee = prices["gke"]["cluster_fee_per_hour"]
    detail = (f"{nodes} × {node['machineType']}{' Spot' if node.get('spot') else ''} + "
              f"{node['diskSizeGb']} GB disk, NAT gateway")
    lines += [
        f"The pool `{pool.name}` scales from 0: it costs only while a run's pods run, plus the ~10 minutes the "
        "autoscaler waits before removing an idle node. A separate cluster would cost its management fee for as "
        "long as it exists (the free tier covers one zonal cluster per billing account: the platform's).", "",
        "| Option | Detail | Per hour of a run | Per idle hour |", "|---|---|---:|---:|",
        f"| **Node pool on the serving cluster (declared)** | {detail} | {pool_hourly:.3f} | 0.000 |",
        f"| Separate small cluster (not declared) | the same nodes + cluster management ${fee:.2f}/h | "
        f"{pool_hourly + fee:.3f} | {fee:.3f} |", ""]
    return "\n".join(lines)


def zone_count(location: str) -> int:
    """A zone looks like REGION-x; a regional pool spans three zones."""
    return 1 if re.search(r"-[a-z]$", location) else ZONES_PER_REGION


def estimate(run: StackRun, prices: dict | None = None) -> list[LineItem]:
    prices = prices or load_prices()
    hours = prices["hours_per_month"]
    usage = prices["assumed_usage"][_environment(run)]
    items: list[LineItem] = []

    clusters = run.of_type("gcp:container/cluster:Cluster")
    fee = len(clusters) * prices["gke"]["cluster_fee_per_hour"] * hours
    items.append(LineItem("GKE cluster management", f"{len(clusters)} cluster(s) × $0.10/h "
                          f"(free tier credits ${prices['gke']['free_tier_monthly_credit']:.2f} for one zonal cluster)",
                          fee, fee))

    vms_min = vms_max = 0
    for pool in sorted(run.of_type("gcp:container/nodePool:NodePool"), key=lambda p: p.name):
        node = pool.inputs["nodeConfig"]
        zones = len(pool.inputs.get("nodeLocations") or []) or zone_count(pool.inputs["location"])
        low, high = (pool.inputs["autoscaling"][key] * zones for key in ("minNodeCount", "maxNodeCount"))
        vms_min, vms_max = vms_min + low, vms_max + high
        per_node = node_hourly(node, prices) * hours
        items.append(LineItem(
            f"Nodes: {pool.name}",
            f"{low}-{high} × {node['machineType']}{' Spot' if node.get('spot') else ''} "
            f"({zones} zone{'s' if zones > 1 else ''}) + {node['diskSizeGb']} GB disk each",
            low * per_node, high * per_node))

    for instance in run.of_type("gcp:sql/databaseInstance:DatabaseInstance"):
        settings = instance.inputs["settings"]
        ha = settings["availabilityType"] == "REGIONAL"
        factor = 2 if ha else 1
        compute = sql_hourly(settings["tier"], settings.get("edition", "ENTERPRISE"), prices) * hours * factor
        storage = settings["diskSize"] * prices["cloud_sql"]["ssd_per_gb_month"] * factor
        backups = usage["backup_gb"] * prices["cloud_sql"]["backup_per_gb_month"] if \
            settings["backupConfiguration"]["enabled"] else 0.0
        total = compute + storage + backups
        items.append(LineItem("Cloud SQL", f"{settings['tier']} {'HA (REGIONAL)' if ha else 'zonal'}, "
                              f"{settings['diskSize']} GB SSD, backups ~{usage['backup_gb']} GB", total, total))

    nats = run.of_type("gcp:compute/routerNat:RouterNat")
    if nats:
        network = prices["network"]
        data = usage["nat_gb"] * network["nat_data_per_gb"]
        items.append(LineItem("Cloud NAT", f"gateway per VM-hour + {usage['nat_gb']} GB processed",
                              min(vms_min, 32) * network["nat_gateway_per_vm_hour"] * hours + data,
                              min(vms_max, 32) * network["nat_gateway_per_vm_hour"] * hours + data))

    balancers = len(run.of_type("kubernetes:networking.k8s.io/v1:Ingress")) + sum(
        1 for s in run.of_type("kubernetes:core/v1:Service") if s.inputs["spec"].get("type") == "LoadBalancer")
    if balancers:
        lb = balancers * prices["network"]["lb_forwarding_rule_per_hour"] * hours
        items.append(LineItem("Load balancers", f"{balancers} forwarding rule(s) (HTTPS Ingress, internal LB)",
                              lb, lb))

    gateways = run.of_type("kubernetes:gateway.networking.k8s.io/v1:Gateway")
    if gateways:
        network, (low, high) = prices["network"], usage["gateway_proxies"]
        fixed = len(gateways) * network["lb_forwarding_rule_per_hour"] * hours
        data = 2 * usage["gateway_gb"] * network["lb_data_per_gb"]
        proxy = network["internal_alb_proxy_instance_per_hour"] * hours
        items.append(LineItem("Serving Gateway", f"{len(gateways)} internal Application Load Balancer(s): forwarding "
                              f"rule, {low}-{high} proxy instance(s), {usage['gateway_gb']} GB processed each way",
                              fixed + low * proxy + data, fixed + high * proxy + data))

    keys = run.of_type("gcp:kms/cryptoKey:CryptoKey")
    if keys:
        kms = prices["kms"]
        monthly = len(keys) * kms["versions_kept"] * kms["key_version_per_month"]
        items.append(LineItem("Cloud KMS", f"{len(keys)} key(s) × up to {kms['versions_kept']} active versions "
                              "(90-day rotation)", monthly, monthly))

    secrets = run.of_type("gcp:secretmanager/secret:Secret")
    if secrets:
        sm = prices["secret_manager"]
        locations = sum(len(s.inputs["replication"]["userManaged"]["replicas"]) for s in secrets)
        versions = locations * sm["versions_kept"] * sm["version_per_location_month"]
        accesses = usage["secret_accesses"] / 10_000 * sm["access_per_10k"]
        items.append(LineItem("Secret Manager", f"{len(secrets)} secret(s) in {locations} replica(s) in all, × up to "
                              f"{sm['versions_kept']} versions + {usage['secret_accesses']:,} accesses (pod starts)",
                              versions + accesses, versions + accesses))

    if run.of_type("gcp:pubsub/topic:Topic"):
        pubsub = prices["pubsub"]
        # published once, delivered once (and again for each post the webhook refused)
        gib = 2 * pubsub["incidents_per_month"] * pubsub["incident_kb"] / KIB_PER_GIB
        monthly = max(0.0, gib - pubsub["free_gib_month"]) / 1024 * pubsub["throughput_per_tib"]
        items.append(LineItem("Pub/Sub (chat relay)", f"~{pubsub['incidents_per_month']:,} incidents/month × "
                              f"{pubsub['incident_kb']} KB, published and pulled: {gib * 1024:.0f} MiB, within "
                              f"the free {pubsub['free_gib_month']} GiB", monthly, monthly))

    storage = prices["storage"]
    stored = usage["bucket_gb"] * storage["standard_per_gb_month"] + usage["registry_gb"] * storage[
        "registry_per_gb_month"]
    items.append(LineItem("Storage", f"artifact bucket {usage['bucket_gb']} GB, images {usage['registry_gb']} GB",
                          stored, stored))

    python_repositories = [r for r in run.of_type("gcp:artifactregistry/repository:Repository")
                           if r.inputs.get("format") == "PYTHON" and r.inputs.get("mode") != "VIRTUAL_REPOSITORY"]
    if python_repositories:
        packages = usage["packages_gb"] * storage["registry_per_gb_month"]
        kinds = "PyPI cache and private packages" if len(python_repositories) > 1 else "PyPI cache"
        items.append(LineItem("Python packages", f"{kinds}, {usage['packages_gb']} GB; pods download in-region, "
                              "no transfer cost",
                              packages, packages))
    items += payload_log_items(run, prices, usage)
    return items


def payload_sample_rate(run: StackRun) -> float:
    """The serving container's payload sample rate as rendered (0 when it logs nothing)."""
    for deployment in run.of_type("kubernetes:apps/v1:Deployment"):
        for container in deployment.inputs["spec"]["template"]["spec"]["containers"]:
            args = container.get("args") or []
            if SAMPLE_RATE_ARG in args:
                return float(args[args.index(SAMPLE_RATE_ARG) + 1])
    return 0.0


def payload_log_items(run: StackRun, prices: dict, usage: dict) -> list[LineItem]:
    """BigQuery storage (steady state: retention days of entries) and streaming of the sampled requests; Cloud
    Logging only if the _Default sink keeps them too."""
    datasets = [d for d in run.of_type("gcp:bigquery/dataset:Dataset") if "payloads" in d.inputs["datasetId"]]
    if not datasets:
        return []
    rate = payload_sample_rate(run)
    retention_days = datasets[0].inputs["defaultPartitionExpirationMs"] / MS_PER_DAY
    entries = usage["serving_requests"] * rate
    monthly_gib = entries * usage["payload_entry_kb"] / KIB_PER_GIB
    bigquery = prices["bigquery"]
    stored_gib = monthly_gib * retention_days / DAYS_PER_MONTH
    storage = max(0.0, stored_gib - bigquery["free_storage_gib_month"]) * bigquery["active_storage_per_gib_month"]
    streamed_gib = entries * max(usage["payload_entry_kb"], bigquery["streaming_min_row_kb"]) / KIB_PER_GIB
    streaming = streamed_gib * bigquery["streaming_per_gib"]
    assumption = (f"{usage['serving_requests']:,} requests/month × sample rate {rate:g} × "
                  f"{usage['payload_entry_kb']} KB = {monthly_gib:.1f} GiB/month")
    items = [LineItem("Payload log: BigQuery", f"{assumption}; kept {retention_days:g} days (~{stored_gib:.1f} GiB "
                      f"stored, first {bigquery['free_storage_gib_month']} GiB free) + streaming inserts",
                      storage + streaming, storage + streaming)]
    logging = monthly_gib * prices["logging"]["storage_per_gib"]
    if run.of_type("gcp:logging/projectExclusion:ProjectExclusion"):
        items.append(LineItem("Payload log: Cloud Logging", f"excluded from the _Default bucket, routed free "
                              f"(kept there too, they would cost ${logging:,.2f})", 0.0, 0.0))
    else:
        items.append(LineItem("Payload log: Cloud Logging", f"{monthly_gib:.1f} GiB/month into the _Default bucket",
                              logging, logging))
    return items


def _environment(run: StackRun) -> str:
    labels: Any = run.of_type("gcp:storage/bucket:Bucket")[0].inputs["labels"]
    return labels["env"]


def totals(items: list[LineItem]) -> tuple[float, float]:
    return sum(i.monthly_min for i in items), sum(i.monthly_max for i in items)


def cost_markdown(run: StackRun, prices: dict | None = None) -> str:
    prices = prices or load_prices()
    items = estimate(run, prices)
    low, high = totals(items)
    lines = [f"# Estimated monthly cost: stack `{run.stack}`", "",
             f"List prices, {prices['region']}, {prices['currency']}, from `tools/pricing/prices.yaml` "
             "(source and date inside); min = autoscaling minimum, max = maximum.", "",
             "| Item | Detail | Min | Max |", "|---|---|---:|---:|"]
    lines += [f"| {i.item} | {i.detail} | {i.monthly_min:,.0f} | {i.monthly_max:,.0f} |" for i in items]
    lines += [f"| **Total** | | **{low:,.0f}** | **{high:,.0f}** |", ""]
    return "\n".join(lines)


def cost_summary_line(run: StackRun) -> str:
    low, high = totals(estimate(run))
    return f"Estimated monthly cost: ${low:,.0f}-{high:,.0f} (see plan/{run.stack}/cost.md)"
