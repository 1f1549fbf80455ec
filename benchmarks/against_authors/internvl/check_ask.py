"""`framefusion ask --json` against the original code's recorded outputs (expected.json, written by compare.py).

    python benchmarks/against_authors/internvl/check_ask.py [--work DIR]

Rebuilds each tiny checkpoint with framefusion.tiny (checking its weights' sha256 against the recorded one), then
runs the CLI on needle.mp4 for every recorded run and compares vision tokens per frame, the greedy answer ids and
the tokens in every layer's KV cache. Runs in this repository's venv only (no oracle needed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default=os.environ.get("WORK", "/tmp/internvl-oracle"))
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from framefusion.tiny.internvl_chat import save_internvl_chat_checkpoint

    expected = json.loads((HERE / "expected.json").read_text())
    video = HERE / expected["video"]
    assert hashlib.sha256(video.read_bytes()).hexdigest() == expected["video_sha256"], "needle.mp4 changed"
    failures = 0
    for name, record in expected["checkpoints"].items():
        folder = Path(args.work) / name
        if not (folder / "model.safetensors").is_file():
            save_internvl_chat_checkpoint(folder, **record["builder"])
        digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
        if digest != record["weights_sha256"]:
            sys.exit(f"{name}: the rebuilt checkpoint differs from the recorded one (sha256 {digest})")
        for run_name, run in record["runs"].items():
            command = [sys.executable, "-m", "ffcli.main", "ask", str(video), expected["question"], "--model",
                       str(folder), "--frames", str(expected["frames"]), "--max-new-tokens",
                       str(expected["max_new_tokens"]), "--method", run["method"], "--device", "cpu", "--dtype",
                       "fp32", "--json"]
            params = run["params"]
            if params:
                command += ["--budget", str(params["cost"]), "--similarity", str(params["similarity_lower_bound"]),
                            "--ratio-lower-bound", str(params["ratio_lower_bound"])]
            proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                                  env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
            if proc.returncode or not proc.stdout.strip():
                sys.exit(f"{name} {run_name}: framefusion ask failed:\n{proc.stdout[-500:]}{proc.stderr[-2000:]}")
            try:
                payload = json.loads(proc.stdout)
            except ValueError:
                sys.exit(f"{name} {run_name}: not one JSON object on stdout: {proc.stdout[:300]!r}")
            checks = {
                "tokens per frame": payload["vision_tokens"] // payload["frames"] == record["tokens_per_frame"],
                "answer ids": payload["answer_ids"] == run["answer_ids"],
                "tokens per layer": payload["tokens_per_layer"] == run["tokens_per_layer"],
            }
            failures += not all(checks.values())
            print(f"{name} {run_name}: " + ", ".join(f"{k} {'equal' if v else 'DIFFER'}" for k, v in checks.items()))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
