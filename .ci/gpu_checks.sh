#!/usr/bin/env bash
# GPU checks for cossl_train: a prepared script for a CUDA machine (not run in CI, whose machines
# have no GPU). About 5-6 minutes on one H100, under 8:
#   1. env         nvidia-smi, torch/CUDA versions
#   2. bench       python -m benchmarks.train_throughput: ResNet-50, 224 px, batch 128, bf16, channels_last,
#                  synthetic data, all four methods (eager)
#   3. bench_compile  the same with --compile, byol and co_byol only (compiling four ResNet-50
#                  training graphs would take most of the time budget; the CO/base ratio is the
#                  number to compare with the eager one)
#   4. ddp         torchrun --nproc_per_node=<GPUs> -m cossl_train pretrain on the embedded digits
#                  (no download): a 3-epoch run killed after its first checkpoint, --resume to the end,
#                  then a kNN evaluation; checks
#                  the checkpoint's epoch and world size. With one GPU it is a 1-process run.
#   5. grid        cossl-train grid --run: a 2-cell grid + 1 reference on the digits
#                  through the grid config's bf16/channels_last path on the GPU, then a rerun that
#                  must not retrain
# Every step writes <step>.log (and the benches a JSON) under $OUT (a temporary folder if unset);
# summary.txt lists the steps with status and duration. A failing step does not stop the others;
# the exit status is 1 if any failed.
#
# GPU_CHECKS_SKIP="bench_compile grid" skips the named steps (e.g. to rerun only what failed).
# GPU_CHECKS_CPU_SMOKE=1 runs the same steps at toy size on the CPU (2 gloo processes for the DDP
# step), to check this script itself on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-$(mktemp -d -t cossl-gpu-checks.XXXXXX)}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export PYTHONUNBUFFERED=1
SMOKE="${GPU_CHECKS_CPU_SMOKE:-0}"

if [[ "$SMOKE" == 1 ]]; then
  NPROC=2
  BENCH=(--device cpu --backbone resnet18 --width 8 --resolution 32 --batch-size 16 --steps 2 --warmup 1
         --dataset synthetic --workers 1 --loader-batches 2 --no-progress)
  COMPILE=(--methods byol --steps 1 --warmup 1)
  TRAIN=(train.device=cpu train.precision=fp32 backbone.width=8 train.batch_size=16 data.digits_size=16
         augment.resolution=16 train.max_steps_per_epoch=2 data.num_workers=0)
  GRID=(train.device=cpu train.precision=fp32 backbone.width=8 train.batch_size=16 data.digits_size=16
        augment.resolution=16 train.max_steps_per_epoch=2 data.num_workers=0 data.limit=256)
  T_BENCH=600; T_COMPILE=600; T_DDP=300; T_GRID=300  # per command
else
  if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
    echo "gpu_checks.sh: no NVIDIA GPU here (set GPU_CHECKS_CPU_SMOKE=1 to test the script on the CPU)" >&2
    exit 2
  fi
  NPROC="$(nvidia-smi -L | wc -l)"
  BENCH=(--device cuda --backbone resnet50 --width 64 --no-small-image --resolution 224 --batch-size 128
         --precision bf16 --channels-last --dataset synthetic --workers 8 --steps 30 --warmup 10 --no-progress)
  COMPILE=(--methods byol,co_byol --steps 20 --warmup 5)
  # ResNet-18 with the small-image stem at 32 px: a few seconds per epoch, yet real DDP traffic
  TRAIN=(backbone.width=64 train.batch_size=64 data.digits_size=32 augment.resolution=32
         train.max_steps_per_epoch=10 data.num_workers=4 train.channels_last=true)
  GRID=(backbone.width=16 train.batch_size=64 data.digits_size=32 augment.resolution=32
        train.max_steps_per_epoch=5 data.num_workers=4)
  T_BENCH=240; T_COMPILE=300; T_DDP=120; T_GRID=120  # seconds, per command
fi

FAILED=()
: > "$OUT/summary.txt"

# run_step NAME CMD...: run CMD with its output in $OUT/NAME.log; record status and duration
run_step() {
  local name="$1"; shift
  local t0=$SECONDS status
  if [[ " ${GPU_CHECKS_SKIP:-} " == *" $name "* ]]; then
    echo "=== $name: skipped (GPU_CHECKS_SKIP)" | tee -a "$OUT/summary.txt"
    return
  fi
  echo "=== $name: $*" | tee -a "$OUT/summary.txt"
  if "$@" > "$OUT/$name.log" 2>&1; then
    status="ok"
  else
    status="FAILED (exit $?)"
    FAILED+=("$name")
  fi
  echo "=== $name: $status in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  tail -n 12 "$OUT/$name.log"
}

env_info() {
  if [[ "$SMOKE" != 1 ]]; then nvidia-smi; fi
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0]); print('torch', torch.__version__, \
'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), 'devices', torch.cuda.device_count()); \
print('bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
}

# DDP smoke: a 3-epoch run killed after its first checkpoint, resumed to the end, then evaluated;
# checks what the checkpoint says (a resume must keep the run's epochs, so the kill is real)
ddp_smoke() {
  local dir="$OUT/ddp_smoke"
  local common=(method.name=co_byol data.dataset=digits backbone.name=resnet18 backbone.small_image=true
                head.proj_hidden=512 head.proj_dim=128 head.pred_hidden=512 co.proj_hidden=256 co.pred_hidden=256
                optim.name=lars optim.lr=0.3 optim.warmup_epochs=1 train.log_every=5 "train.out_dir=$dir"
                train.epochs=3 "${TRAIN[@]}")
  rm -rf "$dir"
  setsid timeout "$T_DDP" torchrun --standalone --nproc_per_node="$NPROC" -m cossl_train pretrain --no-progress \
    "${common[@]}" &
  local pid=$! waited=0
  until [[ -f "$dir/checkpoint.pt" ]] || ! kill -0 "$pid" 2> /dev/null || (( waited > T_DDP )); do
    sleep 0.2; waited=$((waited + 1))
  done
  kill -9 -- "-$pid" 2> /dev/null; wait "$pid" 2> /dev/null
  [[ -f "$dir/checkpoint.pt" ]] || { echo "no checkpoint before the kill"; return 1; }
  timeout "$T_DDP" torchrun --standalone --nproc_per_node="$NPROC" -m cossl_train pretrain --no-progress --resume \
    "${common[@]}" || return 1
  timeout "$T_DDP" "$PY" -m cossl_train knn --no-progress "$dir/checkpoint.pt" || return 1
  "$PY" - "$dir/checkpoint.pt" "$NPROC" <<'PYEOF' || return 1
import sys
from cossl_train.checkpoint import load_checkpoint
state = load_checkpoint(sys.argv[1])
want_world = int(sys.argv[2])
print(f"checkpoint: epoch {state['epoch']}, global step {state['global_step']}, world size {state['world_size']}")
assert state["epoch"] == 3, state["epoch"]
assert state["world_size"] == want_world, (state["world_size"], want_world)
PYEOF
}

# tiny grid: 2 cells + 1 BYOL reference, trained and evaluated; the rerun must not retrain
grid_smoke() {
  local dir="$OUT/grid"
  local args=(--out "$dir" --backbones rf_resnet50_rf43,rf_resnet50_rf155 --c-min 0.2 --no-progress
              data.dataset=digits backbone.small_image=true head.proj_hidden=256 head.pred_hidden=256
              co.proj_hidden=128 co.pred_hidden=128 optim.warmup_epochs=0 train.epochs=1 eval.linear_epochs=10
              "${GRID[@]}")
  rm -rf "$dir"
  timeout "$T_GRID" "$PY" -m cossl_train grid --run "${args[@]}" || return 1
  local before after
  before="$(stat -c %y "$dir"/*/checkpoint.pt)"
  timeout "$T_GRID" "$PY" -m cossl_train grid --run "${args[@]}" || return 1
  after="$(stat -c %y "$dir"/*/checkpoint.pt)"
  [[ "$before" == "$after" ]] || { echo "rerun retrained a cell"; return 1; }
  cat "$dir/results.csv"
  [[ "$(wc -l < "$dir/results.csv")" == 4 ]] || { echo "expected 3 rows in results.csv"; return 1; }
}

run_step env env_info
run_step bench timeout "$T_BENCH" "$PY" -m benchmarks.train_throughput "${BENCH[@]}" --json "$OUT/bench.json"
run_step bench_compile timeout "$T_COMPILE" "$PY" -m benchmarks.train_throughput "${BENCH[@]}" --compile "${COMPILE[@]}" \
  --json "$OUT/bench_compile.json"
run_step ddp ddp_smoke    # each command inside has its own timeout
run_step grid grid_smoke

echo
cat "$OUT/summary.txt"
echo "outputs in $OUT"
if (( ${#FAILED[@]} )); then
  echo "FAILED: ${FAILED[*]}"
  exit 1
fi
