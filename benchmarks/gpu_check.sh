#!/usr/bin/env bash
# The GPU checks of the CUDA driver in one run (docs/benchmarks.md, "On a GPU"): the CUDA tests, then the
# GPU benchmarks, under one time cap, everything written to $OUT.
#
# On a machine with network, in the repository root, first:
#     benchmarks/gpu_check.sh wheels
# downloads into .whl/ (ignored by git) the wheels of what llmos needs that a GPU image with PyTorch
# usually lacks (Python 3.12, x86-64). Then on the GPU machine, with .whl/ carried along:
#     bash benchmarks/gpu_check.sh [CAP_SECONDS]      # default 480
# installs them and llmos into /tmp/site and runs, while time is left of CAP_SECONDS, each step under
# what is left (a step that runs out is killed; the next ones are skipped):
#   1. the CUDA tests (tests/drivers/test_cuda.py, with test_graphs.py and test_ledger.py), JUnit XML with
#      the measured bf16 agreement in $OUT/cuda-tests.xml;
#   2. the device-to-device copy bandwidth (bytes read and written per second), the roofline's peak;
#   3. `llmos bench generate --device cuda0 --json` on tinygpt d128 (graphs off, then on), on a 150M
#      tinygpt (d 1024, 12 layers; float32 and bfloat16 with graphs; 1, 8, 32, 128 processes), and
#      `llmos bench hf --device cuda0`, one JSON line each in $OUT/bench.jsonl;
#   4. with the time left, the whole suite once ($OUT/suite.txt).
# $OUT/gpu_check.log has all of the output. At most 8 files come back from $OUT: these are 5.
set -u

WHEELS="msgspec==0.23.0 pyzmq==27.3.0 structlog==26.1.0 cryptography==51.0.1 cffi==2.1.1 pycparser==3.12
        starlette==1.10.0 uvicorn==0.55.0 setuptools==84.2.1"  # (setuptools: to build llmos there)

if [ "${1:-}" = "wheels" ]; then
    exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl $WHEELS
fi

CAP=${1:-480}
OUT=${OUT:-out/gpu-check}
mkdir -p "$OUT"
END=$((SECONDS + CAP))
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1

left() { echo $((END - SECONDS)); }

# step NAME MIN_SECONDS COMMAND...: run COMMAND under the time left, if at least MIN_SECONDS are
step() {
    local name=$1 min=$2
    shift 2
    if [ "$(left)" -lt "$min" ]; then
        echo "== $name: skipped, $(left) s left of $CAP (needs about $min)" >&2
        return 1
    fi
    echo "== $name ($(left) s left)" >&2
    timeout "$(left)" "$@"
    local rc=$?
    echo "== $name: exit $rc" >&2
    return $rc
}

# bench NAME ARGS...: one `llmos bench` run; its JSON as one line {"name": NAME, "result": ...} of bench.jsonl
bench() {
    local name=$1
    shift
    local json
    if json=$(step "bench $name" 30 python3 -m llmos.userland.cli.main bench "$@" --json); then
        echo "{\"name\": \"$name\", \"args\": \"$*\", \"result\": $json}" >> "$OUT/bench.jsonl"
        echo "$json"
    fi
}

if ! ls .whl/*.whl > /dev/null 2>&1; then
    echo "no wheels in .whl/: run 'benchmarks/gpu_check.sh wheels' where there is network, and carry .whl along"
    exit 1
fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
python3 -m pip install -q --no-index --no-deps --no-compile --no-build-isolation --target /tmp/site . || exit 1
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

step "CUDA tests" 60 python3 -m pytest -q -p no:cacheprovider -o junit_family=xunit1 \
    --junitxml="$OUT/cuda-tests.xml" tests/drivers/test_cuda.py tests/drivers/test_graphs.py tests/drivers/test_ledger.py

PEAK=$(python3 - <<'EOF'
import torch

x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(10):
    y.copy_(x)
stop.record()
torch.cuda.synchronize()
print(round(2 * 10 * x.numel() / (start.elapsed_time(stop) / 1e3) / 1e9))
EOF
)
PEAK=${PEAK:-0}  # (0: the copy failed; the benchmarks then report no roofline_frac)
echo "device-to-device copy: $PEAK GB/s read and written"
echo "{\"name\": \"copy_bandwidth_gb_s\", \"result\": $PEAK}" >> "$OUT/bench.jsonl"

QUICK="--repeats 3 --pairs 3 --steps 4"
BIG="--d-model 1024 --layers 12 --heads 16 --repeats 2 --pairs 2 --steps 4 --peak-bw $PEAK"
bench d128-eager generate --device cuda0 $QUICK --peak-bw "$PEAK"
bench d128-graphs generate --device cuda0 $QUICK --peak-bw "$PEAK" --graphs
bench 150m-bf16-graphs-16procs generate --device cuda0 $BIG --dtype bfloat16 --graphs --procs 16
bench 150m-f32-graphs-16procs generate --device cuda0 $BIG --graphs --procs 16
bench 150m-bf16-graphs-1proc generate --device cuda0 $BIG --dtype bfloat16 --graphs --procs 1
bench 150m-bf16-graphs-32procs generate --device cuda0 $BIG --dtype bfloat16 --graphs --procs 32 --new 64
bench 150m-bf16-graphs-128procs generate --device cuda0 $BIG --dtype bfloat16 --graphs --procs 128 --new 64 --repeats 1 --pairs 1
bench hf hf --device cuda0 --repeats 2 --pairs 2

step "whole suite" 120 python3 -m pytest -q -p no:cacheprovider -n 8 > "$OUT/suite.txt" 2>&1
tail -3 "$OUT/suite.txt"
echo "== done, $(left) s left of $CAP"
