"""Issue 9's invariants over one :class:`~tests.invariants.harness.Run`: each function returns
``{family: why}`` for the families that break it (empty: it holds)."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

from tests.invariants.harness import TORCH_SUFFIXES, Run


def _fixable(report: dict) -> list[str]:
    return [f"{f['rule']} ({f['bytes']} B): {f['message'][:120]}"
            for f in report["findings"] if f.get("fixable")]


def no_fixable_after_fix(run: Run) -> dict[str, str]:
    """After ``fix``, ``check`` with the same policy shows no fixable finding (for ``--out``:
    the fixed copies, and originals fix left alone)."""
    bad = {}
    for fam in run.families:
        left = _fixable(run.judged(fam))
        if left:
            bad[fam] = "; ".join(left)
    return bad


def dry_run_equals_fix(run: Run) -> dict[str, str]:
    """``fix --dry-run`` projects the real run: same status, size after, findings' rules."""
    bad = {}
    for fam in run.families:
        d, f = run.file("dry", fam), run.file("fix", fam)
        diffs = []
        for key in ("status", "size_after", "bytes_removable"):
            if d[key] != f[key]:
                diffs.append(f"{key}: dry {d[key]!r}, fix {f[key]!r}")
        # Findings that decide the status. (A warn-level needs-code can vanish with a
        # stripped subtree's classes; the projection reads the pickle's globals as read.)
        rules_d = sorted((x["rule"], x["action"]) for x in d["findings"]
                         if x["action"] != "warn")
        rules_f = sorted((x["rule"], x["action"]) for x in f["findings"]
                         if x["action"] != "warn")
        if rules_d != rules_f:
            diffs.append(f"findings: dry {rules_d}, fix {rules_f}")
        if diffs:
            bad[fam] = "; ".join(diffs)
    return bad


def dry_run_summary_equals_fix(run: Run) -> dict[str, str]:
    d, f = run.reports["dry"]["summary"], run.reports["fix"]["summary"]
    return {"<summary>": f"dry {d} != fix {f}"} if d != f else {}


def dry_run_writes_nothing(run: Run) -> dict[str, str]:
    bad = {}
    for fam in run.families:
        changed = run.snaps["check"].changed(run.snaps["fix"], f"{fam}/")
        if changed:
            bad[fam] = f"--dry-run (or check) changed {changed}"
        changed = run.snaps["after"].changed(run.snaps["end"], f"{fam}/")
        if changed:
            bad[fam] = f"check after fix changed {changed}"
    return bad


def rewritten_iff_fixed(run: Run) -> dict[str, str]:
    """A file is rewritten iff it is reported ``fixed``, and each gets one ``Fixing`` line."""
    bad = {}
    announced = run.fixing_lines()
    for fam in run.families:
        # rewritten: size_after set (a partial fix keeps a failing status, still rewritten)
        report = run.file("fix", fam)
        status = "fixed" if report["size_after"] is not None else report["status"]
        if run.out_dir is None:
            changed = run.snaps["fix"].changed(run.snaps["after"], f"{fam}/")
        else:
            if run.snaps["fix"].changed(run.snaps["after"], f"{fam}/"):
                bad[fam] = "--out changed an original"
                continue
            changed = [n for n in run.snaps["out"].files
                       if n.startswith(f"files/{fam}/")]
        lines = announced.count(run.paths[fam])
        if (status == "fixed") != bool(changed):
            bad[fam] = f"status {status} but files written: {changed}"
        elif lines != (1 if status == "fixed" else 0):
            bad[fam] = f"status {status}, {lines} 'Fixing {run.paths[fam]}' lines"
    fixed = sum(1 for fam in run.families if run.file("fix", fam)["size_after"] is not None)
    if run.reports["fix"]["summary"].get("fixed", 0) != fixed:
        bad["<summary>"] = f"summary fixed {run.reports['fix']['summary']} vs {fixed}"
    if len(announced) != fixed:
        bad["<fixing-lines>"] = f"{len(announced)} Fixing lines for {fixed} fixed files"
    return bad


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (n,) = struct.unpack("<Q", data[:8])
    return 2 <= n <= len(data) - 8 and data[8:9] == b"{"


def written_files(run: Run) -> dict[str, list[Path]]:
    """family → files the fix wrote (changed or added), as absolute paths."""
    out: dict[str, list[Path]] = {}
    for fam in run.families:
        if run.out_dir is None:
            names = [n for n in run.snaps["fix"].changed(run.snaps["after"], f"{fam}/")
                     if n in run.snaps["after"].files]
            out[fam] = [run.root / "files" / n for n in names]
        else:
            out[fam] = [run.root / "out" / n for n in run.snaps["out"].files
                        if n.startswith(f"files/{fam}/")]
    return out


def format_follows_name(run: Run) -> dict[str, str]:
    """Torch names hold a torch zip, ``.safetensors`` holds safetensors."""
    bad = {}
    for fam, paths in written_files(run).items():
        for p in paths:
            data = p.read_bytes()
            if p.name.endswith(".safetensors"):
                if not _is_safetensors(data):
                    bad[fam] = f"{p.name}: not safetensors"
            elif p.name.endswith(TORCH_SUFFIXES) and not zipfile.is_zipfile(p):
                kind = "safetensors" if _is_safetensors(data) else "not a zip"
                bad[fam] = f"{p.name}: {kind} under a torch name"
    return bad


def removable_agrees(run: Run) -> dict[str, str]:
    """What check calls removable (fixable findings) is what fix removes: the tensor bytes
    after the fix are the bytes before minus check's ``bytes_removable`` of fixable findings,
    for every file fix reports fixed."""
    bad = {}
    for fam in run.families:
        c, f = run.file("check", fam), run.file("fix", fam)
        if f["status"] != "fixed":  # partial fixes leave fixable findings
            continue
        after = run.judged(fam)
        removed = c["tensor_bytes"]["total"] - after["tensor_bytes"]["total"]
        promised = sum(x["bytes"] for x in c["findings"] if x.get("fixable"))
        # (Tensors of no role a rule owns that the framework's strip drops — Lightning's
        # callbacks — are counted by training-state: nothing is excluded here.)
        # check reads no values: what fix keeps FP32 for its values (recorded in the output,
        # honoured by check after) was counted as castable.
        if removed < promised and _kept_for_values(f):
            continue
        if removed != promised:
            bad[fam] = f"check promised {promised} B removable (fixable findings), fix removed " \
                       f"{removed} B of tensor data"
    return bad


_STRUCTURAL = ("normalization layer", "keep-fp32", "shares its storage")


def _kept_for_values(fix_report: dict) -> bool:
    kept = ((fix_report.get("details") or {}).get("fix") or {}).get("kept_fp32") or []
    return any(not str(why).startswith(_STRUCTURAL) for _, why in kept)


INVARIANTS = {
    "no-fixable-after-fix": no_fixable_after_fix,
    "dry-run-equals-fix": dry_run_equals_fix,
    "dry-run-summary": dry_run_summary_equals_fix,
    "dry-run-writes-nothing": dry_run_writes_nothing,
    "rewritten-iff-fixed": rewritten_iff_fixed,
    "format-follows-name": format_follows_name,
    "removable-agrees": removable_agrees,
}
