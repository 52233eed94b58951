"""Benchmark `fix` against the torch path and `cp` on a >= 1 GB checkpoint.

    python benchmarks/bench_fix.py [--scratch DIR] [--size-mb 1100] [--repeat 3]

Builds (once, cached in the scratch dir) a checkpoint of FP32 weights + Adam state, then runs,
each in its own child process, with the file in the page cache for all of them:

* ``ckpt-guard fix`` (the in-process API in a child: read → analyze → strip optimizer → cast
  FP16 → atomic write → verify), output to a separate file;
* the torch path: ``torch.load`` → drop the optimizer → ``half()`` → ``torch.save``;
* ``cp`` of the same file.

Wall time and peak RSS (``ru_maxrss`` of each child via ``os.wait4``) are reported, best of
``--repeat`` runs, plus output size against the ideal (kept tensor bytes after the cast).
Prints a Markdown table with the machine and writes JSON to ``benchmarks/out/``.
Targets: fix >= 5x faster than the torch path, peak RSS <= 128 MiB, output within 1 % of ideal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "out"

BUILD = r"""
import sys, torch
from torch import nn
n_layers, width = int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
layers = []
for i in range(n_layers):
    layers += [nn.Linear(width, width), nn.LayerNorm(width)]
model = nn.Sequential(*layers)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for p in model.parameters():
    p.grad = torch.randn_like(p) * 1e-3
opt.step()
torch.save({"epoch": 7, "model": model.state_dict(), "optimizer": opt.state_dict()}, sys.argv[1])
"""

TORCH_PATH = r"""
import sys, torch
ck = torch.load(sys.argv[1], weights_only=True)
ck.pop("optimizer", None)
ck["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in ck["model"].items()}
torch.save(ck, sys.argv[2])
"""

FIX = r"""
import sys
from ckpt_guard.read import read_path
from ckpt_guard.analyze import analyze
from ckpt_guard.rewrite import fix_file
rules = {"optimizer-state": {"action": "fix"}, "training-state": {"action": "fix"},
         "fp32-payload": {"action": "fix", "cast-to": "float16", "keep-fp32": []}}
ck = read_path(sys.argv[1])
res = fix_file(sys.argv[1], analyze(ck), rules, out_path=sys.argv[2])
if res.error:
    sys.exit("fix failed: " + res.error)
print(res.size_after, res.max_rel_err)
"""


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": ram,
            "python": platform.python_version(), "platform": platform.platform()}


def run_child(argv: list[str]) -> tuple[float, int, str]:
    """Run ``argv``; returns (wall seconds, peak RSS bytes of the child, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = b"", b""
    # wait4 gives this child's own rusage (ru_maxrss in KiB on Linux).
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return wall, usage.ru_maxrss * 1024, out.decode()


def warm(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(16 << 20):
            pass


def tensor_bytes_ideal(path: Path) -> tuple[int, int]:
    """(ideal output bytes, input tensor bytes) from our own reader: weights in FP16 (norm
    layers too — the benchmark casts everything), optimizer gone."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from ckpt_guard.analyze import analyze
    from ckpt_guard.read import read_path

    an = analyze(read_path(str(path)))
    kept = 0
    seen: set[str] = set()
    for t in an.tensors:
        st = t.ref.storage
        if t.role != "weights" or st is None or st.key in seen:
            continue
        seen.add(st.key)
        kept += st.nbytes // 2 if st.dtype == "float32" else st.nbytes
    return kept, an.tensor_bytes_total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(),
                                                      "ckpt-guard-bench"))
    ap.add_argument("--size-mb", type=int, default=1100, help="approximate checkpoint size")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    width = 2048
    # Each layer: Linear W+b and LayerNorm w+b; with Adam's two moments = 3x the weights.
    per_layer = 3 * 4 * (width * width + 3 * width)
    n_layers = max(1, round(args.size_mb * 1e6 / per_layer))
    src = scratch / f"adam_{n_layers}x{width}.pt"
    if not src.exists():
        print(f"building {src} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-c", BUILD, str(src), str(n_layers), str(width)],
                       check=True)
    size = src.stat().st_size
    ideal, tensor_total = tensor_bytes_ideal(src)
    runs = {
        "ckpt-guard fix": [sys.executable, "-c", FIX, str(src), str(scratch / "out_fix.pt")],
        "torch load/half/save": [sys.executable, "-c", TORCH_PATH, str(src),
                                 str(scratch / "out_torch.pt")],
        "cp": ["cp", str(src), str(scratch / "out_cp.pt")],
    }
    outputs = {"ckpt-guard fix": scratch / "out_fix.pt",
               "torch load/half/save": scratch / "out_torch.pt", "cp": scratch / "out_cp.pt"}
    results: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name, cmd in runs.items():
            outputs[name].unlink(missing_ok=True)
            warm(src)
            wall, rss, _ = run_child(cmd)
            best = results.get(name)
            if best is None or wall < best["wall_s"]:
                results[name] = {"wall_s": wall, "peak_rss_bytes": rss,
                                 "output_bytes": outputs[name].stat().st_size}
            else:
                best["peak_rss_bytes"] = max(best["peak_rss_bytes"], rss)
    fix, tp = results["ckpt-guard fix"], results["torch load/half/save"]
    verdict = {
        "speedup_vs_torch": tp["wall_s"] / fix["wall_s"],
        "fix_rss_mib": fix["peak_rss_bytes"] / 2**20,
        "fix_output_vs_ideal": fix["output_bytes"] / ideal - 1,
    }
    verdict["targets_met"] = (verdict["speedup_vs_torch"] >= 5 and verdict["fix_rss_mib"] <= 128
                              and abs(verdict["fix_output_vs_ideal"]) <= 0.01)
    report = {"machine": machine(), "input_bytes": size, "input_tensor_bytes": tensor_total,
              "ideal_output_bytes": ideal, "repeat": args.repeat, "results": results,
              "verdict": verdict}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "bench_fix.json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    print(f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM, "
          f"Python {m['python']}")
    print(f"Input: {size / 1e6:,.1f} MB (FP32 weights + Adam state); ideal output "
          f"{ideal / 1e6:,.1f} MB; best of {args.repeat}, file in page cache\n")
    print("| run | wall (s) | peak RSS (MiB) | output (MB) | output vs ideal |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['wall_s']:.2f} | {r['peak_rss_bytes'] / 2**20:.0f} | "
              f"{r['output_bytes'] / 1e6:,.1f} | {r['output_bytes'] / ideal - 1:+.2%} |")
    print(f"\nfix vs torch path: {verdict['speedup_vs_torch']:.1f}x faster (target >= 5x); "
          f"fix peak RSS {verdict['fix_rss_mib']:.0f} MiB (target <= 128); output "
          f"{verdict['fix_output_vs_ideal']:+.2%} vs ideal (target within 1 %) -> "
          f"{'all targets met' if verdict['targets_met'] else 'TARGETS MISSED'}")
    for p in outputs.values():
        p.unlink(missing_ok=True)
    return 0 if verdict["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
