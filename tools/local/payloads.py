"""The local stand-in for the payload log's Cloud Logging sink: every serving pod's payload entries (the
JSON lines the pods write on stdout, which the local platform keeps in its serving log) appended to
WORKDIR/payloads.jsonl, the file the drift job reads locally instead of BigQuery. As the sink, it copies
only entries whose message is the payload log's, and only whole lines."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

from infra.payload_store import PAYLOAD_LOG_MESSAGE

PAYLOADS_FILE = "payloads.jsonl"
POLL_SECONDS = 0.5


def is_payload_entry(line: bytes) -> bool:
    try:
        document = json.loads(line)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("message") == PAYLOAD_LOG_MESSAGE


class PayloadRecorder:
    """Follows `source` (append-only: every serving pod, old and new, writes there) from where it last read,
    copying the lines `keep` accepts (the payload entries; the recording sink passes its own)."""

    def __init__(self, source: Path, target: Path, keep: Callable[[bytes], bool] = is_payload_entry):
        self.source = source
        self.target = target
        self.keep = keep
        self._offset = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self) -> int:
        """Copies the entries written since the last call; how many."""
        with self._lock:
            try:
                with open(self.source, "rb") as log:
                    log.seek(self._offset)
                    chunk = log.read()
            except FileNotFoundError:
                return 0
            whole = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next call
            self._offset += len(whole)
            entries = [line for line in whole.splitlines(keepends=True) if self.keep(line)]
            if entries:
                with open(self.target, "ab") as out:
                    out.writelines(entries)
            return len(entries)

    def _run(self) -> None:
        while not self._stopped.wait(POLL_SECONDS):
            self.record()

    def start(self) -> None:
        self.target.touch()
        self._thread = threading.Thread(target=self._run, name="payload-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.record()
