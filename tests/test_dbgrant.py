"""The database-grants Job (mlflow_image/mlflow_dbgrant): it fails, naming the role and the fix, when
the tracking user holds Cloud SQL's admin role. No database: the grant itself is faked here and run
for real by tests/test_local_e2e.py."""

from __future__ import annotations

import sys

import pytest

sys.path.insert(0, "mlflow_image")
import mlflow_dbgrant.__main__ as command  # noqa: E402

GRANTEE = "mlflow-tracking-dev@my-proj-123.iam"
ARGS = ["--url-env", "ADMIN_URI", "--grantee", GRANTEE, "--database", "mlflow", "--database", "mlflow_auth",
        "--timeout", "5"]


@pytest.fixture
def granted(monkeypatch) -> list[str]:
    monkeypatch.setenv("ADMIN_URI", "postgresql+psycopg2://admin@127.0.0.1:5432/postgres")
    databases: list[str] = []
    monkeypatch.setattr(command, "grant", lambda url, database, grantee: databases.append(database) or False)
    return databases


def test_the_job_grants_on_every_database_and_succeeds(granted, capsys):
    assert command.main(ARGS) == 0
    assert granted == ["mlflow", "mlflow_auth"]
    assert capsys.readouterr().err == ""


def test_an_admin_role_member_fails_the_job_naming_the_role_and_the_fix(monkeypatch, granted, capsys):
    monkeypatch.setattr(command, "grant", lambda url, database, grantee: True)
    assert command.main(ARGS) == command.EXIT_ADMIN_MEMBER != 0
    err = capsys.readouterr().err
    assert f"{GRANTEE} is a member of cloudsqlsuperuser" in err
    assert f"gcloud sql users assign-roles {GRANTEE} --instance=INSTANCE" in err
    assert f'REVOKE cloudsqlsuperuser FROM "{GRANTEE}"' in err


def test_the_grants_job_fails_at_once_on_this_exit_status():
    from k8s.tracking import GRANTS_EXIT_ADMIN_MEMBER

    assert GRANTS_EXIT_ADMIN_MEMBER == command.EXIT_ADMIN_MEMBER
