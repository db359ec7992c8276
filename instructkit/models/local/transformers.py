"""The transformers engine: a causal LM in this process, for chat and raw completion (micro-batched,
`transformers_batch`), span log-probs, the full next-token distribution and hidden-state embeddings.
One model per (path, dtype, device, tokenizer kind) per process: every `LLM("local")` shares it."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..local_files import model_id, set_offline
from ..types import (
    Backend,
    Completion,
    CompletionBackend,
    GenParams,
    ScoringBackend,
    SpanScore,
    TokenCountingBackend,
)
from .specs import resolve_local
from .transformers_batch import BatchGenerator, has_llguidance

_BACKENDS: dict[tuple, LocalBackend] = {}
_BACKENDS_LOCK = threading.Lock()


def load_local_backend(
    spec: str = "local",
    dtype: str = "float32",
    device: str | None = None,
    batch_size: int = 16,
    threads: int | None = None,
    slow_tokenizer: bool = False,
) -> LocalBackend:
    """The shared transformers backend for `spec` (loaded once per process per path, dtype, device and
    tokenizer kind; `slow_tokenizer`: transformers' `use_fast=False`, as DEITA's embedder loads it)."""
    path, dtype = resolve_local(spec, dtype)
    if threads:
        import torch

        torch.set_num_threads(threads)
    key = (str(path.resolve()), dtype, device or "cpu") + (("slow",) if slow_tokenizer else ())
    with _BACKENDS_LOCK:
        backend = _BACKENDS.get(key)
        if backend is None:
            backend = _BACKENDS[key] = LocalBackend(path, dtype, device or "cpu", batch_size, slow_tokenizer)
        return backend


class LocalBackend(Backend, CompletionBackend, ScoringBackend, TokenCountingBackend):
    """A causal LM in this process. `chat` is async and micro-batched; scoring methods are sync."""

    kind = "local"
    supports_n = False
    supports_penalties = True  # applied to the logits as OpenAI defines them (`apply_penalties`)

    def __init__(
        self, path: Path, dtype: str = "float32", device: str = "cpu", batch_size: int = 16, slow_tokenizer: bool = False
    ):
        set_offline()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(path)
        self.dtype = dtype
        self.device = device
        self.batch_size = batch_size
        self.slow_tokenizer = slow_tokenizer
        self.model_id = f"{model_id(self.path)}:{dtype}" + (":slow-tokenizer" if slow_tokenizer else "")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), use_fast=not slow_tokenizer)
        self.model = AutoModelForCausalLM.from_pretrained(str(self.path), dtype=getattr(torch, dtype))
        self.model.to(device).eval()
        gen_cfg = getattr(self.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None) or self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        )
        self.compute = threading.Lock()  # one forward pass at a time: 2 cores gain nothing from overlap
        self._batches = BatchGenerator(self)

    @property
    def supports_json_schema(self) -> bool:
        """JSON Schema constrained generation needs llguidance (the `local` extra installs it)."""
        return has_llguidance()

    # ----- chat ---------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the chat-templated conversation, ending with the assistant turn's header."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def raw_prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of a raw prompt as the model's tokenizer encodes text by default (its BOS where it
        adds one, as `tokenizer.encode(prompt)` in released scorer code); no chat template."""
        return self.tokenizer(prompt).input_ids

    def bos_prefix(self, prompt: str) -> list[int]:
        """[BOS] when the tokenizer's default encoding of `prompt` starts with one it added, else []."""
        raw = self.raw_prompt_ids(prompt)
        bos = self.tokenizer.bos_token_id
        plain = self.tokenizer(prompt, add_special_tokens=False).input_ids
        return [bos] if bos is not None and raw[:1] == [bos] and plain[:1] != [bos] else []

    async def chat(self, messages: list[dict], params: GenParams, n: int = 1) -> list[Completion]:
        """`n` completions of a chat-templated conversation (see `generate`)."""
        return await self.generate(self.prompt_ids(messages), params, n)

    async def complete(self, prompt: str, params: GenParams, n: int = 1) -> list[Completion]:
        """`n` completions of a raw prompt (no chat template; see `raw_prompt_ids`)."""
        return await self.generate(self.raw_prompt_ids(prompt), params, n)

    async def generate(self, ids: list[int], params: GenParams, n: int = 1) -> list[Completion]:
        """`n` completions (seeds seed, seed+1, ...); queued with concurrent calls into shared batches."""
        return await self._batches.generate(ids, params, n)

    def generate_batch(self, prompts: list[list[int]], params: list[GenParams]) -> list[Completion]:
        """One left-padded batch, generated now (`BatchGenerator.generate_batch`)."""
        return self._batches.generate_batch(prompts, params)

    # ----- scoring ------------------------------------------------------------------------
    def span_ids(self, prompt: str, answer: str, chat: bool = False) -> tuple[list[int], list[int]]:
        """(prompt ids, answer ids) for text. As in Cherry's IFD code, the text prompt+answer is tokenized
        whole and the answer span is the tokens after the prompt's own tokenization (so a token merged
        across the boundary counts as answer). `chat=True` wraps the prompt as a user turn first."""
        if chat:
            p_ids = self.prompt_ids([{"role": "user", "content": prompt}])
            prompt = self.tokenizer.decode(p_ids)
        tok = self.tokenizer
        p_ids = tok(prompt, add_special_tokens=False).input_ids if prompt else []
        full = tok(prompt + answer, add_special_tokens=False).input_ids
        return full[: len(p_ids)], full[len(p_ids) :]

    def span_scores(
        self,
        pairs: Sequence[tuple[str, str] | tuple[list[int], list[int]]],
        batch_size: int | None = None,
        chat: bool = False,
        token_budget: int | None = None,
    ) -> list[SpanScore]:
        """Log-probs of each answer's tokens given its prompt, in input order. Pairs are (prompt, answer)
        text or pre-tokenized (prompt ids, answer ids). With an empty prompt the first answer token has
        no context and is not scored (as in the plain HF causal-LM loss of the answer alone). The work is
        `span_scoring.score_spans`: shared prompt prefixes run once, length-sorted batches of at most
        `batch_size` rows and `token_budget` padded tokens, the LM head only at answer positions."""
        from ..span_scoring import score_spans

        seqs = []
        for prompt, answer in pairs:
            p_ids, a_ids = (
                (list(prompt), list(answer))
                if not isinstance(prompt, str)
                else self.span_ids(prompt, answer, chat)
            )
            seqs.append((p_ids, a_ids))
        values = score_spans(
            self.model,
            seqs,
            pad_id=self.pad_id,
            device=self.device,
            max_rows=batch_size or 64,
            token_budget=token_budget,
            lock=self.compute,
        )
        return [SpanScore(lp, len(p)) for lp, (p, _) in zip(values, seqs)]

    def _right_pad(self, seqs: list[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(1, max(len(s) for s in seqs))
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids, mask

    def hidden_states(
        self,
        texts: list[str],
        pooling: str = "mean",
        batch_size: int = 16,
        special_tokens: bool = False,
        max_length: int | None = None,
    ) -> np.ndarray:
        """Last-layer hidden states per text, pooled by `mean` over tokens or the `last` token
        (Cherry/DEITA-style causal-LM embeddings). float32 [len(texts), hidden], not normalised.
        special_tokens: tokenize with the tokenizer's special tokens (BOS), as the official embedders
        do; max_length: keep the first max_length tokens."""
        import torch

        if pooling not in ("mean", "last"):
            raise ValueError("pooling must be 'mean' or 'last'")
        encoded = [self.tokenizer(t, add_special_tokens=special_tokens).input_ids or [self.pad_id] for t in texts]
        if max_length:
            encoded = [ids[:max_length] for ids in encoded]
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = self._right_pad([encoded[i] for i in chunk])
            with self.compute, torch.inference_mode():
                h = self.model.base_model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
                h = h.last_hidden_state.float()
                m = mask.to(h.device).unsqueeze(-1).float()
                if pooling == "mean":
                    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
                else:
                    pooled = h[torch.arange(len(chunk)), mask.sum(1) - 1]
            out[chunk] = pooled.cpu().numpy()
        return out

    def mean_states_and_perplexity(
        self, texts: list[str], max_length: int = 512, batch_size: int = 16
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mean last hidden state over all tokens, perplexity) of each text in one forward pass each
        (Cherry's pre-experience features): encoded with the tokenizer's special tokens, truncated at
        `max_length`, loss over tokens 2..n (NaN for a text of fewer than 2 tokens)."""
        import torch

        from ..span_scoring import head_is_exact, lm_logits

        body = self.model.base_model
        exact = head_is_exact(self.model, self.device)
        encoded = [self.tokenizer.encode(t, truncation=True, max_length=max_length) for t in texts]
        emb = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        ppl = np.full(len(texts), np.nan)
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = self._right_pad([encoded[i] for i in chunk])
            with self.compute, torch.inference_mode():
                h = body(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
                h = h.last_hidden_state
                m = mask.to(h.device).unsqueeze(-1).to(h.dtype)
                emb[chunk] = ((h * m).sum(1) / m.sum(1).clamp(min=1)).float().cpu().numpy()
                for j, i in enumerate(chunk):
                    n = len(encoded[i])
                    if n < 2 or not exact:
                        continue
                    logits = lm_logits(self.model, h[j, : n - 1]).float()
                    tgt = ids[j, 1:n].to(logits.device)
                    ppl[i] = math.exp(float(torch.nn.functional.cross_entropy(logits, tgt)))
        if not exact:  # an unknown logit transform: the losses through the whole model
            for i, s in enumerate(self.span_scores([([], e) for e in encoded], batch_size)):
                if s.token_logprobs:
                    ppl[i] = math.exp(-math.fsum(s.token_logprobs) / len(s.token_logprobs))
        return emb, ppl

    def choice_logprobs(self, messages: list[dict], choices: Sequence[str]) -> list[float]:
        """Log-probability of each choice as the assistant's first token: the full next-token
        distribution read at the score tokens (how the trained DEITA scorers work)."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.next_token_logprobs(text, choices)

    def next_token_logprobs(self, prompt: str, choices: Sequence[str], special_tokens: bool = False) -> list[float]:
        """Log-probability of each choice's own token right after the raw text `prompt` (no chat
        template added). The score tokens come from `score_tokens.score_token_ids`: on SentencePiece
        tokenizers every choice starts with the same "▁", which is taken as context, so the values are
        log p(choice token | prompt, shared tokens); their softmax is the choices' distribution.
        `special_tokens=True` puts the BOS the tokenizer adds by default in front (as `raw_prompt_ids`)."""
        import torch

        from ..score_tokens import score_token_ids
        from ..span_scoring import head_is_exact, lm_logits

        found = score_token_ids(self.tokenizer, choices, prompt)
        context = found.context_ids
        if special_tokens:
            context = self.bos_prefix(prompt) + context
        with self.compute, torch.inference_mode():
            x = torch.tensor([context], device=self.device)
            if head_is_exact(self.model, self.device):
                logits = lm_logits(self.model, self.model.base_model(input_ids=x).last_hidden_state[:, -1])
            else:
                logits = self.model(input_ids=x).logits[:, -1]
            logp = torch.log_softmax(logits.float(), dim=-1)[0]
        return [float(logp[t]) for t in found.ids]

