"""Benchmark `fix` against the torch path and `cp` on a >= 1 GB checkpoint.

    python benchmarks/bench_fix.py [--scratch DIR] [--size-mb 1100] [--repeat 3]
                                   [--compare NAME=SRC_DIR ...]

Builds (once, cached in the scratch dir) a checkpoint of FP32 weights + Adam state, then runs,
each in its own child process, with the file in the page cache for all of them:

* ``ckpt-guard fix`` as users run it (the CLI: policy file → read → analyze → strip optimizer
  → cast FP16 → write → fsync → verify → atomic rename → re-check), output under a separate
  directory, from this checkout's ``src`` (``--compare`` adds the same run from another
  checkout, e.g. ``main=/work/main/src``, for a before/after in one run);
* the torch path: ``torch.load`` → drop the optimizer → ``half()`` → ``torch.save``;
* ``cp`` of the same file.

Wall time, CPU time (user + system, from ``os.wait4``; steadier than wall time on a shared
machine) and peak RSS of each child are reported, best of ``--repeat`` rounds (the runs of a
round interleave, so a load change hits all of them), plus output size against the ideal
(kept tensor bytes after the cast) and the load average. Prints a Markdown table with the
machine and writes JSON to ``benchmarks/out/``.
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

# What the torch path does: drop the optimizer, cast every FP32 tensor (norm layers too).
POLICY = """version: 1
rules:
  optimizer-state: fix
  training-state: fix
  fp32-payload:
    action: fix
    cast-to: float16
    keep-fp32: []
    max-bytes: 0
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


def run_child(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
              ) -> tuple[float, float, int, str]:
    """Run ``argv``; returns (wall seconds, CPU seconds, peak RSS bytes of the child,
    stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=cwd)
    out, err = b"", b""
    # wait4 gives this child's own rusage (ru_maxrss in KiB on Linux).
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, out.decode()


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
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=SRC_DIR",
                    help="also run `ckpt-guard fix` from another checkout's src directory")
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
    policy = scratch / "bench-policy.yml"
    policy.write_text(POLICY)
    # Installed packages carry compiled bytecode: an editable checkout run under
    # PYTHONDONTWRITEBYTECODE would recompile every module in every run.
    base_env = dict(os.environ)
    base_env.pop("PYTHONDONTWRITEBYTECODE", None)
    checkouts = {"ckpt-guard fix": str(HERE.parent / "src")}
    for spec in args.compare:
        label, _, src_dir = spec.partition("=")
        checkouts[f"ckpt-guard fix ({label})"] = src_dir
    runs: dict[str, tuple[list[str], dict[str, str] | None, Path]] = {}
    for name, src_dir in checkouts.items():
        subprocess.run([sys.executable, "-m", "compileall", "-q", src_dir], env=base_env,
                       stdout=subprocess.DEVNULL, check=False)
        out_dir = scratch / f"out_{len(runs)}"
        env = {**base_env, "PYTHONPATH": src_dir}
        runs[name] = ([sys.executable, "-m", "ckpt_guard", "fix", "--policy", str(policy),
                       "--out", str(out_dir), "--format", "json", "--output", os.devnull,
                       src.name], env, out_dir / src.name)
    runs["torch load/half/save"] = ([sys.executable, "-c", TORCH_PATH, str(src),
                                     str(scratch / "out_torch.pt")], base_env,
                                    scratch / "out_torch.pt")
    runs["cp"] = (["cp", str(src), str(scratch / "out_cp.pt")], None, scratch / "out_cp.pt")
    results: dict[str, dict] = {}
    load = [os.getloadavg()]
    for _ in range(args.repeat):
        for name, (cmd, env, output) in runs.items():
            output.unlink(missing_ok=True)
            warm(src)
            wall, cpu, rss, _ = run_child(cmd, env, cwd=scratch)
            best = results.get(name)
            if best is None or wall < best["wall_s"]:
                results[name] = {"wall_s": wall, "cpu_s": min(cpu, best["cpu_s"]) if best
                                 else cpu, "peak_rss_bytes": max(rss, best["peak_rss_bytes"])
                                 if best else rss, "output_bytes": output.stat().st_size}
            else:
                best["peak_rss_bytes"] = max(best["peak_rss_bytes"], rss)
                best["cpu_s"] = min(best["cpu_s"], cpu)
        load.append(os.getloadavg())
    fix, tp = results["ckpt-guard fix"], results["torch load/half/save"]
    # The CLI exits 0 once its file is fixed; make sure it was (output smaller than input).
    if fix["output_bytes"] >= size:
        raise SystemExit("ckpt-guard fix did not shrink the file")
    verdict = {
        "speedup_vs_torch": tp["wall_s"] / fix["wall_s"],
        "cpu_ratio_vs_torch": tp["cpu_s"] / fix["cpu_s"],
        "fix_rss_mib": fix["peak_rss_bytes"] / 2**20,
        "fix_output_vs_ideal": fix["output_bytes"] / ideal - 1,
    }
    verdict["targets_met"] = (verdict["speedup_vs_torch"] >= 5 and verdict["fix_rss_mib"] <= 128
                              and abs(verdict["fix_output_vs_ideal"]) <= 0.01)
    load_1m = [round(x[0], 2) for x in load]
    report = {"machine": machine(), "load_average_1m": load_1m,
              "when": time.strftime("%Y-%m-%d %H:%M %Z"), "input_bytes": size, "input_tensor_bytes": tensor_total,
              "ideal_output_bytes": ideal, "repeat": args.repeat, "results": results,
              "verdict": verdict}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "bench_fix.json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    print(f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_bytes'] / 2**30:.1f} GiB RAM, "
          f"Python {m['python']}")
    print(f"Input: {size / 1e6:,.1f} MB (FP32 weights + Adam state); ideal output "
          f"{ideal / 1e6:,.1f} MB; best of {args.repeat}, file in page cache; "
          f"{report['when']}, load average (1 min) {min(load_1m):.1f}-{max(load_1m):.1f}\n")
    print("| run | wall (s) | CPU (s) | peak RSS (MiB) | output (MB) | output vs ideal |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
              f"{r['peak_rss_bytes'] / 2**20:.0f} | {r['output_bytes'] / 1e6:,.1f} | "
              f"{r['output_bytes'] / ideal - 1:+.2%} |")
    print(f"\nfix vs torch path: {verdict['speedup_vs_torch']:.1f}x faster (target >= 5x; CPU "
          f"time {verdict['cpu_ratio_vs_torch']:.1f}x less); "
          f"fix peak RSS {verdict['fix_rss_mib']:.0f} MiB (target <= 128); output "
          f"{verdict['fix_output_vs_ideal']:+.2%} vs ideal (target within 1 %) -> "
          f"{'all targets met' if verdict['targets_met'] else 'TARGETS MISSED'}")
    for _, _, output in runs.values():
        output.unlink(missing_ok=True)
    return 0 if verdict["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
