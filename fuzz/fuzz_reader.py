"""Long-run fuzzing of ckpt-guard's reader (read_path + analyze).

Two engines:

* ``atheris`` (coverage-guided libFuzzer; ``pip install atheris``)::

      python fuzz/fuzz_reader.py --make-seeds fuzz/out/seeds
      python fuzz/fuzz_reader.py fuzz/out/corpus fuzz/out/seeds -atheris_runs=100000 \
          -timeout=10 -rss_limit_mb=2048 -max_len=65536

* ``random`` (no extra dependency): structure-aware random mutation of the seeds::

      python fuzz/fuzz_reader.py --engine random --runs 100000 --seeds fuzz/out/seeds

The property checked on every input: ``read_path`` + ``analyze`` return or raise
``UnreadableError`` — any other exception is a crash (saved under ``fuzz/out/crashes``), an
input taking longer than ``--timeout`` seconds is a hang, and no module may be imported and no
canary file created by reading.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.fuzz helpers (mutations and seeds)

OUT = ROOT / "fuzz" / "out"
CANARY_DIR = Path(tempfile.gettempdir()) / "ckpt-guard-fuzz-canaries"
_WORK = Path(tempfile.mkdtemp(prefix="ckpt-guard-fuzz-"))
_INPUT = _WORK / "input.pt"


def _reader():
    from ckpt_guard.analyze import analyze
    from ckpt_guard.read import UnreadableError, read_path
    return analyze, read_path, UnreadableError


def one_input(data: bytes) -> None:
    """Raise on anything but a clean read or UnreadableError."""
    analyze, read_path, unreadable = _reader()
    _INPUT.write_bytes(data)
    with contextlib.suppress(unreadable):
        analyze(read_path(str(_INPUT)))


def make_seeds(directory: Path) -> None:
    from tests.fuzz.seeds import write_seeds

    n = write_seeds(directory, str(CANARY_DIR))
    print(f"wrote {n} seeds to {directory}")


_SEEN: dict[str, int] = {}


def one_input_keep_going(data: bytes) -> None:
    """Like :func:`one_input`, but record a crash (deduplicated by exception type and
    location) under fuzz/out/crashes/ and keep fuzzing instead of stopping at the first."""
    try:
        one_input(data)
    except Exception as e:  # noqa: BLE001 - every exception but UnreadableError is a finding
        sig = f"{type(e).__name__}: {traceback.extract_tb(e.__traceback__)[-1][:3]}"
        (OUT / "crashes").mkdir(parents=True, exist_ok=True)
        _save(OUT / "crashes", "crash", data, sig, {"unique": _SEEN})
        (OUT / "crashes" / "atheris-unique.json").write_text(json.dumps(_SEEN, indent=1))


def run_atheris(argv: list[str], keep_going: bool) -> None:
    import atheris

    with atheris.instrument_imports():
        import ckpt_guard.analyze  # noqa: F401
        import ckpt_guard.read  # noqa: F401
        import ckpt_guard.read.pickle_vm  # noqa: F401
        import ckpt_guard.read.safetensors  # noqa: F401
        import ckpt_guard.read.torch_zip  # noqa: F401
    atheris.Setup(argv, one_input_keep_going if keep_going else one_input)
    atheris.Fuzz()


def run_random(runs: int, seeds_dir: Path, seed: int, timeout: float) -> dict:
    """Mutate seeds at random; record crashes and hangs; return a summary."""
    import signal

    from tests.fuzz.mutate import mutate

    seeds = {p.name: p.read_bytes() for p in sorted(seeds_dir.iterdir()) if p.is_file()}
    names = sorted(seeds)
    rng = random.Random(seed)
    crashes_dir = OUT / "crashes"
    crashes_dir.mkdir(parents=True, exist_ok=True)
    CANARY_DIR.mkdir(parents=True, exist_ok=True)

    class Hang(Exception):
        pass

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang()

    signal.signal(signal.SIGALRM, on_alarm)
    from tests.fuzz.mutate import warm_codecs

    warm_codecs()
    for name in names:  # warm lazy imports before watching sys.modules
        with contextlib.suppress(Exception):  # a seed crash shows up in the main loop too
            one_input(seeds[name])
    modules = set(sys.modules)
    stats = {"runs": 0, "crashes": 0, "hangs": 0, "unique": {}, "new_modules": [],
             "canaries": 0}
    start = time.time()
    for i in range(runs):
        name = rng.choice(names)
        data = seeds[name]
        for _ in range(rng.randrange(1, 4)):
            data = mutate(data, rng)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            one_input(data)
        except Hang:
            stats["hangs"] += 1
            _save(crashes_dir, "hang", data, "hang", stats)
        except Exception as e:  # noqa: BLE001 - every other exception is a finding
            stats["crashes"] += 1
            sig = f"{type(e).__name__}: {traceback.extract_tb(e.__traceback__)[-1][:3]}"
            _save(crashes_dir, "crash", data, sig, stats)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        stats["runs"] = i + 1
        if len(sys.modules) != len(modules):
            stats["new_modules"] = sorted(set(sys.modules) - modules)
        if (i + 1) % 10_000 == 0:
            print(f"{i + 1} runs, {stats['crashes']} crashes, {stats['hangs']} hangs, "
                  f"{time.time() - start:.0f}s", flush=True)
    stats["canaries"] = len(list(CANARY_DIR.iterdir()))
    stats["seconds"] = round(time.time() - start, 1)
    stats["seeds"] = len(names)
    return stats


def _save(directory: Path, kind: str, data: bytes, sig: str, stats: dict) -> None:
    if sig in stats["unique"]:
        stats["unique"][sig] += 1
        return
    stats["unique"][sig] = 1
    h = hashlib.sha1(data).hexdigest()[:12]
    (directory / f"{kind}-{h}.bin").write_bytes(data)
    (directory / f"{kind}-{h}.txt").write_text(sig + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engine", choices=("atheris", "random"), default="atheris")
    p.add_argument("--make-seeds", metavar="DIR")
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--seeds", default=str(OUT / "seeds"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--summary", help="write the random engine's summary JSON here")
    p.add_argument("--keep-going", action="store_true",
                   help="atheris: record crashes and continue instead of stopping")
    p.add_argument("--replay", metavar="FILE", help="run one saved input (a crash) and exit")
    args, rest = p.parse_known_args()
    if args.replay:
        one_input(Path(args.replay).read_bytes())
        print("no crash")
        return 0
    if args.make_seeds:
        make_seeds(Path(args.make_seeds))
        return 0
    if args.engine == "atheris":
        run_atheris([sys.argv[0], *rest], args.keep_going)
        return 0
    stats = run_random(args.runs, Path(args.seeds), args.seed, args.timeout)
    text = json.dumps(stats, indent=2)
    print(text)
    if args.summary:
        Path(args.summary).write_text(text + "\n")
    return 1 if stats["crashes"] or stats["hangs"] or stats["canaries"] else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
