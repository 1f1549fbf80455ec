"""The checkpoint's tokenizer, as published, without remote code.

InternLM2 checkpoints ship `tokenizer.model` (SentencePiece BPE) for the remote-code InternLM2Tokenizer: it is
rebuilt here as a fast tokenizer (sentencepiece.py) with the tokenizer_config.json's added tokens (those with ids
inside the SentencePiece vocabulary take over those slots, as InternLM2's own fast converter does) and its
add_bos_token / add_eos_token. Other LLMs (Qwen2, Llama) name a transformers tokenizer class and load with
AutoTokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REMOTE_SENTENCEPIECE = ("InternLM2Tokenizer", "InternLM2TokenizerFast")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token_text(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def load_tokenizer(folder: Path):
    """The checkpoint's tokenizer: InternLM2's SentencePiece model natively, anything else with AutoTokenizer."""
    settings = _read_json(folder / "tokenizer_config.json")
    if settings.get("tokenizer_class") in REMOTE_SENTENCEPIECE or (
            (folder / "tokenizer.model").is_file() and not (folder / "tokenizer.json").is_file()):
        return sentencepiece_tokenizer(folder, settings)
    import transformers

    # the class the checkpoint names, directly: AutoTokenizer would read config.json, whose auto_map points to the
    # remote code, and ask to trust it
    name = settings.get("tokenizer_class") or "PreTrainedTokenizerFast"
    tokenizer_class = getattr(transformers, name, None) or getattr(transformers, name.removesuffix("Fast"), None)
    if tokenizer_class is None:
        raise ValueError(f"{folder}: tokenizer class {name!r} is neither in transformers nor InternLM2's")
    return tokenizer_class.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)


def sentencepiece_tokenizer(folder: Path, settings: dict[str, Any]):
    """InternLM2's tokenizer (tokenizer.model + tokenizer_config.json) as a PreTrainedTokenizerFast."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    from framefusion.models.internvl_chat.sentencepiece import fast_tokenizer, read_model

    model = read_model(folder / settings.get("vocab_file", "tokenizer.model").lstrip("./"))
    added = {int(i): spec for i, spec in (settings.get("added_tokens_decoder") or {}).items()}
    for text, i in _read_json(folder / "added_tokens.json").items():
        added.setdefault(int(i), {"content": text, "special": True})
    size = len(model.pieces)
    inside = {i: spec["content"] for i, spec in added.items() if i < size}
    backend = fast_tokenizer(model, inside)
    for i in sorted(i for i in added if i >= size):  # appended in id order: tokenizers numbers them consecutively
        spec = added[i]
        token = AddedToken(spec["content"], lstrip=spec.get("lstrip", False), rstrip=spec.get("rstrip", False),
                           normalized=spec.get("normalized", False), single_word=spec.get("single_word", False),
                           special=spec.get("special", True))
        backend.add_special_tokens([token]) if token.special else backend.add_tokens([token])
        if backend.token_to_id(spec["content"]) != i:
            raise ValueError(f"{folder}: added token {spec['content']!r} must have id {i} but the vocabulary's "
                             f"next free id is {backend.token_to_id(spec['content'])}")
    special_map = _read_json(folder / "special_tokens_map.json")
    names = {}
    for key, default in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"), ("pad_token", "</s>")):
        names[key] = _token_text(settings.get(key, special_map.get(key, default)))
    bos, eos = names["bos_token"], names["eos_token"]
    add_bos, add_eos = settings.get("add_bos_token", True), settings.get("add_eos_token", False)
    single = " ".join([*([f"{bos}:0"] if add_bos else []), "$A:0", *([f"{eos}:0"] if add_eos else [])])
    pair = " ".join([single, *([f"{bos}:1"] if add_bos else []), "$B:1", *([f"{eos}:1"] if add_eos else [])])
    specials = [(t, backend.token_to_id(t)) for t, on in ((bos, add_bos), (eos, add_eos)) if on]
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    extra = [_token_text(t) for t in settings.get("additional_special_tokens") or special_map.get(
        "additional_special_tokens") or []]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False,
                                        model_max_length=int(min(settings.get("model_max_length", 10**9), 10**9)),
                                        padding_side=settings.get("padding_side", "right"), **names)
    if extra:
        tokenizer.add_special_tokens({"extra_special_tokens": extra}, replace_extra_special_tokens=False)
    return tokenizer
