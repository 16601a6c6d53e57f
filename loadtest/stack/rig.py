"""The load test's resources beside a running platform, all of them its own: `pulumi destroy` of this
stack removes them and touches nothing of the platform's (its IAM grants are members, never policies).

- a node pool on the platform's serving cluster, tainted, in one zone, scaled from 0;
- the namespace `mlflow-loadtest` (restricted pods, default-deny ingress) and the Locust run templates;
- the Locust image, built from loadtest/ and pushed to the platform's Artifact Registry repository;
- the load test's own MLflow user: its password in its own Secret Manager secret, made by a one-shot Job
  whose identity alone may read the platform's admin password; the Locust pods read only their own;
- a NetworkPolicy in tracking's namespace admitting this namespace (policies add up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.cloud_rules import default_boot_disk_type
from infra.cluster import node_config
from infra.identity import WorkloadIdentity, WorkloadIdentityArgs
from infra.images import pushed_image, registry_token
from infra.naming import cap_name, gcp_labels, job_wait, k8s_labels, k8s_selector
from infra.secrets import ADMIN_PASSWORD, LATEST, SecretRef
from k8s.namespace import restricted_namespace_metadata
from k8s.pods import default_deny_ingress, tmp_volume
from k8s.secret_files import principal, secret_files, secrets_mount, secrets_volume
from k8s.serving import SKIP_AWAIT_ANNOTATION
from k8s.tracking import COMPONENT as TRACKING_COMPONENT, TRACKING_PORT
from k8s.workload import run_once_job_spec, tcp_ports
from loadtest.commands import MASTER_PORT, load_env
from loadtest.stack.settings import LoadTestSettings
from loadtest.stack.templates import (
    CREDENTIALS_KSA, DEFAULT_SECONDS, DEFAULT_USERS, INSTANCE, NAMESPACE, PASSWORD_FILE, POOL_LABEL, POOL_TAINT,
    RESULTS_DIR, SERVICES, SETUP_DEADLINE_SECONDS, SETUP_KSA, job_spec, locust_container, master_args,
    master_ingress, master_name, pod_spec, setup_container, template_spec, tracking_credentials_env, worker_args,
    workers_name,
)

PROJECT_DIR = Path(__file__).resolve().parents[1]  # loadtest/: Pulumi.yaml, the Locust image's context
TRACKING_INSTANCE = "mlflow"  # program.py names the TrackingServer so: its pods' selector
PASSWORD_LENGTH = 32
# On the setup Job's pod template: a new password version changes the template, which Kubernetes keeps
# immutable, so Pulumi replaces the Job and the user is reset to the password Locust will read.
PASSWORD_VERSION_ANNOTATION = "mlflow.org/loadtest-password-version"


@dataclass(frozen=True)
class Platform:
    """What the load test takes from the platform stack's outputs."""

    project: pulumi.Output[str]
    region: pulumi.Output[str]
    zone: pulumi.Output[str]
    environment: pulumi.Output[str]
    project_number: pulumi.Output[str]
    cluster_name: pulumi.Output[str]
    """The serving cluster's, where the pool and the load test's namespace are."""
    platform_cluster_name: pulumi.Output[str]
    cluster_location: pulumi.Output[str]
    workload_pool: pulumi.Output[str]
    node_service_account: pulumi.Output[str]
    serving_kubeconfig: pulumi.Output[str]
    platform_kubeconfig: pulumi.Output[str]
    repository_url: pulumi.Output[str]
    serving_url: pulumi.Output[str]
    tracking_url: pulumi.Output[str]
    """Tracking as serving's pods reach it: its internal load balancer when serving has its own cluster."""
    tracking_namespace: pulumi.Output[str]
    admin_username: pulumi.Output[str]
    admin_password: SecretRef

    @classmethod
    def of(cls, stack: str) -> "Platform":
        ref = pulumi.StackReference(stack)
        out = ref.require_output
        admin_secret = out("app_secrets").apply(lambda ids: ids[ADMIN_PASSWORD])
        return cls(
            project=out("project"), region=out("region"), zone=out("zone"), environment=out("environment"),
            project_number=out("project_number"), cluster_name=out("serving_cluster_name"),
            platform_cluster_name=out("platform_cluster_name"),
            cluster_location=out("serving_cluster_location"), workload_pool=out("serving_workload_pool"),
            node_service_account=out("serving_node_service_account"),
            # Cluster credentials: secret in this stack's state whatever the platform's says.
            serving_kubeconfig=pulumi.Output.secret(out("serving_kubeconfig")),
            platform_kubeconfig=pulumi.Output.secret(out("platform_kubeconfig")),
            repository_url=out("repository_url"), serving_url=out("serving_url"),
            tracking_url=pulumi.Output.all(ref.get_output("tracking_internal_url"),
                                           out("tracking_in_cluster_url")).apply(lambda urls: urls[0] or urls[1]),
            tracking_namespace=out("tracking_deployment").apply(lambda ref_: ref_.partition("/")[0]),
            admin_username=out("tracking_admin_username"),
            admin_password=SecretRef(name=ADMIN_PASSWORD, secret_id=admin_secret,
                                     version_name=pulumi.Output.concat(admin_secret, f"/versions/{LATEST}")),
        )


class LoadTest(pulumi.ComponentResource):
    """Everything of the cluster load test; `namespace` and `kubeconfig` are what `make loadtest` reads."""

    namespace: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]

    def __init__(self, name: str, settings: LoadTestSettings, platform: Platform,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:loadtest:LoadTest", name, None, opts)
        self._name, self._settings, self._platform = name, settings, platform
        self._gcp = pulumi.ResourceOptions(parent=self)
        self._labels = k8s_labels(name, "loadtest")
        self._pool()
        # delete_unreachable: a destroy after the platform's (its clusters gone) drops these objects from the
        # state instead of failing on an API server that no longer exists.
        # Identified by the cluster's name, as the platform identifies its providers by the cluster: a new
        # kubeconfig of the same cluster (endpoint, CA rotation) does not replace what the provider created.
        provider = k8s.Provider(f"{name}-serving-k8s", kubeconfig=platform.serving_kubeconfig,
                                cluster_identifier=platform.cluster_name, enable_server_side_apply=True,
                                delete_unreachable=True, opts=pulumi.ResourceOptions(parent=self))
        self._k8s = pulumi.ResourceOptions(parent=self, provider=provider)
        namespace = k8s.core.v1.Namespace(f"{name}-ns", metadata=restricted_namespace_metadata(NAMESPACE, name),
                                          opts=self._k8s)
        self._ns = namespace.metadata["name"]
        k8s.networking.v1.NetworkPolicy(f"{name}-default-deny", **default_deny_ingress(self._ns, self._labels),
                                        opts=self._k8s)
        admitted = self._admission_to_tracking()
        self._image = pushed_image(
            f"{name}-image", context=".", target="locust", root=PROJECT_DIR,
            image=pulumi.Output.concat(platform.repository_url, "/mlflow-loadtest"),
            registry_host=platform.repository_url.apply(lambda url: url.split("/", 1)[0]), token=registry_token(),
            opts=self._gcp)
        password, version = self._user_secret()
        user = self._setup_job(password, version, admitted)
        for service in SERVICES:
            self._service_templates(service, password if service == "tracking" else None, user)
        self.namespace = self._ns
        self.kubeconfig = platform.serving_kubeconfig
        self.register_outputs({"namespace": self.namespace, "kubeconfig": self.kubeconfig})

    def _identity(self, role: str, ksa: str, readers_of: tuple[SecretRef, ...]) -> tuple[dict, list[pulumi.Resource]]:
        """A workload's GSA and KSA (Workload Identity), the only readers of `readers_of`: (its pod's
        secrets volume, the grants it must wait for)."""
        labels = k8s_labels(self._name, role)
        identity = WorkloadIdentity(f"{self._name}-{role}-identity", WorkloadIdentityArgs(
            project=self._platform.project,
            account_id=cap_name(f"loadtest-{role}-{pulumi.get_stack()}", 30),
            workload_pool=self._platform.workload_pool, namespace=self._ns, ksa_name=ksa,
            provider=self._k8s.provider, labels=labels), self._gcp)
        readers = (principal(self._platform.project_number, self._platform.workload_pool, self._ns, identity.ksa_name),
                   identity.gcp_service_account_email.apply(lambda email: f"serviceAccount:{email}"))
        provider_class, grants = secret_files(f"{self._name}-{role}", readers_of, ksa, self._ns, labels, self._k8s,
                                              readers=readers, gcp_opts=self._gcp)
        return secrets_volume(provider_class), [*identity.grants, *grants]

    def _pool(self) -> None:
        """Nothing waits for it: the setup Job runs on the cluster's own pool, the templates start nothing."""
        settings, platform = self._settings, self._platform
        gcp.container.NodePool(
            # Short: GKE allows pool names of 40 characters and Pulumi appends 8 to this one.
            f"{self._name}-pool",
            project=platform.project,
            location=platform.cluster_location,
            cluster=platform.cluster_name,
            # One zone: load generators need no zone redundancy, so a regional cluster's pool pays for one.
            node_locations=[platform.zone],
            # From 0: nodes exist only while a run's pods wait or run; the autoscaler removes an
            # idle node after about 10 minutes.
            autoscaling=gcp.container.NodePoolAutoscalingArgs(min_node_count=0, max_node_count=settings.max_nodes),
            management=gcp.container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            # The serving cluster's node account: it may pull from the platform's repository, and nothing else.
            node_config=node_config(settings.machine_type, settings.spot_nodes, settings.disk_size_gb,
                                    default_boot_disk_type(settings.machine_type), platform.node_service_account,
                                    platform.environment.apply(gcp_labels), pool_label=POOL_LABEL,
                                    taints=(POOL_TAINT,)),
            opts=self._gcp,
        )

    def _admission_to_tracking(self) -> k8s.networking.v1.NetworkPolicy:
        """Tracking's own policy admits its clients; this one adds the load test's namespace. On the platform
        cluster: where serving has a cluster of its own, tracking admits that cluster's pod range already and
        this namespace does not exist on the platform cluster, so the policy admits nobody there."""
        provider = k8s.Provider(f"{self._name}-platform-k8s", kubeconfig=self._platform.platform_kubeconfig,
                                cluster_identifier=self._platform.platform_cluster_name, enable_server_side_apply=True,
                                delete_unreachable=True, opts=pulumi.ResourceOptions(parent=self))
        selector = k8s_selector(TRACKING_INSTANCE, TRACKING_COMPONENT)
        return k8s.networking.v1.NetworkPolicy(
            f"{self._name}-to-tracking",
            metadata={"name": "mlflow-loadtest-to-tracking", "namespace": self._platform.tracking_namespace,
                      "labels": self._labels},
            spec={"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"], "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}}],
                "ports": tcp_ports(TRACKING_PORT)}]},
            opts=pulumi.ResourceOptions(parent=self, provider=provider))

    def _user_secret(self) -> tuple[SecretRef, gcp.secretmanager.SecretVersion]:
        """The load-test user's password: generated, kept in its own secret, in the platform's region."""
        platform = self._platform
        secret = gcp.secretmanager.Secret(
            f"{self._name}-password", project=platform.project,
            secret_id=cap_name(f"loadtest-password-{pulumi.get_stack()}", 255),
            replication=gcp.secretmanager.SecretReplicationArgs(
                user_managed=gcp.secretmanager.SecretReplicationUserManagedArgs(
                    replicas=[gcp.secretmanager.SecretReplicationUserManagedReplicaArgs(location=platform.region)])),
            labels=platform.environment.apply(lambda env: {**gcp_labels(env), "secret": PASSWORD_FILE}),
            opts=self._gcp)
        value = random.RandomPassword(f"{self._name}-password-value", length=PASSWORD_LENGTH, special=False,
                                      opts=self._gcp)
        version = gcp.secretmanager.SecretVersion(f"{self._name}-password-initial", secret=secret.id,
                                                  secret_data=value.result, opts=self._gcp)
        return SecretRef(name=PASSWORD_FILE, secret_id=secret.id,
                         version_name=pulumi.Output.concat("projects/", platform.project, "/secrets/", secret.secret_id,
                                                           f"/versions/{LATEST}")), version

    def _setup_job(self, password: SecretRef, version: gcp.secretmanager.SecretVersion,
                   admitted: pulumi.Resource) -> k8s.batch.v1.Job:
        """Creates (or resets) the load-test user as the tracking admin: its identity alone reads the admin's
        password, and only this Job runs as it. It runs after the password's version exists (its pod mounts
        `latest`), and again whenever that version is replaced."""
        volume, grants = self._identity("setup", SETUP_KSA, (self._platform.admin_password, password))
        labels = k8s_labels(self._name, "setup")
        container = setup_container(image=self._image, tracking_url=self._platform.tracking_url,
                                    admin_username=self._platform.admin_username)
        container["volumeMounts"].append(secrets_mount())
        spec = run_once_job_spec(labels, SETUP_DEADLINE_SECONDS, SETUP_KSA, containers=[container],
                                 volumes=[tmp_volume("64Mi"), volume], backoff_limit=6)
        spec["template"]["metadata"]["annotations"] = {PASSWORD_VERSION_ANNOTATION: version.name}
        return k8s.batch.v1.Job(
            f"{self._name}-setup",
            metadata={"name": "mlflow-loadtest-user", "namespace": self._ns, "labels": labels},
            spec=spec,
            opts=pulumi.ResourceOptions.merge(self._k8s, pulumi.ResourceOptions(
                depends_on=[admitted, version, *grants], delete_before_replace=True,
                custom_timeouts=job_wait(SETUP_DEADLINE_SECONDS))))

    def _service_templates(self, service: str, password: Optional[SecretRef], user: pulumi.Resource) -> None:
        """A run's master and workers templates, the master's Service and who may reach it. Only tracking's
        workers log in, as the load-test user once it exists."""
        name, ns, image = self._name, self._ns, self._image
        host = self._platform.serving_url if service == "serving" else self._platform.tracking_url
        master_labels, workers_labels = k8s_labels(name, master_name(service)), k8s_labels(name, workers_name(service))
        defaults = [{"name": key, "value": value} for key, value in load_env(DEFAULT_USERS, DEFAULT_SECONDS).items()]
        master = locust_container(
            image=image, command="python", args=master_args(service, host, self._settings.workers), cpu="500m",
            env=defaults, mounts=[{"name": "results", "mountPath": RESULTS_DIR}], port=MASTER_PORT)
        results = {"name": "results", "emptyDir": {"sizeLimit": "256Mi"}}
        k8s.batch.v1.CronJob(
            f"{name}-{service}-master",
            metadata={"name": master_name(service), "namespace": ns, "labels": master_labels},
            spec=template_spec(master_labels, job_spec(master_labels, pod_spec(master, [results]))),
            opts=self._k8s)
        if password is None:
            worker = locust_container(image=image, command="locust", args=worker_args(service, host), cpu="1",
                                      env=[], mounts=[])
            workers_pod, after = pod_spec(worker, []), self._k8s
        else:
            volume, grants = self._identity("locust", CREDENTIALS_KSA, (password,))
            worker = locust_container(image=image, command="locust", args=worker_args(service, host), cpu="1",
                                      env=tracking_credentials_env(), mounts=[secrets_mount()])
            workers_pod = pod_spec(worker, [volume], CREDENTIALS_KSA)
            after = pulumi.ResourceOptions.merge(self._k8s, pulumi.ResourceOptions(depends_on=[user, *grants]))
        k8s.batch.v1.CronJob(
            f"{name}-{service}-workers",
            metadata={"name": workers_name(service), "namespace": ns, "labels": workers_labels},
            spec=template_spec(workers_labels, job_spec(workers_labels, workers_pod, self._settings.workers)),
            opts=after)
        k8s.core.v1.Service(
            f"{name}-{service}-master",
            # No master runs between runs: Pulumi must not wait for a ready pod behind it.
            metadata={"name": master_name(service), "namespace": ns, "labels": master_labels,
                      "annotations": {SKIP_AWAIT_ANNOTATION: "true"}},
            spec={"type": "ClusterIP", "selector": k8s_selector(name, master_name(service)),
                  "ports": [{"name": "master", "port": MASTER_PORT, "targetPort": "master", "protocol": "TCP"}]},
            opts=self._k8s)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-{service}-master",
            metadata={"name": master_name(service), "namespace": ns, "labels": master_labels},
            spec={"podSelector": {"matchLabels": k8s_selector(name, master_name(service))},
                  "policyTypes": ["Ingress"], "ingress": master_ingress(k8s_selector(name, workers_name(service)))},
            opts=self._k8s)


def build_load_test(settings: LoadTestSettings) -> dict[str, pulumi.Output]:
    """The stack's outputs: what `make loadtest TARGET=cluster` reads."""
    platform = Platform.of(settings.platform_stack_for(pulumi.get_organization(), pulumi.get_stack()))
    rig = LoadTest(INSTANCE, settings, platform)
    return {"namespace": rig.namespace, "kubeconfig": rig.kubeconfig}
