"""Builders for application secrets mounted as files by GKE's Secret Manager add-on.

A SecretProviderClass (`provider: gke`) lists the Secret Manager versions a pod mounts; the pod
mounts it read-only through the add-on's CSI driver; the container's command runs under
`python -m mlflow_fileenv` (mlflow_image/), which turns the files into the environment variables
MLflow reads. The values never appear in a manifest. `secret_files` wires one workload's class and grants.
https://cloud.google.com/secret-manager/docs/secret-manager-managed-csi-component
"""

from __future__ import annotations

from typing import Any, Mapping

import pulumi
import pulumi_kubernetes as k8s

from infra.secrets import SecretRef, grant_readers, workload_principal

SPC_API_VERSION = "secrets-store.csi.x-k8s.io/v1"
SPC_KIND = "SecretProviderClass"
# GKE's managed add-on; the open-source provider would be `gcp` with driver secrets-store.csi.k8s.io.
SPC_PROVIDER = "gke"
CSI_DRIVER = "secrets-store-gke.csi.k8s.io"
SECRETS_VOLUME = "app-secrets"
SECRETS_DIR = "/etc/mlflow-secrets"
FILE_ENV_MODULE = "mlflow_fileenv"
FILE_SUFFIX = "_FILE"  # mlflow_fileenv's convention


def provider_class_spec(versions: Mapping[str, Any]) -> dict:
    """file name -> Secret Manager version name (projects/P/secrets/S/versions/latest)."""
    if not versions:
        raise ValueError("provider_class_spec: at least one secret")
    entries = "".join(f'- resourceName: "{version}"\n  path: "{path}"\n' for path, version in versions.items())
    return {"provider": SPC_PROVIDER, "parameters": {"secrets": entries}}


def secrets_volume(provider_class: Any) -> dict:
    return {"name": SECRETS_VOLUME, "csi": {"driver": CSI_DRIVER, "readOnly": True,
                                            "volumeAttributes": {"secretProviderClass": provider_class}}}


def secrets_mount() -> dict:
    return {"name": SECRETS_VOLUME, "mountPath": SECRETS_DIR, "readOnly": True}


def file_env(env_files: Mapping[str, str]) -> list[dict]:
    """NAME_FILE entries (env var -> file name under SECRETS_DIR): paths, no values."""
    return [{"name": f"{name}{FILE_SUFFIX}", "value": f"{SECRETS_DIR}/{file}"} for name, file in env_files.items()]


def with_file_env(command: list[str], args: Any, env_files: Mapping[str, str]) -> tuple[list[str], Any]:
    """(command, args) that run `command args` with each env var read from its file first.
    `args` may be a list or a Pulumi Output of one (then so is the result's)."""
    prefix = ["-m", FILE_ENV_MODULE, *env_files, "--", *command]
    if isinstance(args, list):
        return ["python"], prefix + args
    return ["python"], args.apply(lambda values: prefix + list(values))


# --- wiring (components call this) ---------------------------------------------------------

def principal(project_number: pulumi.Input[str], pool: pulumi.Input[str], namespace: pulumi.Input[str],
              ksa: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.all(project_number, pool, namespace, ksa).apply(lambda parts: workload_principal(*parts))


def secret_files(name: str, refs: tuple[SecretRef, ...], class_name: str, namespace: pulumi.Input[str], labels: dict,
                 k8s_opts: pulumi.ResourceOptions, readers: tuple[pulumi.Input[str], ...],
                 gcp_opts: pulumi.ResourceOptions) -> tuple[pulumi.Output[str], list[pulumi.Resource]]:
    """A SecretProviderClass of `refs` and the grants that let `readers` (one workload) read them.
    Where a KSA is linked to a GSA both are readers: the add-on's guide grants the KSA's principal,
    the open-source provider it derives from impersonates the annotated GSA (auth/auth.go)."""
    spc = k8s.apiextensions.CustomResource(
        f"{name}-secret-provider", api_version=SPC_API_VERSION, kind=SPC_KIND,
        metadata={"name": class_name, "namespace": namespace, "labels": labels},
        spec=pulumi.Output.all(*[ref.version_name for ref in refs]).apply(
            lambda versions: provider_class_spec(dict(zip([ref.name for ref in refs], versions)))),
        opts=k8s_opts,
    )
    return spc.metadata["name"], grant_readers(f"{name}-secrets", refs, readers, gcp_opts)
