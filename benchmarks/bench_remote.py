"""Benchmark: checking remote weight files by byte range against downloading them.

Side by side in one run, over a real HTTP server on loopback that counts requests and bytes:

* ``ckpt-guard check https://…`` of a ~1 GB torch-zip checkpoint (FP32 weights + Adam state)
  and of a ~1 GB safetensors file: wall time, requests, bytes transferred;
* downloading the same file whole (what every peer scanner does before scanning it);
* a sharded safetensors set (10 shards, ~5.5 GB) checked as one unit through its index
  (``https://…/model.safetensors.index.json``, and ``hf://ORG/REPO`` on a stand-in Hub that
  huggingface_hub talks to), against downloading its files. The shards are sparse files (a
  real header, holes for the data: no disk used), verified with ``safetensors.safe_open``.

Usage: python benchmarks/bench_remote.py [--size-gb 1.0] [--set-gb 5.5] [--shards 10]
       [--only single|set]
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


def make_sparse_set(folder: Path, total_gb: float, shards: int,
                    tensors_per_shard: int = 32) -> Path:
    """A sharded safetensors set as huggingface_hub names and indexes it, each shard a real
    safetensors header followed by a hole (sparse file) for its tensor data. Returns the
    index. Hand-written headers because the real writer would have to write the data."""
    from safetensors import safe_open

    folder.mkdir(parents=True, exist_ok=True)
    per = int(total_gb * 1e9 / shards / tensors_per_shard / 2)  # BF16 elements per tensor
    rows = 4096
    cols = max(1, per // rows)
    weight_map: dict[str, str] = {}
    total = 0
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        off = 0
        for t in range(tensors_per_shard):
            key = f"model.layers.{s * tensors_per_shard + t}.mlp.weight"
            n = rows * cols * 2
            header[key] = {"dtype": "BF16", "shape": [rows, cols],
                           "data_offsets": [off, off + n]}
            weight_map[key] = name
            off += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / name, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            f.truncate(8 + len(raw) + off)  # the data: a hole
        total += off
        with safe_open(str(folder / name), "pt") as st:  # the real reader accepts it
            assert len(list(st.keys())) == tensors_per_shard
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                indent=2))
    return index


def _check_row(what: str, url: str, size: int, log, env: dict | None = None) -> dict:
    log.requests.clear()
    log.bytes_sent = 0
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "ckpt_guard", "check", "--format", "json", url],
                       capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})})
    wall = time.perf_counter() - t
    f = json.loads(r.stdout)["files"]
    status = ", ".join(f"{x['format']} {x['status']}" for x in f)
    return {"what": what, "size": size, "wall": wall, "requests": len(log.requests),
            "bytes": log.bytes_sent, "status": status}


def _download_row(what: str, urls: list[str], size: int) -> dict:
    import requests

    t = time.perf_counter()
    got = 0
    with requests.Session() as sess:
        for url in urls:
            with sess.get(url, stream=True, timeout=600) as resp:
                got += sum(len(c) for c in resp.iter_content(1 << 20))
    return {"what": what, "size": size, "wall": time.perf_counter() - t,
            "requests": len(urls), "bytes": got, "status": ""}


def bench_set(d: Path, set_gb: float, shards: int) -> list[dict]:
    from tests.remote.servers import FakeHub, FileServer

    index = make_sparse_set(d / "set", set_gb, shards)
    paths = sorted(index.parent.iterdir())
    size = sum(p.stat().st_size for p in paths)
    used = sum(p.stat().st_blocks * 512 for p in paths)
    print(f"set: {len(paths) - 1} shards, {size / 1e9:.2f} GB apparent, "
          f"{used / 1e6:.2f} MB on disk (sparse)", file=sys.stderr)
    rows = []
    with FileServer({f"/set/{p.name}": p for p in paths}) as srv:
        rows.append(_check_row(f"ckpt-guard check https://…/{index.name} ({shards} shards)",
                               f"{srv.url}/set/{index.name}", size, srv.log))
        rows.append(_download_row(f"download the set's {len(paths)} files whole",
                                  [f"{srv.url}/set/{p.name}" for p in paths], size))
    with FakeHub("org/big", {p.name: p for p in paths}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_TELEMETRY": "1"}
        row = _check_row(f"ckpt-guard check hf://org/big ({shards} shards)", "hf://org/big",
                         size, hub.cdn.log, env)
        row["requests"] += len(hub.log.requests)  # Hub API + resolve redirects, too
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-gb", type=float, default=1.0)
    p.add_argument("--set-gb", type=float, default=5.5)
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--only", choices=["single", "set"])
    args = p.parse_args(argv)
    from bench_fix import machine

    rows = []
    with tempfile.TemporaryDirectory() as d:
        if args.only != "single":
            rows += bench_set(Path(d), args.set_gb, args.shards)
        if args.only != "set":
            rows += bench_single(Path(d), args.size_gb)
    print("| what | size | wall | requests | transferred | share |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['what']} | {r['size'] / 1e9:.2f} GB | {r['wall']:.2f} s | {r['requests']} | "
              f"{r['bytes'] / 1e6:.3f} MB | {100 * r['bytes'] / r['size']:.4f} % |")
    m = machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nMachine: {m['cpu']}, {m['cores']} cores, load average {load:.1f}; "
          f"loopback HTTP server; {time.strftime('%Y-%m-%d')}")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "remote.json").write_text(json.dumps({"machine": m, "load": load, "rows": rows},
                                                indent=2))
    return 0


def bench_single(d: Path, size_gb: float) -> list[dict]:
    from tests.remote.servers import FileServer

    rows = []
    files = {"/ckpt.pt": d / "ckpt.pt", "/model.safetensors": d / "m.st"}
    make_zip(files["/ckpt.pt"], size_gb)
    make_safetensors(files["/model.safetensors"], size_gb)
    with FileServer(files) as srv:
        for name, path in files.items():
            size = path.stat().st_size
            rows.append(_check_row(f"ckpt-guard check {name}", f"{srv.url}{name}", size,
                                   srv.log))
            rows.append(_download_row(f"download {name} whole", [f"{srv.url}{name}"], size))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
