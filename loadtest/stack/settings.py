"""The load-test stack's settings (`mlflow-loadtest:<key>`): read once, validated before any resource."""

from __future__ import annotations

import re
from typing import Any, Optional

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from infra.cloud_rules import MIN_NODE_DISK_GB

PROJECT_NAMESPACE = "mlflow-loadtest"
PLATFORM_PROJECT = "mlflow-platform"
# Fully qualified: Pulumi resolves a bare `<stack>` (or `org/<stack>`) against the current project, this one.
_STACK_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
# A machine type with dedicated vCPUs: shared-core types (e2-medium, …) throttle a Locust worker.
_DEDICATED_MACHINE = re.compile(r"^(?:e2|n1|n2|n2d|n4|c2|c2d|c3|c3d|c4|t2d)-(?:standard|highmem|highcpu)-(?P<cpus>\d+)$")


class LoadTestSettings(BaseModel):
    """Every setting of one load-test stack. Field aliases are the Pulumi config keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)

    platform_stack: Optional[str] = Field(None, description="The platform stack to load, as "
                                          "`<organization>/<project>/<stack>`; default: the platform stack of "
                                          "this stack's organization and name (`<org>/mlflow-platform/<stack>`).")
    machine_type: str = Field("e2-standard-4", description="Node machine type of the load-test pool: 2 or more "
                              "dedicated vCPUs (a Locust worker keeps one busy), e.g. e2-standard-4.")
    workers: int = Field(2, ge=1, le=32, description="Locust worker pods per run, 1 vCPU each; the pool's "
                         "maximum node count follows.")
    spot_nodes: bool = Field(True, description="Run the load-test pool on Spot VMs (a preempted run is rerun).")
    disk_size_gb: int = Field(50, ge=MIN_NODE_DISK_GB, le=2000, description="Boot disk size per load-test node, GB.")

    @field_validator("platform_stack")
    @classmethod
    def _stack_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _STACK_NAME.match(value):
            raise ValueError("must name a stack fully, as <organization>/<project>/<stack> (e.g. "
                             "organization/mlflow-platform/dev): a shorter name is this project's own stack")
        return value

    @field_validator("machine_type")
    @classmethod
    def _dedicated_vcpus(cls, value: str) -> str:
        machine = _DEDICATED_MACHINE.match(value)
        if not machine or int(machine["cpus"]) < 2:
            raise ValueError("must be a machine type with 2 or more dedicated vCPUs, e.g. e2-standard-4 "
                             "(a Locust worker keeps one busy)")
        return value

    def platform_stack_for(self, organization: str, stack: str) -> str:
        """The platform stack to load from `organization`'s load-test stack named `stack`."""
        return self.platform_stack or f"{organization}/{PLATFORM_PROJECT}/{stack}"

    @property
    def max_nodes(self) -> int:
        """Nodes the pool may grow to: the master (0.5 vCPU) and one vCPU per worker, one vCPU per node
        left to GKE's reservations and system pods."""
        usable = int(_DEDICATED_MACHINE.match(self.machine_type)["cpus"]) - 1
        return -(-(self.workers * 2 + 1) // (usable * 2))  # ceil((workers + 0.5) / usable)


class LoadTestConfigError(ValueError):
    """A load-test setting is invalid; the message names every bad key and what is allowed."""


def key(field_name: str) -> str:
    return f"{PROJECT_NAMESPACE}:{to_camel(field_name)}"


def settings_from_values(values: dict[str, Any]) -> LoadTestSettings:
    """Validate raw config values keyed by full config key; raise LoadTestConfigError naming each bad key."""
    known = {key(name): name for name in LoadTestSettings.model_fields}
    unknown = sorted(k for k in values if k.startswith(PROJECT_NAMESPACE + ":") and k not in known)
    if unknown:
        raise LoadTestConfigError("\n".join(
            f"{k}: unknown setting; known: {', '.join(sorted(known))}" for k in unknown))
    try:
        return LoadTestSettings.model_validate({to_camel(known[k]): v for k, v in values.items() if k in known})
    except ValidationError as err:
        raise LoadTestConfigError("\n".join(_describe(e) for e in err.errors())) from None


def _describe(error: dict) -> str:
    name = key(str(error["loc"][0]))
    if error["type"] == "missing":
        return f"{name}: required, not set"
    return f"{name} = {error['input']!r}: {error['msg'].removeprefix('Value error, ')}"


def load_settings() -> LoadTestSettings:
    """The current stack's settings, from Pulumi config."""
    config = pulumi.Config(PROJECT_NAMESPACE)
    return settings_from_values({key(name): value for name in LoadTestSettings.model_fields
                                 if (value := config.get(to_camel(name))) is not None})
