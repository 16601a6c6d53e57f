"""`make local`: the rendered platform (plan/<stack>/k8s/) on this machine. See local.localplatform."""

from local.localplatform import LocalPlatform
from local.processes import LocalPlatformError

__all__ = ["LocalPlatform", "LocalPlatformError"]
