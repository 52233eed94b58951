"""Issue 10 leftover: torch.distributed.checkpoint directories under the real `pre-commit`.
The hooks' `files:` regex takes a DCP directory's files (`*.distcp`, `.metadata`), which have
no weight suffix; ckpt-guard checks the directory they belong to, once, however many of its
files are staged (app/discover.py) — never a `.distcp` alone, which is items back to back, not
a file torch loads. Directories written by `torch.distributed.checkpoint.save` itself."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from tests.adversarial import pickles as P
from tests.hooks.conftest import git, pre_commit, user_repo

dcp = pytest.importorskip("torch.distributed.checkpoint")


def _save(where: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save({"w": torch.ones(8, 8), "step": 3, "nested": {"t": torch.arange(5)}},
                 checkpoint_id=str(where))
    return where


def _rows(out: str, name: str) -> int:
    """Report rows for ``name`` (the table's first column)."""
    return len(re.findall(rf"(?m)^{re.escape(name)}\s+dcp-dir", out))


def test_staged_dcp_files_check_their_directory_once(tmp_path: Path, hook_repo,
                                                     pre_commit_home) -> None:
    repo = user_repo(tmp_path, hook_repo, "ckpt-guard")
    ck = _save(repo / "ck")
    assert sorted(p.name for p in ck.iterdir()) == [".metadata", "__0_0.distcp"]
    git("add", "ck", cwd=repo)
    p = pre_commit(repo, pre_commit_home, "--verbose")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "Skipped" not in out  # the regex took them
    assert _rows(out, "ck") == 1 and "PASS" in out  # one unit, both files staged
    assert "__0_0.distcp" not in out and "ambiguous" not in out


def test_a_staged_distcp_with_a_bad_metadata_fails_the_commit(tmp_path: Path, hook_repo,
                                                               pre_commit_home) -> None:
    """Only the `.distcp` is staged; the directory's `.metadata` (which dcp.load unpickles
    with plain pickle.load) runs code: the commit fails, naming the directory."""
    repo = user_repo(tmp_path, hook_repo, "ckpt-guard")
    ck = _save(repo / "ck")
    (ck / ".metadata").write_bytes(P.wrap_dict(P.system_call("true")))
    git("add", "ck/__0_0.distcp", cwd=repo)
    p = pre_commit(repo, pre_commit_home)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert _rows(out, "ck") == 1 and "unsafe-pickle" in out
    assert "Traceback" not in out
