"""Loading the served model in the background, retried with a bounded backoff.

On a fresh platform no version is behind `models:/NAME@ALIAS` yet: the server must stay up (no
crash loop), say why it is not ready, and serve by itself soon after the first promotion.
Nothing here imports MLflow; the two steps it runs are given to it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

logger = logging.getLogger("mlflow_serving")

MAX_REASON_CHARS = 300
# Registry answers meaning "nothing behind the alias yet": the model or the alias does not exist.
_MISSING_MODEL = "RESOURCE_DOES_NOT_EXIST"
_MISSING_ALIAS = "INVALID_PARAMETER_VALUE"
_FORBIDDEN = "PERMISSION_DENIED"


@dataclass(frozen=True)
class Backoff:
    """Delay after the n-th failed attempt: first, first*factor, ... never above cap."""

    first: float = 1.0
    factor: float = 2.0
    # Bounds the wait after the first promotion: serving is up well within 60 s of it.
    cap: float = 15.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.first * self.factor ** (failures - 1))


@dataclass(frozen=True)
class Status:
    state: str
    """loading (an attempt runs), waiting (the next one is due), building (the model's environment),
    failed (the model cannot load, or its environment cannot be built), ready."""
    model_uri: str
    attempts: int = 0
    """Failed attempts so far."""
    reason: str = ""
    retry_in_seconds: Optional[float] = None

    def body(self) -> dict:
        return {"ready": self.state == "ready", "state": self.state, "model_uri": self.model_uri,
                "attempts": self.attempts, "reason": self.reason, "retry_in_seconds": self.retry_in_seconds}


def describe(err: BaseException) -> str:
    """`CODE: first line of the message`, the code being MLflow's error code or the exception type."""
    code = getattr(err, "error_code", None) or type(err).__name__
    lines = str(err).strip().splitlines()
    message = lines[0] if lines else ""
    text = message if message.startswith(code) else f"{code}: {message}"
    return text[:MAX_REASON_CHARS]


def explain(err: BaseException, model_uri: str) -> str:
    """Why `model_uri` could not be fetched, in the operator's terms, with MLflow's own reason."""
    code, reason = getattr(err, "error_code", None), describe(err)
    if code == _MISSING_MODEL or (code == _MISSING_ALIAS and "alias" in str(err)):
        return f"no version behind {model_uri} yet ({reason})"
    if code == _FORBIDDEN:
        # MLflow 3's basic auth answers 403, not 404, to a non-admin asking for an unregistered model.
        return f"{model_uri}: the model is not registered yet or the serving user lacks READ on it ({reason})"
    return reason


class ModelLoader:
    """Runs `fetch(model_uri) -> local path` until it succeeds, then `prepare(path)` (restores the
    model's environment) and `build(path) -> ASGI app` once.

    A failed fetch (nothing behind the alias, 401/403, tracking unreachable) is retried after
    `backoff`; a failed prepare or build (an environment that cannot be built, a model that cannot
    load) is final: the pod stays up, unready, with the reason, until it is rolled onto another version.
    """

    def __init__(self, model_uri: str, fetch: Callable[[str], str], build: Callable[[str], Any],
                 backoff: Backoff = Backoff(), sleep: Callable[[float], None] = time.sleep,
                 prepare: Optional[Callable[[str], str]] = None):
        self.model_uri = model_uri
        self.fetch = fetch
        self.prepare = prepare
        self.build = build
        self.backoff = backoff
        self.sleep = sleep
        self.app: Any = None
        self.status = Status("loading", model_uri, reason="downloading and loading the model")

    def start(self) -> None:
        # A daemon: a pod told to stop while it waits must not hang on this thread.
        threading.Thread(target=self.run, name="model-loader", daemon=True).start()

    def run(self) -> None:
        failures = 0
        while True:
            try:
                path = self.fetch(self.model_uri)
                break
            except Exception as err:
                failures += 1
                delay = self.backoff.delay(failures)
                reason = explain(err, self.model_uri)
                self.status = Status("waiting", self.model_uri, failures, reason, delay)
                logger.warning("%s not loaded (attempt %d): %s; retrying in %gs",
                               self.model_uri, failures, reason, delay)
                self.sleep(delay)
                self.status = Status("loading", self.model_uri, failures, reason)
        if self.prepare is not None and not self._prepare(path, failures):
            return
        try:
            self.app = self.build(path)
        except Exception as err:
            reason = f"the model cannot be loaded ({describe(err)}); roll the pods onto another version"
            self.status = Status("failed", self.model_uri, failures + 1, reason)
            logger.error("%s downloaded to %s: %s", self.model_uri, path, reason, exc_info=True)
            return
        self.status = Status("ready", self.model_uri, failures)
        logger.info("%s loaded from %s after %d failed attempts: serving", self.model_uri, path, failures)

    def _prepare(self, path: str, failures: int) -> bool:
        self.status = Status("building", self.model_uri, failures, "restoring the model's recorded environment")
        try:
            logger.info("%s: %s", self.model_uri, self.prepare(path))
        except Exception as err:
            reason = f"the model's environment cannot be built ({describe(err)}); roll the pods onto another version"
            self.status = Status("failed", self.model_uri, failures + 1, reason)
            logger.error("%s downloaded to %s: %s", self.model_uri, path, reason)
            return False
        self.status = Status("loading", self.model_uri, failures, "loading the model")
        return True
