"""The lmms-eval model `framefusion`: any supported family, any token-reduction method, at a budget.

    python -m lmms_eval --model framefusion --model_args pretrained=Qwen/Qwen2-VL-7B-Instruct,method=framefusion,\\
        budget=0.3,frames=64 --tasks videomme --output_path out

A thin adapter: the model is loaded by framefusion.pipeline.loading, each request answered by framefusion.pipeline.ask
(video decoding and sampling, prompt, the method installed for the call, generation, timings). Requests run one by
one (batch size 1); several processes (`accelerate launch` / `torchrun`) each take their rank's share, as lmms-eval
splits them, on cuda:LOCAL_RANK when there is a GPU. With stats_file=PATH every answered request appends one JSON
line: doc_id, task, method, budget, kept_ratio, prefill_ratio, vision tokens, tokens per layer and timings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lmms_eval.api.model import lmms
from loguru import logger

from framefusion.methods import get_method
from framefusion.pipeline import ask
from framefusion.pipeline.loading import load_model
from framefusion.video import Sampling

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".flv", ".wmv", ".mpeg", ".mpg", ".ts", ".gif"}
DEFAULT_MAX_NEW_TOKENS = 64  # when the task's generation_kwargs name none
MODEL_ARGS = {  # key: default (lmms-eval parses numbers and booleans; "None" stays a string)
    "pretrained": "demo", "method": "framefusion", "budget": 0.3, "similarity": 0.6, "ratio_lower_bound": 0.1,
    "importance_queries": None, "saliency": "attention", "budget_rule": "matched", "frames": 16, "fps": None,
    "max_frames": 256,
    "decoder": "av", "device": "auto", "dtype": "auto", "attn": "sdpa", "stats_file": None,
    "random_weights": False, "width_scale": None, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
}
LMMS_ARGS = ("batch_size", "max_batch_size")  # lmms-eval passes these to every model


def _none(value: Any) -> Any:
    """lmms-eval hands "None" over as a string."""
    return None if isinstance(value, str) and value.strip().lower() in ("none", "null", "") else value


class FrameFusionChat(lmms):
    """lmms-eval chat model: messages with video (file paths), image and text parts."""

    is_simple = False

    def __init__(self, **model_args: Any):
        super().__init__()
        unknown = sorted(set(model_args) - set(MODEL_ARGS) - set(LMMS_ARGS))
        if unknown:
            raise ValueError(f"framefusion: unknown model_args {', '.join(unknown)}; known: "
                             f"{', '.join(MODEL_ARGS)}")
        args = {key: _none(model_args.get(key, default)) for key, default in MODEL_ARGS.items()}
        get_method(str(args["method"]))  # a clear error listing the methods
        batch = int(model_args.get("batch_size") or 1)
        if batch > 1:
            logger.warning(f"framefusion answers one request at a time; --batch_size {batch} runs them one by one")
        self.method, self.budget = str(args["method"]), float(args["budget"])
        self.params = {"similarity_lower_bound": float(args["similarity"]),
                       "ratio_lower_bound": float(args["ratio_lower_bound"]),
                       "importance_queries": None if args["importance_queries"] is None else
                       int(args["importance_queries"]), "saliency": str(args["saliency"]),
                       "budget_rule": str(args["budget_rule"])}
        fps = args["fps"]
        self.sampling = Sampling(num_frames=None if fps is not None else int(args["frames"]),
                                 fps=None if fps is None else float(fps), max_frames=int(args["max_frames"]),
                                 decoder=str(args["decoder"]))
        self.max_new_tokens = int(args["max_new_tokens"])
        self.stats_file = None if args["stats_file"] is None else Path(str(args["stats_file"]))
        device = str(args["device"])
        if device == "auto" and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # one GPU per process under accelerate / torchrun
        self.loaded = load_model(str(args["pretrained"]), device=device, dtype=str(args["dtype"]),
                                 attn=str(args["attn"]), random_weights=bool(args["random_weights"]),
                                 width_scale=None if args["width_scale"] is None else float(args["width_scale"]))
        self._device = self.loaded.device

    @property
    def device(self) -> torch.device:
        """Where the model runs (lmms-eval gathers request counts on it)."""
        return self._device

    # ---------------------------------------------------------------- requests

    def generate_until(self, requests) -> list[str]:
        """Answer each request with the method installed; stop strings, max_new_tokens and temperature from the
        task's generation_kwargs."""
        from tqdm import tqdm

        answers = []
        for request in tqdm(requests, disable=self.rank != 0, desc="framefusion"):
            videos, images, question, gen_kwargs = self.read_request(request)
            result = ask(self.loaded, videos, question, images=images, method=self.method, budget=self.budget,
                         params=self.params, sampling=self.sampling, **generation_options(gen_kwargs,
                                                                                          self.max_new_tokens))
            answers.append(result.answer)
            if self.stats_file is not None and not request.metadata.get("__padding_only__"):
                self.write_stats(request, result)
        return answers

    def read_request(self, request) -> tuple[list[str], list[Any], str, dict]:
        """(video paths, images, question text, generation kwargs) of a chat request."""
        _context, doc_to_messages, gen_kwargs, doc_id, task, split = request.args
        messages = doc_to_messages(self.task_dict[task][split][doc_id])
        videos, images, texts = [], [], []
        for message in messages:
            for part in message.get("content", []) if isinstance(message.get("content"), list) else []:
                kind = part.get("type")
                if kind == "video":
                    videos.append(str(part.get("url") or part.get("video")))
                elif kind == "image":
                    images.append(_image(part.get("url") if part.get("url") is not None else part.get("image")))
                elif kind == "text":
                    texts.append(part.get("text", ""))
            if isinstance(message.get("content"), str):
                texts.append(message["content"])
        return videos, images, "\n".join(t for t in texts if t), dict(gen_kwargs or {})

    def write_stats(self, request, result) -> None:
        """Append one JSON line for this request (one write: lines of several processes do not interleave)."""
        timings = result.timings.to_dict()
        record = {"doc_id": request.doc_id, "task": request.task_name, "rank": self.rank, "method": result.method,
                  "budget": result.budget, "kept_ratio": result.kept_ratio,
                  "prefill_ratio": result.prefill_ratio, "vision_tokens": result.vision_tokens,
                  "importance_queries": result.importance_queries, "frames": result.frames,
                  "tokens_per_layer": result.tokens_per_layer, "timings": timings,
                  "generated_tokens": result.generated_tokens}
        self.stats_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.stats_file, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    def loglikelihood(self, requests):
        """Not supported: framefusion generates answers (use a generate_until task)."""
        raise NotImplementedError("framefusion answers generate_until tasks; loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests):
        """Not supported."""
        raise NotImplementedError("framefusion answers single-round generate_until tasks")


class FrameFusionSimple(FrameFusionChat):
    """lmms-eval simple model (`--force_simple`): a prompt string and the task's doc_to_visual."""

    is_simple = True

    def read_request(self, request) -> tuple[list[str], list[Any], str, dict]:
        """(video paths, images, prompt, generation kwargs) of a simple request."""
        context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        videos = [str(v) for v in visuals if isinstance(v, (str, Path)) and Path(str(v)).suffix.lower() in VIDEO_SUFFIXES]
        images = [_image(v) for v in visuals if not (isinstance(v, (str, Path)) and str(v) in videos)]
        return videos, images, context, dict(gen_kwargs or {})


def _image(value: Any) -> Any:
    """A PIL image from a path (images given as objects pass through)."""
    if isinstance(value, (str, Path)):
        from PIL import Image

        with Image.open(value) as image:
            return image.convert("RGB")
    return value


def generation_options(gen_kwargs: dict, default_max_new_tokens: int) -> dict:
    """ask()'s max_new_tokens, temperature, top_p and stop from an lmms-eval task's generation_kwargs."""
    until = gen_kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    temperature = float(gen_kwargs.get("temperature") or 0.0)
    if not gen_kwargs.get("do_sample", temperature > 0):
        temperature = 0.0
    top_p = gen_kwargs.get("top_p")
    return {"max_new_tokens": int(gen_kwargs.get("max_new_tokens") or default_max_new_tokens),
            "temperature": temperature, "top_p": None if top_p is None else float(top_p),
            "stop": [s for s in until if s]}


