"""The Markdown report (CLI --format markdown, step summary, PR comment): golden files.

Regenerate after an intended change: CKPT_GUARD_UPDATE_GOLDEN=1 pytest tests/action/test_markdown.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ckpt_guard.report.markdown import COMMENT_LIMIT, Context, render_markdown
from ckpt_guard.report.model import FileReport, Finding, Report

GOLDEN = Path(__file__).parent / "golden"
MB = 1_000_000


def yolo(path: str = "models/yolov8m-train.pt") -> FileReport:
    return FileReport(
        path=path, format="torch-zip", framework="ultralytics", size_bytes=372 * MB,
        tensor_bytes_total=360 * MB, tensor_count=1204,
        by_role={"optimizer": 208 * MB, "ema": 52 * MB, "weights": 52 * MB,
                 "scheduler": 1000, "rng": 5_000},
        by_dtype={"float32": 350 * MB, "float16": 10 * MB},
        findings=[
            Finding("optimizer-state", "fail", "Adam state (exp_avg, exp_avg_sq) for 356 "
                    "parameters at `optimizer`", 208 * MB, True),
            Finding("ema-duplicate", "warn", "`ema` duplicates `model` (same names and shapes)",
                    52 * MB, True),
        ],
        status="fail", bytes_removable=260 * MB)


def stripped(path: str = "models/yolov8m.pt") -> FileReport:
    return FileReport(path=path, format="torch-zip", framework="ultralytics", size_bytes=26 * MB,
                      tensor_bytes_total=25 * MB, tensor_count=400, by_role={"weights": 25 * MB},
                      by_dtype={"float16": 25 * MB})


def fp32(path: str = "vit/model.safetensors") -> FileReport:
    return FileReport(path=path, format="safetensors", framework="generic",
                      size_bytes=344 * MB, tensor_bytes_total=344 * MB, tensor_count=200,
                      by_role={"weights": 344 * MB}, by_dtype={"float32": 344 * MB},
                      findings=[Finding("fp32-payload", "warn", "344 MB of FP32 tensors could "
                                        "be float16", 170 * MB, True)],
                      status="warn", bytes_removable=170 * MB)


def lfs(path: str = "big/lfs.ckpt") -> FileReport:
    return FileReport(path=path, format="lfs-pointer", size_bytes=2_100_000_000,
                      findings=[Finding("lfs-pointer", "warn", "Git LFS pointer: set `lfs: true`"
                                        " on actions/checkout to check the real file")],
                      status="warn", notes=["size from the LFS pointer"])


def broken(path: str = "data/notes.pt") -> FileReport:
    return FileReport(path=path, size_bytes=12, status="error",
                      findings=[Finding("unreadable", "fail", "not a weight file: unknown "
                                        "format (starts with b'hello wo')")])


CASES = {
    "pr_mixed": (Report(files=[stripped(), yolo(), fp32(), lfs(), broken(),
                               stripped("legacy/old.pt")]),
                 Context(base_sizes={"models/yolov8m-train.pt": 26 * MB,
                                     "models/yolov8m.pt": None,
                                     "vit/model.safetensors": 344 * MB,
                                     "big/lfs.ckpt": 1_900_000_000, "data/notes.pt": None},
                         changed=["models/yolov8m-train.pt", "models/yolov8m.pt",
                                  "vit/model.safetensors", "big/lfs.ckpt", "data/notes.pt"],
                         base_label="`main`",
                         footer="<sub>ckpt-guard test</sub>")),
    "all_clear": (Report(files=[stripped()]),
                  Context(base_sizes={"models/yolov8m.pt": 372 * MB}, changed=None,
                          base_label="`main`", footer="<sub>ckpt-guard test</sub>")),
    "fixed": (Report(files=[
        FileReport(**{**yolo().__dict__, "status": "fixed", "size_after": 26 * MB,
                      "details": {"fix": {"removed": {"optimizer": 208 * MB, "ema": 52 * MB},
                                          "cast_bytes": 86 * MB}}}),
        FileReport(**{**fp32("b.pt").__dict__, "status": "fixed", "size_after": 172 * MB})]),
              Context(footer="<sub>ckpt-guard test</sub>")),
    "empty": (Report(), Context(footer="<sub>ckpt-guard test</sub>")),
    "cli_default": (Report(files=[yolo(), stripped()]), None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    report, ctx = CASES[name]
    text = render_markdown(report, ctx)
    if name == "cli_default":  # footer carries the version: compare without it
        text = text.rsplit("<sub>", 1)[0]
    path = GOLDEN / f"{name}.md"
    if os.environ.get("CKPT_GUARD_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_headline_numbers():
    report, ctx = CASES["pr_mixed"]
    text = render_markdown(report, ctx)
    head = text.splitlines()[2]
    # 372 + 26 + 344 + 2100 + 26 MB; change: the files with a base size, vs 26 + 344 + 1900 (+ new files at 0)
    assert "**Weights:** 2.9 GB" in head  # the unchanged file counts too
    assert "**Change vs `main`:** +572 MB" in head
    assert "**Training baggage:** 260 MB in 1 file" in head
    assert "**A fix would remove:** 430 MB" in head


def test_unchanged_files_collapsed():
    report, ctx = CASES["pr_mixed"]
    text = render_markdown(report, ctx)
    block = text[text.index("<summary>1 unchanged weight file</summary>"):]
    assert "<code>legacy/old.pt</code>" in block
    table = text[:text.index("<details>")]
    assert "legacy/old.pt" not in table


def test_escapes_paths_and_messages():
    fr = broken("a|b/<img src=x>.pt")
    fr.findings[0] = Finding("unreadable", "fail", "bad | <b>pickle</b>\nsecond line")
    text = render_markdown(Report(files=[fr]))
    assert "<img" not in text and "<b>pickle" not in text
    assert "a&#124;b/&lt;img src=x&gt;.pt" in text
    row = next(line for line in text.splitlines() if line.startswith("| <code>a"))
    assert row.count("|") == 5  # no cell broke the table (no Δ column without a base)


HOSTILE = ("x`](javascript:alert(1)) ![t](https://evil.example/p.png) [l](javascript:x) "
           "<details><summary>-->@octocat @org/team #1 acme/other#2 www.evil.example "
           "**b** ~~s~~ \\| \u202eevil\r# heading\n::error::pwned`.pt")


def _inert(text: str) -> None:
    """No Markdown/HTML construct of the hostile text survives (checked on the raw text the
    way GitHub's renderer would see it)."""
    assert not re.search(r"(?<!&)#[12]", text)  # issue references (entities are "&#…;")
    for bad in ("](", "![", "<details><summary>-->", "-->", "@octocat", "@org", "www.evil", "https://evil", "**b**", "~~s~~", "\u202e", "\r", "\n# heading",
                "\n::error"):
        assert bad not in text, bad


@pytest.mark.parametrize("where", ["path", "message", "note", "format", "rule"])
def test_hostile_names_and_messages_are_inert(where):
    fr = broken("models/ok.pt")
    if where == "path":
        fr.path = HOSTILE
    elif where == "message":  # e.g. a pickle global or a key name quoted in a finding
        fr.findings[0] = Finding("unreadable", "fail", f"global `{HOSTILE}` at `model`")
    elif where == "note":
        fr.notes = [HOSTILE]
    elif where == "format":  # report.json from a fork's artifact (two-phase comment)
        fr.format, fr.framework, fr.by_dtype = HOSTILE, HOSTILE, {HOSTILE: 1}
    else:
        fr.findings[0] = Finding(HOSTILE, HOSTILE, "m")
        fr.status = "fail"
    text = render_markdown(Report(files=[fr]), Context(base_sizes={}, changed=[fr.path]))
    _inert(text)
    # the text is still there for people to read, as entities
    assert "&lt;details&gt;" in text and "@&#8203;octocat" in text and "&#92;u202e" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert all(line.count("|") == 6 for line in table if "<code>" in line), table


def test_our_code_spans_stay_and_an_odd_backtick_disables_them():
    fr = broken()
    fr.findings[0] = Finding("unreadable", "fail", "at `model` and `optim`")
    fr.notes = ["key `a`b` here"]
    text = render_markdown(Report(files=[fr]))
    assert "at <code>model</code> and <code>optim</code>" in text
    assert "> key &#96;a&#96;b&#96; here" in text


def test_very_long_names_are_shortened_in_the_comment():
    files = [yolo(f"{'d' * 3000}/{i}.pt") for i in range(40)]
    text = render_markdown(Report(files=files))
    rows = [line for line in text.splitlines() if line.startswith("| <code>")]
    assert len(rows) == 40 and all(len(r) < 600 for r in rows)
    assert "…" in rows[0] and rows[0].count("d") < 250


@pytest.mark.parametrize("n", [300, 3000])
def test_stays_under_comment_limit_with_a_note(n):
    files = [yolo(f"runs/exp{i}/weights/last-with-a-rather-long-name-{i:05d}.pt") for i in range(n)]
    files += [stripped(f"unchanged/{i}.pt") for i in range(n)]
    ctx = Context(changed=[f.path for f in files[:n]], base_sizes={},
                  full_report="the step summary and `ckpt-guard-report/report.json`")
    text = render_markdown(Report(files=files), ctx)
    assert len(text) <= 60_000 < COMMENT_LIMIT
    assert "**Truncated**" in text and "`ckpt-guard-report/report.json`" in text
    assert text.count("<details>") == text.count("</details>")
    assert text.rstrip().endswith("</sub>")


def test_bigger_budget_for_the_step_summary():
    files = [yolo(f"runs/{i}.pt") for i in range(400)]
    small = render_markdown(Report(files=files))
    big = render_markdown(Report(files=files), max_chars=1_000_000)
    assert "Truncated" in small and "Truncated" not in big
    assert big.count("<details>") == 400
