"""Named exit codes shared by every surface (CLI, hook, Action)."""

from enum import IntEnum


class Exit(IntEnum):
    OK = 0  # every file passes (warnings allowed)
    VIOLATIONS = 1  # at least one file fails the policy (or, for hooks, a file was fixed)
    USAGE = 2  # bad command line or bad policy file
