"""Issue 8 class 1 (+ the SETITEM part of 13): a global is judged by how unpickling uses it.

* A function of ANY package that the pickle calls (or hands to a call) runs at load: unsafe,
  even from a package no deny list names (proved with a real package on the path).
* A function only stored as a value (a module's activation) runs nothing: needs-code.
* Real checkpoints (Lightning + omegaconf hparams + TorchVersion + enums) are needs-code at
  most, and ``fix`` still works on them; ``fix`` never writes a file that runs code.
* ``trusted-globals`` silences a team's own classes, never an unsafe global.
* SETITEM on a list reads as CPython reads it, and what follows is still judged.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ckpt_guard.analyze import analyze
from ckpt_guard.read import read_path
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.pickle_vm import load
from tests.adversarial import lightning_fixture
from tests.adversarial import pickles as P
from tests.adversarial import usage_cases as U

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

# A package no scanner has heard of, with a function that runs code: only the *use* rule
# (called ⇒ unsafe) can catch it.
_PKG = textwrap.dedent("""
    import subprocess

    def apply_config(cmd):
        subprocess.run(cmd, shell=True)
        return {}

    class Net:
        def __init__(self, *args):
            self.args = args
""")


def _verdicts(path: Path) -> dict[str, tuple[str, list[str]]]:
    a = analyze(read_path(str(path)))
    return {g.use.qualname: (g.safety, sorted(g.use.uses)) for g in a.globals}


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ckpt_guard", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def corp(tmp_path: Path) -> Path:
    """``corp_tools`` (an unknown package) importable for the subprocess loaders."""
    pkg = tmp_path / "site" / "corp_tools"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(_PKG)
    return tmp_path / "site"


def _fires(data: bytes, site: Path, tmp: Path, canary: Path, runner: str = "pickle") -> bool:
    f = tmp / "payload.bin"
    f.write_bytes(data)
    code = ("import pickle, sys\n"
            "try:\n"
            + ("    import torch; torch.load(sys.argv[1], weights_only=False)\n" if runner ==
               "torch" else "    pickle.loads(open(sys.argv[1], 'rb').read())\n")
            + "except Exception:\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    subprocess.run([sys.executable, "-c", code, str(f)], env=env, cwd=tmp, check=False,
                   capture_output=True, timeout=120)
    return canary.exists()


def test_unknown_package_function_called_is_unsafe(corp: Path, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = P.wrap_dict(P.call(P.global_("corp_tools", "apply_config"),
                              P.binunicode(P.touch_cmd(str(canary)))))
    assert _fires(data, corp, tmp_path, canary)  # the case is real
    canary.unlink()
    path = tmp_path / "called.pt"
    path.write_bytes(data)
    assert _verdicts(path)["corp_tools.apply_config"] == ("unsafe", ["called"])
    assert not canary.exists()


@pytest.mark.parametrize("how", ["defaultdict", "rebuild_from_type"])
def test_unknown_function_passed_to_a_callee_is_unsafe(corp: Path, tmp_path: Path,
                                                       how: str) -> None:
    """Handed to an allowlisted callee that calls it: ``defaultdict(f)`` calls ``f`` for a
    missing key; ``_rebuild_from_type_v2(f, cls, args, state)`` calls it at load."""
    fn = P.global_("corp_tools", "apply_config")
    if how == "defaultdict":
        body = P.call(P.global_("collections", "defaultdict"), fn)
    else:
        canary = tmp_path / "canary"
        body = P.call(P.global_("torch._tensor", "_rebuild_from_type_v2"), fn,
                      P.global_("torch", "Tensor"),
                      P.MARK + P.binunicode(P.touch_cmd(str(canary))) + P.TUPLE, P.NONE)
        assert _fires(P.wrap_dict(body), corp, tmp_path, canary)
        canary.unlink()
    path = tmp_path / "passed.pt"
    path.write_bytes(P.wrap_dict(body))
    assert _verdicts(path)["corp_tools.apply_config"] == ("unsafe", ["passed"])


def test_unknown_function_only_stored_is_needs_code_and_class_is_needs_code(
        corp: Path, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    body = (P.EMPTY_DICT + P.MARK + P.binunicode("hook") + P.global_("corp_tools", "apply_config")
            + P.binunicode("net") + P.call(P.global_("corp_tools", "Net"), P.binint1(3))
            + P.SETITEMS)
    data = P.proto(2) + body + P.STOP
    assert not _fires(data, corp, tmp_path, canary)  # stored, never called: nothing runs
    path = tmp_path / "stored.pt"
    path.write_bytes(data)
    v = _verdicts(path)
    assert v["corp_tools.apply_config"] == ("needs-code", [])
    assert v["corp_tools.Net"] == ("needs-code", ["called"])


def test_activation_functions_stored_on_a_module_are_not_unsafe(tmp_path: Path) -> None:
    """A whole model whose modules keep functions as attributes (``F.gelu`` pickles as
    ``torch._C._nn.gelu``): torch loads it, and nothing in it is unsafe."""
    import torch
    import torch.nn.functional as F

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.GELU())
    model.act, model.act2 = F.gelu, F.silu
    path = tmp_path / "model.pt"
    torch.save({"model": model}, path)
    torch.load(path, weights_only=False)
    v = _verdicts(path)
    assert v["torch._C._nn.gelu"] == ("needs-code", [])
    assert v["torch.nn.functional.silu"] == ("needs-code", [])
    assert not [q for q, (s, _) in v.items() if s == "unsafe"], v


# ---- real checkpoints ----------------------------------------------------------------------
def test_lightning_omegaconf_checkpoint_is_needs_code_at_most() -> None:
    v = _verdicts(lightning_fixture.DATA)
    assert v["torch.torch_version.TorchVersion"] == ("needs-code", ["constructed"])
    for q in ("omegaconf.dictconfig.DictConfig", "omegaconf.base.ContainerMetadata",
              "omegaconf.nodes.AnyNode", "typing.Any", "pyannote.audio.core.task.Problem"):
        assert v[q][0] == "needs-code", (q, v[q])
    assert not [q for q, (s, _) in v.items() if s == "unsafe"], v


def test_lightning_fixture_is_faithful(tmp_path: Path) -> None:
    """Rebuilt with real omegaconf and torch, the fixture carries the same globals, used the
    same way (the committed bytes are not hand-made)."""
    pytest.importorskip("omegaconf")
    path = tmp_path / "fresh.ckpt"
    path.write_bytes(lightning_fixture.make())
    fresh = {(g.qualname, tuple(sorted(g.uses))) for g in read_path(str(path)).globals}
    committed = {(g.qualname, tuple(sorted(g.uses)))
                 for g in read_path(str(lightning_fixture.DATA)).globals}
    assert fresh == committed


def test_lightning_fixture_loads_under_torch(tmp_path: Path) -> None:
    pytest.importorskip("omegaconf")
    code = ("import sys, torch; from tests.adversarial import lightning_fixture as L\n"
            "L.register_stubs()\n"
            "c = torch.load(sys.argv[1], weights_only=False)\n"
            "print(type(c['pyannote.audio']['versions']['torch']).__name__)\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{SRC}"}
    out = subprocess.run([sys.executable, "-c", code, str(lightning_fixture.DATA)], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "TorchVersion"


def test_fix_works_on_the_lightning_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "epoch3.ckpt"
    path.write_bytes(lightning_fixture.DATA.read_bytes())
    (tmp_path / ".ckpt-guard.yml").write_text("version: 1\nrules:\n  optimizer-state: fix\n")
    r = _cli("fix", "--format", "json", str(path), cwd=tmp_path)
    report = json.loads(r.stdout)
    assert report["files"][0]["status"] == "fixed", r.stdout
    assert path.stat().st_size < len(lightning_fixture.DATA.read_bytes())
    assert not [q for q, (s, _) in _verdicts(path).items() if s == "unsafe"]


# ---- fix never writes a file that runs code ------------------------------------------------
def test_fix_refuses_a_file_that_runs_code(tmp_path: Path) -> None:
    import torch

    canary = tmp_path / "canary"
    base = io.BytesIO()
    opt_model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(opt_model.parameters())
    opt_model(torch.ones(1, 2)).sum().backward()
    opt.step()
    torch.save({"model": opt_model.state_dict(), "optimizer": opt.state_dict()}, base)
    from tests.adversarial import containers as Z

    pkl = dict(Z.read_members(base.getvalue()))
    data_pkl = next(v for k, v in pkl.items() if k.endswith("/data.pkl"))
    evil = Z.splice_into_dict_pickle(data_pkl, "hook", U.get_type_hints_body(str(canary)))
    path = tmp_path / "evil.pt"
    path.write_bytes(Z.torch_zip_with(replace={"data.pkl": evil}, base=base.getvalue()))
    before = path.read_bytes()
    (tmp_path / ".ckpt-guard.yml").write_text("version: 1\nrules:\n  optimizer-state: fix\n")
    r = _cli("fix", "--format", "json", str(path), cwd=tmp_path)
    report = json.loads(r.stdout)
    assert report["files"][0]["status"] == "fail", r.stdout
    assert r.returncode == 1
    assert path.read_bytes() == before and not canary.exists()
    assert not list(tmp_path.glob("*.tmp*"))

    # the rewrite API refuses it too, and the read-back check names it
    from ckpt_guard.rewrite import fix_file
    from ckpt_guard.rewrite.verify import unsafe_globals

    ckpt = read_path(str(path))
    res = fix_file(str(path), analyze(ckpt), {}, out_path=str(tmp_path / "out.pt"))
    assert res.error and "unsafe" in res.error
    assert not (tmp_path / "out.pt").exists()
    assert any(u.startswith("typing_extensions.get_type_hints") for u in unsafe_globals(ckpt))


# ---- trusted-globals -----------------------------------------------------------------------
def _own_classes(tmp_path: Path, *, call_function: bool) -> Path:
    body = P.call(P.global_("mycompany.models.resnet", "TinyNet"), P.binint1(1))
    if call_function:
        body = P.EMPTY_DICT + P.MARK + P.binunicode("net") + body + P.binunicode("cfg") \
            + P.call(P.global_("mycompany.models.resnet", "load_config"),
                     P.binunicode("a.yml")) + P.SETITEMS
    path = tmp_path / ("mixed.pt" if call_function else "own.pt")
    path.write_bytes(P.proto(2) + body + P.STOP)
    return path


def test_trusted_globals_silence_own_classes_never_unsafe(tmp_path: Path) -> None:
    (tmp_path / ".ckpt-guard.yml").write_text(
        "version: 1\nrules:\n  needs-code:\n    action: fail\n"
        "    trusted-globals: ['mycompany.models.*']\n")
    own, mixed = _own_classes(tmp_path, call_function=False), _own_classes(tmp_path,
                                                                           call_function=True)
    r = _cli("check", "--format", "json", str(own), str(mixed), cwd=tmp_path)
    files = {Path(f["path"]).name: f for f in json.loads(r.stdout)["files"]}
    assert files["own.pt"]["status"] == "pass", files["own.pt"]
    rules = {f["rule"]: f for f in files["mixed.pt"]["findings"]}
    assert rules["unsafe-pickle"]["action"] == "fail"
    assert "trusted-globals does not apply" in rules["unsafe-pickle"]["message"]
    assert "needs-code" not in rules  # TinyNet is trusted
    # strict mode without trust: the class fails the file
    (tmp_path / ".ckpt-guard.yml").write_text("version: 1\nrules:\n  needs-code: fail\n")
    r = _cli("check", "--format", "json", str(own), cwd=tmp_path)
    assert r.returncode == 1
    assert json.loads(r.stdout)["files"][0]["findings"][0]["rule"] == "needs-code"


@pytest.mark.parametrize("pattern", ["os.*", "builtins.eval", "*", "*.Net", "subprocess",
                                     "torch.jit.*", "typing_extensions.*", "pickle"])
def test_trusting_dangerous_globals_is_refused(pattern: str) -> None:
    from ckpt_guard.policy import PolicyError
    from ckpt_guard.policy.load import load_text

    with pytest.raises(PolicyError) as e:
        load_text(f"version: 1\nrules:\n  needs-code:\n    trusted-globals: ['{pattern}']\n")
    assert "trusted-globals" in str(e.value) and pattern in str(e.value)


def test_trusting_dangerous_globals_is_a_policy_error_on_the_cli(tmp_path: Path) -> None:
    (tmp_path / ".ckpt-guard.yml").write_text(
        "version: 1\nrules:\n  needs-code:\n    trusted-globals: ['os.*']\n")
    path = tmp_path / "m.pt"
    path.write_bytes(P.wrap_dict(P.binint1(1)))
    r = _cli("check", str(path), cwd=tmp_path)
    assert r.returncode == 2 and "trusted-globals 'os.*'" in r.stderr


# ---- SETITEM on a list (issue 8 class 13) --------------------------------------------------
def test_setitem_on_a_list_reads_as_cpython() -> None:
    lst = P.EMPTY_LIST + P.MARK + P.binint1(1) + P.binint1(2) + P.binint1(3) + b"e"  # APPENDS
    data = (P.proto(2) + lst + P.binint1(0) + P.binunicode("a") + P.SETITEM
            + P.MARK + P.binint(-1) + P.binunicode("z") + P.NEWTRUE + P.binunicode("b")
            + P.SETITEMS + P.STOP)
    root, _ = load(data, persistent_load=None, limits=Limits())
    assert root == pickle.loads(data) == ["a", "b", "z"]


def test_setitem_out_of_range_fails_as_cpython_does() -> None:
    from ckpt_guard.read import UnreadableError

    data = P.proto(2) + P.EMPTY_LIST + P.binint1(0) + P.binint1(1) + P.SETITEM + P.STOP
    with pytest.raises(IndexError):
        pickle.loads(data)
    with pytest.raises(UnreadableError):
        load(data, persistent_load=None, limits=Limits())


# ---- the two lookups torch.save writes for plain values -------------------------------------
def test_torch_ops_and_optional_stored_as_values_are_not_unsafe(tmp_path: Path) -> None:
    """``torch.relu`` pickles as ``getattr(torch._C._VariableFunctionsClass, 'relu')`` and
    ``Optional[int]`` as ``getitem(Union, (int, type(None)))``: both only look a value up."""
    import typing

    import torch

    model = torch.nn.Linear(2, 2)
    model.act, model.act2 = torch.relu, torch.tanh
    path = tmp_path / "ops.pt"
    torch.save({"model": model, "hparams": {"ref_type": typing.Optional[int]}},  # noqa: UP045
               path)
    torch.load(path, weights_only=False)
    v = _verdicts(path)
    assert v["builtins.getattr"] == ("needs-code", ["lookup"])
    assert v["builtins.type"] == ("needs-code", ["lookup"])
    assert not [q for q, (s, _) in v.items() if s == "unsafe"], v


def _op(name: str) -> bytes:
    return P.call(P.global_("builtins", "getattr"),
                  P.global_("torch._C", "_VariableFunctionsClass"), P.binunicode(name))


def test_looked_up_torch_op_passed_to_a_callee_is_unsafe(tmp_path: Path) -> None:
    """``_rebuild_from_type_v2(torch.from_file, torch.Tensor, (path, True, 8), None)`` creates
    ``path`` under pickle.loads (torch.from_file with shared=True): the lookup is a call."""
    target = tmp_path / "created-by-from_file"
    body = P.call(P.global_("torch._tensor", "_rebuild_from_type_v2"), _op("from_file"),
                  P.global_("torch", "Tensor"),
                  P.MARK + P.binunicode(str(target)) + P.NEWTRUE + P.binint1(8) + P.TUPLE,
                  P.NONE)
    data = P.wrap_dict(body)
    code = "import pickle, sys\ntry:\n    pickle.loads(open(sys.argv[1], 'rb').read())\n" \
           "except Exception:\n    pass\n"
    path = tmp_path / "from_file.pt"
    path.write_bytes(data)
    subprocess.run([sys.executable, "-c", code, str(path)], check=False, capture_output=True,
                   timeout=120)
    assert target.exists()  # the case is real
    target.unlink()
    v = _verdicts(path)
    assert v["builtins.getattr"][0] == "unsafe", v
    assert not target.exists()


@pytest.mark.parametrize("body", [
    P.call(_op("relu"), P.binint1(1)),  # the looked-up op called: <call>
    P.call(P.global_("builtins", "getattr"), P.global_("torch._C", "_VariableFunctionsClass"),
           P.binunicode("__class__")),
    P.call(P.global_("builtins", "getattr"), P.global_("posix", "system"),
           P.binunicode("relu")),
    P.call(P.global_("builtins", "type"), P.binunicode("X"),
           P.MARK + P.global_("builtins", "object") + P.TUPLE, P.EMPTY_DICT),
    P.call(P.global_("collections", "defaultdict"), _op("from_file")),
], ids=["op-called", "dunder", "other-owner", "type-3-args", "defaultdict-factory"])
def test_other_getattr_and_type_calls_stay_unsafe(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(P.wrap_dict(body))
    v = _verdicts(path)
    assert any(s == "unsafe" for s, _ in v.values()), v
