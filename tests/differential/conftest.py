"""One torch subprocess for the whole differential run (torch imports once)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.differential.oracle import TorchOracle


@pytest.fixture(scope="session")
def torch_oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchOracle]:
    oracle = TorchOracle(cwd=str(tmp_path_factory.mktemp("oracle-cwd")))
    yield oracle
    oracle.close()
