"""fp32-payload: check and fix make one decision (issue 9, defect 4). The rule reports — and
a fix casts — only above ``max-bytes``, also when the file is rewritten for another rule."""

from __future__ import annotations

import pytest

from ckpt_guard.analyze import analyze
from ckpt_guard.policy.rules import evaluate
from ckpt_guard.read import read_path
from tests.rewrite.helpers import fix_rules, run_fix


@pytest.mark.parametrize("max_bytes", [0, 10_000_000])
def test_fix_casts_iff_check_reports(ckpt_factory, tmp_path, max_bytes):
    fx = ckpt_factory.copy("train-adam", tmp_path)
    rules = fix_rules(fp32_payload={"max-bytes": max_bytes})
    findings, _ = evaluate(analyze(read_path(str(fx.path))), rules, path=str(fx.path))
    reported = any(f.rule == "fp32-payload" for f in findings)
    result = run_fix(fx.path, rules)
    assert result.error is None and result.changed  # the optimizer goes either way
    assert reported == (max_bytes == 0)
    assert (result.cast_bytes > 0) == reported
    if not reported:
        assert any("not over fp32-payload max-bytes" in n for n in result.notes)
    # And the fixed file is not reported either way.
    after, _ = evaluate(analyze(read_path(str(fx.path))), rules, path=str(fx.path))
    assert not [f for f in after if f.fixable], after
