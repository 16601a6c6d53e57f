"""Cloud SQL for PostgreSQL: the MLflow backend store and the basic-auth user store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from infra.naming import child_options
from infra.settings import DatabaseSettings

POSTGRES_VERSION = "POSTGRES_16"
TRACKING_DATABASE = "mlflow"
AUTH_DATABASE = "mlflow_auth"
# Cloud SQL's own role: owns the databases the Admin API creates (so their `public` schemas) and can
# grant on them. Only the database-admin identity gets it; workloads get exactly their grants.
DATABASE_ADMIN_ROLE = "cloudsqlsuperuser"
SERVICE_ACCOUNT_EMAIL_SUFFIX = ".gserviceaccount.com"
# CIS benchmark logging flags; cheap and what auditors ask for first.
DATABASE_FLAGS = {
    "log_checkpoints": "on",
    "log_connections": "on",
    "log_disconnections": "on",
    "log_lock_waits": "on",
    "log_temp_files": "0",
    "log_min_duration_statement": "-1",
    "cloudsql.enable_pgaudit": "off",
    # Workloads log in as their Workload Identity (the Auth Proxy's --auto-iam-authn): no password.
    "cloudsql.iam_authentication": "on",
}


def iam_database_username(service_account_email: str) -> str:
    """The Postgres user Cloud SQL creates for a service account: its email without the
    `.gserviceaccount.com` suffix (the full email is refused as a user name)."""
    if not service_account_email.endswith(SERVICE_ACCOUNT_EMAIL_SUFFIX):
        raise ValueError(f"{service_account_email!r} is not a service account email")
    return service_account_email.removesuffix(SERVICE_ACCOUNT_EMAIL_SUFFIX)


def iam_database_user(name: str, *, project: str, instance: pulumi.Input[str],
                      service_account_email: pulumi.Input[str], database_roles: tuple[str, ...] = (),
                      opts: Optional[pulumi.ResourceOptions] = None) -> gcp.sql.User:
    """A service account as a database user (IAM authentication: it holds no password).

    `database_roles` are granted by the Admin API itself (write-only: never read back). A new IAM
    user gets no privilege on any database object beyond what PUBLIC has."""
    return gcp.sql.User(
        name,
        project=project,
        instance=instance,
        name=pulumi.Output.from_input(service_account_email).apply(iam_database_username),
        type="CLOUD_IAM_SERVICE_ACCOUNT",
        database_roles=list(database_roles) or None,
        # Postgres refuses to drop a role that owns objects; the instance's deletion removes it.
        deletion_policy="ABANDON",
        opts=opts,
    )


@dataclass(frozen=True)
class DatabaseArgs:
    project: str
    """GCP project."""
    region: str
    """Region of the instance."""
    network_id: pulumi.Input[str]
    """VPC the private IP lives in."""
    private_services_connection: pulumi.Resource
    """The servicenetworking connection; the instance cannot get a private IP before it exists."""
    settings: DatabaseSettings
    """Tier, edition, size, availability, backups, deletion protection, maintenance window."""
    labels: dict[str, str]
    """User labels of the instance."""
    protect: bool = True
    """Pulumi refuses to delete or replace the instance and its databases (`protect`): `pulumi destroy`
    then fails in its preview, before it deletes anything."""
    encryption_key_id: Optional[pulumi.Input[str]] = None
    """Cloud KMS key for the instance's disks and backups (CMEK); None: Google-managed."""
    encryption_key_ready: tuple[pulumi.Resource, ...] = ()
    """What the instance waits for: the key's grant to Cloud SQL's service agent, propagated."""


class Database(pulumi.ComponentResource):
    """A private-IP-only Postgres instance with the two MLflow databases and no password-holding user:
    workloads add themselves as IAM users (`iam_database_user`)."""

    instance_name: pulumi.Output[str]
    connection_name: pulumi.Output[str]
    private_ip_address: pulumi.Output[str]
    tracking_database: pulumi.Output[str]
    """Name of MLflow's tracking database, once it exists."""
    auth_database: pulumi.Output[str]
    """Name of the basic-auth app's database, once it exists."""

    def __init__(self, name: str, args: DatabaseArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("mlflow:database:Database", name, None, opts)
        kept = child_options(self, opts, protect=args.protect)

        instance = gcp.sql.DatabaseInstance(
            f"{name}-instance",
            project=args.project,
            region=args.region,
            database_version=POSTGRES_VERSION,
            encryption_key_name=args.encryption_key_id,
            deletion_protection=args.settings.deletion_protection,
            settings=instance_settings(args),
            opts=child_options(self, opts, depends_on=[args.private_services_connection,
                                                       *args.encryption_key_ready], protect=args.protect),
        )
        databases = {
            database: gcp.sql.Database(
                f"{name}-{database.replace('_', '-')}",
                project=args.project,
                instance=instance.name,
                name=database,
                opts=kept,
            ).name
            for database in (TRACKING_DATABASE, AUTH_DATABASE)
        }
        self.instance_name = instance.name
        self.connection_name = instance.connection_name
        self.private_ip_address = instance.private_ip_address
        self.tracking_database = databases[TRACKING_DATABASE]
        self.auth_database = databases[AUTH_DATABASE]
        self.register_outputs({
            "instance_name": self.instance_name,
            "connection_name": self.connection_name,
            "private_ip_address": self.private_ip_address,
            "tracking_database": self.tracking_database,
            "auth_database": self.auth_database,
        })


def instance_settings(args: DatabaseArgs) -> gcp.sql.DatabaseInstanceSettingsArgs:
    """Private IP only and TLS only; backups, maintenance and Query Insights as the stack asks."""
    db = args.settings
    return gcp.sql.DatabaseInstanceSettingsArgs(
        tier=db.tier,
        edition=db.edition,
        availability_type="REGIONAL" if db.high_availability else "ZONAL",
        disk_type="PD_SSD",
        disk_size=db.disk_size_gb,
        disk_autoresize=True,
        deletion_protection_enabled=db.deletion_protection,
        user_labels=args.labels,
        ip_configuration=gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs(
            ipv4_enabled=False,
            private_network=args.network_id,
            ssl_mode="ENCRYPTED_ONLY",
            enable_private_path_for_google_cloud_services=True,
        ),
        backup_configuration=gcp.sql.DatabaseInstanceSettingsBackupConfigurationArgs(
            enabled=db.backups,
            point_in_time_recovery_enabled=db.point_in_time_recovery,
            start_time="02:00",
            transaction_log_retention_days=db.log_retention_days,
            backup_retention_settings=gcp.sql.DatabaseInstanceSettingsBackupConfigurationBackupRetentionSettingsArgs(
                retained_backups=db.backup_retention_count, retention_unit="COUNT",
            ),
        ),
        maintenance_window=gcp.sql.DatabaseInstanceSettingsMaintenanceWindowArgs(
            day=db.maintenance_day_number, hour=db.maintenance_hour, update_track="stable",
        ),
        insights_config=gcp.sql.DatabaseInstanceSettingsInsightsConfigArgs(
            query_insights_enabled=True,
            query_string_length=1024,
            record_application_tags=True,
            record_client_address=False,
        ),
        database_flags=[
            gcp.sql.DatabaseInstanceSettingsDatabaseFlagArgs(name=flag, value=value)
            for flag, value in DATABASE_FLAGS.items()
        ],
    )
