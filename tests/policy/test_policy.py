"""Loading, merging over the built-in policy, file globs, overrides and discovery."""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from ckpt_guard.policy import (
    DEFAULT_INCLUDE,
    FIXABLE_RULES,
    RuleConfig,
    builtin_policy,
    find_policy_file,
    init_text,
    load_policy,
    load_text,
)
from ckpt_guard.policy.validate import rule_ids, schema
from ckpt_guard.policy.yamlsrc import parse
from ckpt_guard.report.model import RULES


def _resource(name: str) -> str:
    return resources.files("ckpt_guard.policy").joinpath(name).read_text("utf-8")


# --- the built-in policy and `init` -------------------------------------------------------

def test_schema_is_valid_draft_2020_12_and_names_every_rule() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(rule_ids()) == set(RULES)


@pytest.mark.parametrize("name", ["defaults.yml", "init_template.yml"])
def test_shipped_policies_validate(name: str) -> None:
    src, problems = parse(_resource(name))  # YAML 1.2 booleans: `off` stays a string
    assert not problems
    jsonschema.Draft202012Validator(schema()).validate(src.data)
    load_text(_resource(name), name)  # and through our own loader


def test_init_template_equals_builtin_defaults() -> None:
    template, problems = parse(init_text())
    defaults, problems2 = parse(_resource("defaults.yml"))
    assert not problems and not problems2
    assert template.data == defaults.data
    assert set(template.data["rules"]) == set(RULES)  # every rule is spelled out


def test_init_template_explains_every_rule_and_option() -> None:
    text = init_text()
    for rule, value in parse(_resource("defaults.yml"))[0].data["rules"].items():
        assert f"  {rule}:" in text
        for option in (value if isinstance(value, dict) else {}):
            assert f"    {option}:" in text
    assert sum(1 for ln in text.splitlines() if ln.lstrip().startswith("#")) > 40


def test_builtin_defaults() -> None:
    p = builtin_policy()
    assert p.source == "built-in" and p.path is None
    actions = {rule: cfg.action for rule, cfg in p.rules.items()}
    assert actions == {
        "optimizer-state": "fail", "unsafe-pickle": "fail", "unreadable": "fail",
        "shard-index": "fail",
        "training-state": "warn", "ema-duplicate": "warn", "fp32-payload": "warn",
        "needs-code": "warn", "lfs-pointer": "warn", "file-size": "off", "size-growth": "off",
    }
    fp32 = p.rules["fp32-payload"]
    assert (fp32.max_bytes, fp32.cast_to, fp32.on_overflow) == (10_000_000, "float16", "keep")
    assert p.rules["file-size"].max_bytes == 100 * 2**20
    assert p.rules["ema-duplicate"].keep == "ema"
    assert p.rules["optimizer-state"].remove_training_files is False
    assert p.include == DEFAULT_INCLUDE and "*.safetensors" in DEFAULT_INCLUDE


@pytest.mark.parametrize(("tensor", "kept"), [
    ("model.0.bn.weight", True),                      # yolov5 / ultralytics Conv
    ("ema.model.22.cv2.0.1.bn.running_mean", True),
    ("state_dict.bn1.weight", True),                  # timm ResNet
    ("bn1.bias", True),                               # safetensors root
    ("encoder.layer.0.attention.output.LayerNorm.weight", True),
    ("model.layers.3.input_layernorm.weight", True),
    ("blocks.0.norm1.bias", True),
    ("backbone.bottom_up.stem.conv1.norm.weight", True),  # detectron2
    ("h.0.ln_1.weight", True),                        # GPT-2
    ("ln_f.weight", True),
    ("model.1.running_var", True),                    # BN inside nn.Sequential
    ("model.1.num_batches_tracked", True),
    ("model.0.conv.weight", False),
    ("model.0.conv.bias", False),                     # biases follow their layer
    ("fc.weight", False),
    ("bneck.0.conv.weight", False),
    ("model.linear.weight", False),
    ("head.lnx", False),
    ("decoder.normal_layers.3.conv.weight", False),   # a word containing "norm" is not one
    ("model.bn.conv.weight", False),                  # a conv inside a block named bn
])
def test_default_keep_fp32(tensor: str, kept: bool) -> None:
    from ckpt_guard.policy.keep_fp32 import KeepFP32
    from ckpt_guard.read.tree import TensorRef

    options = builtin_policy().rules["fp32-payload"].options
    keep = KeepFP32(options, [(tensor, TensorRef(None, "float32", (8,)))])
    assert (keep.reason(tensor) is not None) is kept


# --- loading and merging --------------------------------------------------------------------

def test_file_merges_over_builtin() -> None:
    p = load_text("version: 1\nrules:\n  fp32-payload:\n    max-bytes: 1.5GiB\n"
                  "  optimizer-state: off\n", "p.yml")
    assert p.rules["optimizer-state"] == RuleConfig("off", {"remove-training-files": False})
    fp32 = p.rules["fp32-payload"]
    assert fp32.action == "warn"  # kept from the built-in rule
    assert fp32.max_bytes == 1_610_612_736
    assert fp32.keep_fp32 == builtin_policy().rules["fp32-payload"].keep_fp32
    assert p.rules["unsafe-pickle"].action == "fail"
    assert p.include == DEFAULT_INCLUDE


def test_off_on_yes_no_are_strings_not_booleans() -> None:
    # YAML 1.1 would turn `off` into False; a policy must not.
    p = load_text("version: 1\nrules:\n  training-state: off\n  needs-code: {action: off}\n",
                  "p.yml")
    assert p.rules["training-state"].action == "off"
    assert p.rules["needs-code"].action == "off"


def test_lists_replace_and_include_replaces() -> None:
    p = load_text("version: 1\ninclude: ['weights/**']\nexclude: ['weights/tmp/']\n"
                  "rules:\n  fp32-payload:\n    keep-fp32: ['*.head.*']\n", "p.yml")
    assert p.include == ("weights/**",)
    assert p.rules["fp32-payload"].keep_fp32 == ("*.head.*",)


def test_yaml_anchors_and_merge_keys() -> None:
    text = ("version: 1\nrules:\n  fp32-payload: &strict\n    action: fix\n"
            "    cast-to: bfloat16\noverrides:\n  - paths: ['a/']\n    rules:\n"
            "      fp32-payload:\n        <<: *strict\n        cast-to: float16\n")
    p = load_text(text, "p.yml")
    assert p.rules["fp32-payload"].cast_to == "bfloat16"
    assert p.rules_for("a/x.pt")["fp32-payload"].cast_to == "float16"
    assert p.rules_for("a/x.pt")["fp32-payload"].action == "fix"


def test_null_sections_mean_not_set() -> None:
    p = load_text("version: 1\ninclude:\nrules:\noverrides:\n", "p.yml")
    assert p.include == DEFAULT_INCLUDE and p.rules == builtin_policy().rules


def test_rule_configs_are_hashable_values() -> None:
    rules = builtin_policy().rules
    assert len({*rules.values(), *load_text(init_text(), "i").rules.values()}) == len(
        set(rules.values()))
    assert RuleConfig("warn", {"max-bytes": 5}) == RuleConfig("warn", {"max-bytes": 5})


def test_fixable_rules_are_the_size_rules() -> None:
    assert set(FIXABLE_RULES) == {"optimizer-state", "training-state", "ema-duplicate",
                                  "fp32-payload"}


# --- include / exclude ----------------------------------------------------------------------

POLICY_GLOBS = load_text(
    "version: 1\n"
    "include: ['*.pt', '*.safetensors', 'models/**/*.bin', '!models/vendor/**']\n"
    "exclude: ['tests/fixtures/', '*.resume.pt', '/scratch.pt']\n", "p.yml")


@pytest.mark.parametrize(("relpath", "expected"), [
    ("a.pt", True),
    ("deep/er/a.pt", True),
    ("./deep/a.pt", True),
    ("model.safetensors", True),
    ("models/x/pytorch_model.bin", True),
    ("pytorch_model.bin", False),             # *.bin only under models/
    ("models/vendor/a.bin", False),           # re-excluded by "!"
    ("tests/fixtures/a.pt", False),           # exclude a folder
    ("tests/other/a.pt", True),
    ("runs/last.resume.pt", False),
    ("scratch.pt", False),                    # anchored to the policy's directory
    ("sub/scratch.pt", True),
    ("notes.txt", False),
])
def test_include_exclude(relpath: str, expected: bool) -> None:
    assert POLICY_GLOBS.matches(relpath) is expected


@pytest.mark.parametrize(("relpath", "expected"), [
    ("tests/fixtures/a.pt", True), ("tests/fixtures/deep/x.bin", True), ("x.resume.pt", True),
    ("scratch.pt", True), ("a/scratch.pt", False), ("notes.txt", False),
])
def test_excludes(relpath: str, expected: bool) -> None:
    assert POLICY_GLOBS.excludes(relpath) is expected
    assert builtin_policy().excludes(relpath) is False


@pytest.mark.parametrize(("relpath", "expected"), [
    ("runs/exp/weights/last.pt", True), ("a/b.pth.tar", True), ("m.ckpt", True),
    ("pytorch_model.bin", True), ("x.torchscript", True), ("tokenizer.model", False),
    ("config.json", False), ("model.onnx", False),
])
def test_default_include(relpath: str, expected: bool) -> None:
    assert builtin_policy().matches(relpath) is expected


# --- overrides ------------------------------------------------------------------------------

OVERRIDES = load_text(
    "version: 1\n"
    "rules:\n"
    "  fp32-payload: {action: warn, max-bytes: 1MB}\n"
    "overrides:\n"
    "  - paths: ['release/**']\n"
    "    rules:\n"
    "      fp32-payload: {action: fix, cast-to: bfloat16}\n"
    "      optimizer-state: fix\n"
    "  - paths: ['release/legacy/', '*.resume.pt']\n"
    "    rules:\n"
    "      fp32-payload: {max-bytes: 5MB}\n"
    "      optimizer-state: off\n"
    "  - paths: ['release/legacy/keep.pt']\n"
    "    rules:\n"
    "      fp32-payload: warn\n", "p.yml")


@pytest.mark.parametrize(("relpath", "fp32", "optimizer"), [
    ("a.pt", RuleConfig("warn", {"max-bytes": 1_000_000, "cast-to": "float16"}), "fail"),
    ("release/m.pt", RuleConfig("fix", {"max-bytes": 1_000_000, "cast-to": "bfloat16"}), "fix"),
    # both overrides apply, the later wins; options merge (cast-to from the first survives)
    ("release/legacy/m.pt",
     RuleConfig("fix", {"max-bytes": 5_000_000, "cast-to": "bfloat16"}), "off"),
    ("release/legacy/keep.pt",
     RuleConfig("warn", {"max-bytes": 5_000_000, "cast-to": "bfloat16"}), "off"),
    ("runs/x.resume.pt", RuleConfig("warn", {"max-bytes": 5_000_000, "cast-to": "float16"}),
     "off"),
])
def test_overrides_precedence_and_merge(relpath: str, fp32: RuleConfig, optimizer: str) -> None:
    rules = OVERRIDES.rules_for(relpath)
    got = rules["fp32-payload"]
    assert got.action == fp32.action
    assert {k: got.options[k] for k in fp32.options} == dict(fp32.options)
    assert got.keep_fp32 == builtin_policy().rules["fp32-payload"].keep_fp32
    assert rules["optimizer-state"].action == optimizer


def test_rules_for_does_not_mutate_policy() -> None:
    OVERRIDES.rules_for("release/legacy/m.pt")
    assert OVERRIDES.rules["optimizer-state"].action == "fail"
    assert OVERRIDES.rules_for("x.pt")["fp32-payload"].cast_to == "float16"


# --- discovery ------------------------------------------------------------------------------

def _git_init(path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(path)], check=True)


def test_discovery_nearest_file_wins(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    deep = repo / "models" / "yolo"
    deep.mkdir(parents=True)
    _git_init(repo)
    (repo / ".ckpt-guard.yml").write_text("version: 1\n")
    (repo / "models" / ".ckpt-guard.yaml").write_text("version: 1\nrules: {needs-code: off}\n")
    assert find_policy_file(deep) == (repo / "models" / ".ckpt-guard.yaml").resolve()
    assert find_policy_file(deep / "best.pt") == (repo / "models" / ".ckpt-guard.yaml").resolve()
    assert find_policy_file(repo) == (repo / ".ckpt-guard.yml").resolve()
    p = load_policy(None, deep)
    assert p.rules["needs-code"].action == "off"
    assert p.base_dir == (repo / "models").resolve()


def test_discovery_stops_at_repo_root(tmp_path: Path) -> None:
    (tmp_path / ".ckpt-guard.yml").write_text("version: 1\nrules: {needs-code: off}\n")
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    _git_init(repo)
    assert find_policy_file(repo / "sub") is None  # the file above the repo is not used
    assert load_policy(None, repo / "sub") is builtin_policy()


def test_discovery_outside_git_goes_to_filesystem_root(tmp_path: Path) -> None:
    (tmp_path / ".ckpt-guard.yml").write_text("version: 1\n")
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert find_policy_file(tmp_path / "a" / "b") == (tmp_path / ".ckpt-guard.yml").resolve()


def test_discovery_in_worktree_with_git_file(tmp_path: Path) -> None:
    # submodules and worktrees have a `.git` *file*: still a repository root.
    (tmp_path / ".ckpt-guard.yml").write_text("version: 1\n")
    sub = tmp_path / "submodule"
    sub.mkdir()
    (sub / ".git").write_text("gitdir: ../.git/modules/submodule\n")
    assert find_policy_file(sub) is None


def test_discovered_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git_init(repo)
    (repo / ".ckpt-guard.yml").write_text("version: 1\nrules:\n  optimizer-state: nope\n")
    monkeypatch.chdir(repo)
    with pytest.raises(Exception) as info:
        load_policy(None, repo)
    assert str(info.value).startswith(".ckpt-guard.yml:3:20: invalid action 'nope'")


def test_relpath_is_relative_to_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / ".ckpt-guard.yml").write_text(
        "version: 1\ninclude: ['/top.pt']\n")
    p = load_policy(str(tmp_path / "models" / ".ckpt-guard.yml"))
    rel = p.relpath(tmp_path / "models" / "top.pt", root=tmp_path)
    assert rel == "top.pt" and p.matches(rel)
    assert builtin_policy().relpath(tmp_path / "models" / "top.pt", root=tmp_path) == \
        "models/top.pt"


def test_builtin_json_twin_equals_defaults_yml():
    """defaults.json (read at start-up, no YAML parser needed) is defaults.yml's data."""
    import json

    data = json.loads(_resource("defaults.json"))
    assert data == parse(_resource("defaults.yml"))[0].data, (
        "regenerate src/ckpt_guard/policy/defaults.json from defaults.yml")


def test_builtin_policy_does_not_import_yaml():
    import subprocess
    import sys

    code = ("import sys; from ckpt_guard.policy import load_policy; "
            "from pathlib import Path; load_policy(None, Path('/'));"
            "assert 'yaml' not in sys.modules and 'jsonschema' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_init_template_override_example_is_valid_when_uncommented() -> None:
    text = init_text()
    example = text[text.index("# Example:"):].splitlines()[1:]
    body = "\n".join(ln[2:] for ln in example if ln.startswith("#   "))
    policy = load_text(f"version: 1\noverrides:\n{body}\n", "example")
    assert [o.paths for o in policy.overrides] == [("checkpoints/resume/**",), ("release/**",)]
    assert policy.convert_for("release/a.pt") == "safetensors"
    for option in ("remove-training-files", "convert", "keep-fp32", "on-overflow", "cast-to",
                   "max-bytes", "keep"):
        assert option in text
