"""Every way a policy file can be wrong gives one line per problem, at file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckpt_guard.policy import PolicyError, load_policy, load_text

F = ".ckpt-guard.yml"

CASES = [
    pytest.param(
        "version: 1\nrules:\n  optimizer-state: fail\n  optimiser-state: warn\n",
        f"{F}:4:3: unknown rule 'optimiser-state' (did you mean 'optimizer-state'?)",
        id="unknown-rule-suggested"),
    pytest.param(
        "version: 1\nrules:\n  make-it-small: fail\n",
        f"{F}:3:3: unknown rule 'make-it-small' (expected one of: optimizer-state, "
        "training-state, ema-duplicate, fp32-payload, file-size, size-growth, unsafe-pickle, "
        "needs-code, lfs-pointer, shard-index, unreadable)",
        id="unknown-rule-listed"),
    pytest.param(
        "version: 1\nrule:\n  optimizer-state: fail\n",
        f"{F}:2:1: unknown key 'rule' (did you mean 'rules'?)",
        id="unknown-top-key"),
    pytest.param(
        "version: 1\nrules:\n  ema-duplicate:\n    action: warn\n    kep: weights\n",
        f"{F}:5:5: unknown option 'kep' for rule 'ema-duplicate' (did you mean 'keep'?)",
        id="unknown-option"),
    pytest.param(
        "version: 1\nrules:\n  fp32-payload:\n    max_bytes: 1MB\n",
        f"{F}:4:5: unknown option 'max_bytes' for rule 'fp32-payload' "
        "(did you mean 'max-bytes'?)",
        id="underscore-option"),
    pytest.param(
        "version: 1\nrules:\n  optimizer-state: block\n",
        f"{F}:3:20: invalid action 'block' for rule 'optimizer-state' "
        "(expected fail, fix, warn or off)",
        id="bad-action-shorthand"),
    pytest.param(
        "version: 1\nrules:\n  training-state:\n    action: fial\n",
        f"{F}:4:13: invalid action 'fial' for rule 'training-state' "
        "(did you mean 'fail'? expected fail, fix, warn or off)",
        id="bad-action-suggested"),
    pytest.param(
        "version: 1\nrules:\n  unsafe-pickle: fix\n",
        f"{F}:3:18: rule 'unsafe-pickle' cannot use action 'fix' (`ckpt-guard fix` cannot "
        "repair what it reports); use fail, warn or off",
        id="fix-on-check-only-rule"),
    pytest.param(
        "version: 1\nrules:\n  fp32-payload:\n    max-bytes: 50 parsecs\n",
        f"{F}:4:16: invalid size '50 parsecs' for 'max-bytes' of rule 'fp32-payload' "
        "(expected a number with an optional unit: B, kB, MB, GB, TB (powers of 1000) or "
        "KiB, MiB, GiB, TiB (powers of 1024); e.g. '50MB', '1.5GiB')",
        id="bad-size"),
    pytest.param(
        "version: 1\nrules:\n  file-size: {action: fail, max-bytes: -3}\n",
        f"{F}:3:40: invalid size -3 for 'max-bytes' of rule 'file-size' (must not be negative)",
        id="negative-size"),
    pytest.param(
        "version: 1\nrules:\n  fp32-payload:\n    cast-to: fp8\n",
        f"{F}:4:14: invalid value 'fp8' for 'cast-to' of rule 'fp32-payload' "
        "(expected float16 or bfloat16)",
        id="bad-enum"),
    pytest.param(
        "version: 1\nrules:\n  fp32-payload:\n    keep-fp32: '*norm*'\n",
        f"{F}:4:16: 'keep-fp32' of rule 'fp32-payload' must be a list, got the string '*norm*'",
        id="wrong-type-list"),
    pytest.param(
        "version: 1\nrules:\n  optimizer-state:\n    remove-training-files: yes\n",
        f"{F}:4:28: 'remove-training-files' of rule 'optimizer-state' must be true or false, "
        "got the string 'yes'",
        id="yaml11-bool-is-a-string"),
    pytest.param(
        "version: 1\nrules:\n  needs-code: [warn]\n",
        f"{F}:3:15: rule 'needs-code' must be an action (fail, fix, warn, off) or a mapping of "
        "its options, got a list",
        id="rule-wrong-type"),
    pytest.param(
        "version: 2\n",
        f"{F}:1:10: unsupported policy version 2 (this ckpt-guard reads version 1)",
        id="version-2"),
    pytest.param(
        "rules: {}\n",
        f"{F}:1:1: missing 'version' (add 'version: 1' at the top)",
        id="version-missing"),
    pytest.param(
        "- version: 1\n",
        f"{F}:1:1: the policy must be a mapping of keys (version, include, exclude, rules, "
        "convert, shards, stash, overrides), got a list",
        id="not-a-mapping"),
    pytest.param(
        "",
        f"{F}:1:1: empty policy file (it needs at least 'version: 1')",
        id="empty"),
    pytest.param(
        "# only a comment\n",
        f"{F}:1:1: empty policy file (it needs at least 'version: 1')",
        id="only-comments"),
    pytest.param(
        "version: 1\nrules:\n  optimizer-state: fail\n  optimizer-state: warn\n",
        f"{F}:4:3: duplicate key 'optimizer-state' (first defined at line 3)",
        id="duplicate-key"),
    pytest.param(
        "version: 1\nrules: [\n",
        f"{F}:3:1: YAML syntax error: while parsing a flow node expected the node content, "
        "but found '<stream end>'",
        id="yaml-syntax"),
    pytest.param(
        "version: 1\nrules:\n\toptimizer-state: fail\n",
        f"{F}:3:1: YAML syntax error: found a tab (YAML indents with spaces, not tabs)",
        id="yaml-tab"),
    pytest.param(
        "version: 1\ninclude: [*.pt]\n",
        f"{F}:2:12: YAML syntax error: while scanning an alias expected alphabetic or numeric "
        "character, but found '.' (quote globs that start with '*': '*.pt')",
        id="unquoted-glob"),
    pytest.param(
        "version: 1\nrules: !!python/object/apply:os.system [echo]\n",
        f"{F}:2:8: YAML error: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'",
        id="python-tag-refused"),
    pytest.param(
        "version: 1\nrules: {fp32-payload: {max-bytes: 1.5}}\n",
        f"{F}:2:35: 'max-bytes' of rule 'fp32-payload' must be a size (bytes as an integer, or "
        "a string like '50MB' or '1.5GiB'), got the number 1.5",
        id="size-wrong-type"),
    pytest.param(
        "version: '1'\n",
        f"{F}:1:10: 'version' must be the number 1, not the string '1'",
        id="version-string"),
    pytest.param(
        "version: 1\noverrides:\n  - path: [a]\n",
        # one problem, not also "needs 'paths'": the suggestion says it all
        f"{F}:3:5: unknown key 'path' in override #1 (did you mean 'paths'?)",
        id="override-unknown-key"),
    pytest.param(
        "version: 1\nrules:\n  optimizer-state:\n",
        f"{F}:3:19: rule 'optimizer-state' must be an action (fail, fix, warn, off) or a "
        "mapping of its options, got nothing (null)",
        id="rule-null"),
    pytest.param(
        "version: 1\noverrides:\n  - rules: {optimizer-state: off}\n",
        f"{F}:3:5: override #1 needs 'paths' (a list of globs)",
        id="override-without-paths"),
    pytest.param(
        "version: 1\noverrides:\n  - paths: []\n",
        f"{F}:3:12: 'paths' of override #1 must not be empty",
        id="override-empty-paths"),
    pytest.param(
        "version: 1\noverrides:\n  - paths: [a/]\n    rules:\n      lfs-pointer: warm\n",
        f"{F}:5:20: invalid action 'warm' for rule 'lfs-pointer' of override #1 "
        "(did you mean 'warn'? expected fail, warn or off)",
        id="override-bad-action"),
    pytest.param(
        "version: 1\ninclude: ['*.pt', 3]\n",
        f"{F}:2:19: entry 2 of 'include' must be a string, got the number 3",
        id="glob-wrong-type"),
    pytest.param(
        "version: 1\nexclude: ['a\\']\n",
        f"{F}:2:11: invalid glob 'a\\\\': Invalid git pattern: 'a\\\\'",
        id="glob-invalid"),
    # Common mistakes: each message says what to write instead.
    pytest.param(
        "version: 1\nrules:\n  fp32-payload: {cast-to: fp16}\n",
        f"{F}:3:27: invalid value 'fp16' for 'cast-to' of rule 'fp32-payload' (did you mean "
        f"'float16'? expected float16 or bfloat16)",
        id="cast-to-alias"),
    pytest.param(
        "version: 1\nrules:\n  optimizer-state: of\n",
        f"{F}:3:20: invalid action 'of' for rule 'optimizer-state' (did you mean 'off'? "
        f"expected fail, fix, warn or off)",
        id="action-of"),
]


@pytest.mark.parametrize(("text", "message"), CASES)
def test_error_message(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_text(text, F)
    assert str(info.value) == message


def test_sizes_with_a_space_are_accepted() -> None:
    policy = load_text("version: 1\nrules:\n  fp32-payload: {max-bytes: 10 MB}\n", F)
    assert policy.rules["fp32-payload"].max_bytes == 10_000_000


def test_every_problem_reported_in_file_order() -> None:
    text = ("version: 3\n"                      # 1
            "rules:\n"                          # 2
            "  optimiser-state: fail\n"         # 3
            "  fp32-payload:\n"                 # 4
            "    max-bytes: lots\n"             # 5
            "  ema-duplicate: {keep: both}\n")  # 6
    with pytest.raises(PolicyError) as info:
        load_text(text, F)
    lines = str(info.value).splitlines()
    assert [ln.split(": ")[0] for ln in lines] == [f"{F}:1:10", f"{F}:3:3", f"{F}:5:16",
                                                   f"{F}:6:25"]
    assert "invalid value 'both' for 'keep' of rule 'ema-duplicate'" in lines[3]
    assert [(p.line, p.column) for p in info.value.problems] == [(1, 10), (3, 3), (5, 16),
                                                                  (6, 25)]


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(PolicyError) as info:
        load_policy(str(missing))
    assert str(info.value) == f"{missing}: cannot read policy file: No such file or directory"


def test_non_utf8_file(tmp_path: Path) -> None:
    bad = tmp_path / ".ckpt-guard.yml"
    bad.write_bytes(b"version: 1\n# \xff\xfe\n")
    with pytest.raises(PolicyError) as info:
        load_policy(str(bad))
    assert str(info.value).startswith(f"{bad}: policy file is not UTF-8 text")


def test_file_errors_name_the_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "policy.yml").write_text("version: 1\nrules:\n  optimiser-state: x\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyError) as info:
        load_policy("conf/policy.yml")
    assert str(info.value).startswith("conf/policy.yml:3:3: unknown rule 'optimiser-state'")


def test_plain_message_form() -> None:
    err = PolicyError("x.yml: policy file not found")
    assert str(err) == "x.yml: policy file not found"
    assert err.problems == []
