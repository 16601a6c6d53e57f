"""Every Pulumi SDK name this project uses that the SDK does not publish, in one place.

Pinned to the SDK in requirements.txt; tests/test_compat.py fails when an upgrade moves one.
"""

from __future__ import annotations

from importlib.metadata import version

import pulumi.runtime.settings

try:
    # The monitor set_mocks(monitor=...) accepts; RecordingMonitor extends it to record every resource.
    from pulumi.runtime.mocks import MockMonitor
    # The wrapper a mock's property must carry to be deserialized as a secret Output.
    from pulumi.runtime.rpc import _special_secret_sig as SECRET_SIG
    from pulumi.runtime.rpc import _special_sig_key as SIG_KEY
except ImportError as err:  # pragma: no cover - only on an SDK upgrade
    raise ImportError(f"pulumi {version('pulumi')} no longer has {err.name}: update tools/offline/compat.py") from None


def reset_root_stack() -> None:
    """Forget the root Stack resource: set_mocks keeps an existing one, named after the first stack
    run, and the SDK has no public reset."""
    pulumi.runtime.settings.ROOT.set(None)
