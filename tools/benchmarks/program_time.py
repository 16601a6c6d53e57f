"""How long the offline program takes, against the floor of importing the providers it uses.

Each measurement runs in a fresh interpreter, several times, interleaved so machine noise hits
every variant alike; the report gives medians and ratios to the import floor.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tools" / "benchmarks" / "results" / "program_time.json"
# The providers' submodules load lazily on first attribute access: touch every class used.
PROVIDER_IMPORTS = (
    "import pulumi, pulumi_gcp as g, pulumi_kubernetes as k, pulumi_random, pulumi_docker_build as d; "
    "g.container.Cluster, g.container.NodePool, g.compute.Network, g.compute.Subnetwork, g.compute.Router, "
    "g.compute.RouterNat, g.compute.GlobalAddress, g.compute.Address, g.compute.SecurityPolicy, "
    "g.servicenetworking.Connection, g.sql.DatabaseInstance, g.storage.Bucket, g.storage.BucketIAMMember, "
    "g.serviceaccount.Account, g.serviceaccount.IAMMember, g.projects.Service, g.projects.IAMMember, "
    "g.artifactregistry.Repository, g.monitoring.Dashboard, g.monitoring.AlertPolicy, "
    "g.organizations.get_client_config_output, k.apps.v1.Deployment, k.batch.v1.Job, k.core.v1.Service, "
    "k.networking.v1.NetworkPolicy, k.policy.v1.PodDisruptionBudget, k.autoscaling.v2.HorizontalPodAutoscaler, "
    "k.apiextensions.CustomResource, k.Provider, pulumi_random.RandomPassword, d.Image"
)
VARIANTS = {
    "import floor (providers only)": [sys.executable, "-c", PROVIDER_IMPORTS],
    "make plan STACK=dev (render + check)": [sys.executable, "-m", "tools.offline.plan", "--stack", "dev", "--check"],
    "make plan STACK=prod (render + check)": [sys.executable, "-m", "tools.offline.plan", "--stack", "prod", "--check"],
}
SUITE = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--ignore=tests/test_local_e2e.py"]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - started


def main(repeats: int = 5) -> dict:
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name, command in VARIANTS.items():
            samples[name].append(timed(command))
    suite = timed(SUITE)
    floor = statistics.median(samples["import floor (providers only)"])
    report = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                    "platform": platform.platform()},
        "repeats": repeats,
        "results": [{"name": name, "median_s": round(statistics.median(values), 3),
                     "min_s": round(min(values), 3), "ratio_to_floor": round(statistics.median(values) / floor, 2)}
                    for name, values in samples.items()],
        "offline_suite_without_local_e2e_s": round(suite, 1),
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
