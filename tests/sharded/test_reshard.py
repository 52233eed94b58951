"""fix that renames a sharded set: re-sharding to ``shards: {max-shard-size}`` and converting a
``.bin`` set to a safetensors set. The layout is compared with huggingface_hub's own
``split_torch_state_dict_into_shards``; values with what torch, safetensors and
huggingface_hub load; the swap with real processes SIGKILLed at every stage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from huggingface_hub import (
    load_state_dict_from_file,
    load_torch_model,
    split_torch_state_dict_into_shards,
)

from ckpt_guard.engine import check_paths
from ckpt_guard.policy import load_policy
from tests.sharded.sets import index_of, load_set, make_set, state_dict
from tests.sharded.test_fix import _expected, _run, _same, _start

CAST = "  fp32-payload: {action: fix, cast-to: float16, max-bytes: 50kB}\n"


def _policy(tmp: Path, *, cast: bool = True, limit: str | None = None,
            convert: bool = False) -> None:
    text = "version: 1\nrules:\n" + (CAST if cast else "  fp32-payload: off\n")
    if limit:
        text += f"shards: {{max-shard-size: {limit}}}\n"
    if convert:
        text += "convert: safetensors\n"
    (tmp / "p.yml").write_text(text)


def _json(tmp: Path, *args: str) -> dict:
    p = _run(tmp, *args, "--policy", "p.yml", "--format", "json")
    assert p.returncode in (0, 1), p.stderr
    return json.loads(p.stdout)


def _hf_split(sd: dict[str, torch.Tensor], limit: int, pattern: str) -> tuple[dict, dict]:
    split = split_torch_state_dict_into_shards(sd, max_shard_size=limit,
                                               filename_pattern=pattern)
    return split.tensor_to_filename, split.metadata


def _model() -> torch.nn.Module:
    m = torch.nn.Module()
    m.layers = torch.nn.ModuleList(torch.nn.Linear(64, 64, bias=False) for _ in range(6))
    m.norm = torch.nn.BatchNorm1d(64)
    m.register_buffer("step", torch.zeros(1, dtype=torch.int64))
    return m


def _loads_everywhere(index: Path, want: dict[str, torch.Tensor]) -> None:
    """transformers-style index reading, safetensors/huggingface_hub per shard, and
    huggingface_hub.load_torch_model through the index: all give ``want``."""
    got = load_set(index)
    assert _same(got, want)
    for shard in set(index_of(index)["weight_map"].values()):
        from safetensors.torch import load_file

        a = load_file(index.parent / shard)
        b = load_state_dict_from_file(str(index.parent / shard))
        assert _same(a, b) and all(torch.equal(a[k], want[k]) for k in a)
    if set(want) == set(_model().state_dict()) - {"norm.weight", "norm.bias",
                                                    "norm.running_var",
                                                    "norm.num_batches_tracked"}:
        model = _model()
        load_torch_model(model, str(index.parent), strict=False, safe=True)
        sd = model.state_dict()
        assert all(torch.equal(sd[k], v.to(sd[k].dtype)) for k, v in want.items())


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_reshard_follows_huggingface_hub_split(tmp_path: Path) -> None:
    """Greedy in index order; a tensor over the limit alone in a shard placed when met
    (before the shard being filled); names and total_size as huggingface_hub gives them."""
    g = torch.Generator().manual_seed(1)
    sd = {"a": torch.randn(1000, generator=g), "big": torch.randn(5000, generator=g),
          "c": torch.randn(1000, generator=g), "d": torch.randn(1000, generator=g),
          "n": torch.arange(7, dtype=torch.int64)}
    _policy(tmp_path, cast=False, limit="10kB")
    index = make_set(tmp_path / "m", sd=sd, max_shard_size=25_000)
    assert len(set(index_of(index)["weight_map"].values())) == 2
    out = _json(tmp_path, "fix", "m")["files"][0]
    assert out["status"] == "fixed", out
    wm, meta = _hf_split(sd, 10_000, "model{suffix}.safetensors")
    got = index_of(index)
    assert list(got["weight_map"].items()) == list(wm.items())
    assert got["metadata"] == meta and meta["total_size"] == sum(
        v.nbytes for v in sd.values())
    assert wm["big"] == "model-00001-of-00003.safetensors"  # its own shard, first
    assert _listing(index.parent) == sorted([index.name, *set(wm.values())])
    _loads_everywhere(index, sd)
    # the same set again: already as asked, nothing rewritten
    stat = {n: os.stat(index.parent / n).st_mtime_ns for n in _listing(index.parent)}
    again = _json(tmp_path, "fix", "m")["files"][0]
    assert again["status"] == "pass" and again["findings"] == []
    assert {n: os.stat(index.parent / n).st_mtime_ns for n in _listing(index.parent)} == stat


def test_reshard_with_cast_dry_run_equals_real_run_and_check_passes(tmp_path: Path) -> None:
    _policy(tmp_path, limit="10kB")
    index = make_set(tmp_path / "m")
    dry = _json(tmp_path, "fix", "--dry-run", "m")
    assert _listing(index.parent) == _listing(tmp_path / "m")
    real = _json(tmp_path, "fix", "m")
    for key in ("status", "size_bytes", "size_after"):
        assert dry["files"][0][key] == real["files"][0][key], key
    assert dry["summary"] == real["summary"]
    want = _expected(state_dict())
    # huggingface_hub's split of the cast state dict, in the index's order
    wm, meta = _hf_split(want, 10_000, "model{suffix}.safetensors")
    got = index_of(index)
    assert got["weight_map"] == wm and got["metadata"] == meta
    assert real["files"][0]["size_after"] == sum(
        os.path.getsize(index.parent / n) for n in _listing(index.parent))
    _loads_everywhere(index, want)
    fr = _json(tmp_path, "check", "m")["files"][0]
    assert fr["status"] == "pass" and fr["findings"] == []


def test_convert_bin_set_to_safetensors_set(tmp_path: Path) -> None:
    _policy(tmp_path, convert=True)
    index = make_set(tmp_path / "b", safe=False)
    before = {n: (index.parent / n).read_bytes() for n in _listing(index.parent)}
    dry = _json(tmp_path, "fix", "--dry-run", "b")
    assert _listing(index.parent) == sorted(before)
    real = _json(tmp_path, "fix", "b")
    for key in ("status", "size_bytes", "size_after"):
        assert dry["files"][0][key] == real["files"][0][key], key
    assert dry["summary"] == real["summary"]
    new = index.parent / "model.safetensors.index.json"
    # the .bin set is kept as it was, as a single-file convert keeps its input
    assert {n: (index.parent / n).read_bytes() for n in before} == before
    want = _expected(state_dict())
    # the set's own boundaries, under huggingface_hub's safetensors names
    assert index_of(new)["weight_map"] == {
        k: v.replace("pytorch_model", "model").replace(".bin", ".safetensors")
        for k, v in index_of(index)["weight_map"].items()}
    assert index_of(new)["metadata"]["total_size"] == sum(v.nbytes for v in want.values())
    _loads_everywhere(new, want)
    assert real["files"][0]["size_after"] == sum(
        os.path.getsize(new.parent / n) for n in {new.name, *index_of(new)["weight_map"].values()})
    files = {f["path"]: f for f in _json(tmp_path, "check", "b")["files"]}
    assert files["b/model.safetensors.index.json"]["status"] == "pass"
    # a second run never overwrites the converted set
    again = _json(tmp_path, "fix", "b")["files"]
    assert any("model.safetensors.index.json exists" in n for f in again for n in f.get("notes", []))


def test_convert_with_max_shard_size_shards_as_huggingface_hub(tmp_path: Path) -> None:
    _policy(tmp_path, convert=True, limit="20kB")
    index = make_set(tmp_path / "b", safe=False)
    assert _json(tmp_path, "fix", "b")["files"][0]["status"] == "fixed"
    want = _expected(state_dict())
    wm, meta = _hf_split(want, 20_000, "model{suffix}.safetensors")
    new = index.parent / "model.safetensors.index.json"
    assert index_of(new)["weight_map"] == wm and index_of(new)["metadata"] == meta
    _loads_everywhere(new, want)


def test_convert_refuses_tied_weights_like_single_file_convert(tmp_path: Path) -> None:
    """A shard with tensors sharing a storage has no faithful safetensors form (they would be
    untied): the set is fixed as a torch set, and the report says why."""
    sd = state_dict()
    sd["head.weight"] = sd["layers.0.weight"]  # tied: save_torch_state_dict keeps them together
    _policy(tmp_path, convert=True)
    index = make_set(tmp_path / "b", safe=False, sd=sd)
    fr = _json(tmp_path, "fix", "b")["files"][0]
    assert any("not converted to safetensors" in n and "shares its storage" in n
               for n in fr["notes"]), fr["notes"]
    assert not (index.parent / "model.safetensors.index.json").exists()
    got = load_set(index)
    assert got["head.weight"].dtype == torch.float16
    assert got["head.weight"].untyped_storage().data_ptr() == \
        got["layers.0.weight"].untyped_storage().data_ptr()  # still tied


def _killed_states(tmp_path: Path, make, points_of, args: tuple[str, ...], read) -> dict:
    """Run the fix once to learn its mutations, then SIGKILL fresh copies just before each
    chosen one; returns {point: (folder, state)}."""
    probe = _run(tmp_path, "fix", "--policy", "p.yml", make(tmp_path / "probe").name)
    log = probe.stderr.rsplit("LOG=", 1)[1].split()
    points = points_of(log)
    folders = {n: tmp_path / f"k{n}" for n in sorted(set(points))}
    for f in folders.values():
        make(f)
    killed = {n: _start(tmp_path, "fix", "--policy", "p.yml", f.name, kill_at=n)
              for n, f in folders.items()}
    out = {}
    for n, proc in killed.items():
        assert proc.wait(timeout=120) == -9, (n, proc.stderr.read())
        out[n] = read(folders[n])
    return {n: (folders[n], s) for n, s in out.items()}


def test_reshard_killed_at_each_stage_is_old_or_new_and_recovers(tmp_path: Path) -> None:
    _policy(tmp_path, limit="10kB")
    old, new = state_dict(), _expected(state_dict())

    def points(log: list[str]) -> list[int]:
        commits = [i + 1 for i, m in enumerate(log)
                   if m.startswith("replace:") and m.endswith(".index.json")]
        gone = [i + 1 for i, m in enumerate(log) if m.startswith("unlink:model-")]
        assert len(commits) == 2 and len(gone) == 3, log  # 3 old shards removed, after commit 2
        c1, c2 = commits
        assert gone[0] > c2
        # before and after commit 1 (the index names the hidden new files), between
        # commit 2 and the removal of the old shards, half-way through that removal
        return [c1, c1 + 1, c2 + 1, gone[1]]

    def read(folder: Path) -> str:
        got = load_set(folder / "model.safetensors.index.json")
        return "old" if _same(got, old) else "new" if _same(got, new) else "mixed"

    states = _killed_states(tmp_path, lambda f: make_set(f).parent, points, (), read)
    assert {s for _f, s in states.values()} == {"old", "new"}, states
    # check never takes an old shard for part of the new set: one unit, each old shard the
    # index no longer names is an extra-shard finding that says where it comes from
    policy = load_policy(tmp_path / "p.yml")
    for n, (f, state) in states.items():
        files = check_paths([str(f)], policy, root=tmp_path).files
        assert len(files) == 1, n
        extra = [x.message for x in files[0].findings if x.rule == "shard-index"]
        assert all("interrupted `ckpt-guard fix` re-sharded" in m for m in extra), (n, extra)
        assert bool(extra) == (state == "new"), (n, extra)
    again = {n: _start(tmp_path, "fix", "--policy", "p.yml", f.name)
             for n, (f, _s) in states.items()}
    wm, _meta = _hf_split(new, 10_000, "model{suffix}.safetensors")
    for n, proc in again.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (n, out, err)
        folder = states[n][0]
        index = folder / "model.safetensors.index.json"
        assert _same(load_set(index), new), n
        assert index_of(index)["weight_map"] == wm, n
        assert _listing(folder) == sorted([index.name, *set(wm.values())]), n


def test_convert_killed_at_each_stage_keeps_the_bin_set_and_recovers(tmp_path: Path) -> None:
    _policy(tmp_path, convert=True)
    old, new = state_dict(), _expected(state_dict())

    def points(log: list[str]) -> list[int]:
        commits = [i + 1 for i, m in enumerate(log)
                   if m.startswith("replace:") and m.endswith(".index.json")]
        assert len(commits) == 2, log
        c1, c2 = commits
        return [c1, c1 + 1]  # no new index yet; the new index naming the hidden files

    def read(folder: Path) -> str:
        assert _same(load_set(folder / "pytorch_model.bin.index.json"), old)
        st = folder / "model.safetensors.index.json"
        if not st.exists():
            return "none"
        return "new" if _same(load_set(st), new) else "mixed"

    states = _killed_states(tmp_path, lambda f: make_set(f, safe=False).parent, points, (),
                            read)
    assert [s for _f, s in states.values()] == ["none", "new"], states
    again = {n: _start(tmp_path, "fix", "--policy", "p.yml", f.name)
             for n, (f, _s) in states.items()}
    for n, proc in again.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 1), (n, out, err)
        folder = states[n][0]
        index = folder / "model.safetensors.index.json"
        assert _same(load_set(index), new), n
        assert not [f for f in _listing(folder) if f.startswith(".")], n


def test_split_equals_huggingface_hub_factory_on_random_layouts() -> None:
    """The layout rule alone, against huggingface_hub's own factory over random sizes
    (tensors over the limit, exact fits, one shard)."""
    import random

    from huggingface_hub.serialization import split_state_dict_into_shards_factory

    from ckpt_guard.rewrite.set_writer import shard_names, split, weight_map

    rng = random.Random(7)
    for _ in range(300):
        limit = rng.choice([1, 10, 100, 1000])
        sizes = {f"t{i}": rng.choice([0, 1, limit // 2, limit, limit + 1, rng.randint(0, 3 * limit)])
                 for i in range(rng.randint(1, 12))}
        hf = split_state_dict_into_shards_factory(
            sizes, get_storage_size=lambda n: n, filename_pattern="model{suffix}.safetensors",
            max_shard_size=limit)
        groups = split(sizes.items(), limit)
        if len(groups) == 1:  # huggingface_hub names a single shard "model.safetensors"
            assert list(hf.filename_to_tensors.values()) == groups
            continue
        ours = weight_map(groups, shard_names("model", ".safetensors", len(groups)))
        assert list(ours.items()) == list(hf.tensor_to_filename.items()), (limit, sizes)
