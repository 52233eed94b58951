"""Which LFS pointer files of a run are read by range, and what the log says about pointers.

``lfs: remote`` (and ``auto`` when the checkout is the event's repository on this server):
the pointers' objects are resolved through the batch API (``lfsremote``) and read by range,
not pulled. Whatever stays a pointer is reported once, as one warning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ckpt_guard.action.commands import Workflow
from ckpt_guard.action.event import RunContext
from ckpt_guard.action.gitio import Git, lfs_object
from ckpt_guard.action.lfsremote import RemoteObject
from ckpt_guard.action.lfsremote import resolve as resolve_lfs
from ckpt_guard.action.select import Selection
from ckpt_guard.action.settings import Lfs, Settings


def remote_objects(s: Settings, ctx: RunContext, workspace: Path, sel: Selection,
                   wf: Workflow) -> dict[str, RemoteObject]:
    """Path → where to read its LFS object by range, for the selection's pointer files
    (empty when ``lfs`` does not ask for it or the batch API cannot be used)."""
    if s.lfs not in (Lfs.REMOTE, Lfs.AUTO):
        return {}
    pointers = {p: obj for p in _with_set_shards(sel.files, workspace)
                if (obj := lfs_object(workspace / p))}
    if not pointers:
        return {}
    server = ctx.server_url
    if s.lfs is Lfs.AUTO and not Git(workspace).origin_is(server, ctx.repository):
        return {}
    try:
        got = resolve_lfs(pointers, server_url=server, repository=ctx.repository,
                          token=s.github_token, ref=ctx.ref)
    except RuntimeError as e:
        msg = f"{e}: LFS objects not read by range"
        if s.lfs is Lfs.REMOTE:
            wf.warning(msg + "; the pointers are checked as pointers", title="ckpt-guard: LFS")
        else:
            sel.notes.append(msg + "; pulling them instead")
        return {}
    for path, why in got.errors.items():
        wf.warning(f"{path}: {why}", title="ckpt-guard: LFS")
    if got.objects:
        sel.notes.append(f"reading {len(got.objects)} LFS object(s) by range through the "
                         "batch API (not downloaded)")
    return got.objects


def _with_set_shards(files: Sequence[str], workspace: Path) -> list[str]:
    """``files`` and every shard of the sharded sets they belong to: a set is checked as a
    unit, so a pull request changing one shard still has the others read (as objects)."""
    from ckpt_guard.read.checkpoint import UnreadableError
    from ckpt_guard.read.sharded import SetFinder, load_index, shards_of

    out, seen = list(files), set(files)
    finder = SetFinder()
    root = workspace.absolute()
    for index in {finder.index_for(str(root / p)) for p in files} - {None}:
        assert index is not None
        try:
            shards = shards_of(load_index(index))
        except UnreadableError:
            continue
        for shard in shards:
            path = Path(os.path.normpath(Path(index).parent / shard))
            try:
                rel = path.relative_to(root).as_posix()
            except ValueError:
                continue  # not in the workspace: the set's reader reports it
            if rel not in seen and path.is_file():
                seen.add(rel)
                out.append(rel)
    return out


def warn_pointers(wf: Workflow, pointers: Sequence[str]) -> None:
    """One warning, not one per file: the UI shows only 10 per step."""
    if not pointers:
        return
    shown = ", ".join(pointers[:5]) + (f" and {len(pointers) - 5} more"
                                       if len(pointers) > 5 else "")
    wf.warning(f"{len(pointers)} file(s) are Git LFS pointers ({shown}): only "
               "the pointer's size is known. Set `lfs: true` on actions/checkout "
               "(or `lfs: fetch` here) to check the real files.",
               title="ckpt-guard: LFS pointer")
