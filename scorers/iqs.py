"""A trainable instruction-quality scorer in the spirit of CaR's IQS (Ge et al. 2024, 2402.18191).

CaR fine-tunes a COMET-style regressor (XLM-R large, layer mix, mean pooling, MLP head, MSE) on
expert-revised Alpaca pairs (original 0, revision 1) and scores "Instruction: .. Input: .. Response: .."
strings. Ours keeps that input string and the (text, score) / (better, worse) training data, on top of
any encoder folder (all-MiniLM-L6-v2 by default): `kind=ridge` fits a scikit-learn Ridge on frozen
mean-pooled embeddings (light; pairs: a logistic model on embedding differences), `kind=finetune`
fine-tunes the encoder with a one-logit regression head (MSE, or -log sigmoid(s_better - s_worse) on
pairs). Deviations: no COMET layer mix or layer-wise LR decay, no early stopping; scorer files are ours.
Scoring goes through the model layer: embeddings from `embedder`, a saved fine-tuned head from
`models.classifier` (both cached per text by content); only training holds a model of its own.
Held-out accuracy: `evaluate` gives Kendall tau / Spearman / pairwise accuracy on the user's split.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instructkit.aio import run_sync
from instructkit.data.io import INSTRUCTION_FIELD, RESPONSE_FIELD
from instructkit.registry import method
from instructkit.run.runner import RunContext

from .common import Batcher, auto_device, finish, map_sorted, triplet

META = "iqs.json"


def iqs_text(instruction: str, input: str, output: str) -> str:
    """CaR's scorer input: "Instruction: {instruction} Input: {input} Response: {output}"."""
    return f"Instruction: {instruction} Input: {input} Response: {output}"


def text_of(row: Any) -> str:
    """A row's scorer text: a string as is, a dict with `text`, else its instruction/input/output."""
    if isinstance(row, str):
        return row
    if "text" in row:
        return str(row["text"])
    return iqs_text(*triplet(row))


class QualityScorer:
    """Fit on labelled texts or preference pairs; save, load, score; evaluate on a held-out split."""

    def __init__(
        self, encoder: str | None = None, kind: str = "ridge", alpha: float = 1.0, device: str | None = None
    ):
        from instructkit.models.local_files import minilm_path

        if kind not in ("ridge", "finetune"):
            raise ValueError("kind must be ridge or finetune")
        self.encoder = str(encoder or minilm_path())
        self.kind = kind
        self.alpha = alpha
        self.device = auto_device(device)
        self.coef: np.ndarray | None = None
        self.intercept = 0.0
        self.model: Any = None  # the fine-tuned model while training (kind=finetune)
        self.tokenizer: Any = None
        self.head: Any = None  # a saved fine-tuned head as an `LLM` classifier (`load`)
        self._encoder: Any = None  # the encoder as an `LLM` embedder (vectors cached per text)
        self.max_length = 256

    # ----- features ---------------------------------------------------------------------------------
    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        if self._encoder is None:
            from instructkit.models.embeddings import embedder

            self._encoder = embedder(f"hf:{self.encoder}", device=self.device)
        return (await self._encoder.aembed(list(texts))).astype(np.float64)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return run_sync(self.aembed(texts))

    # ----- training ---------------------------------------------------------------------------------
    def fit(
        self,
        texts: Sequence[str] | None = None,
        scores: Sequence[float] | None = None,
        pairs: Sequence[tuple[str, str]] | None = None,
        epochs: int = 3,
        lr: float = 2e-5,
        batch_size: int = 16,
        seed: int = 0,
    ) -> QualityScorer:
        """Fit on (texts, scores) or on (better, worse) text pairs."""
        if (texts is None) == (pairs is None):
            raise ValueError("give texts and scores, or pairs")
        if self.kind == "ridge":
            self._fit_linear(texts, scores, pairs)
        else:
            self._fit_finetune(texts, scores, pairs, epochs, lr, batch_size, seed)
        return self

    def _fit_linear(self, texts: Any, scores: Any, pairs: Any) -> None:
        if pairs is None:
            from sklearn.linear_model import Ridge

            reg = Ridge(alpha=self.alpha).fit(self.embed(texts), np.asarray(scores, dtype=np.float64))
            self.coef, self.intercept = reg.coef_.astype(np.float64), float(reg.intercept_)
            return
        from sklearn.linear_model import LogisticRegression

        better = self.embed([b for b, _ in pairs])
        worse = self.embed([w for _, w in pairs])
        x = np.vstack([better - worse, worse - better])
        y = np.r_[np.ones(len(pairs)), np.zeros(len(pairs))]
        clf = LogisticRegression(C=1.0 / self.alpha, fit_intercept=False, max_iter=2000).fit(x, y)
        self.coef, self.intercept = clf.coef_[0].astype(np.float64), 0.0

    def _load_head_model(self, path: str) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=torch.float32
        )
        self.model.to(self.device)

    def _logits(self, texts: Sequence[str]) -> Any:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits[:, 0]

    def _fit_finetune(
        self, texts: Any, scores: Any, pairs: Any, epochs: int, lr: float, bs: int, seed: int
    ) -> None:
        import torch

        torch.manual_seed(seed)
        self._load_head_model(self.encoder)
        self.model.train()
        opt = torch.optim.AdamW(self.model.parameters(), lr=lr)
        rng = np.random.default_rng(seed)
        n = len(pairs) if pairs is not None else len(texts)
        for _ in range(epochs):
            order = rng.permutation(n)
            for s in range(0, n, bs):
                chunk = order[s : s + bs]
                if pairs is None:
                    pred = self._logits([texts[i] for i in chunk])
                    target = torch.tensor([float(scores[i]) for i in chunk], device=pred.device)
                    loss = torch.nn.functional.mse_loss(pred, target)
                else:
                    sb = self._logits([pairs[i][0] for i in chunk])
                    sw = self._logits([pairs[i][1] for i in chunk])
                    loss = -torch.nn.functional.logsigmoid(sb - sw).mean()
                loss.backward()
                opt.step()
                opt.zero_grad()
        self.model.eval()

    # ----- scoring ----------------------------------------------------------------------------------
    async def ascore(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Quality scores (higher is better), float64."""
        if self.kind == "ridge":
            if self.coef is None:
                raise ValueError("the scorer is not fitted")
            return (await self.aembed(texts)) @ self.coef + self.intercept
        if self.head is not None:
            return np.asarray(await self.head.aclassify([(t, None) for t in texts]), dtype=np.float64)
        return await asyncio.to_thread(self._score_trained, texts, batch_size)

    def score(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return run_sync(self.ascore(texts, batch_size))

    def _score_trained(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """The model just fine-tuned in this process (not saved yet), in input-order batches."""
        import torch

        out = []
        with torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                out.append(self._logits(texts[s : s + batch_size]).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def evaluate(
        self,
        texts: Sequence[str] | None = None,
        scores: Sequence[float] | None = None,
        pairs: Sequence[tuple[str, str]] | None = None,
    ) -> dict[str, float]:
        """Held-out agreement: Kendall tau, Spearman and pairwise accuracy (on labelled texts, over pairs
        with different labels), or preference accuracy (on pairs)."""
        if pairs is not None:
            sb, sw = self.score([b for b, _ in pairs]), self.score([w for _, w in pairs])
            return {"pair_accuracy": float(np.mean(sb > sw)), "n": len(pairs)}
        from scipy.stats import kendalltau, spearmanr

        pred, y = self.score(texts), np.asarray(scores, dtype=np.float64)
        diff_y, diff_p = np.sign(y[:, None] - y[None, :]), np.sign(pred[:, None] - pred[None, :])
        mask = diff_y != 0
        return {
            "kendall": float(kendalltau(pred, y).statistic),
            "spearman": float(spearmanr(pred, y).statistic),
            "pairwise_accuracy": float((diff_y[mask] == diff_p[mask]).mean()) if mask.any() else math.nan,
            "mse": float(np.mean((pred - y) ** 2)),
            "n": len(y),
        }

    # ----- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, "encoder": self.encoder, "alpha": self.alpha, "version": 1}
        if self.kind == "ridge":
            np.savez(path / "linear.npz", coef=self.coef, intercept=np.array([self.intercept]))
        else:
            self.model.save_pretrained(str(path / "model"))
            self.tokenizer.save_pretrained(str(path / "model"))
        (path / META).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> QualityScorer:
        path = Path(path)
        meta = json.loads((path / META).read_text())
        scorer = cls(meta["encoder"], meta["kind"], meta.get("alpha", 1.0), device)
        if scorer.kind == "ridge":
            data = np.load(path / "linear.npz")
            scorer.coef, scorer.intercept = data["coef"], float(data["intercept"][0])
        else:
            from instructkit.models.classifier import classifier

            scorer.head = classifier(path / "model", device=scorer.device, batch_size=32, max_length=scorer.max_length)
        return scorer

    def identity(self, path: str | Path) -> str:
        """Content hash of a saved scorer, for cache keys."""
        h = hashlib.sha256()
        for f in sorted(Path(path).rglob("*")):
            if f.is_file():
                h.update(f.name.encode() + f.read_bytes())
        return h.hexdigest()[:16]


def labelled(
    records: Sequence[dict],
) -> tuple[list[str] | None, list[float] | None, list[tuple[str, str]] | None]:
    """(texts, scores, pairs) from rows with `score` (and text or instruction/input/output), or with
    `better` and `worse` (texts or rows)."""
    if records and "better" in records[0]:
        return None, None, [(text_of(r["better"]), text_of(r["worse"])) for r in records]
    return [text_of(r) for r in records], [float(r["score"]) for r in records], None


@dataclass
class IQSOptions:
    scorer: str = ""  # folder of a saved scorer (written there when train_path is given and it is absent)
    train_path: str | None = None  # rows with score (+ text or instruction/input/output) or better/worse
    valid_path: str | None = None  # held-out split: accuracy reported in the run's extras
    kind: str = "ridge"  # ridge | finetune
    encoder: str | None = None  # encoder folder; default all-MiniLM-L6-v2
    alpha: float = 1.0
    epochs: int = 3
    lr: float = 2e-5
    device: str | None = None
    column: str = "iqs"


def train_scorer(opts: IQSOptions, seed: int = 0) -> tuple[QualityScorer, dict[str, float] | None]:
    """Fit on `train_path`, save to `scorer`, and evaluate on `valid_path` when given."""
    from instructkit.data.io import read_records

    texts, scores, pairs = labelled(list(read_records(opts.train_path)))
    scorer = QualityScorer(opts.encoder, opts.kind, opts.alpha, opts.device)
    scorer.fit(texts, scores, pairs, epochs=opts.epochs, lr=opts.lr, seed=seed)
    if opts.scorer:
        scorer.save(opts.scorer)
    report = None
    if opts.valid_path:
        vt, vs, vp = labelled(list(read_records(opts.valid_path)))
        report = scorer.evaluate(vt, vs, vp)
    return scorer, report


@method("score", "iqs", options=IQSOptions, needs_model=False, reads=(INSTRUCTION_FIELD, RESPONSE_FIELD))
def iqs(records: list[dict], ctx: RunContext) -> list[dict]:
    """Trainable quality scorer (CaR IQS style): train on labelled rows or pairs, then score every row."""
    opts = ctx.options or IQSOptions()
    if not opts.scorer:
        raise ValueError(
            "iqs needs -o scorer=DIR (a saved scorer, or where to save one trained from train_path)"
        )
    if opts.train_path and not (Path(opts.scorer) / META).is_file():
        _, report = train_scorer(opts, ctx.random_state)
        if report is not None:
            ctx.extras["iqs_validation"] = report
    scorer = QualityScorer.load(opts.scorer, opts.device)

    async def score(texts: list[str]) -> list[float]:
        return (await scorer.ascore(texts)).tolist()

    batcher = Batcher(score)
    sid = scorer.identity(opts.scorer)

    async def one(item: dict) -> dict:
        (value,) = await batcher.run([item["text"]])
        return {opts.column: value}

    items = [{"text": text_of(r), "scorer": sid} for r in records]
    results = map_sorted(ctx, items, one, "iqs", [len(it["text"]) for it in items])
    return finish(records, results, "iqs", opts.column, [opts.column])
