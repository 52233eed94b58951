"""A policy text that validated once is built again without YAML or JSON Schema; any other
text (or a damaged cache) is parsed and validated as before, errors and positions alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckpt_guard.policy import PolicyError, cache, load_text

TEXT = """version: 1
rules:
  optimizer-state: fix
  fp32-payload:
    action: fix
    max-bytes: 5MB
    keep-fp32: ['*.norm.*']
"""


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CKPT_GUARD_NO_CACHE", raising=False)
    return tmp_path / "ckpt-guard" / "policies"


def _entries(d: Path) -> list[Path]:
    return sorted(d.glob("*.json")) if d.is_dir() else []


def test_cached_policy_is_the_policy_built_from_the_text(cache_dir: Path) -> None:
    first = load_text(TEXT, "p.yml")
    assert len(_entries(cache_dir)) == 1
    second = load_text(TEXT, "p.yml")
    assert second == first
    assert second.rules["fp32-payload"].options["max-bytes"] == 5_000_000


def test_a_cold_run_with_a_known_policy_imports_neither_yaml_nor_jsonschema(
        cache_dir: Path, tmp_path: Path) -> None:
    policy = tmp_path / "p.yml"
    policy.write_text(TEXT)
    probe = ("import sys\n"
             "from ckpt_guard.policy import load_policy\n"
             f"load_policy({str(policy)!r})\n"
             "print(' '.join(sorted(sys.modules)))\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    runs = [set(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                               check=True, env=env).stdout.split()) for _ in range(2)]
    assert {"yaml", "jsonschema"} <= runs[0]  # validated the first time
    assert not {"yaml", "jsonschema"} & runs[1]


def test_another_text_is_validated_with_positions(cache_dir: Path) -> None:
    load_text(TEXT, "p.yml")
    bad = TEXT.replace("max-bytes: 5MB", "max-bytes: 5XB")
    with pytest.raises(PolicyError) as e:
        load_text(bad, "p.yml")
    assert "p.yml:6:" in str(e.value)
    assert len(_entries(cache_dir)) == 1  # an invalid text is never remembered


def test_a_damaged_or_foreign_entry_is_a_miss(cache_dir: Path) -> None:
    good = load_text(TEXT, "p.yml")
    (entry,) = _entries(cache_dir)
    data = json.loads(entry.read_text())
    # Same key, another text (a crc32 collision, or a hand edit): never used for this text.
    entry.write_text(json.dumps({**data, "text": TEXT + "# other\n",
                                 "data": {"version": 1, "rules": {"optimizer-state": "off"}}}))
    assert load_text(TEXT, "p.yml") == good
    # Another schema's verdict: not reused.
    data = json.loads(entry.read_text())
    entry.write_text(json.dumps({**data, "schema": [0], "data": {"version": 1}}))
    assert load_text(TEXT, "p.yml") == good
    entry.write_text("{not json")
    assert load_text(TEXT, "p.yml") == good


def test_cache_can_be_turned_off_and_failures_are_silent(
        cache_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CKPT_GUARD_NO_CACHE", "1")
    load_text(TEXT, "p.yml")
    assert _entries(cache_dir) == []
    monkeypatch.delenv("CKPT_GUARD_NO_CACHE")
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # not a directory: cannot store
    assert load_text(TEXT, "p.yml").rules["optimizer-state"].action == "fix"
    assert cache.lookup(TEXT) is None
