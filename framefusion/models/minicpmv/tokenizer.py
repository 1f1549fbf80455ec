"""MiniCPM-V 2.6's tokenizer (a Qwen2 byte-level BPE with MiniCPM-V's markers), read without its remote code.

The original's tokenizer class (MiniCPMVTokenizerFast) only adds marker names to Qwen2's fast tokenizer, so the
checkpoint's tokenizer.json is read by transformers' fast tokenizer directly; the special tokens and the chat
template come from tokenizer_config.json. Every marker the prompt uses must encode as one token.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken
from transformers import PreTrainedTokenizerFast

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def _token_text(value: object) -> str | None:
    """A special token from tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def load_tokenizer(folder: Path, markers: Iterable[str]) -> PreTrainedTokenizerFast:
    """The checkpoint's tokenizer; ValueError naming a marker its vocabulary does not have."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no tokenizer.json (MiniCPM-V 2.6's tokenizer is read from it)")
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    template = config.get("chat_template")
    jinja = folder / "chat_template.jinja"
    if template is None and jinja.is_file():
        template = jinja.read_text()
    specials = {key: _token_text(config.get(key)) for key in SPECIAL_KEYS if _token_text(config.get(key))}
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), chat_template=template,
                                        model_max_length=int(config.get("model_max_length", 32768)), **specials)
    missing = [marker for marker in markers if marker not in tokenizer.get_vocab()]
    if missing:
        raise ValueError(f"the tokenizer has no {', '.join(missing)} token (MiniCPM-V 2.6's prompt needs them)")
    split = [marker for marker in markers if len(tokenizer(marker, add_special_tokens=False)["input_ids"]) != 1]
    if split:  # in the vocabulary but not an added token: make it one, keeping its id
        tokenizer.add_tokens([AddedToken(marker, special=True, normalized=False) for marker in split],
                             special_tokens=True)
    if template is None:
        raise ValueError(f"{folder}: tokenizer_config.json has no chat_template (MiniCPM-V 2.6's is Qwen2's ChatML)")
    return tokenizer
