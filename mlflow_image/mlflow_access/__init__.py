"""Teams as the stack declares them, applied to MLflow's role-based permissions, and nothing else kept.

Each team of `mlflow-platform:access.teams` is one MLflow role named `team-NAME` (in the default
workspace). Its permissions are the team's prefix rules resolved against the experiments and registered
models that exist now; its users are the team's `user:`/`serviceAccount:` members and every user of a
`domain:` member. Roles named `team-*` are the settings' own: a change to them outside the settings is
undone, and a role whose team the settings no longer name is deleted. Grants MLflow makes itself (the
creator's MANAGE) are other roles and stay. This module decides; `__main__` reads and writes MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

ROLE_PREFIX = "team-"
WORKSPACE = "default"
EXPERIMENT, MODEL = "experiment", "registered_model"
# A settings permission -> MLflow's role permission: NO_PERMISSIONS is MLflow's explicit DENY.
ROLE_PERMISSION = {"READ": "READ", "EDIT": "EDIT", "MANAGE": "MANAGE", "NO_PERMISSIONS": "DENY"}

Grant = tuple[str, str]  # (resource type, resource id or name)


@dataclass(frozen=True)
class Team:
    name: str
    members: tuple[str, ...] = ()
    experiments: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, name: str, value: Mapping) -> "Team":
        return cls(name, tuple(m.lower() for m in value.get("members", ())), dict(value.get("experiments", {})),
                   dict(value.get("models", {})))

    @property
    def role(self) -> str:
        return ROLE_PREFIX + self.name

    def named_users(self) -> set[str]:
        """The members that are one identity each (the e-mail IAP's assertion names)."""
        return {m.split(":", 1)[1] for m in self.members if m.startswith(("user:", "serviceAccount:"))}

    def users(self, existing: Iterable[str]) -> set[str]:
        domains = tuple("@" + m.split(":", 1)[1] for m in self.members if m.startswith("domain:"))
        return self.named_users() | {user for user in existing if domains and user.lower().endswith(domains)}

    def grants(self, experiments: Mapping[str, str], models: Iterable[str]) -> dict[Grant, str]:
        """(type, id) -> MLflow permission for what exists now. The settings refuse overlapping prefixes,
        so at most one rule of a kind matches a name."""
        found: dict[Grant, str] = {}
        for experiment_id, name in experiments.items():
            for prefix, permission in self.experiments.items():
                if name.startswith(prefix):
                    found[(EXPERIMENT, experiment_id)] = ROLE_PERMISSION[permission]
        for name in models:
            for prefix, permission in self.models.items():
                if name.startswith(prefix):
                    found[(MODEL, name)] = ROLE_PERMISSION[permission]
        return found


@dataclass(frozen=True)
class Held:
    """One permission a role holds now."""

    id: int
    grant: Grant
    permission: str


@dataclass(frozen=True)
class PermissionChanges:
    add: dict[Grant, str]
    update: dict[int, str]  # role permission id -> permission
    remove: list[int]

    def __bool__(self) -> bool:
        return bool(self.add or self.update or self.remove)


def permission_changes(held: Iterable[Held], desired: Mapping[Grant, str]) -> PermissionChanges:
    held_by_grant = {h.grant: h for h in held}
    return PermissionChanges(
        add={grant: perm for grant, perm in desired.items() if grant not in held_by_grant},
        update={h.id: desired[g] for g, h in held_by_grant.items() if g in desired and desired[g] != h.permission},
        remove=sorted(h.id for g, h in held_by_grant.items() if g not in desired))


def teams_from_settings(value: Mapping) -> list[Team]:
    return [Team.from_settings(name, team) for name, team in sorted(value.items())]


def stale_roles(role_names: Iterable[str], teams: Iterable[Team]) -> list[str]:
    """The settings' roles (`team-*`) whose team is gone."""
    wanted = {team.role for team in teams}
    return sorted(name for name in role_names if name.startswith(ROLE_PREFIX) and name not in wanted)
