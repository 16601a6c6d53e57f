"""Create the database users and the two databases as Cloud SQL does for the Pulumi program.

Cloud SQL's databases belong to its `cloudsqlsuperuser` role; an IAM user is a login role with no
password (the Auth Proxy logs it in with a token; here pg_hba trusts it on 127.0.0.1) and the
database roles the Admin API grants it. Nothing else is granted: the grants Job does the rest.

Env: PG_HOST, PG_PORT, PG_SUPERUSER, PG_SUPERUSER_PASSWORD, DATABASES (comma-separated),
DATABASE_USERS (JSON list of {"name", "type", "roles"}), OWNER_ROLE.
Idempotent: existing roles and databases are kept.
"""

from __future__ import annotations

import json
import os

import psycopg2
from psycopg2 import sql


def ensure_role(cur, name: str, login: bool) -> None:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    if not cur.fetchone():
        cur.execute(sql.SQL("CREATE ROLE {} " + ("LOGIN" if login else "NOLOGIN")).format(sql.Identifier(name)))


def main() -> None:
    conn = psycopg2.connect(host=os.environ["PG_HOST"], port=int(os.environ["PG_PORT"]), dbname="postgres",
                            user=os.environ["PG_SUPERUSER"], password=os.environ["PG_SUPERUSER_PASSWORD"],
                            connect_timeout=10)
    conn.autocommit = True
    owner = os.environ["OWNER_ROLE"]
    users = json.loads(os.environ["DATABASE_USERS"])
    created = []
    with conn.cursor() as cur:
        ensure_role(cur, owner, login=False)
        for user in users:
            if user["type"] != "CLOUD_IAM_SERVICE_ACCOUNT":
                raise SystemExit(f"database user {user['name']!r} has type {user['type']}: "
                                 "the program declares IAM users only")
            ensure_role(cur, user["name"], login=True)
            for role in user["roles"]:
                cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(user["name"])))
        for database in os.environ["DATABASES"].split(","):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if not cur.fetchone():
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                          sql.Identifier(owner)))
                created.append(database)
    conn.close()
    print(json.dumps({"users": [user["name"] for user in users], "created": created}))


if __name__ == "__main__":
    main()
