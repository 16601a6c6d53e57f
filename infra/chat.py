"""The chat channel (`monitoring.notify.chat`): alerts reach a chat webhook whose URL only Secret Manager and
the relaying pod know.

Cloud Monitoring's own `webhook_*` channels keep their URL in a plain label (only tokens and passwords may be
sensitive labels), so the URL would sit in state and plans. Instead every alert policy also notifies a
`pubsub` channel; the notification receiver (mlflow_notify) pulls its subscription and posts each incident to
the URL it reads from the secret `chat-webhook-url`, which the program declares without a version
(`make chat-webhook` adds one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time

from infra.naming import child_options, gcp_name
from infra.secrets import SecretRef, regional_secret, version_name

CHAT_WEBHOOK_URL = "chat-webhook-url"
PUBLISHER = "roles/pubsub.publisher"
SUBSCRIBER = "roles/pubsub.subscriber"
# Unacknowledged incidents wait this long for a URL or a chat service that answers (Pub/Sub allows 10 min
# to 31 days; a week outlasts any chat outage someone would not notice).
RETENTION = "604800s"
# One pull's messages (up to 10) are posted one by one, each post timing out at 10 s (mlflow_notify.chat) and
# acknowledged with the batch: a shorter deadline would have Pub/Sub deliver them again meanwhile (duplicates).
ACK_DEADLINE_SECONDS = 180
# Google creates the Monitoring agent with the project's first `pubsub` channel; IAM may not know the new
# account for a while and refuses a grant naming it.
AGENT_PROPAGATION = "60s"


def monitoring_agent(project_number: str) -> str:
    """Cloud Monitoring's notification service agent, which publishes to `pubsub` channels' topics. Google
    creates it with the project's first `pubsub` channel, so the grant waits for the channel."""
    return f"serviceAccount:service-{project_number}@gcp-sa-monitoring-notification.iam.gserviceaccount.com"


def topic_path(project: str, topic: gcp.pubsub.Topic) -> pulumi.Output[str]:
    """projects/P/topics/T: the form a `pubsub` channel's `topic` label takes."""
    return pulumi.Output.concat("projects/", project, "/topics/", topic.name)


@dataclass(frozen=True)
class ChatChannelArgs:
    project: str
    """GCP project."""
    location: str
    """Region of the URL's secret (the platform's)."""
    prefix: str
    """Name prefix of the stack: topic, subscription and secret ids."""
    environment: str
    """dev or prod: in the channel's name."""
    labels: dict[str, str]
    """Labels of the topic, subscription, secret and channel."""
    project_number: pulumi.Input[str]
    """For the Monitoring service agent's address."""
    protect: bool = True
    """Pulumi refuses to delete the secret, which holds the URL a person added (prod: the policy pack's rule
    on stateful resources)."""


class ChatChannel(pulumi.ComponentResource):
    """Topic, `pubsub` notification channel, pull subscription and the URL's secret (no version)."""

    channel_id: pulumi.Output[str]
    subscription: pulumi.Output[str]
    """projects/P/subscriptions/S: what the receiver pulls."""
    url_secret: SecretRef
    """The URL's secret: the receiver is granted access to it; `make chat-webhook` adds its versions."""

    def __init__(self, name: str, args: ChatChannelArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:chat:ChatChannel", name, None, opts)
        child = child_options(self, opts)
        secret = regional_secret(f"{name}-url", args.project, args.location, args.prefix, CHAT_WEBHOOK_URL,
                                 args.labels, child_options(self, opts, protect=args.protect))
        topic = gcp.pubsub.Topic(f"{name}-topic", project=args.project, name=gcp_name(args.prefix, "alerts"),
                                 labels=args.labels, opts=child)
        channel = gcp.monitoring.NotificationChannel(
            f"{name}-channel", project=args.project, type="pubsub",
            display_name=f"MLflow {args.environment}: chat (Pub/Sub)", labels={"topic": topic_path(args.project, topic)},
            user_labels=args.labels, opts=child)
        # Triggered by the channel's id only: the wait runs when the channel is created, not on every `up`.
        agent_known = pulumiverse_time.Sleep(f"{name}-agent-visible", create_duration=AGENT_PROPAGATION,
                                             triggers={"channel": channel.id}, opts=child)
        gcp.pubsub.TopicIAMMember(
            f"{name}-publisher", project=args.project, topic=topic.name, role=PUBLISHER,
            member=pulumi.Output.from_input(args.project_number).apply(monitoring_agent),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[agent_known])))
        subscription = gcp.pubsub.Subscription(
            f"{name}-subscription", project=args.project, name=gcp_name(args.prefix, "alerts-chat"),
            topic=topic.id, ack_deadline_seconds=ACK_DEADLINE_SECONDS, message_retention_duration=RETENTION,
            # "" never expires: the default deletes a subscription after 31 days without a pull.
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=""),
            labels=args.labels, opts=child)
        self.channel_id = channel.id
        self.subscription = subscription.id
        self.url_secret = SecretRef(name=CHAT_WEBHOOK_URL, secret_id=secret.id,
                                    version_name=version_name(args.project, secret))
        self.register_outputs({"channel_id": self.channel_id, "subscription": self.subscription,
                               "url_secret": secret.id})
