#!/usr/bin/env bash
# One GPU check for an H100/H200, at most about 8 minutes, each stage under its own time limit:
#   1. the GPU-marked tests (bf16 Triton kernels, CUDA-only paths);
#   2. the sliding-window kernel against FlexAttention (torch.compile'd, same mask): useful TFLOP/s;
#   3. the reader at 256k and 1M tokens (first answer, further questions, peak GPU memory).
# Writes JSON + markdown under $OUT (default results/gpu_check) with the device name and date;
# a stage that fails or runs out of time is recorded in status.json and the next one still runs.
#
#   bash eval/gpu_check.sh                 # OUT=results/gpu_check
#   DRY_RUN=1 bash eval/gpu_check.sh       # print the stages' commands, run nothing
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_check}
PY=${PYTHON:-python}

TESTS=(-m pytest -q -m gpu tests/test_sliding_window_attention.py tests/test_cross_attention.py -x)
KERNEL=(-m longread.kernels.sliding_window.benchmark --device cuda --seqlens 16k,128k,1M --windows 128
        --head-dims 32,64 --globals 0,64 --systems triton,flex,sdpa --dtype bf16 --repeats 10 --budget 1
        --out "$OUT/kernel_bench_gpu.json" --no-progress)
READER=(eval/bench_reader.py --device cuda --lengths 262144,1048576 --questions 3 --systems longread
        --out "$OUT/bench_reader_gpu.json")

if [ -n "${DRY_RUN:-}" ]; then
    printf '%s\n' "$PY ${TESTS[*]}" "$PY ${KERNEL[*]}" "$PY ${READER[*]}"
    exit 0
fi

mkdir -p "$OUT"
$PY - <<'EOF' > "$OUT/device.json" || { echo "no CUDA device: this script is for a GPU machine" >&2; exit 1; }
import json, time, torch
assert torch.cuda.is_available()
print(json.dumps({"device": torch.cuda.get_device_name(), "capability": torch.cuda.get_device_capability(),
                  "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}))
EOF
$PY -c "import longread" 2>/dev/null || $PY -m pip install -q -e . || exit 1

status=()
stage() {            # stage NAME SECONDS COMMAND...: run, log, record the exit status
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.log"
    status+=("\"$name\": {\"rc\": $rc, \"seconds\": $((SECONDS - t0)), \"limit\": $limit}")
}
stage gpu_tests 150 $PY "${TESTS[@]}"
stage kernel_bench 150 $PY "${KERNEL[@]}"
stage reader_bench 170 $PY "${READER[@]}"
(IFS=,; echo "{${status[*]}}") > "$OUT/status.json"
cat "$OUT/device.json" "$OUT/status.json"
