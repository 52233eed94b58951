"""Benchmark: checking remote weight files by byte range against downloading them.

Side by side in one run, over a real HTTP server on loopback that counts requests and bytes:

* ``ckpt-guard check https://…`` of a ~1 GB torch-zip checkpoint (FP32 weights + Adam state)
  and of a ~1 GB safetensors file: wall time, requests, bytes transferred;
* downloading the same file whole (what every peer scanner does before scanning it).

Usage: python benchmarks/bench_remote.py [--size-gb 1.0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))


def make_zip(path: Path, size_gb: float) -> None:
    import torch

    n = 200
    width = max(1, int(size_gb * 1e9 / 12 / n))  # weights + exp_avg + exp_avg_sq, FP32
    model = {f"layer{i}.weight": torch.empty(width) for i in range(n)}
    state = {i: {"step": torch.tensor(1.0), "exp_avg": torch.empty(width),
                 "exp_avg_sq": torch.empty(width)} for i in range(n)}
    torch.save({"model": model, "optimizer": {"state": state, "param_groups": [
        {"lr": 1e-3, "params": list(range(n))}]}}, path)


def make_safetensors(path: Path, size_gb: float) -> None:
    import torch
    from safetensors.torch import save_file

    n = 400
    width = max(1, int(size_gb * 1e9 / 4 / n))
    save_file({f"layer{i}.weight": torch.empty(width) for i in range(n)}, str(path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=1.0)
    args = p.parse_args(argv)
    import requests
    from bench_fix import machine

    from tests.remote.servers import FileServer

    rows = []
    with tempfile.TemporaryDirectory() as d:
        files = {"/ckpt.pt": Path(d) / "ckpt.pt", "/model.safetensors": Path(d) / "m.st"}
        make_zip(files["/ckpt.pt"], args.size_gb)
        make_safetensors(files["/model.safetensors"], args.size_gb)
        with FileServer(files) as srv:
            for name, path in files.items():
                size = path.stat().st_size
                srv.log.requests.clear()
                srv.log.bytes_sent = 0
                t = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "ckpt_guard", "check", "--format",
                                    "json", f"{srv.url}{name}"], capture_output=True, text=True,
                                   env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
                wall = time.perf_counter() - t
                status = json.loads(r.stdout)["files"][0]["status"]
                rows.append({"what": f"ckpt-guard check {name}", "size": size, "wall": wall,
                             "requests": len(srv.log.requests), "bytes": srv.log.bytes_sent,
                             "status": status})
                srv.log.bytes_sent = 0
                t = time.perf_counter()
                with requests.get(f"{srv.url}{name}", stream=True, timeout=600) as resp:
                    got = sum(len(c) for c in resp.iter_content(1 << 20))
                wall = time.perf_counter() - t
                rows.append({"what": f"download {name} whole", "size": size, "wall": wall,
                             "requests": 1, "bytes": got, "status": ""})
    print("| what | file | wall | requests | transferred | share |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['what']} | {r['size'] / 1e9:.2f} GB | {r['wall']:.2f} s | {r['requests']} | "
              f"{r['bytes'] / 1e6:.3f} MB | {100 * r['bytes'] / r['size']:.4f} % |")
    m = machine()
    print(f"\nMachine: {m['cpu']}, {m['cores']} cores; loopback HTTP server")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "remote.json").write_text(json.dumps({"machine": m, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
