"""ckpt-guard side by side with picklescan, modelscan and fickling.

    python benchmarks/peers.py            # builds everything under benchmarks/out/

1. A scratch venv (benchmarks/out/peers-venv) gets ``picklescan modelscan fickling`` from PyPI
   (plus ``typing_extensions``, which fickling imports without declaring it).
2. Two corpora are written to files: the adversarial corpus (tests/adversarial/corpus.py, every
   case proven to fire under pickle/torch.load by the test suite) and a clean corpus of
   torch-made checkpoints (every file of tests/fixtures' families: state dicts, training
   checkpoints, legacy, TorchScript, safetensors, full-module ultralytics/yolov5 pickles, HF
   Trainer and DeepSpeed directories' files).
3. Every tool runs on every file, one process per file (start-up included in wall time):
   * ckpt-guard: ``ckpt-guard check --format json FILE`` — detected ⇔ an ``unsafe-pickle`` finding;
   * picklescan: ``picklescan -p FILE`` — exit 1 = dangerous globals found (0 clean, 2 error);
   * modelscan: ``modelscan -p FILE`` — exit 1 = issues found (0 clean, 2 error, 3 nothing
     scanned, 4 usage);
   * fickling: its Python API as its own HF-scan path does — ``scan_zip_archive`` for zips,
     ``scan_file`` otherwise (graceful); detected ⇔ any result not ``is_safe``.
4. Results: a table on stdout, the per-case matrix in benchmarks/out/peers.json and a Markdown
   report in benchmarks/PEERS.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"
VENV = OUT / "peers-venv"
TOOLS = ("ckpt-guard", "picklescan", "modelscan", "fickling")

FICKLING_DRIVER = r"""
import sys
from fickling.loader import scan_file, scan_zip_archive
from fickling.polyglot import find_file_properties
path = sys.argv[1]
try:
    props = find_file_properties(path)
    if props.get("is_torch_zip") or props.get("is_standard_zip"):
        results = list(scan_zip_archive(path, graceful=True).values())
    else:
        results = [scan_file(path, graceful=True)]
except Exception as e:
    print(f"error: {type(e).__name__}: {e}")
    sys.exit(2)
unsafe = [r for r in results if not r.is_safe]
errors = [e for r in results for e in r.errors]
print(f"scanned={len(results)} unsafe={len(unsafe)} errors={len(errors)}")
sys.exit(1 if unsafe else (2 if errors or not results else 0))
"""


def ensure_venv() -> Path:
    bin_dir = VENV / "bin"
    if not (bin_dir / "picklescan").exists() or not (bin_dir / "fickling").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(bin_dir / "pip"), "install", "-q", "picklescan", "modelscan",
                        "fickling", "typing_extensions"], check=True)
    return bin_dir


def versions(bin_dir: Path) -> dict[str, str]:
    out = subprocess.run([str(bin_dir / "pip"), "list", "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    have = {p["name"].lower(): p["version"] for p in json.loads(out)}
    import ckpt_guard

    return {"ckpt-guard": getattr(ckpt_guard, "__version__", "dev"),
            **{t: have.get(t, "?") for t in TOOLS[1:]}}


def build_corpora() -> tuple[dict[str, Path], dict[str, Path], Path]:
    from tests.adversarial.corpus import CASES
    from tests.fixtures import FAMILIES, FixtureFactory

    mal_dir, clean_dir, canary_dir = OUT / "corpus" / "malicious", OUT / "corpus" / "clean", \
        OUT / "corpus" / "canaries"
    for d in (mal_dir, clean_dir, canary_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    malicious = {c.id: c.write(mal_dir, canary_dir / f"canary-{c.id}") for c in CASES}
    factory = FixtureFactory(OUT / "corpus" / "fixtures-build")
    clean: dict[str, Path] = {}
    for family in FAMILIES:
        fx = factory.get(family)
        if fx.path.is_dir():
            for f in sorted(fx.path.rglob("*")):
                if f.is_file() and f.suffix in (".pt", ".bin", ".pth", ".safetensors", ".ckpt"):
                    rel = f.relative_to(fx.path).as_posix().replace("/", "__")
                    dst = clean_dir / f"{family}__{rel}"
                    shutil.copy2(f, dst)
                    clean[f"{family}/{f.relative_to(fx.path).as_posix()}"] = dst
        else:
            dst = clean_dir / f"{family}__{fx.path.name}"
            shutil.copy2(fx.path, dst)
            clean[family] = dst
    return malicious, clean, canary_dir


def run_tool(tool: str, path: Path, bin_dir: Path) -> tuple[str, float, str]:
    """(verdict, seconds, detail) with verdict in detected | clean | error."""
    env = {**os.environ, "PYTHONPATH": ""}
    cwd = OUT / "scratch"
    cwd.mkdir(exist_ok=True)
    if tool == "ckpt-guard":
        cmd = [sys.executable, "-m", "ckpt_guard", "check", "--format", "json", str(path)]
        env = {**os.environ}
    elif tool == "picklescan":
        cmd = [str(bin_dir / "picklescan"), "-p", str(path)]
    elif tool == "modelscan":
        cmd = [str(bin_dir / "modelscan"), "-p", str(path)]
    else:
        cmd = [str(bin_dir / "python"), "-c", FICKLING_DRIVER, str(path)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd,
                              env=env, check=False)
    except subprocess.TimeoutExpired:
        return "error", time.perf_counter() - start, "timeout"
    wall = time.perf_counter() - start
    if tool == "ckpt-guard":
        try:
            entry = json.loads(proc.stdout)["files"][0]
        except (json.JSONDecodeError, KeyError, IndexError):
            return "error", wall, f"rc={proc.returncode} {proc.stderr[-300:]}"
        rules = sorted({f["rule"] for f in entry["findings"]})
        if "unsafe-pickle" in rules:
            return "detected", wall, ",".join(rules)
        return ("error" if entry["status"] == "error" else "clean"), wall, ",".join(rules)
    detail = f"rc={proc.returncode} " + (proc.stdout + proc.stderr).strip().replace(
        "\n", " | ")[-240:]
    verdict = {0: "clean", 1: "detected"}.get(proc.returncode, "error")
    return verdict, wall, detail


def summarize(matrix: dict, kind: str) -> dict[str, dict[str, float]]:
    rows = {}
    for tool in TOOLS:
        cells = [matrix[kind][case][tool] for case in matrix[kind]]
        rows[tool] = {"detected": sum(c["verdict"] == "detected" for c in cells),
                      "clean": sum(c["verdict"] == "clean" for c in cells),
                      "error": sum(c["verdict"] == "error" for c in cells),
                      "seconds": round(sum(c["seconds"] for c in cells), 2)}
    return rows


def render(matrix: dict, vers: dict[str, str]) -> str:
    mal, cln = summarize(matrix, "malicious"), summarize(matrix, "clean")
    n_mal, n_cln = len(matrix["malicious"]), len(matrix["clean"])
    lines = [f"Adversarial corpus: {n_mal} files; clean corpus: {n_cln} torch-made files.", "",
             "| tool | version | detected | missed | scan errors (malicious) | false positives "
             "(clean) | errors (clean) | wall time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for t in TOOLS:
        m, c = mal[t], cln[t]
        lines.append(f"| {t} | {vers[t]} | {m['detected']}/{n_mal} | "
                     f"{n_mal - m['detected']} | {m['error']} | {c['detected']}/{n_cln} | "
                     f"{c['error']} | {m['seconds'] + c['seconds']:.1f} |")
    lines += ["", "Per-case matrix (D = detected, . = missed/clean, E = scan error):", "",
              "| case | " + " | ".join(TOOLS) + " |", "|---|" + "---|" * len(TOOLS)]
    mark = {"detected": "D", "clean": ".", "error": "E"}
    for kind in ("malicious", "clean"):
        for case, cells in matrix[kind].items():
            lines.append(f"| {kind[0]}:{case} | " + " | ".join(
                mark[cells[t]["verdict"]] for t in TOOLS) + " |")
    return "\n".join(lines)


def main() -> int:
    bin_dir = ensure_venv()
    vers = versions(bin_dir)
    malicious, clean, canary_dir = build_corpora()
    matrix: dict[str, dict] = {"malicious": {}, "clean": {}}
    for kind, files in (("malicious", malicious), ("clean", clean)):
        for case, path in files.items():
            row = {}
            for tool in TOOLS:
                verdict, seconds, detail = run_tool(tool, path, bin_dir)
                row[tool] = {"verdict": verdict, "seconds": round(seconds, 3),
                             "detail": detail}
            matrix[kind][case] = row
            print(f"{kind[0]} {case:40s} " + " ".join(
                f"{t}={row[t]['verdict']}" for t in TOOLS), flush=True)
    fired = sorted(p.name for p in canary_dir.iterdir())
    gaps = [case for case, row in matrix["malicious"].items()
            if row["ckpt-guard"]["verdict"] != "detected"
            and any(row[t]["verdict"] == "detected" for t in TOOLS[1:])]
    fps = [case for case, row in matrix["clean"].items()
           if row["ckpt-guard"]["verdict"] == "detected"]
    table = render(matrix, vers)
    print("\n" + table)
    print(f"\ncanaries fired by any scanner: {fired or 'none'}")
    print(f"cases a peer detects but ckpt-guard does not: {gaps or 'none'}")
    print(f"ckpt-guard false positives on clean files: {fps or 'none'}")
    (OUT / "peers.json").write_text(json.dumps({"versions": vers, "matrix": matrix,
                                                "canaries_fired": fired, "gaps": gaps,
                                                "false_positives": fps}, indent=1))
    (ROOT / "benchmarks" / "PEERS.md").write_text(
        "# ckpt-guard vs picklescan, modelscan, fickling\n\n"
        "Generated by `python benchmarks/peers.py` (see its docstring for how each tool is "
        "run and what counts as a detection). Raw results: `benchmarks/out/peers.json`.\n\n"
        + table + f"\n\nCanaries fired by any scanner while scanning: {fired or 'none'}.\n"
        f"Cases a peer detects but ckpt-guard misses: {gaps or 'none'}.\n"
        f"ckpt-guard false positives on clean files: {fps or 'none'}.\n")
    return 1 if gaps or fps or fired else 0


if __name__ == "__main__":
    raise SystemExit(main())
