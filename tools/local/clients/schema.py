"""Print the schema of each database: tables, columns, indexes, constraints and alembic revision.

Env: DATABASE_URIS, a JSON object name -> SQLAlchemy URI (secrets: never printed).
"""

from __future__ import annotations

import json
import os

import sqlalchemy as sa


def snapshot(uri: str) -> dict:
    engine = sa.create_engine(uri)
    try:
        inspector = sa.inspect(engine)
        tables = {}
        for table in sorted(inspector.get_table_names()):
            tables[table] = {
                "columns": [[c["name"], str(c["type"]), bool(c["nullable"])] for c in inspector.get_columns(table)],
                "indexes": sorted([i["name"], list(i["column_names"]), bool(i["unique"])]
                                  for i in inspector.get_indexes(table)),
                "primary_key": inspector.get_pk_constraint(table).get("constrained_columns"),
                "foreign_keys": sorted([fk.get("name") or "", fk["referred_table"], fk["constrained_columns"]]
                                       for fk in inspector.get_foreign_keys(table)),
            }
        revisions = {}
        with engine.connect() as conn:
            for table in tables:
                if table.startswith("alembic_version"):  # tracking: alembic_version; auth: alembic_version_auth
                    revisions[table] = sorted(row[0] for row in conn.execute(sa.text(f'SELECT version_num FROM "{table}"')))
        return {"tables": tables, "alembic_versions": revisions}
    finally:
        engine.dispose()


def main() -> None:
    uris = json.loads(os.environ["DATABASE_URIS"])
    print(json.dumps({name: snapshot(uri) for name, uri in sorted(uris.items())}, sort_keys=True))


if __name__ == "__main__":
    main()
