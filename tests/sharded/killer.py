"""Run the CLI, SIGKILLing the process just before its Nth file-system mutation (os.replace,
os.link, os.unlink, os.rename) — a real kill of a real process at a chosen moment.
KILL_AT=0: never; the number of mutations and what each did (``replace:<destination>``…)
are printed to stderr at exit."""

from __future__ import annotations

import atexit
import os
import signal
import sys

_AT = int(os.environ.get("KILL_AT", "0"))
_count = [0]
_log: list[str] = []


def _wrap(name: str) -> None:
    real = getattr(os, name)

    def mutation(*args, **kwargs):
        _count[0] += 1
        _log.append(f"{name}:{os.path.basename(str(args[-1]))}")
        if _count[0] == _AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(os, name, mutation)


for _name in ("replace", "link", "unlink", "rename"):
    _wrap(_name)
atexit.register(lambda: print(f"MUTATIONS={_count[0]}\nLOG={' '.join(_log)}",
                              file=sys.stderr))

from ckpt_guard.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
