"""Mutation fuzzing (hypothesis) of real torch-made checkpoints and the adversarial corpus:
``read_path`` + ``analyze`` either return or raise ``UnreadableError`` — never another
exception, never a hang — import nothing new, and fire no canary."""

from __future__ import annotations

import random
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpt_guard.analyze import analyze
from ckpt_guard.read import UnreadableError, read_path
from tests.fuzz.mutate import mutate, warm_codecs
from tests.fuzz.seeds import seeds

CANARY_DIR = Path(tempfile.mkdtemp(prefix="ckpt-guard-fuzz-canary-"))
WORK = Path(tempfile.mkdtemp(prefix="ckpt-guard-fuzz-"))
SEEDS = seeds(str(CANARY_DIR))
NAMES = sorted(SEEDS)


class Hang(Exception):
    pass


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging the suite) when one read takes longer than ``seconds``."""
    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"read took more than {seconds}s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def read_once(data: bytes, name: str = "input.pt") -> str:
    """Read ``data`` as a file; returns "read" or "unreadable"; anything else propagates."""
    path = WORK / name
    path.write_bytes(data)
    try:
        analyze(read_path(str(path)))
        return "read"
    except UnreadableError:
        return "unreadable"


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    warm_codecs()
    for name in NAMES:  # import every lazily-imported reader module once
        read_once(SEEDS[name])


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(NAMES), st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_mutated_inputs_never_crash_or_import(name: str, seed: int, rounds: int) -> None:
    rng = random.Random(seed)
    data = SEEDS[name]
    for _ in range(rounds):
        data = mutate(data, rng)
    before = set(sys.modules)
    with deadline(20):
        read_once(data)
    assert set(sys.modules) == before, set(sys.modules) - before
    assert not any(CANARY_DIR.iterdir())


@pytest.mark.parametrize("name", NAMES)
def test_seeds_read_or_are_unreadable(name: str) -> None:
    with deadline(20):
        read_once(SEEDS[name])
    assert not any(CANARY_DIR.iterdir())
