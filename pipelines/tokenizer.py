"""Offline word-level tokenizers for the tiny test pipelines.

Nothing here downloads anything: :func:`build_word_tokenizer` assembles a ``tokenizers`` WordLevel model
from a word list and wraps it in a ``transformers.PreTrainedTokenizerFast`` that the diffusers pipelines
accept in place of the real T5 / Llama / CLIP tokenizers. Text is lowercased, split on whitespace and
punctuation, and every word outside the vocabulary becomes the unk token, so any prompt tokenises.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

# Words of the project's synthetic prompts ("a red circle moving left on a black background"), the usual
# negative-prompt words, some common English and punctuation. Anything else maps to the unk token.
DEFAULT_VOCAB: tuple[str, ...] = tuple(
    """
    a an the of on in at to from with and or but not no is are was be it its this that by for as into
    over under up down left right standing still moving moves move slowly quickly fast slow while then
    red green blue yellow white black gray grey magenta cyan orange purple pink brown
    circle square triangle shape shapes ball dot box line object objects
    background foreground center middle top bottom side edge frame frames video image scene camera
    small large big tiny bright dark light color colour colors plain simple solid
    cat dog person man woman car tree sky water sun city street road house field flower bird fish
    walking running flying dancing jumping sitting looking eating playing
    one two three many some all very more less
    low high quality best worst blurry blur static noisy noise distorted ugly deformed watermark text
    bad good beautiful realistic detailed cartoon painting photo style artifacts jpeg compression
    1 2 3 4 5 . , ! ? : ; - ' "
    """.split()
)

# Special tokens per style, in id order. Real-model conventions: T5 has pad=0, eos=1, unk=2; CLIP pads with
# its eos; Llama gets an explicit pad because the diffusers pipelines pad prompts to a fixed length.
# CLIP's eos id must not be 2: transformers' CLIPTextModel then treats the config as legacy and pools the
# argmax id instead of the eos position.
_STYLES: dict[str, dict] = {
    "t5": {
        "specials": {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
        "template": "$A </s>",
        "model_max_length": 512,
    },
    "llama": {
        "specials": {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
        "template": "<s> $A </s>",
        "model_max_length": 512,
    },
    "clip": {
        "specials": {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<unk>"},
        "template": "<|startoftext|> $A <|endoftext|>",
        "model_max_length": 77,
    },
}


def build_word_tokenizer(
    words: Iterable[str] = DEFAULT_VOCAB,
    *,
    style: str = "t5",
    model_max_length: int | None = None,
) -> PreTrainedTokenizerFast:
    """Build an offline word-level tokenizer.

    Args:
        words: vocabulary; lowercased and de-duplicated, ids follow the special tokens in the given order.
        style: ``"t5"`` (pad 0, eos 1, unk 2; appends eos), ``"llama"`` (unk, bos, eos, pad; wraps in bos/eos)
            or ``"clip"`` (bos, eos, unk; wraps in bos/eos and pads with eos).
        model_max_length: length used by ``padding="max_length"`` without an explicit ``max_length``;
            defaults to the style's usual value (512, 512, 77).

    Returns:
        A ``PreTrainedTokenizerFast`` with its special tokens set, padding on the right.
    """
    if style not in _STYLES:
        raise ValueError(f"unknown tokenizer style {style!r}; expected one of {sorted(_STYLES)}")
    spec = _STYLES[style]
    specials = dict(spec["specials"])

    vocab: dict[str, int] = {}
    for token in [*specials.values(), *(w.lower() for w in words)]:
        vocab.setdefault(token, len(vocab))

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials["unk_token"]))
    tok.normalizer = normalizers.Lowercase()
    # Whitespace splits "\w+|[^\w\s]+"; Punctuation then isolates each punctuation mark ("..." -> ".", ".", ".").
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    template = spec["template"]
    tok.post_processor = processors.TemplateProcessing(
        single=template,
        pair=f"{template} {template.replace('$A', '$B')}",
        special_tokens=[(t, vocab[t]) for t in template.split() if t in vocab],
    )

    if style == "clip":
        specials["pad_token"] = specials["eos_token"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=model_max_length or spec["model_max_length"],
        padding_side="right",
        **specials,
    )
