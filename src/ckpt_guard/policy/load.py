"""Find, read, validate and build a :class:`Policy`.

A policy file is merged over the built-in policy (``defaults.yml``): rules it does not name
keep their built-in setting, options it gives replace the built-in option's value (lists are
replaced, not appended), ``include``/``exclude`` replace the built-in lists when given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path

from ckpt_guard.analyze.safety import untrusted_pattern
from ckpt_guard.policy.errors import PolicyError
from ckpt_guard.policy.match import compile_globs
from ckpt_guard.policy.model import Override, Policy, RuleConfig, ShardsConfig, StashConfig
from ckpt_guard.policy.rules.registry import ALL as ALL_RULES
from ckpt_guard.policy.sizes import SizeError, parse_size
from ckpt_guard.policy.source import Source

POLICY_NAMES = (".ckpt-guard.yml", ".ckpt-guard.yaml")
BUILTIN = "built-in"
TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

    from ckpt_guard.policy.problem import Problem

_MAX_POLICY_BYTES = 1 << 20  # a policy is a few hundred bytes; refuse pathological files
# Options whose values are byte sizes (``10MB``), parsed to bytes when a policy is built.
_SIZE_OPTIONS = tuple(sorted({o.name for r in ALL_RULES for o in r.options if o.size}))


def _problem(line: int, column: int, message: str) -> Problem:
    """A :class:`~ckpt_guard.policy.problem.Problem` (its module is imported only when a
    policy has one)."""
    from ckpt_guard.policy.problem import Problem

    return Problem(line, column, message)


def find_policy_file(start: Path) -> Path | None:
    """The nearest ``.ckpt-guard.yml`` (or ``.ckpt-guard.yaml``) from ``start`` (a file or a
    directory) upwards, stopping at the git repository root (the first directory holding
    ``.git``, a folder or, in worktrees and submodules, a file) or at the filesystem root."""
    here = Path(start).resolve()
    if not here.is_dir():
        here = here.parent
    for directory in (here, *here.parents):
        for name in POLICY_NAMES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
        if (directory / ".git").exists():
            return None
    return None


def load_policy(path: str | os.PathLike[str] | None, start: Path | None = None) -> Policy:
    """The policy at ``path``; with ``path=None`` the one :func:`find_policy_file` finds from
    ``start`` (default: the current directory), else the built-in policy.
    Raises :class:`PolicyError` (one line per problem, ``file:line:col: …``)."""
    if path is None:
        found = find_policy_file(start if start is not None else Path.cwd())
        if found is None:
            return builtin_policy()
        return _load_file(found, _display(found))
    return _load_file(Path(path), os.fspath(path))


def load_text(text: str, filename: str = "<policy>", path: Path | None = None) -> Policy:
    """Build a policy from YAML ``text``; ``filename`` names it in error messages."""
    from ckpt_guard.policy import cache

    known = cache.lookup(text)  # this very text validated before: no YAML, no schema
    if known is not None:
        return _build(Source(known), filename, path, base=builtin_policy())
    # jsonschema (~100 ms to import) is only needed when there is a file to validate.
    from ckpt_guard.policy.validate import validate
    from ckpt_guard.policy.yamlsrc import parse

    src, problems = parse(text)
    if src is not None and not problems:
        problems = validate(src)
    if problems or src is None:
        raise PolicyError(filename, problems)
    policy = _build(src, filename, path, base=builtin_policy())
    cache.store(text, src.data)
    return policy


@cache
def builtin_policy() -> Policy:
    """The policy used when no file is found. ``policy/defaults.yml`` is its source;
    ``defaults.json`` is the same data (a test keeps them equal), read here so that a check
    under the built-in policy needs no YAML parser."""
    text = _package_text("defaults.json")
    return _build(Source(json.loads(text)), BUILTIN, None, base=None)


def init_text() -> str:
    """What ``ckpt-guard init`` writes: the built-in policy, every rule and option explained."""
    return _package_text("init_template.yml")


def _package_text(name: str) -> str:
    """A data file of this package. Read beside this module when the package is on disk (as
    installed): ``importlib.resources`` pulls in tempfile, random and zipfile, ~4 ms of a
    cold check; it stays the way for a package that is not plain files (a zip)."""
    try:
        return (Path(__file__).parent / name).read_text("utf-8")
    except OSError:
        from importlib import resources

        return resources.files("ckpt_guard.policy").joinpath(name).read_text("utf-8")


def _display(path: Path) -> str:
    """A found policy file as users should see it: relative to the cwd when below it."""
    try:
        return os.fspath(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return os.fspath(path)


def _load_file(path: Path, filename: str) -> Policy:
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_POLICY_BYTES + 1)
    except OSError as e:
        raise PolicyError(filename, [_problem(0, 0, f"cannot read policy file: "
                                                   f"{e.strerror or e}")]) from e
    if len(raw) > _MAX_POLICY_BYTES:
        raise PolicyError(filename, [_problem(0, 0, "policy file is larger than 1 MiB")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PolicyError(filename, [_problem(0, 0, f"policy file is not UTF-8 text ({e.reason} "
                                                   f"at byte {e.start})")]) from e
    return load_text(text, filename, path.resolve())


def _build(src: Source, filename: str, path: Path | None, base: Policy | None) -> Policy:
    """A :class:`Policy` from a validated document; semantic problems (globs pathspec
    rejects) are reported with their positions."""
    data: Mapping[str, Any] = src.data
    problems: list[Problem] = []

    def globs(key: tuple, default: tuple[str, ...]) -> tuple[str, ...]:
        node = _get(data, key)
        if node is None:
            return default
        if base is None:  # the built-in policy's globs are tested, not re-checked
            return tuple(node)
        for i, pattern in enumerate(node):
            try:
                compile_globs([pattern])
            except ValueError as e:
                problems.append(_problem(*src.at_value((*key, i)),
                                        f"invalid glob {pattern!r}: {e}"))
        return tuple(node)

    include = globs(("include",), base.include if base else ())
    exclude = globs(("exclude",), base.exclude if base else ())
    rules: dict[str, RuleConfig] = dict(base.rules) if base else {}
    for rule_id, change in _rule_changes(src, ("rules",), problems).items():
        rules[rule_id] = rules[rule_id].merged(change) if rule_id in rules else \
            RuleConfig(str(change.get("action", "off")), {k: v for k, v in change.items()
                                                          if k != "action"})
    overrides = []
    for i, _entry in enumerate(data.get("overrides") or ()):
        paths = globs(("overrides", i, "paths"), ())
        overrides.append(Override(paths, _rule_changes(src, ("overrides", i, "rules"),
                                                       problems),
                                  convert=(_entry or {}).get("convert"),
                                  shards=_shards(src, ("overrides", i, "shards"), None,
                                                 problems)))
    if problems:
        raise PolicyError(filename, problems)
    convert = data.get("convert") or (base.convert if base else "none")
    stash = _stash(data.get("stash"), base.stash if base else StashConfig())
    shards = _shards(src, ("shards",), base.shards if base else ShardsConfig(), problems)
    if problems:
        raise PolicyError(filename, problems)
    return Policy(source=filename, rules=rules, include=include, exclude=exclude,
                  overrides=tuple(overrides), path=path, convert=convert, stash=stash,
                  shards=shards or ShardsConfig())


def _shards(src: Source, key: tuple, base: ShardsConfig | None,
            problems: list[Problem]) -> ShardsConfig | None:
    """``shards: {max-shard-size: SIZE|null}`` at ``key`` over ``base`` (``None`` when
    neither sets it: an override that leaves the top level's setting alone)."""
    value = _get(src.data, key)
    if not isinstance(value, Mapping) or "max-shard-size" not in value:
        return base
    size = value["max-shard-size"]
    if size is None:
        return ShardsConfig(None)
    try:
        return ShardsConfig(parse_size(size))
    except SizeError as e:  # the schema's pattern should have caught it
        problems.append(_problem(*src.at_value((*key, "max-shard-size")), str(e)))
        return base


def _stash(value: Any, base: StashConfig) -> StashConfig:
    """``stash: never`` or ``stash: {when, max-entries, max-bytes}`` over ``base`` (the
    schema has checked the shape and the size's syntax)."""
    if value is None:
        return base
    if isinstance(value, str):
        return replace(base, when=value)
    return StashConfig(when=str(value.get("when", base.when)),
                       max_entries=int(value.get("max-entries", base.max_entries)),
                       max_bytes=parse_size(value["max-bytes"]) if "max-bytes" in value
                       else base.max_bytes)


def _get(data: Any, key: tuple) -> Any:
    for k in key:
        if data is None:
            return None
        data = data[k] if isinstance(k, int) else data.get(k)
    return data


def _rule_changes(src: Source, key: tuple, problems: list[Problem]) -> dict[str, dict]:
    """The rules mapping at ``key`` normalized: shorthand ``id: action`` → ``{action: …}``,
    sizes in bytes, lists as tuples."""
    out: dict[str, dict] = {}
    for rule_id, value in (_get(src.data, key) or {}).items():
        change: dict[str, Any] = {"action": value} if isinstance(value, str) else dict(value)
        for opt in _SIZE_OPTIONS:
            if change.get(opt) is not None:
                try:
                    change[opt] = parse_size(change[opt])
                except SizeError as e:  # the schema's pattern should have caught it
                    problems.append(_problem(*src.at_value((*key, rule_id, opt)), str(e)))
        for opt, v in change.items():
            if isinstance(v, list):
                change[opt] = tuple(v)
        for i, pattern in enumerate(change.get("trusted-globals") or ()):
            why = untrusted_pattern(pattern)
            if why:
                problems.append(_problem(*src.at_value((*key, rule_id, "trusted-globals", i)),
                                        f"trusted-globals {pattern!r}: {why}"))
        out[rule_id] = change
    return out
