"""The notification receiver and its register Job as the stacks declare them: a new version of the webhook
secret (added by hand or by a rotation) rolls the receiver and reruns the Job on the next `up`."""

from __future__ import annotations

import pytest

from infra.images import image_version
from k8s.notify import SECRET_VERSION_ANNOTATION, register_job_name, webhook_url

pytestmark = pytest.mark.unit


def test_a_new_webhook_secret_version_names_a_new_register_job():
    url = "http://mlflow-notify.mlflow.svc.cluster.local:8080/webhook"
    assert register_job_name(url, "abc", "1") != register_job_name(url, "abc", "2")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_receiver_and_the_job_follow_the_secrets_current_version(stack_runs, stack):
    run = stack_runs[stack]
    receiver = run.named("mlflow-notify-deployment")
    # the mocks answer the version lookup with "1", the program's own first version
    assert receiver.inputs["spec"]["template"]["metadata"]["annotations"] == {SECRET_VERSION_ANNOTATION: "1"}
    [job] = [r for r in run.of_type("kubernetes:batch/v1:Job") if r.name == "mlflow-notify-register"]
    url = webhook_url(job.inputs["metadata"]["namespace"])
    assert job.inputs["metadata"]["name"] == register_job_name(url, image_version(None), "1")
