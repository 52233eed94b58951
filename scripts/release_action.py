"""Turn action.yml into the released action: `runs.image` points at the prebuilt image.

`main` keeps `image: Dockerfile` (the runner builds the image: right for development, a
minute of apt and pip on every run for users). A release commit instead points the action at
the image the release workflow pushed, so `uses: org/ckpt-guard@v1` pulls it in seconds:

    python scripts/release_action.py --version 1.2.3 --image ghcr.io/Org/ckpt-guard

rewrites action.yml in place to `image: docker://ghcr.io/org/ckpt-guard:1.2.3` (registry
paths are lower case) and changes nothing else. Exits 2 when the version is not the
package's own (a release of other code than it says) or action.yml is not the development one.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_LINE = "  image: Dockerfile\n"
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
_IMAGE = re.compile(r"[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+")


def package_version(root: Path = ROOT) -> str:
    """The version pyproject.toml and ckpt_guard.__version__ both state (they must agree)."""
    pyproject = re.search(r'^version = "([^"]+)"', (root / "pyproject.toml").read_text(), re.M)
    init = re.search(r'^__version__ = "([^"]+)"',
                     (root / "src" / "ckpt_guard" / "__init__.py").read_text(), re.M)
    if not pyproject or not init or pyproject.group(1) != init.group(1):
        raise ValueError("pyproject.toml and src/ckpt_guard/__init__.py disagree on the version")
    return pyproject.group(1)


def released_action(text: str, version: str, image: str) -> str:
    """action.yml's text with `runs.image` set to ``docker://IMAGE:VERSION``."""
    if not _SEMVER.fullmatch(version):
        raise ValueError(f"version {version!r} is not X.Y.Z")
    image = image.lower().removeprefix("docker://")
    if not _IMAGE.fullmatch(image):
        raise ValueError(f"image {image!r} is not a registry path such as ghcr.io/org/name")
    if text.count(DEV_LINE) != 1:
        raise ValueError("action.yml does not have exactly one `image: Dockerfile` line "
                         "(is it already a release commit?)")
    return text.replace(DEV_LINE, f"  image: docker://{image}:{version}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", required=True, help="the release's X.Y.Z (the tag without v)")
    p.add_argument("--image", required=True, help="registry path, e.g. ghcr.io/org/ckpt-guard")
    p.add_argument("--action", type=Path, default=ROOT / "action.yml",
                   help="the action.yml to rewrite in place")
    args = p.parse_args(argv)
    try:
        ours = package_version(args.action.resolve().parent)
        if args.version.removeprefix("v") != ours:
            raise ValueError(f"tag says {args.version}, the package is {ours}: bump "
                             "pyproject.toml and ckpt_guard.__version__ first")
        text = released_action(args.action.read_text(), ours, args.image)
    except (OSError, ValueError) as e:
        print(f"release_action: {e}", file=sys.stderr)
        return 2
    args.action.write_text(text)
    print(f"{args.action.name}: image docker://{args.image.lower()}:{ours}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
