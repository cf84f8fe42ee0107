#!/usr/bin/env bash
# `make gpu`: on a machine with a CUDA GPU and its own torch (>= 2.11, CUDA build), build the extension for that
# GPU, run the tests on it, run compute-sanitizer over every CUDA kernel, and benchmark: one command, no pip, no
# network, within GPU_DEADLINE_S (below). Every stage is logged with its duration in one folder and
# summed up in its summary.md, which is rewritten after each stage (a run cut short still leaves one).
#
#   bash bench/gpu_run.sh                     # results in bench/results/gpu-<date>/
#   GPU_RESULTS=/some/dir bash bench/gpu_run.sh
#
# Stages: env (versions; requires torch >= 2.11 with CUDA); without a GPU, collect (build-free: the tests and the
# BENCH=gpu matrix collect; prints the case count) and a stop (status 0). With a GPU: build (setup.py build_ext
# --inplace for this GPU's architecture; checks that the extension's nine ops have CUDA kernels), tests (pytest -n 8
# with IMPLS_GPU_RUN=1: tests of peers that are not installed skip, tests/optional_deps.py), tour (every CUDA kernel on
# tiny and edge-case inputs, checked against vectorized: bench/cuda_kernel_tour.py), memcheck and racecheck
# (compute-sanitizer over that tour), bench (BENCH=gpu pytest-benchmark, then bench/report.py).
#
# Settings (environment):
#   PYTHON          the interpreter, default python3 (the machine's own torch; not .venv)
#   GPU_RESULTS     results folder, default bench/results/gpu-<date>
#   GPU_ARCH        build for this architecture (e.g. 9.0) instead of asking the GPU; without a GPU the build
#                   then runs too (a compile check), and the run stops after it
#   GPU_MAX_JOBS    parallel compile jobs, default nproc
#   GPU_STAGES      the GPU stages to run, default "build tests tour memcheck racecheck bench"
#   GPU_DEADLINE_S  the whole run's budget in seconds (default 480): each stage's timeout is cut to what is left,
#                   and a stage with under 20 s left is skipped
#   GPU_TIMEOUT_<STAGE>  one stage's own cap in seconds (CAP below), e.g. GPU_TIMEOUT_BUILD=900
#   GPU_TESTS_ARGS  pytest arguments for the tests, default "-k 'not compiled-cpu'": the compiled backend's
#                   CPU cases (Inductor C++ compiles, minutes from a cold cache) run in CI, its cuda ones here;
#                   GPU_TESTS_ARGS="" runs everything. GPU_BENCH_ARGS: for the benchmarks, e.g. "-k 'p2 and not
#                   compiled'" (both are split as the shell splits words, quotes kept); GPU_BENCH_PATHS: the
#                   benchmark files in the order they run (default bench: all, alphabetically)
#   GPU_INITCHECK=1 also run compute-sanitizer --tool initcheck (uninitialized device memory reads)
#   GPU_IGNORE_NO_GPU=1  run the GPU stages even where torch sees no GPU: only to test this script's own flow
#                   (the stages then fail or skip)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
R=${GPU_RESULTS:-bench/results/gpu-$(date +%Y-%m-%d)}
mkdir -p "$R"
R=$(cd "$R" && pwd)
STAGES=${GPU_STAGES:-build tests tour memcheck racecheck bench}
DEADLINE=$(( $(date +%s) + ${GPU_DEADLINE_S:-480} ))
JOBS=${GPU_MAX_JOBS:-$(nproc)}
# Per-stage caps in seconds (cut to the deadline): a hung stage cannot eat the others' time.
declare -A CAP=([env]=90 [collect]=120 [build]=300 [tests]=240 [tour]=90 [memcheck]=150 [racecheck]=120
                [initcheck]=150 [bench]=300 [report]=90)
# Seconds kept back from a stage for the ones that must follow it: the report of a benchmark run cut short.
declare -A RESERVE=([bench]=30)
export IMPLS_GPU_RUN=1 PYTHONDONTWRITEBYTECODE=1
FAILED=0

: > "$R/stages.tsv"
echo "results: $R"

summary() { "$PY" bench/gpu_summary.py "$R" || echo "(summary.md not written)"; }

# record NAME STATUS SECONDS NOTE: one line of stages.tsv, then summary.md again.
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$R/stages.tsv"
  echo "== $1: $2 (${3} s) $4"
  [[ $2 == fail ]] && FAILED=1
  summary > /dev/null
}

# stage NAME COMMAND...: runs COMMAND (a shell function below) with its output in NAME.log and on the console,
# under the stage's timeout; its status is pass (0), fail, or what the function wrote to $R/NAME.status
# (skip, refused...), with the note from $R/NAME.note.
stage() {
  local name=$1; shift
  local left=$(( DEADLINE - $(date +%s) - ${RESERVE[$name]:-0} )) cap_var="GPU_TIMEOUT_${name^^}"
  local cap=${!cap_var:-${CAP[$name]:-300}}
  local limit=$(( left < cap ? left : cap ))
  if (( limit < 20 )); then
    record "$name" skip 0 "no time left (GPU_DEADLINE_S)"
    return 0
  fi
  echo "== $name (timeout ${limit} s)"
  rm -f "$R/$name.status" "$R/$name.note"
  export STAGE_TIMEOUT=$limit
  local start rc
  start=$(date +%s%N)
  set +e
  "$@" 2>&1 | tee "$R/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  local seconds status note
  seconds=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  note=$(cat "$R/$name.note" 2>/dev/null || true)
  if [[ -f $R/$name.status ]]; then
    status=$(cat "$R/$name.status")
  elif (( rc == 0 )); then
    status=pass
  elif (( rc == 124 || rc == 130 || rc == 137 )); then
    status=fail; note="timed out after ${limit} s. $note"
  else
    status=fail; note="exit status $rc. $note"
  fi
  if [[ $status == fail && -z $(cat "$R/$name.note" 2>/dev/null) ]]; then  # the log's last words say why
    note="$note$(grep -v '^\s*$' "$R/$name.log" | tail -n 1 | cut -c1-300)"
  fi
  record "$name" "$status" "$seconds" "$note"
}

# Runs a command under the current stage's timeout; SIGINT first, so that pytest still writes its reports.
limited() { timeout -s INT -k 20 "$STAGE_TIMEOUT" "$@"; }

# ------------------------------------------------------------------------------------------------------ stages

env_stage() {
  if git rev-parse --short HEAD > /dev/null 2>&1; then
    echo "source: commit $(git rev-parse --short HEAD), $(git status --short | wc -l) paths changed"
  else
    echo "source: not a git checkout"
  fi
  for tool in nvidia-smi "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" compute-sanitizer ninja; do
    if command -v "$tool" > /dev/null; then
      echo "--- $tool"
      case $tool in
        nvidia-smi) nvidia-smi || true ;;
        ninja) echo "ninja $(ninja --version)" ;;
        *) "$tool" --version | tail -n 3 || true ;;
      esac
    else
      echo "--- $tool: not found"
    fi
  done
  "$PY" - <<'EOF'
import importlib.metadata, importlib.util, os, platform, sys
print(f"python {sys.version.split()[0]} ({sys.executable}), {platform.platform()}, {os.cpu_count()} CPUs")
def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
for dist in ("torch", "torchvision", "numpy", "pytest", "pytest-xdist", "pytest-benchmark", "matplotlib", "ninja",
             "expecttest", "tensorflow", "tensorflow-cpu", "nbformat", "nbclient", "ipykernel"):
    print(f"  {dist}: {version(dist) or 'not installed'}")
try:
    import torch
except ImportError as e:
    sys.exit(f"torch is not importable with {sys.executable} ({e}): make gpu needs the machine's own torch "
             "(PYTHON=... picks another interpreter)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}, "
      f"threads {torch.get_num_threads()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {torch.cuda.get_device_name(0)}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, "
          f"{p.multi_processor_count} SMs, memory clock {getattr(p, 'memory_clock_rate', '?')} kHz, "
          f"bus {getattr(p, 'memory_bus_width', '?')} bits")
major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
if (major, minor) < (2, 11) or torch.version.cuda is None:
    sys.exit(f"make gpu requires torch >= 2.11 built with CUDA; this is {torch.__version__} "
             f"(CUDA {torch.version.cuda})")
EOF
}

collect_stage() {
  # The tests as this mode collects them (missing peers skip), and the benchmark matrix counted as on a GPU.
  limited "$PY" -m pytest tests --collect-only -q -p no:cacheprovider | tail -n 5
  (( PIPESTATUS[0] == 0 )) || return 1
  local count
  count=$(BENCH=gpu BENCH_ASSUME_GPU=1 limited "$PY" -m pytest bench --collect-only -q -p no:cacheprovider \
          | grep -c '::' || true)
  echo "BENCH=gpu: $count benchmark cases"
  echo "BENCH=gpu: $count benchmark cases" > "$R/collect.note"
  [[ $count -gt 0 ]]
}

build_stage() {
  local arch=${GPU_ARCH:-}
  if [[ -z $arch ]]; then
    arch=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  fi
  echo "building for TORCH_CUDA_ARCH_LIST=$arch with MAX_JOBS=$JOBS"
  echo "arch $arch, $JOBS jobs" > "$R/build.note"
  CUDA_HOME=${GPU_CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$JOBS \
    limited "$PY" setup.py build_ext --inplace || return 1
  "$PY" - <<'EOF'
import sys
import torch
import impls
from impls.core import operators
# The extension's operators, one per schema the operators' specs define (impls:: also holds Python custom
# operators, which have no device kernels).
registered = set(torch._C._dispatch_get_all_op_names())
names = operators.SCHEMAS
ops = sorted(f"impls::{name}" for name in names if f"impls::{name}" in registered)
if len(ops) != len(names):
    sys.exit(f"the extension registered {len(ops)} of its {len(names)} impls:: operators")
missing = [n for n in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")]
print(f"impls:: operators: {', '.join(ops)}; CUDA kernels: {len(ops) - len(missing)}/{len(ops)}")
if "impls::roi_align_forward" in ops:
    print("impls::roi_align_forward has a CUDA kernel:",
          torch._C._dispatch_has_kernel_for_dispatch_key("impls::roi_align_forward", "CUDA"))
if missing:
    sys.exit(f"no CUDA kernel for {', '.join(missing)}")
row = {r["name"]: r for r in impls.backends()}["cuda"]
print(f"cuda backend available: {row['available']} ({row['reason']})")
if torch.cuda.is_available() and not row["available"]:
    sys.exit("the cuda backend is unavailable on a GPU machine after the build")
EOF
}

tests_stage() {
  local parallel=()
  if "$PY" -c "import xdist" 2> /dev/null; then parallel=(-n 8); fi
  # 8 workers x 2 threads on 16 cores, instead of 8 x 16.
  local selection=(-k "not compiled-cpu")
  if [[ -n ${GPU_TESTS_ARGS+x} ]]; then eval "selection=($GPU_TESTS_ARGS)"; fi
  OMP_NUM_THREADS=2 limited "$PY" -m pytest tests "${parallel[@]}" -q -rs -p no:cacheprovider --durations=15 \
    --junitxml="$R/tests.xml" "${selection[@]}"
}

# sanitizer TOOL [TOUR ARGS...]: compute-sanitizer --tool TOOL over the kernel tour; a missing tool or a refused
# device is recorded (status "skip"/"refused"), not a failure.
sanitizer() {
  local tool=$1 name=$1; shift
  local cs
  cs=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
  if [[ ! -x $cs ]]; then
    echo "compute-sanitizer not found"
    echo skip > "$R/$name.status"
    echo "compute-sanitizer not found" > "$R/$name.note"
    return 0
  fi
  local extra=()
  [[ $tool == racecheck ]] && extra=(--racecheck-report all)
  # Without the caching allocator every tensor is its own allocation, so memcheck sees an overrun past it.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 limited "$cs" --tool "$tool" "${extra[@]}" --error-exitcode 1 \
    --log-file "$R/$name.log.sanitizer" "$PY" bench/cuda_kernel_tour.py "$@"
  local rc=$?
  cat "$R/$name.log.sanitizer" 2> /dev/null | tail -n 40
  if grep -qiE "device not supported|not supported on this|unsupported device|no supported device" \
      "$R/$name.log.sanitizer" 2> /dev/null; then
    echo refused > "$R/$name.status"
    grep -iE -m1 "not supported|unsupported" "$R/$name.log.sanitizer" > "$R/$name.note" || true
    return 0
  fi
  # memcheck/initcheck: "ERROR SUMMARY: N errors"; racecheck: "RACECHECK SUMMARY: N hazards displayed (...)".
  grep -m1 -E "ERROR SUMMARY|RACECHECK SUMMARY" "$R/$name.log.sanitizer" > "$R/$name.note" 2> /dev/null || true
  return $rc
}

tour_stage() { limited "$PY" bench/cuda_kernel_tour.py; }
# The values were checked by the tour stage: under the sanitizers only our kernels need to run.
memcheck_stage() { sanitizer memcheck --no-compare; }
racecheck_stage() { sanitizer racecheck --boxes-only --no-compare; }
initcheck_stage() { sanitizer initcheck --no-compare; }

bench_stage() {
  local count paths=() selection=()
  read -r -a paths <<< "${GPU_BENCH_PATHS:-bench}"
  eval "selection=(${GPU_BENCH_ARGS:-})"
  count=$(BENCH=gpu "$PY" -m pytest "${paths[@]}" --collect-only -q -p no:cacheprovider "${selection[@]}" \
          | grep -c '::' || true)
  echo "BENCH=gpu: $count cases; at ~0.15-0.3 s each (inputs, check against a peer, peak memory, <= 0.3 s of" \
       "rounds) about $(( count * 15 / 100 ))-$(( count * 3 / 10 )) s; timeout ${STAGE_TIMEOUT} s"
  echo "$count cases" > "$R/bench.note"
  BENCH=gpu limited "$PY" -m pytest "${paths[@]}" -q -p no:cacheprovider --benchmark-json="$R/bench-gpu.json" \
    --benchmark-group-by=param:op,param:case,param:pass_ --benchmark-columns=median,iqr,min,rounds \
    "${selection[@]}"
  local rc=$?
  if (( rc == 124 )) && [[ -s $R/bench-gpu.json ]]; then  # cut by the deadline: pytest-benchmark still saved
    local timed
    timed=$("$PY" -c "import json, sys; print(len(json.load(open(sys.argv[1]))['benchmarks']))" "$R/bench-gpu.json")
    echo partial > "$R/bench.status"
    echo "cut after ${STAGE_TIMEOUT} s: $timed of $count cases timed (GPU_DEADLINE_S, GPU_BENCH_ARGS=-k ...)" \
      > "$R/bench.note"
    return 0
  fi
  return $rc
}

report_stage() {
  if [[ ! -s $R/bench-gpu.json ]]; then
    echo "no benchmark JSON"; echo skip > "$R/report.status"; echo "no bench-gpu.json" > "$R/report.note"
    return 0
  fi
  # The README section lands in a file of its own (between the markers report.py looks for), not in README.md.
  printf '<!-- bench-table:start -->\n<!-- bench-table:end -->\n' > "$R/readme_section.md"
  limited "$PY" bench/report.py "$R/bench-gpu.json" --out-dir "$R" --readme "$R/readme_section.md"
}

# ------------------------------------------------------------------------------------------------------- run

stage env env_stage
if [[ $(tail -n 1 "$R/stages.tsv" | cut -f2) != pass ]]; then
  echo "stopping: the environment does not meet make gpu's requirements (see $R/env.log)"
  exit 1
fi

if [[ $("$PY" -c "import torch; print(torch.cuda.is_available())") != True && ${GPU_IGNORE_NO_GPU:-0} != 1 ]]; then
  stage collect collect_stage  # on a GPU machine the tests and bench stages collect the same, so only here
  if [[ -n ${GPU_ARCH:-} && " $STAGES " == *" build "* ]]; then
    stage build build_stage
  fi
  echo "no CUDA GPU here: stopping before the GPU stages"
  record gpu skip 0 "no CUDA GPU here: stopped before the GPU stages"
  exit $FAILED
fi

for name in $STAGES; do
  if [[ $name == build ]] || [[ " $STAGES " != *" build "* ]] || grep -q $'^build\tpass' "$R/stages.tsv"; then
    stage "$name" "${name}_stage"
  else
    record "$name" skip 0 "the build failed"
  fi
  if [[ $name == memcheck && ${GPU_INITCHECK:-0} == 1 ]]; then stage initcheck initcheck_stage; fi
  if [[ $name == bench ]]; then stage report report_stage; fi
done
echo "summary: $R/summary.md"
exit $FAILED
