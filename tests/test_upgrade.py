"""The upgrade data path: data written by the last MLflow 2.x, migrated by this project's
migration Job (plan/dev/k8s), read back by the pinned MLflow 3.x.

One LocalPlatform for the module: Postgres and the bucket start empty; MLflow 2.22.5 (in
.venv-tools, tools/requirements-upgrade.txt beside checkov's: `make tools-venv`, built here if
missing) runs `mlflow server --app-name basic-auth` on them and is seeded with experiments, runs,
artifacts, a registered model with two versions and an alias, users and grants. Then the
rendered migration Job runs, tracking (3.x) starts on the same data, and every item is compared
through the API: values, histories, artifact bytes, aliases, predictions, logins, permissions.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from infra.database import AUTH_DATABASE, TRACKING_DATABASE
from k8s.drift import MONITORING_EXPERIMENT
from tools.local.legacy import LEGACY_REQUIREMENTS, LegacyTracking, ensure_venv
from tools.local.localize import relaunched
from tools.local.processes import LocalPlatformError, http, run_to_completion
from tools.local.testing import scratch_platform
from tools.ops.interfaces import generate_password
from tools.ops.backup import DENIED_GRANTS_SQL, pg_env, query_command, run

# Real processes (Postgres, MLflow servers): not part of `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

CHECKS = Path(__file__).resolve().parent / "local_client_checks.py"
USERS = ("alice", "bob", "carol")
ACCESS_CHECKS = ("read experiment", "edit experiment", "read run", "read model", "edit model", "read admin experiment")
# What MLflow 2.x enforces for the seeded grants (default permission READ): asserted before and after.
EXPECTED_ACCESS = {
    "admin": dict.fromkeys(ACCESS_CHECKS, 200),
    "alice": dict.fromkeys(ACCESS_CHECKS, 200),  # creator: MANAGE on her experiment and model
    "bob": {"read experiment": 200, "edit experiment": 403, "read run": 200, "read model": 200, "edit model": 200,
            "read admin experiment": 200},
    "carol": {"read experiment": 403, "edit experiment": 403, "read run": 403, "read model": 403, "edit model": 403,
              "read admin experiment": 200},
    "wrong password": {user: 401 for user in ("admin", *USERS)},
}
FRESH = {TRACKING_DATABASE: "mlflow_fresh", AUTH_DATABASE: "mlflow_auth_fresh"}
LEGACY_AUTH_VERSION_TABLE, LEGACY_AUTH_REVISION = "alembic_version", "8606fa83a998"  # 2.x auth: initial_migration


def pinned_legacy_version() -> str:
    for line in LEGACY_REQUIREMENTS.read_text().splitlines():
        if line.startswith("mlflow[auth]=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{LEGACY_REQUIREMENTS.name} pins no mlflow[auth]")


def access_matrix(url: str, seed: dict, credentials: dict[str, str]) -> dict:
    """HTTP status of each check for each user, the same requests against 2.x and 3.x."""
    experiment, other = seed["experiments"]["alice"], seed["experiments"]["admin"]
    model, run = seed["model"], seed["runs"]["base"]
    requests = {
        "read experiment": ("GET", f"experiments/get?experiment_id={experiment}", None),
        "edit experiment": ("POST", "experiments/set-experiment-tag",
                            {"experiment_id": experiment, "key": "access-check", "value": "1"}),
        "read run": ("GET", f"runs/get?run_id={run}", None),
        "read model": ("GET", f"registered-models/get?name={model}", None),
        "edit model": ("POST", "registered-models/set-tag", {"name": model, "key": "access-check", "value": "1"}),
        "read admin experiment": ("GET", f"experiments/get?experiment_id={other}", None),
    }
    matrix = {user: {check: http(method, f"{url}/api/2.0/mlflow/{path}", json_body=body,
                                 auth=(user, password)).status
                     for check, (method, path, body) in requests.items()}
              for user, password in credentials.items()}
    matrix["wrong password"] = {user: http("GET", f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
                                           auth=(user, "not-" + password)).status
                                for user, password in credentials.items()}
    return matrix


def migrate_fresh_databases(platform) -> None:
    """The rendered grants and migration Jobs' commands against two new, empty databases."""
    platform.bootstrap_databases(tuple(FRESH.values()))
    swap = {platform.database_uri(db): platform.database_uri(fresh) for db, fresh in FRESH.items()} | FRESH
    commands = [(job, spec, command) for job, name in ((platform.grants_job, "grants-fresh"),
                                                       (platform.migration_job, "migrate-fresh"))
                for spec, command in platform.job_commands(job, name)]
    for job, spec, command in commands:
        assert not command.files, "the grants and migration Jobs mount no files"
        platform.prepare_pod(job, command, command.cwd.parent.name)
        executable, *args = command.container_argv  # `mlflow` is a command here, not the database
        fresh = relaunched(command, [executable, *(swap.get(part, part) for part in args)],
                           env={name: swap.get(value, value) for name, value in command.env.items()})
        assert fresh.container_argv != command.container_argv or fresh.env != command.env, \
            f"{spec['name']} names no database"
        log = platform.logs_dir / f"migrate-fresh-{spec['name']}.log"
        completed = run_to_completion(spec["name"], fresh.argv, env=fresh.env, cwd=fresh.cwd, log_path=log,
                                      timeout=300)
        assert completed.returncode == 0, f"{spec['name']} on a fresh database failed; log {log}"


@pytest.fixture(scope="module")
def legacy_venv() -> Path:
    try:
        return ensure_venv()
    except LocalPlatformError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="module")
def upgrade(request, legacy_venv):
    passwords = {user: generate_password() for user in USERS}
    with scratch_platform(request, "mlflow-upgrade-", demo_model=False) as platform:
        platform.redact.add(*passwords.values())
        credentials = {platform.admin_username: platform.admin_password, **passwords}
        platform.start_storage()
        legacy = LegacyTracking(platform, legacy_venv)
        try:
            legacy.start()
            seed = legacy.run_client("upgrade_seed", extra_env={"USER_PASSWORDS": json.dumps(passwords)}).json()
            access_before = access_matrix(legacy.url, seed, credentials)  # writes its tags before the snapshot
            before = legacy.run_client("registry_state").json()
        finally:
            legacy.stop()
        schema_before = platform.schema_snapshot()
        platform.start_services()  # migration Job, tracking, serving-user Job: as after `pulumi up`
        after = platform.run_client("registry_state").json()
        access_after = access_matrix(platform.tracking_url, seed, credentials)
        denied = run(query_command(platform.postgres.bin_dir, "127.0.0.1", platform.postgres_port,
                                   platform.tracking_db_user, AUTH_DATABASE, DENIED_GRANTS_SQL),
                     env=pg_env(), timeout=60).splitlines()
        yield SimpleNamespace(platform=platform, seed=seed, before=before, after=after, schema_before=schema_before,
                              access_before=access_before, access_after=access_after, denied_grants=denied,
                              passwords=list(passwords.values()))


def test_the_data_was_written_by_the_pinned_2x_release(upgrade):
    assert upgrade.seed["mlflow_version"] == pinned_legacy_version()
    assert pinned_legacy_version().startswith("2.")
    legacy_revisions = upgrade.schema_before[TRACKING_DATABASE]["alembic_versions"]["alembic_version"]
    current = upgrade.platform.schema_snapshot()[TRACKING_DATABASE]["alembic_versions"]["alembic_version"]
    assert len(legacy_revisions) == len(current) == 1 and legacy_revisions != current, "no migration ran"
    assert {"logged_models"} <= set(upgrade.platform.schema_snapshot()[TRACKING_DATABASE]["tables"]) - set(
        upgrade.schema_before[TRACKING_DATABASE]["tables"])


def test_upgraded_schemas_equal_a_fresh_install(upgrade):
    platform = upgrade.platform
    migrate_fresh_databases(platform)
    uris = {name: platform.database_uri(name) for name in (TRACKING_DATABASE, AUTH_DATABASE, *FRESH.values())}
    schemas = platform.run_client("schema", user=None, extra_env={"DATABASE_URIS": json.dumps(uris)}).json()
    upgraded_auth, fresh_auth = schemas[AUTH_DATABASE], schemas[FRESH[AUTH_DATABASE]]
    # MLflow 2.x versioned the auth schema in `alembic_version`; 3.x stamps `alembic_version_auth`
    # at the 2.x revision and migrates from there, leaving the old table (unused) behind.
    stale = upgraded_auth["tables"].pop(LEGACY_AUTH_VERSION_TABLE)
    assert stale["columns"] == [["version_num", "VARCHAR(32)", False]]
    assert upgraded_auth["alembic_versions"].pop(LEGACY_AUTH_VERSION_TABLE) == [LEGACY_AUTH_REVISION]
    assert upgraded_auth == fresh_auth, "the upgraded auth schema differs from a fresh install"
    assert schemas[TRACKING_DATABASE] == schemas[FRESH[TRACKING_DATABASE]], \
        "the upgraded tracking schema differs from a fresh install"


def test_experiments_and_runs_are_intact(upgrade):
    before, after = upgrade.before["experiments"], upgrade.after["experiments"]
    # the new release's setup Job adds the drift job's experiment, empty; everything else is as it was
    added = {key: after.pop(key) for key in set(after) - set(before)}
    assert [(e["name"], e["runs"]) for e in added.values()] == [(MONITORING_EXPERIMENT, {})]
    assert after == before
    alice = before[upgrade.seed["experiments"]["alice"]]
    assert alice["tags"]["team"] == "alice" and len(alice["runs"]) == 3
    base = alice["runs"][upgrade.seed["runs"]["base"]]
    assert base["params"] == {"variant": "base", "max_iter": "500", "C": "1.0"}
    assert [step for step, _, _ in base["history"]["accuracy"]] == [0, 1, 2, 3]
    assert base["tags"]["stage"] == "rehearsal"
    assert {"notes/README.txt", "config/params.json", "model/MLmodel"} <= set(base["artifacts"])
    assert alice["runs"][upgrade.seed["runs"]["deleted"]]["lifecycle"] == "deleted"


def test_registered_model_versions_alias_and_tags_are_intact(upgrade):
    before, after = upgrade.before["registered_models"], upgrade.after["registered_models"]
    assert after == before
    model = after[upgrade.seed["model"]]
    assert model["aliases"] == {"champion": "1"}
    assert model["tags"] == {"domain": "iris", "access-check": "1"}
    assert set(model["versions"]) == {"1", "2"} and model["versions"]["2"]["tags"] == {"validated": "false"}
    assert all(v["status"] == "READY" and "MLmodel" in v["files"] for v in model["versions"].values())


def test_alias_resolves_and_the_model_predicts_as_before(upgrade):
    platform, seed = upgrade.platform, upgrade.seed
    result = platform.run_client(CHECKS, "predict", f"models:/{seed['model']}@{seed['alias']}", timeout=120).json()
    assert result["predictions"] == seed["predictions"]


def test_artifacts_stay_in_the_bucket_where_2x_wrote_them(upgrade):
    platform, seed = upgrade.platform, upgrade.seed
    experiment, run = seed["experiments"]["alice"], seed["runs"]["base"]
    notes = f"{platform.artifacts_prefix}/{experiment}/{run}/artifacts/notes/README.txt"
    assert notes in {item["name"] for item in platform.list_objects(f"{platform.artifacts_prefix}/")}
    assert platform.read_object(notes) == b"notes of the base run\n"


def test_users_log_in_and_grants_are_still_enforced(upgrade):
    assert upgrade.access_before == EXPECTED_ACCESS, "the 2.x grants are not what the rehearsal seeded"
    kept = {subject: checks for subject, checks in EXPECTED_ACCESS.items() if subject != "carol"}
    assert {subject: upgrade.access_after[subject] for subject in kept} == kept


def test_explicit_denials_do_not_survive_the_3x_auth_migration(upgrade):
    """MLflow 3.x's auth migration e5f6a7b8c9d0 skips resource-level NO_PERMISSIONS rows ("an absent
    grant plus the default permission expresses no access"): with authDefaultPermission READ, as
    both stacks have, a user denied under 2.x reads again. Writes stay refused. The runbook's
    pre-upgrade audit (DENIED_GRANTS_SQL) lists such grants; it still finds them afterwards, in the
    legacy tables 3.x keeps but no longer reads."""
    assert upgrade.platform.default_permission == "READ"
    assert upgrade.access_after["carol"] == {**EXPECTED_ACCESS["carol"], "read experiment": 200, "read run": 200,
                                             "read model": 200}
    experiment = upgrade.seed["experiments"]["alice"]
    assert upgrade.denied_grants == [f"carol|experiment|{experiment}", f"carol|registered_model|{upgrade.seed['model']}"]


def test_no_secret_in_any_log(upgrade):
    platform = upgrade.platform
    secrets = [*platform.credentials.values(), *upgrade.passwords]
    leaks = {str(path): [i for i, secret in enumerate(secrets) if secret in path.read_text(errors="replace")]
             for path in platform.logs_dir.rglob("*.log")}
    assert any("legacy" in path for path in leaks), "the 2.x server and clients log too"
    assert {path: found for path, found in leaks.items() if found} == {}


def test_a_linked_stale_virtualenv_is_refused_not_cleared(tmp_path):
    """A worktree links .venv-tools to the main checkout's: rebuilding through the link would
    empty the other checkout's virtualenv."""
    target = tmp_path / "main-venv"
    (target / "bin").mkdir(parents=True)
    (target / "bin" / "python").touch()
    link = tmp_path / "venv"
    link.symlink_to(target)
    requirements = tmp_path / "requirements-upgrade.txt"
    requirements.write_text("mlflow==2.22.5\n")
    with pytest.raises(LocalPlatformError, match="rebuild it where it lives"):
        ensure_venv(link, [requirements])
    assert (target / "bin" / "python").exists()
