#!/usr/bin/env bash
# One-command check of what CI cannot run without a GPU: bf16 mixed-precision training, FSDP2 when more
# than one GPU is visible (examples/accelerate/fsdp2.yaml), periodic checkpoints, SIGKILL mid-run and
# resume=true. Prints one PASS/FAIL line per check and exits non-zero on any failure.
#
#   bash benchmarks/gpu_check.sh [WORKDIR]        # from the repository root; PYTHON=... to pick python
#   GPU_CHECK_ON_CPU=1 bash benchmarks/gpu_check.sh  # the same checks in one CPU process (tests the script)
#
# Checks:
#   bf16-updates  at lr 5e-7 the trained weights moved (float32 master weights; bf16 weights would not)
#   kill-resume   a run SIGKILLed after its step-4 checkpoint and resumed logs every step once and ends
#                 with the weights of an uninterrupted run (max |difference| printed; GPU kernels may
#                 differ in the last bits, so the bound is 1e-5, not bit equality)
set -euo pipefail
PY=${PYTHON:-python}
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "${GPU_CHECK_ON_CPU:-0}" = 1 ]; then NGPU=1  # GPU_CHECK_ON_CPU=1: test this script on a CPU
elif [ "$NGPU" -lt 1 ]; then echo "FAIL no CUDA device visible"; exit 1; fi
"$PY" -m alphapo.tiny_models "$WORK/model" >/dev/null 2>&1
"$PY" - "$WORK/pairs.jsonl" <<'PYEOF'
import json, random, sys
rng = random.Random(0)
with open(sys.argv[1], "w") as fh:
    for i in range(64):
        fh.write(json.dumps({"prompt": f"What is {i} plus {i}?", "chosen": f"The answer is {2 * i}.",
                             "rejected": "no " * rng.randint(1, 6)}) + "\n")
PYEOF
if [ "$NGPU" -gt 1 ]; then
  LAUNCH=("$PY" -m accelerate.commands.launch --config_file examples/accelerate/fsdp2.yaml
          --num_processes "$NGPU" --mixed_precision bf16 -m alphapo.cli)
  MODE="FSDP2 on $NGPU GPUs"
else
  LAUNCH=("$PY" -m alphapo.cli)
  MODE="one GPU"
fi
ARGS=(train "model.name_or_path=$WORK/model" "data.train_path=$WORK/pairs.jsonl" loss.name=simpo
      train.mixed_precision=bf16 train.learning_rate=5e-7 train.epochs=2 train.per_device_batch_size=1
      "train.global_batch_size=$((2 * NGPU))" train.lr_scheduler=constant train.warmup_ratio=0
      logging.save_steps=2 logging.progress_bar=false logging.tensorboard=false
      "reference.cache_dir=$WORK/ref")
echo "gpu_check: $MODE, work folder $WORK"
"${LAUNCH[@]}" "${ARGS[@]}" "output_dir=$WORK/uninterrupted" >"$WORK/uninterrupted.log" 2>&1

setsid "${LAUNCH[@]}" "${ARGS[@]}" "output_dir=$WORK/killed" >"$WORK/killed.log" 2>&1 &
VICTIM=$!
for _ in $(seq 1 6000); do
  STEP=$(sed -e 's/step-0*//' "$WORK/killed/checkpoints/latest" 2>/dev/null || echo 0)
  if [ "${STEP:-0}" -ge 4 ] || ! kill -0 "$VICTIM" 2>/dev/null; then break; fi
  sleep 0.05
done
kill -9 -- "-$VICTIM" 2>/dev/null || true
wait "$VICTIM" 2>/dev/null || true
"${LAUNCH[@]}" "${ARGS[@]}" "output_dir=$WORK/killed" resume=true >"$WORK/resumed.log" 2>&1

"$PY" - "$WORK" <<'PYEOF'
import json, sys
from pathlib import Path
from safetensors.torch import load_file
work = Path(sys.argv[1])
ok = True
def report(name, passed, detail):
    global ok
    ok &= passed
    print(f"{'PASS' if passed else 'FAIL'} {name}: {detail}")
base = load_file(work / "model" / "model.safetensors")
ref = load_file(work / "uninterrupted" / "final" / "model.safetensors")
moved = sum(int((ref[k].float() != base[k].float()).sum()) for k in base) / sum(v.numel() for v in base.values())
report("bf16-updates", moved > 0.5, f"{moved:.1%} of the weights changed at lr 5e-7")
def steps(run):
    recs = [json.loads(l) for l in (work / run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return [r["step"] for r in recs if r["split"] == "train"]
resumed_log = (work / "resumed.log").read_text()
got = load_file(work / "killed" / "final" / "model.safetensors")
diff = max(float((got[k].float() - ref[k].float()).abs().max()) for k in ref)
report("kill-resume", "resumed from" in resumed_log and steps("killed") == steps("uninterrupted") and diff <= 1e-5,
       f"steps logged {len(steps('killed'))}/{len(steps('uninterrupted'))}, max |weight difference| {diff:.3g}, "
       f"{'resumed' if 'resumed from' in resumed_log else 'NOT resumed'}")
sys.exit(0 if ok else 1)
PYEOF
