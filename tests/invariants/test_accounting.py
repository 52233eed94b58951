"""Accounting never counts bytes a file does not hold (issue 9, defect 8): for every zip-based
family (torch zip and TorchScript archives, whose traced inputs claim bytes their records do
not hold), the tensor bytes ``check`` reports are at most the bytes of the storage records."""

from __future__ import annotations

import json
import re
import zipfile

from tests.fixtures import FILE_FAMILIES
from tests.invariants.harness import cli

# Storage records: <archive>/data/N, TorchScript's constants/N and <extra pickle>/N.
_RECORD = re.compile(r"^[^/]+/(?:.+/)?\d+$")


def test_tensor_bytes_never_exceed_the_records(ckpt_factory, tmp_path):
    fixtures = [ckpt_factory.get(f) for f in FILE_FAMILIES]
    zips = [fx for fx in fixtures if zipfile.is_zipfile(fx.path)]
    p = cli(["check", "--format", "json", *[str(fx.path) for fx in zips]], cwd=tmp_path)
    assert p.returncode in (0, 1), p.stderr
    files = json.loads(p.stdout)["files"]
    assert len(files) == len(zips)
    over = {}
    for fx, r in zip(zips, files, strict=True):
        with zipfile.ZipFile(fx.path) as z:
            held = sum(i.file_size for i in z.infolist() if _RECORD.match(i.filename))
        total = r["tensor_bytes"]["total"]
        if total > held or sum(r["tensor_bytes"]["by_role"].values()) > held:
            over[fx.family] = f"{total} B reported, records hold {held} B"
    assert not over, over
    assert any(fx.format == "torchscript" for fx in zips)
