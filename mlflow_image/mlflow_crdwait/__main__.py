"""`python -m mlflow_crdwait --timeout 840 NAME...`: reads each CRD with the pod's own service account
token, from inside the cluster (its RBAC allows `get` on exactly these CRDs)."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from typing import Optional

from mlflow_crdwait import NotEstablished, wait_established

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"


def in_cluster_fetch(name: str) -> Optional[dict]:
    """The CRD `name`, or None while the API server does not know it (404)."""
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    with open(f"{ACCOUNT}/token") as token:
        request = urllib.request.Request(f"https://{host}:{port}{CRD_PATH}{name}",
                                         headers={"Authorization": f"Bearer {token.read().strip()}"})
    context = ssl.create_default_context(cafile=f"{ACCOUNT}/ca.crt")
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="mlflow_crdwait")
    parser.add_argument("--timeout", type=float, required=True, help="seconds to wait in all")
    parser.add_argument("names", nargs="+", help="CRD names, e.g. gateways.gateway.networking.k8s.io")
    args = parser.parse_args(argv)
    try:
        wait_established(args.names, in_cluster_fetch, args.timeout)
    except NotEstablished as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
