"""Logical backup and restore of the two MLflow databases: the exact pg_dump / psql / pg_restore
command lines docs/runbook.md gives and tests/test_backup_restore.py runs.

No password exists for MLflow's databases: against Cloud SQL the host and port are those of a
Cloud SQL Auth Proxy (127.0.0.1:5432) run with `--auto-iam-authn`, which logs the tracking
server's IAM database user in (`NAME@PROJECT.iam`, the owner of MLflow's tables). A password, where
one is needed (the local stand-in's superuser), goes in PGPASSWORD (`pg_env`), never in a command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

from tools.venvs import run_process

DUMP_FORMAT = "--format=custom"
RESTORE_FLAGS = ("--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction")


def _connection(host: str, port: int, user: str, database: str) -> list[str]:
    return ["--host", host, "--port", str(port), "--username", user, "--dbname", database]


def dump_command(bin_dir: Path | str, host: str, port: int, user: str, database: str, out: Path | str) -> list[str]:
    """`pg_dump` of one database to a custom-format archive (compressed, restorable selectively)."""
    return [str(Path(bin_dir) / "pg_dump"), *_connection(host, port, user, database), DUMP_FORMAT, "--file", str(out)]


def recreate_commands(bin_dir: Path | str, host: str, port: int, superuser: str, database: str,
                      owner: str) -> list[str]:
    """`psql` that drops a database (closing its connections) and creates it empty, owned by `owner`
    (Cloud SQL's cloudsqlsuperuser): the database-grants Job then lets the tracking user in again."""
    return [str(Path(bin_dir) / "psql"), *_connection(host, port, superuser, "postgres"), "--no-psqlrc",
            "-v", "ON_ERROR_STOP=1",
            "-c", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
            "-c", f'CREATE DATABASE "{database}" OWNER "{owner}"']


def restore_command(bin_dir: Path | str, host: str, port: int, user: str, database: str,
                    archive: Path | str) -> list[str]:
    """`pg_restore` of an archive into an empty database, every object owned by `user`, all or nothing."""
    return [str(Path(bin_dir) / "pg_restore"), *_connection(host, port, user, database), *RESTORE_FLAGS, str(archive)]


# Before upgrading from MLflow 2.x: the explicit denials its auth database holds. MLflow 3.x's
# auth migration drops them (tests/test_upgrade.py); re-express them before upgrading.
DENIED_GRANTS_SQL = (
    "SELECT u.username, 'experiment', p.experiment_id FROM experiment_permissions p "
    "JOIN users u ON u.id = p.user_id WHERE p.permission = 'NO_PERMISSIONS' "
    "UNION ALL SELECT u.username, 'registered_model', p.name FROM registered_model_permissions p "
    "JOIN users u ON u.id = p.user_id WHERE p.permission = 'NO_PERMISSIONS' ORDER BY 1, 2, 3"
)


def query_command(bin_dir: Path | str, host: str, port: int, user: str, database: str, sql: str) -> list[str]:
    """`psql` printing the rows of one query as `a|b|c` lines."""
    return [str(Path(bin_dir) / "psql"), *_connection(host, port, user, database), "--no-psqlrc", "--no-align",
            "--tuples-only", "-v", "ON_ERROR_STOP=1", "-c", sql]


def pg_env(password: Optional[str] = None, path: Optional[str] = None) -> dict[str, str]:
    env = {"PATH": path or "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PGCONNECT_TIMEOUT": "10"}
    return env | ({"PGPASSWORD": password} if password else {})


def run(argv: Sequence[str], env: Mapping[str, str], timeout: float = 300.0, cwd: Optional[Path] = None) -> str:
    """One client command in its own process group (killed on timeout) that must succeed: stdout, or
    RuntimeError with stderr (no password: it is only in the environment)."""
    code, out, err = run_process(argv, env, timeout=timeout, cwd=cwd)
    if code != 0:
        raise RuntimeError(f"{Path(argv[0]).name} exited with code {code}: {err.strip()[-500:]}")
    return out
