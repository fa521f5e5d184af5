"""Tokenizer of RemoteGLM-mini: byte-level BPE trained on our own bilingual corpus (no download, no UNK).

Byte-level so any user text round-trips; one token per common Chinese character, whole English words, both
learnt from the training conversations. Special tokens get ids 0..5 in `SPECIAL_TOKENS` order.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from model_adapter.mini.processing_remoteglm_mini import CHAT_TEMPLATE, IMAGE_TOKEN, SPECIAL_TOKENS


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train the BPE on `texts` and wrap it as a transformers fast tokenizer with the chat template."""
    tok = Tokenizer(models.BPE())
    # NOTE: without the Han split, BPE merged whole Chinese phrases ("飞机停在机场" = 1 token, measured); one token
    # per character keeps Chinese compositional (~2 k characters in the corpus) while English keeps whole words.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{Han}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|end|>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        additional_special_tokens=SPECIAL_TOKENS[2:],
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
        padding_side="left",
    )
    return fast


def conversation_texts(rows: Iterable[dict]) -> Iterable[str]:
    """Every message text and reference of conversation-JSONL rows."""
    for row in rows:
        for m in row["messages"]:
            yield m["content"]
        yield from row.get("references") or []
