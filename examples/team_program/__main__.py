"""A team's own Pulumi program: the MLflow platform as one component, with typed settings, beside the
team's own resources. The platform's code must be importable: from this folder,
`PYTHONPATH=../.. pulumi up` (or install the platform's checkout into the program's virtualenv).
"""

import pulumi
import pulumi_gcp as gcp

from infra.settings import ClustersSettings, DatabaseSettings, NodePoolSettings, ServingSettings, Settings, StorageSettings
from program import MlflowPlatform

gcp_config = pulumi.Config("gcp")
settings = Settings(
    project=gcp_config.require("project"),
    region=gcp_config.get("region") or "us-central1",
    zone=gcp_config.get("zone") or "us-central1-a",
    environment="dev",
    name_prefix="fraud",
    clusters=ClustersSettings(deletion_protection=False, platform=NodePoolSettings(spot=True, max_nodes=2)),
    database=DatabaseSettings(deletion_protection=False),
    storage=StorageSettings(force_destroy=True),
    serving=ServingSettings(model_name="fraud-scorer"),
)
platform = MlflowPlatform("fraud-mlflow", settings)

# The team's own resource, beside the platform: where its training data lives.
training_data = gcp.storage.Bucket(
    "fraud-training-data", project=settings.project, location=settings.region,
    uniform_bucket_level_access=True, public_access_prevention="enforced")

pulumi.export("tracking_in_cluster_url", platform.outputs["tracking_in_cluster_url"])
pulumi.export("serving_model_uri", platform.outputs["serving_model_uri"])
pulumi.export("training_data_bucket", training_data.name)
