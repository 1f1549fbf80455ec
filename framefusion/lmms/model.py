"""The lmms-eval model `framefusion`: any supported family, any token-reduction method, at a budget.

    python -m lmms_eval --model framefusion --model_args pretrained=Qwen/Qwen2-VL-7B-Instruct,method=framefusion,\\
        budget=0.3,frames=64 --tasks videomme --output_path out

A thin adapter: the model is loaded by framefusion.pipeline.loading, each request answered by framefusion.pipeline.ask
(video decoding and sampling, prompt, the method installed for the call, generation, timings). Requests run one by
one (batch size 1); several processes (`accelerate launch` / `torchrun`) each take their rank's share, as lmms-eval
splits them, on cuda:LOCAL_RANK when there is a GPU. With stats_file=PATH every answered request appends one JSON
line: doc_id, task, method, budget, kept_ratio, prefill_ratio, vision tokens, tokens per layer and timings.

Benchmarks ask several questions per video (VideoMME three, in consecutive requests): the vision features of
each video input (per file and sampling, keyed by the content of the processor's pixel tensors) stay in a
least-recently-used cache of at most feature_cache_mb megabytes (0 turns it off), so a video is encoded once
while its questions follow each other; the previous request's decoded frames are reused when it named the same
files. The stats lines say whether the request's features came from the cache and the cache's hits, misses,
evictions and bytes so far.

model_args: the keys of MODEL_ARGS below; any method parameter by its library name (framefusion.methods, e.g.
ratio_lower_bound, saliency, tau); and, for checkpoints in an original format (LLaVA-NeXT, InternVL2.5,
MiniCPM-V 2.6, NVILA), the config keys that format lets users override (e.g. mm_newline_position=grid), as
`framefusion --model-arg KEY=VALUE` does. Anything else is an error naming the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from lmms_eval.api.model import lmms
from loguru import logger

from framefusion.core.feature_cache import FeatureCache
from framefusion.methods import get_method, method_parameter_names
from framefusion.pipeline import ask, load_videos
from framefusion.pipeline.loading import ModelArgumentError, load_model
from framefusion.video import Sampling, VideoClip

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".flv", ".wmv", ".mpeg", ".mpg", ".ts", ".gif"}
DEFAULT_MAX_NEW_TOKENS = 64  # when the task's generation_kwargs name none
DEFAULT_FEATURE_CACHE_MB = 512  # vision features kept across requests (a few videos of 64 frames at 7B size)
MODEL_ARGS = {  # key: default (lmms-eval parses numbers and booleans; "None" stays a string)
    "pretrained": "demo", "method": "framefusion", "budget": 0.3, "similarity": None,
    "frames": 16, "fps": None, "max_frames": 256,
    "decoder": "av", "device": "auto", "dtype": "auto", "attn": "sdpa", "stats_file": None,
    "random_weights": False, "width_scale": None, "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
    "feature_cache_mb": DEFAULT_FEATURE_CACHE_MB,
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
        method_params = set(method_parameter_names())
        args = {key: _none(model_args.get(key, default)) for key, default in MODEL_ARGS.items()}
        get_method(str(args["method"]))  # a clear error listing the methods
        batch = int(model_args.get("batch_size") or 1)
        if batch > 1:
            logger.warning(f"framefusion answers one request at a time; --batch_size {batch} runs them one by one")
        self.method, self.budget = str(args["method"]), float(args["budget"])
        self.params = {key: _none(value) for key, value in model_args.items() if key in method_params}
        if args["similarity"] is not None:  # the CLI's name for FrameFusion's similarity_lower_bound
            self.params["similarity_lower_bound"] = float(args["similarity"])
        checkpoint_args = {key: str(value) for key, value in model_args.items()
                           if key not in MODEL_ARGS and key not in LMMS_ARGS and key not in method_params}
        fps = args["fps"]
        self.sampling = Sampling(num_frames=None if fps is not None else int(args["frames"]),
                                 fps=None if fps is None else float(fps), max_frames=int(args["max_frames"]),
                                 decoder=str(args["decoder"]))
        self.max_new_tokens = int(args["max_new_tokens"])
        cache_mb = float(args["feature_cache_mb"] or 0)
        self.features = FeatureCache(max_bytes=int(cache_mb * 2 ** 20)) if cache_mb > 0 else None
        self._last_videos: tuple[tuple[str, ...], list[VideoClip], float] | None = None  # paths, clips, seconds
        self.stats_file = None if args["stats_file"] is None else Path(str(args["stats_file"]))
        device = str(args["device"])
        if device == "auto" and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # one GPU per process under accelerate / torchrun
        try:
            self.loaded = load_model(str(args["pretrained"]), device=device, dtype=str(args["dtype"]),
                                     attn=str(args["attn"]), random_weights=bool(args["random_weights"]),
                                     width_scale=None if args["width_scale"] is None else float(args["width_scale"]),
                                     model_args=checkpoint_args)
        except ModelArgumentError as error:
            known = sorted({*MODEL_ARGS, *method_params, *error.known})
            raise ValueError(f"framefusion: unknown model_args {', '.join(error.unknown)}; known: "
                             f"{', '.join(known)}") from None
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
            result, reuse = self.answer(videos, images, question, gen_kwargs)
            answers.append(result.answer)
            if self.stats_file is not None and not request.metadata.get("__padding_only__"):
                self.write_stats(request, result, reuse)
        return answers

    def answer(self, videos: list[str], images: list[Any], question: str, gen_kwargs: dict) -> tuple[Any, dict]:
        """(framefusion.pipeline.ask's result, what it reused) for one request: the videos decoded unless the
        previous request named the same files, their features from the cache when seen before."""
        clips, video_s, frames_reused = self._clips(videos)
        hits = self.features.hits if self.features is not None else 0
        if self.features is not None:
            self.features.label = f"{' + '.join(videos)} @ {self.sampling}"
        result = ask(self.loaded, clips, question, images=images, method=self.method, budget=self.budget,
                     params=self.params, features=self.features,
                     **generation_options(gen_kwargs, self.max_new_tokens))
        result.timings.video_s = video_s
        result.timings.total_s += video_s
        reuse: dict[str, Any] = {"frames_reused": frames_reused}
        if self.features is not None:
            reuse["feature_cache"] = {"hit": self.features.hits > hits, **self.features.counters(),
                                      "limit_bytes": self.features.max_bytes}
        return result, reuse

    def _clips(self, videos: list[str]) -> tuple[list[VideoClip], float, bool]:
        """(sampled clips, seconds spent decoding now, whether they were the previous request's)."""
        key = tuple(videos)
        if self._last_videos is not None and self._last_videos[0] == key and videos:
            return self._last_videos[1], 0.0, True
        clips, seconds = load_videos(videos, self.sampling)
        self._last_videos = (key, clips, seconds)
        return clips, seconds, False

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

    def write_stats(self, request, result, reuse: dict | None = None) -> None:
        """Append one JSON line for this request (one write: lines of several processes do not interleave)."""
        timings = result.timings.to_dict()
        record = {"doc_id": request.doc_id, "task": request.task_name, "rank": self.rank, "method": result.method,
                  "budget": result.budget, "kept_ratio": result.kept_ratio,
                  "prefill_ratio": result.prefill_ratio, "vision_tokens": result.vision_tokens,
                  "importance_queries": result.importance_queries, "frames": result.frames,
                  "similarity_threshold": result.similarity_threshold, "threshold_source": result.threshold_source,
                  "params": result.params_as_run(), "answer_ids": result.answer_ids,
                  "tokens_per_layer": result.tokens_per_layer, "timings": timings,
                  "generated_tokens": result.generated_tokens, **(reuse or {})}
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


