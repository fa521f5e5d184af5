"""Incremental detokenisation: token ids in, new text out, without re-decoding the whole answer per token.

`TextIteratorStreamer` decodes the entire answer again at every token (quadratic in the answer length, and run on
the generating thread). Here each token costs a constant amount of work: fast (Rust) tokenizers use their own
`DecodeStream`; other tokenizers decode a short window, as vLLM's `detokenize_incrementally` does: the text of
ids[prefix:] minus the text of ids[prefix:read], emitted only when it does not end in a partial UTF-8 character.

    detok = Detokenizer(tokenizer)
    text = "".join(detok.step(t) for t in ids) + detok.flush()   # == tokenizer.decode(ids, skip_special_tokens=True)
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"  # what a decode of half a UTF-8 character ends with


class Detokenizer:
    def __init__(self, tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        backend = getattr(tokenizer, "_tokenizer", None)
        self._stream = None
        if backend is not None:
            try:
                from tokenizers.decoders import DecodeStream

                self._stream, self._backend = DecodeStream(skip_special_tokens=skip_special_tokens), backend
            except ImportError:  # tokenizers < 0.21
                self._stream = None
        self.ids: list[int] = []
        self.prefix = 0  # window start: the decode of ids[prefix:read] is what was already emitted from it
        self.read = 0
        self.emitted = 0  # characters handed out so far (DecodeStream path)

    def step(self, token_id: int) -> str:
        """The text that `token_id` completes ('' while a multi-byte character is still incomplete)."""
        self.ids.append(token_id)
        if self._stream is not None:
            text = self._stream.step(self._backend, token_id) or ""
            self.emitted += len(text)
            return text
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end (an incomplete character decodes as U+FFFD, as decode() does)."""
        if self._stream is not None:  # DecodeStream holds back an unfinished character for good: one full decode
            full = self._decode(self.ids)
            tail, self.emitted = full[self.emitted:], len(full)
            return tail
        if self.read == len(self.ids):
            return ""
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return after[len(before):]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip, clean_up_tokenization_spaces=False)
