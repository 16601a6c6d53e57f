"""Grants a workload's IAM database user exactly what MLflow needs on its databases.

Cloud SQL gives a new IAM user no privilege beyond PUBLIC's, and since PostgreSQL 15 PUBLIC may
not create objects in `public`; the databases belong to `cloudsqlsuperuser`. The database-admin
identity (a member of that role, through the Admin API's database roles) runs this once per
image version, with no password: the Auth Proxy logs it in with its Workload Identity. MLflow's
migrations then create, and own, every table they touch.
"""

from __future__ import annotations

from typing import Callable

# Connect and use temporary tables; create (and so own) tables, indexes and sequences in `public`.
GRANTS = (
    "GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {grantee}",
    "GRANT USAGE, CREATE ON SCHEMA public TO {grantee}",
)


ADMIN_ROLE = "cloudsqlsuperuser"
# Write-only on the Admin API: never read back, so a grantee that holds the admin role (given outside
# the program) goes unnoticed unless this asks.
ADMIN_MEMBERSHIP = "SELECT pg_has_role(:grantee, '" + ADMIN_ROLE + "', 'MEMBER')"


def grant_statements(database: str, grantee: str, quote: Callable[[str], str]) -> list[str]:
    """The statements for one database, identifiers quoted by `quote` (the driver's)."""
    return [statement.format(database=quote(database), grantee=quote(grantee)) for statement in GRANTS]
