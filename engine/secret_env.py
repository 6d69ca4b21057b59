"""Secrets given in the environment, taken out of it for good.

`os.environ.pop` hides a variable from child processes but not from
/proc/<pid>/environ, which shows the environment the process was exec'ed with
for as long as it lives. So on Linux the node, when it finds a secret variable,
exec's itself once more (same pid, same command line) with the secrets removed
from its environment and handed over in an anonymous in-memory file (memfd) it
inherits; the new image reads them, closes the file and goes on. The worker
template, and every worker forked from it, start from the scrubbed environment.
"""

from __future__ import annotations

import json
import os
import sys

from engine.options import SERVE_OPTIONS, ConfigError

SECRET_ENV = tuple(option.env for option in SERVE_OPTIONS if option.secret)
HANDOFF_ENV = "RECNODE_SECRETS_FD"  # the number of the inherited file holding them (not a secret itself)


def take_secrets(reexec: bool) -> dict[str, str]:
    """The secret variables, none of them left in this process's environment.
    With `reexec` (a command started from its own command line), may exec the
    process again and not return: the new image gets the secrets from here."""
    handoff = os.environ.pop(HANDOFF_ENV, None)
    if handoff is not None:
        return _read_handoff(handoff)
    found = {name: os.environ[name] for name in SECRET_ENV if name in os.environ}
    if found and reexec and hasattr(os, "memfd_create") and sys.executable:
        _exec_without(found)
    for name in found:
        del os.environ[name]  # at least no child inherits them
    return {name: value for name, value in found.items() if value}


def _exec_without(found: dict[str, str]) -> None:
    fd = os.memfd_create("recnode-secrets")  # close-on-exec until made inheritable below
    os.write(fd, json.dumps(found).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    environment = {name: value for name, value in os.environ.items() if name not in SECRET_ENV}
    environment[HANDOFF_ENV] = str(fd)
    sys.stdout.flush()
    sys.stderr.flush()
    # orig_argv keeps the interpreter's own options and how the program was named
    # (a script, `-m engine.cli`), so the new image runs exactly this command again.
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environment)


def _read_handoff(handoff: str) -> dict[str, str]:
    try:
        fd = int(handoff)
        with os.fdopen(fd, "rb") as f:
            found = json.loads(f.read())
        if not isinstance(found, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as error:
        raise ConfigError(f"{HANDOFF_ENV}: cannot read the secrets handed over: {error}") from None
    return {name: value for name, value in found.items() if name in SECRET_ENV and value}
