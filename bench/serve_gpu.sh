#!/usr/bin/env bash
# The serving benchmark (bench/serve_bench.py) on a GPU machine, as one script:
#   bash bench/serve_gpu.sh [STEPS]            # -> bench/results/serve_gpu.{md,json}
# 1. set-up (scripts/setup.sh installs the CUDA build of vllm when nvidia-smi sees a GPU; it needs the
#    package registries, and the data set is fetched on first use);
# 2. one bundle per ID scheme (atomic, sequential, semantic) from the demo run config, STEPS optimizer steps
#    each (default 150; throughput does not depend on how far a bundle is trained); multi-token bundles get
#    block-aligned prompts (prompts.align: auto);
# 3. serve_bench: /v1/recommendations vs the equal-work baseline at 1 / 8 / 32 clients per scheme, batch
#    generation vs the KV-cached HF decoder, the 1k / 10k / 100k fan-out sweep. The report's machine line
#    names the card (torch.cuda.get_device_name).
# Bundles are reused when they exist (delete runs/serve-gpu-* to retrain).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-150}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || echo "[serve_gpu] no nvidia-smi: running on CPU"
[ -x .venv/bin/python ] || bash scripts/setup.sh
PY=.venv/bin/python
for scheme in atomic sequential semantic; do
    out="runs/serve-gpu-$scheme"
    [ -f "$out/bundle.json" ] && continue
    extra=()
    [ "$scheme" = atomic ] || extra=(--set model.collaborative.source=null)
    $PY -m generative_rec train --config train/configs/demo_cpu.yaml --overwrite --set "index.scheme=$scheme" \
        --set "train.max_steps=$STEPS" --set train.save_every=0 --set train.eval_users=16 --set "output=$out" \
        "${extra[@]}"
done
$PY bench/serve_bench.py --bundle runs/serve-gpu-atomic runs/serve-gpu-sequential runs/serve-gpu-semantic \
    --fanout 1000 10000 100000 --output bench/results/serve_gpu.md --work-dir runs/serve-gpu-work
