"""``python -m ckpt_guard.action`` — the action's entrypoint without the CLI wrapper."""

import sys

from ckpt_guard.action.main import main
from ckpt_guard.report.encoding import install

install()

raise SystemExit(main(sys.argv[1:]))
