"""``ckpt-guard`` command line: inspect, check, fix, stash, restore, init, action.

A thin surface: parse arguments, call the engine, render, choose the exit code. Users never see
a traceback: policy and usage errors exit 2 with one line per problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ckpt_guard import __version__
from ckpt_guard.exitcodes import Exit
from ckpt_guard.vocab import Status

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

FORMATS = ("text", "json", "markdown", "sarif")
INSPECT_FORMATS = ("text", "json")


def _columns() -> int:
    """``shutil.get_terminal_size().columns``, without importing shutil (and with it zlib,
    bz2, lzma: ~2 ms of a cold check that argparse spends on every formatter it makes)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, as wide as argparse makes it (the terminal's columns less 2)."""

    def __init__(self, prog: str, *args: Any, **kwargs: Any) -> None:
        if len(args) < 3 and kwargs.get("width") is None:
            kwargs["width"] = _columns() - 2
        super().__init__(prog, *args, **kwargs)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help (and its subcommands') uses :class:`_Formatter`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser. With ``command`` (the first argument, when it names a
    command) only that command's arguments are built: the others' ~70 ``add_argument`` calls
    were ~7 ms of a cold ``check``. Usage, help and errors of the command are the same; the
    top-level help and errors build all (``command=None``)."""

    def wanted(*names: str) -> bool:
        return command is None or command in names

    p = _Parser(
        prog="ckpt-guard",
        description="Keep training baggage out of shipped PyTorch weights. Files are read "
                    "without executing them.")
    p.add_argument("--version", action="version", version=f"ckpt-guard {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, *, fmt: bool = True) -> None:
        sp.add_argument("--policy", metavar="FILE",
                        help="policy file (default: nearest .ckpt-guard.yml up to the "
                             "repository root, else the built-in policy)")
        if fmt:
            sp.add_argument("--format", choices=FORMATS, default="text",
                            help="report format (default: text)")
            sp.add_argument("--output", "-o", metavar="FILE",
                            help="write the report to FILE instead of standard output")

    if wanted("inspect"):
        sp = sub.add_parser("inspect", help="show what is inside weight files")
        sp.add_argument("paths", nargs="+", metavar="PATH",
                        help="weight files or checkpoint directories to describe")
        sp.add_argument("--policy", metavar="FILE",
                        help="policy file for the findings shown (default: nearest "
                             ".ckpt-guard.yml up to the repository root, else the built-in policy)")
        # markdown and SARIF are reports of findings (check, fix); inspect describes contents.
        sp.add_argument("--format", choices=INSPECT_FORMATS, default="text",
                        help="output format (default: text; markdown and sarif are for check "
                             "and fix)")
        sp.add_argument("--output", "-o", metavar="FILE",
                        help="write the description to FILE instead of standard output")

    if wanted("check"):
        sp = sub.add_parser("check", help="check weight files against the policy")
        sp.add_argument("paths", nargs="*", metavar="PATH",
                        help="files or directories (default: every matching file in the git "
                             "repository)")
        common(sp)
        sp.add_argument("--base", nargs="?", const="", metavar="REV",
                        help="judge size-growth against the files' sizes at REV (alone: the merge "
                             "base with the default branch, origin/HEAD else main/master)")

    if wanted("fix"):
        sp = sub.add_parser("fix", help="strip training state and cast FP32 as the policy says")
        sp.add_argument("paths", nargs="*", metavar="PATH",
                        help="files or directories to fix (default: every matching file in the "
                             "git repository)")
        common(sp)
        sp.add_argument("--dry-run", action="store_true",
                        help="report what would change and the projected size; write nothing")
        sp.add_argument("--out", metavar="DIR",
                        help="write fixed files under DIR (mirroring their paths) instead of in "
                             "place")
        sp.add_argument("--exit-non-zero-on-fix", action="store_true",
                        help="exit 1 when any file was rewritten (for pre-commit hooks)")
        sp.add_argument("--no-stash", action="store_true",
                        help="do not keep the originals of files rewritten in place (the "
                             "policy's `stash`; see `ckpt-guard stash list`)")

    if wanted("merge"):
        sp = sub.add_parser("merge", help="merge JSON reports (e.g. of sharded runs) into one",
                            description="Merge `--format json` reports of several runs (the "
                                        "Action's shards) into one report; exit 1 if any file "
                                        "fails.")
        sp.add_argument("reports", nargs="+", metavar="REPORT",
                        help="report.json files written by check/fix --format json or the Action")
        sp.add_argument("--format", choices=FORMATS, default="text",
                        help="format of the merged report (default: text)")
        sp.add_argument("--output", "-o", metavar="FILE",
                        help="write the merged report to FILE instead of standard output")

    if wanted("stash", "restore"):
        from ckpt_guard.stashcmd import add_parsers

        add_parsers(sub)

    if wanted("init"):
        sp = sub.add_parser("init", help="write a commented .ckpt-guard.yml")
        sp.add_argument("path", nargs="?", default=".ckpt-guard.yml",
                        help="where to write the policy (default: .ckpt-guard.yml)")
        sp.add_argument("--force", action="store_true", help="overwrite an existing file")

    if wanted("action"):
        sp = sub.add_parser("action", help="run as the GitHub Action (the container entrypoint)")
        sp.add_argument("rest", nargs=argparse.REMAINDER, metavar="ARG",
                        help="the action's own arguments (--version); its inputs come from "
                             "the INPUT_* and GITHUB_* environment variables")
    return p


def _err(msg: str) -> None:
    print(f"ckpt-guard: {msg}", file=sys.stderr)


def _load_policy(args: argparse.Namespace):
    """``--policy FILE``, else the nearest ``.ckpt-guard.yml`` above the working directory
    (up to the repository root), else the built-in policy."""
    from ckpt_guard.policy import PolicyError, load_policy

    if args.policy and not Path(args.policy).is_file():
        raise PolicyError(f"{args.policy}: policy file not found")
    return load_policy(args.policy, Path.cwd())


def _root() -> Path:
    from ckpt_guard.app.check import git_root

    return git_root(Path.cwd()) or Path.cwd()


def _emit(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")


def _render(report, fmt: str, *, to_terminal: bool) -> str:
    if fmt == "json":
        from ckpt_guard.report.json_report import render_json

        return render_json(report)
    if fmt == "sarif":
        from ckpt_guard.report.sarif import render_sarif

        return render_sarif(report)
    if fmt == "markdown":
        from ckpt_guard.report.markdown import render_markdown

        return render_markdown(report)
    if not to_terminal:  # without importing rich, as a rule (~25 ms of a cold check)
        from ckpt_guard.report.plain import render_check_plain

        text = render_check_plain(report)
        if text is not None:
            return text
    from ckpt_guard.report.text import render_check

    return render_check(report, color=to_terminal)


def _paths_problem(paths: list[str], root: Path, verb: str) -> str | None:
    """Why ``paths`` cannot be used, or ``None``: named paths must exist; with none, the
    repository is walked, so there must be one."""
    if paths:
        from ckpt_guard.app.check import is_remote

        remote = [p for p in paths if is_remote(p)]
        if remote and verb == "fix":
            return (f"cannot fix a remote file ({remote[0]}): download it, run `ckpt-guard "
                    "fix` on the copy, upload the result")
        missing = [p for p in paths if not is_remote(p) and not os.path.lexists(p)]
        return "no such file or directory: " + ", ".join(missing) if missing else None
    if not (root / ".git").exists():
        return (f"no paths given and not inside a git repository; name files or directories "
                f"to {verb}")
    return None


class UsageError(Exception):
    """A bad command line: one line on stderr, exit 2."""


def _start(args: argparse.Namespace, verb: str):
    """What every report command checks first: the policy, the paths, and that the report
    can be written — before any file is read, let alone rewritten. Returns
    ``(root, policy)``."""
    root = _root()
    policy = _load_policy(args)
    problem = _paths_problem(args.paths, root, verb)
    if problem:
        raise UsageError(problem)
    if args.output:
        with open(args.output, "a", encoding="utf-8"):  # OSError → exit 2 in main()
            pass
    return root, policy


def _to_terminal(args: argparse.Namespace) -> bool:
    return args.output is None and sys.stdout.isatty()


def cmd_check(args: argparse.Namespace) -> int:
    from ckpt_guard.app.check import check_paths

    root, policy = _start(args, "check")
    base_size = None
    if args.base is not None:
        from ckpt_guard.app.base import BaseError, base_sizes, resolve_base

        try:
            commit = resolve_base(root, args.base)
        except BaseError as e:
            # `--base` alone before file names (pre-commit appends them): the "REV" argparse
            # took is a file to check, not a revision.
            if not (args.base and os.path.lexists(args.base)):
                raise UsageError(str(e)) from e
            args.paths.insert(0, args.base)
            try:
                commit = resolve_base(root, "")
            except BaseError as e2:
                raise UsageError(str(e2)) from e2
        base_size = base_sizes(root, commit)
    report = check_paths(args.paths, policy, root=root, base_size=base_size)
    _emit(_render(report, args.format, to_terminal=_to_terminal(args)), args.output)
    return Exit.VIOLATIONS if report.failed else Exit.OK


def cmd_inspect(args: argparse.Namespace) -> int:
    from ckpt_guard.app.check import check_paths

    root, policy = _start(args, "inspect")
    report = check_paths(args.paths, policy, root=root, details=True)
    if args.format == "json":
        from ckpt_guard.report.json_report import render_json

        text = render_json(report)
    else:
        from ckpt_guard.report.text import render_inspect

        text = render_inspect(report, color=_to_terminal(args))
    _emit(text, args.output)
    return Exit.OK if all(f.status != Status.ERROR for f in report.files) else Exit.VIOLATIONS


def cmd_fix(args: argparse.Namespace) -> int:
    from ckpt_guard.app.fix import run_fix

    root, policy = _start(args, "fix")
    # The fixer convention (pre-commit, ruff): one `Fixing <path>` line per rewritten file —
    # on stdout unless stdout carries a machine-readable report.
    announce = args.format == "text" or args.output is not None

    def fixed(fr) -> None:
        if announce:
            print(f"Fixing {fr.path}", flush=True)

    report = run_fix(args.paths, policy, root=root, dry_run=args.dry_run, out_dir=args.out,
                     progress=sys.stderr.isatty(), on_fixed=fixed,
                     stash="never" if args.no_stash else None)
    _emit(_render(report, args.format, to_terminal=_to_terminal(args)), args.output)
    if report.failed:
        return Exit.VIOLATIONS
    if args.exit_non_zero_on_fix and any(f.status == Status.FIXED for f in report.files):
        return Exit.VIOLATIONS
    return Exit.OK


def cmd_init(args: argparse.Namespace) -> int:
    from ckpt_guard.policy import init_text

    path = Path(args.path)
    if path.exists() and not args.force:
        _err(f"{path} exists; use --force to overwrite")
        return Exit.USAGE
    path.write_text(init_text(), encoding="utf-8")
    print(f"wrote {path}: the built-in policy, every rule explained. Edit it, then run "
          "`ckpt-guard check` (and `ckpt-guard fix --dry-run` for rules set to `fix`).")
    return Exit.OK


def cmd_merge(args: argparse.Namespace) -> int:
    from ckpt_guard.report.merge import ReportError, load_report, merge_reports

    try:
        report = merge_reports([load_report(p) for p in args.reports])
    except ReportError as e:
        raise UsageError(str(e)) from e
    _emit(_render(report, args.format, to_terminal=_to_terminal(args)), args.output)
    return Exit.VIOLATIONS if report.failed else Exit.OK


def cmd_stash(args: argparse.Namespace) -> int:
    from ckpt_guard.stashcmd import cmd_stash as run

    return run(args)


def cmd_restore(args: argparse.Namespace) -> int:
    from ckpt_guard.stashcmd import cmd_restore as run

    return run(args)


def cmd_action(args: argparse.Namespace) -> int:
    from ckpt_guard.action import main as action_main

    return action_main(args.rest)


COMMANDS = {"check": cmd_check, "inspect": cmd_inspect, "fix": cmd_fix, "init": cmd_init,
            "merge": cmd_merge, "stash": cmd_stash, "restore": cmd_restore,
            "action": cmd_action}


def main(argv: Sequence[str] | None = None) -> int:
    # ckpt-guard never multiplies matrices: without this, importing numpy (fix) starts an
    # OpenBLAS thread per core that spin-waits beside the cast's own threads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from ckpt_guard.report.encoding import install

    install()  # a console that cannot encode `✗`/`→` gets ASCII, never a traceback
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return Exit.USAGE
    from ckpt_guard.policy import PolicyError

    try:
        return int(COMMANDS[args.command](args))
    except (PolicyError, UsageError) as e:
        _err(str(e))
        return Exit.USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:
        return Exit.OK
    except OSError as e:  # e.g. --output to an unwritable place
        _err(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
        return Exit.USAGE
