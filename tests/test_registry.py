import pytest

from infra.registry import ImageRepository, ImageRepositoryArgs

ARGS = dict(project="test-project-1", location="us-central1", repository_id="mlflow-images", labels={"app": "mlflow"})


def build(run_component, **changes):
    outputs = {}

    def program():
        outputs["url"] = ImageRepository("reg", ImageRepositoryArgs(**{**ARGS, **changes})).repository_url
        return outputs

    return run_component(program)


def test_docker_repository_in_the_region(run_component):
    repo = build(run_component).named("reg-repo")
    assert (repo.inputs["format"], repo.inputs["location"]) == ("DOCKER", "us-central1")


def test_cleanup_keeps_the_most_recent_versions(run_component):
    repo = build(run_component, keep_versions=7).named("reg-repo")
    keep = next(p for p in repo.inputs["cleanupPolicies"] if p["action"] == "KEEP")
    assert keep["mostRecentVersions"]["keepCount"] == 7
    assert repo.inputs["cleanupPolicyDryRun"] is False


def test_repository_url_is_the_docker_host_path(run_component):
    assert build(run_component).outputs["url"] == "us-central1-docker.pkg.dev/test-project-1/mlflow-images"



def test_tags_stay_mutable_because_rebuilds_push_the_same_tag_again(run_component):
    # pulumi-docker-build rebuilds whenever its state has no matching contextHash (a recreated stack, an
    # interrupted `up`): the same tag then names a new digest, which an immutable repository refuses.
    repo = build(run_component).named("reg-repo")
    assert repo.inputs["dockerConfig"] == {"immutableTags": False}, repo.urn
