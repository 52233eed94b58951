"""``ckpt-guard stash list`` and ``ckpt-guard restore PATH``: the originals ``fix`` kept
(see :mod:`ckpt_guard.rewrite.stash`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ckpt_guard.exitcodes import Exit


def add_parsers(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("stash", help="list the originals `fix` kept",
                        description="The originals `ckpt-guard fix` kept before rewriting "
                                    "files in place: in .git/ckpt-guard/stash/ of the "
                                    "current repository, and in the user cache.")
    ss = sp.add_subparsers(dest="stash_command", metavar="SUBCOMMAND")
    ls = ss.add_parser("list", help="show the kept originals: when, size, original path, "
                                    "the rules that fixed it")
    ls.add_argument("--format", choices=("text", "json"), default="text",
                    help="output format (default: text)")
    sp = sub.add_parser("restore", help="put back the original `fix` kept of a file",
                        description="Move the newest kept original of PATH back in place "
                                    "(atomically) and drop it from the stash.")
    sp.add_argument("path", metavar="PATH", help="the file fix rewrote (for a sharded set: "
                    "its index or any of its shards; the whole set is put back; for a "
                    "checkpoint directory: the directory, every training file fix deleted "
                    "is put back)")
    sp.add_argument("--force", action="store_true",
                    help="restore even when PATH changed since ckpt-guard wrote it (the "
                         "current file is then kept in the stash)")


def cmd_stash(args: argparse.Namespace) -> int:
    from ckpt_guard.rewrite.stash import all_entries, locations
    from ckpt_guard.units import format_bytes

    if args.stash_command != "list":
        print("usage: ckpt-guard stash list [--format text|json]", file=sys.stderr)
        return Exit.USAGE
    es = list(all_entries(Path.cwd()))
    if args.format == "json":
        print(json.dumps({"stashes": [str(d) for d in locations(Path.cwd())],
                          "entries": [e.to_dict() for e in es]}, indent=2))
        return Exit.OK
    if not es:
        print("no kept originals (looked in " + ", ".join(map(str, locations(Path.cwd())))
              + ")")
        return Exit.OK
    for e in es:
        rules = ", ".join(e.rules) or "-"
        what = e.original
        if e.kind == "set":
            n = len(e.files) - 1
            what += f" + {n} shard{'s' if n != 1 else ''} (sharded set)"
        elif e.kind == "directory":
            n = len(e.files)
            names = ", ".join(e.files[:3]) + (f", +{n - 3}" if n > 3 else "")
            what += f"/ (checkpoint directory, {n} file{'s' if n != 1 else ''}: {names})"
        print(f"{e.when}  {format_bytes(e.size):>9}  {what}  (fixed by {rules}; "
              f"{e.how}; {e.path})")
    total = sum(e.size for e in es)
    print(f"{len(es)} original{'s' if len(es) != 1 else ''}, {format_bytes(total)}; "
          f"`ckpt-guard restore PATH` puts one back")
    return Exit.OK


def cmd_restore(args: argparse.Namespace) -> int:
    from ckpt_guard.rewrite.stash import StashError, restore

    try:
        entry = restore(args.path, force=args.force)
    except StashError as e:
        print(f"ckpt-guard: {e}", file=sys.stderr)
        return Exit.VIOLATIONS
    except OSError as e:
        print(f"ckpt-guard: cannot restore {args.path}: {e.strerror or e}", file=sys.stderr)
        return Exit.VIOLATIONS
    if entry.kind == "set":
        n = len(entry.files) - 1
        print(f"restored the sharded set of {args.path} (its index and {n} shard"
              f"{'s' if n != 1 else ''} kept on {entry.when})")
        return Exit.OK
    if entry.kind == "directory":
        n = len(entry.files)
        where = args.path if os.path.realpath(args.path) == entry.original else entry.original
        print(f"restored {n} file{'s' if n != 1 else ''} of {where} (kept on {entry.when}): "
              f"{', '.join(entry.files)}")
        return Exit.OK
    print(f"restored {args.path} (the original kept on {entry.when})")
    return Exit.OK
