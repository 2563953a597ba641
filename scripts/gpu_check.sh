#!/usr/bin/env bash
# GPU check, one command on a machine with an NVIDIA GPU (about 5 minutes, at most 8):
#   1. the environment: torch's CUDA build, the GPU, bf16 support;
#   2. CUDA smoke searches (one short trial each, 1D and 2D CNNs) through the CLI;
#   3. the trainer's direct fused optimizer step, bit-identical to Optimizer.step on CUDA;
#   4. trials per minute with trials_per_device 1, 2 and 4 on GPU 0, with the GPU's mean
#      utilisation (nvidia-smi, sampled every 200 ms while trials run): benchmarks/parallel.py.
#
# usage: scripts/gpu_check.sh [--dry-run]
#   --dry-run   no GPU needed: the same steps on the CPU at toy sizes (checks the script runs)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's automodel

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
LIMIT=470  # seconds for step 3, so the whole check stays under 8 minutes
OUT=$(mktemp -d -t gpu-check.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

echo "== environment"
python - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, "
      f"cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, "
          f"bf16: {torch.cuda.is_bf16_supported()}, {torch.cuda.device_count()} visible")
EOF
if [[ $DRY == 0 ]]; then
    if ! command -v nvidia-smi >/dev/null; then
        echo "error: nvidia-smi not found; use --dry-run on a machine without a GPU" >&2
        exit 2
    fi
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "error: torch sees no CUDA device; use --dry-run on a machine without a GPU" >&2
        exit 2
    }
    nvidia-smi --query-gpu=name,driver_version,memory.total,utilization.gpu --format=csv
    DEVICES="devices=[0]"
    BENCH=(--gpu --workers 1,2,4 --repeats 1 --trials 60 --epochs 5)
else
    echo "(dry run: CPU, toy sizes)"
    DEVICES="devices=cpu"
    BENCH=(--workers 1,2 --repeats 1 --trials 4 --epochs 1)
fi

echo "== smoke searches (one short trial each: 1D CNN, and 2D CNN in channels-last)"
for DATA in mnist1d digits; do
    python -m automodel search data=$DATA search_space=cnn "$DEVICES" study.n_trials=1 \
        trainer.max_epochs=2 runs_dir="$OUT/runs" quiet=true
    python - "$OUT/runs/$DATA-cnn/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{s['study']}: val {s['val']}, test {s['test']}, {s['wall_seconds']} s")
EOF
done

echo "== the direct fused optimizer step against Optimizer.step, bit for bit (CPU and CUDA)"
if python -c "import pytest" 2>/dev/null; then
    python -m pytest -q -p no:cacheprovider tests/test_train.py -k fused_step
else
    echo "(pytest is not installed: skipped)"
fi

echo "== trials per minute (benchmarks/parallel.py ${BENCH[*]})"
timeout "$LIMIT" python benchmarks/parallel.py "${BENCH[@]}"
