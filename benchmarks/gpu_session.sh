#!/usr/bin/env bash
# Everything GPU-side in one command, for one short lease of a GPU machine (PERF.md, "Using the GPU
# machine"). Run from the repository root on the GPU machine:
#
#     bash benchmarks/gpu_session.sh            # results under $OUT (or benchmarks/results/gpu)
#
# The machine has torch, Triton, timm, pytest and scipy but no package registry: wheels of what it
# lacks (nibabel, MONAI, fvcore, iopath, yacs, termcolor; pure Python) are installed from .whl/ when
# that folder exists (see PERF.md for the `pip download` line). Each step has its own time limit, so
# a slow step costs its own numbers only; every step writes its results as it goes.
#   1. the card, driver, torch and Triton versions;
#   2. benchmarks/gpu_spectral.py: Triton ops vs eager vs torch.compile, float64 checks, opcheck;
#   2b. benchmarks/gpu_depthwise.py: the depthwise op vs cuDNN/ATen, float64 checks, model steps stock vs Triton;
#   3. pytest benchmarks/ at the PERF.md sizes (eager, bf16 autocast, no checkpointing rows) for
#      seven models and MONAI's two nets;
#   4. the same for desamba_spine at paper scale (last: the largest model, the likeliest to run out).
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"

# Budgets (seconds; each script starts no new work past its budget, timeout is the hard stop): ~11 min in all.
SPECTRAL_BUDGET_S=${SPECTRAL_BUDGET_S:-120}
timeout $((SPECTRAL_BUDGET_S + 60)) python3 benchmarks/gpu_spectral.py --out "$OUT" --budget-s "$SPECTRAL_BUDGET_S"
echo "gpu_spectral exit status: $?"

DEPTHWISE_BUDGET_S=${DEPTHWISE_BUDGET_S:-240}
timeout $((DEPTHWISE_BUDGET_S + 90)) python3 benchmarks/gpu_depthwise.py --out "$OUT" --budget-s "$DEPTHWISE_BUDGET_S"
echo "gpu_depthwise exit status: $?"

MODELS=${MODELS:-densenet121_3d,resnet50_3d,convnextv2_atto_3d,mambaout_femto_3d,swinv2_tiny_3d,vit_small_patch16_3d,desamba_spine_tiny}
timeout "${MODELS_TIMEOUT_S:-120}" python3 -m pytest benchmarks/test_bench_throughput.py benchmarks/test_bench_monai.py -q \
    -p no:cacheprovider --bench-full --bench-backends eager -k "not ckpt" --bench-models "$MODELS" --bench-results "$OUT/models" 2>&1 | tail -n 25
timeout "${PAPER_TIMEOUT_S:-50}" python3 -m pytest benchmarks/test_bench_throughput.py -q -p no:cacheprovider \
    --bench-full --bench-backends eager --bench-models desamba_spine --bench-results "$OUT/paper" 2>&1 | tail -n 8
ls -R "$OUT"
