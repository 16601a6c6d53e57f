"""The chat channel as the stacks declare it (infra/chat.py, k8s/notify.py): prod relays every alert to chat
through Pub/Sub; the URL's secret has no value in the program; each identity may do one thing on one resource."""

from __future__ import annotations

import sys

import pytest

from infra.apis import PUBSUB_API
from infra.chat import PUBLISHER, SUBSCRIBER, monitoring_agent
from infra.secrets import ACCESSOR
from k8s import notify
from tools.offline.mocks import OFFLINE_PROJECT_NUMBER

sys.path.insert(0, "mlflow_image")
import mlflow_notify.__main__ as receiver  # noqa: E402

pytestmark = pytest.mark.unit
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
CHAT_TYPES = ("gcp:pubsub/topic:Topic", "gcp:pubsub/subscription:Subscription",
              "gcp:pubsub/topicIAMMember:TopicIAMMember", "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember")


def test_every_alert_policy_notifies_the_pubsub_channel_of_the_stacks_own_topic(stack_runs):
    run = stack_runs["prod"]
    channel = run.named("mlflow-chat-channel")
    assert channel.inputs["type"] == "pubsub"
    assert channel.inputs["labels"] == {"topic": "projects/my-mlflow-prod/topics/mlflow-alerts"}
    assert any(dep.endswith("mlflow-chat-topic") for dep in channel.dependencies)
    policies = run.of_type(POLICY)
    assert len(policies) == 6
    assert all("mlflow-chat-channel-id" in p.inputs["notificationChannels"] for p in policies)


def test_the_urls_secret_is_declared_protected_and_without_a_value(stack_runs):
    run = stack_runs["prod"]
    secret = run.named("mlflow-chat-url")
    assert secret.inputs["secretId"] == "mlflow-chat-webhook-url" and secret.protect
    versions = run.of_type("gcp:secretmanager/secretVersion:SecretVersion")
    assert not any("chat" in version.name for version in versions)
    # what `make chat-webhook` adds a version to; dev, without chat, offers none
    assert run.outputs["chat_webhook_secret"] == "projects/my-mlflow-prod/secrets/mlflow-chat-webhook-url"
    assert "chat_webhook_secret" not in stack_runs["dev"].outputs


def test_monitoring_publishes_and_the_receiver_pulls_and_reads_the_url_nothing_more(stack_runs):
    run = stack_runs["prod"]
    publisher = run.named("mlflow-chat-publisher")
    assert publisher.inputs["role"] == PUBLISHER and publisher.inputs["topic"] == "mlflow-alerts"
    assert publisher.inputs["member"] == monitoring_agent(OFFLINE_PROJECT_NUMBER)
    # Google creates the service agent with the project's first pubsub channel, and IAM learns of it later:
    # the grant waits for a pause that starts when the channel exists
    assert any(dep.endswith("mlflow-chat-agent-visible") for dep in publisher.dependencies)
    pause = run.named("mlflow-chat-agent-visible")
    assert pause.inputs["createDuration"] == "60s" and pause.inputs["triggers"] == {"channel": "mlflow-chat-channel-id"}
    assert any(dep.endswith("mlflow-chat-channel") for dep in pause.dependencies)
    subscriber = run.named("mlflow-notify-chat-subscriber")
    assert subscriber.inputs["role"] == SUBSCRIBER
    assert subscriber.inputs["subscription"] == "mlflow-chat-subscription-id"
    reader = run.named("mlflow-notify-chat-secrets-chat-webhook-url-0")
    assert reader.inputs["role"] == ACCESSOR
    assert reader.inputs["secretId"] == "projects/my-mlflow-prod/secrets/mlflow-chat-webhook-url"
    assert subscriber.inputs["member"] == reader.inputs["member"] and reader.inputs["member"].endswith(
        "/ns/mlflow/sa/mlflow-notify")
    subscription = run.named("mlflow-chat-subscription")
    assert subscription.inputs["expirationPolicy"] == {"ttl": ""}
    assert "pushConfig" not in subscription.inputs  # pulled: the receiver needs no public endpoint


def test_the_receiver_is_told_where_to_pull_and_which_secret_to_read_and_waits_for_its_grants(stack_runs):
    run = stack_runs["prod"]
    deployment = run.named("mlflow-notify-deployment")
    env = {e["name"]: e.get("value") for e in deployment.inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[notify.SUBSCRIPTION_ENV] == "mlflow-chat-subscription-id"
    assert env[notify.CHAT_SECRET_ENV] == "projects/my-mlflow-prod/secrets/mlflow-chat-webhook-url/versions/latest"
    assert {dep.rsplit("::", 1)[-1] for dep in deployment.dependencies} >= {
        "mlflow-notify-chat-subscriber", "mlflow-notify-chat-secrets-chat-webhook-url-0"}


def test_the_manifest_and_the_receiver_name_the_same_variables():
    assert (notify.SUBSCRIPTION_ENV, notify.CHAT_SECRET_ENV) == (receiver.SUBSCRIPTION_ENV, receiver.CHAT_SECRET_ENV)


def test_the_relay_starts_only_when_the_manifest_names_both(monkeypatch):
    assert receiver.start_chat_relay({notify.SUBSCRIPTION_ENV: "projects/p/subscriptions/s"}) is None
    assert receiver.start_chat_relay({}) is None
    started = []
    monkeypatch.setattr("mlflow_drift.sources.authorized_session", lambda: "google-session")
    monkeypatch.setattr(receiver.ChatRelay, "run", lambda relay, sleep: started.append(relay))
    thread = receiver.start_chat_relay({notify.SUBSCRIPTION_ENV: "projects/p/subscriptions/s",
                                        notify.CHAT_SECRET_ENV: "projects/p/secrets/u/versions/latest"})
    thread.join(5)
    [relay] = started
    assert (relay.subscription, relay.url_secret, relay.google) == (
        "projects/p/subscriptions/s", "projects/p/secrets/u/versions/latest", "google-session")
    assert thread.daemon  # the relay never keeps a stopping receiver alive


def test_pubsub_is_enabled_and_used_only_where_chat_is_on(stack_runs):
    prod, dev = stack_runs["prod"], stack_runs["dev"]
    services = lambda run: {s.inputs["service"] for s in run.of_type("gcp:projects/service:Service")}  # noqa: E731
    assert PUBSUB_API in services(prod) and PUBSUB_API not in services(dev)
    assert all(not dev.of_type(kind) for kind in CHAT_TYPES)
    env = dev.named("mlflow-notify-deployment").inputs["spec"]["template"]["spec"]["containers"][0]["env"]
    assert notify.SUBSCRIPTION_ENV not in {e["name"] for e in env}


def test_without_google_credentials_the_relay_waits_and_logs_instead_of_failing(monkeypatch, capsys):
    """As on `make local`: the receiver (and the registry webhooks) must keep running."""
    attempts, relays = [], []

    def no_credentials():
        attempts.append(1)
        if len(attempts) < 3:
            raise OSError("no default credentials")
        return "google-session"

    monkeypatch.setattr("mlflow_drift.sources.authorized_session", no_credentials)
    monkeypatch.setattr(receiver.ChatRelay, "run", lambda relay, sleep: relays.append(relay))
    pauses = []
    receiver.relay_forever("projects/p/subscriptions/s", "projects/p/secrets/u/versions/latest", pauses.append)
    assert len(attempts) == 3 and len(pauses) == 2 and [r.google for r in relays] == ["google-session"]
    assert capsys.readouterr().out.count("no Google credentials") == 2
