#!/usr/bin/env bash
# The GPU check of the real recipe's shapes: on a CUDA machine, a few minutes of every stage at
# GPT-2-124M shapes (the offline stand-in, embedded data), PPO at the real recipe's 64 episodes per update.
# Prints JSON lines (benchmarks/bench_scale.py's): seconds per step, peak RSS and peak GPU memory
# per stage, bf16 use (TRL stages) and saved dtype, PPO episodes/s and generation tokens/s.
#
#   bash benchmarks/gpu_check.sh [WORK_DIR]          # from the repository root, package installed
#
# Tests never need a GPU; this script is run by hand when one is at hand, and its output goes
# into docs/ (docs/SCALE.md) with the machine's name.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/gpu_check}
PY=${PYTHON:-python}
"$PY" - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible (torch %s); run benchmarks/bench_scale.py for the CPU figures" % torch.__version__)
p = torch.cuda.get_device_properties(0)
print('{"device": "%s", "memory_gb": %.1f, "bf16": %s, "torch": "%s"}'
      % (p.name, p.total_memory / 2**30, str(torch.cuda.is_bf16_supported()).lower(), torch.__version__))
PY
# 1. Every stage, short: 20 SFT/RM steps of batch 8, 4 PPO updates of 64 episodes, 64 eval prompts.
"$PY" benchmarks/bench_scale.py --work "$WORK/short" --steps 20 --batch-size 8 --ppo-updates 4 \
  --ppo-batch 64 --eval-prompts 64 --threads 4
