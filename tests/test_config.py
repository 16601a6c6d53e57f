"""The settings model: good stacks load, every bad stack is refused with key, value and what is allowed."""

from __future__ import annotations

import dataclasses

import pulumi
import pytest

from infra import cloud_rules
from infra.cloud_rules import NAME_RULES
from infra.config import (NAME_PREFIX_MAX_LENGTH, ConfigError, Settings, config_keys, load_settings,
                          settings_from_values)
from tools.offline.stack import ROOT, read_stack_config, run_program

NS = "mlflow-platform"
VALID = {"gcp:project": "my-proj-123", f"{NS}:environment": "dev"}
PROD_VALID = {
    "gcp:project": "my-proj-123", f"{NS}:environment": "prod", f"{NS}:dbPointInTimeRecovery": "true",
    f"{NS}:controlPlaneEndpoint": "dns", f"{NS}:cmek": "true",
}


def refusal(values: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from_values(values)
    return str(caught.value)


BAD_CONFIGS = {
    # name: (changes to a valid dev stack, key named in the error, phrase of what is allowed)
    "missing_gcp_project": ({"gcp:project": None}, "gcp:project", "required setting is missing"),
    "malformed_gcp_project": ({"gcp:project": "My_Project"}, "gcp:project", "lowercase letters"),
    "unknown_region": ({"gcp:region": "mars-north1"}, "gcp:region", "us-central1"),
    "zone_outside_region": ({"gcp:zone": "europe-west1-b"}, "gcp:zone", "us-central1-a"),
    "unknown_environment": ({f"{NS}:environment": "staging"}, f"{NS}:environment", "'dev' or 'prod'"),
    "malformed_cidr": ({f"{NS}:subnetCidr": "10.10.0.0/33"}, f"{NS}:subnetCidr", "CIDR form"),
    "cidr_with_host_bits": ({f"{NS}:podsCidr": "10.16.0.1/14"}, f"{NS}:podsCidr", "no host bits"),
    "overlapping_cidrs": ({f"{NS}:servicesCidr": "10.10.8.0/24"}, f"{NS}:subnetCidr", "overlaps mlflow-platform:servicesCidr"),
    "master_cidr_not_28": ({f"{NS}:masterCidr": "172.16.0.0/24"}, f"{NS}:masterCidr", "exactly /28"),
    "private_services_too_small": ({f"{NS}:privateServicesCidr": "10.64.0.0/29"}, f"{NS}:privateServicesCidr", "/24 or larger"),
    "bad_authorized_cidr": ({f"{NS}:masterAuthorizedCidrs": ["1.2.3.4/8"]}, f"{NS}:masterAuthorizedCidrs", "no host bits"),
    "min_nodes_above_max": ({f"{NS}:minNodes": "5", f"{NS}:maxNodes": "3"}, f"{NS}:minNodes", "must be <= mlflow-platform:maxNodes"),
    "batch_size_zero": ({f"{NS}:servingMaxBatchSize": "0"}, f"{NS}:servingMaxBatchSize", "between 1 and 10000"),
    "batch_delay_too_long": ({f"{NS}:servingMaxBatchDelayMs": "250"}, f"{NS}:servingMaxBatchDelayMs", "between 0 and 100"),
    "serving_min_nodes_above_max": ({f"{NS}:servingMinNodes": "4", f"{NS}:servingMaxNodes": "2"}, f"{NS}:servingMinNodes", "<= mlflow-platform:servingMaxNodes"),
    "unknown_machine_family": ({f"{NS}:machineType": "m9-standard-4"}, f"{NS}:machineType", "FAMILY one of e2"),
    "malformed_machine_type": ({f"{NS}:machineType": "big"}, f"{NS}:machineType", "unknown machine type"),
    "unknown_db_tier_format": ({f"{NS}:dbTier": "db-n1-standard-1"}, f"{NS}:dbTier", "db-custom-<vCPUs>-<MiB>"),
    "db_custom_memory_out_of_range": ({f"{NS}:dbTier": "db-custom-1-65536"}, f"{NS}:dbTier", "0.9-6.5 GiB per vCPU"),
    "shared_core_tier_on_enterprise_plus": ({f"{NS}:dbEdition": "ENTERPRISE_PLUS"}, f"{NS}:dbTier", "accepts only db-perf-optimized"),
    "perf_tier_on_enterprise": ({f"{NS}:dbTier": "db-perf-optimized-N-2"}, f"{NS}:dbTier", "need db_edition ENTERPRISE_PLUS"),
    "log_retention_beyond_edition": ({f"{NS}:dbLogRetentionDays": "14"}, f"{NS}:dbLogRetentionDays", "between 1 and 7 for edition ENTERPRISE"),
    "pitr_without_backups": ({f"{NS}:dbBackups": "false", f"{NS}:dbPointInTimeRecovery": "true"}, f"{NS}:dbPointInTimeRecovery", "needs mlflow-platform:dbBackups=true"),
    "ha_on_shared_core": ({f"{NS}:dbTier": "db-f1-micro", f"{NS}:dbHighAvailability": "true"}, f"{NS}:dbHighAvailability", "no high availability"),
    "zero_tracking_replicas": ({f"{NS}:trackingReplicas": "0"}, f"{NS}:trackingReplicas", "between 1 and 20"),
    "negative_serving_replicas": ({f"{NS}:servingMinReplicas": "-1"}, f"{NS}:servingMinReplicas", "between 1 and 100"),
    "serving_min_replicas_above_max": ({f"{NS}:servingMinReplicas": "5", f"{NS}:servingMaxReplicas": "2"}, f"{NS}:servingMinReplicas", "<= mlflow-platform:servingMaxReplicas"),
    "nearline_days_zero": ({f"{NS}:artifactNearlineAfterDays": "0"}, f"{NS}:artifactNearlineAfterDays", "between 1 and 3650"),
    "noncurrent_days_too_many": ({f"{NS}:noncurrentRetentionDays": "4000"}, f"{NS}:noncurrentRetentionDays", "between 1 and 3650"),
    "replicas_not_a_number": ({f"{NS}:trackingReplicas": "two"}, f"{NS}:trackingReplicas", "valid integer"),
    "unknown_release_channel": ({f"{NS}:releaseChannel": "BETA"}, f"{NS}:releaseChannel", "'RAPID', 'REGULAR' or 'STABLE'"),
    "unknown_auth_permission": ({f"{NS}:authDefaultPermission": "ALL"}, f"{NS}:authDefaultPermission", "'NO_PERMISSIONS'"),
    "prebuilt_image_by_tag": ({f"{NS}:trackingImage": "repo/mlflow:latest"}, f"{NS}:trackingImage", "by digest"),
    "ingress_host_not_fqdn": ({f"{NS}:ingressHost": "mlflow"}, f"{NS}:ingressHost", "fully qualified"),
    "alias_like_version": ({f"{NS}:modelAlias": "v2"}, f"{NS}:modelAlias", "not of the form vN"),
    "bad_memory_quantity": ({f"{NS}:trackingMemory": "1GB"}, f"{NS}:trackingMemory", "in Mi or Gi"),
    "unknown_setting": ({f"{NS}:minNode": "1"}, f"{NS}:minNode", "unknown setting"),
    # GCP's own rules (infra/cloud_rules.py), which mocks cannot see
    "internal_ip_reserved_by_gcp": ({f"{NS}:trackingInternalIp": "10.10.15.254"}, f"{NS}:trackingInternalIp", "reserved by GCP"),
    "internal_ip_is_the_gateway": ({f"{NS}:trackingInternalIp": "10.10.0.1"}, f"{NS}:trackingInternalIp", "reserved by GCP"),
    "internal_ip_outside_subnet": ({f"{NS}:trackingInternalIp": "10.11.0.5"}, f"{NS}:trackingInternalIp", "must lie in the subnet 10.10.0.0/20"),
    "internal_ip_malformed": ({f"{NS}:trackingInternalIp": "10.10.0.300"}, f"{NS}:trackingInternalIp", "IPv4 address"),
    "c4_with_persistent_disk": ({f"{NS}:machineType": "c4-standard-4", f"{NS}:nodeDiskType": "pd-balanced"}, f"{NS}:nodeDiskType", "allowed: hyperdisk-balanced"),
    "n4_serving_with_ssd": ({f"{NS}:servingMachineType": "n4-standard-8", f"{NS}:servingNodeDiskType": "pd-ssd"}, f"{NS}:servingNodeDiskType", "allowed: hyperdisk-balanced"),
    "hyperdisk_on_e2": ({f"{NS}:nodeDiskType": "hyperdisk-balanced"}, f"{NS}:nodeDiskType", "allowed: pd-balanced, pd-ssd"),
    "log_retention_beyond_backups": ({f"{NS}:dbBackupRetentionCount": "3", f"{NS}:dbLogRetentionDays": "5"}, f"{NS}:dbLogRetentionDays", "must be <= the backups kept (3)"),
    "unknown_control_plane_endpoint": ({f"{NS}:controlPlaneEndpoint": "private"}, f"{NS}:controlPlaneEndpoint", "'ip' or 'dns'"),
    "unknown_disk_type": ({f"{NS}:nodeDiskType": "pd-standard"}, f"{NS}:nodeDiskType", "'hyperdisk-balanced'"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_is_refused_naming_key_and_allowed_values(name):
    changes, key, allowed = BAD_CONFIGS[name]
    values = {k: v for k, v in {**VALID, **changes}.items() if v is not None}
    message = refusal(values)
    assert key in message, f"{name}: error does not name {key}:\n{message}"
    assert allowed in message, f"{name}: error does not say {allowed!r}:\n{message}"


def test_bad_value_is_quoted_in_the_error():
    message = refusal({**VALID, f"{NS}:machineType": "m9-standard-4"})
    assert "'m9-standard-4'" in message


def test_prod_refuses_a_control_plane_open_to_the_internet():
    message = refusal({**PROD_VALID, f"{NS}:controlPlaneEndpoint": "ip"})
    assert f"{NS}:masterAuthorizedCidrs = []: must list the ranges you deploy from" in message
    assert f"or set {NS}:controlPlaneEndpoint=dns" in message
    for closed in ({f"{NS}:controlPlaneEndpoint": "dns"}, {f"{NS}:masterAuthorizedCidrs": '["203.0.113.0/24"]'}):
        assert settings_from_values({**PROD_VALID, **closed}).environment == "prod"


def test_equal_backup_and_log_retention_is_accepted_as_cloud_sql_defaults_are():
    settings = settings_from_values({**VALID, f"{NS}:dbBackupRetentionCount": "7", f"{NS}:dbLogRetentionDays": "7"})
    assert (settings.db_backup_retention_count, settings.db_log_retention_days) == (7, 7)


@pytest.mark.parametrize("machine_type, disk_type", [("e2-standard-4", "pd-balanced"), ("c3-standard-4", "pd-balanced"),
                                                     ("c4-standard-4", "hyperdisk-balanced"),
                                                     ("n4-standard-8", "hyperdisk-balanced")])
def test_auto_boot_disk_is_one_the_machine_series_takes(machine_type, disk_type):
    settings = settings_from_values({**VALID, f"{NS}:machineType": machine_type})
    assert settings.boot_disk_type("platform") == disk_type


@pytest.mark.parametrize("subnet", ["10.10.0.0/20", "10.0.0.0/24", "192.168.4.0/22"])
def test_default_internal_lb_address_is_never_one_gcp_reserves(subnet):
    settings = settings_from_values({**VALID, f"{NS}:subnetCidr": subnet})
    assert settings.tracking_lb_address not in cloud_rules.reserved_addresses(subnet)
    assert cloud_rules.internal_address_problem(subnet, settings.tracking_lb_address) is None


@pytest.mark.parametrize("key", ["clusterDeletionProtection", "dbDeletionProtection", "dbBackups", "dbPointInTimeRecovery"])
def test_prod_refuses_unprotected_or_unbacked_up(key):
    values = {**PROD_VALID, f"{NS}:{key}": "false"}
    if key == "dbBackups":
        values[f"{NS}:dbPointInTimeRecovery"] = "false"
    message = refusal(values)
    assert f"{NS}:{key} = False: must be true when environment is prod" in message


def test_prod_refuses_force_destroyed_bucket():
    message = refusal({**PROD_VALID, f"{NS}:bucketForceDestroy": "true"})
    assert f"{NS}:bucketForceDestroy = True: must be false when environment is prod" in message
    assert f"a deliberate teardown sets {NS}:decommission=true first" in message


def test_decommissioned_prod_may_lift_its_deletion_protection_and_nothing_else():
    lifted = {**PROD_VALID, f"{NS}:decommission": "true", f"{NS}:clusterDeletionProtection": "false",
              f"{NS}:dbDeletionProtection": "false", f"{NS}:bucketForceDestroy": "true"}
    assert settings_from_values(lifted).protect is False
    message = refusal({**lifted, f"{NS}:dbBackups": "false", f"{NS}:dbPointInTimeRecovery": "false"})
    assert f"{NS}:dbBackups = False: must be true when environment is prod" in message


@pytest.mark.parametrize("values,protect", [
    ({}, True),
    ({f"{NS}:clusterDeletionProtection": "false"}, True),
    ({f"{NS}:dbDeletionProtection": "false"}, True),
    ({f"{NS}:clusterDeletionProtection": "false", f"{NS}:dbDeletionProtection": "false"}, False),
])
def test_pulumi_protects_the_stateful_resources_wherever_deletion_protection_is_on(values, protect):
    assert settings_from_values({**VALID, **values}).protect is protect


def test_every_problem_is_reported_at_once():
    message = refusal({**VALID, f"{NS}:minNodes": "9", f"{NS}:trackingReplicas": "0"})
    assert f"{NS}:minNodes" in message and f"{NS}:trackingReplicas" in message


def test_serving_cluster_ranges_must_not_overlap_when_enabled():
    overlapping = {**VALID, f"{NS}:servingPodsCidr": "10.16.0.0/16"}
    settings_from_values(overlapping)  # unused ranges may overlap
    message = refusal({**overlapping, f"{NS}:servingCluster": "true"})
    assert f"{NS}:podsCidr" in message and "servingPodsCidr" in message


def test_defaults_are_valid_and_frozen():
    settings = settings_from_values(VALID)
    assert settings.db_edition == "ENTERPRISE" and settings.db_tier.startswith("db-custom-")
    with pytest.raises(Exception):
        settings.min_nodes = 7


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stack_files_are_valid(stack):
    config, _ = read_stack_config(stack)
    settings = settings_from_values(config)
    assert settings.environment == stack


def test_cluster_location_is_zone_unless_regional():
    assert settings_from_values(VALID).cluster_location == "us-central1-a"
    regional = settings_from_values({**VALID, f"{NS}:regionalCluster": "true"})
    assert regional.cluster_location == "us-central1"


def test_load_settings_reads_pulumi_config_and_fails_before_any_resource():
    declared = []

    def program():
        load_settings()
        declared.append(pulumi.ComponentResource("mlflow:test:Never", "never"))
        return {}

    with pytest.raises(ConfigError, match="gcp:project: required setting is missing"):
        run_program("dev", {f"{NS}:environment": "dev"}, program=program)
    assert declared == []


def test_load_settings_parses_types_from_config_strings():
    seen: list[Settings] = []
    run_program("dev", {**VALID, f"{NS}:minNodes": "2", f"{NS}:spotNodes": "true",
                        f"{NS}:masterAuthorizedCidrs": '["203.0.113.0/24"]'},
                program=lambda: seen.append(load_settings()) or {})
    assert (seen[0].min_nodes, seen[0].spot_nodes, seen[0].master_authorized_cidrs) == (2, True, ("203.0.113.0/24",))


def test_load_settings_refuses_unknown_keys_in_the_stack():
    with pytest.raises(ConfigError, match=f"{NS}:macineType: unknown setting"):
        run_program("dev", {**VALID, f"{NS}:macineType": "e2-standard-4"}, program=lambda: load_settings() and {})


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stack_files_show_every_setting(stack):
    config, _ = read_stack_config(stack)
    for key in config_keys().values():
        assert key in config, f"Pulumi.{stack}.yaml lacks {key}"


def test_a_prefix_that_makes_a_service_account_id_too_long_is_refused_naming_the_prefix(monkeypatch):
    # Every 3-12 char prefix fits today's roles; a longer role shows the rule the model applies.
    monkeypatch.setattr("infra.config.SERVICE_ACCOUNT_ROLES", ("model-registry-sync",))
    message = refusal({**PROD_VALID, f"{NS}:namePrefix": "platformteam"})
    assert f"{NS}:namePrefix = 'platformteam'" in message and "platformteam-model-registry-sync-prod" in message
    assert "6-30" in message


def test_a_prefix_longer_than_every_name_allows_is_refused_naming_the_setting_and_the_length():
    message = refusal({**VALID, f"{NS}:namePrefix": "x" * (NAME_PREFIX_MAX_LENGTH + 1)})
    assert f"{NS}:namePrefix = '{'x' * (NAME_PREFIX_MAX_LENGTH + 1)}'" in message
    assert f"3-{NAME_PREFIX_MAX_LENGTH} chars" in message


def test_a_prefix_that_makes_the_bucket_name_too_long_is_refused_naming_the_prefix(monkeypatch):
    # Every prefix fits a 30-char project id today; a stricter bucket rule shows the check the model applies.
    monkeypatch.setitem(NAME_RULES, "gcp:storage/bucket:Bucket",
                        dataclasses.replace(NAME_RULES["gcp:storage/bucket:Bucket"], max_length=20))
    message = refusal({**VALID, f"{NS}:namePrefix": "team2"})
    assert f"{NS}:namePrefix = 'team2'" in message and "'my-proj-123-team2-artifacts' (27 chars)" in message


def test_service_account_ids_carry_the_prefix_and_the_environment():
    settings = settings_from_values({**VALID, f"{NS}:namePrefix": "team2"})
    assert settings.service_account_ids == {"tracking": "team2-tracking-dev", "dbadmin": "team2-dbadmin-dev",
                                            "serving": "team2-serving-dev"}


@pytest.mark.parametrize("field, what_goes", [
    ("name_prefix", ("renames every resource", "database", "artifact bucket")),  # new URNs: delete + create
    ("cmek", ("replaces the Cloud SQL instance",)),  # encryption_key_name is ForceNew in the provider
])
def test_settings_that_replace_stateful_resources_say_so(field, what_goes):
    description = Settings.model_fields[field].description
    assert "before the first `up`" in description, description
    for words in what_goes:
        assert words in description, (field, words)
