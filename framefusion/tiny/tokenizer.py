"""The tiny models' tokenizer: a small byte-level BPE trained here, with each family's special tokens and chat template."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. A man is walking his dog in the park.",
    "What is happening in this video? Describe the video in detail. What color is the car?",
    "A woman is cooking dinner in the kitchen while a child plays with a red ball.",
    "The camera pans across a busy street with cars, buses and people crossing the road.",
    "Question: how many people are in the scene? Answer: there are three people.",
    "Please answer the question based on the video. Summarize what you see in one sentence.",
    "A cat sits on the window and watches the birds outside. Then it jumps down.",
    "The weather is sunny and the sky is blue. Later it starts to rain and the street gets wet.",
    "You are a helpful assistant. Yes. No. The answer is A, B, C or D.",
    "First, second, third, then, after that, finally, before, during, at the end of the clip.",
    "0 1 2 3 4 5 6 7 8 9 10 seconds frame image picture video clip scene object person.",
)

# Chat templates written in the style of each family's hub template. They accept content given as a
# string or as a list of {"type": "text" | "image" | "video"} blocks, and honour add_generation_prompt.
_QWEN_BODY = (
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{% set ns.images = ns.images + 1 %}"
    "{% if add_vision_id %}{{ 'Picture ' ~ ns.images ~ ': ' }}{% endif %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'video' %}{% set ns.videos = ns.videos + 1 %}"
    "{% if add_vision_id %}{{ 'Video ' ~ ns.videos ~ ': ' }}{% endif %}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
)
_QWEN2_TEMPLATE = (
    "{% set ns = namespace(images=0, videos=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    + _QWEN_BODY
    + "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_QWEN3_TEMPLATE = (
    "{% set ns = namespace(images=0, videos=0) %}{% for message in messages %}"
    + _QWEN_BODY
    + "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# LLaVA templates render all images, then all videos, then the text of a message.
_LLAVA_BLOCKS = (
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}"
)
# MiniCPM-V 4.6's processor expands one video token per video block into its frames and slices.
_MINICPM_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|image_pad|>' }}"
    "{% elif content['type'] == 'video' %}{{ '<|video_pad|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_LLAVA_ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    + _LLAVA_BLOCKS
    + "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_LLAVA_NEXT_VIDEO_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    + _LLAVA_BLOCKS
    + "{{ ' ' }}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# MiniCPM-V 2.6 (remote-code format) publishes Qwen2's ChatML template, with string contents only: its processor
# writes each image as "(<image>./</image>)" and joins a message's items with newlines before rendering.
_MINICPMV2_6_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class _TokenizerStyle:
    """Special tokens and chat template of one family's tokenizer."""

    special_tokens: tuple[str, ...]  # added in this order, ids 0..n-1
    eos: str
    pad: str
    chat_template: str
    bos: str | None = None  # prepended to every encoding when set (Llama style)
    unk: str | None = None
    named_tokens: dict[str, str] = field(default_factory=dict)  # tokenizer.<name> attributes


_QWEN_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
_TOKENIZER_STYLES = {
    "qwen2_vl": _TokenizerStyle(_QWEN_TOKENS, "<|im_end|>", "<|endoftext|>", _QWEN2_TEMPLATE),
    "qwen2_5_vl": _TokenizerStyle(_QWEN_TOKENS, "<|im_end|>", "<|endoftext|>", _QWEN2_TEMPLATE),
    "qwen3_vl": _TokenizerStyle(_QWEN_TOKENS, "<|im_end|>", "<|endoftext|>", _QWEN3_TEMPLATE),
    "qwen3_5": _TokenizerStyle(_QWEN_TOKENS, "<|im_end|>", "<|endoftext|>", _QWEN3_TEMPLATE),
    "minicpmv4_6": _TokenizerStyle(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<image>", "</image>",
         "<slice>", "</slice>", "<image_id>", "</image_id>"),
        "<|im_end|>",
        "<|endoftext|>",
        _MINICPM_TEMPLATE,
        named_tokens={  # the attributes MiniCPMV4_6Processor reads (and their *_id)
            "image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
            "image_start_token": "<image>", "image_end_token": "</image>",
            "slice_start_token": "<slice>", "slice_end_token": "</slice>",
            "image_id_start_token": "<image_id>", "image_id_end_token": "</image_id>",
        },
    ),
    "llava_onevision": _TokenizerStyle(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
        "<|im_end|>",
        "<|endoftext|>",
        _LLAVA_ONEVISION_TEMPLATE,
    ),
    "llava_next_video": _TokenizerStyle(
        ("<unk>", "<s>", "</s>", "<image>", "<video>"),
        "</s>",
        "<unk>",
        _LLAVA_NEXT_VIDEO_TEMPLATE,
        bos="<s>",
        unk="<unk>",
    ),
    "internvl": _TokenizerStyle(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"),
        "<|im_end|>",
        "<|endoftext|>",
        _INTERNVL_TEMPLATE,
        named_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    ),
}

_TOKENIZER_STYLES["minicpmv4_7"] = _TOKENIZER_STYLES["minicpmv4_6"]
_TOKENIZER_STYLES["minicpmv2_6"] = _TokenizerStyle(  # the markers of MiniCPM-V 2.6's tokenizer ("<unk>": placeholder)
    ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", "<image>", "</image>", "<slice>", "</slice>",
     "<image_id>", "</image_id>", "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<point>", "</point>"),
    "<|im_end|>",
    "<|endoftext|>",
    _MINICPMV2_6_TEMPLATE,
)
  # 4.7 reads the same unit markers

def build_tokenizer(
    corpus: list[str] | None = None, vocab_size: int = 512, family: str = "qwen2_vl"
) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE with `family`'s special tokens and chat template."""
    style = _TOKENIZER_STYLES[family]
    bpe = Tokenizer(models.BPE(unk_token=style.unk))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(style.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([*_CORPUS, *(corpus or [])], trainer=trainer)
    if style.bos is not None:
        bos_id = bpe.token_to_id(style.bos)
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{style.bos} $A", pair=f"{style.bos} $A {style.bos} $B", special_tokens=[(style.bos, bos_id)]
        )
    else:
        bpe.post_processor = processors.ByteLevel(trim_offsets=False)

    named = dict(style.named_tokens)
    extra = [t for t in style.special_tokens if t not in {style.bos, style.eos, style.pad, style.unk, *named.values()}]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=style.bos,
        eos_token=style.eos,
        pad_token=style.pad,
        unk_token=style.unk,
        extra_special_tokens=named or extra,
        model_max_length=32768,
        chat_template=style.chat_template,
    )
    if named:  # named tokens replace the plain list; keep the rest special too
        tokenizer.add_special_tokens({"extra_special_tokens": extra}, replace_extra_special_tokens=False)
    return tokenizer




def special_token_ids(family: str, tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The config fields that name the placeholder and marker tokens of `family`, for this tokenizer's ids."""
    ids = tokenizer.convert_tokens_to_ids
    if family.startswith("qwen"):
        return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                    vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    if family.startswith("llava"):
        return dict(image_token_index=ids("<image>"), video_token_index=ids("<video>"))
    if family == "internvl":
        return dict(image_token_id=tokenizer.context_image_token_id)
    fields = dict(image_token_id=tokenizer.image_token_id, video_token_id=tokenizer.video_token_id)
    if family == "minicpmv4_7":  # its canvas M-RoPE reads the unit markers
        fields.update(image_start_id=ids("<image>"), image_end_id=ids("</image>"), slice_start_id=ids("<slice>"),
                      slice_end_id=ids("</slice>"), newline_id=tokenizer("\n")["input_ids"][0])
    return fields
