"""Split one run's files across a job matrix (``shard: I/N``), and merge the shards' reports.

Assignment is by size, deterministic from the file list alone (every runner sees the same
event and checkout, so each computes the same split without talking to the others): files
largest first (ties by path) each go to the shard with the fewest bytes so far (ties: the
lowest shard). A monorepo's 40 GB of weights thus spread evenly, and a shard never depends on
the order git lists files in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ckpt_guard.action.settings import Shard


def assign(files: Sequence[str], size: Callable[[str], int] | Mapping[str, int],
           shard: Shard) -> list[str]:
    """The files of ``shard`` (in their given order), balancing bytes across shards."""
    size_of = size if callable(size) else size.__getitem__
    loads = [0] * shard.count
    mine: set[str] = set()
    for path in sorted(files, key=lambda p: (-size_of(p), p)):
        k = min(range(shard.count), key=lambda i: (loads[i], i))
        loads[k] += size_of(path)
        if k == shard.index - 1:
            mine.add(path)
    return [p for p in files if p in mine]
