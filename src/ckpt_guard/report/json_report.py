"""The JSON report (the contract in :mod:`ckpt_guard.report.model`)."""

from __future__ import annotations

import json

from ckpt_guard.report.model import Report


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n"
