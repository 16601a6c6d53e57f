from infra.network import PODS_RANGE_NAME, SERVICES_RANGE_NAME, Network, NetworkArgs
from tests.helpers import children_of, dig

ARGS = NetworkArgs(
    project="test-project-1", region="europe-west1", subnet_cidr="10.10.0.0/20",
    secondary_ranges={PODS_RANGE_NAME: "10.16.0.0/14", SERVICES_RANGE_NAME: "10.12.0.0/20"},
    private_services_cidr="10.64.0.0/16", labels={"app": "mlflow"},
)


def build(run_component):
    return run_component(lambda: Network("net", ARGS) and None)


def test_vpc_is_custom_mode(run_component):
    vpc = build(run_component).named("net-vpc")
    assert vpc.inputs["autoCreateSubnetworks"] is False, vpc.urn


def test_subnet_has_private_google_access_and_gke_secondary_ranges(run_component):
    subnet = build(run_component).named("net-subnet")
    assert subnet.inputs["privateIpGoogleAccess"] is True, subnet.urn
    ranges = {r["rangeName"]: r["ipCidrRange"] for r in subnet.inputs["secondaryIpRanges"]}
    assert ranges == {"pods": "10.16.0.0/14", "services": "10.12.0.0/20"}, subnet.urn
    assert subnet.inputs["region"] == "europe-west1"


def test_nat_gives_private_nodes_egress_on_all_ranges(run_component):
    run = build(run_component)
    nat = run.named("net-nat")
    assert nat.inputs["sourceSubnetworkIpRangesToNat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES", nat.urn
    assert nat.inputs["router"] == run.named("net-router").state["name"]


def test_private_services_range_is_a_global_vpc_peering_address(run_component):
    address = build(run_component).named("net-psa-range")
    assert (address.inputs["purpose"], address.inputs["addressType"]) == ("VPC_PEERING", "INTERNAL"), address.urn
    assert (address.inputs["address"], address.inputs["prefixLength"]) == ("10.64.0.0", 16), address.urn


def test_servicenetworking_connection_reserves_that_range(run_component):
    run = build(run_component)
    connection = run.named("net-psa-connection")
    assert connection.inputs["service"] == "servicenetworking.googleapis.com"
    assert connection.inputs["reservedPeeringRanges"] == [run.named("net-psa-range").state["name"]], connection.urn


def test_all_network_resources_are_children_of_the_component(run_component):
    run = build(run_component)
    assert len(children_of(run, "net")) == 6
    assert dig(run.named("net-subnet").inputs, "logConfig.metadata") == "INCLUDE_ALL_METADATA"
