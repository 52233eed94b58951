"""The action's one door into the engine: load the policy, check or fix a list of paths.

Paths in the returned report are POSIX paths relative to the workspace (what annotations,
the comment and git use), whatever the process's current directory is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ckpt_guard.report.model import Report


def load_policy(policy_path: str | None, workspace: Path):  # -> ckpt_guard.policy.Policy
    """The policy named by the ``policy`` input (relative to the workspace), else the nearest
    ``.ckpt-guard.yml``, else the built-in one. Raises ``PolicyError``."""
    from ckpt_guard.policy import PolicyError
    from ckpt_guard.policy import load_policy as _load

    path = None
    if policy_path:
        p = Path(policy_path)
        p = p if p.is_absolute() else workspace / p
        if not p.is_file():
            raise PolicyError(f"{policy_path}: policy file not found (input 'policy')")
        path = str(p)
    return _load(path, workspace)


def relpath(path: str | Path, workspace: Path) -> str:
    """POSIX path of ``path`` relative to ``workspace`` (unchanged when outside it)."""
    p = Path(path)
    p = p if p.is_absolute() else Path.cwd() / p
    try:
        return Path(os.path.relpath(p, workspace)).as_posix() if _inside(p, workspace) \
            else p.as_posix()
    except ValueError:
        return p.as_posix()


def _inside(p: Path, root: Path) -> bool:
    try:
        Path(os.path.abspath(p)).relative_to(os.path.abspath(root))
    except ValueError:
        return False
    return True


def matches(policy, rel: str, workspace: Path) -> bool:
    """Does the policy's include/exclude select workspace-relative ``rel``? (Globs are
    relative to the policy file's directory, which may be below the workspace.)"""
    from ckpt_guard.read.sharded import is_index_name, unsharded_name

    if is_index_name(rel):  # a shard index changed: its set is checked (as one unit)
        rel = unsharded_name(rel)
    relpath = getattr(policy, "relpath", None)
    return bool(policy.matches(relpath(workspace / rel, workspace) if relpath else rel))


def _normalise(report: Report, workspace: Path) -> Report:
    for fr in report.files:
        fr.path = relpath(fr.path, workspace)
    return report


def run_check(paths: Sequence[str], policy, workspace: Path,
              remote: Mapping[str, Any] | None = None,
              base_sizes: Mapping[str, int | None] | None = None) -> Report:
    """Check ``paths`` (relative to the workspace). An empty list checks nothing (the
    engine would check the whole repository). ``remote``: path → an object with ``url`` and
    ``headers`` to read by range instead of the workspace file (LFS objects).
    ``base_sizes``: path → its size at the base commit (``None``: added since), for
    ``size-growth``; ``None`` when the event has no base."""
    from ckpt_guard.app.check import check_paths

    if not paths:
        return Report(policy_source=str(getattr(policy, "source", "built-in")))
    absolute = [str(workspace / p) for p in paths]
    sources = {os.path.abspath(workspace / p): (o.url, o.headers)
               for p, o in (remote or {}).items()}
    base_size = None
    if base_sizes is not None:
        by_abspath = {os.path.abspath(workspace / p): s for p, s in base_sizes.items()}

        def base_size(abspath: str) -> int | None:
            if abspath not in by_abspath:
                return None  # not a file the event's diff knows: no base to compare
            return by_abspath[abspath] or 0  # added since the base: counts from zero

    return _normalise(check_paths(absolute, policy, root=workspace, sources=sources,
                                  base_size=base_size), workspace)


def run_fix(paths: Sequence[str], policy, workspace: Path) -> Report:
    """Apply the policy's ``fix`` rules to ``paths`` in place (verified, atomic)."""
    from ckpt_guard.app.fix import run_fix as _run_fix

    if not paths:
        return Report(policy_source=str(getattr(policy, "source", "built-in")))
    absolute = [str(workspace / p) for p in paths]
    # A runner's checkout is thrown away: originals are kept only if the policy says
    # `stash: always` (a persistent self-hosted workspace), not for `auto`.
    cfg = getattr(policy, "stash", None)
    report = _run_fix(absolute, policy, root=workspace, dry_run=False, out_dir=None,
                      progress=False,
                      stash="always" if cfg is not None and cfg.when == "always" else "never")
    return _normalise(report, workspace)
