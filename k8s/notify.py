"""Notifications of registry events: the receiver of MLflow's webhooks and the Job that declares the webhook.

The receiver (`python -m mlflow_notify serve`, in the serving image) answers only the tracking pods
(NetworkPolicy) and believes only deliveries signed with the webhook secret; each event becomes a log line
that the notifications alert policy (infra/monitoring.py) sends to the stack's channels. The register Job
creates or updates the webhook as the admin on every change of its URL, its image or the webhook secret's
current version (a version added by hand or by a rotation: the next `up` rolls the receiver and registers the
secret again), so it is declared, not made by hand. Neither needs a GCP role: the receiver only reads its secret and writes to stdout.

With `monitoring.notify.chat` the receiver also relays alerts to chat (infra/chat.py): it may pull the alerts'
subscription and read the URL's secret, nothing else. It reads the URL through Secret Manager's API rather than
a mounted file: the secret has no version until someone runs `make chat-webhook`, and a mount of it would keep
the pod, and the registry webhooks, from starting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from infra.chat import SUBSCRIBER
from infra.naming import child_options, job_wait, k8s_labels
from infra.secrets import ADMIN_PASSWORD, WEBHOOK_SECRET, SecretRef, grant_readers
from k8s.pods import container_security_context, drain_on_stop, http_probe, resources, tmp_mount, tmp_volume
from k8s.secret_files import file_env, principal, secret_files, secrets_mount, secrets_volume, with_file_env
from k8s.tracking import TrackingEndpoint
from k8s.workload import (
    WorkloadNames, cluster_ip_service_spec, deployment_spec, in_cluster_url, ingress_policy_spec, run_once_job_spec,
    tcp_ports, workload_pod,
)

COMPONENT = "notify"
SERVICE_NAME = "mlflow-notify"
REGISTER_KSA = "mlflow-notify-register"
PORT = 8080
MODULE = "mlflow_notify"  # in the serving image
WEBHOOK_PATH = "/webhook"  # mlflow_notify.__main__.WEBHOOK_PATH
RECEIVER_ENV = {"MLFLOW_NOTIFY_SECRET": WEBHOOK_SECRET}
REGISTER_ENV = {"MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD, "MLFLOW_NOTIFY_SECRET": WEBHOOK_SECRET}
DEADLINE_SECONDS = 300
URL_ENV = "MLFLOW_NOTIFY_WEBHOOK_URL"
# mlflow_notify.chat's environment: the subscription it pulls, the secret version holding the chat URL.
SUBSCRIPTION_ENV = "MLFLOW_NOTIFY_SUBSCRIPTION"
CHAT_SECRET_ENV = "MLFLOW_NOTIFY_CHAT_URL_VERSION"
# Out of the Service before SIGTERM (MLflow retries a refused delivery); the grace period outlasts the drain.
DRAIN_SECONDS = 5
GRACE_SECONDS = 15


def webhook_url(namespace: str) -> str:
    return in_cluster_url(SERVICE_NAME, namespace, PORT) + WEBHOOK_PATH


@dataclass(frozen=True)
class ChatRelay:
    subscription: pulumi.Input[str]
    """projects/P/subscriptions/S of the alerts' `pubsub` channel."""
    url_secret: SecretRef
    """The secret holding the chat webhook's URL."""


def chat_env(subscription: Any, url_version: Any) -> list[dict]:
    """What the relay reads (mlflow_notify.chat): names of Google resources, never the URL itself."""
    return [{"name": SUBSCRIPTION_ENV, "value": subscription}, {"name": CHAT_SECRET_ENV, "value": url_version}]


def receiver_container(image: Any, chat: Optional[ChatRelay] = None) -> dict:
    command, args = with_file_env(["python"], ["-m", MODULE, "serve", "--port", str(PORT)], RECEIVER_ENV)
    return {
        "name": "receiver", "image": image, "command": command, "args": args,
        "env": file_env(RECEIVER_ENV) + (chat_env(chat.subscription, chat.url_secret.version_name) if chat else []),
        "ports": [{"name": "http", "containerPort": PORT}],
        "startupProbe": http_probe("/live", "http", period=2, failures=30),
        "readinessProbe": http_probe("/live", "http", period=10),
        "livenessProbe": http_probe("/live", "http", period=20),
        "lifecycle": drain_on_stop(DRAIN_SECONDS),
        "resources": resources("50m", "128Mi"),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount(), secrets_mount()],
    }


def register_container(*, image: Any, tracking_url: Any, admin_username: str, url: Any) -> dict:
    # The URL in env, expanded into the args by the kubelet: a Service URL in env is what `make local` maps.
    command, args = with_file_env(["python"], ["-m", MODULE, "register", "--url", f"$({URL_ENV})"], REGISTER_ENV)
    return {
        "name": "register-webhook", "image": image, "command": command, "args": args,
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": tracking_url},
                {"name": "MLFLOW_TRACKING_USERNAME", "value": admin_username}, {"name": URL_ENV, "value": url},
                *file_env(REGISTER_ENV)],
        "resources": resources("100m", "256Mi"),
        "securityContext": container_security_context(),
        "volumeMounts": [tmp_mount(), secrets_mount()],
    }


# On the receiver's pods: a new version of the webhook secret rolls them (they read it at start).
SECRET_VERSION_ANNOTATION = "mlflow.org/webhook-secret-version"


def register_job_name(url: str, image_version: str, secret_version: str) -> str:
    digest = hashlib.sha256(f"{url}|{image_version}|{secret_version}".encode()).hexdigest()[:10]
    return f"mlflow-notify-register-{digest}"


def current_version(ref: SecretRef, opts: pulumi.InvokeOutputOptions) -> pulumi.Output[str]:
    """The number of the secret's newest version (its metadata only: the value is not fetched)."""
    parts = pulumi.Output.from_input(ref.secret_id).apply(lambda secret_id: secret_id.split("/"))
    return gcp.secretmanager.get_secret_version_output(
        project=parts[1], secret=parts[3], fetch_secret_data=False, opts=opts).version


@dataclass(frozen=True)
class NotificationsArgs:
    provider: k8s.Provider
    """Provider of the platform cluster (the receiver sits beside tracking, which delivers the webhooks)."""
    tracking: TrackingEndpoint
    image: pulumi.Input[str]
    """The serving image (it holds mlflow_notify)."""
    image_version: str
    """Content hash of the image sources: a new image registers the webhook again."""
    webhook_secret: SecretRef
    project_number: pulumi.Input[str]
    workload_pool: pulumi.Input[str]
    chat: Optional[ChatRelay] = None
    """With `monitoring.notify.chat`: the receiver relays the alerts' subscription to the chat webhook."""


class Notifications(pulumi.ComponentResource):
    """The webhook receiver (Deployment, Service, NetworkPolicy) and the Job that registers the webhook."""

    def __init__(self, name: str, args: NotificationsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:notify:Notifications", name, None, opts)
        tracking = args.tracking
        names = WorkloadNames(name, COMPONENT, SERVICE_NAME)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider)
        gcp_opts = child_options(self, opts)
        ksa = k8s.core.v1.ServiceAccount(
            f"{name}-ksa", metadata=names.metadata(tracking.namespace), automount_service_account_token=False,
            opts=k8s_opts)
        reader = principal(args.project_number, args.workload_pool, tracking.namespace, ksa.metadata["name"])
        provider_class, grants = secret_files(
            f"{name}-receiver", (args.webhook_secret,), SERVICE_NAME, tracking.namespace, names.labels, k8s_opts,
            readers=(reader,), gcp_opts=gcp_opts)
        if args.chat is not None:
            grants += self._chat_grants(name, args.chat, reader, gcp_opts)
        secret_version = current_version(args.webhook_secret, pulumi.InvokeOutputOptions(
            parent=self, depends_on=[*(gcp_opts.depends_on or []), args.webhook_secret.first_version]))
        pod = workload_pod(service_account=ksa.metadata["name"], grace_seconds=GRACE_SECONDS,
                           containers=[receiver_container(args.image, args.chat)],
                           volumes=[tmp_volume("16Mi"), secrets_volume(provider_class)])
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=names.metadata(tracking.namespace), spec=deployment_spec(names, pod, {SECRET_VERSION_ANNOTATION: secret_version}, 1),
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=grants)))
        service = k8s.core.v1.Service(
            f"{name}-service", metadata=names.metadata(tracking.namespace),
            spec=cluster_ip_service_spec(names.selector, PORT), opts=k8s_opts)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-policy", metadata=names.metadata(tracking.namespace),
            spec=ingress_policy_spec(names.selector, [{"from": [{"podSelector": {"matchLabels": tracking.selector}}],
                                                       "ports": tcp_ports(PORT)}]),
            opts=k8s_opts)
        url = tracking.namespace.apply(webhook_url)
        self._register(name, args, url, secret_version, [deployment, service], k8s_opts, gcp_opts)
        self.register_outputs({})

    @staticmethod
    def _chat_grants(name: str, chat: ChatRelay, reader: pulumi.Input[str],
                     gcp_opts: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        """Pull (and acknowledge) the alerts' subscription, read the URL's secret: each on that resource only."""
        return [gcp.pubsub.SubscriptionIAMMember(f"{name}-chat-subscriber", subscription=chat.subscription,
                                                 role=SUBSCRIBER, member=reader, opts=gcp_opts),
                *grant_readers(f"{name}-chat-secrets", (chat.url_secret,), (reader,), gcp_opts)]

    @staticmethod
    def _register(name: str, args: NotificationsArgs, url: pulumi.Output[str], secret_version: pulumi.Output[str],
                  after: list,
                  k8s_opts: pulumi.ResourceOptions, gcp_opts: pulumi.ResourceOptions) -> None:
        tracking = args.tracking
        labels = k8s_labels(name, "notify-register")
        ksa = k8s.core.v1.ServiceAccount(
            f"{name}-register-ksa", metadata={"name": REGISTER_KSA, "namespace": tracking.namespace, "labels": labels},
            automount_service_account_token=False, opts=k8s_opts)
        provider_class, grants = secret_files(
            f"{name}-register", (tracking.admin_password, args.webhook_secret), REGISTER_KSA, tracking.namespace,
            labels, k8s_opts,
            readers=(principal(args.project_number, args.workload_pool, tracking.namespace, ksa.metadata["name"]),),
            gcp_opts=gcp_opts)
        spec = run_once_job_spec(
            labels, DEADLINE_SECONDS, ksa.metadata["name"],
            containers=[register_container(image=args.image, tracking_url=tracking.in_cluster_url,
                                           admin_username=tracking.admin_username, url=url)],
            volumes=[tmp_volume("64Mi"), secrets_volume(provider_class)], backoff_limit=6)
        k8s.batch.v1.Job(
            f"{name}-register",
            metadata={"name": pulumi.Output.all(url, secret_version).apply(
                lambda values: register_job_name(values[0], args.image_version, values[1])),
                      "namespace": tracking.namespace, "labels": labels},
            spec=spec,
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(
                depends_on=[tracking.ready, *after, *grants], delete_before_replace=True,
                custom_timeouts=job_wait(DEADLINE_SECONDS))))
