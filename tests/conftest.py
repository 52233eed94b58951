"""Root pytest configuration: the shared checkpoint fixture factory.

``ckpt_factory`` is session-scoped: each family is built once (real torch, a few KB) and
cached. Use ``ckpt_factory.copy(family, tmp_path)`` before modifying a fixture's file.
"""

from __future__ import annotations

import pytest

from tests.fixtures import FAMILIES, FixtureFactory

__all__ = ["FAMILIES"]


@pytest.fixture(scope="session")
def ckpt_factory(tmp_path_factory: pytest.TempPathFactory) -> FixtureFactory:
    return FixtureFactory(tmp_path_factory.mktemp("ckpt-fixtures"))
