import pulumi_gcp as gcp
import pytest

from infra.database import AUTH_DATABASE, TRACKING_DATABASE, Database, DatabaseArgs, iam_database_username
from infra.settings import DatabaseSettings
from tests.helpers import dig

ARGS = dict(project="test-project-1", region="us-central1", network_id="net-id", labels={"app": "mlflow"})


def build(run_component, **changes):
    """The component with `changes` to its settings."""
    def program():
        connection = gcp.servicenetworking.Connection(
            "psa", network="net-id", service="servicenetworking.googleapis.com", reserved_peering_ranges=["range"])
        database = Database("db", DatabaseArgs(**ARGS, private_services_connection=connection,
                                                 settings=DatabaseSettings(**changes)))
        return {"connection_name": database.connection_name}

    return run_component(program)


def test_instance_has_private_ip_only(run_component):
    instance = build(run_component).named("db-instance")
    ip = dig(instance.inputs, "settings.ipConfiguration")
    assert ip["ipv4Enabled"] is False and ip["privateNetwork"] == "net-id", instance.urn


def test_connections_must_be_encrypted(run_component):
    instance = build(run_component).named("db-instance")
    assert dig(instance.inputs, "settings.ipConfiguration.sslMode") == "ENCRYPTED_ONLY", instance.urn


def test_instance_waits_for_the_servicenetworking_connection(run_component):
    run = build(run_component)
    psa = next(r for r in run.resources if r.name == "psa")
    assert psa.urn in run.named("db-instance").dependencies


def test_postgres_16_with_explicit_edition_and_tier(run_component):
    instance = build(run_component).named("db-instance")
    assert instance.inputs["databaseVersion"] == "POSTGRES_16"
    assert (dig(instance.inputs, "settings.edition"), dig(instance.inputs, "settings.tier")) == ("ENTERPRISE", "db-custom-1-3840")


def test_ha_backups_and_pitr_when_asked(run_component):
    instance = build(run_component, high_availability=True, point_in_time_recovery=True,
                     backup_retention_count=7, log_retention_days=5).named("db-instance")
    assert dig(instance.inputs, "settings.availabilityType") == "REGIONAL"
    backup = dig(instance.inputs, "settings.backupConfiguration")
    assert backup["enabled"] and backup["pointInTimeRecoveryEnabled"] and backup["transactionLogRetentionDays"] == 5


def test_zonal_without_pitr_when_asked(run_component):
    instance = build(run_component, high_availability=False, point_in_time_recovery=False).named("db-instance")
    assert dig(instance.inputs, "settings.availabilityType") == "ZONAL"
    assert dig(instance.inputs, "settings.backupConfiguration.pointInTimeRecoveryEnabled") is False


@pytest.mark.parametrize("protect", [True, False])
def test_deletion_protection_sets_both_switches(run_component, protect):
    instance = build(run_component, deletion_protection=protect).named("db-instance")
    assert instance.inputs["deletionProtection"] is protect
    assert dig(instance.inputs, "settings.deletionProtectionEnabled") is protect


def test_maintenance_window_and_query_insights(run_component):
    instance = build(run_component, maintenance_day="TUE", maintenance_hour=4).named("db-instance")
    assert dig(instance.inputs, "settings.maintenanceWindow") == {"day": 2, "hour": 4, "updateTrack": "stable"}
    assert dig(instance.inputs, "settings.insightsConfig.queryInsightsEnabled") is True


def test_tracking_and_auth_databases_exist(run_component):
    run = build(run_component)
    names = {r.inputs["name"] for r in run.of_type("gcp:sql/database:Database")}
    assert names == {TRACKING_DATABASE, AUTH_DATABASE}


def test_no_password_holding_user_and_iam_logins_on(run_component):
    run = build(run_component)
    assert run.of_type("gcp:sql/user:User") == [] and run.of_type("random:index/randomPassword:RandomPassword") == []
    flags = {flag["name"]: flag["value"] for flag in dig(run.named("db-instance").inputs, "settings.databaseFlags")}
    assert flags["cloudsql.iam_authentication"] == "on"


def test_an_iam_user_is_named_by_its_email_without_the_domain_suffix():
    assert iam_database_username("mlflow-tracking-dev@proj-1.iam.gserviceaccount.com") == "mlflow-tracking-dev@proj-1.iam"
    with pytest.raises(ValueError, match="not a service account email"):
        iam_database_username("someone@example.com")
