#!/usr/bin/env bash
# One prepared accelerator check, at most 8 minutes: the paper-shape PCFG train step
# (6 x 192, batch 96 x 259), the 91M TinyStories train step (12 x 768, batch 128 x 1024) and
# the paper-scale Tracr grid step (84 members, Counter over 45 tokens), each printed with its
# model FLOP utilisation: XLA's FLOP count of the step / the measured peak matmul rate at the
# same precision / the measured step time ("% of the floor" lines).
#
#   bash benchmarks/accelerator_check.sh                 # fp32, then bf16 compute
#   PRECISIONS=tf32 bash benchmarks/accelerator_check.sh
#   SCALE=cpu bash benchmarks/accelerator_check.sh       # the CPU shapes: checks the script itself
#
# PCFG times both model.attention paths (fused, explicit); TinyStories the :paper config's
# fused one (cuDNN flash attention under bf16). Each step has its own time limit
# (2 x (80 + 100) + 120 s = 8 min), so one slow part cannot eat the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
PRECISIONS=${PRECISIONS:-"fp32 bf16"}
SCALE=${SCALE:-paper}
if [ "$SCALE" = paper ]; then tracr=paper; else tracr=default; fi
echo "accelerator_check: $(date -u +%FT%TZ), scale $SCALE, precisions: $PRECISIONS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
for precision in $PRECISIONS; do
  echo "=== PCFG train step ($SCALE shape, $precision)"
  timeout 80 python benchmarks/pcfg_train_throughput.py --shape="$SCALE" --steps=10 --warmup=2 \
    --no-torch --precision="$precision" || echo "PCFG step: exit $?"
  echo "=== TinyStories train step ($SCALE shape, $precision)"
  timeout 100 python benchmarks/tinystories_throughput.py --shape="$SCALE" --steps=5 --warmup=2 \
    --no-sampling --precision="$precision" --attention=fused || echo "TinyStories step: exit $?"
done
echo "=== Tracr grid step ($tracr scale, fp32: compiled weights need it)"
timeout 120 python benchmarks/tracr_grid.py --config="$tracr" --timed_steps=5 || echo "Tracr grid: exit $?"
