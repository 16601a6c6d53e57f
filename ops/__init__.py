"""Day-2 operations on a running platform: promotion and rollback (`ops.promote`), rollouts
(`ops.rollout`), serving-user grants (`ops.grants`, runtime virtualenv) and database
backup commands (`ops.backup`). See docs/runbook.md.

Everything here but `ops.grants` is standard library only, so it runs in `.venv` beside the
Pulumi SDK and the Kubernetes client and can be driven in-process by the tests; it talks to
tracking through MLflow's REST API, the contract every MLflow client uses.
"""
