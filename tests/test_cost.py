"""The cost estimate: itemised from the declared resources, moving the way prices do."""

from __future__ import annotations

import pytest

from infra.secrets import SECRET_LENGTHS
from tools.offline.cost import estimate, load_prices, machine_hourly, sql_hourly, totals
from tools.offline.reference import cost_rows, cost_section
from tools.offline.stack import ROOT


def line(run, prefix: str):
    matches = [item for item in estimate(run) if item.item.startswith(prefix)]
    assert len(matches) == 1, [i.item for i in estimate(run)]
    return matches[0]


def test_prod_costs_more_than_dev(stack_runs):
    assert totals(estimate(stack_runs["prod"]))[0] > totals(estimate(stack_runs["dev"]))[1]


def test_high_availability_raises_the_database_line(stack_runs, run_stack_with):
    zonal = line(stack_runs["dev"], "Cloud SQL").monthly_min
    regional = line(run_stack_with("dev", {"database.highAvailability": "true"}), "Cloud SQL").monthly_min
    assert regional > 1.8 * zonal


def test_machine_type_changes_the_node_line(stack_runs, run_stack_with):
    base = line(stack_runs["dev"], "Nodes")
    bigger = line(run_stack_with("dev", {"clusters.platform.machineType": "n2-standard-8"}), "Nodes")
    assert bigger.monthly_min > base.monthly_min and "n2-standard-8" in bigger.detail


def test_spot_nodes_are_cheaper(stack_runs, run_stack_with):
    spot = line(stack_runs["dev"], "Nodes")
    on_demand = line(run_stack_with("dev", {"clusters.platform.spot": "false"}), "Nodes")
    assert on_demand.monthly_max > 2 * spot.monthly_max


def test_node_line_spans_autoscaling_min_to_max(run_stack_with):
    item = line(run_stack_with("dev", {"clusters.platform.minNodes": "2", "clusters.platform.maxNodes": "5"}), "Nodes")
    assert item.monthly_max == pytest.approx(item.monthly_min * 5 / 2)


def test_regional_pools_count_three_zones(stack_runs):
    assert "3-9 × e2-standard-4 (3 zones)" in line(stack_runs["prod"], "Nodes: mlflow-platform").detail


def test_load_balancers_are_priced_only_where_declared(stack_runs):
    assert not [i for i in estimate(stack_runs["dev"]) if i.item == "Load balancers"]
    assert "2 forwarding rule(s)" in line(stack_runs["prod"], "Load balancers").detail


def test_the_serving_gateway_is_priced_where_a_model_is_served(stack_runs, run_stack_with):
    prices = load_prices()
    item = line(stack_runs["prod"], "Serving Gateway")
    proxy = prices["network"]["internal_alb_proxy_instance_per_hour"] * prices["hours_per_month"]
    assert item.monthly_max - item.monthly_min == pytest.approx(5 * proxy)  # 1-6 proxy instances
    assert "1 internal Application Load Balancer" in item.detail
    assert not [i for i in estimate(run_stack_with("dev", {"serving.modelName": ""})) if i.item == "Serving Gateway"]


@pytest.mark.parametrize("stack, accesses", [("dev", 2000), ("prod", 20000)])
def test_secret_manager_prices_every_secret_location_version_and_access(stack_runs, stack, accesses):
    item = line(stack_runs[stack], "Secret Manager")
    prices = load_prices()["secret_manager"]
    secrets = len(SECRET_LENGTHS) + (1 if stack == "prod" else 0)  # prod's chat webhook URL
    expected = secrets * prices["versions_kept"] * prices["version_per_location_month"] + accesses / 10_000 * prices[
        "access_per_10k"]
    assert (item.monthly_min, item.monthly_max) == (pytest.approx(expected), pytest.approx(expected))
    assert item.detail.startswith(f"{secrets} secret(s) in {secrets} replica(s) in all, × up to 5 versions"), item.detail


def test_unit_prices_follow_the_table():
    prices = load_prices()
    assert machine_hourly("e2-standard-4", prices) == pytest.approx(4 * 0.021811 + 16 * 0.002923)
    assert machine_hourly("e2-highcpu-4", prices) < machine_hourly("e2-standard-4", prices)
    assert sql_hourly("db-custom-2-7680", "ENTERPRISE", prices) == pytest.approx(2 * 0.0413 + 7.5 * 0.007)
    assert "Source:" in (ROOT / "tools" / "pricing" / "prices.yaml").read_text()


def test_readme_cost_table_matches_the_committed_plans():
    readme = (ROOT / "README.md").read_text()
    assert cost_section() in readme, "run `make reference` after `make plan-all`"
    total = next(line for line in cost_section().splitlines() if line.startswith("| **Total**"))
    plans = {stack: cost_rows((ROOT / "plan" / stack / "cost.md").read_text())["Total"] for stack in ("dev", "prod")}
    assert total == "| **Total** | " + " | ".join(" | ".join(plans[s]) for s in ("dev", "prod")) + " |"


def test_cost_rows_read_only_the_monthly_table():
    dev = "| Item | Detail | Min | Max |\n|---|---|---:|---:|\n| Nodes: a | x | 1 | 2 |\n| **Total** | | **1** | **2** |\n\n" \
          "| Item | Detail | per hour | idle |\n|---|---|---:|---:|\n| Load | y | 9 | 0 |\n"
    assert cost_rows(dev) == {"Nodes: a": ("1", "2"), "Total": ("1", "2")}


def test_the_chat_relays_pubsub_is_priced_and_within_the_free_tier(stack_runs):
    item = line(stack_runs["prod"], "Pub/Sub (chat relay)")
    assert (item.monthly_min, item.monthly_max) == (0, 0) and "within the free 10 GiB" in item.detail
    assert not [i for i in estimate(stack_runs["dev"]) if i.item.startswith("Pub/Sub")]
