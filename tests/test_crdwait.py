"""The gate Job's wait for the Gateway API's CRDs (mlflow_image/mlflow_crdwait): done once every CRD is
Established, a clear error naming those still missing once the budget is spent. Fake clock, no cluster."""

from __future__ import annotations

import sys

import pytest

sys.path.insert(0, "mlflow_image")
from mlflow_crdwait import POLL_SECONDS, NotEstablished, established, wait_established  # noqa: E402
import mlflow_crdwait.__main__ as command  # noqa: E402

ESTABLISHED = {"status": {"conditions": [{"type": "NamesAccepted", "status": "True"},
                                         {"type": "Established", "status": "True"}]}}
PENDING = {"status": {"conditions": [{"type": "Established", "status": "False"}]}}


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("crd, expected", [(ESTABLISHED, True), (PENDING, False), (None, False), ({}, False)])
def test_only_an_established_condition_counts(crd, expected):
    assert established(crd) is expected


def test_it_waits_until_every_crd_is_established():
    clock = Clock()
    appear_at = {"a": 0.0, "b": 3 * POLL_SECONDS}
    fetch = lambda name: ESTABLISHED if clock.now >= appear_at[name] else None
    wait_established(["a", "b"], fetch, 600, clock=clock, sleep=clock.sleep, log=lambda _: None)
    assert clock.now == 3 * POLL_SECONDS


def test_it_gives_up_within_its_budget_naming_what_is_missing():
    clock = Clock()
    fetch = lambda name: ESTABLISHED if name == "a" else PENDING
    with pytest.raises(NotEstablished, match=r"after 60s: b$"):
        wait_established(["a", "b"], fetch, 60, clock=clock, sleep=clock.sleep, log=lambda _: None)
    assert clock.now <= 60


def test_the_command_exits_non_zero_with_the_reason(monkeypatch, capsys):
    monkeypatch.setattr(command, "wait_established", lambda *a, **k: (_ for _ in ()).throw(NotEstablished("late: x")))
    assert command.main(["--timeout", "5", "x"]) == 1
    assert "late: x" in capsys.readouterr().err
