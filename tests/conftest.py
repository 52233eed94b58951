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


@pytest.fixture(scope="session", autouse=True)
def _user_stash_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`fix` keeps originals of files outside a repository in the user cache: point it (and
    the CLI subprocesses, which inherit the environment) at a temporary directory, never the
    real ~/.cache."""
    import os

    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user-cache"))
