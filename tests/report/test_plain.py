"""The check table rendered without rich (report/plain.py) is byte for byte rich's plain
rendering, and a cold ``check`` does not import what it does not use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ckpt_guard
from ckpt_guard.report.model import FileReport, Finding, Report
from ckpt_guard.report.plain import render_check_plain
from ckpt_guard.report.text import render_check_rich
from tests.report.conftest import FIX_ALL, run

_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | \
    st.text("abc/._-[]✗·→ é日\t", max_size=140)
_FINDING = st.builds(Finding, rule=st.sampled_from(["optimizer-state", "fp32-payload", "x"]),
                     action=st.sampled_from(["fail", "fix", "warn", "off"]), message=_TEXT,
                     bytes=st.integers(0, 10**10), fixable=st.booleans())
_FILE = st.builds(
    FileReport, path=_TEXT | st.sampled_from(["a/b/model.pt", "x" * 150]),
    format=st.sampled_from(["torch-zip", "safetensors", "unknown"]),
    framework=st.sampled_from(["generic", "ultralytics", "lightning"]),
    size_bytes=st.integers(0, 10**12), findings=st.lists(_FINDING, max_size=3),
    status=st.sampled_from(["pass", "warn", "fail", "error", "fixed", "odd"]),
    bytes_removable=st.integers(0, 10**11), size_after=st.none() | st.integers(0, 10**12),
    notes=st.lists(_TEXT, max_size=2),
    details=st.sampled_from([{}, {"fix": {"dry_run": True}}]))


@settings(max_examples=150, deadline=None)
@given(files=st.lists(_FILE, max_size=4), columns=st.sampled_from([None, "40", "200"]))
def test_plain_check_is_riches_plain_rendering(files, columns) -> None:
    report = Report(files=files)
    with pytest.MonkeyPatch.context() as mp:
        if columns is None:
            mp.delenv("COLUMNS", raising=False)
        else:
            mp.setenv("COLUMNS", columns)
        plain = render_check_plain(report)
        if plain is not None:  # None: rich renders it (markup, wide or control characters)
            assert plain == render_check_rich(report, color=False)


def test_plain_check_on_the_fixtures(fixture_paths, monkeypatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    for policy in (None, FIX_ALL):
        paths = list(fixture_paths.values())
        report = run(paths, policy) if policy else run(paths)
        plain = render_check_plain(report)
        assert plain is not None
        assert plain == render_check_rich(report, color=False)


@pytest.mark.parametrize("suffix", ["safetensors", "pt"])
def test_cold_check_imports_only_what_it_uses(tmp_path, suffix) -> None:
    """Structural, not a timing: these imports were most of a cold check's 143 ms."""
    import torch

    path = tmp_path / f"m.{suffix}"
    if suffix == "pt":
        torch.save({"w": torch.zeros(2)}, path)
    else:
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(path))
    probe = (
        "import sys, io, contextlib\n"
        "from ckpt_guard.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main(['check', {str(path)!r}])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(' '.join(sorted(sys.modules)))\n")
    # Without `site` (-S): an environment's start-up hooks (a .pth importing certifi, which
    # imports zipfile, tempfile, shutil...) would hide what the check itself imports. A check
    # of a local file needs no third-party package, only ckpt_guard on the path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(ckpt_guard.__file__).parent.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    # What the interpreter itself loads at start-up is not the check's doing.
    baseline = set(subprocess.run([sys.executable, "-S", "-c", "import sys; print(' '.join("
                                   "sys.modules))"], capture_output=True, text=True,
                                  check=True, env=env).stdout.split())
    heavy = {"jsonschema", "numpy", "rich", "yaml", "hashlib", "decimal", "subprocess",
             "requests", "ckpt_guard.rewrite",
             # a local file is no URL: the range reader and its URL parsing stay unloaded
             "ckpt_guard.read.remote", "urllib.request", "http.client",
             # the built-in policy needs no policy-file machinery, validated or cached
             "ckpt_guard.policy.validate", "ckpt_guard.policy.yamlsrc",
             "ckpt_guard.policy.cache", "concurrent.futures",
             # the built-in policy's data is read without importlib.resources (tempfile,
             # zipfile); stash's and TorchScript's code only for stash or a TorchScript file
             "importlib.resources", "tempfile", "zipfile", "ckpt_guard.stashcmd",
             "ckpt_guard.read.torchscript_code"}
    if suffix == "pt":
        # argparse's formatter imports shutil (and bz2, lzma) to size help text. (A file
        # that is no zip is offered to tarfile, as torch.load does: tarfile imports them.)
        heavy |= {"shutil", "bz2", "lzma", "tarfile"}
    assert not (heavy & set(out)) - baseline, (heavy & set(out)) - baseline
