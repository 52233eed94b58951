"""A TorchScript archive is code (issue 8, class 6): real archives built with torch.

``torch.load`` hands a zip holding ``constants.pkl`` to ``torch.jit.load``, which compiles
the archive's ``code/`` and runs a class's ``__setstate__`` while loading. The technique:
``torch.from_file(path, shared=True, size=n)`` in a scripted ``__setstate__`` creates and
writes ``path`` (a ``.pth`` in site-packages would run on the next Python start); the
byte-edited variants inject the same into a clean archive's ``code/__torch__.py`` in the
spellings TorchScript's importer accepts (``ops.aten.*``, ``torch.autograd.*``, ``fork``,
aliases, ``getattr``, ``torch.save``).

1. The files are real: torch.load / torch.jit.load creates every canary (one subprocess).
2. ``ckpt-guard check`` exits 1 with ``unsafe-pickle`` (fail) naming the TorchScript code;
   ``check``/``inspect``/``fix`` create no canary and ``fix`` rewrites nothing.
3. Clean scripted and traced models (conv/bn, LSTM/GRU/transformer, quantized dynamic and
   static, an assign-only ``__setstate__``, fork/NamedTuple/TorchScript class) carry no
   unsafe verdict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from ckpt_guard.analyze import analyze
from ckpt_guard.read import read_path


class _Stateful(nn.Module):
    """A module with an explicit state protocol; ``evil`` adds the from_file payload."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.w = nn.Parameter(torch.zeros(2))
        self.buf = torch.zeros(1, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w

    @torch.jit.export
    def __getstate__(self) -> tuple[str, torch.Tensor, bool]:
        return (self.path, self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]) -> None:
        self.path = state[0]
        self.w = state[1]
        self.training = state[2]
        self.buf = torch.zeros(1, dtype=torch.uint8)


class _Evil(_Stateful):
    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]) -> None:
        self.path = state[0]
        self.w = state[1]
        self.training = state[2]
        self.buf = torch.from_file(self.path, shared=True, size=16, dtype=torch.uint8).fill_(65)


_CLEAN_LINE = "    self.buf = torch.zeros([1], dtype=0)\n"
# Injected in place of the clean __setstate__'s last assignment; {p} is the canary path.
VARIANTS = {
    "ops_aten": '    self.buf = ops.aten.from_file("{p}", True, 16, dtype=0)\n',
    "autograd": '    self.buf = torch.autograd.from_file("{p}", True, 16, dtype=0)\n',
    "fork": ('    self.buf = ops.aten.wait(fork(torch.from_file, "{p}", True, 16, dtype=0))\n'),
    "alias_torch": '    t = torch\n    self.buf = t.from_file("{p}", True, 16, dtype=0)\n',
    "alias_ops": '    o = ops.aten\n    self.buf = o.from_file("{p}", True, 16, dtype=0)\n',
    "getattr": '    self.buf = getattr(torch, "from_file")("{p}", True, 16, dtype=0)\n',
    "comment": '    self.buf = torch.from_file("{p}", True, 16, dtype=0) # ok\n',
    "save": '    torch.save(self.w, "{p}")\n    self.buf = torch.zeros([1], dtype=0)\n',
}


def _script(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # jit is deprecated in 2.13
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def _inject(clean: Path, out: Path, code: str) -> Path:
    """Rewrite ``clean`` with ``code`` in its ``code/__torch__.py`` (a valid zip)."""
    with zipfile.ZipFile(clean) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(".py"):  # code/__torch__/<this test module>.py
                text = data.decode()
                assert _CLEAN_LINE in text, text
                data = text.replace(_CLEAN_LINE, code).encode()
            zout.writestr(info, data)
    return out


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """id -> (archive, canary): the scripted payload and the byte-edited variants."""
    d = tmp_path_factory.mktemp("torchscript")
    out = {"scripted": (_script(_Evil(str(d / "canary-scripted")), d / "scripted.pt"),
                        d / "canary-scripted")}
    clean = _script(_Stateful("unused"), d / "clean-base.pt")
    for vid, code in VARIANTS.items():
        canary = d / f"canary-{vid}"
        out[vid] = (_inject(clean, d / f"{vid}.pt", code.format(p=canary)), canary)
    return out


def test_torch_runs_the_code(archives: dict[str, tuple[Path, Path]]) -> None:
    """torch.load (scripted) and torch.jit.load (variants) create every canary."""
    script = textwrap.dedent("""
        import sys, warnings, torch
        warnings.simplefilter("ignore")
        for i, path in enumerate(sys.argv[1:]):
            try:
                (torch.load(path, weights_only=False) if i == 0 else torch.jit.load(path))
            except Exception as e:  # a variant may fail after writing: the canary decides
                print(path, type(e).__name__)
    """)
    order = ["scripted", *VARIANTS]
    p = subprocess.run([sys.executable, "-c", script, *(str(archives[k][0]) for k in order)],
                       capture_output=True, text=True, timeout=300)
    missing = [k for k in order if not archives[k][1].exists()]
    assert not missing, f"torch did not run: {missing}\n{p.stdout}{p.stderr[-2000:]}"
    for _, canary in archives.values():
        canary.unlink()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ckpt_guard", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)


def test_ckpt_guard_flags_and_never_runs_the_code(archives: dict[str, tuple[Path, Path]],
                                                  tmp_path: Path) -> None:
    for _, canary in archives.values():
        canary.unlink(missing_ok=True)
    files = [str(p) for p, _ in archives.values()]
    cwd = tmp_path
    # A policy that would otherwise rewrite (cast FP32): fix must still leave them alone.
    (cwd / ".ckpt-guard.yml").write_text(
        "version: 1\nrules:\n  fp32-payload:\n    action: fix\n    max-bytes: 0\n")
    check = _cli("check", "--format", "json", *files, cwd=cwd)
    assert check.returncode == 1, check.stderr[-2000:]
    report = {Path(f["path"]).name: f for f in json.loads(check.stdout)["files"]}
    for vid, (path, _) in archives.items():
        entry = report[path.name]
        unsafe = [f for f in entry["findings"] if f["rule"] == "unsafe-pickle"]
        assert unsafe and unsafe[0]["action"] == "fail", (vid, entry["findings"])
        assert "TorchScript code calls" in unsafe[0]["message"], unsafe[0]["message"]
        assert "from_file" in unsafe[0]["message"] or "save" in unsafe[0]["message"]
    before = {p: p.read_bytes() for p, _ in archives.values()}
    inspect = _cli("inspect", "--format", "json", *files, cwd=cwd)
    assert "Traceback" not in inspect.stderr, inspect.stderr[-2000:]
    fix = _cli("fix", "--format", "json", *files, cwd=cwd)
    assert "Traceback" not in fix.stderr, fix.stderr[-2000:]
    fixed = {Path(f["path"]).name: f for f in json.loads(fix.stdout)["files"]}
    for path, canary in archives.values():
        assert fixed[path.name]["status"] != "fixed"
        assert path.read_bytes() == before[path], f"{path.name} was rewritten"
        assert not canary.exists(), f"ckpt-guard ran {path.name}"


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(
            torch.relu(self.bn(self.c(x))), 1), 1))


class _Seq(nn.Module):
    def __init__(self, transformer: bool = True) -> None:
        super().__init__()
        self.e = nn.Embedding(10, 8)
        self.lstm = nn.LSTM(8, 8, 2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(16, 8, batch_first=True)
        self.t = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True),
                                       1) if transformer else nn.Identity()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.e(x))
        y, _ = self.gru(y)
        return self.fc(self.t(y))


class _Static(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = torch.ao.quantization.QuantStub()
        self.c = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 2)
        self.dq = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dq(self.fc(torch.flatten(torch.relu(self.c(self.q(x))), 1)))


@torch.jit.script
class _Scale:
    def __init__(self, k: int) -> None:
        self.k = k

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.k


def _bump(x: torch.Tensor, d: dict[str, int]) -> torch.Tensor:
    for _k, v in d.items():
        x = x + v
    return x


class _Rich(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
        self.scale = _Scale(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        for layer in self.layers:
            x = layer(x)
        fut = torch.jit.fork(_bump, x, {"a": 1})
        x = torch.jit.wait(fut)
        print("shape", x.shape)
        return self.scale.apply(x), int(x.size(0))


def _clean_models(d: Path) -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        img, tokens = torch.rand(1, 3, 8, 8), torch.randint(0, 10, (2, 5))
        qdyn = torch.ao.quantization.quantize_dynamic(_Seq(False).eval(),
                                                      {nn.LSTM, nn.GRU, nn.Linear})
        static = _Static().eval()
        static.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
        prepared = torch.ao.quantization.prepare(static)
        prepared(torch.rand(2, 3, 8, 8))
        qstatic = torch.ao.quantization.convert(prepared)
        models = {
            "block_script": torch.jit.script(_Block().eval()),
            "block_trace": torch.jit.trace(_Block().eval(), img),
            "block_frozen": torch.jit.freeze(torch.jit.script(_Block().eval())),
            "seq_script": torch.jit.script(_Seq().eval()),
            "seq_trace": torch.jit.trace(_Seq().eval(), tokens, check_trace=False),
            "qdyn_script": torch.jit.script(qdyn),
            "qstatic_trace": torch.jit.trace(qstatic, img),
            "assign_setstate": torch.jit.script(_Stateful("x")),
            "rich_script": torch.jit.script(_Rich()),
        }
        out = []
        for name, m in models.items():
            torch.jit.save(m, str(d / f"{name}.pt"))
            out.append(d / f"{name}.pt")
        return out


def test_clean_models_have_no_unsafe_code(tmp_path: Path) -> None:
    for path in _clean_models(tmp_path):
        ckpt = read_path(str(path))
        assert ckpt.format == "torchscript" and ckpt.code, path.name
        unsafe = [f"{v.use.qualname}: {v.reason}" for v in analyze(ckpt).globals
                  if v.safety == "unsafe"]
        assert not unsafe, (path.name, unsafe)


def test_code_with_constants_pkl_is_read_even_without_a_code_folder(tmp_path: Path) -> None:
    """What torch.jit.load would compile is judged whatever folder and letter case the
    record has (miniz finds names case-insensitively), and model.json (legacy format) fails."""
    clean = _script(_Stateful("x"), tmp_path / "clean.pt")
    out = tmp_path / "upper.pt"
    with zipfile.ZipFile(clean) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(".py"):
                info.filename = info.filename[:-3] + ".PY"
                data = data.replace(_CLEAN_LINE.encode(),
                                    b'    self.buf = torch.from_file("/x", True, 1)\n')
            zout.writestr(info, data)
        zout.writestr("clean/model.json", b"{}")
    verdicts = [v for v in analyze(read_path(str(out))).globals if v.safety == "unsafe"]
    reasons = " ".join(f"{v.use.qualname} {v.reason}" for v in verdicts)
    assert "torch.from_file" in reasons and "model.json" in reasons, reasons
    assert os.path.getsize(out) > 0


def test_lite_interpreter_bytecode_operators_are_judged(tmp_path: Path) -> None:
    """``_save_for_lite_interpreter`` adds ``bytecode.pkl``, whose operator tables the lite
    interpreter runs (``__setstate__`` at load) without compiling ``code/``: a ``.ptl`` with
    clean code and ``aten::from_file`` in its bytecode is unsafe; a clean ``.ptl`` is not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = tmp_path / "clean.ptl"
        torch.jit.script(_Block().eval())._save_for_lite_interpreter(str(clean))
        evil = tmp_path / "evil.ptl"
        torch.jit.script(_Evil(str(tmp_path / "canary")))._save_for_lite_interpreter(str(evil))
    assert not [v for v in analyze(read_path(str(clean))).globals if v.safety == "unsafe"]
    code = ("import warnings, sys; warnings.simplefilter('ignore')\n"
            "from torch.jit.mobile import _load_for_lite_interpreter as load\n"
            "load(sys.argv[1])\n")
    p = subprocess.run([sys.executable, "-c", code, str(evil)], capture_output=True,
                       text=True, timeout=300)
    assert (tmp_path / "canary").exists(), p.stderr[-2000:]  # the lite interpreter ran it
    (tmp_path / "canary").unlink()
    # Keep the evil bytecode, put the clean code beside it: only bytecode.pkl tells.
    base = _script(_Stateful(str(tmp_path / "canary")), tmp_path / "base.pt")
    mixed = tmp_path / "mixed.ptl"
    with zipfile.ZipFile(evil) as zev, zipfile.ZipFile(base) as zb, \
            zipfile.ZipFile(mixed, "w") as zout:
        bytecode = next(i for i in zev.infolist() if i.filename.endswith("/bytecode.pkl"))
        assert b"aten::from_file" in zev.read(bytecode)
        for info in zb.infolist():
            zout.writestr(info, zb.read(info))
        zout.writestr("base/bytecode.pkl", zev.read(bytecode))
    verdicts = [v for v in analyze(read_path(str(mixed))).globals if v.safety == "unsafe"]
    assert [v.use.member.split(" line")[0] for v in verdicts
            if v.use.qualname == "ops.aten.from_file"] == ["base/bytecode.pkl (operators)"], \
        verdicts
