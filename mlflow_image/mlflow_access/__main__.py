"""`python -m mlflow_access`: apply `mlflow-platform:access.teams` to MLflow (see the package docstring).

Idempotent: run by a Job whenever the teams change, and on a schedule so that experiments, models and
people of a `domain:` member that appeared since are covered. The Job and a scheduled run may overlap:
a write the other run made first ("already exists", "does not exist") counts as done, so both converge. Environment: MLFLOW_TRACKING_URI,
MLFLOW_TRACKING_USERNAME / _PASSWORD (the admin), ACCESS_TEAMS (the teams as JSON).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from typing import Callable

from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request, verify_rest_response

from mlflow_access import WORKSPACE, Held, Team, permission_changes, stale_roles, teams_from_settings

ALREADY, GONE = "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"


def raced(done_code: str, write: Callable[..., object], *args) -> None:
    """`write(*args)`; the error saying an overlapping run already made it (`done_code`) is success."""
    try:
        write(*args)
    except MlflowException as err:
        if err.error_code != done_code:
            raise


def existing_users(tracking_uri: str) -> dict[str, int]:
    """Every MLflow user's id, by name (the basic-auth app's admin-only `users/list`, which its client does not wrap)."""
    response = http_request(get_default_host_creds(tracking_uri), "/api/2.0/mlflow/users/list", "GET")
    return {user["username"]: user["id"] for user in verify_rest_response(response, "users/list").json()["users"]}


def experiments_by_id(client: MlflowClient) -> dict[str, str]:
    found, token = {}, None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
        found.update({e.experiment_id: e.name for e in page})
        token = page.token
        if not token:
            return found


def model_names(client: MlflowClient) -> list[str]:
    found, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        found += [model.name for model in page]
        token = page.token
        if not token:
            return found


def ensure_users(auth, names: set[str], existing: dict[str, int]) -> None:
    """A named member who has not signed in yet becomes a user now (random password, never handed out),
    so the role can be assigned; their first sign-in through IAP finds it."""
    for name in sorted(names - set(existing)):
        raced(ALREADY, auth.create_user, name, secrets.token_urlsafe(32))


def team_role(auth, team: Team, roles: dict):
    if team.role in roles:
        return roles[team.role]
    raced(ALREADY, auth.create_role, WORKSPACE, team.role, f"mlflow-platform:access.teams.{team.name}")
    return next(role for role in auth.list_roles(WORKSPACE) if role.name == team.role)


def apply_team(auth, team: Team, roles: dict, users: dict[str, int], experiments: dict[str, str], models: list[str]) -> str:
    role = team_role(auth, team, roles)
    held = [Held(p.id, (p.resource_type, p.resource_pattern), p.permission) for p in auth.list_role_permissions(role.id)]
    changes = permission_changes(held, team.grants(experiments, models))
    for permission_id in changes.remove:
        raced(GONE, auth.remove_role_permission, permission_id)
    for permission_id, permission in changes.update.items():
        raced(GONE, auth.update_role_permission, permission_id, permission)
    for (resource_type, resource), permission in changes.add.items():
        raced(ALREADY, auth.add_role_permission, role.id, resource_type, resource, permission)
    wanted = team.users(users)
    current = {assignment.user_id for assignment in auth.list_role_users(role.id)}
    by_id = {user_id: user for user, user_id in users.items()}
    # A user unknown to this run signed in since it listed users: the next run decides about them.
    for user_id in sorted((current & set(by_id)) - {users[user] for user in wanted}):
        raced(GONE, auth.unassign_role, by_id[user_id], role.id)
    for user in sorted(wanted):
        if users[user] not in current:
            raced(ALREADY, auth.assign_role, user, role.id)
    return (f"{team.role}: +{len(changes.add)} ~{len(changes.update)} -{len(changes.remove)} permissions, "
            f"{len(wanted)} users")


def main() -> int:
    from mlflow.server import get_app_client  # loads the server's stores: only where the Job runs

    tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    teams = teams_from_settings(json.loads(os.environ["ACCESS_TEAMS"]))
    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    ensure_users(auth, set().union(*(team.named_users() for team in teams)), existing_users(tracking_uri))
    users = existing_users(tracking_uri)
    experiments, models = experiments_by_id(client), model_names(client)
    roles = {role.name: role for role in auth.list_roles(WORKSPACE)}
    for team in teams:
        print(apply_team(auth, team, roles, users, experiments, models), flush=True)
    for name in delete_stale_roles(auth, roles, teams):
        print(f"{name}: deleted (no such team in the settings)", flush=True)
    return 0


def delete_stale_roles(auth, roles: dict, teams: list[Team]) -> list[str]:
    names = stale_roles(roles, teams)
    for name in names:
        raced(GONE, auth.delete_role, roles[name].id)
    return names


if __name__ == "__main__":
    sys.exit(main())
