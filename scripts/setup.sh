#!/usr/bin/env bash
# One-command set-up: Debian packages for headless rendering, a venv in .venv, the pinned CPU torch
# wheel (unless a CUDA torch is wanted), and the project with its extras. Safe to re-run.
#   EXTRAS   extras to install (default: dev,metaworld,ros,lerobot,distributed); add gs on CUDA hosts
#   TORCH    torch requirement (default: torch==2.13.0, CPU build);
#            set TORCH=skip to keep a torch that is already installed in the venv (e.g. a CUDA build)
#   TORCH_CPU_INDEX  where CPU wheels come from when the default index only has CUDA builds
#   PYTHON   interpreter for the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev,metaworld,ros,lerobot,distributed}
TORCH=${TORCH:-torch==2.13.0}
PYTHON=${PYTHON:-python3}

# 1. Debian packages the MuJoCo renderer needs (EGL + Mesa llvmpipe; OSMesa as a fallback).
need=()
for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 libosmesa6; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] installing Debian packages: ${need[*]}"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 2. venv
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"

# 3. torch first, so nothing later pulls a CUDA build by accident. A plain `pip install torch` gives
#    the CPU wheel only where the pip configuration provides one (as on this project's machines); on
#    plain PyPI it would download the multi-GB CUDA build, so there the CPU index is used instead.
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
if [ "$TORCH" != "skip" ]; then
  if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    resolved=$($PIP install --dry-run --no-deps --quiet --report - "$TORCH" 2>/dev/null \
      | "$VENV/bin/python" -c "import json,sys; print(json.load(sys.stdin)['install'][0]['metadata']['version'])" \
      2>/dev/null || true)
    if [[ "$resolved" == *+cpu* ]]; then
      echo "[setup] installing $TORCH ($resolved)"
      $PIP install -q "$TORCH"
    else
      echo "[setup] installing $TORCH from the CPU wheel index $TORCH_CPU_INDEX (default index offers '$resolved')"
      $PIP install -q --index-url "$TORCH_CPU_INDEX" "$TORCH"
    fi
  fi
fi

# 4. the project and its extras (mujoco is pinned to 3.3.0 in pyproject.toml)
echo "[setup] installing the project with extras [$EXTRAS]"
$PIP install -q -e ".[${EXTRAS}]"
# the ROS 2 package's Python module (ros_nodes/ros_nodes), importable from this venv for its tests
$PIP install -q --no-deps -e ros_nodes
"$VENV/bin/python" -c "import mujoco, sys; assert mujoco.__version__ == '3.3.0', mujoco.__version__"
touch "$VENV/.setup-done"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, mujoco; print("torch", torch.__version__, "mujoco", mujoco.__version__)')"
