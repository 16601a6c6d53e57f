"""The Pulumi SDK's unpublished names (tools/offline/compat.py), pinned: an SDK upgrade that moves one
fails here first, by name, rather than as a puzzling mock failure somewhere else."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pulumi
import pulumi.runtime.settings

from tools.offline import compat
from tools.policy import rules

ROOT = Path(__file__).resolve().parent.parent


def pinned(package: str) -> str:
    text = (ROOT / "requirements.txt").read_text()
    return re.search(rf"^{re.escape(package)}==(\S+)$", text, re.MULTILINE).group(1)


def test_the_installed_pulumi_sdk_is_the_one_compat_was_written_for():
    assert version("pulumi") == pinned("pulumi"), (
        f"pulumi {version('pulumi')} installed, {pinned('pulumi')} pinned: recheck tools/offline/compat.py")


def test_the_secret_wrapper_keys_are_the_sdks():
    from pulumi.runtime import rpc

    assert (compat.SIG_KEY, compat.SECRET_SIG) == (rpc._special_sig_key, rpc._special_secret_sig)
    # tools/policy/ runs without this project's modules, so it keeps its own copy of the two values.
    assert (rules.SIG_KEY, rules.SECRET_SIG) == (compat.SIG_KEY, compat.SECRET_SIG)


def test_the_mock_monitor_is_the_one_set_mocks_builds():
    from pulumi.runtime import mocks

    assert compat.MockMonitor is mocks.MockMonitor
    assert hasattr(compat.MockMonitor, "RegisterResource"), "RecordingMonitor overrides RegisterResource"


def test_reset_root_stack_forgets_the_root_resource():
    assert hasattr(pulumi.runtime.settings, "ROOT"), "pulumi.runtime.settings.ROOT is gone: update tools/offline/compat.py"
    previous = pulumi.runtime.settings.ROOT.get()
    pulumi.runtime.settings.ROOT.set(object())
    try:
        compat.reset_root_stack()
        assert pulumi.runtime.settings.get_root_resource() is None
    finally:
        pulumi.runtime.settings.ROOT.set(previous)
