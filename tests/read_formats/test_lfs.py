"""Git LFS pointers, as git-lfs writes them, and malformed ones."""

from __future__ import annotations

import pytest

from ckpt_guard.read import read_path
from ckpt_guard.read.checkpoint import UnreadableError

OID = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393"
GOOD = f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n"


def test_pointer(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text(GOOD)
    ckpt = read_path(str(path))
    assert ckpt.format == "lfs-pointer"
    assert ckpt.metadata == {"oid": f"sha256:{OID}", "size": 12345}
    assert ckpt.size_bytes == len(GOOD)
    assert ckpt.root is None and not ckpt.storages


def test_pointer_with_extension_keys(tmp_path):
    text = ("version https://git-lfs.github.com/spec/v1\next-0-foo sha256:" + "b" * 64
            + f"\noid sha256:{OID}\nsize 7\n")
    path = tmp_path / "model.pt"
    path.write_text(text)
    assert read_path(str(path)).metadata["size"] == 7


@pytest.mark.parametrize("text,match", [
    (GOOD.replace(f"oid sha256:{OID}\n", ""), "oid"),
    (GOOD.replace(OID, OID[:-1] + "Z"), "oid"),
    (GOOD.replace("size 12345\n", ""), "size"),
    (GOOD.replace("size 12345", "size -1"), "size"),
    (GOOD.rstrip("\n"), "newline"),
    (GOOD + "size 1\n", "duplicate"),
    (GOOD + "garbage\n", "key value"),
    (GOOD + "x" * 1100 + "\n", "too large"),
])
def test_malformed(tmp_path, text, match):
    path = tmp_path / "model.pt"
    path.write_text(text)
    with pytest.raises(UnreadableError, match=match):
        read_path(str(path))
