import pytest

from infra.settings import StorageSettings
from infra.storage import ArtifactBucket, ArtifactBucketArgs

ARGS = dict(project="test-project-1", bucket_name="test-project-1-mlflow-artifacts", location="us-central1",
            labels={"app": "mlflow"})


def build(run_component, **changes):
    """The component with `changes` to its settings."""
    return run_component(lambda: ArtifactBucket("art", ArtifactBucketArgs(**ARGS, settings=StorageSettings(**changes)))
                         and None)


def test_bucket_is_private_with_uniform_access(run_component):
    bucket = build(run_component).named("art-bucket")
    assert bucket.inputs["publicAccessPrevention"] == "enforced", bucket.urn
    assert bucket.inputs["uniformBucketLevelAccess"] is True, bucket.urn


def test_bucket_is_versioned(run_component):
    assert build(run_component).named("art-bucket").inputs["versioning"] == {"enabled": True}


def test_lifecycle_moves_to_nearline_and_expires_noncurrent_versions(run_component):
    rules = build(run_component, nearline_after_days=45, noncurrent_retention_days=12).named("art-bucket").inputs["lifecycleRules"]
    by_action = {rule["action"]["type"]: rule for rule in rules}
    assert by_action["SetStorageClass"]["action"]["storageClass"] == "NEARLINE"
    assert by_action["SetStorageClass"]["condition"]["age"] == 45
    assert by_action["Delete"]["condition"]["daysSinceNoncurrentTime"] == 12
    assert by_action["Delete"]["condition"]["withState"] == "ARCHIVED"


@pytest.mark.parametrize("force", [True, False])
def test_force_destroy_only_when_asked(run_component, force):
    assert build(run_component, force_destroy=force).named("art-bucket").inputs["forceDestroy"] is force



def test_bucket_gets_the_given_name(run_component):
    assert build(run_component).named("art-bucket").inputs["name"] == "test-project-1-mlflow-artifacts"
