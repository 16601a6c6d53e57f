"""`make chat-webhook` (tools/ops/chat_webhook.py): the URL comes from standard input, becomes the secret's only
enabled version, and is printed nowhere, not even when it is refused."""

from __future__ import annotations

import io

import pytest

from tools.local.secretmanager import LocalSecretManager
from tools.ops import chat_webhook
from tools.ops.stack import StackOutputs

pytestmark = pytest.mark.unit
SECRET = "mlflow-chat-webhook-url"
URL = "https://chat.googleapis.com/v1/spaces/AAA/messages?key=k3y&token=t0ken-s3cret"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(StackOutputs, "read", classmethod(
        lambda cls, stack: cls(stack, {chat_webhook.OUTPUT: SECRET})))
    return LocalSecretManager(tmp_path / "secrets")


def run(stdin: str, store) -> int:
    return chat_webhook.main(["--stack", "prod"], stdin=io.StringIO(stdin), store_factory=lambda: store)


def test_the_url_on_stdin_becomes_the_only_enabled_version_and_is_never_printed(store, capsys):
    assert run("https://hooks.slack.com/services/T/B/old\n", store) == 0
    assert run(URL + "\n", store) == 0
    assert store.access(SECRET) == URL and store.enabled_versions(SECRET) == [2]
    printed = capsys.readouterr()
    assert "version 2 is current" in printed.out and "t0ken" not in printed.out + printed.err


@pytest.mark.parametrize("given", ["", "http://chat.example.com/hook?token=t0ken-s3cret",
                                   "chat.googleapis.com/v1/spaces/AAA?token=t0ken-s3cret",
                                   "https://a.example/x?token=t0ken-s3cret https://b.example/y"])
def test_anything_but_one_https_url_is_refused_without_echoing_it(store, capsys, given):
    assert run(given + "\n", store) == chat_webhook.EXIT_USAGE
    assert store.versions(SECRET) == []
    printed = capsys.readouterr()
    assert "https://HOST" in printed.err and "t0ken" not in printed.out + printed.err


def test_on_a_terminal_the_url_is_prompted_without_echo():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts = []
    assert chat_webhook.read_url(Terminal(""), prompt=lambda text: prompts.append(text) or URL) == URL
    assert prompts and "not echoed" in prompts[0]
