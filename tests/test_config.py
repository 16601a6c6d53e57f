"""The settings model: good stacks load, every bad stack is refused with key, value and what is allowed."""

from __future__ import annotations

import dataclasses
import json
import shlex

import pulumi
import pytest

from infra import cloud_rules
from infra.cloud_rules import NAME_RULES
from infra.config import FLAT_KEYS, LOAD_TEST_KEYS, ConfigError, load_settings, setting_fields, settings_from_values
from infra.settings import NAME_PREFIX_MAX_LENGTH, Settings
from tools.offline import reference
from tools.offline.stack import read_stack_config, run_program, set_path

NS = "mlflow-platform"
VALID = {"gcp:project": "my-proj-123", f"{NS}:environment": "dev"}
PROD_VALID = {**VALID, f"{NS}:environment": "prod", f"{NS}:database": '{"pointInTimeRecovery": true}',
              f"{NS}:cmek": "true"}


def with_paths(values: dict, changes: dict) -> dict:
    """values with `changes` set by path (`database.tier`), as `pulumi config set --path` sets them;
    None removes a key."""
    config = dict(values)
    for path, value in changes.items():
        if value is None:
            config.pop(path)
        else:
            set_path(config, path, value)
    return config


def refusal(values: dict, changes: dict = {}) -> str:
    with pytest.raises(ConfigError) as caught:
        settings_from_values(with_paths(values, changes))
    return str(caught.value)


BAD_CONFIGS = {
    # name: (changes to a valid dev stack by path, key named in the error, phrase of what is allowed)
    "missing_gcp_project": ({"gcp:project": None}, "gcp:project", "required setting is missing"),
    "malformed_gcp_project": ({"gcp:project": "My_Project"}, "gcp:project", "lowercase letters"),
    "unknown_region": ({"gcp:region": "mars-north1"}, "gcp:region", "us-central1"),
    "zone_outside_region": ({"gcp:zone": "europe-west1-b"}, "gcp:zone", "us-central1-a"),
    "unknown_environment": ({"environment": "staging"}, f"{NS}:environment", "'dev' or 'prod'"),
    "malformed_cidr": ({"network.subnetCidr": "10.10.0.0/33"}, f"{NS}:network.subnetCidr", "CIDR form"),
    "cidr_with_host_bits": ({"network.podsCidr": "10.16.0.1/14"}, f"{NS}:network.podsCidr", "no host bits"),
    "overlapping_cidrs": ({"network.servicesCidr": "10.10.8.0/24"}, f"{NS}:network.subnetCidr", f"overlaps {NS}:network.servicesCidr"),
    "master_cidr_not_28": ({"network.masterCidr": "172.16.0.0/24"}, f"{NS}:network.masterCidr", "exactly /28"),
    "private_services_too_small": ({"network.privateServicesCidr": "10.64.0.0/29"}, f"{NS}:network.privateServicesCidr", "/24 or larger"),
    "bad_authorized_cidr": ({"clusters.masterAuthorizedCidrs": ["1.2.3.4/8"]}, f"{NS}:clusters.masterAuthorizedCidrs", "no host bits"),
    "min_nodes_above_max": ({"clusters.platform.minNodes": "5", "clusters.platform.maxNodes": "3"}, f"{NS}:clusters.platform.minNodes", f"must be <= {NS}:clusters.platform.maxNodes"),
    "max_nodes_zero": ({"clusters.platform.maxNodes": "0"}, f"{NS}:clusters.platform.maxNodes", "between 1 and 100"),
    "node_disk_too_small": ({"clusters.nodeDiskSizeGb": "10"}, f"{NS}:clusters.nodeDiskSizeGb", "between 20 and 2000"),
    "batch_size_zero": ({"serving.maxBatchSize": "0"}, f"{NS}:serving.maxBatchSize", "between 1 and 10000"),
    "batch_delay_too_long": ({"serving.maxBatchDelayMs": "250"}, f"{NS}:serving.maxBatchDelayMs", "between 0 and 100"),
    "serving_min_nodes_above_max": ({"clusters.serving.minNodes": "4", "clusters.serving.maxNodes": "2"}, f"{NS}:clusters.serving.minNodes", f"<= {NS}:clusters.serving.maxNodes"),
    "unknown_machine_family": ({"clusters.platform.machineType": "m9-standard-4"}, f"{NS}:clusters.platform.machineType", "FAMILY one of e2"),
    "malformed_machine_type": ({"clusters.platform.machineType": "big"}, f"{NS}:clusters.platform.machineType", "unknown machine type"),
    "unknown_db_tier_format": ({"database.tier": "db-n1-standard-1"}, f"{NS}:database.tier", "db-custom-<vCPUs>-<MiB>"),
    "db_custom_memory_out_of_range": ({"database.tier": "db-custom-1-65536"}, f"{NS}:database.tier", "0.9-6.5 GiB per vCPU"),
    "shared_core_tier_on_enterprise_plus": ({"database.edition": "ENTERPRISE_PLUS"}, f"{NS}:database.tier", "accepts only db-perf-optimized"),
    "perf_tier_on_enterprise": ({"database.tier": "db-perf-optimized-N-2"}, f"{NS}:database.tier", "need db_edition ENTERPRISE_PLUS"),
    "log_retention_beyond_edition": ({"database.backupRetentionCount": "30", "database.logRetentionDays": "14"}, f"{NS}:database.logRetentionDays", "between 1 and 7 for edition ENTERPRISE"),
    "pitr_without_backups": ({"database.backups": "false", "database.pointInTimeRecovery": "true"}, f"{NS}:database.pointInTimeRecovery", f"needs {NS}:database.backups=true"),
    "ha_on_shared_core": ({"database.tier": "db-f1-micro", "database.highAvailability": "true"}, f"{NS}:database.highAvailability", "no high availability"),
    "db_disk_too_small": ({"database.diskSizeGb": "5"}, f"{NS}:database.diskSizeGb", "between 10 and 65536"),
    "maintenance_hour_24": ({"database.maintenanceHour": "24"}, f"{NS}:database.maintenanceHour", "between 0 and 23"),
    "zero_tracking_replicas": ({"tracking.replicas": "0"}, f"{NS}:tracking.replicas", "between 1 and 20"),
    "too_many_tracking_workers": ({"tracking.workers": "9"}, f"{NS}:tracking.workers", "between 1 and 8"),
    "negative_serving_replicas": ({"serving.minReplicas": "-1"}, f"{NS}:serving.minReplicas", "between 1 and 100"),
    "serving_min_replicas_above_max": ({"serving.minReplicas": "5", "serving.maxReplicas": "2"}, f"{NS}:serving.minReplicas", f"<= {NS}:serving.maxReplicas"),
    "serving_workers_beyond_the_cpu_limit": ({"serving.cpu": "500m", "serving.workers": "2"}, f"{NS}:serving.workers", f"must be <= 1, the whole cores of the pod's CPU limit (2 × {NS}:serving.cpu = 1000m)"),
    "serving_cpu_target_too_high": ({"serving.targetCpuPercent": "99"}, f"{NS}:serving.targetCpuPercent", "between 10 and 95"),
    "serving_env_timeout_too_short": ({"serving.envTimeoutSeconds": "10"}, f"{NS}:serving.envTimeoutSeconds", "between 30 and 1800"),
    "nearline_days_zero": ({"storage.nearlineAfterDays": "0"}, f"{NS}:storage.nearlineAfterDays", "between 1 and 3650"),
    "noncurrent_days_too_many": ({"storage.noncurrentRetentionDays": "4000"}, f"{NS}:storage.noncurrentRetentionDays", "between 1 and 3650"),
    "registry_keeps_nothing": ({"storage.registryKeepVersions": "0"}, f"{NS}:storage.registryKeepVersions", "between 1 and 1000"),
    "replicas_not_a_number": ({"tracking.replicas": "two"}, f"{NS}:tracking.replicas", "valid integer"),
    "unknown_release_channel": ({"clusters.releaseChannel": "BETA"}, f"{NS}:clusters.releaseChannel", "'RAPID', 'REGULAR' or 'STABLE'"),
    "unknown_auth_permission": ({"tracking.authDefaultPermission": "ALL"}, f"{NS}:tracking.authDefaultPermission", "'NO_PERMISSIONS'"),
    "auth_cache_over_an_hour": ({"tracking.authCacheTtlSeconds": "7200"}, f"{NS}:tracking.authCacheTtlSeconds", "between 0 and 3600"),
    "prebuilt_image_by_tag": ({"tracking.image": "repo/mlflow:latest"}, f"{NS}:tracking.image", "by digest"),
    "proxy_image_by_tag": ({"tracking.sqlProxyImage": "gcr.io/cloud-sql-connectors/cloud-sql-proxy:2"}, f"{NS}:tracking.sqlProxyImage", "by digest"),
    "ingress_host_not_fqdn": ({"edge.ingressHost": "mlflow"}, f"{NS}:edge.ingressHost", "fully qualified"),
    "armor_without_ingress": ({"edge.cloudArmor": "true"}, f"{NS}:edge.cloudArmor", f"needs {NS}:edge.ingressHost"),
    "armor_rate_too_low": ({"edge.armorRequestsPerMinute": "5"}, f"{NS}:edge.armorRequestsPerMinute", "between 10 and 100000"),
    "alert_p99_too_low": ({"monitoring.servingP99Ms": "1"}, f"{NS}:monitoring.servingP99Ms", "between 10 and 60000"),
    "alert_storage_percent_too_low": ({"monitoring.dbStoragePercent": "20"}, f"{NS}:monitoring.dbStoragePercent", "between 50 and 99"),
    "notify_email_malformed": ({"monitoring.notify.emails": ["oncall"]}, f"{NS}:monitoring.notify.emails", "e-mail address"),
    "notify_chat_not_a_switch": ({"monitoring.notify.chat": "slack"}, f"{NS}:monitoring.notify.chat", "valid boolean"),
    "drift_schedule_malformed": ({"monitoring.drift.schedule": "hourly"}, f"{NS}:monitoring.drift.schedule", "cron"),
    "alias_like_version": ({"serving.modelAlias": "v2"}, f"{NS}:serving.modelAlias", "not of the form vN"),
    "challenger_serves_the_champion_alias": ({"serving.challenger.alias": "champion"}, f"{NS}:serving.challenger.alias", f"must differ from {NS}:serving.modelAlias"),
    "challenger_alias_like_version": ({"serving.challenger.alias": "v3"}, f"{NS}:serving.challenger.alias", "not of the form vN"),
    "challenger_weight_above_100": ({"serving.challenger.weight": "101"}, f"{NS}:serving.challenger.weight", "between 0 and 100"),
    "challenger_split_and_mirrored": ({"serving.challenger.weight": "10", "serving.challenger.mirror": "true"}, f"{NS}:serving.challenger.weight", f"must be 0 when {NS}:serving.challenger.mirror=true"),
    "canary_steps_not_increasing": ({"serving.canary.steps": [50, 10, 100]}, f"{NS}:serving.canary.steps", "strictly increasing"),
    "canary_steps_not_ending_at_100": ({"serving.canary.steps": [10, 50]}, f"{NS}:serving.canary.steps", "the last 100"),
    "canary_window_too_short": ({"serving.canary.windowSeconds": "5"}, f"{NS}:serving.canary.windowSeconds", "between 10 and 3600"),
    "canary_p99_ratio_below_one": ({"serving.canary.maxP99Ratio": "0.5"}, f"{NS}:serving.canary.maxP99Ratio", "between 1 and 100"),
    "proxy_only_subnet_too_small": ({"network.proxyOnlyCidr": "10.129.0.0/28"}, f"{NS}:network.proxyOnlyCidr", "/26 or larger"),
    "proxy_only_subnet_overlaps": ({"serving.modelName": "iris", "network.proxyOnlyCidr": "10.10.0.0/23"}, f"{NS}:network.subnetCidr", f"overlaps {NS}:network.proxyOnlyCidr"),
    "bad_memory_quantity": ({"tracking.memory": "1GB"}, f"{NS}:tracking.memory", "in Mi or Gi"),
    "unknown_setting": ({"minNode": "1"}, f"{NS}:minNode", "unknown setting"),
    "unknown_field_of_a_component": ({"clusters.platform.minNode": "1"}, f"{NS}:clusters.platform.minNode", "unknown setting"),
    "component_not_an_object": ({"database": "db-custom-1-3840"}, f"{NS}:database", "must be an object"),
    # GCP's own rules (infra/cloud_rules.py), which mocks cannot see
    "internal_ip_reserved_by_gcp": ({"network.trackingInternalIp": "10.10.15.254"}, f"{NS}:network.trackingInternalIp", "reserved by GCP"),
    "internal_ip_is_the_gateway": ({"network.trackingInternalIp": "10.10.0.1"}, f"{NS}:network.trackingInternalIp", "reserved by GCP"),
    "internal_ip_outside_subnet": ({"network.trackingInternalIp": "10.11.0.5"}, f"{NS}:network.trackingInternalIp", "must lie in the subnet 10.10.0.0/20"),
    "internal_ip_malformed": ({"network.trackingInternalIp": "10.10.0.300"}, f"{NS}:network.trackingInternalIp", "IPv4 address"),
    "c4_with_persistent_disk": ({"clusters.platform.machineType": "c4-standard-4", "clusters.platform.diskType": "pd-balanced"}, f"{NS}:clusters.platform.diskType", "allowed: hyperdisk-balanced"),
    "n4_serving_with_ssd": ({"clusters.serving.machineType": "n4-standard-8", "clusters.serving.diskType": "pd-ssd"}, f"{NS}:clusters.serving.diskType", "allowed: hyperdisk-balanced"),
    "hyperdisk_on_e2": ({"clusters.platform.diskType": "hyperdisk-balanced"}, f"{NS}:clusters.platform.diskType", "allowed: pd-balanced, pd-ssd"),
    "log_retention_beyond_backups": ({"database.backupRetentionCount": "3", "database.logRetentionDays": "5"}, f"{NS}:database.logRetentionDays", "must be <= the backups kept (3)"),
    "unknown_control_plane_endpoint": ({"clusters.controlPlaneEndpoint": "private"}, f"{NS}:clusters.controlPlaneEndpoint", "'ip' or 'dns'"),
    "unknown_disk_type": ({"clusters.platform.diskType": "pd-standard"}, f"{NS}:clusters.platform.diskType", "'hyperdisk-balanced'"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_is_refused_naming_key_and_allowed_values(name):
    changes, key, allowed = BAD_CONFIGS[name]
    message = refusal(VALID, changes)
    assert key in message, f"{name}: error does not name {key}:\n{message}"
    assert allowed in message, f"{name}: error does not say {allowed!r}:\n{message}"


def test_bad_value_is_quoted_in_the_error():
    assert "'m9-standard-4'" in refusal(VALID, {"clusters.platform.machineType": "m9-standard-4"})


@pytest.mark.parametrize("flat, nested", [("subnetCidr", "network.subnetCidr"), ("minNodes", "clusters.platform.minNodes"),
                                          ("dbTier", "database.tier"), ("servingMaxReplicas", "serving.maxReplicas")])
def test_a_flat_key_of_an_existing_stack_is_refused_naming_its_new_key_and_the_command(flat, nested):
    message = refusal({**VALID, f"{NS}:{flat}": "10"})
    assert (f"{NS}:{flat} = '10': settings nest by component now; its place is {NS}:{nested}: run "
            f"`pulumi config rm {NS}:{flat} && pulumi config set --path {NS}:{nested} 10`") in message


def test_every_flat_key_names_a_setting_that_exists():
    keys = setting_fields()
    assert [flat for flat, nested in FLAT_KEYS.items() if f"{NS}:{nested}" not in keys] == []


def test_the_command_a_refusal_gives_sets_the_value_where_it_now_lives():
    message = refusal({**VALID, f"{NS}:masterAuthorizedCidrs": '["203.0.113.0/24"]'})
    path, value = message.split("pulumi config set --path ")[1].rstrip("`").split(" ", 1)
    settings = settings_from_values(with_paths(VALID, {path: value.strip("'")}))
    assert settings.clusters.master_authorized_cidrs == ("203.0.113.0/24",)


def test_a_text_setting_set_to_a_number_on_the_command_line_is_taken_as_text():
    # `pulumi config set --path mlflow-platform:tracking.cpu 1` stores the JSON number 1.
    settings = settings_from_values(with_paths(VALID, {"tracking.cpu": "1", "serving.rolloutToken": "20261207"}))
    assert (settings.tracking.cpu, settings.serving.rollout_token) == ("1", "20261207")


@pytest.mark.parametrize("key", LOAD_TEST_KEYS)
def test_load_test_keys_point_to_the_load_test_project(key):
    assert f"{NS}:{key}: the cluster load test is a Pulumi project of its own now" in refusal({**VALID, f"{NS}:{key}": "true"})


def test_prod_refuses_a_control_plane_open_to_the_internet():
    message = refusal(PROD_VALID, {"clusters.controlPlaneEndpoint": "ip"})
    assert f"{NS}:clusters.masterAuthorizedCidrs = []: must list the ranges you deploy from" in message
    assert f"or set {NS}:clusters.controlPlaneEndpoint=dns" in message
    for closed in ({"clusters.controlPlaneEndpoint": "dns"},
                   {"clusters.controlPlaneEndpoint": "ip", "clusters.masterAuthorizedCidrs": ["203.0.113.0/24"]}):
        assert settings_from_values(with_paths(PROD_VALID, closed)).environment == "prod"


def test_equal_backup_and_log_retention_is_accepted_as_cloud_sql_defaults_are():
    settings = settings_from_values(with_paths(VALID, {"database.backupRetentionCount": 7, "database.logRetentionDays": 7}))
    assert (settings.database.backup_retention_count, settings.database.log_retention_days) == (7, 7)


@pytest.mark.parametrize("machine_type, disk_type", [("e2-standard-4", "pd-balanced"), ("c3-standard-4", "pd-balanced"),
                                                     ("c4-standard-4", "hyperdisk-balanced"),
                                                     ("n4-standard-8", "hyperdisk-balanced")])
def test_auto_boot_disk_is_one_the_machine_series_takes(machine_type, disk_type):
    settings = settings_from_values(with_paths(VALID, {"clusters.platform.machineType": machine_type}))
    assert settings.clusters.platform.boot_disk_type == disk_type


@pytest.mark.parametrize("subnet", ["10.10.0.0/20", "10.0.0.0/24", "192.168.4.0/22"])
def test_default_internal_lb_address_is_never_one_gcp_reserves(subnet):
    settings = settings_from_values(with_paths(VALID, {"network.subnetCidr": subnet}))
    assert settings.network.tracking_lb_address not in cloud_rules.reserved_addresses(subnet)
    assert cloud_rules.internal_address_problem(subnet, settings.network.tracking_lb_address) is None


@pytest.mark.parametrize("key", ["clusters.deletionProtection", "database.deletionProtection", "database.backups",
                                 "database.pointInTimeRecovery"])
def test_prod_refuses_unprotected_or_unbacked_up(key):
    changes = {key: "false"}
    if key == "database.backups":
        changes["database.pointInTimeRecovery"] = "false"
    assert f"{NS}:{key} = False: must be true when environment is prod" in refusal(PROD_VALID, changes)


def test_prod_refuses_force_destroyed_bucket():
    message = refusal(PROD_VALID, {"storage.forceDestroy": "true"})
    assert f"{NS}:storage.forceDestroy = True: must be false when environment is prod" in message
    assert f"a deliberate teardown sets {NS}:decommission=true first" in message


def test_decommissioned_prod_may_lift_its_deletion_protection_and_nothing_else():
    lifted = with_paths(PROD_VALID, {"decommission": "true", "clusters.deletionProtection": "false",
                                     "database.deletionProtection": "false", "storage.forceDestroy": "true"})
    assert settings_from_values(lifted).protect is False
    message = refusal(lifted, {"database.backups": "false", "database.pointInTimeRecovery": "false"})
    assert f"{NS}:database.backups = False: must be true when environment is prod" in message


@pytest.mark.parametrize("changes,protect", [
    ({}, True),
    ({"clusters.deletionProtection": "false"}, True),
    ({"database.deletionProtection": "false"}, True),
    ({"clusters.deletionProtection": "false", "database.deletionProtection": "false"}, False),
])
def test_pulumi_protects_the_stateful_resources_wherever_deletion_protection_is_on(changes, protect):
    assert settings_from_values(with_paths(VALID, changes)).protect is protect


def test_every_problem_is_reported_at_once():
    message = refusal(VALID, {"clusters.platform.minNodes": "9", "tracking.replicas": "0"})
    assert f"{NS}:clusters.platform.minNodes" in message and f"{NS}:tracking.replicas" in message


def test_serving_cluster_ranges_must_not_overlap_when_enabled():
    overlapping = with_paths(VALID, {"network.servingPodsCidr": "10.16.0.0/16"})
    settings_from_values(overlapping)  # unused ranges may overlap
    message = refusal(overlapping, {"clusters.separateServing": "true"})
    assert f"{NS}:network.podsCidr" in message and f"{NS}:network.servingPodsCidr" in message


def test_the_proxy_only_subnet_range_counts_only_where_a_gateway_is_declared():
    overlapping = with_paths(VALID, {"network.proxyOnlyCidr": "10.10.0.0/23"})
    settings_from_values(overlapping)  # no served model, no Gateway, no proxy-only subnet
    assert f"{NS}:network.proxyOnlyCidr" in refusal(overlapping, {"serving.modelName": "iris"})


def test_no_challenger_unless_declared_and_one_field_declares_it_with_the_contract_defaults():
    assert settings_from_values(with_paths(VALID, {"serving.modelName": "iris"})).serving.challenger is None
    declared = settings_from_values(with_paths(VALID, {"serving.modelName": "iris", "serving.challenger.mirror": "true"}))
    assert (declared.serving.challenger.alias, declared.serving.challenger.weight) == ("challenger", 0)
    canary = declared.serving.canary
    assert (canary.steps, canary.window_seconds, canary.min_requests, canary.max_error_rate_increase,
            canary.max_p99_ratio) == ((10, 50, 100), 60, 100, 1.0, 1.5)


def test_canary_steps_set_without_path_arrive_as_json_text():
    steps = settings_from_values(with_paths(VALID, {"serving.canary.steps": "[5, 25, 100]"})).serving.canary.steps
    assert steps == (5, 25, 100)


def test_defaults_are_valid_and_frozen():
    settings = settings_from_values(VALID)
    assert settings.database.edition == "ENTERPRISE" and settings.database.tier.startswith("db-custom-")
    with pytest.raises(Exception):
        settings.clusters.platform.min_nodes = 7


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stack_files_are_valid(stack):
    config, _ = read_stack_config(stack)
    assert settings_from_values(config).environment == stack


def _differences_from_defaults(document: dict, defaults: dict, path: str = "") -> list[str]:
    same = []
    for key, value in document.items():
        if isinstance(value, dict):
            same += _differences_from_defaults(value, defaults.get(key, {}), f"{path}{key}.")
        elif defaults.get(key) == value:
            same.append(path + key)
    return same


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stack_files_hold_only_what_differs_from_the_defaults(stack):
    config, _ = read_stack_config(stack)
    stack_settings = {key.removeprefix(f"{NS}:"): json.loads(value) if value.startswith("{") else value
                      for key, value in config.items() if key.startswith(f"{NS}:")}
    defaults = Settings.model_construct().model_dump(by_alias=True, mode="json")
    assert _differences_from_defaults(stack_settings, defaults) == []


def test_cluster_location_is_zone_unless_regional():
    assert settings_from_values(VALID).cluster_location == "us-central1-a"
    assert settings_from_values(with_paths(VALID, {"clusters.regional": "true"})).cluster_location == "us-central1"


def test_load_settings_reads_pulumi_config_and_fails_before_any_resource():
    declared = []

    def program():
        load_settings()
        declared.append(pulumi.ComponentResource("mlflow:test:Never", "never"))
        return {}

    with pytest.raises(ConfigError, match="gcp:project: required setting is missing"):
        run_program("dev", {f"{NS}:environment": "dev"}, program=program)
    assert declared == []


def test_load_settings_reads_structured_keys_as_pulumi_stores_them():
    seen: list[Settings] = []
    config = with_paths(VALID, {"clusters.platform.minNodes": 2, "clusters.platform.spot": True,
                                "clusters.masterAuthorizedCidrs": ["203.0.113.0/24"], "tracking.replicas": "3"})
    run_program("dev", config, program=lambda: seen.append(load_settings()) or {})
    clusters = seen[0].clusters
    assert (clusters.platform.min_nodes, clusters.platform.spot, clusters.master_authorized_cidrs) == (
        2, True, ("203.0.113.0/24",))
    assert seen[0].tracking.replicas == 3


def test_load_settings_refuses_unknown_keys_in_the_stack():
    with pytest.raises(ConfigError, match=f"{NS}:macineType: unknown setting"):
        run_program("dev", {**VALID, f"{NS}:macineType": "e2-standard-4"}, program=lambda: load_settings() and {})


def test_load_settings_refuses_a_flat_key_before_any_resource():
    with pytest.raises(ConfigError, match=f"pulumi config set --path {NS}:network.subnetCidr 10.20.0.0/20"):
        run_program("dev", {**VALID, f"{NS}:subnetCidr": "10.20.0.0/20"}, program=lambda: load_settings() and {})


def test_a_prefix_that_makes_a_service_account_id_too_long_is_refused_naming_the_prefix(monkeypatch):
    # Every 3-12 char prefix fits today's roles; a longer role shows the rule the model applies.
    monkeypatch.setattr("infra.settings.SERVICE_ACCOUNT_ROLES", ("model-registry-sync",))
    message = refusal(PROD_VALID, {"namePrefix": "platformteam"})
    assert f"{NS}:namePrefix = 'platformteam'" in message and "platformteam-model-registry-sync-prod" in message
    assert "6-30" in message


def test_a_prefix_longer_than_every_name_allows_is_refused_naming_the_setting_and_the_length():
    message = refusal(VALID, {"namePrefix": "x" * (NAME_PREFIX_MAX_LENGTH + 1)})
    assert f"{NS}:namePrefix = '{'x' * (NAME_PREFIX_MAX_LENGTH + 1)}'" in message
    assert f"3-{NAME_PREFIX_MAX_LENGTH} chars" in message


def test_a_prefix_that_makes_the_bucket_name_too_long_is_refused_naming_the_prefix(monkeypatch):
    # Every prefix fits a 30-char project id today; a stricter bucket rule shows the check the model applies.
    monkeypatch.setitem(NAME_RULES, "gcp:storage/bucket:Bucket",
                        dataclasses.replace(NAME_RULES["gcp:storage/bucket:Bucket"], max_length=20))
    message = refusal(VALID, {"namePrefix": "team2"})
    assert f"{NS}:namePrefix = 'team2'" in message and "'my-proj-123-team2-artifacts' (27 chars)" in message


def test_service_account_ids_carry_the_prefix_and_the_environment():
    settings = settings_from_values(with_paths(VALID, {"namePrefix": "team2"}))
    assert settings.service_account_ids == {"tracking": "team2-tracking-dev", "dbadmin": "team2-dbadmin-dev",
                                            "serving": "team2-serving-dev", "drift": "team2-drift-dev"}


@pytest.mark.parametrize("field, what_goes", [
    ("name_prefix", ("renames every resource", "database", "artifact bucket")),  # new URNs: delete + create
    ("cmek", ("replaces the Cloud SQL instance",)),  # encryption_key_name is ForceNew in the provider
])
def test_settings_that_replace_stateful_resources_say_so(field, what_goes):
    description = Settings.model_fields[field].description
    assert "before the first `up`" in description, description
    for words in what_goes:
        assert words in description, (field, words)


def test_pulumi_yaml_and_the_readme_reference_are_generated_from_the_model():
    assert reference.main([]) == 0, "Pulumi.yaml, docs/configuration.md or README.md is stale: run `make reference`"


def test_the_reference_shows_each_nested_key_with_its_bounds_and_pulumi_yaml_one_object_per_component():
    assert "| `mlflow-platform:clusters.platform.minNodes` | integer | `1` | 0-100 |" in reference.reference_table()
    declared = reference.pulumi_config_section()
    assert declared["database"]["default"] == {} and "type" not in declared["database"]  # pulumi/pulumi#11321
    assert "clusters.platform.minNodes" not in declared


def test_an_old_single_alert_email_becomes_the_list_of_addresses():
    # a stack set before notify.emails: its next `up` keeps mailing that address
    settings = settings_from_values({**VALID, f"{NS}:monitoring": json.dumps({"alertEmail": "oncall@example.com"})})
    assert settings.monitoring.notify.emails == ("oncall@example.com",)
    # the flat key's migration command sets a list, which the setting then accepts
    message = refusal({**VALID, f"{NS}:alertEmail": "oncall@example.com"})
    path, value = message.split("pulumi config set --path ")[1].rstrip("`").split(" ", 1)
    assert path == f"{NS}:monitoring.notify.emails"
    settings = settings_from_values(with_paths(VALID, {path: shlex.split(value)[0]}))
    assert settings.monitoring.notify.emails == ("oncall@example.com",)
