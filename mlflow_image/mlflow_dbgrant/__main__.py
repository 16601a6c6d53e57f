"""`python -m mlflow_dbgrant --url-env DATABASE_ADMIN_URI --grantee USER --database mlflow ... --timeout 420`

The admin URI (read from the named environment variable; it holds no password) names the proxy and
the database-admin user; each database is connected to in turn. Waits for each as the migration
Job does (mlflow_dbwait's bounded retries), then grants. Idempotent: granting again changes nothing.
Fails (exit 3) when the grantee holds the admin role: then the migrations, which wait for this Job,
never run as an identity that owns every database of the instance.
"""

from __future__ import annotations

import argparse
import os
import sys

from mlflow_dbgrant import ADMIN_MEMBERSHIP, ADMIN_ROLE, grant_statements
from mlflow_dbwait import DatabaseUnavailable, Retry, wait_for


EXIT_ADMIN_MEMBER = 3


def admin_member_message(grantee: str) -> str:
    """What an operator reads in the Job's log: the role, why it must go, how to revoke it."""
    return (f"grant: {grantee} is a member of {ADMIN_ROLE}, which owns every database the Admin API created: "
            f"the tracking server must not hold it. Revoke it (gcloud sql users assign-roles {grantee} "
            f"--instance=INSTANCE --type=CLOUD_IAM_SERVICE_ACCOUNT --revoke-existing-roles, or as a member of "
            f"{ADMIN_ROLE}: REVOKE {ADMIN_ROLE} FROM \"{grantee}\"), then run this Job again "
            "(pulumi up --target-replace on it)")


def grant(admin_url: str, database: str, grantee: str) -> bool:
    """Grant; whether the grantee also holds the admin role (more than MLflow needs)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    engine = create_engine(make_url(admin_url).set(database=database), poolclass=NullPool,
                           isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 10})
    try:
        with engine.connect() as connection:
            quote = engine.dialect.identifier_preparer.quote_identifier
            for statement in grant_statements(database, grantee, quote):
                connection.execute(text(statement))
            return bool(connection.execute(text(ADMIN_MEMBERSHIP), {"grantee": grantee}).scalar())
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlflow_dbgrant", description=__doc__)
    parser.add_argument("--url-env", required=True, help="environment variable holding the admin's SQLAlchemy URI")
    parser.add_argument("--grantee", required=True, help="database user of the tracking server")
    parser.add_argument("--database", action="append", required=True, help="repeat for each database")
    parser.add_argument("--timeout", type=float, required=True, help="seconds to keep trying each database")
    args = parser.parse_args(argv)
    admin_url = os.environ.get(args.url_env)
    if not admin_url:
        print(f"grant: ${args.url_env} is empty", file=sys.stderr, flush=True)
        return 2
    admin_in: list[str] = []
    for database in args.database:
        def attempt() -> None:
            if grant(admin_url, database, args.grantee):
                admin_in.append(database)
        try:
            wait_for(attempt, Retry(budget=args.timeout), log=lambda line: print(f"grant on {database}: {line}", flush=True))
        except DatabaseUnavailable as err:
            print(f"grant on {database}: giving up: {err}", file=sys.stderr, flush=True)
            return 1
        print(f"grant on {database}: {args.grantee} may connect and create in schema public", flush=True)
    if admin_in:
        print(admin_member_message(args.grantee), file=sys.stderr, flush=True)
        return EXIT_ADMIN_MEMBER
    return 0


if __name__ == "__main__":
    sys.exit(main())
