"""Compare our FrameFusion engine (this repository, transformers 5.x) with the authors' code (transformers 4.51.3).

    OMP_NUM_THREADS=1 python3 benchmarks/against_authors/compare.py [--work DIR] [--skip-ours] [--json OUT]

Setup (the authors' code and its venv, outside the repository): see README.md next to this file.

Runs, each in its own subprocess and venv:
  1. ours.py    (this repository's .venv, or $OURS_PYTHON): tiny 28-layer Qwen2-VL checkpoint, regime inputs, our dense
                and FrameFusion prefills (importance_queries None / 1 / 4 when the API accepts it);
  2. convert.py (authors' venv): 5.x checkpoint -> 4.51 config + weights, strict key/tensor check;
  3. theirs.py  (authors' venv, PYTHONPATH=$AUTHORS_DIR/src): dense check (< 1e-4, else stop), then their
                FrameFusion on the same inputs;
then prints one table. Token counts compared per layer l:
  KV  = tokens entering layer l's attention (= its KV cache): ours stats.tokens_per_layer(), theirs the
        self_attn input length (also checked equal to their KV-cache length);
  FFN = tokens entering layer l's MLP: ours stats.ffn_tokens_per_layer(), theirs the mlp input length.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from counts import rle  # noqa: E402

AUTHORS = Path(os.environ.get("AUTHORS_DIR", "/tmp/authors"))  # holds venv/ (transformers 4.51.3) and src/ (their code)
OURS_PY = os.environ.get("OURS_PYTHON", str(REPO / ".venv" / "bin" / "python"))
THEIRS_PY = str(AUTHORS / "venv" / "bin" / "python")
THEIRS_SRC = str(AUTHORS / "src")

try:
    import torch
except ModuleNotFoundError:  # the table step needs torch: re-run this script under the authors' venv (no PYTHONPATH)
    os.execv(THEIRS_PY, [THEIRS_PY, *sys.argv])


def run(cmd, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.update(env_extra or {})
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, cwd=str(HERE), capture_output=True, text=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith(("ours:", "theirs:", "convert.py:", "Traceback", "  File", "AssertionError",
                            "SystemExit")) or "Error" in line:
            print("   ", line)
    if proc.returncode != 0:
        print(proc.stderr[-4000:])
        sys.exit(f"{cmd[1]} failed with exit code {proc.returncode}")


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(AUTHORS / "work"))
    ap.add_argument("--skip-ours", action="store_true", help="reuse WORK/ours.json and inputs")
    ap.add_argument("--json", help="also write the comparison as JSON here")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    if not args.skip_ours:
        run([OURS_PY, str(HERE / "ours.py"), str(work)])
    run([THEIRS_PY, str(HERE / "convert.py"), str(work / "ckpt"), str(work / "ckpt451")])
    run([THEIRS_PY, str(HERE / "theirs.py"), str(work)], {"PYTHONPATH": THEIRS_SRC})

    ours = json.loads((work / "ours.json").read_text())
    theirs = json.loads((work / "theirs.json").read_text())
    ol = torch.load(work / "ours_logits.pt")
    tl = torch.load(work / "theirs_logits.pt")
    variants = ["q1", "q4", "default"]
    rows = []
    print()
    print(f"ours: {ours['framefusion_file']} at {REPO} {ours.get('main_commit')}"
          f"{' + uncommitted edits' if ours.get('main_dirty') else ''}  (apply_framefusion accepts importance_queries: "
          f"{ours['accepts_importance_queries']});  theirs: transformers {theirs['transformers']}, torch {theirs['torch']}")
    print("dense check (prefill, all positions, fp32 sdpa, each side its own positions: ours the published rule on "
          "5.x, theirs 4.51's): max |ours - theirs| = "
          + ", ".join(f"{k} {v['max_abs_diff_all_positions']:.1e}" for k, v in theirs["dense"].items()))
    dense_generation = {}
    for name, o in ours["regimes"].items():
        same = o["generated"]["dense"] == theirs["dense"][name]["generated"]
        step_diff = float((ol[f"{name}|dense_steps"] - tl[f"{name}|dense_steps"]).abs().max())
        dense_generation[name] = {"ids_equal": same, "max_abs_step_logit_diff": step_diff,
                                  "ours": o["generated"]["dense"], "theirs": theirs["dense"][name]["generated"]}
    print("dense generate (greedy, every step's logits): " + ", ".join(
        f"{k} ids {'equal' if v['ids_equal'] else 'DIFFER'} {v['max_abs_step_logit_diff']:.1e}"
        for k, v in dense_generation.items()))
    print()
    for name, o in ours["regimes"].items():
        t = theirs["regimes"].get(name)
        p = o["params"]
        head = (f"{name}: cost={p['cost']} sim={p['similarity_lower_bound']} ratio={p['ratio_lower_bound']}  "
                f"seq={o['seq_len']} N_v={o['num_vision']}")
        print(head)
        errors = {}
        if t is None or "error" in t:
            errors["sdpa"] = t.get("error") if t else "no result"
        their_logit = None if errors else tl[f"{name}|ff"]
        dense_last = ol[f"{name}|dense"][-1]
        row = {"regime": name, "params": p, "variants": {}}
        if errors:
            print(f"   theirs: {errors['sdpa']}")
            row["theirs_error"] = errors["sdpa"]
        else:
            # their internal consistency
            assert t["kv_cache_lengths"] == t["attn_in"], (t["kv_cache_lengths"], t["attn_in"])
            assert t["layer_in"][1:] == t["mlp_in"][:-1]
            causal = all(t["attn_mask_is_none"])
            print(f"   theirs KV : {rle(t['attn_in'])}")
            print(f"   theirs FFN: {rle(t['mlp_in'])}")
            others = o["seq_len"] - o["num_vision"]
            their_kept = sum(n - others for n in t["attn_in"]) / (len(t["attn_in"]) * o["num_vision"])
            print(f"   kept_ratio (KV-based): theirs {their_kept:.4f}, ours default "
                  f"{o['runs'].get('default', {}).get('kept_ratio', float('nan')):.4f}")
            print("   theirs steps: " + ", ".join(
                f"p{s['point']} {s['kind']} -{s['removed']}" + (" capped" if s["capped"] else "") for s in t["points"])
                + f"; sparsity_list={[round(x, 4) for x in t['sparsity_list']]}; mask None at every layer "
                  f"(their 4-row importance causal): {causal}")
            row.update({"theirs_kv": t["attn_in"], "theirs_ffn": t["mlp_in"]})
        for v in variants + ["eager"]:
            r = o["runs"].get(v)
            if r is None:
                continue
            # our internal consistency: stats vs the cache actually stored vs the hooked module inputs
            checks = {"kv_cache==tokens_per_layer": r["kv_cache_lengths"] == r["tokens_per_layer"],
                      "self_attn input==tokens_per_layer": r["hook_attn_in"] == r["tokens_per_layer"],
                      "mlp input==ffn_tokens_per_layer": r["hook_mlp_in"] == r["ffn_tokens_per_layer"]}
            if not all(checks.values()):
                print(f"   WARNING ours[{v}] inconsistent: {checks}")
            steps = ", ".join(f"p{s['point']} {s['kind']} -{s['removed']}" + (" capped" if s.get("capped") else "")
                              for s in r["steps"])
            if v == "eager":
                te = (t or {}).get("eager", {"error": "no result"})
                if "error" in te:
                    print(f"   eager: ours KV {rle(r['tokens_per_layer'])}; theirs: {te['error']}")
                    row["eager"] = {"theirs_error": te["error"]}
                    continue
                tt, tlog, tsteps = te, tl[f"{name}|ff_eager"], tl[f"{name}|ff_steps_eager"]
                label = "ours[eager q4] vs theirs[eager]"
            else:
                if errors:
                    print(f"   ours[{v:7s}] q_used={r['importance_queries_used']} KV : {rle(r['tokens_per_layer'])}"
                          f" kept_ratio={r['kept_ratio']:.4f} steps: {steps}")
                    row["variants"][v] = {"ours_kv": r["tokens_per_layer"], "kept_ratio": r["kept_ratio"]}
                    continue
                tt, tlog, tsteps = t, their_logit, tl[f"{name}|ff_steps"]
                label = f"ours[{v:7s}] q_used={r['importance_queries_used']}"
            kv_eq = r["tokens_per_layer"] == tt["attn_in"]
            ffn_eq = r["ffn_tokens_per_layer"] == tt["mlp_in"]
            pos_diff = first_diff(r["kv_vision_positions"], tt["kv_vision_positions"])
            ffn_pos_diff = first_diff(r["ffn_vision_positions"], tt["ffn_vision_positions"])
            sym = 0
            if pos_diff is not None:
                a, b = set(r["kv_vision_positions"][pos_diff]), set(tt["kv_vision_positions"][pos_diff])
                sym = len(a ^ b)
            logit_diff = float((ol[f"{name}|{v}"] - tlog).abs().max())
            ids_equal = r["generated"] == tt["generated"]
            step_diff = float((ol[f"{name}|{v}_steps"] - tsteps).abs().max())
            extra = f"; generate: ids {'equal' if ids_equal else 'DIFFER'}, max|step logit diff|={step_diff:.2e}"
            if v == "eager":
                imp_diff = float("nan")
                if tt.get("prune_importance") and t.get("prune_importance"):
                    imp_diff = float((torch.tensor(tt["prune_importance"]) - torch.tensor(t["prune_importance"])).abs().max())
                extra += (f"; their eager: mask None {all(tt['attn_mask_is_none'])}, prune-row weight on future keys "
                         f"{tt.get('prune_weights_future_mass')} (sdpa: {t.get('prune_weights_future_mass')}), "
                         f"|importance eager - sdpa| {imp_diff:.1e}, vision attn {tt.get('vision_attn_class')}; "
                         f"their eager vs their sdpa max|logit diff|="
                         f"{float((tlog - their_logit).abs().max()) if their_logit is not None else float('nan'):.2e}")
            print(f"   {label} KV : {rle(r['tokens_per_layer'])}"
                  f"   KV equal={kv_eq} FFN equal={ffn_eq} kept-positions equal="
                  f"{pos_diff is None and ffn_pos_diff is None}"
                  + ("" if pos_diff is None else f" (first differs at layer {pos_diff}, |sym diff| {sym})")
                  + f"   max|logit diff|={logit_diff:.2e}" + extra)
            rec = {"ours_kv": r["tokens_per_layer"], "ours_ffn": r["ffn_tokens_per_layer"],
                   "kv_equal": kv_eq, "ffn_equal": ffn_eq, "positions_equal": pos_diff is None
                   and ffn_pos_diff is None, "first_position_diff_layer": pos_diff,
                   "max_abs_logit_diff": logit_diff, "kept_ratio": r["kept_ratio"],
                   "generated_ids_equal": ids_equal, "max_abs_step_logit_diff": step_diff,
                   "importance_queries_used": r["importance_queries_used"]}
            if v == "eager":
                row["eager"] = rec
            else:
                row["variants"][v] = rec
        if errors:
            rows.append(row)
            continue
        effect = float((their_logit - dense_last).abs().max())
        print(f"   (scale: their FrameFusion vs dense last-row max|diff| = {effect:.2e}, "
              f"dense last-row max|logit| = {float(dense_last.abs().max()):.2e})")
        rows.append(row)

    print()
    print("| regime | dense: prefill / generate max abs logit diff, ids | our KV counts (default) | their KV counts "
          "| KV / FFN equal (q1, q4, default) | max abs logit diff q=1 | q=4 | default: prefill, generate, ids "
          "| eager: KV/FFN equal, logit diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        d = dense_generation[row["regime"]]
        dense_cell = (f"{theirs['dense'][row['regime']]['max_abs_diff_all_positions']:.1e} / "
                      f"{d['max_abs_step_logit_diff']:.1e}, {'equal' if d['ids_equal'] else 'DIFFER'}")
        if "theirs_error" in row:
            ours_kv = rle(row["variants"]["default"]["ours_kv"]) if "default" in row["variants"] else "-"
            print(f"| {row['regime']} | {dense_cell} | {ours_kv} | error: {row['theirs_error']} | - | - | - | - | - |")
            continue
        vs = row["variants"]
        eq = ", ".join(f"{'Y' if vs[v]['kv_equal'] else 'N'}/{'Y' if vs[v]['ffn_equal'] else 'N'}"
                       for v in variants if v in vs)
        diffs = [f"{vs[v]['max_abs_logit_diff']:.1e}" if v in vs else "n/a" for v in variants]
        if "default" in vs:
            dv = vs["default"]
            diffs[-1] = (f"{dv['max_abs_logit_diff']:.1e}, {dv['max_abs_step_logit_diff']:.1e}, "
                         f"{'equal' if dv['generated_ids_equal'] else 'DIFFER'}")
        base = vs.get("default") or next(iter(vs.values()))
        e = row.get("eager", {})
        eager = ("error" if "theirs_error" in e else
                 f"{'Y' if e['kv_equal'] else 'N'}/{'Y' if e['ffn_equal'] else 'N'}, {e['max_abs_logit_diff']:.1e}"
                 if e else "n/a")
        print(f"| {row['regime']} | {dense_cell} | {rle(base['ours_kv'])} | {rle(row['theirs_kv'])} | {eq} | "
              + " | ".join(diffs) + f" | {eager} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"dense": theirs["dense"], "dense_generation": dense_generation,
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
