"""Day-2 operations on a running platform: promotion and rollback (`tools.ops.promote`), rollouts
(`tools.ops.rollout`), secret rotation (`tools.ops.rotate_secret`), serving-user grants (`tools.ops.grants`) and
database backup commands (`tools.ops.backup`). See docs/runbook.md.

Where each runs: the commands (`make promote`, `make rollback`, `make rotate-secret`) run in
`.venv`, beside the Pulumi SDK (stack outputs through the Automation API, `tools.ops.stack`), the
Kubernetes client and Secret Manager's client, and speak to the registry with MLflow's own
`MlflowClient` (mlflow-skinny, the image's MLflow version). What needs the whole of MLflow or the
serving image's code runs in `.venv-runtime` through `tools.ops.runtime`: the auth client's grants
(`tools.ops.grants`) and password changes (`tools.ops.user_password`), and the rehearsal of a version
(`mlflow_serving.rehearse`). One virtualenv cannot hold both: the image pins protobuf 7, the
Pulumi SDK and pulumi-policy protobuf 5.
"""
