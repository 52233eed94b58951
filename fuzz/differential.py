"""Long run of the differential oracle: container-level mutations (and, with ``--pickles``,
the pickle mutations of tests/fuzz) checked against torch itself.

    PYTHONPATH=src python fuzz/differential.py --minutes 25 --out fuzz/out/differential

Each input is built deterministically from (mutator, seed), written to a scratch file, asked
of torch (one persistent subprocess, tests/differential/torch_child.py, recording shim: no
payload ever runs) and checked by ckpt-guard in this process. A disagreement (see
tests/differential/oracle.py) is de-duplicated by (mutator, kinds, ckpt-guard format) and the
first input of each kind is saved under ``--out`` with a ``.txt`` describing it. A canary
file every payload would create is checked after every input. The summary (counts per
mutator, outcomes, disagreements, torch timeouts) is written to ``--out/summary.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.differential import containers  # noqa: E402
from tests.differential.oracle import OracleTimeout, TorchOracle, compare  # noqa: E402


def _pickle_mutation(seed: int, canary_dir: str) -> tuple[bytes, str]:
    from tests.fuzz.mutate import mutate
    from tests.fuzz.seeds import seeds

    rng = random.Random(f"pickles:{seed}")
    pool = seeds(canary_dir)
    name = rng.choice(sorted(pool))
    data = pool[name]
    for _ in range(rng.randint(1, 3)):
        data = mutate(data, rng)
    return data, ".safetensors" if name.endswith(".safetensors") else ".pt"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=0, help="stop after this many inputs (0: time)")
    ap.add_argument("--first-seed", type=int, default=1_000_000)
    ap.add_argument("--pickles", action="store_true", help="also tests/fuzz pickle mutations")
    ap.add_argument("--out", default=str(ROOT / "fuzz" / "out" / "differential"))
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="ckpt-guard-diff-"))
    canary = scratch / "canary"
    oracle = TorchOracle(cwd=str(scratch))
    mutators = list(containers.MUTATORS) + (["pickles"] if args.pickles else [])
    counts: collections.Counter[str] = collections.Counter()
    outcomes: collections.Counter[str] = collections.Counter()
    found: dict[str, dict] = {}
    hits: collections.Counter[str] = collections.Counter()
    gen_errors: collections.Counter[str] = collections.Counter()
    timeouts = 0
    start = time.monotonic()
    n = 0

    def write_summary() -> dict:
        summary = {"inputs": sum(counts.values()), "seconds": round(time.monotonic() - start),
                   "timeouts": timeouts, "generator_errors": dict(gen_errors),
                   "per_mutator": dict(counts), "outcomes": dict(sorted(outcomes.items())),
                   "disagreements": {k: dict(v, count=hits[k]) for k, v in found.items()}}
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    try:
        while True:
            if args.runs and n >= args.runs:
                break
            if not args.runs and time.monotonic() - start > args.minutes * 60:
                break
            mutator = mutators[n % len(mutators)]
            seed = args.first_seed + n // len(mutators)
            n += 1
            try:
                if mutator == "pickles":
                    data, ext = _pickle_mutation(seed, str(scratch))
                else:
                    data, ext = containers.make(mutator, seed, str(canary))
            except Exception as e:  # noqa: BLE001 - a generator bug must not end the run
                gen_errors[f"{mutator}: {type(e).__name__}: {e}"[:200]] += 1
                continue
            path = scratch / f"input{ext}"
            path.write_bytes(data)
            try:
                answer, view, dis = compare(oracle, path, timeout=30)
            except OracleTimeout:
                timeouts += 1
                continue
            counts[mutator] += 1
            outcomes[f"{mutator}: torch {answer['outcome'].split(':')[0]} / ckpt-guard "
                     f"{view.status}"] += 1
            if canary.exists():
                raise SystemExit(f"CANARY FIRED: {mutator} seed {seed}")
            if dis:
                key = f"{mutator}|{'+'.join(sorted({d.kind for d in dis}))}|{view.format}"
                hits[key] += 1
                if key not in found:
                    name = f"{len(found):03d}-{mutator}-{seed}{ext}"
                    (out / name).write_bytes(data)
                    (out / f"{name}.txt").write_text(
                        f"mutator {mutator} seed {seed}\ntorch: {answer['outcome']}\n"
                        f"ckpt-guard: {view.status} {view.format} {view.error}\n"
                        + "\n".join(map(str, dis)) + "\n")
                    found[key] = {"file": name, "mutator": mutator, "seed": seed,
                                  "torch": answer["outcome"], "ckpt_guard": view.status,
                                  "format": view.format, "disagreements": [str(d) for d in dis]}
                    print(f"[{n}] new disagreement {key}: {dis[0]}", flush=True)
            if n % 500 == 0:
                print(f"[{n}] {time.monotonic() - start:.0f} s, {len(found)} kinds", flush=True)
                write_summary()
    finally:
        oracle.close()
    summary = write_summary()
    print(json.dumps({k: summary[k] for k in ("inputs", "seconds", "timeouts")}))
    print(f"{len(found)} kinds of disagreement: {sorted(found)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
