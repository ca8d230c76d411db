#!/usr/bin/env bash
# Everything GPU-side in one command, for one short lease of a GPU machine (PERF.md, "Using the GPU
# machine"). Run from the repository root on the GPU machine:
#
#     bash benchmarks/gpu_session.sh            # results under $OUT (or benchmarks/results/gpu)
#
# The machine has torch, Triton, timm, pytest and scipy but no package registry: wheels of what it
# lacks (nibabel, MONAI, fvcore, iopath, yacs, termcolor; pure Python) are installed from .whl/ when
# that folder exists (see PERF.md for the `pip download` line). Each step has its own time limit, so
# a slow step costs its own numbers only; gpu_spectral.py writes its JSON as it goes, and the pytest
# steps get SIGINT at their limit (pytest then still writes the rows it has).
#   1. the card, driver, torch and Triton versions;
#   2. benchmarks/gpu_spectral.py (SPECTRAL_BUDGET_S, default 270 s): checks (opcheck, the backward's
#      ticket finish, CUDA-graph replay, compiled op/SAMB), op rows (wall, device, CUDA-graph and host
#      time, % of the byte floor), SAMB/SAMBlock eager and compiled, then optional tiers;
#   3. pytest benchmarks/ at the PERF.md sizes (eager, bf16 autocast, no checkpointing rows) for
#      seven models and MONAI's two nets;
#   4. compiled vs eager, interleaved, with graph/break/recompile counts (COMPILE_TIMEOUT_S, default
#      240 s): desamba_spine_tiny, convnextv2_atto_3d, samnet_tiny at 96³ x 8 (test_bench_compile.py);
#   5. desamba_spine at paper scale, eager (PAPER_TIMEOUT_S), then compiled vs eager (PAPER_COMPILE_TIMEOUT_S):
#      last, the largest model, the likeliest to run out.
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

SPECTRAL_BUDGET_S=${SPECTRAL_BUDGET_S:-270}
timeout $((SPECTRAL_BUDGET_S + 60)) python3 benchmarks/gpu_spectral.py --out "$OUT" --budget-s "$SPECTRAL_BUDGET_S"
echo "gpu_spectral exit status: $?"

MODELS=${MODELS:-densenet121_3d,resnet50_3d,convnextv2_atto_3d,mambaout_femto_3d,swinv2_tiny_3d,vit_small_patch16_3d,desamba_spine_tiny}
timeout "${MODELS_TIMEOUT_S:-130}" python3 -m pytest benchmarks/test_bench_throughput.py benchmarks/test_bench_monai.py -q \
    -p no:cacheprovider --bench-full --bench-backends eager -k "not ckpt" --bench-models "$MODELS" --bench-results "$OUT/models" 2>&1 | tail -n 25
timeout -s INT -k 20 "${COMPILE_TIMEOUT_S:-240}" python3 -m pytest benchmarks/test_bench_compile.py -q -p no:cacheprovider \
    --bench-full --bench-backends eager,compile --bench-models "desamba_spine_tiny,convnextv2_atto_3d,samnet_tiny" \
    --bench-results "$OUT/compile" 2>&1 | tail -n 8
timeout -s INT -k 20 "${PAPER_TIMEOUT_S:-70}" python3 -m pytest benchmarks/test_bench_throughput.py -q -p no:cacheprovider \
    --bench-full --bench-backends eager --bench-models desamba_spine --bench-results "$OUT/paper" 2>&1 | tail -n 8
timeout -s INT -k 20 "${PAPER_COMPILE_TIMEOUT_S:-180}" python3 -m pytest benchmarks/test_bench_compile.py -q -p no:cacheprovider \
    --bench-full --bench-backends eager,compile --bench-models desamba_spine --bench-results "$OUT/paper_compile" \
    2>&1 | tail -n 8
ls -R "$OUT"
