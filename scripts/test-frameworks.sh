#!/usr/bin/env bash
# The real-trainer comparisons (tests/frameworks): each framework's own trainer makes a
# checkpoint, its own strip is compared with `ckpt-guard fix`.
#
#   bash scripts/test-frameworks.sh [lightning|yolo|rfdetr|all] [pytest args…]
#
# lightning  runs in the current environment (the `frameworks` extra; CI runs it through
#            scripts/test.sh).
# yolo       ultralytics 8.4 + yolov5 7.0.14, rfdetr  RF-DETR 1.11: each in a venv of its own,
#            because they need torchvision and PyPI's torchvision does not import beside the
#            pinned torch 2.13.0 CPU build ("operator torchvision::nms does not exist"), and
#            yolov5 (huggingface-hub<0.25) and RF-DETR (transformers 5, huggingface-hub>=1.31)
#            cannot share one. The venvs hold a torch+torchvision pair that imports together
#            (x86_64: torch 2.14.1 + torchvision 0.29.1, a 5.5 GB CUDA build run on the CPU;
#            aarch64: torch 2.9.1 + torchvision 0.24.1) and are kept for the next run under
#            $CKPT_GUARD_FW_VENVS (default ~/.cache/ckpt-guard/fw-venvs). Override the pair
#            with TORCH_PAIR="torch==X torchvision==Y".
# Measured on 2 cores (load ~10): venv with torch+torchvision 102 s; ultralytics 19 s, yolov5
# 85 s on top; RF-DETR[train] 209 s. Tests: ultralytics ~1.5 min, yolov5 ~1.5 min, RF-DETR
# ~6-10 min (a 30 M-parameter model trained two steps on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

group=${1:-all}
[ $# -gt 0 ] && shift
py=${PYTHON:-python3}
venvs=${CKPT_GUARD_FW_VENVS:-$HOME/.cache/ckpt-guard/fw-venvs}
case "$(uname -m)" in
  aarch64|arm64) default_pair="torch==2.9.1 torchvision==0.24.1" ;;
  *) default_pair="torch==2.14.1 torchvision==0.29.1" ;;
esac
pair=${TORCH_PAIR:-$default_pair}

venv_for() {  # venv_for NAME PACKAGES…: creates (once) and fills a venv, prints its python
  local dir="$venvs/$1"; shift
  if [ ! -x "$dir/bin/python" ]; then
    "$py" -m venv "$dir" >&2
  fi
  local start=$SECONDS
  # shellcheck disable=SC2086  # $pair is two requirements
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check $pair "$@" pytest >&2
  echo "venv $dir ready in $((SECONDS - start)) s" >&2
  echo "$dir/bin/python"
}

run() {  # run PYTHON TEST_FILES…: this checkout's ckpt_guard (the CLI runs as python -m)
  local python=$1; shift
  PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" "$python" -m pytest -p no:cacheprovider \
    -m frameworks "$@"
}

status=0
if [ "$group" = lightning ] || [ "$group" = all ]; then
  "$py" -m pip install --quiet --disable-pip-version-check -e ".[frameworks]"
  run "$py" tests/frameworks/test_lightning.py "$@" || status=1
fi
if [ "$group" = yolo ] || [ "$group" = all ]; then
  # yolov5 7.0.14 imports pkg_resources (setuptools<81) and calls np.trapz (numpy<2.4).
  python=$(venv_for yolo ultralytics==8.4.190 yolov5==7.0.14 "numpy<2.4" "setuptools<81" \
    pyyaml "jsonschema>=4.18" pathspec rich requests)
  run "$python" tests/frameworks/test_ultralytics.py tests/frameworks/test_yolov5.py "$@" \
    || status=1
fi
if [ "$group" = rfdetr ] || [ "$group" = all ]; then
  python=$(venv_for rfdetr "rfdetr[train]==1.11.2" pyyaml "jsonschema>=4.18" pathspec rich \
    requests)
  run "$python" tests/frameworks/test_rfdetr.py "$@" || status=1
fi
exit $status
