"""The real-trainer group (`-m frameworks`, extra `frameworks`): each test trains a tiny model
with a framework's own trainer and compares `ckpt-guard fix` with the framework's own strip.
Every test here carries the `frameworks` marker; a test whose framework does not import is
skipped with the reason (install the extra: ``pip install -e ".[frameworks]"``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.frameworks)


@pytest.fixture(autouse=True, scope="module")
def _environment_restored() -> Iterator[None]:
    """Trainers set environment variables (and these tests set some before importing a
    framework): whatever a module changed is undone before the rest of the session, whose CLI
    subprocesses inherit the environment (HF_HUB_OFFLINE would turn the stand-in Hub tests
    offline)."""
    before = dict(os.environ)
    yield
    for key in set(os.environ) - set(before):
        del os.environ[key]
    os.environ.update(before)
