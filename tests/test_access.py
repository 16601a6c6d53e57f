"""Team access as code: the settings refuse what cannot be applied, by full key, before any resource; the
access Job's decisions (mlflow_image/mlflow_access) grant exactly what the rules say and take back the rest;
the prod stack declares the Job and its schedule with the teams in the plan and no secret beside them.
The decisions run against a real server in tests/test_iap_local.py."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest

from infra.config import ConfigError, settings_from_values
from k8s.access import ROLE_PREFIX, SCHEDULE, domain_roles, job_name

sys.path.insert(0, "mlflow_image")
import mlflow_access  # noqa: E402
from mlflow_access import EXPERIMENT, MODEL, Held, Team, permission_changes, stale_roles, teams_from_settings  # noqa: E402

IAP_ON = {"gcp:project": "my-proj-123", "mlflow-platform:environment": "dev",
          "mlflow-platform:edge": {"ingressHost": "mlflow.example.com", "iap": True, "iapMembers": ["domain:example.com"]}}


def refusal(teams: dict, **values) -> str:
    with pytest.raises(ConfigError) as err:
        settings_from_values({**IAP_ON, "mlflow-platform:access": {"teams": teams}, **values})
    return str(err.value)


@pytest.mark.parametrize("team, expected", [
    ({"members": ["user:ada@example.com"], "experiments": {"fraud-": "WRITE"}},
     "mlflow-platform:access.teams.fraud.experiments.fraud- = 'WRITE': Input should be 'READ', 'EDIT', 'MANAGE' or "
     "'NO_PERMISSIONS'"),
    ({"members": ["user:ada@example.com"], "models": {"fraud-": "EDIT", "fraud-prod": "READ"}},
     "mlflow-platform:access.teams.fraud.models.fraud-prod = 'READ': overlaps the rule for prefix 'fraud-' (EDIT)"),
    ({"members": ["group:ml@example.com"]},
     "mlflow-platform:access.teams.fraud.members.0 = 'group:ml@example.com': 'group:ml@example.com' is not a team "
     "member; allowed: user:EMAIL, serviceAccount:EMAIL or domain:DOMAIN"),
    ({"members": ["ada@example.com"]}, "mlflow-platform:access.teams.fraud.members.0 = 'ada@example.com'"),
    ({"members": ["user:ada@example.com"], "owners": ["x"]}, "mlflow-platform:access.teams.fraud.owners: unknown setting"),
])
def test_bad_team_settings_are_refused_by_full_key(team, expected):
    assert expected in refusal({"fraud": team})


def test_team_names_and_iap_are_required():
    assert "team names ['Fraud_Team'] must be 2-40 lowercase letters" in refusal({"Fraud_Team": {}})
    without_iap = {**IAP_ON, "mlflow-platform:edge": {}}
    with pytest.raises(ConfigError, match=r"mlflow-platform:access.teams = \['fraud'\]: needs mlflow-platform:edge.iap=true"):
        settings_from_values({**without_iap, "mlflow-platform:access": {"teams": {"fraud": {}}}})


CI = "serviceAccount:ci@my-proj-123.iam.gserviceaccount.com"


def test_a_team_member_iap_does_not_let_through_is_refused_by_key():
    # IAP_ON admits domain:example.com: its people, not a service account (not a member of the Workspace domain)
    found = refusal({"fraud": {"members": ["user:ada@example.com", CI, "user:eve@other.org"]}})
    assert (f"mlflow-platform:access.teams.fraud.members = '{CI}': is not let through by "
            "mlflow-platform:edge.iapMembers ['domain:example.com']") in found
    assert "'user:eve@other.org': is not let through" in found
    assert "ada@example.com" not in found


@pytest.mark.parametrize("iap_members, member", [
    ([CI], CI),
    (["domain:example.com"], "domain:risk.example.com"),
    (["domain:example.com"], "user:bob@risk.example.com"),
    (["group:ml@example.com"], CI),  # who is in a group cannot be known from its name
])
def test_a_team_member_iap_lets_through_is_accepted(iap_members, member):
    edge = {**IAP_ON["mlflow-platform:edge"], "iapMembers": iap_members}
    settings_from_values({**IAP_ON, "mlflow-platform:edge": edge,
                          "mlflow-platform:access": {"teams": {"fraud": {"members": [member]}}}})


def test_rules_of_different_teams_may_cover_the_same_names():
    settings = settings_from_values({**IAP_ON, "mlflow-platform:access": {"teams": {
        "fraud": {"experiments": {"fraud-": "EDIT"}}, "audit": {"experiments": {"fraud-": "READ"}}}}})
    assert set(settings.access.teams) == {"fraud", "audit"}


# --- what the access Job decides -------------------------------------------------------------------
FRAUD = Team.from_settings("fraud", {"members": ["user:Ada@example.com", "domain:risk.example.com"],
                                     "experiments": {"fraud-": "EDIT", "shared": "NO_PERMISSIONS"},
                                     "models": {"fraud-": "MANAGE"}})


def test_rules_resolve_to_the_experiments_and_models_that_exist():
    experiments = {"1": "fraud-a", "2": "risk-a", "3": "shared-x", "4": "fraud"}
    assert FRAUD.grants(experiments, ["fraud-model", "risk-model"]) == {
        (EXPERIMENT, "1"): "EDIT", (EXPERIMENT, "3"): "DENY", (MODEL, "fraud-model"): "MANAGE"}


def test_members_are_named_identities_and_every_user_of_a_domain():
    assert FRAUD.users(["bob@risk.example.com", "eve@example.com", "mallory@evil-risk.example.com.attacker.io"]) == {
        "ada@example.com", "bob@risk.example.com"}
    assert FRAUD.role == "team-fraud"


def test_only_the_difference_is_applied_and_what_is_no_longer_granted_is_taken_back():
    held = [Held(10, (EXPERIMENT, "1"), "READ"), Held(11, (EXPERIMENT, "9"), "EDIT"), Held(12, (MODEL, "m"), "MANAGE")]
    changes = permission_changes(held, {(EXPERIMENT, "1"): "EDIT", (MODEL, "m"): "MANAGE", (EXPERIMENT, "2"): "READ"})
    assert changes.add == {(EXPERIMENT, "2"): "READ"}
    assert changes.update == {10: "EDIT"}
    assert changes.remove == [11]
    assert not permission_changes(held, {h.grant: h.permission for h in held})


def test_roles_of_teams_no_longer_declared_are_deleted_and_other_roles_are_left_alone():
    assert stale_roles(["team-fraud", "team-old", "__user_3__", "analysts"], [FRAUD]) == ["team-old"]


class OverlappedAuth:
    """The basic-auth client as a run sees it when an overlapping run (the Job beside the CronJob) made every
    change a moment before: its listings are older than the writes, and each write finds it done."""

    def __init__(self, error: str = "", code: int = 0):
        from mlflow.protos import databricks_pb2

        self.role = SimpleNamespace(id=7, name="team-fraud")
        self.codes = {"already": databricks_pb2.RESOURCE_ALREADY_EXISTS, "gone": databricks_pb2.RESOURCE_DOES_NOT_EXIST}
        self.failing, self.code = error, code

    def _done(self, kind: str, method: str):
        from mlflow.exceptions import MlflowException

        raise MlflowException(f"{method}: {kind}", error_code=self.code if method == self.failing else self.codes[kind])

    def list_roles(self, workspace):
        return [self.role]

    def list_role_permissions(self, role_id):  # experiment 1 left the prefix; model fraud-m was READ
        return [SimpleNamespace(id=1, resource_type=EXPERIMENT, resource_pattern="1", permission="EDIT"),
                SimpleNamespace(id=2, resource_type=MODEL, resource_pattern="fraud-m", permission="READ")]

    def list_role_users(self, role_id):  # bob left the team; user 99 signed in after the run listed users
        return [SimpleNamespace(user_id=3), SimpleNamespace(user_id=99)]

    def __getattr__(self, method):
        kind = "already" if method in {"create_role", "add_role_permission", "assign_role", "create_user"} else "gone"
        return lambda *args: self._done(kind, method)


USERS = {"ada@example.com": 1, "bob@example.com": 3}


def test_a_run_overlapping_another_converges_on_writes_the_other_made_first():
    from mlflow_access.__main__ import apply_team, delete_stale_roles, ensure_users

    auth = OverlappedAuth()
    summary = apply_team(auth, FRAUD, {}, USERS, {"1": "other", "2": "fraud-x"}, ["fraud-m"])
    assert summary == "team-fraud: +1 ~1 -1 permissions, 1 users"
    ensure_users(auth, {"carol@example.com"}, USERS)
    assert delete_stale_roles(auth, {"team-old": SimpleNamespace(id=8)}, [FRAUD]) == ["team-old"]


def test_any_other_failure_of_a_write_still_fails_the_run():
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2
    from mlflow_access.__main__ import apply_team

    with pytest.raises(MlflowException, match="add_role_permission"):
        apply_team(OverlappedAuth("add_role_permission", databricks_pb2.PERMISSION_DENIED), FRAUD, {}, USERS,
                   {"2": "fraud-x"}, [])


# --- the plan -------------------------------------------------------------------------------------
def test_prod_declares_the_access_job_and_its_schedule_with_the_teams_and_no_secret(stack_runs):
    run = stack_runs["prod"]
    job = run.named("mlflow-access-job")
    cron = run.named("mlflow-access-schedule")
    env = {e["name"]: e.get("value") for e in job.inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert set(json.loads(env["ACCESS_TEAMS"])) == {"fraud", "risk"}
    assert env["MLFLOW_TRACKING_PASSWORD_FILE"].startswith("/etc/") and "MLFLOW_TRACKING_PASSWORD" not in env
    assert cron.inputs["spec"]["schedule"] == SCHEDULE
    assert cron.inputs["spec"]["jobTemplate"]["spec"]["template"] == job.inputs["spec"]["template"]


def test_a_change_of_teams_or_image_is_a_new_job():
    assert len({job_name("{}", "v1"), job_name('{"a": {}}', "v1"), job_name("{}", "v2")}) == 3


def test_a_stack_without_iap_declares_no_access_job(stack_runs):
    assert not [r for r in stack_runs["dev"].of_type("kubernetes:batch/v1:CronJob") if r.name.startswith("mlflow-access")]


def test_removing_the_last_team_still_runs_the_job_that_deletes_its_role(run_stack_with):
    run = run_stack_with("prod", {"access.teams": "{}"})
    job = run.named("mlflow-access-job")
    env = {e["name"]: e.get("value") for e in job.inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["ACCESS_TEAMS"]) == {}
    assert stale_roles(["team-fraud", "team-risk", "analysts"], teams_from_settings({})) == ["team-fraud", "team-risk"]


def test_a_domain_member_joins_the_team_role_the_access_job_makes_at_first_sign_in(stack_runs):
    settings = settings_from_values({**IAP_ON, "mlflow-platform:access": {"teams": {
        "risk": {"members": ["domain:risk.example.com", "user:ada@example.com"]}}}})
    assert domain_roles(settings.access) == (("risk.example.com", "team-risk"),)
    assert ROLE_PREFIX == mlflow_access.ROLE_PREFIX  # the server and the Job name the same roles
    tracking = stack_runs["prod"].named("mlflow-deployment")
    env = {e["name"]: e.get("value") for c in tracking.inputs["spec"]["template"]["spec"]["containers"]
           for e in c.get("env", [])}
    assert env["MLFLOW_IAP_DOMAIN_ROLES"] == "risk.example.com=team-risk"
