#!/usr/bin/env bash
# Screenshots of TensorBoard's Scalars, Images, HParams and Text tabs for a smoke run, taken in
# a real headless Chromium (Debian: apt-get install chromium). Writes docs/tensorboard_*.png.
#
#   bash docs/screenshots.sh [workdir]     # default: a fresh Tracr smoke run in /tmp
set -euo pipefail
cd "$(dirname "$0")/.."
workdir=${1:-/tmp/wrapper_study_screenshots}
port=${PORT:-6123}
if [ ! -f "$workdir/report.md" ]; then
  python launch/main.py --config=configs/tracr_study.py:smoke --workdir="$workdir"
fi
tensorboard --logdir "$workdir/tb" --port "$port" --host localhost >/tmp/tb_screenshots.log 2>&1 &
tb=$!
trap 'kill $tb 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://localhost:$port/data/runs" >/dev/null && break; sleep 1; done
shoot() {  # shoot <tab> <url fragment>
  # Software WebGL (swiftshader) draws the charts; the virtual time lets every request finish.
  chromium --headless=new --no-sandbox --enable-unsafe-swiftshader --hide-scrollbars \
    --window-size=1600,1100 --virtual-time-budget=60000 --screenshot="docs/tensorboard_$1.png" \
    "http://localhost:$port/$2" >/dev/null 2>&1
  echo "docs/tensorboard_$1.png"
}
shoot scalars '#scalars&regexInput=counter/finetune&tagFilter=eval%2Fc_te'
shoot images '#images'
shoot hparams '#hparams'
shoot text '#text'
