"""Text <-> tokens of a llama.cpp model: its tokenizer, the bytes each token adds, and the GGUF's own
chat template (a Jinja2 template rendered as llama-cpp-python renders it)."""

from __future__ import annotations

import ctypes
from typing import Any

from ..types import ModelCallError


class LlamaVocab:
    """The vocabulary of one loaded llama.cpp model (`ll`: the llama_cpp module)."""

    def __init__(self, ll: Any, model: Any, name: str):
        self._ll, self._model, self.name = ll, model, name
        self.vocab = ll.llama_model_get_vocab(model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.add_bos = bool(ll.llama_vocab_get_add_bos(self.vocab))
        self._pieces: dict[int, bytes] = {}
        self._formatter = self._chat_formatter()

    def _chat_formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._ll.llama_model_chat_template(self._model, None)
        if not template:
            return None
        text = lambda tok: self._piece(tok, special=True).decode("utf-8", "replace") if tok >= 0 else ""  # noqa: E731
        bos, eos = self._ll.llama_vocab_bos(self.vocab), self._ll.llama_vocab_eos(self.vocab)
        return Jinja2ChatFormatter(template.decode("utf-8"), eos_token=text(eos), bos_token=text(bos))

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids of `text`; special tokens written in it (`<|im_start|>`) are parsed as such."""
        data = text.encode("utf-8")
        size = len(data) + 8
        buf = (self._ll.llama_token * size)()
        n = self._ll.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, True)
        if n < 0:
            buf = (self._ll.llama_token * -n)()
            n = self._ll.llama_tokenize(self.vocab, data, len(data), buf, -n, add_special, True)
        return list(buf[:n])

    def _piece(self, tok: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self.vocab, tok, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self.vocab, tok, buf, -n, 0, special)
        return buf.raw[:n]

    def piece(self, tok: int) -> bytes:
        """The bytes a generated token adds to the text (control tokens add nothing)."""
        value = self._pieces.get(tok)
        if value is None:
            value = self._pieces[tok] = self._piece(tok)
        return value

    def text(self, tok: int) -> str:
        """`piece` as text (an incomplete UTF-8 sequence replaced)."""
        return self.piece(tok).decode("utf-8", "replace")

    def prompt_text(self, messages: list[dict]) -> str:
        """The chat-templated conversation, ending with the assistant turn's header (the GGUF's template)."""
        if self._formatter is None:
            raise ModelCallError(f"{self.name} has no chat template: use raw completion", retryable=False)
        return self._formatter(messages=messages).prompt
