"""Set the chat webhook's URL (`monitoring.notify.chat`): a new version of the stack's secret
`chat-webhook-url`, read from standard input so it stays out of shell history, arguments and logs.

    make chat-webhook [STACK=prod]              # prompts (no echo) on a terminal
    pass show chat/mlflow | make chat-webhook   # or one line on standard input

The notification receiver reads the newest version when it next has an alert to post: nothing rolls.
Older versions are disabled, so the previous URL can no longer be read. Credentials: Application Default
Credentials with roles/secretmanager.secretVersionManager on the secret (tools/ops/secret_manager.py);
the secret's name is the stack output `chat_webhook_secret`.

Exit codes: 0 set, 1 error, 2 usage (no URL, or not an https URL).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Callable, Optional, Sequence, TextIO
from urllib.parse import urlsplit

from tools.ops.interfaces import SecretStore, SecretStoreError
from tools.ops.stack import StackOutputError, StackOutputs

EXIT_ERROR, EXIT_USAGE = 1, 2
OUTPUT = "chat_webhook_secret"


def checked_url(text: str) -> str:
    """The URL, stripped; ValueError (without the URL: it is the credential) unless an https URL with a host."""
    url = text.strip()
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or any(c.isspace() for c in url):
        raise ValueError("the chat webhook URL must be one https://HOST/... URL (Google Chat or Slack incoming "
                         "webhook)")
    return url


def set_url(url: str, store: SecretStore, secret: str) -> int:
    """Adds `url` as the newest version of `secret`, disables the older ones; returns the new version."""
    version = store.add_version(secret, url)
    for previous in store.enabled_versions(secret):
        if previous < version:
            store.disable(secret, previous)
    return version


def read_url(stream: TextIO, prompt: Callable[[str], str] = getpass.getpass) -> str:
    return prompt("chat webhook URL (not echoed): ") if stream.isatty() else stream.readline()


def main(argv: Optional[Sequence[str]] = None, stdin: TextIO = sys.stdin,
         store_factory: Optional[Callable[[], SecretStore]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ops.chat_webhook", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev", help="Pulumi stack (default dev)")
    args = parser.parse_args(argv)
    try:
        url = checked_url(read_url(stdin))
    except ValueError as err:
        print(f"chat-webhook: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        secret = str(StackOutputs.read(args.stack).get(OUTPUT))
        if store_factory is None:
            from tools.ops.secret_manager import CloudSecretManager
            store_factory = CloudSecretManager
        version = set_url(url, store_factory(), secret)
    except (StackOutputError, SecretStoreError) as err:
        print(f"chat-webhook: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    print(f"chat-webhook: {secret} version {version} is current, older versions disabled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
