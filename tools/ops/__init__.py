"""Day-2 operations on a running platform: promotion and rollback (`tools.ops.promote`; canary
promotions through `tools.ops.canary`), the challenger track's commands (`tools.ops.challenger`), secret
rotation (`tools.ops.rotate_secret`), serving-user grants (`tools.ops.grants`) and database backup
commands (`tools.ops.backup`). See docs/runbook.md.

They act on a platform through the protocols of `tools.ops.interfaces` (rollout, verify, secrets, the
challenger's route and per-track numbers: `tools.ops.traffic` on GKE, HAProxy and `tools.ops.scrape` locally);
`tools.ops.targets` picks the adapter from --target: `tools.ops.gke` (a stack's GKE clusters, Secret
Manager) or `tools.ops.local` (a running `make local`, the only ops module that imports tools.local).

Where each runs: the commands (`make promote`, `make rollback`, `make rotate-secret`) run in `.venv`,
beside the Pulumi SDK (stack outputs through the Automation API, `tools.ops.stack`), the Kubernetes
client and Secret Manager's client, and speak to the registry with MLflow's own `MlflowClient`
(mlflow-skinny, the image's MLflow version). What needs the whole of MLflow or the serving image's
code runs in the runtime virtualenv (`tools.ops.runtime`, through `tools.venvs`): the auth client's
grants (`tools.ops.grants`) and password changes (`tools.ops.user_password`), and the rehearsal of a
version (`mlflow_serving.rehearse`). One virtualenv cannot hold both: the image pins protobuf 7, the
Pulumi SDK and pulumi-policy protobuf 5.
"""
