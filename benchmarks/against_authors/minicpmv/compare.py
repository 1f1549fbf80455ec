"""MiniCPM-V 2.6: our native model and FrameFusion against the original remote code and the authors' FrameFusion.

    OMP_NUM_THREADS=1 python benchmarks/against_authors/minicpmv/compare.py [--work DIR] [--record]

Setup of the oracle (outside the repository): README.md next to this file. Runs, each in its own process:
  1. ours.py   (this repository's venv, or $OURS_PYTHON): builds the tiny checkpoint in the original layout, samples
               the committed clips, runs our dense and FrameFusion `generate` and the CLI's `ask --json`;
  2. theirs.py ($ORACLE_DIR/venv, transformers 4.45.2): the original chat() and the authors' FrameFusion on the
               same checkpoint and frames;
then prints one table. --record writes the oracle's outputs to recorded.json next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
ORACLE = Path(os.environ.get("ORACLE_DIR", "/tmp/minicpmv_oracle"))
OURS_PY = os.environ.get("OURS_PYTHON", sys.executable)
THEIRS_PY = str(ORACLE / "venv" / "bin" / "python")
TOLERANCE = 1e-4
sys.path.insert(0, str(HERE.parent))
from counts import rle  # noqa: E402

SPEC = {
    # 28 layers: the authors' budget hard-codes 28 (MiniCPM-V 2.6's Qwen2-7B has 28); hidden 256: 2 resampler heads
    "sizes": {"num_layers": 28, "hidden_size": 256, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 512,
              "vision_hidden": 64, "vision_heads": 2, "vision_layers": 2, "query_num": 64, "scale_resolution": 56,
              "seed": 0},
    "clips": ["square", "wide"],  # 56 x 56 frames: one slice each; 112 x 56: a 84 x 42 thumbnail and 2 slices
    # NaViT position ids of these patch grids (rows, cols), where rounding of the coordinates matters (49, 58, 77)
    "navit_sizes": [[49, 58], [25, 50], [77, 13], [3, 6], [32, 32]],
    "frames": 8,
    "question": "Which direction did the white square move?",
    "max_new_tokens": 12,
    "regimes": {  # dense first: the authors' FrameFusion cannot be removed once applied
        "dense square": {"clip": "square", "method": "dense"},
        "dense square, chat() defaults": {"clip": "square", "method": "dense", "repetition_penalty": 1.05},
        "dense square, id 0 in the question": {"clip": "square", "method": "dense",
                                               "question": "Which direction<|endoftext|> did the white square move?"},
        "dense wide": {"clip": "wide", "method": "dense"},
        "ff merge, merge, prune": {"clip": "square", "method": "framefusion", "cost": 0.3, "similarity": 0.99,
                                   "ratio_lower_bound": 0.1},
        "ff 3 merges, prune": {"clip": "square", "method": "framefusion", "cost": 0.3, "similarity": 0.98,
                               "ratio_lower_bound": 0.1},
        "ff capped first merge": {"clip": "square", "method": "framefusion", "cost": 0.5, "similarity": 0.9,
                                  "ratio_lower_bound": 0.1},
        "ff prune only": {"clip": "square", "method": "framefusion", "cost": 0.3, "similarity": 1.01,
                          "ratio_lower_bound": 0.1},
        "ff slices: merge, merge, prune": {"clip": "wide", "method": "framefusion", "cost": 0.3, "similarity": 0.99,
                                           "ratio_lower_bound": 0.1},
        "ff slices: capped second merge": {"clip": "wide", "method": "framefusion", "cost": 0.5, "similarity": 0.98,
                                           "ratio_lower_bound": 0.1},
    },
}


def run(command: list[str], env: dict | None = None) -> None:
    """Run one side; its progress lines are shown, a failure stops the comparison."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **(env or {}))
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, env=env, cwd=str(HERE), capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(("ours:", "theirs:")):
            print("   ", line)
    if done.returncode != 0:
        sys.exit(f"{Path(command[1]).name} failed:\n{done.stderr[-4000:]}")


def their_pixels_as_ours(pixels: torch.Tensor, rows: int, cols: int, patch: int) -> torch.Tensor:
    """The original's [3, patch, rows * cols * patch] patch strip of one slice as the image [3, rows*p, cols*p]."""
    strip = pixels.reshape(3, patch, rows, cols, patch)  # [c, i, row, col, j]
    return strip.permute(0, 2, 1, 3, 4).reshape(3, rows * patch, cols * patch)


def check_inputs(work: Path, clip: str, patch: int) -> tuple[bool, float]:
    """(prompt ids equal, largest pixel difference) of our processor against the original's, for one clip."""
    ours = torch.load(work / f"inputs_{clip}.pt")
    theirs = torch.load(work / f"theirs_inputs_{clip}.pt")
    same_ids = torch.equal(ours["input_ids"][0].long(), theirs["input_ids"][0].long())
    sizes = ours["tgt_sizes_videos"].tolist()
    if [list(map(int, s)) for s in torch.stack(list(theirs["tgt_sizes"][0])).tolist()] != sizes:
        return same_ids, float("inf")
    worst = 0.0
    for index, (rows, cols) in enumerate(sizes):
        mine = ours["pixel_values_videos"][index, :, : rows * patch, : cols * patch]
        other = their_pixels_as_ours(theirs["pixel_values"][0][index], rows, cols, patch)
        worst = max(worst, float((mine - other).abs().max()))
    return same_ids, worst


def table(spec: dict, ours: dict, theirs: dict, inputs: dict) -> list[str]:
    """One line per run: ids, logits, counts (ours in-process and through the CLI) against the original."""
    lines = ["| run | prompt ids | pixels max diff | tokens / slice | greedy ids | max logit diff | per-layer KV counts"
             " | FFN counts | CLI ids | CLI counts | vision tokens (ours / theirs) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, regime in spec["regimes"].items():
        a, b = ours["runs"][name], theirs["runs"][name]
        steps = min(len(a["logits"]), len(b["logits"]))
        diff = max(float((torch.tensor(a["logits"][i]) - torch.tensor(b["logits"][i])).abs().max())
                   for i in range(steps) if a["ids"][:i] == b["ids"][:i])
        ff = regime["method"] == "framefusion"
        kv = ("same" if a.get("tokens_per_layer") == b["tokens_per_layer"] else "DIFFER") if ff else "-"
        ffn = ("same" if a.get("ffn_tokens_per_layer") == b["ffn_tokens_per_layer"] else "DIFFER") if ff else "-"
        cli = a.get("cli")
        cli_ids = "-" if cli is None else ("same" if cli["answer_ids"] == b["ids"] else "DIFFER")
        cli_kv = "-" if cli is None or not ff else ("same" if cli["tokens_per_layer"] == b["tokens_per_layer"]
                                                   else "DIFFER")
        same_ids, pixels = inputs[regime["clip"]]
        vision = f"{a.get('vision_tokens', '-')} / {b.get('vision_tokens', '-')}" if ff else \
            f"{cli['vision_tokens'] if cli else '-'} / -"
        lines.append(f"| {name} | {'same' if same_ids else 'DIFFER'} | {pixels:.1e} | {b['tokens_per_slice']} | "
                     f"{'same' if a['ids'] == b['ids'] else 'DIFFER'} | {diff:.1e} | {kv} | {ffn} | {cli_ids} | "
                     f"{cli_kv} | {vision} |")
    return lines


def record(spec: dict, ours: dict, theirs: dict, work: Path) -> dict:
    """The oracle's outputs, with what reproduces them, for checks that compare `framefusion ask --json` later."""
    runs = {}
    for name, regime in spec["regimes"].items():
        b, cli = theirs["runs"][name], ours["runs"][name].get("cli")
        command = None
        if cli is not None:  # paths made portable: $CKPT is the checkpoint folder, clips are in this folder
            command = cli["command"].replace(str(work / "ckpt"), "$CKPT").replace(str(REPO) + "/", "")
        runs[name] = {"regime": regime, "greedy_ids": b["ids"], "tokens_per_layer": b["tokens_per_layer"],
                      "ffn_tokens_per_layer": b["ffn_tokens_per_layer"], "tokens_per_slice": b["tokens_per_slice"],
                      "frames": spec["frames"], "authors_vision_tokens": b.get("vision_tokens"),
                      "authors_frame_unit": b.get("frame_unit"), "authors_merge_ratios": b.get("merge_ratios"),
                      "ask_command": command}
    return {"what": "outputs of the original MiniCPM-V 2.6 code (404805854/minicpmv2.6-onnx@8490e59, transformers "
                    "4.45.2) and the authors' FrameFusion (thu-nics/FrameFusion@fbec1d2) on the tiny checkpoint",
            "checkpoint": {"builder": "framefusion.tiny.minicpmv.save_tiny_minicpmv2_6(DIR, TinyMiniCPMV(**sizes))",
                           "sizes": spec["sizes"], "sha256": ours["checkpoint"]},
            "frames": spec["frames"], "question": spec["question"], "max_new_tokens": spec["max_new_tokens"],
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/minicpmv_compare"))
    parser.add_argument("--record", action="store_true", help="write the oracle's outputs to recorded.json")
    parser.add_argument("--tabulate", action="store_true", help="only print the table of the last run in --work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "spec.json").write_text(json.dumps(SPEC, indent=2))
    if not args.tabulate:
        run([OURS_PY, str(HERE / "ours.py"), str(args.work)])
        run([THEIRS_PY, str(HERE / "theirs.py"), str(args.work)], {"ORACLE_DIR": str(ORACLE)})
    ours = json.loads((args.work / "ours.json").read_text())
    theirs = json.loads((args.work / "theirs.json").read_text())
    inputs = {clip: check_inputs(args.work, clip, 14) for clip in SPEC["clips"]}
    print(f"\nours: transformers {ours['transformers']}, torch {ours['torch']}; theirs: transformers 4.45.2\n")
    print("\n".join(table(SPEC, ours, theirs, inputs)))
    for (rows, cols), a, b in zip(SPEC["navit_sizes"], ours["navit_position_ids"], theirs["navit_position_ids"]):
        print(f"NaViT position ids of a {rows} x {cols} grid: {'same' if a == b else 'DIFFER'}")
    for name, regime in SPEC["regimes"].items():
        if regime["method"] == "framefusion":
            a, b = ours["runs"][name], theirs["runs"][name]
            steps = ", ".join(f"{s['kind']}@{s['point']} -{s['removed']}" + (" (capped)" if s["capped"] else "")
                              for s in a["steps"])
            print(f"\n{name}: our steps: {steps}; their merge ratios {[round(r, 4) for r in b['merge_ratios']]}\n"
                  f"  KV per layer (both): {rle(b['tokens_per_layer'], times=' x', sep=', ')}")
    if args.record:
        text = json.dumps(record(SPEC, ours, theirs, args.work), indent=1)
        text = re.sub(r"\[\s+([-\d.e, \n]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
        (HERE / "recorded.json").write_text(text + "\n")
        print(f"\nrecorded the oracle's outputs in {HERE / 'recorded.json'}")


if __name__ == "__main__":
    main()
