"""The one place an operation's --target picks its adapter: `local` (a running `make local`,
tools/ops/local.py) or `cluster` (the stack's GKE clusters, tools/ops/gke.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.ops.gke import GkeTarget
from tools.ops.interfaces import Platform

ROOT = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", choices=("local", "cluster"), default="local")
    parser.add_argument("--stack", default="dev", help="Pulumi stack (default dev)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".local", help="`make local` work dir (default .local)")
    parser.add_argument("--tracking-uri", help="tracking URL for --target cluster (default $MLFLOW_TRACKING_URI)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for each rollout (local 300, cluster 600)")


def platform(args: argparse.Namespace) -> Platform:
    """The adapter of `args.target`; TargetError when it cannot be reached."""
    if args.target == "local":
        # Imported here: the local adapter loads the whole local platform, which a cluster run never needs.
        from tools.ops.local import LocalTarget
        return LocalTarget(args.workdir, args.stack)
    return GkeTarget(args.stack, args.tracking_uri)
