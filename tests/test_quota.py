"""plan/<stack>/quota.md: what a stack needs of Compute Engine's quotas, moving with the settings."""

from __future__ import annotations

import re

import pytest

from tools.offline.quota import GLOBAL, quota_markdown, usage
from tools.offline.render import render
from tools.offline.stack import ROOT

REGION = "us-central1"


def need(run, metric: str, phase: str, region: str = REGION) -> int:
    return usage(run)[region][metric][phase]


def test_raising_a_pools_maximum_raises_the_maximum_cpus_and_ssd(stack_runs, run_stack_with):
    base, raised = stack_runs["prod"], run_stack_with("prod", {"clusters.serving.maxNodes": "7"})
    # 2 more c3-standard-4 nodes in each of 3 zones, each on its 100 GB pd-balanced disk
    assert need(raised, "CPUS", "maximum") - need(base, "CPUS", "maximum") == 2 * 3 * 4
    assert need(raised, "C3_CPUS", "maximum") - need(base, "C3_CPUS", "maximum") == 2 * 3 * 4
    assert need(raised, "SSD_TOTAL_GB", "maximum") - need(base, "SSD_TOTAL_GB", "maximum") == 2 * 3 * 100
    assert need(raised, "CPUS", "minimum") == need(base, "CPUS", "minimum")


def test_the_minimum_follows_the_pools_minimum_and_disk_size(stack_runs, run_stack_with):
    run = run_stack_with("dev", {"clusters.platform.minNodes": "2", "clusters.nodeDiskSizeGb": "80"})
    assert need(run, "CPUS", "minimum") == 2 * 4 and need(run, "SSD_TOTAL_GB", "minimum") == 2 * 80
    assert need(stack_runs["dev"], "SSD_TOTAL_GB", "minimum") == 50


@pytest.mark.parametrize("stack, clusters, zones", [("dev", 1, 1), ("prod", 2, 3)])
def test_the_first_up_adds_every_clusters_default_pool_on_standard_disks(stack_runs, stack, clusters, zones):
    run = stack_runs[stack]
    assert need(run, "DISKS_TOTAL_GB", "first_up") == clusters * zones * 10
    assert need(run, "CPUS", "first_up") - need(run, "CPUS", "minimum") == clusters * zones * 2  # e2-medium
    # the default pools take no SSD quota (GKE's default 100 GB pd-balanced would add 300 per regional cluster)
    assert need(run, "SSD_TOTAL_GB", "first_up") == need(run, "SSD_TOTAL_GB", "minimum")
    assert need(run, "DISKS_TOTAL_GB", "minimum") == 0


def test_spot_nodes_need_preemptible_cpus_and_on_demand_nodes_none(stack_runs, run_stack_with):
    assert need(stack_runs["dev"], "PREEMPTIBLE_CPUS", "maximum") == need(stack_runs["dev"], "CPUS", "maximum")
    assert "PREEMPTIBLE_CPUS" not in usage(run_stack_with("dev", {"clusters.platform.spot": "false"}))[REGION]
    assert "PREEMPTIBLE_CPUS" not in usage(stack_runs["prod"])[REGION]


def test_hyperdisk_pools_count_against_the_hyperdisk_quota(run_stack_with):
    run = run_stack_with("prod", {"clusters.serving.machineType": "c4-standard-4"})
    assert need(run, "HYPERDISK_BALANCED_TOTAL_GB", "minimum") == 3 * 100
    assert need(run, "SSD_TOTAL_GB", "minimum") == 3 * 100  # the e2 platform pool stays on pd-balanced


def test_addresses_cloud_nat_and_the_reserved_ones(stack_runs):
    prod = usage(stack_runs["prod"])
    assert prod[REGION]["IN_USE_ADDRESSES"]["maximum"] == 1  # one NAT address serves ~1,000 VMs
    assert prod[REGION]["INTERNAL_ADDRESSES"]["minimum"] == 2  # tracking's internal load balancer, the serving Gateway
    assert prod[GLOBAL]["GLOBAL_INTERNAL_ADDRESSES"]["minimum"] == 1
    assert prod[GLOBAL]["global static external addresses"]["minimum"] == 1  # the Ingress
    assert usage(stack_runs["dev"])[REGION]["INTERNAL_ADDRESSES"]["minimum"] == 1  # the serving Gateway


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_quota_md_is_in_the_plan_with_a_table_per_region_and_how_to_check(stack_runs, stack):
    text = render(stack_runs[stack])["quota.md"]
    assert text == quota_markdown(stack_runs[stack])
    assert f"## {REGION}" in text and f"gcloud compute regions describe {REGION}" in text
    row = next(line for line in text.splitlines() if line.startswith("| `CPUS` |"))
    assert [int(cell) for cell in row.strip("|").split("|")[2:]] == [
        need(stack_runs[stack], "CPUS", phase) for phase in ("first_up", "minimum", "maximum", "upgrading")]
    assert "Cloud SQL" in text and "not the ones above" in text


def test_readme_tells_to_check_quota_md_before_the_first_up():
    readme = (ROOT / "README.md").read_text()
    deploying = re.search(r"^## Deploying\n(.*?)^## ", readme, re.S | re.M)[1]
    assert "plan/<stack>/quota.md" in deploying
    assert deploying.index("quota.md") < deploying.index("pulumi up -s dev")
