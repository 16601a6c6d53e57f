"""Ops' modules that need the whole of MLflow (its auth client: tools.ops.grants, tools.ops.user_password)
or the serving image's code (the rehearsal, mlflow_serving.rehearse) run in the runtime virtualenv
(`tools.venvs`), against tracking as its admin, the credentials in their environment only."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from tools.venvs import Finished, Venv, runtime


class AdminRunner:
    def __init__(self, tracking_uri: str, username: str, password: str, venv: Optional[Venv] = None):
        self.tracking_uri, self.venv = tracking_uri, venv or runtime()
        self._credentials = (username, password)

    def run(self, args: Sequence[str], timeout: float, env: Optional[Mapping[str, str]] = None,
            secrets: Sequence[str] = ()) -> Finished:
        """`python ARGS` to its end, the admin's password (and `secrets`) masked; VenvError if it cannot run."""
        credentials = {"MLFLOW_TRACKING_URI": self.tracking_uri, "MLFLOW_TRACKING_USERNAME": self._credentials[0],
                       "MLFLOW_TRACKING_PASSWORD": self._credentials[1]}
        return self.venv.run(args, env=credentials | dict(env or {}), timeout=timeout,
                             secrets=(self._credentials[1], *secrets))

    def run_module(self, args: Sequence[str], what: str, timeout: float, env: Optional[Mapping[str, str]] = None,
                   secrets: Sequence[str] = ()) -> dict:
        """A module that must succeed and print its result as a JSON last line; VenvError otherwise."""
        return self.run(args, timeout, env, secrets).check(what).json()
