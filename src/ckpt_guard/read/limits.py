"""Resource limits for reading untrusted files. Over a limit ⇒ :class:`LimitExceeded`
(an ``unreadable`` finding), never a hang or an out-of-memory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_opcodes: int = 5_000_000  # opcodes executed by one pickle
    max_memo: int = 1_000_000  # memo entries
    max_depth: int = 1_000  # nesting of containers/MARKs/objects while building
    max_stack: int = 1_000_000  # stack length
    max_container: int = 10_000_000  # items in one list/dict/tuple/set
    # Objects one pickle builds (containers, strings, calls; a set counts 4): bounds the
    # reader's memory and the analysis' work. ~8 per tensor in torch.save's pickles.
    max_objects: int = 1_000_000
    # Analysis: tensor paths materialised (components summed over every path a tensor is
    # found at): deep nesting times many tensors must not turn quadratic.
    max_path_components: int = 8_000_000
    max_string: int = 64 * 1024 * 1024  # one str/bytes value in a pickle
    max_pickle_bytes: int = 512 * 1024 * 1024  # one pickle member (data.pkl, legacy headers)
    max_zip_entries: int = 1_000_000
    max_safetensors_header: int = 100_000_000  # per the safetensors spec
    max_storage_numel: int = 1 << 48  # a storage claiming more elements is a lie
    max_dir_files: int = 10_000  # files looked at in a checkpoint directory
    # TorchScript code records of one archive, in all; one record at most a quarter of it
    # (parsing builds ~200 bytes of syntax tree per source byte).
    max_code_bytes: int = 4 * 1024 * 1024
    max_code_nodes: int = 1_000_000  # Python syntax nodes of that code, in all
