"""Shared fixtures: every test that declares resources gets fresh mocks and config."""

from __future__ import annotations

from typing import Any, Callable, Optional

import pulumi
import pytest

from tools.offline.stack import StackRun, run_program, run_stack

BASE_CONFIG = {"gcp:project": "test-project-1", "mlflow-platform:environment": "dev"}


@pytest.fixture
def run_component() -> Callable[..., StackRun]:
    """Run a program that builds one component under fresh mocks; returns every recorded resource."""

    def run(build: Callable[[], Optional[dict]], config: Optional[dict] = None) -> StackRun:
        return run_program("test", {**BASE_CONFIG, **(config or {})}, program=lambda: build() or {})

    return run


@pytest.fixture(scope="session")
def stack_runs() -> dict[str, StackRun]:
    """The real program for the committed dev and prod stacks, run once per session."""
    return {stack: run_stack(stack) for stack in ("dev", "prod")}


@pytest.fixture
def run_stack_with() -> Callable[..., StackRun]:
    """The real program for a committed stack with some settings changed, by path (`serving.rolloutToken`)
    as `pulumi config set --path` takes them."""

    def run(stack: str, overrides: dict[str, Any]) -> StackRun:
        return run_stack(stack, overrides=overrides)

    return run



# Seconds each slow module took in `make test` (measured with --durations, 2 cores): the order
# only, never an assertion.
MODULE_SECONDS = {
    "test_local_e2e": 230, "test_upgrade": 200, "test_under_load": 180, "test_benchmarks_smoke": 180,
    "test_promote": 170, "test_model_envs": 150, "test_rotate_secret": 125, "test_backup_restore": 110,
    "test_loadtest_cluster_commands": 90, "test_serving_wire": 65, "test_image_builds": 150,
    "test_canary_under_load": 400, "test_canary": 5,
}
UNKNOWN_SLOW_SECONDS = 60
# Fixtures that start real processes: a test that uses one is slow.
PROCESS_FIXTURES = frozenset({"platform", "state", "first_up", "prod_platform", "locust_image"})


def pytest_collection_modifyitems(items):
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        # `local`: real processes (as `make local` runs them); `unit`: everything else, seconds to a minute.
        item.add_marker(pytest.mark.local if item.get_closest_marker("slow") else pytest.mark.unit)
    # Longest modules first: `make test` hands whole modules to its processes in this order, so the
    # last one to start is short (longest-processing-time-first scheduling).
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: -MODULE_SECONDS.get(item.module.__name__.rpartition(".")[2],
                                                    UNKNOWN_SLOW_SECONDS if item.module.__name__ in slow_modules else 0))


@pytest.fixture(autouse=True)
def _no_leftover_config():
    yield
    pulumi.runtime.set_all_config({})
