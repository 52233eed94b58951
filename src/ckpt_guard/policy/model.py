"""A loaded policy: which files it covers and the rule settings for each."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePath

from ckpt_guard.policy.match import compile_globs, normalize_relpath, tensor_matches
from ckpt_guard.policy.rules.registry import FIXABLE_RULES as _FIXABLE_RULES
from ckpt_guard.vocab import Action

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

    import pathspec

ACTIONS: tuple[str, ...] = Action.values()
# Rules whose findings `ckpt-guard fix` can remove (the others accept fail|warn|off only).
FIXABLE_RULES = _FIXABLE_RULES


@dataclass(frozen=True)
class RuleConfig:
    """One rule's setting: ``action`` (fail | fix | warn | off) and its options, keyed as in
    the YAML (``max-bytes``, ``keep-fp32``…; sizes already in bytes, lists as tuples).

    Configs built by :func:`~ckpt_guard.policy.load_policy` carry every option of their rule
    (the built-in values unless the file says otherwise); the accessors' fallbacks only
    matter for hand-built configs.
    """

    action: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:  # options is a dict: hash its (hashable) items instead
        return hash((self.action, tuple(sorted(self.options.items()))))

    @property
    def enabled(self) -> bool:
        return self.action != Action.OFF

    @property
    def fixes(self) -> bool:
        """``ckpt-guard fix`` acts on this rule."""
        return self.action == Action.FIX

    @property
    def max_bytes(self) -> int | None:
        """``max-bytes`` in bytes (fp32-payload, file-size); ``None`` = no limit."""
        value = self.options.get("max-bytes")
        return int(value) if value is not None else None

    @property
    def keep(self) -> str:
        """ema-duplicate: which copy survives a fix, ``ema`` or ``weights``."""
        return str(self.options.get("keep", "ema"))

    @property
    def cast_to(self) -> str:
        """fp32-payload: ``float16`` or ``bfloat16``."""
        return str(self.options.get("cast-to", "float16"))

    @property
    def keep_fp32(self) -> tuple[str, ...]:
        """fp32-payload: tensor-path globs that stay FP32 (see :mod:`.match`)."""
        return tuple(self.options.get("keep-fp32", ()))

    @property
    def on_overflow(self) -> str:
        """fp32-payload: ``keep`` | ``bfloat16`` | ``fail`` for tensors beyond FP16's range."""
        return str(self.options.get("on-overflow", "keep"))

    @property
    def remove_training_files(self) -> bool:
        """optimizer-/training-state on checkpoint directories: may fix delete the files?"""
        return bool(self.options.get("remove-training-files", False))

    @property
    def trusted_globals(self) -> tuple[str, ...]:
        """needs-code: globs of qualified names (a team's own classes) that are trusted."""
        return tuple(self.options.get("trusted-globals") or ())

    def kept_fp32_by(self, tensor_path: str) -> str | None:
        """The ``keep-fp32`` glob that keeps ``tensor_path`` in FP32, if any."""
        return tensor_matches(tensor_path, self.keep_fp32)

    def merged(self, change: Mapping[str, Any]) -> RuleConfig:
        """This config with ``change`` (``action`` and/or options) applied on top."""
        options = {**self.options, **{k: v for k, v in change.items() if k != "action"}}
        return RuleConfig(str(change.get("action", self.action)), options)


@dataclass(frozen=True)
class StashConfig:
    """``stash:``: whether ``fix`` keeps originals (``auto`` | ``always`` | ``never``) and how
    many (see :mod:`ckpt_guard.rewrite.stash`)."""

    when: str = "auto"
    max_entries: int = 20
    max_bytes: int = 20 * 10**9


@dataclass(frozen=True)
class ShardsConfig:
    """``shards:``: how ``fix`` writes sharded sets. ``max_shard_size`` (bytes of tensor data,
    as huggingface_hub's ``max_shard_size``): re-shard on fix; ``None`` keeps the boundaries."""

    max_shard_size: int | None = None


@dataclass(frozen=True)
class Override:
    """``overrides[]`` entry: rule changes (partial, as written) for files matching ``paths``."""

    paths: tuple[str, ...]
    rules: Mapping[str, Mapping[str, Any]]
    convert: str | None = None  # None: not set here
    shards: ShardsConfig | None = None  # None: not set here

    @cached_property
    def spec(self) -> pathspec.GitIgnoreSpec:
        return compile_globs(self.paths)


@dataclass(frozen=True)
class Policy:
    """What to check and how. ``source`` is the policy file as shown to users, or
    ``"built-in"``; ``base_dir`` is the policy file's directory (file globs are relative to
    it), ``None`` for the built-in policy (globs then relative to the repository root)."""

    source: str
    rules: Mapping[str, RuleConfig]
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    overrides: tuple[Override, ...] = ()
    path: Path | None = None
    convert: str = "none"  # what `fix` writes: "none" (same format) or "safetensors"
    stash: StashConfig = field(default_factory=StashConfig)
    shards: ShardsConfig = field(default_factory=ShardsConfig)

    @property
    def base_dir(self) -> Path | None:
        return self.path.parent if self.path is not None else None

    @cached_property
    def _include(self) -> pathspec.GitIgnoreSpec:
        # Case-insensitive: torch.load("model.pt") opens model.PT on macOS and Windows.
        return compile_globs(p.lower() for p in self.include)

    @cached_property
    def _exclude(self) -> pathspec.GitIgnoreSpec:
        return compile_globs(self.exclude)

    def relpath(self, path: str | PurePath, root: Path) -> str:
        """``path`` relative to the directory the globs are written for (the policy file's,
        else ``root``), POSIX style — what :meth:`matches` and :meth:`rules_for` expect.
        Paths outside that directory are returned normalized but unchanged."""
        base = self.base_dir or root
        p = Path(path)
        if not p.is_absolute():
            p = Path.cwd() / p
        try:
            return normalize_relpath(p.resolve().relative_to(base.resolve()))
        except ValueError:
            return normalize_relpath(PurePath(path))

    def matches(self, relpath: str | PurePath) -> bool:
        """Is ``relpath`` picked by ``include`` and not dropped by ``exclude``? (Used when
        walking a repository; explicit paths given to ``check`` are checked regardless.)
        ``include`` ignores case (``model.PT`` is a ``*.pt``); ``exclude`` does not."""
        rel = normalize_relpath(relpath)
        return self._include.match_file(rel.lower()) and not self._exclude.match_file(rel)

    def excludes(self, relpath: str | PurePath) -> bool:
        """Does ``exclude`` drop ``relpath``? (Explicitly named files are checked unless
        excluded.)"""
        return bool(self.exclude) and self._exclude.match_file(normalize_relpath(relpath))

    def convert_for(self, relpath: str | PurePath) -> str | None:
        """The output format `fix` converts ``relpath`` to (``"safetensors"``), or ``None``;
        matching overrides win over the top-level ``convert``."""
        rel = normalize_relpath(relpath)
        convert = self.convert
        for override in self.overrides:
            if override.convert is not None and override.spec.match_file(rel):
                convert = override.convert
        return None if convert in (None, "none") else convert

    def max_shard_size_for(self, relpath: str | PurePath) -> int | None:
        """``shards.max-shard-size`` for the set ``relpath`` (its unsharded name), matching
        overrides winning over the top level; ``None``: keep the set's shard boundaries."""
        rel = normalize_relpath(relpath)
        shards = self.shards
        for override in self.overrides:
            if override.shards is not None and override.spec.match_file(rel):
                shards = override.shards
        return shards.max_shard_size

    def rules_for(self, relpath: str | PurePath) -> dict[str, RuleConfig]:
        """Every rule's config for ``relpath``: the top-level rules, then each matching
        override in order (later entries win; options merge into the rule)."""
        rel = normalize_relpath(relpath)
        rules = dict(self.rules)
        for override in self.overrides:
            if override.spec.match_file(rel):
                for rule_id, change in override.rules.items():
                    rules[rule_id] = rules[rule_id].merged(change)
        return rules
