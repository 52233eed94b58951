"""Moved to :mod:`ckpt_guard.app.check`. This name stays for code written against it: importing
``ckpt_guard.engine`` gives that very module (so monkeypatching either name patches both)."""

import sys

from ckpt_guard.app import check as _moved

sys.modules[__name__] = _moved
