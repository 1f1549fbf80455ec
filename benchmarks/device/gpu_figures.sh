#!/usr/bin/env bash
# The GPU figures in one prepared run, for a session that is lent a GPU machine (the `device` tool). It runs from
# the repository root there, on that machine's own python3 and torch, with the wheels the image lacks carried in
# `.whl` (benchmarks/device/fetch_wheels.sh makes them here first). Each step writes its output under $OUT and
# goes on when one fails; the exit status is the number of failed steps.
#
#   run(command="bash benchmarks/device/gpu_figures.sh", carry=[".whl"], timeout_s=540)
#
# The same script runs on a CPU for a dry run of every step at small sizes:
#   WHEELS= DEVICE=cpu WIDTH_SCALE=0.25 FRAMES="8" ENGINE_ARGS="--layers 4 --hidden 256 --ffn 1024 --heads 2 --kv-heads 1" \
#     OUT=/tmp/gpu-dry PYTHON=.venv/bin/python bash benchmarks/device/gpu_figures.sh
set -u
# See benchmarks/device/README.md.
OUT=${OUT:-/tmp/framefusion-gpu}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
FRAMES=${FRAMES:-"32 64"}
WIDTH_SCALE=${WIDTH_SCALE:-}  # empty: full size where it fits (profile's own default)
ENGINE_ARGS=${ENGINE_ARGS:-"--hidden 3584 --ffn 18944 --heads 28 --kv-heads 4"}  # Qwen2-VL-7B's widths, 28 layers
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 COLUMNS=200  # COLUMNS: Rich tables at full width in a log

WHEELS=${WHEELS-.whl}  # the carried wheels' folder; empty: install none (a dry run on this machine's .venv)
if [ -n "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || { echo "installing the carried wheels failed" >&2; exit 100; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi

failed=0
step() {  # step NAME COMMAND...: stdout to $OUT/NAME.out, stderr to $OUT/stderr.log; say how it ended
  local name=$1; shift
  local started=$SECONDS
  echo "== $name" >>"$OUT/stderr.log"
  "$@" >"$OUT/$name.out" 2>>"$OUT/stderr.log"
  local rc=$?
  echo "== $name: exit $rc, $((SECONDS - started)) s"
  [ "$(head -c 1 "$OUT/$name.out")" = "{" ] || { tail -c 3000 "$OUT/$name.out"; echo; }  # JSON is summarised
  [ "$rc" -eq 0 ] || { failed=$((failed + 1)); tail -n 15 "$OUT/stderr.log"; }
}

frame_options=()
for f in $FRAMES; do frame_options+=(--frames "$f"); done
scale_options=()
[ -n "$WIDTH_SCALE" ] && scale_options=(--width-scale "$WIDTH_SCALE")

step environment "$PYTHON" -c "
import torch, transformers, av, framefusion
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'av', av.__version__)
print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')
print('framefusion from', framefusion.__file__)"

# 1. The default profile (Qwen2-VL-7B's architecture, random weights; full size in bf16 where it fits).
step profile "$PYTHON" -m ffcli.main profile --device "$DEVICE" --budget 0.3 --budget 0.1 "${frame_options[@]}" \
  "${scale_options[@]}" --plot "$OUT/profile.png" --json
"$PYTHON" -c "
import json
report = json.load(open('$OUT/profile.out'))
print('model:', json.dumps(report['model']))
for r in report['runs']:
    print(f\"{r['method']:12} budget {r['budget']:<4} frames {r['frames']:4} kept {r['kept_ratio']:.3f} \"
          f\"prefill {r['prefill_s']:.3f} s x{r['speedup_prefill']:.2f} (ideal x{r['ideal_speedup']:.2f}) \"
          f\"e2e x{r['speedup_end_to_end']:.2f} vision {r['vision_s']:.3f} s total {r['total_s']:.2f} s\")
" 2>/dev/null || echo "(no profile summary)"

# 2. Engine speed at Qwen2-VL-7B's widths and depth: prefill speed-up, share of the ideal, engine overhead.
# shellcheck disable=SC2086
step engine_speed "$PYTHON" benchmarks/engine_speed.py --device "$DEVICE" --dtype bf16 --frames $FRAMES --repeats 5 \
  $ENGINE_ARGS

# 3. Every method on the GPU: the demo model on a synthetic clip, each method at 0.25 (device placement of
#    each method's tensors is what a CPU run cannot check).
clip=/tmp/framefusion-gpu-clip.mp4
step clip "$PYTHON" -c "
from framefusion.synthetic import make_sample
from framefusion.video import write_video
sample = make_sample('color', 3, num_frames=16)
write_video('$clip', sample.frames, 8.0)
print(sample.question)
print('expected answer:', sample.answer)"
step methods "$PYTHON" -m ffcli.main compare "$clip" "$(head -n 1 "$OUT/clip.out" 2>/dev/null || echo 'What colour?')" \
  --model demo --device "$DEVICE" --budget 0.25 --method dense --method framefusion --method fastv \
  --method streamingllm --method vidcom2 --method evs --method uniform --method visionzip --method fastvid \
  --method holitom --method dycoke

echo "== $failed step(s) failed; logs in $OUT"
exit "$failed"
