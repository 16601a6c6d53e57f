"""The model registry through MLflow's REST API (/api/2.0/mlflow), standard library only.

Only what a promotion needs: read a registered model (aliases, tags), a model version, a run's
metrics; move or delete an alias; set or delete a registered-model tag. Errors carry MLflow's
error code (RESOURCE_DOES_NOT_EXIST, PERMISSION_DENIED, ...) and never the credentials.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from typing import Optional

API = "/api/2.0/mlflow"
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


class RegistryError(RuntimeError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    aliases: dict[str, str]
    """alias -> version"""
    tags: dict[str, str]


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    status: str
    run_id: Optional[str]
    source: str = ""


@dataclass(frozen=True)
class Run:
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    """Latest value of each metric."""


class RestRegistry:
    """`RestRegistry("http://127.0.0.1:5000", ("admin", password))`."""

    def __init__(self, tracking_uri: str, auth: Optional[tuple[str, str]] = None, timeout: float = 30.0):
        self.base = tracking_uri.rstrip("/") + API
        self._auth = auth
        self.timeout = timeout

    def _call(self, method: str, endpoint: str, *, params: Optional[dict] = None, body: Optional[dict] = None) -> dict:
        url = f"{self.base}/{endpoint}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self._auth:
            headers["Authorization"] = "Basic " + b64encode(f"{self._auth[0]}:{self._auth[1]}".encode()).decode()
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as err:
            text = err.read().decode(errors="replace")
            try:
                payload = json.loads(text)
                code, message = payload.get("error_code", f"HTTP_{err.code}"), payload.get("message", text)
            except ValueError:
                code, message = f"HTTP_{err.code}", text.strip()[:200] or err.reason
            if err.code == 401:
                code, message = "UNAUTHENTICATED", "tracking refused the credentials (HTTP 401)"
            raise RegistryError(code, message) from None
        except urllib.error.URLError as err:
            raise RegistryError("UNREACHABLE", f"{method} {self.base}/{endpoint}: {err.reason}") from None
        return json.loads(text) if text.strip() else {}

    # --- reads ---------------------------------------------------------------------------
    def get_model(self, name: str) -> RegisteredModel:
        model = self._call("GET", "registered-models/get", params={"name": name})["registered_model"]
        return RegisteredModel(
            name=model["name"],
            aliases={a["alias"]: str(a["version"]) for a in model.get("aliases", [])},
            tags={t["key"]: t.get("value", "") for t in model.get("tags", [])},
        )

    def get_version(self, name: str, version: str) -> ModelVersion:
        mv = self._call("GET", "model-versions/get", params={"name": name, "version": str(version)})["model_version"]
        return ModelVersion(name=mv["name"], version=str(mv["version"]), status=mv.get("status", ""),
                            run_id=mv.get("run_id") or None, source=mv.get("source", ""))

    def get_run(self, run_id: str) -> Run:
        run = self._call("GET", "runs/get", params={"run_id": run_id})["run"]
        metrics = {m["key"]: float(m["value"]) for m in run.get("data", {}).get("metrics", [])}
        return Run(run_id=run["info"]["run_id"], metrics=metrics)

    # --- writes --------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call("POST", "registered-models/alias", body={"name": name, "alias": alias, "version": str(version)})

    def delete_alias(self, name: str, alias: str) -> None:
        self._call("DELETE", "registered-models/alias", body={"name": name, "alias": alias})

    def set_model_tag(self, name: str, key: str, value: str) -> None:
        self._call("POST", "registered-models/set-tag", body={"name": name, "key": key, "value": value})

    def delete_model_tag(self, name: str, key: str) -> None:
        self._call("DELETE", "registered-models/delete-tag", body={"name": name, "key": key})
