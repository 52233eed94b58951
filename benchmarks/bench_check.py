"""Benchmark: inspecting/checking reads metadata only.

Side by side in one run, each measured in a fresh process (wall time and peak RSS):

* ``ckpt-guard inspect`` on a ≥ 1 GB checkpoint (FP32 weights + Adam state);
* ``torch.load(weights_only=True)`` + walking the tensors;
* ``torch.load(mmap=True)`` + walking the tensors;
* cold start of ``ckpt-guard check`` on a small file;
* ``ckpt-guard check`` over 10,000 small checkpoints;
* inspect at several file sizes, to show the cost stays flat as tensor bytes grow.

Usage: python benchmarks/bench_check.py [--size-gb 1.0] [--small 10000] [--out DIR]
Prints a Markdown table (paste it into the README) and writes JSON to benchmarks/out/.

Cold check as a user runs it: ``python benchmarks/bench_check.py --cold [--runs 21]
[--compare NAME=SRC_DIR ...]`` installs this checkout (and each ``SRC_DIR``, a project tree
such as ``git archive main`` unpacked) with ``pip install`` into its own clean venv — a
site-packages ``.pth`` that imports something at every start (certifi's, in some global
environments) would add ~30 ms to every row — then runs ``python -c pass`` and each venv's
``ckpt-guard check small.pt`` interleaved, ``--runs`` times each, output to a pipe, and
prints wall min/median, CPU (user + sys of the child) min/median and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEASURE = textwrap.dedent("""
    import resource, subprocess, sys, time, json
    t = time.perf_counter()
    p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    err = p.stderr.decode()
    inproc = json.loads(err)["inproc"] if err.startswith('{"inproc"') else None
    print(json.dumps({"wall": wall, "rss": rss, "rc": p.returncode, "err": err[-300:],
                      "inproc": inproc}))
""")


def measure(cmd: list[str], repeat: int = 3) -> dict:
    """Best-of-``repeat`` wall time and peak RSS of ``cmd`` run in a fresh process."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True,
                             text=True, check=True)
        runs.append(json.loads(out.stdout))
    best = min(runs, key=lambda r: r["wall"])
    inproc = [r["inproc"] for r in runs if r["inproc"] is not None]
    return {"wall": best["wall"], "rss": max(r["rss"] for r in runs), "rc": best["rc"],
            "err": best["err"], "inproc": min(inproc) if inproc else None}


def machine() -> str:
    """The machine line for the README (facts gathered by bench_fix.machine)."""
    from bench_fix import machine as facts  # same folder: on sys.path when run as a script

    m = facts()
    return (f"{m['cpu'] or m['platform']}, {m['cores']} cores, {m['ram_bytes'] / 2**30:.0f} "
            f"GiB RAM, Python {m['python']}")


def make_big(path: Path, size_gb: float) -> int:
    """FP32 weights + Adam state (exp_avg, exp_avg_sq, step) ≈ ``size_gb`` GB in all."""
    import torch

    n_params = int(size_gb * 1e9 / 4 / 3)  # weights + two moments
    layer = 1 << 20
    sizes = [layer] * (n_params // layer)
    torch.manual_seed(0)
    weights = {f"layers.{i}.weight": torch.empty(n).uniform_() for i, n in enumerate(sizes)}
    state = {i: {"step": torch.tensor(10.0), "exp_avg": torch.empty(n).uniform_(),
                 "exp_avg_sq": torch.empty(n).uniform_()} for i, n in enumerate(sizes)}
    ckpt = {"epoch": 10, "model": weights,
            "optimizer": {"state": state, "param_groups": [
                {"params": list(range(len(sizes))), "lr": 1e-3, "betas": (0.9, 0.999),
                 "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}]}}
    torch.save(ckpt, path)
    return path.stat().st_size


def make_small(dirpath: Path, n: int) -> None:
    """``n`` small state-dict checkpoints (hard links to a few distinct files)."""
    import torch

    dirpath.mkdir(parents=True, exist_ok=True)
    seeds = []
    for k in range(4):
        p = dirpath / f"seed{k}.pt"
        torch.save({"conv.weight": torch.randn(8, 3, 3, 3), "conv.bias": torch.randn(8),
                    "fc.weight": torch.randn(10, 8 * k + 8), "step": k}, p)
        seeds.append(p)
    for i in range(n - len(seeds)):
        q = dirpath / f"ckpt{i:05d}.pt"
        if not q.exists():
            shutil.copyfile(seeds[i % len(seeds)], q)


IN_PROCESS = (
    "import sys, time, json\n"
    "from ckpt_guard.analyze import analyze\n"
    "from ckpt_guard.policy import builtin_policy, evaluate\n"
    "from ckpt_guard.read import read_path\n"
    "rules = builtin_policy().rules_for('x.pt')\n"
    "t = time.perf_counter()\n"
    "evaluate(analyze(read_path(sys.argv[1])), rules, path='x.pt')\n"
    "sys.stderr.write(json.dumps({'inproc': time.perf_counter() - t}))\n")

WALK = "import torch,sys; sd=torch.load(sys.argv[1], {kw}); n=[0]\n" \
       "def walk(o):\n" \
       "    if isinstance(o, torch.Tensor): n[0]+=o.untyped_storage().nbytes()\n" \
       "    elif isinstance(o, dict): [walk(v) for v in o.values()]\n" \
       "    elif isinstance(o, (list, tuple)): [walk(v) for v in o]\n" \
       "walk(sd)\n"


def _venv(root: Path, name: str, src: Path) -> Path:
    """A clean venv at ``root/venv-name`` with ``src`` installed (re-installed every run, so
    it holds the tree as it is now); returns its ``bin`` directory."""
    venv = root / f"venv-{name}"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                    "--force-reinstall", "--no-deps", str(src)], check=True,
                   stdout=subprocess.DEVNULL)
    # Dependencies once (they do not change between the trees compared).
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)],
                   check=True, stdout=subprocess.DEVNULL)
    return venv / "bin"


def cold(out: Path, runs: int, compare: list[str]) -> int:
    """Cold ``check`` of one small file from clean venvs, interleaved (see the docstring)."""
    from statistics import median

    import torch
    from bench_fix import run_child  # same folder: on sys.path when run as a script

    small = out / "small.pt"
    torch.save({"w": torch.zeros(4, 4)}, small)
    trees = [("this checkout", HERE.parent)]
    for spec in compare:
        name, _, src = spec.partition("=")
        trees.append((name, Path(src).resolve()))
    bins = [(name, _venv(out, f"cold{i}", src)) for i, (name, src) in enumerate(trees)]
    cmds = [("`python -c pass` (the venv's interpreter)", [str(bins[0][1] / "python"), "-c",
                                                          "pass"])]
    cmds += [(f"`ckpt-guard check small.pt`, {name}", [str(b / "ckpt-guard"), "check",
                                                       small.name]) for name, b in bins]
    for _, cmd in cmds:  # warm the page cache and the bytecode
        run_child(cmd, cwd=out)
    load = [os.getloadavg()[0]]
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in cmds}
    for _ in range(runs):
        for name, cmd in cmds:
            wall, cpu, _, _ = run_child(cmd, cwd=out)
            samples[name].append((wall, cpu))
    load.append(os.getloadavg()[0])
    print(f"\nMachine: {machine()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{runs} interleaved runs each; load average {load[0]:.1f}–{load[1]:.1f}\n")
    print("| what | wall, min | wall, median | CPU, min | CPU, median |")
    print("|---|---:|---:|---:|---:|")
    for name, s in samples.items():
        walls, cpus = [w for w, _ in s], [c for _, c in s]
        print(f"| {name} | {min(walls) * 1e3:.0f} ms | {median(walls) * 1e3:.0f} ms | "
              f"{min(cpus) * 1e3:.0f} ms | {median(cpus) * 1e3:.0f} ms |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--cold", action="store_true",
                    help="only the cold check of one small file, from clean venvs")
    ap.add_argument("--runs", type=int, default=21, help="--cold: runs of each command")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=SRC_DIR",
                    help="--cold: also a venv with this project tree installed")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cold:
        return cold(args.out.resolve(), args.runs, args.compare)
    # The console script beside this interpreter: a version manager's shim on PATH (pyenv's
    # is a shell script running `pyenv exec`) would add its own start-up to every row.
    beside = Path(sys.executable).with_name("ckpt-guard")
    exe = str(beside) if beside.exists() else shutil.which("ckpt-guard") or "ckpt-guard"

    big = args.out / f"big-{args.size_gb:g}gb.pt"
    if not big.exists():
        print(f"building {big} …", file=sys.stderr)
        make_big(big, args.size_gb)
    size = big.stat().st_size
    rows = []

    def row(name: str, cmd: list[str], repeat: int = 3) -> dict:
        print(f"running {name} …", file=sys.stderr)
        r = measure(cmd, repeat)
        r["name"] = name
        rows.append(r)
        return r

    # Installed packages carry compiled bytecode; an editable checkout under
    # PYTHONDONTWRITEBYTECODE would recompile every module on every start.
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(__file__).resolve().parents[1] / "src")], env=env,
                   stdout=subprocess.DEVNULL, check=False)
    base = row("python -c pass (interpreter start-up, for reference)",
               [sys.executable, "-c", "pass"], repeat=5)
    ins = row("ckpt-guard inspect (1 file)", [exe, "inspect", "--format", "json", str(big)])
    hot = row("read + analyze + evaluate, in process (1 file)",
              [sys.executable, "-c", IN_PROCESS, str(big)], repeat=3)
    tl = row("torch.load(weights_only=True) + walk",
             [sys.executable, "-c", WALK.format(kw="weights_only=True"), str(big)], repeat=2)
    tm = row("torch.load(mmap=True) + walk",
             [sys.executable, "-c", WALK.format(kw="mmap=True, weights_only=True"), str(big)],
             repeat=2)
    small_dir = args.out / "small"
    make_small(small_dir, args.small)
    row("ckpt-guard check, cold start, 1 small file",
        [exe, "check", str(small_dir / "seed0.pt")], repeat=5)
    row(f"ckpt-guard check, {args.small:,} small files",
        [exe, "check", "--format", "json", "--output", os.devnull, str(small_dir)], repeat=1)

    # Flat cost: the same layout at growing sizes.
    flat = []
    for gb in (0.1, 0.3):
        p = args.out / f"big-{gb:g}gb.pt"
        if not p.exists():
            make_big(p, gb)
        r = measure([exe, "inspect", "--format", "json", str(p)])
        flat.append((p.stat().st_size, r["wall"], r["rss"]))
    flat.append((size, ins["wall"], ins["rss"]))

    result = {"machine": machine(), "file_bytes": size, "rows": rows, "flat": flat,
              "ratios": {"inspect_vs_torch_load": tl["wall"] / ins["wall"],
                         "inspect_vs_mmap": tm["wall"] / ins["wall"],
                         "inspect_minus_startup_vs_torch_load":
                             (tl["wall"] - base["wall"]) / max(ins["wall"] - base["wall"], 1e-9),
                         "in_process_vs_torch_load": tl["wall"] / hot["inproc"]},
              "when": time.strftime("%Y-%m-%d")}
    (args.out / "bench_check.json").write_text(json.dumps(result, indent=2))

    print(f"\nMachine: {result['machine']}; checkpoint {size / 1e9:.2f} GB "
          f"(FP32 weights + Adam state), {result['when']}\n")
    print("| what | wall | peak RSS | vs ckpt-guard inspect |")
    print("|---|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['wall'] / ins['wall']:.0f}×" if r in (tl, tm) else ""
        wall = f"{r['wall']:.3f} s"
        if r is hot:
            wall = f"{hot['inproc'] * 1000:.1f} ms (of {r['wall']:.3f} s)"
            ratio = f"torch.load is {tl['wall'] / hot['inproc']:.0f}× slower"
        print(f"| {r['name']} | {wall} | {r['rss'] / 2**20:.0f} MiB | {ratio} |")
    print(f"\nWithout interpreter start-up ({base['wall']:.3f} s here), inspect takes "
          f"{ins['wall'] - base['wall']:.3f} s: "
          f"{result['ratios']['inspect_minus_startup_vs_torch_load']:.0f}× faster than "
          "torch.load(weights_only=True) + walk, which pays the same start-up plus torch's "
          "import.")
    print("\nInspect cost by file size (flat = metadata only):\n")
    print("| file size | wall | peak RSS |")
    print("|---:|---:|---:|")
    for sz, wall, rss in flat:
        print(f"| {sz / 1e9:.2f} GB | {wall:.3f} s | {rss / 2**20:.0f} MiB |")
    bad = [r for r in rows if r["rc"] not in (0, 1)]
    for r in bad:
        print(f"\nwarning: {r['name']} exited {r['rc']}: {r['err']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
