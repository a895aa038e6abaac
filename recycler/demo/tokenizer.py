"""A character-level tokenizer that lm-eval and transformers load like any HF tokenizer."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

PAD = "<pad>"


def build_char_tokenizer(chars: str) -> PreTrainedTokenizerFast:
    """One token per character (a BPE model with no merges), id 0 for padding."""
    alphabet = sorted(set(chars))
    vocab = {PAD: 0, **{c: i + 1 for i, c in enumerate(alphabet)}}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token="\n" if "\n" in vocab else None)
