"""Cloud Armor in front of the tracking Ingress: per-client rate limiting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from infra.naming import child_options

DEFAULT_RULE_PRIORITY = 2147483647


@dataclass(frozen=True)
class EdgePolicyArgs:
    project: str
    """GCP project."""
    requests_per_minute: int
    """Requests one client IP may make per minute before it gets 429."""
    labels: dict[str, str]
    """Policy labels."""

    def __post_init__(self) -> None:
        if not 10 <= self.requests_per_minute <= 100_000:
            raise ValueError(f"EdgePolicyArgs.requests_per_minute={self.requests_per_minute}: allowed 10-100000")


class EdgePolicy(pulumi.ComponentResource):
    """A Cloud Armor policy the Ingress's BackendConfig attaches to the tracking backend."""

    policy_name: pulumi.Output[str]

    def __init__(self, name: str, args: EdgePolicyArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:edge:EdgePolicy", name, None, opts)
        every_ip = gcp.compute.SecurityPolicyRuleMatchArgs(
            versioned_expr="SRC_IPS_V1", config=gcp.compute.SecurityPolicyRuleMatchConfigArgs(src_ip_ranges=["*"]))
        policy = gcp.compute.SecurityPolicy(
            f"{name}-policy",
            project=args.project,
            description="Per-client rate limit in front of the MLflow tracking server",
            type="CLOUD_ARMOR",
            labels=args.labels,
            rules=[
                gcp.compute.SecurityPolicyRuleArgs(
                    priority=1000,
                    action="throttle",
                    description="Each client IP: at most N requests a minute, then 429",
                    match=every_ip,
                    rate_limit_options=gcp.compute.SecurityPolicyRuleRateLimitOptionsArgs(
                        conform_action="allow",
                        exceed_action="deny(429)",
                        enforce_on_key="IP",
                        rate_limit_threshold=gcp.compute.SecurityPolicyRuleRateLimitOptionsRateLimitThresholdArgs(
                            count=args.requests_per_minute, interval_sec=60),
                    ),
                ),
                gcp.compute.SecurityPolicyRuleArgs(
                    priority=DEFAULT_RULE_PRIORITY, action="allow", description="default", match=every_ip),
            ],
            opts=child_options(self, opts),
        )
        self.policy_name = policy.name
        self.register_outputs({"policy_name": self.policy_name})
