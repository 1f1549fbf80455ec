"""NVILA against VILA's code and the authors' FrameFusion adapter: runs both sides and `framefusion ask --json`.

    OMP_NUM_THREADS=1 python benchmarks/against_authors/nvila/compare.py [--work DIR] [--skip-ours] [--skip-theirs]

Setup of the oracle venv and checkouts: README.md next to this file. Steps, each in its own process:
  1. ours.py   (this repository's .venv or $OURS_PYTHON): tiny checkpoints, regime videos, our runs;
  2. theirs.py ($ORACLE/venv, PYTHONPATH=here:$ORACLE/vila:$ORACLE/ff_src): VILA 078f91c + the authors' adapter;
  3. `python -m ffcli.main ask VIDEO Q --model CKPT --json ...` per regime (dense and framefusion);
then prints the table and writes oracle_outputs.json (what the original code produced) next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
ORACLE = Path(os.environ.get("ORACLE_DIR", "/work/oracles/nvila"))  # holds venv/, vila/ (078f91c), ff_src/
OURS_PY = os.environ.get("OURS_PYTHON", str(REPO / ".venv" / "bin" / "python"))
THEIRS_PY = str(ORACLE / "venv" / "bin" / "python")

try:
    import torch
except ModuleNotFoundError:  # the table needs torch: run under the oracle venv
    os.execv(THEIRS_PY, [THEIRS_PY, *sys.argv])


def run(cmd: list[str], env_extra: dict[str, str] | None = None, cwd: Path = HERE) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.update(env_extra or {})
    proc = subprocess.run(cmd, env=env, cwd=str(cwd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-6000:])
        sys.exit(f"{' '.join(cmd[:3])} failed with exit code {proc.returncode}")
    for line in proc.stdout.splitlines():
        if line.startswith(("ours:", "theirs:")):
            print("   ", line)
    return proc.stdout


def cli_ask(work: Path, name: str, regime: dict, method: str, new_tokens: int, question: str) -> dict:
    """`framefusion ask --json` on the regime's video, as a user runs it."""
    params = regime["params"]
    cmd = [OURS_PY, "-m", "ffcli.main", "ask", str(work / "videos" / f"{name}.mp4"), question,
           "--model", str(work / f"ckpt-{regime['variant']}"), "--frames", str(regime["frames"]), "--device", "cpu",
           "--dtype", "fp32", "--max-new-tokens", str(new_tokens), "--method", method, "--json"]
    if method == "framefusion":
        cmd += ["--budget", str(params["cost"]), "--similarity", str(params["similarity_lower_bound"]),
                "--ratio-lower-bound", str(params["ratio_lower_bound"])]
    out = run(cmd, {"PYTHONPATH": str(REPO)}, cwd=REPO)
    return json.loads(out[out.index("{"):])


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.shape == b.shape else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default=str(ORACLE / "work"))
    parser.add_argument("--skip-ours", action="store_true")
    parser.add_argument("--skip-theirs", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    if not args.skip_ours:
        run([OURS_PY, str(HERE / "ours.py"), str(work)], {"PYTHONPATH": str(REPO)})
    if not args.skip_theirs:
        path = os.pathsep.join([str(HERE), str(ORACLE / "vila"), str(ORACLE / "ff_src")])
        run([THEIRS_PY, str(HERE / "theirs.py"), str(work)], {"PYTHONPATH": path})
    ours, theirs = (json.loads((work / f"{side}.json").read_text()) for side in ("ours", "theirs"))
    ot, tt = (torch.load(work / f"{side}_tensors.pt") for side in ("ours", "theirs"))
    question, new_tokens = ours["question"], ours["max_new_tokens"]
    rows, recorded = [], {}
    for name, o in ours["regimes"].items():
        t = theirs["regimes"][name]
        layout, settings = ours["variants"][o["variant"]]
        checkpoint = {"builder": "framefusion.tiny.nvila.save_tiny_checkpoint", "variant": layout, **settings}
        common = {
            "regime": name, "frames": o["frames"] or "image",
            "prompt_ids": o["prompt_ids"] == t["prompt_ids"],
            "pixels": maxdiff(ot[f"{name}|pixels"], tt[f"{name}|pixels"]),
            "dense_logits": maxdiff(ot[f"{name}|dense_logits"], tt[f"{name}|dense_logits"]),
            "dense_first": maxdiff(ot[f"{name}|dense_first"], tt[f"{name}|dense_first"]),
            "dense_ids": o["dense"]["answer_ids"] == t["dense"]["answer_ids"],
        }
        if not o["frames"]:  # an image: dense only, no video tokens to reduce
            rows.append({**common, "vision": f"{o['image_tokens']}/{t['image_tokens']} (image)", "embeds": None,
                         "ff_kv": None, "ff_first": None, "ff_ids": None, "cli": None, "kv": None, "kept": None})
            recorded[name] = {"checkpoint": checkpoint, "image": f"inputs/{name}.npz (ours.py image_regime, seed "
                              f"{o['image_seed']})", "question": question, "max_new_tokens": new_tokens,
                              "image_tokens": t["image_tokens"], "prompt_ids": t["prompt_ids"],
                              "dense_answer_ids": t["dense"]["answer_ids"]}
            continue
        cli = {m: cli_ask(work, name, o, m, new_tokens, question) for m in ("dense", "framefusion")}
        tff, off = t["framefusion"], o["framefusion"]
        rows.append({
            **common, "vision": f"{o['vision_tokens']}/{t['vision_tokens']}",
            "embeds": maxdiff(ot[f"{name}|media_embeds"], tt[f"{name}|media_embeds"]),
            "ff_kv": off["tokens_per_layer"] == tff.get("tokens_per_layer"),
            "ff_first": maxdiff(ot[f"{name}|ff_first"], tt[f"{name}|ff_first"]) if "error" not in tff else None,
            "ff_ids": off["answer_ids"] == tff.get("answer_ids"),
            "cli": (cli["dense"]["vision_tokens"] == t["vision_tokens"]
                    and cli["dense"]["answer_ids"] == t["dense"]["answer_ids"]
                    and cli["framefusion"]["answer_ids"] == tff.get("answer_ids")
                    and cli["framefusion"]["tokens_per_layer"] == tff.get("tokens_per_layer")),
            "kv": tff.get("tokens_per_layer"), "kept": off["kept_ratio"],
        })
        recorded[name] = {
            "checkpoint": checkpoint, "video": f"videos/{name}.mp4", "frames": o["frames"], "question": question,
            "max_new_tokens": new_tokens, "framefusion": o["params"],
            "vision_tokens": t["vision_tokens"], "prompt_ids": t["prompt_ids"],
            "dense_answer_ids": t["dense"]["answer_ids"],
            "framefusion_answer_ids": tff.get("answer_ids"),
            "framefusion_tokens_per_layer": tff.get("tokens_per_layer"),
            "framefusion_sparsity_list": tff.get("sparsity_list"),
        }
    print(f"\nours: commit {ours['commit']}{' + uncommitted edits' if ours['dirty'] else ''}; theirs: VILA 078f91c + "
          f"thu-nics/FrameFusion fbec1d2 on transformers {theirs['transformers']}, torch {theirs['torch']}\n")
    print("| regime | frames | video tokens ours/theirs | prompt ids equal | pixels max diff | video embeddings max diff "
          "| dense logits max diff (all positions) | dense first-token logits | dense greedy ids equal "
          "| FrameFusion per-layer KV equal | FrameFusion first-token logits max diff | FrameFusion greedy ids equal "
          "| `ask --json` equal | their KV per layer | kept_ratio |")
    print("|" + "---|" * 15)
    fmt = lambda x: "n/a" if x is None else f"{x:.1e}"
    for r in rows:
        kv = r["kv"]
        kv_text = " ".join(f"{v}" + (f"x{n}" if n > 1 else "") for v, n in _runs(kv)) if kv else "n/a"
        kept = "n/a" if r["kept"] is None else f"{r['kept']:.3f}"
        print(f"| {r['regime']} | {r['frames']} | {r['vision']} | {_yn(r['prompt_ids'])} | {fmt(r['pixels'])} | "
              f"{fmt(r['embeds'])} | {fmt(r['dense_logits'])} | {fmt(r['dense_first'])} | {_yn(r['dense_ids'])} | "
              f"{_yn(r['ff_kv'])} | {fmt(r['ff_first'])} | {_yn(r['ff_ids'])} | {_yn(r['cli'])} | {kv_text} | "
              f"{kept} |")
    out = HERE / "oracle_outputs.json"
    out.write_text(json.dumps({"source": "VILA 078f91c + thu-nics/FrameFusion fbec1d2 (benchmarks/against_authors/"
                                         "nvila/theirs.py)", "regimes": recorded}, indent=1))
    print(f"\nwrote {out.relative_to(REPO)}")


def _runs(values):
    out = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([v, 1])
    return out


def _yn(flag: bool | None) -> str:
    return "n/a" if flag is None else "yes" if flag else "NO"


if __name__ == "__main__":
    main()
