"""Every ``INPUT_*`` the action reads, in one place, with typed values.

The runner passes each input of ``action.yml`` as ``INPUT_<NAME>`` (upper-cased; our names use
underscores so shells can read them too). Defaults here mirror ``action.yml``; a test keeps
the two in step (tests/action/test_metadata.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum


class Mode(str, Enum):
    CHECK = "check"
    FIX = "fix"


class Lfs(str, Enum):
    AUTO = "auto"  # remote when the checkout is the event's repository, else pull
    REMOTE = "remote"  # read LFS objects by range through the batch API, never pull
    FETCH = "fetch"  # git lfs pull the checked files' objects
    OFF = "off"  # check the pointers as pointers


class PolicyFrom(str, Enum):
    BASE = "base"  # pull requests: the base commit's policy gates (the PR's is only reported)
    HEAD = "head"  # the checked-out policy, pull request or not


class CommentMode(str, Enum):
    AUTO = "auto"  # only when a weight file changed and there is something worth saying
    ALWAYS = "always"  # every pull-request run (legacy: true)
    ON_CHANGE = "on-change"  # whenever the pull request changes a weight file
    NEVER = "never"  # legacy: false


@dataclass(frozen=True)
class Threshold:
    """``comment_threshold``: a size change worth a comment, in bytes or percent of the
    file's base size (a new file is always above it)."""

    bytes: int | None = None
    percent: float | None = None

    def exceeded(self, delta: int, base: int | None) -> bool:
        if delta == 0:
            return False
        if base is None or base == 0:
            return True
        if self.bytes is not None:
            return abs(delta) >= self.bytes
        return abs(delta) * 100 >= (self.percent or 0) * base

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.bytes} bytes"


@dataclass(frozen=True)
class Shard:
    """``shard: I/N`` — this runner checks share ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class FailOn(str, Enum):
    FAIL = "fail"  # fail the job when a file fails the policy
    WARN = "warn"  # … or only warns
    NEVER = "never"  # report only


class SettingsError(ValueError):
    """An input has a value the action does not accept (message names the input)."""


# Input name → default, exactly as documented in action.yml ("" = no default there).
INPUTS: dict[str, str] = {
    "policy": "",
    "policy_from": "base",
    "paths": "",
    "mode": "check",
    "comment": "auto",
    "comment_threshold": "1%",
    "label": "",
    "shard": "",
    "merge": "",
    "github_token": "",
    "lfs": "auto",
    "commit_fixes": "false",
    "release_assets": "false",
    "fail_on": "fail",
}

# Outputs written to GITHUB_OUTPUT, exactly as documented in action.yml.
OUTPUTS: tuple[str, ...] = ("status", "files_checked", "violations", "bytes_total",
                            "bytes_removable", "bytes_saved", "report_json")

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off", ""}


@dataclass(frozen=True)
class Settings:
    policy: str | None
    policy_from: PolicyFrom
    paths: tuple[str, ...]
    mode: Mode
    comment: CommentMode
    comment_threshold: Threshold
    label: str  # added while violations stand, removed once they are gone ("" = none)
    shard: Shard | None  # check only this runner's share (see action/shard.py)
    merge: tuple[str, ...]  # report.json globs to merge instead of checking
    github_token: str
    lfs: Lfs
    commit_fixes: bool
    release_assets: bool
    fail_on: FailOn

    def __repr__(self) -> str:  # never show the token, whatever prints a Settings
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__dataclass_fields__
                           if k != "github_token")
        return f"Settings({fields}, github_token={'***' if self.github_token else ''!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def raw(name: str) -> str:
            return env.get(f"INPUT_{name.upper()}", INPUTS[name]).strip()

        comment = {"true": "always", "yes": "always", "1": "always", "on": "always",
                   "false": "never", "no": "never", "0": "never", "off": "never",
                   "": "auto"}.get(raw("comment").lower(), raw("comment"))
        token = raw("github_token") or env.get("GITHUB_TOKEN", "").strip()
        return cls(
            policy=raw("policy") or None,
            policy_from=_enum(PolicyFrom, "policy_from", raw("policy_from")),
            paths=_split_paths(raw("paths")),
            mode=_enum(Mode, "mode", raw("mode")),
            comment=_enum(CommentMode, "comment", comment),
            comment_threshold=_threshold(raw("comment_threshold")),
            label=_label(raw("label")),
            shard=_shard(raw("shard")),
            merge=_split_paths(raw("merge")),
            github_token=token,
            lfs=_enum(Lfs, "lfs", "auto" if raw("lfs").lower() == "true" else raw("lfs")),
            commit_fixes=_bool("commit_fixes", raw("commit_fixes")),
            release_assets=_bool("release_assets", raw("release_assets")),
            fail_on=_enum(FailOn, "fail_on", raw("fail_on")),
        )


def _split_paths(value: str) -> tuple[str, ...]:
    """Globs one per line (YAML block scalar) or comma/space separated on one line."""
    parts: list[str] = []
    for line in value.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts.extend(p for p in line.replace(",", " ").split() if p)
    return tuple(parts)


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SettingsError(f"input {name!r} must be true or false, got {value!r}")


def _enum(kind: type[Enum], name: str, value: str):  # type: ignore[no-untyped-def]
    try:
        return kind(value.strip().lower())
    except ValueError:
        allowed = "|".join(m.value for m in kind)
        raise SettingsError(f"input {name!r} must be one of {allowed}, got {value!r}") from None


def _threshold(value: str) -> Threshold:
    v = value.strip()
    try:
        if v.endswith("%"):
            pct = float(v[:-1])
            if pct < 0 or pct != pct:
                raise ValueError(v)
            return Threshold(percent=pct)
        from ckpt_guard.policy.sizes import parse_size

        return Threshold(bytes=parse_size(v or "0"))
    except ValueError:
        raise SettingsError(f"input 'comment_threshold' must be a size (e.g. 1MB) or a percent "
                            f"(e.g. 5%), got {value!r}") from None


def _shard(value: str) -> Shard | None:
    """``"I/N"`` (1 <= I <= N) → :class:`Shard`; ``""`` → ``None``."""
    if not value.strip():
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)) <= 1000:
        raise SettingsError(f"input 'shard' must be I/N with 1 <= I <= N (e.g. 2/4), "
                            f"got {value!r}")
    return Shard(int(m.group(1)), int(m.group(2)))


def _label(value: str) -> str:
    v = value.strip()
    if len(v) > 50 or any(c in v for c in "\n\r,"):
        raise SettingsError(f"input 'label' must be one label name of at most 50 characters, "
                            f"got {value!r}")
    return v
