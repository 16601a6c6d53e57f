"""Create the database user and the two databases, as the Pulumi program does on Cloud SQL.

Env: PG_HOST, PG_PORT, PG_SUPERUSER, PG_SUPERUSER_PASSWORD, DB_USER, DB_PASSWORD, DATABASES (comma-separated).
Idempotent: an existing role gets the password again, existing databases are kept.
"""

from __future__ import annotations

import json
import os

import psycopg2
from psycopg2 import sql


def main() -> None:
    conn = psycopg2.connect(host=os.environ["PG_HOST"], port=int(os.environ["PG_PORT"]), dbname="postgres",
                            user=os.environ["PG_SUPERUSER"], password=os.environ["PG_SUPERUSER_PASSWORD"],
                            connect_timeout=10)
    conn.autocommit = True
    user, password = os.environ["DB_USER"], os.environ["DB_PASSWORD"]
    created = []
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(user)), (password,))
        for database in os.environ["DATABASES"].split(","):
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if not cur.fetchone():
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database),
                                                                          sql.Identifier(user)))
                created.append(database)
    conn.close()
    print(json.dumps({"user": user, "created": created}))


if __name__ == "__main__":
    main()
