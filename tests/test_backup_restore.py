"""Backup and restore rehearsal on a LocalPlatform (docs/runbook.md, "Backup and restore").

Databases: the commands of tools.ops.backup (pg_dump custom format of both databases, drop and
recreate them, pg_restore) with tracking stopped; afterwards runs, models, aliases, users and
permissions read back equal and both schemas are identical.
Artifacts: an object deleted from the bucket is recovered. The GCS emulator keeps no
noncurrent versions (object versioning, what the real bucket has on) - asserted below - but
does model soft delete, the bucket's second safety net: recovery goes through that here, and the
runbook gives the `gcloud storage cp gs://B/O#GENERATION` procedure for versioned buckets.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from urllib.parse import quote

import pytest

from infra.database import AUTH_DATABASE, DATABASE_ADMIN_ROLE, TRACKING_DATABASE
from tools.local.manifests import Manifests, flag_value, run_to_completion_containers
from tools.local.processes import http
from tools.local.testing import scratch_platform
from tools.ops.interfaces import generate_password
from tools.ops.backup import (
    DENIED_GRANTS_SQL, dump_command, pg_env, query_command, recreate_commands, restore_command, run,
)

# Real processes (Postgres, MLflow servers): not part of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

CHECKS = Path(__file__).resolve().parent / "local_client_checks.py"
RUNBOOK = Path(__file__).resolve().parent.parent / "docs" / "runbook.md"
DATABASES = (TRACKING_DATABASE, AUTH_DATABASE)
# The prod tracking user as the runbook writes it: the rendered one, the project as a placeholder.
PROD_TRACKING_USER = flag_value(
    run_to_completion_containers(Manifests.load("prod").one("Job", component="database-grants"))[-1]["args"],
    "--grantee")
RUNBOOK_DB_USER = re.sub(r"@[^.]+\.iam$", "@PROJECT_ID.iam", PROD_TRACKING_USER)
TABLES_SQL = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"


@pytest.fixture(scope="module")
def platform(request):
    with scratch_platform(request, "mlflow-backup-", demo_model=False) as local:
        local.start()
        yield local


def api(platform, method: str, path: str, body=None, auth=None, version: str = "2.0"):
    return http(method, f"{platform.tracking_url}/api/{version}/mlflow/{path}", json_body=body,
                auth=auth or (platform.admin_username, platform.admin_password))


@pytest.fixture(scope="module")
def data(platform) -> dict:
    """A run with a registered version (@champion), a second version (@challenger), a user with
    a grant, and the serving user (created by the serving-user Job at start)."""
    first = platform.train_model(variant="base")
    name = platform.model_name
    source = api(platform, "GET", f"model-versions/get?name={name}&version={first['version']}").json()
    second = api(platform, "POST", "model-versions/create",
                 {"name": name, "source": source["model_version"]["source"], "run_id": first["run_id"],
                  "model_id": first["model_id"]}).json()
    version = second["model_version"]["version"]
    assert api(platform, "POST", "registered-models/alias",
               {"name": name, "alias": "challenger", "version": version}).status == 200
    password = generate_password()
    platform.redact.add(password)
    assert api(platform, "POST", "users/create", {"username": "dana", "password": password}).status == 200
    assert api(platform, "POST", "users/permissions/grant", {"username": "dana", "resource_type": "registered_model",
                                                             "resource_id": name, "permission": "EDIT"},
               version="3.0").status == 200
    return {"run": first, "second_version": version, "dana": password}


def access(platform, data) -> dict:
    users = {"dana": data["dana"], platform.serving_username: platform.serving_password,
             platform.admin_username: platform.admin_password}
    name, experiment = platform.model_name, data["run"]["experiment_id"]
    requests = {
        "read model": ("GET", f"registered-models/get?name={name}", None),
        "edit model": ("POST", "registered-models/set-tag", {"name": name, "key": "access-check", "value": "1"}),
        "edit experiment": ("POST", "experiments/set-experiment-tag",
                            {"experiment_id": experiment, "key": "access-check", "value": "1"}),
    }
    matrix = {user: {check: api(platform, method, path, body, auth=(user, password)).status
                     for check, (method, path, body) in requests.items()} for user, password in users.items()}
    matrix["wrong password"] = api(platform, "GET", "experiments/search?max_results=1", auth=("dana", "x")).status
    return matrix


def snapshot(platform, data) -> dict:
    """Everything the restore must bring back, read through tracking (and the schemas)."""
    return {"state": platform.run_client(CHECKS, "snapshot", timeout=120).json(), "access": access(platform, data),
            "schema": platform.schema_snapshot()}


def psql_count(platform, database: str) -> str:
    argv = query_command(platform.postgres.bin_dir, "127.0.0.1", platform.postgres_port, platform.tracking_db_user,
                         database, TABLES_SQL)
    return run(argv, env=pg_env(), timeout=60).strip()


@pytest.fixture(scope="module")
def restored(platform, data, tmp_path_factory) -> dict:
    before = snapshot(platform, data)
    backups = tmp_path_factory.mktemp("backups")
    bin_dir, port = platform.postgres.bin_dir, platform.postgres_port
    user, user_env = platform.tracking_db_user, pg_env()  # the tracking user logs in with no password
    for database in DATABASES:
        run(dump_command(bin_dir, "127.0.0.1", port, user, database, backups / f"{database}.dump"), env=user_env)
    platform.stop_tracking()  # no writer while the databases are replaced
    for database in DATABASES:
        run(recreate_commands(bin_dir, "127.0.0.1", port, platform.postgres.superuser, database, DATABASE_ADMIN_ROLE),
            env=pg_env(platform.credentials.postgres_superuser_password))
    platform.grant_database_privileges()
    wiped = {database: psql_count(platform, database) for database in DATABASES}
    for database in DATABASES:
        run(restore_command(bin_dir, "127.0.0.1", port, user, database, backups / f"{database}.dump"), env=user_env)
    platform.start_tracking()
    return {"before": before, "after": snapshot(platform, data), "wiped": wiped,
            "dumps": {database: (backups / f"{database}.dump").stat().st_size for database in DATABASES}}


def test_dumps_are_custom_format_archives_and_the_wipe_left_nothing(restored):
    assert all(size > 1000 for size in restored["dumps"].values()), restored["dumps"]
    assert restored["wiped"] == {database: "0" for database in DATABASES}


def test_runs_models_and_aliases_are_restored(platform, data, restored):
    before, after = restored["before"]["state"], restored["after"]["state"]
    assert after == before
    model = after["registered_models"][platform.model_name]
    assert model["aliases"] == {platform.model_alias: data["run"]["version"], "challenger": data["second_version"]}
    run_state = after["experiments"][data["run"]["experiment_id"]]["runs"][data["run"]["run_id"]]
    assert run_state["params"]["variant"] == "base" and run_state["notes"] == "iris classifier, variant base\n"


def test_users_and_permissions_are_restored(platform, restored):
    assert restored["after"]["access"] == restored["before"]["access"]
    assert restored["after"]["access"]["dana"] == {"read model": 200, "edit model": 200, "edit experiment": 403}
    assert restored["after"]["access"][platform.serving_username]["edit model"] == 403
    assert restored["after"]["access"]["wrong password"] == 401


def test_schemas_are_identical_after_the_restore(restored):
    assert restored["after"]["schema"] == restored["before"]["schema"]


# ============================ artifacts: the bucket ============================
def storage(platform, method: str, path: str, query: str = ""):
    return http(method, f"{platform.emulator_url}/storage/v1/b/{platform.bucket}/o{path}{query}")


@pytest.fixture(scope="module")
def deleted_artifact(platform, data, restored) -> dict:
    """The run's notes, deleted from the bucket behind MLflow's back."""
    run = data["run"]
    name = f"{platform.artifacts_prefix}/{run['experiment_id']}/{run['run_id']}/artifacts/notes/README.txt"
    proxy = (f"{platform.tracking_url}/api/2.0/mlflow-artifacts/artifacts/{run['experiment_id']}/{run['run_id']}"
             "/artifacts/notes/README.txt")
    admin = (platform.admin_username, platform.admin_password)
    before = http("GET", proxy, auth=admin)
    assert before.status == 200
    live = storage(platform, "GET", f"/{quote(name, safe='')}").json()
    assert storage(platform, "DELETE", f"/{quote(name, safe='')}").status in (200, 204)
    return {"name": name, "generation": live["generation"], "content": before.body, "proxy": proxy, "admin": admin,
            "after_delete": http("GET", proxy, auth=admin).status}


def test_a_deleted_artifact_is_gone_for_mlflow(deleted_artifact):
    assert deleted_artifact["after_delete"] != 200


def test_emulator_keeps_no_noncurrent_versions(platform, deleted_artifact):
    """The limitation: with versioning, real GCS would list the deleted object as a noncurrent
    generation and serve it by ?generation=; gcp-storage-emulator does neither."""
    name, generation = deleted_artifact["name"], deleted_artifact["generation"]
    listed = storage(platform, "GET", "", f"?prefix={quote(name)}&versions=true").json()
    assert [item["name"] for item in listed.get("items", [])] == []
    assert storage(platform, "GET", f"/{quote(name, safe='')}", f"?generation={generation}&alt=media").status == 404


def test_a_deleted_artifact_is_recovered_from_soft_delete(platform, deleted_artifact):
    name, generation = deleted_artifact["name"], deleted_artifact["generation"]
    soft = storage(platform, "GET", "", f"?prefix={quote(name)}&softDeleted=true").json()
    assert [(item["name"], item["generation"]) for item in soft["items"]] == [(name, generation)]
    restored = storage(platform, "POST", f"/{quote(name, safe='')}/restore", f"?generation={generation}")
    assert restored.status == 200 and restored.json()["name"] == name
    assert platform.read_object(name) == deleted_artifact["content"]
    again = http("GET", deleted_artifact["proxy"], auth=deleted_artifact["admin"])
    assert (again.status, again.body) == (200, deleted_artifact["content"])


def test_no_secret_in_any_log(platform, data, restored):
    secrets = [*platform.credentials.values(), data["dana"]]
    leaks = {str(path): [i for i, secret in enumerate(secrets) if secret in path.read_text(errors="replace")]
             for path in platform.logs_dir.rglob("*.log")}
    assert {path: found for path, found in leaks.items() if found} == {}


# ============================ the runbook gives the commands rehearsed here ============================
def runbook_lines(database: str) -> list[str]:
    """The command lines of tools.ops.backup as an operator types them through the Cloud SQL Auth Proxy."""
    return [shlex.join(dump_command("", "127.0.0.1", 5432, RUNBOOK_DB_USER, database, f"{database}.dump")),
            shlex.join(restore_command("", "127.0.0.1", 5432, RUNBOOK_DB_USER, database, f"{database}.dump"))]


def test_runbook_gives_the_rehearsed_commands():
    text = RUNBOOK.read_text()
    for database in DATABASES:
        for line in runbook_lines(database):
            assert line in text, f"docs/runbook.md lacks `{line}`"
    assert DENIED_GRANTS_SQL in text.replace("\n", " ")
    for command in ("gcloud storage ls --all-versions", "gcloud storage cp", "gcloud storage ls --soft-deleted",
                    "gcloud storage restore", "gcloud sql instances clone", "gcloud sql backups restore"):
        assert command in text, command
