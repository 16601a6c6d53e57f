"""The serving image's model loader: retries with a bounded backoff, reasons, a final failure
(pure: fake fetch/build/sleep, no MLflow, no threads)."""

from __future__ import annotations

import logging
import sys

sys.path.insert(0, "mlflow_image")
from mlflow_serving.loader import Backoff, ModelLoader, describe  # noqa: E402

URI = "models:/iris@champion"


class RegistryError(Exception):
    """Shaped like MLflow's RestException / MlflowException: an error_code attribute."""

    def __init__(self, code: str, message: str, prefixed: bool = True):
        super().__init__(f"{code}: {message}" if prefixed else message)
        self.error_code = code


NO_MODEL = RegistryError("RESOURCE_DOES_NOT_EXIST", "Registered Model with name=iris not found")
NO_ALIAS = RegistryError("INVALID_PARAMETER_VALUE", "Registered model alias champion not found.")
FORBIDDEN = RegistryError("PERMISSION_DENIED", "API request to endpoint /api/2.0/mlflow/registered-models/alias "
                          "failed with error code 403 != 200. Response body: 'Permission denied'", prefixed=False)


def loader_failing(*errors: Exception, build=lambda path: f"app for {path}"):
    """A loader whose fetch raises `errors` in turn, then returns /models/1; records every sleep
    and the status seen during it."""
    remaining = list(errors)
    calls = {"fetch": 0, "sleeps": [], "statuses": []}

    def fetch(uri: str) -> str:
        calls["fetch"] += 1
        if remaining:
            raise remaining.pop(0)
        return "/models/1"

    def sleep(seconds: float) -> None:
        calls["sleeps"].append(seconds)
        calls["statuses"].append(loader.status)

    loader = ModelLoader(URI, fetch=fetch, build=build, sleep=sleep)
    return loader, calls


def test_backoff_doubles_from_one_second_and_never_exceeds_fifteen():
    assert [Backoff().delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 15, 15, 15]


def test_waits_for_a_version_behind_the_alias_then_serves_it():
    loader, calls = loader_failing(NO_MODEL, NO_MODEL, NO_ALIAS, NO_ALIAS, NO_ALIAS, NO_ALIAS)
    assert loader.status.state == "loading" and loader.app is None
    loader.run()
    assert calls["sleeps"] == [1, 2, 4, 8, 15, 15]
    assert loader.app == "app for /models/1"
    assert (loader.status.state, loader.status.attempts) == ("ready", 6)


def test_the_reason_says_no_version_is_behind_the_alias_yet():
    loader, calls = loader_failing(NO_MODEL, NO_ALIAS)
    loader.run()
    first, second = calls["statuses"]
    assert first.body() == {
        "ready": False, "state": "waiting", "model_uri": URI, "attempts": 1, "retry_in_seconds": 1,
        "reason": "no version behind models:/iris@champion yet "
                  "(RESOURCE_DOES_NOT_EXIST: Registered Model with name=iris not found)"}
    assert second.reason == ("no version behind models:/iris@champion yet "
                             "(INVALID_PARAMETER_VALUE: Registered model alias champion not found.)")


def test_a_403_names_both_causes_mlflow_gives_it_for():
    loader, calls = loader_failing(FORBIDDEN)
    loader.run()
    assert calls["statuses"][0].reason == (
        "models:/iris@champion: the model is not registered yet or the serving user lacks READ on it "
        "(PERMISSION_DENIED: API request to endpoint /api/2.0/mlflow/registered-models/alias failed with error "
        "code 403 != 200. Response body: 'Permission denied')")


def test_other_errors_are_retried_with_their_own_reason():
    loader, calls = loader_failing(OSError("Connection refused"), RegistryError("INTERNAL_ERROR", "boom"))
    loader.run()
    assert [status.reason for status in calls["statuses"]] == ["OSError: Connection refused", "INTERNAL_ERROR: boom"]
    assert loader.status.state == "ready"


def test_a_model_that_cannot_load_keeps_the_server_up_unready_and_is_not_retried():
    def build(path):
        raise ModuleNotFoundError("No module named 'torch'")

    loader, calls = loader_failing(NO_ALIAS, build=build)
    loader.run()  # returns: no crash, no further attempts
    assert loader.app is None and calls["fetch"] == 2
    assert loader.status.state == "failed"
    assert "cannot be loaded (ModuleNotFoundError: No module named 'torch')" in loader.status.reason


def test_each_failed_attempt_is_logged_with_its_reason_and_delay(caplog):
    loader, _ = loader_failing(NO_MODEL, FORBIDDEN)
    with caplog.at_level(logging.INFO, logger="mlflow_serving"):
        loader.run()
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("models:/iris@champion not loaded (attempt 1): no version behind")
    assert lines[0].endswith("retrying in 1s")
    assert lines[1].startswith("models:/iris@champion not loaded (attempt 2): models:/iris@champion: the model is "
                               "not registered yet or the serving user lacks READ on it (PERMISSION_DENIED")
    assert lines[2] == "models:/iris@champion loaded from /models/1 after 2 failed attempts: serving"
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "INFO"]


def test_reasons_are_one_short_line():
    error = RegistryError("INTERNAL_ERROR", "x" * 1000 + "\nsecond line")
    assert describe(error) == ("INTERNAL_ERROR: " + "x" * 1000)[:300]
    assert describe(ValueError()) == "ValueError: "
