"""lmms-eval plugin: `python -m lmms_eval --model framefusion` on a local task, against framefusion.pipeline.evaluation.

Every test runs lmms-eval itself in a subprocess (offline), on the demo model and synthetic mp4s, with a local
task (`dataset_path: json`, `--include_path`). lmms-eval exits 0 even when an evaluation fails, so the runs use
`--verbosity DEBUG` (which re-raises) and the tests read the files it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lmms_eval

QUESTIONS = 12
FRAMES = 16
TASK_YAML = """task: fftest
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 8
  temperature: 0
  do_sample: false
  until: ["\\n\\n"]
process_results: !function utils.process_results
metric_list:
  - metric: accuracy
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.1
"""
TASK_UTILS = '''from framefusion.pipeline.evaluation import score_answer


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"accuracy": float(score_answer(results[0], doc["answer"], doc["options"]))}
'''


@pytest.fixture(scope="module")
def local_task(tmp_path_factory):
    """(task folder, dataset items): synthetic held-out questions as mp4 files and a local lmms-eval task."""
    from framefusion.pipeline.evaluation import load_dataset
    from framefusion.synthetic import write_dataset

    root = tmp_path_factory.mktemp("lmms")
    jsonl = write_dataset(root / "data", QUESTIONS, 0, split="test", num_frames=32, size=112)
    items = load_dataset(jsonl)
    rows = [{"video": str(item.video), "question": item.question, "options": item.options, "answer": item.answer,
             "task": item.task} for item in items]
    data = root / "lmms.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = root / "tasks"
    task.mkdir()
    (task / "fftest.yaml").write_text(TASK_YAML.format(data=data))
    (task / "utils.py").write_text(TASK_UTILS)
    return task, items


def run_lmms(task: Path, out: Path, model_args: str, launcher: list[str] | None = None) -> dict:
    """Run lmms-eval on the local task; returns the results JSON (fails on a missing results file)."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(out / "hf"),
           "TOKENIZERS_PARALLELISM": "false"}
    command = [*(launcher or [sys.executable]), "-m", "lmms_eval", "--model", "framefusion", "--model_args",
               model_args, "--tasks", "fftest", "--include_path", str(task), "--output_path", str(out / "results"),
               "--log_samples", "--verbosity", "DEBUG"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = sorted((out / "results").rglob("*_results.json"))
    assert found, "lmms-eval wrote no results: " + done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(found[-1].read_text())
    samples = sorted((out / "results").rglob("*_samples_fftest.jsonl"))
    results["samples"] = [json.loads(line) for line in samples[-1].read_text().splitlines()]
    return results


def direct_score(items, method, budget):
    from framefusion.pipeline.evaluation import evaluate_dataset
    from framefusion.pipeline.loading import load_model

    loaded = load_model("demo", device="cpu")
    results = []
    score = evaluate_dataset(loaded, items, method=method, budget=budget, num_frames=FRAMES,
                             max_new_tokens=8, on_item=results.append)
    return score, [r.prediction for r in results]


@pytest.mark.parametrize("method, budget", [("dense", 1.0), ("framefusion", 0.3)])
def test_lmms_eval_scores_what_framefusion_evaluation_scores(method, budget, local_task, tmp_path):
    task, items = local_task
    stats = tmp_path / "stats.jsonl"
    results = run_lmms(task, tmp_path, f"pretrained=demo,method={method},budget={budget},frames={FRAMES},"
                                       f"stats_file={stats}")
    accuracy = results["results"]["fftest"]["accuracy,none"]
    score, predictions = direct_score(items, method, budget)
    assert accuracy == pytest.approx(score.accuracy)
    by_doc = {sample["doc_id"]: sample["filtered_resps"] for sample in results["samples"]}
    answers = [by_doc[i][0] if isinstance(by_doc[i], list) else by_doc[i] for i in range(len(items))]
    assert answers == predictions  # the same answers, not only the same count
    lines = [json.loads(line) for line in stats.read_text().splitlines()]
    assert sorted(line["doc_id"] for line in lines) == list(range(QUESTIONS))
    for line in lines:
        assert line["task"] == "fftest" and line["method"] == method and line["budget"] == budget
        assert abs(line["kept_ratio"] - budget) <= 0.02 and line["vision_tokens"] > 0
        assert set(line["timings"]) >= {"video_s", "vision_s", "prefill_s", "decode_s", "total_s"}
        assert len(line["tokens_per_layer"]) == 4


def test_two_processes_split_the_requests_and_agree(local_task, tmp_path):
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.fail("torchrun is not installed next to this Python")
    task, _ = local_task
    stats = tmp_path / "stats.jsonl"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    parallel = run_lmms(task, tmp_path, f"pretrained=demo,method=framefusion,budget=0.3,frames={FRAMES},"
                                        f"stats_file={stats}", launcher=[torchrun, "--nproc_per_node", "2"])
    lines = [json.loads(line) for line in stats.read_text().splitlines()]
    assert {line["rank"] for line in lines} == {0, 1}  # both processes answered
    assert sorted(line["doc_id"] for line in lines) == list(range(QUESTIONS))  # each request once
    single = tmp_path / "single"
    single.mkdir()
    alone = run_lmms(task, single, f"pretrained=demo,method=framefusion,budget=0.3,frames={FRAMES}")
    assert parallel["results"]["fftest"]["accuracy,none"] == alone["results"]["fftest"]["accuracy,none"]


def test_unknown_model_args_are_a_clear_error(local_task, tmp_path):
    task, _ = local_task
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-m", "lmms_eval", "--model", "framefusion", "--model_args",
                           "pretrained=demo,budgett=0.3", "--tasks", "fftest", "--include_path", str(task),
                           "--output_path", str(tmp_path / "out"), "--verbosity", "DEBUG"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode != 0
    assert "unknown model_args budgett" in done.stdout + done.stderr


def test_any_registered_method_and_its_parameters_pass_through_model_args(tmp_path):
    """In process (no lmms-eval run): FlashVID with budget_rule=authors, as `--model_args method=flashvid,...`."""
    from conftest import make_random_clip

    from framefusion.lmms.model import FrameFusionChat
    from framefusion.pipeline import ask

    chat = FrameFusionChat(pretrained="demo", method="flashvid", budget=0.3, budget_rule="authors", device="cpu")
    assert chat.method == "flashvid" and chat.params["budget_rule"] == "authors"
    result = ask(chat.loaded, make_random_clip(16, size=48), "What colour is the square?", method=chat.method,
                 budget=chat.budget, params=chat.params, max_new_tokens=1)
    assert result.stats.method == "flashvid"
    assert [step.point for step in result.stats.steps] == [0]  # the authors' absolute layer 20: none of 4 layers
def test_consecutive_questions_on_a_video_encode_it_once(local_task, tmp_path):
    """VideoMME's pattern (three questions per video, one after another): each video is encoded once, its later
    requests are served from the feature cache (and its decoded frames reused), with the answers of requests run
    without any cache."""
    import dataclasses

    task_dir, items = local_task
    grouped = [dataclasses.replace(item, video=items[index // 3 * 3].video) for index, item in enumerate(items)]
    data = tmp_path / "grouped.jsonl"
    data.write_text("".join(json.dumps({"video": str(i.video), "question": i.question, "options": i.options,
                                        "answer": i.answer, "task": i.task}) + "\n" for i in grouped))
    task = tmp_path / "tasks"
    task.mkdir()
    (task / "fftest.yaml").write_text(TASK_YAML.format(data=data))
    (task / "utils.py").write_text((task_dir / "utils.py").read_text())
    stats = tmp_path / "stats.jsonl"
    results = run_lmms(task, tmp_path, f"pretrained=demo,method=framefusion,budget=0.3,frames={FRAMES},"
                                       f"stats_file={stats},feature_cache_mb=64")
    lines = sorted((json.loads(line) for line in stats.read_text().splitlines()), key=lambda line: line["doc_id"])
    videos = len(items) // 3
    caches = [line["feature_cache"] for line in lines]
    assert sum(not cache["hit"] for cache in caches) == videos  # one encoding per video
    assert max(cache["misses"] for cache in caches) == videos and max(cache["hits"] for cache in caches) == 2 * videos
    assert all(0 < cache["bytes"] <= cache["limit_bytes"] == 64 * 2 ** 20 for cache in caches)
    assert sum(line["frames_reused"] for line in lines) == 2 * videos
    _, predictions = direct_score(grouped, "framefusion", 0.3)
    by_doc = {sample["doc_id"]: sample["filtered_resps"] for sample in results["samples"]}
    answers = [by_doc[i][0] if isinstance(by_doc[i], list) else by_doc[i] for i in range(len(items))]
    assert answers == predictions
