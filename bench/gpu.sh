#!/usr/bin/env bash
# bench/gpu.sh: the service's GPU figures on a lent NVIDIA machine, or their rehearsal on a CPU.
#
#   bash bench/gpu.sh --out DIR [--wheels /tmp/vit-wheels]    on the GPU machine
#   bash bench/gpu.sh --rehearse --out DIR                     anywhere (make test runs it)
#   options: --steps install,machine,…  --work DIR (kept)  --deadline-s S (default 560; rehearsal 900)
#
# Steps (bench/gpu_steps.py, one function each): install, machine, export, parity (1), engine (2),
# decode (3), http (4); docs/benchmarks.md, "GPU results", says what each measures. Each runs under
# a time limit; a failed step is recorded (which, and its output's tail) and the next one runs.
# DIR gets report.md (the machine, every table, a summary of which steps passed, every error),
# results.json (each step's raw figures) and gpu.log (everything the steps printed): three files,
# inside the eight a device call brings back. Exit status 0 only when every step passed.
#
# The GPU machine has CUDA PyTorch, a CPU-only onnxruntime and no network, and a device call
# carries 64 MiB with the repository; the wheels it lacks (onnxruntime-gpu, nvImageCodec, the
# serving packages) travel in batches over back-to-back calls. Here first:
#
#   make gpu-wheels        # downloads, re-compresses, cuts: .whl/batch-1 … batch-N; prints the calls
#
# then the device calls, each within 30 s of the last one's answer (the machine goes back after
# 30 s idle, and /tmp with it). For N batches (6 when this was written; `make gpu-wheels` prints
# the exact list):
#
#   calls 1 … N-1:  command: python3 bench/gpu_wheels.py receive .whl/batch-K
#                   carry:   [".whl/batch-K"]                               timeout_s: 120
#   call N:         command: python3 bench/gpu_wheels.py receive .whl/batch-N --require-all
#                            && bash bench/gpu.sh --wheels /tmp/vit-wheels --out $OUT
#                   carry:   [".whl/batch-N"]                               timeout_s: 600
#
# `receive` says which batches are there and which are still to come (with --require-all the last
# call ends there, naming them, when one is missing); the install step joins the pieces and checks
# every sha256. The whole run keeps within --deadline-s (560 s), skipping what no longer fits, so
# the report always comes back inside the call's 600 s. A session has 15 minutes of device time,
# the machine's start and every call included: make the calls one right after another.
set -u

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }

REHEARSE=0 OUT="" WORK="" WHEELS=/tmp/vit-wheels DEADLINE="" KEEP=0
STEPS="install machine export parity engine decode http"
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --out) OUT=${2:-}; shift ;;
    --out=*) OUT=${1#*=} ;;
    --work) WORK=${2:-}; KEEP=1; shift ;;
    --wheels) WHEELS=${2:-}; shift ;;
    --steps) STEPS=$(echo "${2:-}" | tr ',' ' '); shift ;;
    --deadline-s) DEADLINE=${2:-}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[ -n "$OUT" ] || { echo "gpu.sh: --out DIR is required" >&2; usage >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
if [ -z "${PYTHON:-}" ]; then  # the GPU machine's python3 is the one with CUDA PyTorch
  if [ $REHEARSE = 1 ] && [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python
  else PYTHON=python3; fi
fi
if [ -z "$WORK" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/vit-gpu.XXXXXX") || exit 2; fi
mkdir -p "$WORK/logs" "$WORK/errors" "$WORK/raw" && WORK=$(cd "$WORK" && pwd) || exit 2
: >"$WORK/status.tsv"
[ $KEEP = 1 ] || trap 'rm -rf "$WORK"' EXIT
[ -n "$DEADLINE" ] || { [ $REHEARSE = 1 ] && DEADLINE=900 || DEADLINE=560; }
FLAGS=(--work "$WORK" --wheels "$WHEELS")
[ $REHEARSE = 1 ] && FLAGS+=(--rehearse)
LOG=$OUT/gpu.log
: >"$LOG"
export PYTHONUNBUFFERED=1
START=$(date +%s)
declare -A LIMIT=([install]=240 [machine]=60 [export]=300 [parity]=180 [engine]=240
                  [decode]=120 [http]=300)

say() { echo "$*" | tee -a "$LOG"; }

record() {  # step, status, seconds, error text
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$WORK/status.tsv"
  [ -z "$4" ] || printf '%s\n' "$4" >"$WORK/errors/$1.txt"
}

report() { "$PYTHON" bench/gpu_steps.py report --out "$OUT" "${FLAGS[@]}" >>"$LOG" 2>&1; }

run_step() {  # one step under its time limit (less when the deadline is near); never exits
  local name=$1 left limit t0 rc why
  left=$((DEADLINE - ($(date +%s) - START)))
  limit=${LIMIT[$name]}
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 20 ]; then
    say "== $name: skipped, ${left} s of the ${DEADLINE} s deadline left"
    record "$name" "skipped (out of time)" 0 "skipped: ${left} s of the ${DEADLINE} s deadline left"
    report
    return
  fi
  say "== $name (at most ${limit} s; $(date +%H:%M:%S))"
  t0=$(date +%s)
  timeout --kill-after=15 "$limit" "$PYTHON" bench/gpu_steps.py "$name" "${FLAGS[@]}" 2>&1 \
    | tee "$WORK/logs/$name.log" >>"$LOG"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    record "$name" passed $(($(date +%s) - t0)) ""
  else
    why="exit $rc"
    [ "$rc" -eq 124 ] && why="timed out after ${limit} s"
    record "$name" "failed ($why)" $(($(date +%s) - t0)) "$(tail -n 40 "$WORK/logs/$name.log")"
  fi
  say "   $name: $(tail -n 1 "$WORK/status.tsv" | cut -f2) in $(($(date +%s) - t0)) s"
  report
}

# One function per step; install also puts what it installed first for the steps after it.
step_install() {
  run_step install
  # shellcheck disable=SC1091
  [ -f "$WORK/env.sh" ] && . "$WORK/env.sh"
}
step_machine() { run_step machine; }
step_export() { run_step export; }
step_parity() { run_step parity; }
step_engine() { run_step engine; }
step_decode() { run_step decode; }
step_http() { run_step http; }

command -v "$PYTHON" >/dev/null || { echo "gpu.sh: no $PYTHON" >&2; exit 2; }
say "gpu.sh: $([ $REHEARSE = 1 ] && echo rehearsal on the CPU || echo GPU run); python $PYTHON;" \
  "work $WORK; report in $OUT; deadline ${DEADLINE} s"
for step in install machine export parity engine decode http; do
  case " $STEPS " in *" $step "*) "step_$step" ;; esac
done
report

echo
sed -n '/^## Summary/,/^## [^S]/p' "$OUT/report.md" | sed '$d'
echo "report: $OUT/report.md ($(($(date +%s) - START)) s)"
failed=$(cut -f2 "$WORK/status.tsv" | grep -vc '^passed$')
[ "$failed" -eq 0 ]
