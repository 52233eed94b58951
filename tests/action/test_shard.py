"""Sharding a run across a job matrix, and merging the shards' reports into one report,
summary, comment and label. The entrypoint as a real process, real git repositories, the API
stand-in on loopback; `ckpt-guard merge` as a real CLI process."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys

import pytest

from ckpt_guard.action.settings import Settings, SettingsError, Shard
from ckpt_guard.action.shard import assign
from tests.action.fakegithub import FakeGitHub
from tests.action.runner import REPO, pr_payload, run_action
from tests.action.scenarios import ckpt_bytes, make_small_pr, stripped, training, weights


def test_every_file_lands_in_exactly_one_shard_balanced_by_size():
    rng = random.Random(7)
    sizes = {f"m/{i:03d}.pt": rng.choice([10, 1_000, 50_000, 2_000_000]) for i in range(97)}
    files = sorted(sizes)
    for n in (1, 2, 3, 8):
        shards = [assign(files, sizes, Shard(i, n)) for i in range(1, n + 1)]
        assert sorted(p for s in shards for p in s) == files
        loads = [sum(sizes[p] for p in s) for s in shards]
        assert max(loads) - min(loads) <= max(sizes.values())  # greedy LPT bound
        shuffled = files[:]
        rng.shuffle(shuffled)  # another listing order gives the same split
        assert [set(assign(shuffled, sizes, Shard(i, n))) for i in range(1, n + 1)] == \
            [set(s) for s in shards]


@pytest.mark.parametrize("value", ["0/2", "3/2", "two", "1/0", "1/2/3"])
def test_bad_shard_input(value):
    with pytest.raises(SettingsError, match="'shard' must be I/N"):
        Settings.from_env({"INPUT_SHARD": value})


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckpt_guard", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_merge_cli_equals_one_run_over_all_files(tmp_path):
    (tmp_path / "a.pt").write_bytes(ckpt_bytes(training()))
    (tmp_path / "b.pt").write_bytes(stripped())
    (tmp_path / "c.pt").write_bytes(ckpt_bytes({"model": weights(16)}))
    paths = [str(tmp_path / n) for n in ("a.pt", "b.pt", "c.pt")]
    one = _cli("check", "--format", "json", *paths)
    part1 = _cli("check", "--format", "json", "-o", str(tmp_path / "r1.json"), paths[0])
    part2 = _cli("check", "--format", "json", "-o", str(tmp_path / "r2.json"), *paths[1:])
    assert (part1.returncode, part2.returncode) == (1, 0)
    merged = _cli("merge", "--format", "json", str(tmp_path / "r1.json"),
                  str(tmp_path / "r2.json"))
    assert merged.returncode == one.returncode == 1, merged.stderr
    a, b = json.loads(one.stdout), json.loads(merged.stdout)
    assert a["summary"] == b["summary"]
    assert sorted(a["files"], key=lambda f: f["path"]) == b["files"]
    text = _cli("merge", str(tmp_path / "r1.json"), str(tmp_path / "r2.json"))
    assert "3 files checked, 1 failed" in text.stdout


def test_merge_cli_refuses_what_it_cannot_merge(tmp_path):
    (tmp_path / "a.pt").write_bytes(stripped())
    _cli("check", "--format", "json", "-o", str(tmp_path / "r1.json"), str(tmp_path / "a.pt"))
    (tmp_path / "p.yml").write_text("version: 1\nrules: {needs-code: fail}\n")
    _cli("check", "--policy", str(tmp_path / "p.yml"), "--format", "json", "-o",
         str(tmp_path / "r2.json"), str(tmp_path / "a.pt"))
    r = _cli("merge", str(tmp_path / "r1.json"), str(tmp_path / "r2.json"))
    assert r.returncode == 2 and "different policies" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.json").write_text("{not json")
    r = _cli("merge", str(tmp_path / "bad.json"))
    assert r.returncode == 2 and "bad.json: cannot read the report" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_sharded_pull_request_gives_one_comment(tmp_path):
    head_files = {f"models/train{i}.pt": ckpt_bytes(training(16 + 8 * i)) for i in range(3)}
    head_files.update({f"models/ok{i}.pt": ckpt_bytes({"model": weights(8 + i)})
                       for i in range(4)})
    ws, base, head = make_small_pr(tmp_path, {}, head_files)
    with FakeGitHub(REPO) as api:
        whole = run_action(ws, tmp_path / "whole", event="pull_request", api_url=api.url,
                           payload=pr_payload(41, base, head), inputs={"comment": "never"})
        expected = json.loads((ws / "ckpt-guard-report" / "report.json").read_text())
        shutil.rmtree(ws / "ckpt-guard-report")
        collected = tmp_path / "ws" / "reports"
        seen: list[str] = []
        for i in (1, 2, 3):
            r = run_action(ws, tmp_path / f"s{i}", event="pull_request", api_url=api.url,
                           payload=pr_payload(41, base, head), inputs={"shard": f"{i}/3"})
            assert f"shard {i}/3:" in r.stdout, r.stdout + r.stderr
            report = json.loads((ws / "ckpt-guard-report" / "report.json").read_text())
            seen += [f["path"] for f in report["files"]]
            shutil.move(str(ws / "ckpt-guard-report"), str(collected / f"shard-{i}"))
        assert sorted(seen) == sorted(f["path"] for f in expected["files"])  # each once
        assert 41 not in api.state.comments  # shards do not comment
        merged = run_action(ws, tmp_path / "merge", event="pull_request", api_url=api.url,
                            payload=pr_payload(41, base, head),
                            inputs={"merge": "reports/*/report.json", "label": "blocked"})
        assert merged.rc == whole.rc == 1, merged.stdout + merged.stderr
        for key in ("status", "files_checked", "violations", "bytes_total", "bytes_removable"):
            assert merged.outputs[key] == whole.outputs[key], key
        (c,) = api.state.comments[41]
        assert "3 of 7 weight files fail" in c["body"] and "Change vs" in c["body"]
        assert api.state.labels[41] == ["blocked"]
        assert merged.summary.startswith("### ckpt-guard: ❌ 3 of 7")


def test_merge_without_reports_is_a_usage_error(tmp_path):
    ws, base, head = make_small_pr(tmp_path, {}, {"notes.txt": b"x"})
    with FakeGitHub(REPO) as api:
        r = run_action(ws, tmp_path / "m", event="pull_request", api_url=api.url,
                       payload=pr_payload(42, base, head), inputs={"merge": "nothing/*.json"})
    assert r.rc == 2 and "merge: no report.json matches nothing/*.json" in r.stdout
