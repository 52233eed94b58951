"""The oracle subprocess: asks real torch which pickles it unpickles for each file.

Run as a script (``python tests/differential/torch_child.py``); reads one JSON request per
line on stdin (``{"path": ...}``) and answers one JSON line per request on its original
stdout (torch's own prints go to stderr). Imports torch and the recording shim, never
ckpt_guard. Per file it calls ``torch.load(path, weights_only=False, pickle_module=shim,
map_location="cpu")`` — exactly the call ultralytics/yolov5 make, with the shim standing in
for :mod:`pickle` — so torch's own code decides the route (zip, tarfile, legacy stream,
safetensors by extension, TorchScript).

A file named ``*.metadata`` is read as torch.distributed.checkpoint reads it: a plain
``pickle.load`` (through the shim).

``torch.jit.load`` is replaced by a refusal: a TorchScript archive runs its code at load
(issue class 6) and its pickles go through the C++ unpickler, out of the shim's reach. For
such a file the answer lists the records jit would unpickle (``data.pkl``,
``constants.pkl``), read through torch's own zip reader (``PyTorchFileReader``, miniz), each
up to its STOP per pickletools.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shim  # noqa: E402 - the directory is put on the path just above
import torch  # noqa: E402

_JIT_ARCHIVES = ("constants", "data")  # what torch::jit's ScriptModuleDeserializer reads


class JitRefused(Exception):
    pass


def _refuse_jit(*_args: object, **_kwargs: object) -> None:
    raise JitRefused("torch.load dispatched to torch.jit.load")


torch.jit.load = _refuse_jit


def jit_records(path: str) -> list[dict]:
    out = []
    reader = torch._C.PyTorchFileReader(path)
    for name in _JIT_ARCHIVES:
        if not reader.has_record(f"{name}.pkl"):
            continue
        data = bytes(reader.get_record(f"{name}.pkl"))
        end = shim.stop_end(data)
        out.append({"source": f"jit:{name}.pkl", "complete": end is not None,
                    "consumed": len(data), "stop_end": end, "globals": [],
                    "sha256": hashlib.sha256(data[:end]).hexdigest() if end else None,
                    "head": data[:64].hex()})
    return out


def examine(path: str) -> dict:
    shim.RECORDS.clear()
    answer: dict = {"path": path}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if os.path.basename(path).endswith(".metadata"):
                # torch.distributed.checkpoint's FileSystemReader.read_metadata: a plain
                # pickle.load of the stream (issue 8 class 11)
                with open(path, "rb") as fh:
                    shim.load(fh)
            else:
                torch.load(path, weights_only=False, pickle_module=shim, map_location="cpu")
        answer["outcome"] = "loaded"
    except JitRefused:
        answer["outcome"] = "jit"
    except Exception as e:  # noqa: BLE001 - any failure of torch.load is an answer
        answer["outcome"] = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    answer["pickles"] = [dict(r, source="pickle") for r in shim.RECORDS]
    if answer["outcome"] == "jit":
        try:
            answer["pickles"] += jit_records(path)
        except Exception as e:  # noqa: BLE001
            answer["jit_error"] = f"{type(e).__name__}: {e}"
    return answer


def main() -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything torch prints must not corrupt the answers
    sys.stdout = sys.stderr
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        out.write(json.dumps(examine(req["path"])) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
