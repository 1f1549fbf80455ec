"""SentencePiece BPE models (`tokenizer.model`) read and written without the sentencepiece package, and turned into
a `tokenizers` BPE tokenizer that encodes as SentencePiece does.

InternLM2's tokenizer is a SentencePiece BPE model with byte fallback. The file is a protobuf `ModelProto`; the few
fields a BPE encoder needs are read here with a small wire-format parser (field numbers from sentencepiece's
`sentencepiece_model.proto`). The equivalent fast tokenizer: the vocabulary in piece order, merges for every split of
a piece into two pieces of the vocabulary ranked by the merged piece's score (SentencePiece's BPE merges the
adjacent pair whose union scores highest), spaces written as U+2581 (and one prepended when the model adds a dummy
prefix), unknown characters as their UTF-8 bytes. Settings this encoder does not reproduce (a normalisation rule
other than identity, whitespace collapsing, a non-BPE model) raise an error naming them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

SPACE = "\u2581"  # SentencePiece's visible space
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # SentencePiece.Type
BPE = 2  # TrainerSpec.ModelType

# field numbers: ModelProto 1 pieces, 2 trainer_spec, 3 normalizer_spec; SentencePiece 1 piece, 2 score, 3 type;
# TrainerSpec 3 model_type, 4 vocab_size, 35 byte_fallback, 40-43 unk/bos/eos/pad id, 45-48 their pieces;
# NormalizerSpec 1 name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces, 5 escape_whitespaces
_TRAINER_INTS = {3: "model_type", 4: "vocab_size", 35: "byte_fallback", 40: "unk_id", 41: "bos_id", 42: "eos_id",
                 43: "pad_id"}
_TRAINER_STRINGS = {45: "unk_piece", 46: "bos_piece", 47: "eos_piece", 48: "pad_piece"}


class SentencePieceError(ValueError):
    """A tokenizer.model this package cannot read or cannot encode as SentencePiece would."""


@dataclass(frozen=True)
class Piece:
    """One vocabulary entry: its text, score and SentencePiece type."""

    text: str
    score: float
    kind: int = NORMAL


@dataclass
class SentencePieceModel:
    """The parts of a SentencePiece model a BPE encoder needs."""

    pieces: list[Piece]
    model_type: int = BPE
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    normalizer: str = "identity"
    has_charsmap: bool = False
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    special_pieces: dict[str, str] = field(default_factory=dict)  # unk_piece, bos_piece, ... as written

    def check_encodable(self) -> None:
        """SentencePieceError naming any setting the fast BPE encoder does not reproduce."""
        problems = []
        if self.model_type != BPE:
            problems.append(f"model type {self.model_type} (only BPE, 2, is supported)")
        if self.normalizer not in ("identity", "") or self.has_charsmap:
            problems.append(f"normalisation rule {self.normalizer!r} (only 'identity' is reproduced)")
        if self.remove_extra_whitespaces:
            problems.append("remove_extra_whitespaces=true (whitespace collapsing is not reproduced)")
        if not self.escape_whitespaces:
            problems.append("escape_whitespaces=false")
        if problems:
            raise SentencePieceError("tokenizer.model: " + "; ".join(problems))


# ---- protobuf wire format ----------------------------------------------------------------------------------------
def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(data: bytes):
    """Yield (field number, wire type, value) of a serialised message; length-delimited values as bytes."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 1:
            value, at = data[at:at + 8], at + 8
        elif wire == 2:
            length, at = _varint(data, at)
            value, at = data[at:at + length], at + length
        elif wire == 5:
            value, at = data[at:at + 4], at + 4
        else:
            raise SentencePieceError(f"tokenizer.model: unsupported protobuf wire type {wire}")
        yield number, wire, value


def _signed(value: int) -> int:
    """A varint read as a two's-complement int64 (int32 fields store -1 that way)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def read_model(path: str | Path) -> SentencePieceModel:
    """Parse a SentencePiece `tokenizer.model` file."""
    data = Path(path).read_bytes()
    model = SentencePieceModel(pieces=[])
    try:
        for number, _wire, value in _fields(data):
            if number == 1:
                text, score, kind = "", 0.0, NORMAL
                for sub, _w, v in _fields(value):
                    if sub == 1:
                        text = v.decode("utf-8")
                    elif sub == 2:
                        score = struct.unpack("<f", v)[0]
                    elif sub == 3:
                        kind = v
                model.pieces.append(Piece(text, score, kind))
            elif number == 2:
                for sub, _w, v in _fields(value):
                    if sub in _TRAINER_INTS:
                        name = _TRAINER_INTS[sub]
                        setattr(model, name, bool(v) if name == "byte_fallback" else _signed(v))
                    elif sub in _TRAINER_STRINGS:
                        model.special_pieces[_TRAINER_STRINGS[sub]] = v.decode("utf-8")
            elif number == 3:
                for sub, _w, v in _fields(value):
                    if sub == 1:
                        model.normalizer = v.decode("utf-8")
                    elif sub == 2:
                        model.has_charsmap = len(v) > 0
                    elif sub == 3:
                        model.add_dummy_prefix = bool(v)
                    elif sub == 4:
                        model.remove_extra_whitespaces = bool(v)
                    elif sub == 5:
                        model.escape_whitespaces = bool(v)
    except (IndexError, UnicodeDecodeError, struct.error) as error:
        raise SentencePieceError(f"{path}: not a SentencePiece model ({error})") from None
    if not model.pieces:
        raise SentencePieceError(f"{path}: no vocabulary pieces (not a SentencePiece model?)")
    return model


def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32s as 10-byte two's complement, as protobuf writes them
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def write_model(model: SentencePieceModel, path: str | Path) -> Path:
    """Serialise a SentencePiece BPE model as `tokenizer.model` (the fields sentencepiece needs to load it)."""
    out = bytearray()
    for piece in model.pieces:
        body = _bytes_field(1, piece.text.encode("utf-8")) + _key(2, 5) + struct.pack("<f", piece.score)
        body += _key(3, 0) + _encode_varint(piece.kind)
        out += _bytes_field(1, body)
    trainer = bytearray()
    for number, name in _TRAINER_INTS.items():
        value = getattr(model, name) if name != "vocab_size" else len(model.pieces)
        trainer += _key(number, 0) + _encode_varint(int(value))
    for number, name in _TRAINER_STRINGS.items():
        if name in model.special_pieces:
            trainer += _bytes_field(number, model.special_pieces[name].encode("utf-8"))
    out += _bytes_field(2, bytes(trainer))
    normalizer = _bytes_field(1, model.normalizer.encode("utf-8"))
    for number, flag in ((3, model.add_dummy_prefix), (4, model.remove_extra_whitespaces),
                         (5, model.escape_whitespaces)):
        normalizer += _key(number, 0) + _encode_varint(int(flag))
    out += _bytes_field(3, normalizer)
    path = Path(path)
    path.write_bytes(bytes(out))
    return path


# ---- the equivalent fast tokenizer -------------------------------------------------------------------------------
def bpe_merges(pieces: list[Piece]) -> list[tuple[str, str]]:
    """Every split of a normal piece into two normal pieces, ranked as SentencePiece merges: the merged piece's score
    (highest first), then its id; a piece's splits by the length of the left part."""
    index = {p.text: i for i, p in enumerate(pieces) if p.kind == NORMAL}
    ranked = []
    for i, piece in enumerate(pieces):
        if piece.kind != NORMAL or len(piece.text) < 2:
            continue
        for cut in range(1, len(piece.text)):
            left, right = piece.text[:cut], piece.text[cut:]
            if left in index and right in index:
                ranked.append((-piece.score, i, cut, left, right))
    ranked.sort()
    return [(left, right) for *_rank, left, right in ranked]


def fast_tokenizer(model: SentencePieceModel, renamed: dict[int, str] | None = None):
    """A `tokenizers.Tokenizer` encoding as the SentencePiece model does; `renamed` gives new text to some ids
    (a tokenizer_config's added tokens that take over vocabulary slots)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE as BPEModel

    model.check_encodable()
    renamed = renamed or {}
    pieces = [Piece(renamed[i], p.score, CONTROL) if i in renamed else p for i, p in enumerate(model.pieces)]
    vocab = {}
    for i, piece in enumerate(pieces):
        vocab.setdefault(piece.text, i)
    unk = model.pieces[model.unk_id].text if 0 <= model.unk_id < len(model.pieces) else None
    tokenizer = Tokenizer(BPEModel(vocab, bpe_merges(pieces), unk_token=unk, fuse_unk=True,
                                   byte_fallback=model.byte_fallback))
    steps = [normalizers.Prepend(SPACE)] if model.add_dummy_prefix else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", SPACE)])
    decoding = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if model.add_dummy_prefix:
        decoding.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decoding)
    # control pieces (<s>, </s>) and renamed slots are special; user-defined pieces are matched whole, as SentencePiece
    # matches them before BPE
    specials = [AddedToken(p.text, special=True, normalized=False) for p in pieces if p.kind in (CONTROL, UNKNOWN)]
    users = [AddedToken(p.text, special=False, normalized=False) for p in pieces if p.kind == USER_DEFINED]
    tokenizer.add_special_tokens(specials)
    if users:
        tokenizer.add_tokens(users)
    return tokenizer
