"""The IAP client plugin (tools/clients/mlflow-iap-auth), installed as a user would, used by MLflow's own
client against a recording server: basic auth stays in `Authorization`, the IAP token goes in
`Proxy-Authorization`, and the token is fetched once per lifetime."""

from __future__ import annotations

import base64
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tools.venvs import runtime

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "tools" / "clients" / "mlflow-iap-auth"

CLIENT = """
import mlflow_iap_auth
from mlflow import MlflowClient

fetched = []
def fake_fetch(audience):
    fetched.append(audience)
    return f"id-token-for-{audience}"

mlflow_iap_auth._fetch_id_token = fake_fetch
client = MlflowClient()
client.search_experiments()
client.search_experiments()
print(len(fetched))
"""


class Recorder(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def _answer(self):
        self.seen.append(dict(self.headers))
        body = json.dumps({"experiments": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def recording_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    Recorder.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", Recorder.seen
    server.shutdown()


@pytest.mark.slow
def test_mlflow_client_sends_basic_auth_and_the_iap_token_together(tmp_path, recording_server):
    url, seen = recording_server
    target, source = tmp_path / "site", tmp_path / "plugin"
    shutil.copytree(PLUGIN, source)  # setuptools builds in the source tree
    runtime().run(["-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
                  timeout=300).check("installing the plugin")
    env = {"PYTHONPATH": str(target),
           "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_AUTH": "iap", "MLFLOW_IAP_CLIENT_ID": "1234-abc.apps",
           "MLFLOW_TRACKING_USERNAME": "ana", "MLFLOW_TRACKING_PASSWORD": "s3cret"}
    done = runtime().run(["-c", CLIENT], home=tmp_path, env=env, timeout=120)
    assert done.code == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "1", "the token is fetched once and reused"
    assert len(seen) == 2
    for headers in seen:
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"ana:s3cret").decode()
        assert headers["Proxy-Authorization"] == "Bearer id-token-for-1234-abc.apps"


IMPERSONATION = """
import google.auth
from google.auth import impersonated_credentials
import mlflow_iap_auth

google.auth.default = lambda scopes: ("user-credentials", "project")
class Target:
    def __init__(self, source_credentials, target_principal, target_scopes):
        self.principal = target_principal
impersonated_credentials.Credentials = Target
class IdToken:
    def __init__(self, target, target_audience, include_email):
        self.token = f"{target.principal}|{target_audience}|{include_email}"
    def refresh(self, request):
        pass
impersonated_credentials.IDTokenCredentials = IdToken
print(mlflow_iap_auth._fetch_id_token("1234-abc.apps"))
"""


@pytest.mark.slow
def test_a_person_gets_the_token_by_impersonating_the_named_service_account(tmp_path):
    env = {"PYTHONPATH": str(PLUGIN), "MLFLOW_IAP_SERVICE_ACCOUNT": "mlflow-users@p.iam.gserviceaccount.com"}
    done = runtime().run(["-c", IMPERSONATION], home=tmp_path, env=env, timeout=120)
    assert done.code == 0, done.stderr
    assert done.stdout.strip() == "mlflow-users@p.iam.gserviceaccount.com|1234-abc.apps|True"


@pytest.mark.slow
def test_iap_auth_without_the_client_id_says_what_to_set(tmp_path):
    code = "import mlflow_iap_auth; mlflow_iap_auth.IapRequestAuthProvider().get_auth()"
    done = runtime().run(["-c", code], home=tmp_path, env={"PYTHONPATH": str(PLUGIN)}, timeout=120)
    assert done.code != 0
    assert "MLFLOW_TRACKING_AUTH=iap needs MLFLOW_IAP_CLIENT_ID" in done.stderr
