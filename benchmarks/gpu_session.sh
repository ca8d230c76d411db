#!/usr/bin/env bash
# Everything GPU-side, for one short lease of a GPU machine (PERF.md, "Using a GPU machine"), in two
# calls that each stay under the lease's 10-minute command limit. From the repository root:
#
#     bash benchmarks/gpu_session.sh 1   # ~8 min: depthwise op + models stock vs Triton, spectral ops
#     bash benchmarks/gpu_session.sh 2   # ~7 min: compiled vs eager models, desamba_spine at paper scale,
#                                        #         the eager model table beside MONAI
#
# Results go under $OUT (or benchmarks/results/gpu). The machine has torch, Triton, timm, pytest and
# scipy but no package registry: wheels of what it lacks (nibabel, MONAI, fvcore, iopath, yacs, termcolor;
# pure Python) are installed from .whl/ when that folder exists. Every step has its own budget (the
# scripts start no new work past --budget-s and write their JSON as they go; the pytest steps get
# SIGINT at their limit and still write the rows they have), so a slow step costs its own numbers only.
#
# Part 1: card and versions; gpu_depthwise.py (checks, atto stage shapes, atto/femto/samnet/desamba
# train steps stock vs Triton, desamba_spine at paper scale); gpu_spectral.py (checks incl. the
# backward's ticket finish and CUDA-graph replay, op rows by wall/device/CUDA-graph/host time, SAMB).
# Part 2: test_bench_compile.py (eager vs compiled, with graph/break/recompile counts) for the tiny
# models and desamba_spine; the eager model table at the PERF.md sizes beside MONAI.
set -u
PART=${1:-1}
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"

bench() {  # bench TIMEOUT_S ARGS...: one pytest benchmark step, SIGINT at its limit
    local limit=$1
    shift
    timeout -s INT -k 20 "$limit" python3 -m pytest -q -p no:cacheprovider --bench-full "$@" 2>&1 | tail -n 10
}

case "$PART" in
1)
    DEPTHWISE_BUDGET_S=${DEPTHWISE_BUDGET_S:-240}
    timeout $((DEPTHWISE_BUDGET_S + 60)) python3 benchmarks/gpu_depthwise.py --out "$OUT" --budget-s "$DEPTHWISE_BUDGET_S"
    echo "gpu_depthwise exit status: $?"
    SPECTRAL_BUDGET_S=${SPECTRAL_BUDGET_S:-150}
    timeout $((SPECTRAL_BUDGET_S + 60)) python3 benchmarks/gpu_spectral.py --out "$OUT" --budget-s "$SPECTRAL_BUDGET_S"
    echo "gpu_spectral exit status: $?"
    ;;
2)
    bench "${COMPILE_TIMEOUT_S:-180}" benchmarks/test_bench_compile.py --bench-backends eager,compile \
        --bench-models "desamba_spine_tiny,convnextv2_atto_3d,samnet_tiny" --bench-results "$OUT/compile"
    bench "${PAPER_COMPILE_TIMEOUT_S:-150}" benchmarks/test_bench_compile.py --bench-backends eager,compile \
        --bench-models desamba_spine --bench-results "$OUT/paper_compile"
    MODELS=${MODELS:-densenet121_3d,resnet50_3d,convnextv2_atto_3d,mambaout_femto_3d,swinv2_tiny_3d,vit_small_patch16_3d,desamba_spine_tiny}
    bench "${MODELS_TIMEOUT_S:-100}" benchmarks/test_bench_throughput.py benchmarks/test_bench_monai.py \
        --bench-backends eager -k "not ckpt" --bench-models "$MODELS" --bench-results "$OUT/models"
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh 1|2" >&2
    exit 2
    ;;
esac
ls -R "$OUT"
