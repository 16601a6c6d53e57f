"""The rehearsals of sign-in through IAP, against a real MLflow server: the auth config and IAP settings
the prod plan renders, the identity hook and the access Job of mlflow_image/, the runtime the image
installs (.venv-runtime). A stand-in for IAP signs assertions with its own key and publishes it as Google
publishes IAP's; the server trusts it exactly as it trusts Google's: by MLFLOW_IAP_KEYS_URL.

Two people of different teams each see only what their team may; a forged, an expired and a
wrong-audience assertion are refused with 401, as is a person's password; the admin's password still
works without IAP (break-glass)."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.iap_tokens import AUDIENCE, PROJECT_NUMBER, SigningKey
from tools.local.manifests import Manifests, container
from tools.local.processes import free_port
from tools.venvs import runtime

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "break-glass-" + os.urandom(8).hex()
STAND_IN_KEY = SigningKey.new("stand-in-1")


def _keys_server() -> ThreadingHTTPServer:
    """IAP's key file, as https://www.gstatic.com/iap/verify/public_key serves it: kid -> PEM."""
    body = json.dumps({STAND_IN_KEY.kid: STAND_IN_KEY.public_pem}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _env(spec: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in spec.get("env", []) if "value" in e}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict]:
    """Tracking as the prod plan configures it, its databases in SQLite, IAP's keys from the stand-in."""
    work = tmp_path_factory.mktemp("iap")
    manifests = Manifests.load("prod")
    tracking = container(manifests.one("Deployment", component="tracking"), "mlflow")
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(manifests.config_map_data("mlflow", "mlflow-auth-config")["basic_auth.ini"])
    ini["mlflow"]["database_uri"] = f"sqlite:///{work}/auth.db"
    with (work / "auth.ini").open("w") as out:
        ini.write(out)
    keys = _keys_server()
    iap = {k: v for k, v in _env(tracking).items() if k.startswith("MLFLOW_IAP_")}
    assert iap["MLFLOW_IAP_PROJECT_NUMBER"] == PROJECT_NUMBER  # the mocks' project number, as the plan renders it
    venv = runtime()
    env = {**os.environ, **iap, "MLFLOW_IAP_KEYS_URL": f"http://127.0.0.1:{keys.server_port}/",
           "MLFLOW_AUTH_CONFIG_PATH": str(work / "auth.ini"), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "PYTHONPATH": str(ROOT / "mlflow_image")}
    port = free_port()
    log = (work / "server.log").open("w")
    process = subprocess.Popen([str(venv.bin("mlflow")), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
                                "--port", str(port), "--backend-store-uri", f"sqlite:///{work}/mlflow.db",
                                "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        else:
            pytest.fail("tracking did not start:\n" + (work / "server.log").read_text()[-3000:])
        yield {"url": url, "env": env, "venv": venv, "manifests": manifests}
    finally:
        process.terminate()
        process.wait(timeout=30)
        keys.shutdown()


def as_person(email: str, **claims) -> dict:
    return {"x-goog-iap-jwt-assertion": STAND_IN_KEY.sign(email, **claims)}


ADMIN = ("admin", ADMIN_PASSWORD)


def _search(url: str, headers: dict) -> requests.Response:
    return requests.post(f"{url}/api/2.0/mlflow/experiments/search", json={"max_results": 100}, headers=headers,
                         timeout=30)


def _apply_teams(server: dict) -> str:
    """The access Job as the prod plan renders it, as the admin."""
    job = server["manifests"].one("Job", component="access")
    teams = _env(job["spec"]["template"]["spec"]["containers"][0])["ACCESS_TEAMS"]
    done = subprocess.run([str(server["venv"].bin("python")), "-m", "mlflow_access"], capture_output=True, text=True,
                          timeout=120, env={**server["env"], "MLFLOW_TRACKING_URI": server["url"],
                                            "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
                                            "ACCESS_TEAMS": teams})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_people_of_different_teams_each_see_only_what_their_team_may(server):
    url = server["url"]
    for name in ("fraud-detector", "risk-scores", "marketing-uplift"):
        assert requests.post(f"{url}/api/2.0/mlflow/experiments/create", json={"name": name}, auth=ADMIN,
                             timeout=30).ok
    # bob signs in before the Job runs: a domain member is found among the users
    assert _search(url, as_person("bob@risk.example.com")).json() == {}
    applied = _apply_teams(server)
    assert "team-fraud" in applied and "team-risk" in applied

    def names(email: str) -> set[str]:
        answer = _search(url, as_person(email))
        assert answer.status_code == 200, answer.text
        return {e["name"] for e in answer.json().get("experiments", [])}

    assert names("ada@example.com") == {"fraud-detector"}
    assert names("bob@risk.example.com") == {"fraud-detector", "risk-scores"}
    assert names("eve@example.com") == set()  # signed in, in no team
    fraud_id = next(e["experiment_id"] for e in _search(url, as_person("ada@example.com")).json()["experiments"])
    rename = {"experiment_id": fraud_id, "new_name": "fraud-detector-v2"}
    assert requests.post(f"{url}/api/2.0/mlflow/experiments/update", json=rename, headers=as_person("bob@risk.example.com"),
                         timeout=30).status_code == 403  # risk may read fraud's, not edit it
    assert requests.post(f"{url}/api/2.0/mlflow/experiments/update", json=rename, headers=as_person("ada@example.com"),
                         timeout=30).status_code == 200


@pytest.mark.parametrize("headers, reason", [
    pytest.param({"x-goog-iap-jwt-assertion": SigningKey.new("stand-in-1").sign("ada@example.com")},
                 "Could not verify token signature", id="forged"),
    pytest.param(as_person("ada@example.com", issued_ago=900), "expired", id="expired"),
    pytest.param(as_person("ada@example.com", audience=AUDIENCE.replace(PROJECT_NUMBER, "999999999999")),
                 "is not a backend service of project", id="wrong-audience"),
    pytest.param({}, "sign in through Identity-Aware Proxy", id="no-assertion"),
])
def test_a_request_without_a_valid_assertion_is_refused_with_401(server, headers, reason):
    answer = _search(server["url"], headers)
    assert answer.status_code == 401 and reason in answer.text, answer.text


def test_a_person_cannot_use_a_password_but_the_admin_can_without_iap(server):
    url = server["url"]
    _search(url, as_person("ada@example.com"))  # ada exists as a user
    assert requests.post(f"{url}/api/2.0/mlflow/experiments/search", json={"max_results": 10}, auth=("ada@example.com", "guess"),
                         timeout=30).status_code == 401
    assert requests.post(f"{url}/api/2.0/mlflow/experiments/search", json={"max_results": 10}, auth=ADMIN, timeout=30).status_code == 200
