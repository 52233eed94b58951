"""The adversarial corpus against ckpt-guard.

1. The corpus is real: every payload with a ``runner`` fires its canary under the stock
   loader (``pickle.loads`` / ``torch.load(weights_only=False)``) in a subprocess.
2. ckpt-guard's reader + analysis see an ``unsafe`` global in every case, import nothing new
   and leave the canary untouched.
3. The CLI: ``check --format json`` reports ``unsafe-pickle`` with action ``fail`` and exits
   1 for every case; after ``check``, ``inspect`` and ``fix`` no canary exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ckpt_guard.analyze import analyze
from ckpt_guard.read import UnreadableError, read_path
from tests.adversarial.corpus import CASES, Case

ROOT = Path(__file__).resolve().parents[2]
IDS = [c.id for c in CASES]


def _canary(directory: Path, case: Case) -> Path:
    return directory / f"canary-{case.id}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """id -> (file, canary); files written once for the module."""
    d = tmp_path_factory.mktemp("corpus")
    out = {}
    for case in CASES:
        canary = _canary(d, case)
        out[case.id] = (case.write(d, canary), canary)
    return out


# ---- 1. the payloads really fire under stock loaders ---------------------------------------
_FIRE = textwrap.dedent("""
    import json, pickle, sys
    for path, runner in json.loads(sys.argv[1]):
        try:
            if runner == "pickle":
                pickle.loads(open(path, "rb").read())
            else:
                import torch
                torch.load(path, weights_only=False)
        except BaseException:
            pass  # the side effect happened (or not) before any error
""")


@pytest.fixture(scope="module")
def fired(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bool]:
    """Build a second copy of the corpus and run each payload under its stock loader."""
    d = tmp_path_factory.mktemp("fire")
    jobs = []
    for case in CASES:
        if case.runner:
            jobs.append((str(case.write(d, _canary(d, case))), case.runner))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", _FIRE, json.dumps(jobs)], cwd=d, env=env,
                   capture_output=True, timeout=300, check=False)
    return {c.id: _canary(d, c).exists() for c in CASES}


@pytest.mark.parametrize("case_id", [c.id for c in CASES if c.runner])
def test_payload_really_fires_under_stock_loader(case_id: str, fired: dict[str, bool]) -> None:
    assert fired[case_id], f"{case_id}: the payload did not fire; the case proves nothing"


def test_every_case_cites_a_source() -> None:
    for case in CASES:
        assert case.citation.strip() and case.technique.strip(), case.id
    assert len(set(IDS)) == len(IDS)


# ---- 2. reader + analysis in process --------------------------------------------------------
@pytest.fixture(scope="module")
def warm(corpus: dict[str, tuple[Path, Path]]) -> None:
    """Import every lazily-imported reader module once, so sys.modules is stable."""
    for path, _ in corpus.values():
        with contextlib.suppress(UnreadableError):
            analyze(read_path(str(path)))


@pytest.mark.parametrize("case_id", IDS)
def test_reader_flags_unsafe(case_id: str, corpus: dict[str, tuple[Path, Path]],
                             warm: None) -> None:
    path, canary = corpus[case_id]
    before = set(sys.modules)
    analysis = analyze(read_path(str(path)))  # must not raise: a readable malicious file
    assert set(sys.modules) == before, f"imported: {set(sys.modules) - before}"
    assert not canary.exists()
    unsafe = [v for v in analysis.globals if v.safety == "unsafe"]
    assert unsafe, f"{case_id}: no unsafe global among " + ", ".join(
        f"{v.use.qualname}={v.safety}" for v in analysis.globals)


# ---- 3. the CLI end to end --------------------------------------------------------------------
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ckpt_guard", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def cli_runs(corpus: dict[str, tuple[Path, Path]],
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """check, inspect and fix once each over the whole corpus."""
    files = [str(p) for p, _ in corpus.values()]
    cwd = next(iter(corpus.values()))[0].parent
    check = _cli("check", "--format", "json", *files, cwd=cwd)
    inspect = _cli("inspect", "--format", "json", *files, cwd=cwd)
    out = tmp_path_factory.mktemp("fixed")
    fix_out = _cli("fix", "--format", "json", "--out", str(out), *files, cwd=cwd)
    fix_inplace = _cli("fix", "--format", "json", *files, cwd=cwd)
    return {"check": check, "inspect": inspect, "fix_out": fix_out, "fix": fix_inplace}


def _report_by_name(proc: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"no JSON report (rc={proc.returncode}): {proc.stderr[-2000:]}") \
            from e
    return {Path(f["path"]).name: f for f in report["files"]}


@pytest.mark.parametrize("case_id", IDS)
def test_check_flags_unsafe_pickle(case_id: str, corpus: dict[str, tuple[Path, Path]],
                                   cli_runs: dict[str, subprocess.CompletedProcess[str]]
                                   ) -> None:
    proc = cli_runs["check"]
    assert proc.returncode == 1, proc.stderr[-2000:]
    path, _ = corpus[case_id]
    entry = _report_by_name(proc)[path.name]
    rules = {(f["rule"], f["action"]) for f in entry["findings"]}
    assert ("unsafe-pickle", "fail") in rules, entry["findings"]
    assert entry["status"] == "fail"


@pytest.mark.parametrize("command", ["check", "inspect", "fix_out", "fix"])
def test_cli_never_fires_a_canary(command: str, corpus: dict[str, tuple[Path, Path]],
                                  cli_runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = cli_runs[command]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    fired = [cid for cid, (_, canary) in corpus.items() if canary.exists()]
    assert not fired, f"{command} executed payloads: {fired}"


def test_fix_leaves_malicious_files_alone(corpus: dict[str, tuple[Path, Path]],
                                          cli_runs: dict[str, subprocess.CompletedProcess[str]]
                                          ) -> None:
    """A file that fails unsafe-pickle is never rewritten (nor 'fixed' into looking clean)."""
    proc = cli_runs["fix"]
    by_name = _report_by_name(proc)
    for cid, (path, _) in corpus.items():
        assert by_name[path.name]["status"] != "fixed", cid
