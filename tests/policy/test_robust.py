"""Whatever a policy file holds, loading it yields a Policy or a PolicyError — never a
traceback — and every problem line names the file with a position."""

from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpt_guard.policy import Policy, PolicyError, load_text

KEYS = ["version", "include", "exclude", "rules", "overrides", "paths", "action", "keep",
        "max-bytes", "cast-to", "keep-fp32", "on-overflow", "remove-training-files",
        "optimizer-state", "fp32-payload", "file-size", "unsafe-pickle", "optimiser-state"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12), st.floats(allow_nan=False),
                    st.sampled_from(["fail", "fix", "warn", "off", "ema", "float16", "50MB",
                                     "1.5GiB", "50 parsecs", "*.pt", "a\\", "!x/", ""]),
                    st.text(max_size=8))
DATA = st.recursive(SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=5)), kids, max_size=5)),
    max_leaves=25)
LINE = re.compile(r"^p\.yml(:\d+:\d+)?: .+$")


def _check(text: str) -> None:
    try:
        result = load_text(text, "p.yml")
    except PolicyError as e:
        lines = str(e).splitlines()
        assert lines and all(LINE.match(ln) for ln in lines), str(e)
    else:
        assert isinstance(result, Policy)
        for rel in ("a.pt", "x/y.bin"):
            result.matches(rel)
            result.rules_for(rel)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({"version": st.sampled_from([1, 1, 2, "1"])}, optional={
    "rules": DATA, "include": DATA, "exclude": DATA, "overrides": DATA}))
def test_structured_documents(doc: dict) -> None:
    _check(yaml.safe_dump(doc, sort_keys=False))


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("version: 1\n rules-[]{},'\"*&!|>#%@`\t?")),
               max_size=80))
def test_arbitrary_text(text: str) -> None:
    _check(text)
