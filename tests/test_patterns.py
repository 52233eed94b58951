"""Issue 8, class 12: what gets checked at all. One list of weight-file suffixes
(``ckpt_guard.patterns``), in any case, and every surface agrees with it: the hooks' ``files:``
regex, the built-in policy's ``include`` (yml, json, init template), the Action's default
selection, checkpoint-directory members, the README and the docs workflows' triggers."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ckpt_guard.patterns import INCLUDE_GLOBS, WEIGHT_SUFFIXES, hook_files_regex, is_weight_name
from ckpt_guard.policy import builtin_policy, load_text

ROOT = Path(__file__).resolve().parents[1]
POLICY_DIR = ROOT / "src" / "ckpt_guard" / "policy"


def test_hook_regex_is_generated_from_the_suffixes() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["files"] for h in hooks} == {hook_files_regex()}


def test_builtin_include_is_the_suffixes() -> None:
    assert builtin_policy().include == INCLUDE_GLOBS
    assert tuple(yaml.safe_load((POLICY_DIR / "defaults.yml").read_text())["include"]) \
        == INCLUDE_GLOBS
    assert tuple(json.loads((POLICY_DIR / "defaults.json").read_text())["include"]) \
        == INCLUDE_GLOBS
    assert tuple(yaml.safe_load((POLICY_DIR / "init_template.yml").read_text())["include"]) \
        == INCLUDE_GLOBS


def test_readme_lists_the_suffixes() -> None:
    listed = ", ".join(f"`{s}`" for s in WEIGHT_SUFFIXES)
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert listed in text


def test_docs_workflow_triggers_only_name_weight_suffixes() -> None:
    for wf in sorted((ROOT / "docs" / "workflows").glob("*.yml")):
        for glob in re.findall(r"\*\*/\*(\.[\w.]+)", wf.read_text()):
            assert glob in WEIGHT_SUFFIXES, (wf.name, glob)


@pytest.mark.parametrize("name", ["model.PT", "w.Pth", "x.PTH.TAR", "m.SafeTensors",
                                  "s.TorchScript", "lite.PTL", "d/e/f.Bin", "a.pkl"])
def test_every_case_is_a_weight_file(name: str) -> None:
    assert re.search(hook_files_regex(), name)
    assert is_weight_name(name)
    assert builtin_policy().matches(name)
    assert load_text("version: 1\ninclude: ['models/*.pt']\n").matches(
        "models/" + name.rsplit("/", 1)[-1]) == name.lower().endswith(".pt")


@pytest.mark.parametrize("name", ["tokenizer.model", "notes.txt", "model.pt.bak", "pt"])
def test_other_files_are_not(name: str) -> None:
    assert not re.search(hook_files_regex(), name)
    assert not builtin_policy().matches(name)


def test_exclude_stays_case_sensitive() -> None:
    p = load_text("version: 1\nexclude: ['fixtures/']\n")
    assert not p.matches("fixtures/a.PT") and p.matches("Fixtures/a.PT")


def test_repository_walk_directory_walk_and_action_pick_upper_case(tmp_path: Path) -> None:
    from ckpt_guard.action.checking import matches
    from ckpt_guard.app.check import discover

    (tmp_path / "models").mkdir()
    for name in ("model.PT", "Other.SAFETENSORS", "readme.md"):
        (tmp_path / "models" / name).write_bytes(b"x")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    policy = builtin_policy()
    walked = sorted(Path(t.path).name for t in discover([], policy, root=tmp_path,
                                                        cwd=tmp_path))
    assert walked == ["Other.SAFETENSORS", "model.PT"]
    in_dir = sorted(Path(t.path).name for t in discover(["models"], policy, root=tmp_path,
                                                        cwd=tmp_path))
    assert in_dir == walked
    assert matches(policy, "models/model.PT", tmp_path)
    assert not matches(policy, "models/readme.md", tmp_path)


def test_a_checkpoint_directory_member_in_upper_case_is_not_skipped(tmp_path: Path) -> None:
    from ckpt_guard.read import read_path

    d = tmp_path / "checkpoint-5"
    d.mkdir()
    (d / "trainer_state.json").write_text("{}")
    (d / "EXTRA.PT").write_bytes(b"not a weight file at all")
    ckpt = read_path(str(d))
    assert [rel for rel, _c, _h in ckpt.children] == ["EXTRA.PT"]
