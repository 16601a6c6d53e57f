"""What sits in front of the tracking Ingress: TLS policy, Cloud Armor rate limiting, IAP access."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from infra.naming import child_options
from infra.settings import EdgeSettings

DEFAULT_RULE_PRIORITY = 2147483647
IAP_ACCESSOR_ROLE = "roles/iap.httpsResourceAccessor"


@dataclass(frozen=True)
class EdgePolicyArgs:
    project: str
    """GCP project."""
    labels: dict[str, str]
    """Policy labels."""
    settings: EdgeSettings
    """Cloud Armor's rate limit and who may pass IAP, each when switched on."""
    project_number: Optional[pulumi.Input[str]] = None
    """Number of the project: IAP's settings resource is named by it."""

    @property
    def requests_per_minute(self) -> Optional[int]:
        """Cloud Armor: requests one client IP may make per minute before it gets 429; None: no policy."""
        return self.settings.armor_requests_per_minute if self.settings.cloud_armor else None

    @property
    def iap_members(self) -> tuple[str, ...]:
        """Members granted passage through Identity-Aware Proxy (user:, group:, serviceAccount:, domain:)."""
        return self.settings.iap_members if self.settings.iap else ()

    @property
    def iap_programmatic_client(self) -> Optional[str]:
        """OAuth client id whose ID tokens IAP accepts from programs: IAP's Google-managed client serves
        browsers only."""
        return self.settings.iap_oauth_client_id if self.settings.iap else None

    def __post_init__(self) -> None:
        if self.iap_programmatic_client and self.project_number is None:
            raise ValueError("EdgePolicyArgs.iap_programmatic_client needs project_number (IAP names its settings by it)")


class EdgePolicy(pulumi.ComponentResource):
    """The Ingress's SSL policy (TLS 1.2 at least), an optional Cloud Armor policy for the tracking
    backend, and who may pass IAP."""

    ssl_policy_name: pulumi.Output[str]
    security_policy_name: Optional[pulumi.Output[str]]

    def __init__(self, name: str, args: EdgePolicyArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:edge:EdgePolicy", name, None, opts)
        child = child_options(self, opts)
        # GCLB's default SSL policy still accepts TLS 1.0 and 1.1.
        ssl_policy = gcp.compute.SSLPolicy(
            f"{name}-tls", project=args.project, min_tls_version="TLS_1_2", profile="MODERN",
            description="MLflow Ingress: TLS 1.2 or newer", opts=child)
        self.ssl_policy_name = ssl_policy.name
        self.security_policy_name = (self._rate_limit(name, args, child)
                                     if args.requests_per_minute is not None else None)
        for member in args.iap_members:
            # Project level: the backend service IAP protects is created by GKE's Ingress
            # controller, under a name Pulumi does not know. Named by member, so editing the list
            # never recreates (and briefly revokes) another member's grant.
            gcp.iap.WebIamMember(f"{name}-iap-{hashlib.sha256(member.encode()).hexdigest()[:8]}",
                                 project=args.project, role=IAP_ACCESSOR_ROLE, member=member, opts=child)
        if args.iap_programmatic_client:
            # Project level, like the grants above: the backend service's name is the Ingress controller's.
            # https://cloud.google.com/iap/docs/custom-oauth-configuration (programmatic_clients)
            # By number: a name with the project id is stored by number, and every `up` would replace it.
            gcp.iap.Settings(f"{name}-iap-settings", name=pulumi.Output.concat("projects/", args.project_number, "/iap_web"),
                             access_settings=gcp.iap.SettingsAccessSettingsArgs(
                                 oauth_settings=gcp.iap.SettingsAccessSettingsOauthSettingsArgs(
                                     programmatic_clients=[args.iap_programmatic_client])),
                             opts=child)
        self.register_outputs({"ssl_policy_name": self.ssl_policy_name,
                               "security_policy_name": self.security_policy_name})

    @staticmethod
    def _rate_limit(name: str, args: EdgePolicyArgs, child: pulumi.ResourceOptions) -> pulumi.Output[str]:
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
            opts=child,
        )
        return policy.name
