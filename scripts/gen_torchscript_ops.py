"""Regenerate src/ckpt_guard/analyze/torchscript_ops.txt from the installed torch.

The file lists, one ``namespace::name`` a line, the operators TorchScript code of an archive
may name in the namespaces ckpt-guard allows (see ckpt_guard.analyze.torchscript). Run it
when torch is upgraded; tests/analyze/test_torchscript_code.py checks the file matches
torch's registry.

    python scripts/gen_torchscript_ops.py > src/ckpt_guard/analyze/torchscript_ops.txt
"""

from __future__ import annotations

import sys

import torch

from ckpt_guard.analyze.torchscript import OP_NAMESPACES


def registry_ops() -> list[str]:
    """Every operator name of the allowed namespaces that torch's registry knows."""
    names = {s.name for s in torch._C._jit_get_all_schemas()}
    return sorted(n for n in names if n.split("::", 1)[0] in OP_NAMESPACES)


if __name__ == "__main__":
    sys.stdout.write(f"# torch {torch.__version__.split('+')[0]} operator registry "
                     "(scripts/gen_torchscript_ops.py)\n")
    sys.stdout.write("".join(f"{n}\n" for n in registry_ops()))
