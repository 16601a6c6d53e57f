"""What a Locust process saw, as JSON lines for the rehearsals: LOADTEST_RECORD_DIR names the
directory; each process writes its own PREFIX-<pid>.jsonl (workers never share a file)."""

from __future__ import annotations

import json
import os
import time


class Recorder:
    """Opened when the test starts (in each process); writing does nothing without a directory."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.file = None

    def open(self, **_event_kwargs) -> None:
        directory = os.environ.get("LOADTEST_RECORD_DIR")
        if directory:
            self.file = open(os.path.join(directory, f"{self.prefix}-{os.getpid()}.jsonl"), "a", buffering=1)

    def write(self, t: float | None = None, **fields) -> None:
        if self.file:
            self.file.write(json.dumps({"t": time.time() if t is None else t, **fields}) + "\n")
