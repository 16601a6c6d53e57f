"""Model serving: pure builders, then the component as the committed stacks declare it."""

from __future__ import annotations

import pytest

from k8s.serving import (
    ALIAS_ANNOTATION, ROLLOUT_ANNOTATION, ModelServingArgs, hpa_spec, rollout_annotations, serving_args,
    setup_job_name,
)
from infra.settings import ServingSettings
from tests.helpers import container, env_of, plain, pod_spec
from tools.offline.stack import ROOT


def test_serves_the_registry_alias_through_the_metrics_wrapper():
    args = serving_args("iris", "champion", workers=2)
    assert args[:2] == ["-m", "mlflow_serving"]
    assert args[args.index("--model-uri") + 1] == "models:/iris@champion"
    assert args[args.index("--workers") + 1] == "2"


def test_batching_settings_reach_the_server_command():
    args = serving_args("iris", "champion", max_batch_size=64, max_batch_delay_ms=5)
    assert args[args.index("--max-batch-size") + 1] == "64"
    assert args[args.index("--max-batch-delay-ms") + 1] == "5"


def test_batching_is_off_unless_asked():
    args = serving_args("iris", "champion")
    assert args[args.index("--max-batch-size") + 1] == "1"


def test_alias_or_token_change_changes_the_pod_template():
    base = rollout_annotations("iris", "champion", "")
    assert rollout_annotations("iris", "challenger", "") != base
    assert rollout_annotations("iris", "champion", "2026-11-30") != base
    assert base[ALIAS_ANNOTATION] == "models:/iris@champion" and base[ROLLOUT_ANNOTATION] == "initial"


def test_setup_job_reruns_when_model_alias_or_rollout_token_change():
    name = setup_job_name("iris", "champion", "")
    assert name != setup_job_name("iris", "canary", "")
    assert name != setup_job_name("other", "champion", "")
    assert name != setup_job_name("iris", "champion", "2026-11-30")
    assert name == setup_job_name("iris", "champion", "") and len(name) <= 63


def test_hpa_scales_on_cpu_within_bounds():
    spec = hpa_spec("mlflow-serving", 2, 9, 65)
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 9)
    assert spec["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 65}


def test_args_refuse_settings_without_a_model():
    with pytest.raises(ValueError, match="needs a registered model to serve"):
        ModelServingArgs(provider=None, tracking_provider=None, project="p", workload_pool="w", account_id="a",
                         image="i", setup_image="i", tracking=None, serving_password=None, payload_hash_key=None,
                         project_number="1",
                         tracking_workload_pool="w", settings=ServingSettings())


# --- as declared by the stacks --------------------------------------------------------------
def serving_deployment(run):
    return run.named("mlflow-serving-deployment")


def test_serving_is_absent_without_a_model(run_stack_with):
    run = run_stack_with("dev", {"serving.modelName": ""})
    assert not [r for r in run.resources if r.type.startswith("mlflow:serving")]
    assert {r.name for r in run.of_type("kubernetes:apps/v1:Deployment")} == {
        "mlflow-deployment", "mlflow-notify-deployment"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_serving_pods_run_models_serve_with_the_password_from_its_secret_manager_file(stack_runs, stack):
    deployment = serving_deployment(stack_runs[stack])
    serving = container(deployment, "serving")
    assert serving["command"] == ["python"]
    assert serving["args"][serving["args"].index("--model-uri") + 1] == "models:/iris-classifier@champion"
    env = env_of(serving)
    assert "MLFLOW_TRACKING_PASSWORD" not in env and "MLFLOW_TRACKING_PASSWORD_FILE" in env
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "app-secrets")
    assert volume["csi"] == {"driver": "secrets-store-gke.csi.k8s.io", "readOnly": True,
                             "volumeAttributes": {"secretProviderClass": "mlflow-serving"}}
    mount = next(m for m in serving["volumeMounts"] if m["name"] == "app-secrets")
    assert mount == {"name": "app-secrets", "mountPath": "/etc/mlflow-secrets", "readOnly": True}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_waiting_for_a_model_makes_the_pod_unready_never_killed(stack_runs, stack):
    # /ping is 503 until a version is behind the alias (mlflow_serving): only readiness may look at it.
    serving = container(serving_deployment(stack_runs[stack]), "serving")
    paths = {probe: serving[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert paths == {"startupProbe": "/live", "livenessProbe": "/live", "readinessProbe": "/ping"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_pulumi_up_does_not_wait_for_serving_to_be_ready(stack_runs, stack):
    run = stack_runs[stack]
    deployment = serving_deployment(run)
    assert deployment.inputs["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    # nothing else waits: the tracking Deployment is still awaited, the HPA still scales this one
    assert "pulumi.com/skipAwait" not in run.named("mlflow-deployment").inputs["metadata"].get("annotations", {})
    assert run.named("mlflow-serving-hpa").inputs["spec"]["scaleTargetRef"]["name"] == "mlflow-serving"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_nothing_pulumi_awaits_depends_on_a_ready_serving_pod(stack_runs, stack):
    # Pulumi awaits a Deployment's ready replicas and a Service's ready endpoints; before the first
    # model version exists no serving pod is ready, so every such object selecting them skips the await.
    run = stack_runs[stack]
    pod_labels = serving_deployment(run).inputs["spec"]["template"]["metadata"]["labels"]
    awaited = [r for r in run.resources if r.inputs.get("kind") in ("Deployment", "Service")]
    selecting = [r for r in awaited
                 if (lambda sel: sel and all(pod_labels.get(k) == v for k, v in sel.items()))(
                     r.inputs["spec"].get("selector", {}).get("matchLabels", r.inputs["spec"].get("selector")))]
    assert {r.name for r in selecting} == {"mlflow-serving-deployment", "mlflow-serving-service"}
    for record in selecting:
        assert record.inputs["metadata"].get("annotations", {}).get("pulumi.com/skipAwait") == "true", record.urn


def test_dev_serving_reaches_tracking_in_cluster_prod_through_the_internal_lb(stack_runs):
    dev = env_of(container(serving_deployment(stack_runs["dev"]), "serving"))["MLFLOW_TRACKING_URI"]["value"]
    prod_run = stack_runs["prod"]
    prod = env_of(container(serving_deployment(prod_run), "serving"))["MLFLOW_TRACKING_URI"]["value"]
    assert dev == "http://mlflow-tracking.mlflow.svc.cluster.local:5000"
    address = prod_run.named("mlflow-net-tracking-ilb-ip")
    assert prod == f"http://{address.state['address']}:5000"
    # the URL is the Address's output, so the Deployment is created after the reservation
    assert address.urn in serving_deployment(prod_run).dependencies


def test_prod_serving_runs_on_the_serving_cluster(stack_runs):
    run = stack_runs["prod"]
    serving_provider = run.named("mlflow-serving-k8s").urn
    assert serving_deployment(run).provider == serving_provider
    assert run.named("mlflow-deployment").provider == run.named("mlflow-platform-k8s").urn


def test_rollout_token_rolls_the_serving_pods(run_stack_with):
    first = serving_deployment(run_stack_with("dev", {"serving.rolloutToken": "one"}))
    second = serving_deployment(run_stack_with("dev", {"serving.rolloutToken": "two"}))
    annotations = lambda d: d.inputs["spec"]["template"]["metadata"]["annotations"]  # noqa: E731
    assert annotations(first) != annotations(second)


def test_stack_batching_settings_reach_the_serving_container(run_stack_with):
    args = container(serving_deployment(run_stack_with("dev", {"serving.maxBatchSize": "8", "serving.maxBatchDelayMs": "4"})),
                     "serving")["args"]
    assert (args[args.index("--max-batch-size") + 1], args[args.index("--max-batch-delay-ms") + 1]) == ("8", "4")


def workers(run) -> int:
    args = container(serving_deployment(run), "serving")["args"]
    return int(args[args.index("--workers") + 1])


@pytest.mark.parametrize("stack, limit, cores", [("dev", "500m", 1), ("prod", "2000m", 2)])
def test_the_serving_pod_runs_one_batching_worker_per_core_of_its_cpu_limit(stack_runs, stack, limit, cores):
    """dev: 250m requested, 500m limit: one worker; prod: 1 core requested, 2 cores limit: two."""
    run = stack_runs[stack]
    assert container(serving_deployment(run), "serving")["resources"]["limits"]["cpu"] == limit
    assert workers(run) == cores


def test_explicit_serving_workers_are_kept_within_the_limit(run_stack_with):
    assert workers(run_stack_with("prod", {"serving.workers": "1"})) == 1
    assert workers(run_stack_with("dev", {"serving.cpu": "1500m"})) == 3
    assert workers(run_stack_with("dev", {"serving.cpu": "5"})) == 8  # the setting's own bound


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_serving_worker_runs_its_libraries_on_one_thread(stack_runs, stack):
    """A BLAS or OpenMP thread per node CPU in every worker would be throttled against the pod's limit."""
    env = {e["name"]: e.get("value") for e in container(serving_deployment(stack_runs[stack]), "serving")["env"]}
    assert {env[name] for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")} == {"1"}


def test_hpa_bounds_follow_config(run_stack_with):
    hpa = run_stack_with("dev", {"serving.minReplicas": "2", "serving.maxReplicas": "7"}).named("mlflow-serving-hpa")
    assert (hpa.inputs["spec"]["minReplicas"], hpa.inputs["spec"]["maxReplicas"]) == (2, 7)
    assert hpa.inputs["apiVersion"] == "autoscaling/v2"


def test_pods_waiting_for_a_model_never_block_a_node_drain(stack_runs):
    pdb = stack_runs["prod"].named("mlflow-serving-pdb").inputs["spec"]
    assert pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_deployment_leaves_replicas_to_the_hpa(stack_runs):
    assert "replicas" not in serving_deployment(stack_runs["prod"]).inputs["spec"]


def test_pdb_in_prod_only(stack_runs):
    assert stack_runs["prod"].named("mlflow-serving-pdb").inputs["spec"]["maxUnavailable"] == 1
    assert not [r for r in stack_runs["dev"].resources if r.name == "mlflow-serving-pdb"]


def test_serving_user_job_runs_beside_tracking_after_it_is_ready(stack_runs):
    run = stack_runs["prod"]
    job = run.named("mlflow-serving-setup")
    assert job.inputs["metadata"]["namespace"] == "mlflow"
    assert job.provider == run.named("mlflow-platform-k8s").urn
    assert run.named("mlflow-deployment").urn in job.dependencies
    assert job.urn in serving_deployment(run).dependencies
    env = env_of(container(job, "ensure-serving-user"))
    assert env["MODEL_NAME"]["value"] == "iris-classifier"
    assert env["MLFLOW_TRACKING_PASSWORD_FILE"]["value"] == "/etc/mlflow-secrets/admin-password"
    assert env["SERVING_PASSWORD_FILE"]["value"] == "/etc/mlflow-secrets/serving-password"
    assert pod_spec(job)["serviceAccountName"] == "mlflow-serving-setup"


def test_serving_user_job_runs_the_module_of_the_tracking_image_not_a_mounted_script(stack_runs):
    run = stack_runs["prod"]
    job = run.named("mlflow-serving-setup")
    setup = container(job, "ensure-serving-user")
    assert setup["image"] == container(run.named("mlflow-deployment"), "mlflow")["image"]
    assert setup["args"][-2:] == ["-m", "mlflow_serving_user"]
    assert not [volume for volume in pod_spec(job)["volumes"] if "configMap" in volume]
    assert "COPY mlflow_serving_user " in (ROOT / "mlflow_image" / "Dockerfile").read_text().split("AS serving")[0]


def test_serving_password_is_mounted_from_secret_manager_not_a_kubernetes_secret(stack_runs):
    run = stack_runs["prod"]
    assert not [r for r in run.of_type("kubernetes:core/v1:Secret") if "serving" in r.name], "a copy is left"
    app = container(serving_deployment(run), "serving")
    env = env_of(app)
    assert env["MLFLOW_TRACKING_USERNAME"]["value"] == "mlflow-serving"
    assert env["MLFLOW_TRACKING_PASSWORD_FILE"]["value"] == "/etc/mlflow-secrets/serving-password"
    assert env["MLFLOW_SERVING_PAYLOAD_KEY_FILE"]["value"] == "/etc/mlflow-secrets/payload-hash-key"
    assert app["args"][:6] == ["-m", "mlflow_fileenv", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_SERVING_PAYLOAD_KEY", "--",
                               "python"]


def test_serving_identity_has_no_gcp_roles(stack_runs):
    run = stack_runs["prod"]
    assert not [r for r in run.resources if r.name.startswith("mlflow-serving-identity-")
                and r.type in ("gcp:projects/iAMMember:IAMMember", "gcp:storage/bucketIAMMember:BucketIAMMember")]
    assert pod_spec(serving_deployment(run))["serviceAccountName"] == "mlflow-serving"


def test_serving_is_scraped_and_logs_json(stack_runs):
    run = stack_runs["dev"]
    monitoring = run.named("mlflow-serving-pod-monitoring").inputs
    assert monitoring["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    serving = container(serving_deployment(run), "serving")
    assert serving["args"][serving["args"].index("--log-config") + 1] == "/etc/mlflow-logging/logging.json"
