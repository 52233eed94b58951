"""Large casts spread over the cores (a forked worker on Linux, else threads) give the same
bytes and the same error figures as a cast on one thread, and survive a worker that dies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork worker")

# Runs in a fresh (single-threaded) interpreter: the worker is forked only from one.
SCRIPT = textwrap.dedent(r"""
    import json, os, signal, sys, time
    import numpy as np
    from ckpt_guard.rewrite import cast_pool, storage_io
    from ckpt_guard.rewrite.cast import CastStats

    path, target = sys.argv[1], sys.argv[2]
    size = os.path.getsize(path)

    def run(mode, kill_after=None, stop_after=None):
        os.environ["CKPT_GUARD_CAST_WORKER"] = mode
        stats = CastStats()
        out = bytearray()
        with open(path, "rb") as fh:
            gen = storage_io.casted(fh, 0, size, bytearray(storage_io.CHUNK), target, stats)
            for i, chunk in enumerate(gen):
                out += chunk
                if kill_after == i:
                    os.kill(cast_pool._worker.pid, signal.SIGKILL)
                    os.waitpid(cast_pool._worker.pid, 0)
                if stop_after == i:
                    gen.close()
                    return None
        return out.hex()[:64], len(out), hash(bytes(out)), vars(stats)

    single = run("none")
    forked = run("fork")
    first_pid = cast_pool._worker.pid
    assert run("fork", stop_after=0) is None          # abandoned half-way
    again = run("fork")                                 # ... the next cast starts clean
    assert cast_pool._worker.pid == first_pid
    killed = run("fork", kill_after=1)                  # the worker dies mid-cast
    assert not cast_pool._worker.alive
    after = run("fork")                                 # a new worker is started
    assert cast_pool._worker.alive and cast_pool._worker.pid != first_pid
    # A file shorter than its storage says (it changed under us): a clean error, and the
    # worker still answers the next cast.
    os.environ["CKPT_GUARD_CAST_WORKER"] = "fork"
    try:
        with open(path, "rb") as fh:
            for _ in storage_io.casted(fh, 0, size + (24 << 20), bytearray(storage_io.CHUNK),
                                       target, CastStats()):
                pass
    except storage_io.InputChanged:
        pass
    else:
        raise AssertionError("a short file was cast")
    assert run("fork") == after
    threads = run("thread")
    print(json.dumps({"single": single, "forked": forked, "again": again, "killed": killed,
                      "after": after, "threads": threads, "worker": cast_pool._worker.pid}))
""")


def _values(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(n) * 0.02).astype("<f4")
    x[::997] = 0.0
    x[5::1009] *= 1e-6  # FP16 subnormal results
    x[7::1013] *= 1e-9  # flushed to zero
    x[3 << 20] = 7e4  # one chunk with an overflow (the integer path)
    x[(5 << 20) + 3] = np.nan
    return x


@pytest.mark.parametrize("target", ["float16", "bfloat16"])
def test_forked_threaded_and_single_casts_agree(tmp_path: Path, target: str) -> None:
    src = tmp_path / "values.f32"
    # 40 MB: several 8 MiB chunks and a short last one; above the parallel threshold.
    x = _values(10_000_003)
    x.tofile(src)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(src), target], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    # Same bytes, same error figures, whoever cast them, whatever happened to the worker.
    for name in ("forked", "again", "killed", "after", "threads"):
        assert runs[name] == runs["single"], name
    assert runs["single"][1] == x.size * 2
    stats = runs["single"][3]
    fp16 = target == "float16"
    assert stats["count"] == x.size
    assert (stats["underflow"] > 0, stats["overflow"]) == ((True, 1) if fp16 else (False, 0))
    # ... and they are torch's casts.
    expected = torch.from_numpy(x).to(getattr(torch, target)).view(torch.int16).numpy()
    assert runs["single"][0] == expected.tobytes().hex()[:64]
    # The worker leaves with the process that forked it.
    pid = runs["worker"]
    deadline = time.monotonic() + 30
    while not _gone(pid):
        assert time.monotonic() < deadline, f"cast worker {pid} outlived its parent"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for whoever adopted it to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_fix_output_is_the_same_with_and_without_the_worker(tmp_path: Path) -> None:
    """`fix` end to end on a checkpoint with storages above the threshold: the same records
    with the forked worker and on one thread, and torch reads the cast it asked for."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2560, 2048), torch.nn.LayerNorm(2048))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(2, 2560)).sum().backward()
    opt.step()
    model = net.state_dict()
    torch.save({"model": model, "optimizer": opt.state_dict(), "epoch": 3}, tmp_path / "a.pt")
    # A second file in the same run: the worker reads the file it inherited, so it is
    # forked again for this one.
    model_b = {k: v * 2 for k, v in model.items()}
    torch.save({"model": model_b, "optimizer": opt.state_dict()}, tmp_path / "b.pt")
    (tmp_path / ".ckpt-guard.yml").write_text(
        "version: 1\nrules:\n  optimizer-state: fix\n  fp32-payload:\n    action: fix\n"
        "    max-bytes: 0\n")
    records = {}
    for mode in ("fork", "none"):
        out = tmp_path / mode
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
               "CKPT_GUARD_CAST_WORKER": mode, "CKPT_GUARD_NO_CACHE": "1"}
        proc = subprocess.run([sys.executable, "-m", "ckpt_guard", "fix", "--out", str(out),
                               "a.pt", "b.pt"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for name, weights in (("a.pt", model), ("b.pt", model_b)):
            with zipfile.ZipFile(out / name) as z:
                records[mode, name] = {n: z.read(n) for n in z.namelist()
                                       if "/data/" in n or n.endswith("data.pkl")}
            back = torch.load(out / name, weights_only=True)
            assert back["model"]["0.weight"].dtype == torch.float16
            assert torch.equal(back["model"]["0.weight"], weights["0.weight"].half())
            assert back.get("optimizer") is None
    for name in ("a.pt", "b.pt"):
        assert records["fork", name] == records["none", name]
