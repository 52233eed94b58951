"""Benchmark: the action image — how much it adds to its base, how fast it answers.

Side by side in one run: the image this Dockerfile builds and the previous single-stage
design (``--old IMAGE``, optional), each measured as the runner uses it:

* bytes the image adds on top of its base image (``docker image inspect`` sizes);
* container start to finished report: ``docker run`` of the action on a small pull request
  (workflow_dispatch over the four example files, no API), wall time, best and median of N.

Usage: python benchmarks/bench_container.py [--image ckpt-guard-action:ci]
       [--base ckpt-guard-ci-base:bookworm] [--old IMAGE] [--runs 5]
Needs a Docker engine and the images (scripts/docker-ci.sh builds both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def size(image: str) -> int:
    out = subprocess.run(["docker", "image", "inspect", image, "--format", "{{.Size}}"],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


def run_once(image: str, ws: Path, tmp: Path) -> float:
    event = tmp / "workflow"
    event.mkdir(exist_ok=True)
    (event / "event.json").write_text("{}")
    fc = tmp / "file_commands"
    fc.mkdir(exist_ok=True)
    for name in ("set_output", "step_summary"):
        (fc / name).write_text("")
    env = {"GITHUB_EVENT_NAME": "workflow_dispatch",
           "GITHUB_EVENT_PATH": "/github/workflow/event.json",
           "GITHUB_WORKSPACE": "/github/workspace", "GITHUB_REPOSITORY": "org/repo",
           "GITHUB_OUTPUT": "/github/file_commands/set_output",
           "GITHUB_STEP_SUMMARY": "/github/file_commands/step_summary",
           "GITHUB_ACTIONS": "true", "INPUT_PATHS": "examples/**", "INPUT_COMMENT": "false",
           "INPUT_FAIL_ON": "never", "INPUT_MODE": "check", "INPUT_LFS": "off"}
    cmd = ["docker", "run", "--rm", "--network", "none", "--workdir", "/github/workspace",
           "-v", f"{ws}:/github/workspace", "-v", f"{event}:/github/workflow",
           "-v", f"{fc}:/github/file_commands"]
    for k in env:
        cmd += ["-e", k]
    t = time.perf_counter()
    p = subprocess.run([*cmd, image], capture_output=True, text=True,
                       env={**os.environ, **env})
    wall = time.perf_counter() - t
    if p.returncode != 0 or "files_checked" not in (fc / "set_output").read_text():
        raise SystemExit(f"{image} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return wall


def measure(image: str, base: str, runs: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        ws = Path(d) / "ws"
        shutil.copytree(ROOT / "examples", ws / "examples")
        subprocess.run(["git", "init", "-q", str(ws)], check=True)
        run_once(image, ws, Path(d))  # warm the page cache; the runner has pulled the image
        walls = [run_once(image, ws, Path(d)) for _ in range(runs)]
    return {"image": image, "added_bytes": size(image) - size(base),
            "run_best_s": min(walls), "run_median_s": statistics.median(walls)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default="ckpt-guard-action:ci")
    p.add_argument("--base", default="ckpt-guard-ci-base:bookworm")
    p.add_argument("--old", help="an image of the previous design, measured beside")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from bench_fix import machine

    rows = [measure(args.image, args.base, args.runs)]
    if args.old:
        rows.append(measure(args.old, args.base, args.runs))
    print("| image | adds to base | container start → report (best / median) |")
    print("|---|---:|---:|")
    for r in rows:
        print(f"| `{r['image']}` | {r['added_bytes'] / 1e6:.1f} MB | "
              f"{r['run_best_s']:.2f} s / {r['run_median_s']:.2f} s |")
    m = machine()
    print(f"\nMachine: {m['cpu']}, {m['cores']} cores, {m['ram_bytes'] / 2**30:.0f} GiB; "
          f"base image {args.base}; {args.runs} runs each")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "container.json").write_text(json.dumps({"machine": m, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
