"""The MLflow images: built and pushed by the program, or prebuilt by digest."""

from __future__ import annotations

import shutil

import pytest

from infra.images import content_hash, image_version
from tests.helpers import container
from offline.mocks import is_secret


def test_content_hash_changes_with_any_source_file(tmp_path):
    shutil.copytree("mlflow_image", tmp_path / "img")
    before = content_hash(tmp_path / "img")
    assert content_hash(tmp_path / "img") == before
    requirements = tmp_path / "img" / "requirements-common.txt"
    requirements.write_text(requirements.read_text() + "\n# bump\n")
    assert content_hash(tmp_path / "img") != before


def test_prebuilt_image_version_is_its_digest():
    assert image_version("r/p/i@sha256:" + "c" * 64) == "c" * 64


def test_two_images_are_built_from_mlflow_image_and_pushed(stack_runs):
    images = stack_runs["dev"].of_type("docker-build:index:Image")
    assert sorted(i.inputs["target"] for i in images) == ["serving", "tracking"]
    version = content_hash()[:16]
    for image in images:
        assert image.inputs["push"] is True
        assert image.inputs["context"]["location"] == "mlflow_image"
        assert image.inputs["tags"] == [
            f"us-central1-docker.pkg.dev/my-mlflow-dev/mlflow-images/mlflow-{image.inputs['target']}:{version}"]
        registry = image.inputs["registries"][0]
        assert registry["username"] == "oauth2accesstoken" and is_secret(registry["password"])


def test_pods_reference_the_built_images_by_digest(stack_runs):
    run = stack_runs["dev"]
    refs = {i.inputs["target"]: i.state["ref"] for i in run.of_type("docker-build:index:Image")}
    assert container(run.named("mlflow-deployment"), "mlflow")["image"] == refs["tracking"]
    assert container(run.named("mlflow-serving-deployment"), "serving")["image"] == refs["serving"]
    assert "@sha256:" in refs["tracking"]


def test_prebuilt_images_skip_the_build(run_stack_with):
    tracking = "europe-docker.pkg.dev/p/r/mlflow-tracking@sha256:" + "1" * 64
    serving = "europe-docker.pkg.dev/p/r/mlflow-serving@sha256:" + "2" * 64
    run = run_stack_with("dev", trackingImage=tracking, servingImage=serving)
    assert run.of_type("docker-build:index:Image") == []
    assert container(run.named("mlflow-deployment"), "mlflow")["image"] == tracking
    assert container(run.named("mlflow-serving-deployment"), "serving")["image"] == serving


@pytest.mark.parametrize("target", ["tracking", "serving"])
def test_dockerfile_has_the_target_and_runs_as_a_numeric_non_root_user(target):
    dockerfile = open("mlflow_image/Dockerfile").read()
    stage = dockerfile.split(f" AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
    assert "USER 10001:10001" in stage
    assert "COPY --from=builder-" in stage and "apt-get" not in stage


def test_one_source_of_truth_for_the_mlflow_version():
    pins = [line for name in ("common", "tracking", "serving")
            for line in open(f"mlflow_image/requirements-{name}.txt").read().splitlines()
            if line.startswith("mlflow==")]
    assert len(pins) == 1
