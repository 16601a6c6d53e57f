"""VPC, subnet with GKE secondary ranges, Cloud NAT, private services access for Cloud SQL, and the serving
Gateway's proxy-only subnet and address."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from infra.naming import child_options

PODS_RANGE_NAME = "pods"
SERVICES_RANGE_NAME = "services"


@dataclass(frozen=True)
class NetworkArgs:
    project: str
    """GCP project."""
    region: str
    """Region of the subnet, router and NAT."""
    subnet_cidr: str
    """Primary range (node IPs)."""
    secondary_ranges: dict[str, str]
    """Secondary ranges by name: pods and Services of each cluster."""
    private_services_cidr: str
    """Range peered to Google's service producer network (Cloud SQL private IP)."""
    labels: dict[str, str]
    """Labels for labelable resources."""
    internal_ips: tuple[tuple[str, str], ...] = ()
    """(role, address) pairs reserved in the subnet for internal load balancers."""
    global_ingress_address: bool = False
    """Reserve a global external address for an HTTPS Ingress."""
    proxy_only_cidr: Optional[str] = None
    """Range of the region's proxy-only subnet, and an internal address for the serving Gateway; None: neither."""


class Network(pulumi.ComponentResource):
    """A custom-mode VPC whose nodes reach the internet only through Cloud NAT."""

    network_id: pulumi.Output[str]
    network_self_link: pulumi.Output[str]
    subnet_self_link: pulumi.Output[str]
    private_services_connection_id: pulumi.Output[str]
    ingress_address_name: Optional[pulumi.Output[str]]
    ingress_ip: Optional[pulumi.Output[str]]
    internal_addresses: dict[str, pulumi.Output[str]]
    """Reserved internal addresses by role: consumers take these, so they wait for the reservation."""
    proxy_only_subnet: Optional[gcp.compute.Subnetwork]
    """Where the region's Envoy-based load balancers (the serving Gateway's) take their proxies' addresses."""
    gateway_address_name: Optional[pulumi.Output[str]]
    gateway_address: Optional[pulumi.Output[str]]
    private_services_connection: gcp.servicenetworking.Connection
    """Cloud SQL private IP needs this peering to exist first."""

    def __init__(self, name: str, args: NetworkArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:network:Network", name, None, opts)
        child = child_options(self, opts)

        network = gcp.compute.Network(
            f"{name}-vpc",
            project=args.project,
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            opts=child,
        )
        subnet = gcp.compute.Subnetwork(
            f"{name}-subnet",
            project=args.project,
            region=args.region,
            network=network.id,
            ip_cidr_range=args.subnet_cidr,
            private_ip_google_access=True,
            secondary_ip_ranges=[
                gcp.compute.SubnetworkSecondaryIpRangeArgs(range_name=range_name, ip_cidr_range=cidr)
                for range_name, cidr in sorted(args.secondary_ranges.items())
            ],
            log_config=gcp.compute.SubnetworkLogConfigArgs(
                aggregation_interval="INTERVAL_10_MIN", flow_sampling=0.5, metadata="INCLUDE_ALL_METADATA",
            ),
            opts=child,
        )
        self._nat(name, args, network, child)
        connection = self._private_services(name, args, network, child)
        self._addresses(name, args, subnet, child)
        self._gateway_network(name, args, network, subnet, child)
        self.network_id = network.id
        self.network_self_link = network.self_link
        self.subnet_self_link = subnet.self_link
        self.private_services_connection_id = connection.id
        self.private_services_connection = connection
        self.register_outputs({
            "network_id": self.network_id,
            "network_self_link": self.network_self_link,
            "subnet_self_link": self.subnet_self_link,
            "private_services_connection_id": self.private_services_connection_id,
            "ingress_address_name": self.ingress_address_name,
            "ingress_ip": self.ingress_ip,
            "internal_addresses": self.internal_addresses,
            "gateway_address": self.gateway_address,
        })

    def _nat(self, name: str, args: NetworkArgs, network: gcp.compute.Network, child: pulumi.ResourceOptions) -> None:
        """Nodes have no public IP: Cloud NAT is their way out."""
        router = gcp.compute.Router(
            f"{name}-router", project=args.project, region=args.region, network=network.id, opts=child,
        )
        gcp.compute.RouterNat(
            f"{name}-nat",
            project=args.project,
            region=args.region,
            router=router.name,
            nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
            log_config=gcp.compute.RouterNatLogConfigArgs(enable=True, filter="ERRORS_ONLY"),
            opts=child,
        )

    def _private_services(self, name: str, args: NetworkArgs, network: gcp.compute.Network,
                          child: pulumi.ResourceOptions) -> gcp.servicenetworking.Connection:
        """The range peered to Google's service producer network, where Cloud SQL takes its private IP."""
        psa_address, _, psa_prefix = args.private_services_cidr.partition("/")
        reserved = gcp.compute.GlobalAddress(
            f"{name}-psa-range",
            project=args.project,
            network=network.id,
            purpose="VPC_PEERING",
            address_type="INTERNAL",
            address=psa_address,
            prefix_length=int(psa_prefix),
            labels=args.labels,
            opts=child,
        )
        return gcp.servicenetworking.Connection(
            f"{name}-psa-connection",
            network=network.id,
            service="servicenetworking.googleapis.com",
            reserved_peering_ranges=[reserved.name],
            # Deleting the connection fails while Cloud SQL's producer network lingers after the instance
            # is gone; REMOVE_PEERING then removes the peering, which ABANDON leaves to block the VPC's
            # deletion (pulumi-gcp 10.x `servicenetworking.Connection.deletion_policy` docstring;
            # GoogleCloudPlatform/magic-modules#18476).
            deletion_policy="REMOVE_PEERING",
            opts=child,
        )

    def _addresses(self, name: str, args: NetworkArgs, subnet: gcp.compute.Subnetwork,
                   child: pulumi.ResourceOptions) -> None:
        """Internal addresses for load balancers and, with an Ingress, its global address."""
        self.internal_addresses = {
            role: gcp.compute.Address(
                f"{name}-{role}-ilb-ip",
                project=args.project, region=args.region, subnetwork=subnet.id, address_type="INTERNAL",
                address=address, labels=args.labels, opts=child,
            ).address
            for role, address in args.internal_ips
        }
        self.ingress_address_name = None
        self.ingress_ip = None
        if args.global_ingress_address:
            ingress_address = gcp.compute.GlobalAddress(
                f"{name}-ingress-ip", project=args.project, address_type="EXTERNAL", ip_version="IPV4",
                labels=args.labels, opts=child,
            )
            self.ingress_address_name = ingress_address.name
            self.ingress_ip = ingress_address.address

    def _gateway_network(self, name: str, args: NetworkArgs, network: gcp.compute.Network,
                         subnet: gcp.compute.Subnetwork, child: pulumi.ResourceOptions) -> None:
        """The proxy-only subnet of a regional internal Application Load Balancer and the address it listens
        on (https://cloud.google.com/load-balancing/docs/proxy-only-subnets): one ACTIVE proxy-only subnet per
        region and VPC. GCP refuses to delete it while a load balancer uses it: the Gateway depends on it, so
        a destroy removes the Gateway (and GKE its load balancer) first."""
        self.proxy_only_subnet = None
        self.gateway_address_name = None
        self.gateway_address = None
        if args.proxy_only_cidr is None:
            return
        self.proxy_only_subnet = gcp.compute.Subnetwork(
            f"{name}-proxy-only", project=args.project, region=args.region, network=network.id,
            ip_cidr_range=args.proxy_only_cidr, purpose="REGIONAL_MANAGED_PROXY", role="ACTIVE", opts=child)
        # GCP picks a free address of the node subnet; the Gateway names it (NamedAddress), so callers keep it
        # across Gateway replacements.
        address = gcp.compute.Address(
            f"{name}-serving-gateway-ip", project=args.project, region=args.region, subnetwork=subnet.id,
            address_type="INTERNAL", labels=args.labels, opts=child)
        self.gateway_address_name = address.name
        self.gateway_address = address.address

