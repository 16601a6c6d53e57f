"""How `make promote` tells people a promotion was refused or rolled back: the same notification line the
platform's pods print (mlflow_notify.notice), written where the target's notifications are matched.

`local` (tools/ops/local.py): the recording sink of a running `make local` (WORKDIR/notifications.jsonl). `cluster`: an entry in
the project's Cloud Logging (log `mlflow-notify`), which the notifications alert policy sends to the
stack's channels; it needs `logging.logEntries.create` (roles/logging.logWriter) for the operator's
Application Default Credentials.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from tools.ops.interfaces import TargetError

ROOT = Path(__file__).resolve().parents[2]
# mlflow_notify (standard library only) defines the notification line; the pods import it from the image.
sys.path.append(str(ROOT / "mlflow_image"))
from mlflow_notify import PROMOTION_REFUSED, ROLLED_BACK, notice  # noqa: E402

LOG_NAME = "mlflow-notify"
ENTRIES_WRITE = "https://logging.googleapis.com/v2/entries:write"
Notify = Callable[[dict], None]


def promotion_notice(model: str, alias: str, version: str, *, rolled_back: bool, reason: str) -> dict:
    if rolled_back:
        return notice(ROLLED_BACK, f"{model}@{alias} rolled back: {reason}", model=model, alias=alias,
                      version=version)
    return notice(PROMOTION_REFUSED, f"{model} version {version} not promoted to @{alias}: {reason}", model=model,
                  alias=alias, version=version)


def cloud_logging_notify(project: Callable[[], str]) -> Notify:
    """Writes to the project `project()` names, read when a notification is sent."""
    def write(entry: dict) -> None:
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/logging.write"])
        response = AuthorizedSession(credentials).post(ENTRIES_WRITE, json={
            "logName": f"projects/{project()}/logs/{LOG_NAME}", "resource": {"type": "global"},
            "entries": [{"severity": entry["severity"], "jsonPayload": entry}]})
        if response.status_code != 200:
            raise TargetError(f"Cloud Logging answered {response.status_code}: {response.text[:300]}")
    return write
