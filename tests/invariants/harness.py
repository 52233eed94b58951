"""Black-box runs of the CLI over every fixture family under one policy.

One :class:`Run` copies every family into its own directory, then runs, each once over all
copies (one process per command, files batched): ``check``, ``fix --dry-run``, ``fix`` and
``check`` again, all ``--format json``. It records every file's bytes and mtime before and
after, and the ``Fixing <path>`` lines ``fix`` prints. Tests then state the invariants over
these results only, so they hold whatever the code's internal structure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.fixtures import FAMILIES, FixtureFactory

# What a fix may write under each name (issue 9, defect 1).
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")


@dataclass
class Snapshot:
    """Every regular file under a directory: relative path → (bytes, mtime_ns)."""

    files: dict[str, tuple[bytes, int]]

    @classmethod
    def take(cls, root: Path) -> Snapshot:
        out = {}
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = Path(dirpath) / n
                if p.is_file() and not p.is_symlink():
                    out[p.relative_to(root).as_posix()] = (p.read_bytes(), p.stat().st_mtime_ns)
        return cls(out)

    def changed(self, other: Snapshot, prefix: str) -> list[str]:
        """Files under ``prefix`` that differ (content, mtime, added or removed)."""
        names = {n for n in (*self.files, *other.files) if n == prefix or
                 n.startswith(prefix.rstrip("/") + "/")}
        return sorted(n for n in names if self.files.get(n) != other.files.get(n))


@dataclass
class Run:
    name: str
    policy: dict
    root: Path
    families: tuple[str, ...]
    paths: dict[str, str] = field(default_factory=dict)  # family → path as given to the CLI
    reports: dict[str, dict] = field(default_factory=dict)  # step → JSON report
    exits: dict[str, int] = field(default_factory=dict)
    stdout: dict[str, str] = field(default_factory=dict)
    stderr: dict[str, str] = field(default_factory=dict)
    snaps: dict[str, Snapshot] = field(default_factory=dict)
    out_dir: Path | None = None
    added: dict[str, list[str]] = field(default_factory=dict)  # family → files fix created

    def judged(self, family: str) -> dict:
        """The report of what ``fix`` produced for ``family``: its ``--out`` copy, else the
        file ``convert`` wrote beside it, else the file itself (rewritten in place or not)."""
        want = list(self.added.get(family, []))
        for f in self.reports.get("after-out", {}).get("files", []):
            if f["path"].startswith(f"out/files/{family}/"):
                return f
        for f in self.reports["after"]["files"]:
            if f["path"] in want:
                return f
        return self.file("after", family)

    def file(self, step: str, family: str) -> dict:
        want = self.paths[family]
        for f in self.reports[step]["files"]:
            if f["path"] == want:
                return f
        raise KeyError(f"{step}: no report for {family} ({want})")

    def fixing_lines(self) -> list[str]:
        return [ln[len("Fixing "):] for ln in self.stdout["fix"].splitlines()
                if ln.startswith("Fixing ")]


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    return subprocess.run([sys.executable, "-m", "ckpt_guard", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def run_policy(factory: FixtureFactory, name: str, policy: dict, root: Path, *,
               families: tuple[str, ...] = FAMILIES, out: bool = False) -> Run:
    """Copy ``families`` under ``root`` and run check, fix --dry-run, fix, check."""
    root.mkdir(parents=True, exist_ok=True)
    run = Run(name=name, policy=policy, root=root, families=families)
    (root / "policy.yml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    for fam in families:
        fx = factory.copy(fam, root / "files" / fam)
        run.paths[fam] = fx.path.relative_to(root).as_posix()
    paths = [run.paths[f] for f in families]
    base = ["--policy", "policy.yml", "--format", "json"]
    if out:
        run.out_dir = root / "out"
    steps = [("check", ["check"]), ("dry", ["fix", "--dry-run"]),
             ("fix", ["fix"] + (["--out", "out"] if out else [])), ("after", ["check"])]
    for step, cmd in steps:
        run.snaps[step] = Snapshot.take(root / "files")
        if step == "after":  # files fix created (convert: safetensors beside the input)
            for fam in families:
                new = sorted(set(run.snaps["after"].files) - set(run.snaps["fix"].files))
                run.added[fam] = [f"files/{n}" for n in new if n.startswith(f"{fam}/")]
        extra = [a for fam in families for a in run.added.get(fam, [])
                 if not (root / run.paths[fam]).is_dir()]
        report = root / f"{step}.json"
        p = cli([*cmd, *base, "--output", report.name, *paths, *extra], cwd=root)
        run.exits[step] = p.returncode
        run.stdout[step], run.stderr[step] = p.stdout, p.stderr
        assert "Traceback" not in p.stderr, f"{name} {step}: {p.stderr}"
        assert p.returncode in (0, 1), f"{name} {step}: exit {p.returncode}: {p.stderr}"
        run.reports[step] = json.loads(report.read_text(encoding="utf-8"))
        if step == "after" and out:
            # After `--out`, judge the copies: the originals are not the fix's output.
            outs = sorted({str(Path("out") / (run.paths[f] if (root / "out" / run.paths[f])
                                               .is_dir() else Path(n).parent / Path(n).name))
                           for f in families for n in Snapshot.take(root / "out").files
                           if n.startswith(f"files/{f}/")})
            if outs:
                p = cli(["check", *base, "--output", "after-out.json", *outs], cwd=root)
                assert "Traceback" not in p.stderr, p.stderr
                run.reports["after-out"] = json.loads((root / "after-out.json").read_text())
    run.snaps["end"] = Snapshot.take(root / "files")
    if out:
        run.snaps["out"] = Snapshot.take(root / "out") if (root / "out").exists() \
            else Snapshot({})
    return run
