"""Train the demo model from scratch on synthetic video QA, with a fixed seed, on a CPU in under an hour.

    python scripts/train_demo.py --out framefusion/demo_model [--steps 5000] [--seed 0] [--minutes 75]

The defaults are the shipped model's recipe. The model is a stock Qwen2-VL with a small config
(framefusion.tiny) and a byte-level BPE tokenizer trained here on the questions and answers. Training clips
come from framefusion.synthetic (split "train"), sampled and preprocessed exactly as `framefusion ask` does
(uniform frames, framefusion.video.prompting.prepare_inputs) at 16 frames per clip (ask's default; --frames
draws a count per batch from several), with mild codec-like noise so that raw frames look like decoded mp4 frames. The loss is
teacher-forced cross entropy on the answer tokens only. At the end the model is scored on held-out mp4 files
(split "test") and saved with its processor; training.json in the output folder records the command, time
and metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from framefusion import reduced
from framefusion.demo import (
    DEMO_IMAGE_SIZE,
    DEMO_MAX_NEW_TOKENS,
    DEMO_NUM_FRAMES,
    DEMO_SOURCE_FPS,
    DEMO_SOURCE_FRAMES,
    DEMO_SOURCE_SIZE,
)
from framefusion.synthetic import (
    ANSWERS,
    COLORS,
    QUESTIONS,
    SHAPES,
    TASKS,
    SyntheticSample,
    iter_dataset,
)
from framefusion.tiny import build_tiny_model, build_tokenizer
from framefusion.video import VideoClip, sample_indices
from framefusion.video.prompting import prepare_inputs

SOURCE_FRAMES, SOURCE_SIZE, SOURCE_FPS = DEMO_SOURCE_FRAMES, DEMO_SOURCE_SIZE, DEMO_SOURCE_FPS
IGNORE = -100  # label of positions that carry no loss
FAMILY = "qwen2_vl"


@dataclass(frozen=True)
class ModelSize:
    """Dimensions of the demo Qwen2-VL."""

    num_layers: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    vision_layers: int = 2
    vision_width: int = 96
    vision_heads: int = 4
    vocab_size: int = 768
    image_size: int = DEMO_IMAGE_SIZE  # frames are resized to about image_size x image_size
    # LLM rotary embedding. Qwen2-VL gives (t, h, w) the highest, middle and lowest frequencies; with the real
    # models' base 1e6 and split the h and w angles barely move across a 3x3 token grid, and the model cannot
    # tell left from right. A small base and more frequencies for h and w make the spatial positions visible.
    rope_theta: float = 4.0
    mrope_section: tuple[int, ...] = (2, 7, 7)  # rotary frequencies for (t, h, w); sums to head_dim / 2


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (plus the time limit, which only stops early)."""

    seed: int = 0
    steps: int = 5000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    task_mix: tuple[str, ...] = (*TASKS, "shape")  # cycled; shape, the slowest to learn, comes twice as often
    noise: float = 3.0  # max std of the added pixel noise
    extra_turns: int = 0  # follow-up questions per clip, answered from the generator's metadata (multi-turn)
    # frames sampled per clip, drawn per batch from these. One count: under the published M-RoPE rule the
    # question's rotary offset from the video depends on the frame count, and a mix of 8-24 left direction,
    # position and shape at chance after 5000 steps here (see the README's demo section)
    frame_counts: tuple[int, ...] = (16,)
    minutes: float = 75.0  # stop early (and say so) when training runs longer than this
    eval_questions: int = 200  # held-out questions scored at the end
    eval_seed: int = 0  # seed of the held-out set (split "test")
    workers: int = 1  # processes preparing batches beside the training loop (one thread each)
    threads: int = 1  # torch threads of the training loop; with one worker, 1 + 1 fills 2 cores without
    # oversubscribing them (measured: 0.45 s/step against 0.72 s/step with 2 training threads)
    log_every: int = 100

    def __post_init__(self):
        if not self.frame_counts or any(n < 2 or n % 2 for n in self.frame_counts):
            raise ValueError(f"frame counts must be even numbers >= 2 (frames pair into temporal patches), "
                             f"got {self.frame_counts}")


# ---------------------------------------------------------------- model, tokenizer, processor


def demo_corpus() -> list[str]:
    """Every question and answer of the synthetic tasks, for the tokenizer."""
    lines = [QUESTIONS["color"], QUESTIONS["shape"], QUESTIONS["position_x"], QUESTIONS["position_y"]]
    for color in COLORS:
        for shape in SHAPES:
            lines.append(QUESTIONS["direction"].format(color=color, shape=shape))
        for other in COLORS:
            if other != color:
                lines.append(QUESTIONS["order"].format(a=color, b=other))
    answers = sorted({answer for values in ANSWERS.values() for answer in values})
    return lines * 4 + answers * 8


def _rope_parameters(size: ModelSize) -> dict:
    """Qwen2-VL multimodal rotary settings of the demo LLM."""
    head_dim = size.hidden_size // size.num_heads
    section = list(size.mrope_section)
    if sum(section) != head_dim // 2:
        raise ValueError(f"mrope_section must sum to head_dim / 2 = {head_dim // 2}, got {section}")
    return {"rope_type": "default", "rope_theta": float(size.rope_theta), "mrope_section": section}


def build_demo_model(size: ModelSize = ModelSize(), seed: int = 0) -> tuple[nn.Module, Any]:
    """A randomly initialised demo Qwen2-VL and its processor, with a tokenizer that knows the task words.

    Frames are brought to about image_size x image_size pixels each (the processor's per-frame cap), however
    many frames a clip has.
    """
    tokenizer = build_tokenizer(demo_corpus(), vocab_size=size.vocab_size, family=FAMILY)
    model, stock = build_tiny_model(
        FAMILY,
        num_layers=size.num_layers,
        hidden_size=size.hidden_size,
        num_heads=size.num_heads,
        num_kv_heads=size.num_kv_heads,
        intermediate_size=size.intermediate_size,
        vision_layers=size.vision_layers,
        image_size=size.image_size,
        seed=seed,
        text_config={"vocab_size": len(tokenizer), "rope_parameters": _rope_parameters(size)},
        vision_config={"embed_dim": size.vision_width, "num_heads": size.vision_heads},
    )
    for token in ("<|endoftext|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>"):
        if tokenizer.convert_tokens_to_ids(token) != stock.tokenizer.convert_tokens_to_ids(token):
            raise RuntimeError(f"the demo tokenizer's id of {token} differs from the model config's")
    video = stock.video_processor
    video.num_frames = DEMO_NUM_FRAMES  # the processor's default, the middle of the trained range
    processor = type(stock)(
        image_processor=stock.image_processor,
        video_processor=video,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    return model, processor


# ---------------------------------------------------------------- training examples


def sampled_clip(frames: np.ndarray, fps: float = SOURCE_FPS, num_frames: int = DEMO_NUM_FRAMES) -> VideoClip:
    """The frames load_video would pick from a clip of frames [T, H, W, 3] stored at `fps`."""
    times = np.arange(frames.shape[0]) / fps  # [T]
    duration = frames.shape[0] / fps
    chosen = sample_indices(times, duration, num_frames=num_frames)
    return VideoClip(frames=frames[chosen], timestamps=times[chosen], fps=fps, duration=duration)


def codec_noise(frames: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 plus Gaussian noise of a random std up to `noise`, like mp4 coding error."""
    sigma = np.float32(rng.uniform(0, noise))
    noisy = frames.astype(np.float32) + rng.standard_normal(frames.shape, dtype=np.float32) * sigma
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def answer_ids(processor: Any, answer: str) -> list[int]:
    """Token ids the model must produce for an answer: the word, then end of turn."""
    tokenizer = processor.tokenizer
    return tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def follow_up_questions(sample: SyntheticSample) -> list[tuple[str, str]]:
    """Other (question, answer) pairs a clip with one still needle answers exactly, read from its metadata."""
    if sample.task not in ("color", "shape", "position"):
        return []
    meta, size = sample.meta, sample.frames.shape[1]
    half = meta["side"] / 2 + 1  # the generator keeps needles this far inside a half
    y, x = meta["center"]
    pairs = [(QUESTIONS["shape"], meta["shape"])]
    if meta["shape"] == "square":
        pairs.append((QUESTIONS["color"], meta["color"]))
    for question, coordinate, before, after in (("position_x", x, "left", "right"), ("position_y", y, "top", "bottom")):
        if coordinate + half <= size / 2:
            pairs.append((QUESTIONS[question], before))
        elif coordinate - half >= size / 2:
            pairs.append((QUESTIONS[question], after))
    return [(question, answer) for question, answer in pairs if question != sample.question]


def next_turn_ids(processor: Any, question: str, answer: str, follow_up: str) -> list[int]:
    """Token ids the chat template puts between a finished answer and the next question's answer."""
    first = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]},
             {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    second = first + [{"role": "user", "content": [{"type": "text", "text": follow_up}]}]
    done = processor.apply_chat_template(first, tokenize=False)
    text = processor.apply_chat_template(second, add_generation_prompt=True, tokenize=False)
    end = done.rindex(answer) + len(answer) + len(processor.tokenizer.eos_token)
    if not text.startswith(done[:end]):
        raise RuntimeError("the chat template renders a conversation's turns inconsistently")
    return processor.tokenizer(text[end:], add_special_tokens=False)["input_ids"]


def training_example(
    processor: Any, sample: SyntheticSample, rng: np.random.Generator, noise: float, extra_turns: int = 0,
    num_frames: int = DEMO_NUM_FRAMES,
) -> dict:
    """Model inputs for one sample: prompt as at inference, then the answer tokens carrying the loss.

    With extra_turns, up to that many follow-up questions about the same clip come after the answer, each
    with its own answer carrying loss too (the first turn is exactly what inference sees).
    """
    clip = sampled_clip(sample.frames, num_frames=num_frames)
    clip.frames = codec_noise(clip.frames, rng, noise)
    inputs = prepare_inputs(processor, [clip], sample.question)
    prompt = inputs["input_ids"][0]  # [L]
    pieces, labels = [prompt], [torch.full_like(prompt, IGNORE)]
    answer = torch.tensor(answer_ids(processor, sample.answer))  # [A]
    pieces.append(answer)
    labels.append(answer)
    follow_ups = follow_up_questions(sample)
    for index in rng.permutation(len(follow_ups))[:extra_turns]:
        question, reply = follow_ups[index]
        bridge = torch.tensor(next_turn_ids(processor, sample.question, sample.answer, question))
        reply_ids = torch.tensor(answer_ids(processor, reply))
        pieces += [bridge, reply_ids]
        labels += [torch.full_like(bridge, IGNORE), reply_ids]
    input_ids = torch.cat(pieces)
    extra = input_ids.numel() - prompt.numel()
    return {
        "input_ids": input_ids,
        "labels": torch.cat(labels),
        "mm_token_type_ids": torch.cat([inputs["mm_token_type_ids"][0], torch.zeros(extra, dtype=torch.long)]),
        "pixel_values_videos": inputs["pixel_values_videos"],  # [patches, C * t * p * p]
        "video_grid_thw": inputs["video_grid_thw"],  # [1, 3]
        "task": sample.task,
    }


def collate(examples: Sequence[dict], pad_id: int) -> dict:
    """A right-padded batch of training examples."""
    length = max(e["input_ids"].numel() for e in examples)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.stack([F.pad(e[key], (0, length - e[key].numel()), value=value) for e in examples])

    input_ids = pad("input_ids", pad_id)  # [B, L]
    return {
        "input_ids": input_ids,
        "attention_mask": _real(examples, length),
        "labels": pad("labels", IGNORE),
        "mm_token_type_ids": pad("mm_token_type_ids", 0),
        "pixel_values_videos": torch.cat([e["pixel_values_videos"] for e in examples]),
        "video_grid_thw": torch.cat([e["video_grid_thw"] for e in examples]),
        "tasks": [e["task"] for e in examples],
    }


def _real(examples: Sequence[dict], length: int) -> torch.Tensor:
    """[B, L] long mask of the positions holding an example's tokens (not padding)."""
    sizes = torch.tensor([e["input_ids"].numel() for e in examples])
    return (torch.arange(length)[None, :] < sizes[:, None]).long()


class SyntheticBatches(torch.utils.data.IterableDataset):
    """Training batches in a fixed order: batch k holds samples k*B .. k*B+B-1 of the train split."""

    def __init__(self, processor: Any, config: TrainConfig):
        self.processor = processor
        self.config = config

    def __iter__(self) -> Iterator[dict]:
        config = self.config
        samples = iter_dataset(
            config.steps * config.batch_size, config.seed, split="train", tasks=config.task_mix,
            num_frames=SOURCE_FRAMES, size=SOURCE_SIZE,
        )
        batch = []
        for index, sample in enumerate(samples):
            if not batch:  # every clip of a batch has the same frame count
                batch_rng = np.random.default_rng([config.seed, index // config.batch_size, 11])
                num_frames = int(batch_rng.choice(config.frame_counts))
            rng = np.random.default_rng([config.seed, index, 7])  # augmentation noise of this sample
            batch.append(training_example(self.processor, sample, rng, config.noise, config.extra_turns, num_frames))
            if len(batch) == config.batch_size:
                yield collate(batch, self.processor.tokenizer.pad_token_id)
                batch = []


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


# ---------------------------------------------------------------- training loop


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    floor = config.min_lr_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def answer_hits(logits: torch.Tensor, labels: torch.Tensor) -> list[bool]:
    """Per example: every token of the first answer predicted right (teacher forced). logits [B, L, V], labels [B, L]."""
    predicted = logits[:, :-1].argmax(-1)  # [B, L-1] prediction of the next token
    target = labels[:, 1:]
    hits = []
    for row_predicted, row_target in zip(predicted, target):
        positions = torch.nonzero(row_target != IGNORE).flatten()
        gaps = torch.nonzero(positions.diff() > 1).flatten()
        first = positions[: int(gaps[0]) + 1] if gaps.numel() else positions  # the first answer's tokens
        hits.append(bool((row_predicted[first] == row_target[first]).all()))
    return hits


def optimizer_for(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-8)


def train(model: nn.Module, processor: Any, config: TrainConfig, log=print) -> dict:
    """Train in place for config.steps steps (or until config.minutes pass); returns a summary.

    Uses config.threads torch threads meanwhile; the caller's thread count comes back afterwards (evaluation
    uses every core), also when training fails or is interrupted.
    """
    threads_before = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with reduced(model, "dense"):  # the published model's M-RoPE positions, as it is evaluated and used
            return _train_loop(model, processor, config, log)
    finally:
        torch.set_num_threads(threads_before)
        model.eval()


def _train_loop(model: nn.Module, processor: Any, config: TrainConfig, log) -> dict:
    """The optimisation steps of train(), run with its thread setting."""
    torch.manual_seed(config.seed)
    model.train()
    optimizer = optimizer_for(model, config)
    loader = torch.utils.data.DataLoader(
        SyntheticBatches(processor, config), batch_size=None, num_workers=config.workers,
        worker_init_fn=_one_thread if config.workers else None, prefetch_factor=4 if config.workers else None,
    )
    start = time.perf_counter()
    recent_loss: deque[float] = deque(maxlen=config.log_every)
    recent_hits: dict[str, deque[bool]] = defaultdict(lambda: deque(maxlen=4 * config.log_every))
    step = 0
    stopped_early = False
    for step, batch in enumerate(loader, start=1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step - 1, config)
        tasks = batch.pop("tasks")
        output = model(**batch)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        recent_loss.append(output.loss.item())
        for task, hit in zip(tasks, answer_hits(output.logits.detach(), batch["labels"])):
            recent_hits[task].append(hit)
        elapsed = time.perf_counter() - start
        if step % config.log_every == 0 or step == config.steps:
            accuracy = " ".join(f"{t}={np.mean(h):.2f}" for t, h in sorted(recent_hits.items()))
            log(f"step {step}/{config.steps}  loss {np.mean(recent_loss):.4f}  train-acc {accuracy}  "
                f"lr {learning_rate(step - 1, config):.2e}  {elapsed / 60:.1f} min")
        if elapsed > config.minutes * 60 and step < config.steps:
            log(f"stopping early at step {step}: the {config.minutes:g}-minute limit has passed")
            stopped_early = True
            break
    return {"steps": step, "stopped_early": stopped_early, "train_seconds": time.perf_counter() - start,
            "final_loss": float(np.mean(recent_loss)) if recent_loss else None}


def evaluate_heldout(model: nn.Module, processor: Any, config: TrainConfig, methods=(("dense", 1.0),)) -> dict:
    """Score the model on held-out mp4 clips (split "test") for each (method, budget)."""
    from framefusion.pipeline.evaluation import evaluate_dataset, load_dataset
    from framefusion.pipeline.loading import LoadedModel
    from framefusion.synthetic import write_dataset

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        jsonl = write_dataset(folder, config.eval_questions, config.eval_seed, split="test",
                              num_frames=SOURCE_FRAMES, size=SOURCE_SIZE, fps=SOURCE_FPS)
        items = load_dataset(jsonl)
        for method, budget in methods:
            score = evaluate_dataset(LoadedModel.of(model, processor), items, method=method, budget=budget,
                                     num_frames=DEMO_NUM_FRAMES, max_new_tokens=DEMO_MAX_NEW_TOKENS)
            results[f"{method}@{budget:g}"] = score.to_dict()
    return results


def save(model: nn.Module, processor: Any, out: Path, record: dict) -> int:
    """Write model, processor and training.json flat into `out`; returns the folder's size in bytes."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    nested = [p for p in out.rglob("*") if p.is_file() and p.parent != out]
    if nested:
        raise RuntimeError(f"package data must be flat, but these are nested: {nested}")
    return sum(p.stat().st_size for p in out.iterdir() if p.is_file())


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in __import__("os").getloadavg()]
    except (AttributeError, OSError):
        return None


def _config_from(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the command line asks for (ValueError when a value is out of range)."""
    return TrainConfig(
        seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr, minutes=args.minutes,
        eval_questions=args.eval_questions, eval_seed=args.eval_seed, workers=args.workers, threads=args.threads,
        log_every=args.log_every, task_mix=tuple(args.task_mix), extra_turns=args.extra_turns,
        frame_counts=tuple(args.frames),
    )


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: train, evaluate, save, print the metrics and the wall time."""
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python scripts/train_demo.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to save the model in (flat)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="stop early after this long")
    parser.add_argument("--eval-questions", type=int, default=defaults.eval_questions)
    parser.add_argument("--eval-seed", type=int, default=defaults.eval_seed)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads of the training loop")
    parser.add_argument("--log-every", type=int, default=defaults.log_every)
    parser.add_argument("--extra-turns", type=int, default=defaults.extra_turns)
    parser.add_argument("--task-mix", nargs="+", default=list(defaults.task_mix), choices=TASKS,
                        help="tasks cycled over the samples; repeat one to train on it more often")
    parser.add_argument("--frames", nargs="+", type=int, default=list(defaults.frame_counts),
                        help="frames sampled per training clip, drawn per batch from these (even numbers)")
    parser.add_argument("--size", type=json.loads, default={}, help='ModelSize overrides as JSON, e.g. \'{"num_layers": 6}\'')
    args = parser.parse_args(argv)

    try:
        config = _config_from(args)
    except ValueError as error:
        parser.error(str(error))
    size = ModelSize(**args.size)
    command = "python scripts/train_demo.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    print(command)
    print(f"config: {config}\nmodel: {size}\nload average at start: {_load_average()}")
    wall_start = time.perf_counter()
    model, processor = build_demo_model(size, config.seed)
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.2f}M parameters, {config.threads} torch threads for training")

    summary = train(model, processor, config, log=partial(print, flush=True))  # progress shows when logged
    print(f"training: {summary['steps']} steps in {summary['train_seconds'] / 60:.1f} min")
    record = {
        "command": command,
        "config": asdict(config),
        "model": asdict(size),
        "parameters": params,
        "summary": summary,
        "torch_threads": config.threads,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    save(model, processor, args.out, record)  # the weights first: a failing evaluation must not lose the training
    print(f"saved to {args.out}; evaluating on {config.eval_questions} held-out questions", flush=True)
    metrics = evaluate_heldout(model, processor, config, methods=(("dense", 1.0), ("framefusion", 0.3)))
    wall = time.perf_counter() - wall_start
    record.update(heldout=metrics, wall_seconds=round(wall, 1), load_average_end=_load_average())
    size_bytes = save(model, processor, args.out, record)
    for name, score in metrics.items():
        tasks = " ".join(f"{t}={a:.3f}" for t, a in score["per_task"].items())
        print(f"held-out {name}: accuracy {score['accuracy']:.3f} ({score['correct']}/{score['total']}), "
              f"kept_ratio {score['kept_ratio']:.3f}; {tasks}")
    print(f"saved to {args.out} ({size_bytes / 1e6:.1f} MB); wall time {wall / 60:.1f} min; "
          f"load average at end: {_load_average()}")
    return record


if __name__ == "__main__":
    main()
