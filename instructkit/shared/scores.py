"""Score extraction and logprob expectation shared by every judge (one implementation, many callers).

Rules that every parser here follows (peers shipped each of these bugs):
- a parse failure is a status and `None`, never a default number;
- "4.5" stays 4.5 (no truncation to the first character);
- scale ranges ("0 to 5", "1-6", "Score 1:" rubric lines) and lines the model copied from the prompt
  are never read as scores;
- a value outside the scale is refused (`out_of_range`), as is a fraction over another scale ("8/10"
  on 0-5).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from instructkit.models import Completion, TokenLogprob
from instructkit.models.logprobs import score_label
from instructkit.run.manifest import parse_figure, value_counts, write_method_summary

OK = "ok"
EMPTY = "empty"
NO_SCORE = "no_score"
OUT_OF_RANGE = "out_of_range"
NO_SCORE_TOKEN = "no_score_token"
FAILED_STATUSES = (
    EMPTY,
    NO_SCORE,
    OUT_OF_RANGE,
    NO_SCORE_TOKEN,
    "invalid",
    "missing",
    "duplicate",
    "evol_empty",
    "inconsistent",
    "no_valid_member",
    "error",
)

_NUM = r"(?<![\w.])([+-]?\d+(?:\.\d+)?)"
# A number that starts a range ("0 to 5", "1-6", "1 – 5") is the scale, not a score.
_NOT_RANGE = r"(?!\s*(?:-|–|—|to)\s*\d)(?!\d)"
_LABEL = r"(?:overall\s+|final\s+)?(?:score|rating|grade|result|accuracy(?:\s+score)?)"
_LABELLED = re.compile(
    rf"(?:\[\s*(?:result|score)\s*\]|\b{_LABEL}\b)\s*(?:\((?:[^()]*)\))?\s*(?:is|of|=|:|-)?\s*[:=]?\s*\**\s*"
    rf"{_NUM}{_NOT_RANGE}(?!\s*:)(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
_FRACTION = re.compile(rf"{_NUM}\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)(?!\d)", re.IGNORECASE)
# A line that is (almost) only a number, or a number followed by a separator and words.
_BARE_LINE = re.compile(rf"^[\s*#>_`\[(]*{_NUM}[\s*_`\])]*(?:[.!]?\s*$|\s*[-–—:|,)]\s*\D|\s+\(\D)")
_BARE_ONLY = re.compile(rf"^[\s*#>_`\[(]*{_NUM}[\s*_`\])]*[.!]?\s*$")
_MARKUP = re.compile(r"[*_`#>]+")


@dataclass
class Parsed:
    """A parsed score: `value` is None unless `status` is "ok"; `raw` is the matched text."""

    value: float | None
    status: str
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def strip_echo(text: str, prompt: str | None, min_len: int = 12) -> str:
    """`text` without the lines the model copied from `prompt` (a judge must never read the prompt)."""
    if not prompt:
        return text
    norm_prompt = " ".join(prompt.split()).lower()
    kept = []
    for line in text.splitlines():
        norm = " ".join(_MARKUP.sub(" ", line).split()).lower()
        if len(norm) >= min_len and norm in norm_prompt:
            continue
        kept.append(line)
    return "\n".join(kept)


def _check(value: float, denominator: str | None, lo: float, hi: float, raw: str) -> Parsed:
    if denominator is not None and not math.isclose(float(denominator), hi):
        return Parsed(None, OUT_OF_RANGE, raw)  # a fraction over another scale: "8/10" on 0-5
    if not lo <= value <= hi:
        return Parsed(None, OUT_OF_RANGE, raw)
    return Parsed(value, OK, raw)


def _line_score(line: str, lo: float, hi: float, bare: bool) -> Parsed | None:
    """The score stated on one line, or None when the line states none. `bare=True` also accepts a
    leading number followed by a separator and words ("4.5 - accurate"), which is only safe on the
    line where the score was asked for; elsewhere only a number alone on its line counts ("1) ..."
    list items must not)."""
    m = _LABELLED.search(line)
    if m:
        return _check(float(m.group(1)), m.group(2), lo, hi, m.group(0).strip())
    m = _FRACTION.search(line)
    if m:
        return _check(float(m.group(1)), m.group(2), lo, hi, m.group(0).strip())
    m = (_BARE_LINE if bare else _BARE_ONLY).match(line)
    if m:
        return _check(float(m.group(1)), None, lo, hi, m.group(0).strip())
    return None


def parse_score(
    text: str | None,
    lo: float,
    hi: float,
    *,
    prompt: str | None = None,
    first_line: bool = False,
    prefer: str = "first",
) -> Parsed:
    """The score in a judge's reply on the scale [lo, hi].

    `first_line=True` (AlpaGasus) reads the first non-empty line first (a bare number, "Score: 4.5",
    "4.5/5", "4.5 out of 5"), then falls back to a labelled score or fraction anywhere. Otherwise the
    labelled/fraction/bare-line scores are searched line by line and `prefer` ("first" or "last",
    Prometheus-style answers end with the result) picks among them. Lines echoed from `prompt` are
    removed first. Status: ok, empty, no_score or out_of_range.
    """
    if text is None or not text.strip():
        return Parsed(None, EMPTY)
    body = strip_echo(text, prompt)
    lines = [ln for ln in body.splitlines() if ln.strip()]
    if not lines:
        return Parsed(None, NO_SCORE)  # the reply was nothing but the prompt
    if first_line:
        found = _line_score(lines[0], lo, hi, bare=True)
        if found is not None:
            return found
        lines = lines[1:]
    found_all = [p for ln in lines if (p := _line_score(ln, lo, hi, bare=not first_line)) is not None]
    if not found_all:
        return Parsed(None, NO_SCORE)
    return found_all[-1] if prefer == "last" else found_all[0]


_VERDICT = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]|\[\s*result\s*\]\s*:?\s*\**\s*(A|B|tie)\b", re.IGNORECASE)
_VERDICT_WORDS = re.compile(
    r"^(?:\**\s*(?:(?:my|the|final)\s+)?(?:verdict|winner|answer|preferred|better(?:\s+response)?)"
    r"\s*(?:is)?\s*[:\-]?\s*)?\**\s*(?:response|assistant|output)?\s*\(?(A|B|tie|draw)\)?\s*\**\s*[.!]?\s*$",
    re.IGNORECASE,
)


def parse_verdict(text: str | None, *, prompt: str | None = None) -> Parsed:
    """A pairwise verdict "A", "B" or "tie" as value 0 (A), 1 (B), 0.5 (tie), else a failure.

    Accepts `[[A]]`/`[[B]]`/`[[C]]` (MT-Bench; C = tie), `[RESULT] A`, or a line that is only the
    verdict ("A", "Response B", "Verdict: tie"). Two different bracketed verdicts are ambiguous.
    """
    if text is None or not text.strip():
        return Parsed(None, EMPTY)
    body = strip_echo(text, prompt)
    seen = []
    for m in _VERDICT.finditer(body):
        label = (m.group(1) or m.group(2)).upper()
        seen.append("TIE" if label in ("C", "TIE") else label)
    if not seen:
        for line in body.splitlines():
            m = _VERDICT_WORDS.match(line.strip())
            if m:
                label = m.group(1).upper()
                seen.append("TIE" if label in ("TIE", "DRAW") else label)
                break
    if not seen:
        return Parsed(None, NO_SCORE)
    if len(set(seen)) > 1:
        return Parsed(None, "invalid", ",".join(seen))
    return Parsed({"A": 0.0, "B": 1.0, "TIE": 0.5}[seen[0]], OK, seen[0])


# ----- end-anchored formats (Prometheus "[RESULT] n", MT-Bench "[[A]]") ------------------------------
# The trained/official formats put the verdict last, after the feedback: only a verdict that ends the
# reply counts (trailing spaces, markdown emphasis, quotes and a full stop aside), so a rubric line or
# a verdict the feedback quotes on its way is never read.
_TAIL_JUNK = r"[\s*_`\"'.]*$"
_RESULT_TAIL = re.compile(
    r"(?:\[\s*(?:RESULT|SCORE)\s*\]\s*:?|\b(?:score|result)\s*:|\bscore\s+of)"
    r"\s*[(\[]?\s*([+-]?\d+(?:\.\d+)?)\s*[)\]]?(?:\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?))?" + _TAIL_JUNK,
    re.IGNORECASE,
)
_VERDICT_TAIL = re.compile(r"\[\[\s*(A|B|C)\s*\]\]" + _TAIL_JUNK, re.IGNORECASE)
# Prometheus relative grading: "[RESULT] A" (and the variants prometheus-eval's parser accepts).
_RESULT_VERDICT_TAIL = re.compile(
    r"(?:\[\s*RESULT\s*\]\s*:?|\[\s*RESULT\s*:|\[\s*Response|(?:^|\n)\s*Result\s*:?)\s*(?:Response\s+)?(A|B)\s*\]?"
    + _TAIL_JUNK,
    re.IGNORECASE,
)


def parse_result_score(text: str | None, lo: float, hi: float) -> tuple[Parsed, str]:
    """(score, feedback) of a Prometheus-style reply: feedback, then "[RESULT] n" ending the reply
    ("[SCORE] n", "Score: n", "(n)", "n/5" accepted as prometheus-eval's parser does). A result
    anywhere but at the end is `no_score`; a number outside [lo, hi] or a fraction over another
    scale is `out_of_range`; a non-integer is `invalid`."""
    if text is None or not text.strip():
        return Parsed(None, EMPTY), ""
    m = _RESULT_TAIL.search(text)
    if not m:
        return Parsed(None, NO_SCORE), text.strip()
    feedback = text[: m.start()].strip()
    parsed = _check(float(m.group(1)), m.group(2), lo, hi, m.group(0).strip())
    if parsed.ok and parsed.value != int(parsed.value):
        return Parsed(None, "invalid", parsed.raw), feedback
    return parsed, feedback


def parse_verdict_tail(text: str | None, style: str = "mtbench") -> Parsed:
    """A verdict ending the reply, after the explanation: MT-Bench's `[[A]]`, `[[B]]` or `[[C]]` (tie), or
    with `style="prometheus"` Prometheus 2's "[RESULT] A" / "[RESULT] B"; value 0 (A), 1 (B), 0.5 (tie).
    A verdict that does not end the reply is `no_score`."""
    if text is None or not text.strip():
        return Parsed(None, EMPTY)
    m = (_RESULT_VERDICT_TAIL if style == "prometheus" else _VERDICT_TAIL).search(text)
    if not m:
        return Parsed(None, NO_SCORE)
    label = m.group(1).upper()
    return Parsed({"A": 0.0, "B": 1.0, "C": 0.5}[label], OK, label if label != "C" else "TIE")


# ----- the official parsers of released judges (`-o parse official`) ---------------------------------
# Held to golden outputs recorded by running the official code (tests/golden/mtbench, tests/golden/prometheus).
# FastChat llm_judge (run_judge_pair): the first of "[[A]]", "[[B]]", "[[C]]" found anywhere, checked in that
# order, exact case. prometheus-eval (parser.py): a score or verdict marker whose value ends the reply (the
# relative form: ends any line), a score outside 1-5 is no score. Statuses are ours (the official code
# returns "error" or None and retries).


def parse_verdict_fastchat(text: str | None) -> Parsed:
    """MT-Bench's verdict as FastChat reads it: `[[A]]` anywhere, else `[[B]]`, else `[[C]]` (tie)."""
    if text is None or not text.strip():
        return Parsed(None, EMPTY)
    for label, value in (("A", 0.0), ("B", 1.0), ("C", 0.5)):
        if f"[[{label}]]" in text:
            return Parsed(value, OK, label if label != "C" else "TIE")
    return Parsed(None, NO_SCORE)


_PROMETHEUS_SCORE = re.compile(
    r"(?:\[result\]:?|\[score\]|score:?|result:?|score\s+of)\s*[(\[\s]*(\d+)(?:[)\]\s]|/\s*5|\s*out\s*of\s*5)?\s*$",
    re.IGNORECASE,
)
_PROMETHEUS_VERDICT = re.compile(
    r"(?:\[result\](?:\s+response)?|\[result:|\[response\s|^result:?)\s*(a|b)\]?\s*$",
    re.IGNORECASE | re.MULTILINE,
)


def parse_prometheus_score(text: str | None, lo: int = 1, hi: int = 5) -> tuple[Parsed, str]:
    """(score, feedback) as prometheus-eval's absolute parser reads a reply: the first score marker
    ("[RESULT]", "[SCORE]", "Score", "Result", "score of") whose integer ends the reply (brackets, "/5" or
    "out of 5" allowed around it); that integer outside 1-5 is no score (it does not look further)."""
    if text is None or not text.strip():
        return Parsed(None, EMPTY), ""
    m = _PROMETHEUS_SCORE.search(text)
    if not m:
        return Parsed(None, NO_SCORE), text.strip()
    value = int(m.group(1))
    if not lo <= value <= hi:
        return Parsed(None, OUT_OF_RANGE, m.group(0).strip()), text.strip()
    return Parsed(float(value), OK, m.group(0).strip()), text[: m.start()].strip()


def parse_prometheus_verdict(text: str | None) -> Parsed:
    """Prometheus 2's relative verdict as prometheus-eval reads it: the first "[RESULT] A|B" (or "[RESULT:",
    "[Response", "Result:" at a line start) whose letter ends a line, any line."""
    if text is None or not text.strip():
        return Parsed(None, EMPTY)
    m = _PROMETHEUS_VERDICT.search(text)
    if not m:
        return Parsed(None, NO_SCORE)
    label = m.group(1).upper()
    return Parsed({"A": 0.0, "B": 1.0}[label], OK, label)


_RANK_LINE = re.compile(
    r"\[\s*(\d+)\s*\]\s*\**\s*score\s*\**\s*[:=]\s*\**\s*([+-]?\d+(?:\.\d+)?)", re.IGNORECASE
)


@dataclass
class Ranking:
    """Scores of a rank-and-score reply, one per item (1-based in the reply, 0-based here)."""

    scores: list[float] | None
    status: str
    detail: str = ""


def parse_ranking(text: str | None, n: int, lo: float, hi: float, *, prompt: str | None = None) -> Ranking:
    """`[k] Score: s` lines for items 1..n. A missing, repeated or unknown index, or a score outside
    [lo, hi], is a failure of the whole reply (status missing / duplicate / invalid / out_of_range)."""
    if text is None or not text.strip():
        return Ranking(None, EMPTY)
    found: dict[int, float] = {}
    for m in _RANK_LINE.finditer(strip_echo(text, prompt)):
        k, score = int(m.group(1)), float(m.group(2))
        if not 1 <= k <= n:
            return Ranking(None, "invalid", f"index {k} of {n}")
        if k in found:
            return Ranking(None, "duplicate", f"index {k} scored twice")
        if not lo <= score <= hi:
            return Ranking(None, OUT_OF_RANGE, f"[{k}] {score}")
        found[k] = score
    if not found:
        return Ranking(None, NO_SCORE)
    missing = [k for k in range(1, n + 1) if k not in found]
    if missing:
        return Ranking(None, "missing", f"no score for {missing}")
    return Ranking([found[k] for k in range(1, n + 1)], OK)


# ----- logprob expectation ----------------------------------------------------------------------


@dataclass
class Expectation:
    """Probability-weighted score over the allowed score tokens at one answer position."""

    value: float | None
    status: str
    argmax: float | None = None
    entropy: float | None = None
    mass: float | None = None  # probability the model put on allowed score tokens before renormalising
    position: int | None = None
    probs: dict[str, float] = field(default_factory=dict)

    def columns(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_expected": self.value,
            f"{prefix}_argmax": self.argmax,
            f"{prefix}_entropy": self.entropy,
            f"{prefix}_score_mass": self.mass,
        }


_score_label = score_label  # one definition, shared with the cache's kept positions (models/logprobs.py)


def score_position(logprobs: Sequence[TokenLogprob], allowed: Iterable[int]) -> int | None:
    """Index of the token that carries the score: the first generated token containing a digit,
    when that token is an allowed score (leading spaces / SentencePiece markers ignored)."""
    labels = {str(a) for a in allowed}
    for i, t in enumerate(logprobs):
        text = _score_label(t.token)
        if any(ch.isdigit() for ch in text):
            return i if text in labels else None
    return None


def last_score_position(logprobs: Sequence[TokenLogprob], allowed: Iterable[int]) -> int | None:
    """Index of the score token of a reply that ends with its score: the last generated token
    containing a digit, when that token is an allowed score."""
    labels = {str(a) for a in allowed}
    for i in range(len(logprobs) - 1, -1, -1):
        text = _score_label(logprobs[i].token)
        if any(ch.isdigit() for ch in text):
            return i if text in labels else None
    return None


def expectation_from_logprobs(
    logprobs: Sequence[TokenLogprob] | None, allowed: Iterable[int], position: int | None = None
) -> Expectation:
    """Σ s·p(s) over the allowed integer scores, from the top alternatives at the score position.

    Variants of one score ("4", " 4", "▁4") are summed; the result is renormalised over the allowed
    scores present. No allowed score among the alternatives is a failure (`no_score_token`), never a
    default value (the DEITA scorer's silent 3.0).
    """
    allowed = list(allowed)
    if not logprobs:
        return Expectation(None, NO_SCORE_TOKEN)
    pos = score_position(logprobs, allowed) if position is None else position
    if pos is None or pos >= len(logprobs):
        return Expectation(None, NO_SCORE_TOKEN)
    tok = logprobs[pos]
    alternatives = list(tok.top) or [(tok.token, tok.logprob)]
    if all(_score_label(a) != _score_label(tok.token) for a, _ in alternatives):
        alternatives.append((tok.token, tok.logprob))
    labels = {str(a): a for a in allowed}
    mass: dict[int, float] = {}
    for text, lp in alternatives:
        label = _score_label(text)
        if label in labels:
            mass[labels[label]] = mass.get(labels[label], 0.0) + math.exp(lp)
    total = sum(mass.values())
    if total <= 0:
        return Expectation(None, NO_SCORE_TOKEN, position=pos)
    probs = {s: p / total for s, p in mass.items()}
    value = sum(s * p for s, p in probs.items())
    entropy = -sum(p * math.log(p) for p in probs.values() if p > 0)
    argmax = max(probs, key=lambda s: (probs[s], -s))
    return Expectation(
        value, OK, float(argmax), entropy, min(total, 1.0), pos, {str(s): probs[s] for s in sorted(probs)}
    )


_VERDICT_LABELS = {"A": 0.0, "B": 1.0, "tie": 0.5, "Tie": 0.5}


def verdict_preference(logprobs: Sequence[TokenLogprob] | None, position: int | None = None) -> float | None:
    """P(B) + P(tie)/2 over the verdict tokens A / B / tie at the first verdict token (or at
    `position`), renormalised (alpaca_eval's logprob preference with a tie); None when no verdict
    token is among the alternatives."""
    if not logprobs:
        return None
    if position is None:
        for i, tok in enumerate(logprobs):
            if _score_label(tok.token) in _VERDICT_LABELS:
                position = i
                break
            if _score_label(tok.token) not in ("", "[[", "[", "**", "Verdict", "verdict", ":"):
                return None
    if position is None or position >= len(logprobs):
        return None
    tok = logprobs[position]
    mass: dict[float, float] = {}
    for text, lp in tok.top or [(tok.token, tok.logprob)]:
        value = _VERDICT_LABELS.get(_score_label(text))
        if value is not None:
            mass[value] = mass.get(value, 0.0) + math.exp(lp)
    total = sum(mass.values())
    return sum(v * p for v, p in mass.items()) / total if total > 0 else None


def verdict_position(logprobs: Sequence[TokenLogprob] | None, last: bool = False) -> int | None:
    """Index of the first (or `last`) generated token that is a verdict A / B / tie (constrained JSON
    replies, whose verdict field sits after the key's tokens)."""
    hits = [i for i, t in enumerate(logprobs or []) if _score_label(t.token) in _VERDICT_LABELS]
    return (hits[-1] if last else hits[0]) if hits else None


def parse_json_verdict(text: str | None, key: str = "verdict") -> Parsed:
    """The verdict of a constrained JSON reply (`{"verdict": "A" | "B" | "tie", ...}`) as 0 / 1 / 0.5."""
    if text is None or not text.strip():
        return Parsed(None, EMPTY)
    try:
        label = json.loads(text).get(key)
    except (ValueError, AttributeError):
        return Parsed(None, NO_SCORE)
    value = _VERDICT_LABELS.get(label) if isinstance(label, str) else None
    return Parsed(value, OK, label) if value is not None else Parsed(None, NO_SCORE)


def expectation_from_logits(logits: Sequence[float], scores: Sequence[int]) -> float:
    """Σ s·softmax(logits)_s for logits already picked at the score tokens (the DEITA scorer formula)."""
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    return sum(s * e / total for s, e in zip(scores, exps))


SCORE_MODES = ("text", "expected", "auto")
TEXT = "text"
EXPECTED = "expected"


def check_score_mode(mode: str, method: str) -> str:
    """`mode` when it is one of SCORE_MODES, else a clear error naming the method's option."""
    if mode not in SCORE_MODES:
        raise ValueError(f"{method}: -o score must be one of {'|'.join(SCORE_MODES)}, not {mode!r}")
    return mode


def first_position(logprobs: Sequence[TokenLogprob] | None) -> int | None:
    """Index of the first generated token that is not blank: the slot where a format that puts the
    score first asks for it, read there whatever the model wrote (its distribution depends on the
    prompt alone, as a constrained reply's first digit would)."""
    for i, t in enumerate(logprobs or []):
        if _score_label(t.token):
            return i
    return None


_JSON_FIELD = r'^\s*\{\s*"%s"\s*:\s*"?' + _NUM


def parse_json_score(text: str | None, lo: float, hi: float, key: str = "score") -> Parsed:
    """The score of a schema-constrained reply that opens with `{"<key>": n` (read from the start, so
    a reply cut at max_tokens after its score still counts); range rules as `parse_score`."""
    if text is None or not text.strip():
        return Parsed(None, EMPTY)
    m = re.match(_JSON_FIELD % re.escape(key), text)
    if m:
        return _check(float(m.group(1)), None, lo, hi, m.group(0).strip())
    try:  # a schema that puts the score after the feedback: the whole object must parse
        value = json.loads(text)
    except ValueError:
        return Parsed(None, NO_SCORE)
    score = value.get(key) if isinstance(value, dict) else None
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        return Parsed(None, NO_SCORE)
    return _check(float(score), None, lo, hi, str(score))


def score_completion(
    comp: Completion,
    lo: int,
    hi: int,
    prompt: str | None = None,
    *,
    mode: str = "auto",
    integer: bool = True,
    json_key: str | None = None,
) -> dict[str, Any]:
    """One judge reply whose format puts the score first (alone on the first line, or first field
    of a constrained JSON reply when `json_key` is given): the text score, the expectation over the
    integer scores lo..hi at the score token (where the text states it, else the reply's first token)
    when logprobs came back, and the value `mode` picks. With `integer`, a non-integer is "invalid"."""
    if json_key is not None:
        parsed = parse_json_score(comp.text, lo, hi, json_key)
    else:
        parsed = parse_score(comp.text, lo, hi, prompt=prompt, first_line=True)
    if integer and parsed.ok and parsed.value is not None and parsed.value != int(parsed.value):
        parsed.value, parsed.status = None, "invalid"
    allowed = range(lo, hi + 1)
    pos = score_position(comp.logprobs, allowed) if parsed.ok and comp.logprobs else first_position(comp.logprobs)
    exp = None if pos is None else expectation_from_logprobs(comp.logprobs, allowed, position=pos)
    return _scored(parsed, exp, mode)


def score_result_completion(
    comp: Completion, lo: int, hi: int, *, mode: str = "auto", json_key: str | None = None, official: bool = False
) -> dict[str, Any]:
    """`score_completion` for replies in the feedback-then-"[RESULT] n" format (or a constrained JSON
    object with the feedback first and `json_key` last): the end-anchored score, the logprob
    expectation at its token when logprobs came back, the feedback. A reply with no result has no
    score position, so no expectation either. `official`: read as prometheus-eval's parser reads it."""
    if json_key is not None:
        parsed = parse_json_score(comp.text, lo, hi, json_key)
        feedback = ""
        if parsed.ok:
            obj = json.loads(comp.text)
            feedback = next((str(v) for k, v in obj.items() if k != json_key), "")
    elif official:
        parsed, feedback = parse_prometheus_score(comp.text, lo, hi)
    else:
        parsed, feedback = parse_result_score(comp.text, lo, hi)
    return {**score_at_end(comp, parsed, lo, hi, mode), "feedback": feedback}


def score_at_end(comp: Completion, parsed: Parsed, lo: int, hi: int, mode: str = "auto") -> dict[str, Any]:
    """The scored-reply dict for a format that ends with its score (`parsed` read by the method's own
    parser): the expectation is read at the last score token, and only when the text stated one."""
    pos = last_score_position(comp.logprobs, range(lo, hi + 1)) if parsed.ok and comp.logprobs else None
    exp = None if pos is None else expectation_from_logprobs(comp.logprobs, range(lo, hi + 1), position=pos)
    return _scored(parsed, exp, mode)


def pick_score(text: float | None, expected: float | None, mode: str) -> tuple[float | None, str | None]:
    """(value, source) that `-o score` picks: `text` the parsed score only (the paper's behaviour);
    `expected` the probability-weighted score where the distribution came back, else the text;
    `auto` the text where it parses, else the expected value. Source is "text", "expected" or None."""
    if mode == EXPECTED and expected is not None:
        return expected, EXPECTED
    if text is not None:
        return text, TEXT
    if mode == "auto" and expected is not None:
        return expected, EXPECTED
    return None, None


def _scored(parsed: Parsed, exp: Expectation | None, mode: str = "auto") -> dict[str, Any]:
    """A scored reply: the text score, the expectation, the value and source `mode` picks, and the
    status of that value (the text's status, or ok when the expectation stands in for it)."""
    expected = exp.value if exp is not None and exp.status == OK else None
    value, source = pick_score(parsed.value if parsed.ok else None, expected, mode)
    return {
        "parsed": parsed.value,
        "text_status": parsed.status,
        "status": OK if value is not None else parsed.status,
        "exp": exp,
        "expected": expected,
        "value": value,
        "source": source,
    }


# ----- shared result helpers ----------------------------------------------------------------------


def usage_columns(prefix: str, comps: Iterable[Completion]) -> dict[str, Any]:
    """Tokens and cost of the calls behind one row (for meta-evaluation and cost reports)."""
    comps = list(comps)
    return {
        f"{prefix}_tokens": sum(c.usage.total_tokens for c in comps),
        f"{prefix}_cost": sum(c.cost for c in comps),
        f"{prefix}_calls": sum(not c.cached for c in comps),
    }


def source_counts(records: Iterable[dict], prefix: str) -> dict[str, int]:
    """How many rows took their score from the text, from the expectation, or have none."""
    return value_counts(records, f"{prefix}_score_source", "none")


def report(records: list[dict], prefix: str, ctx: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A judge's run summary: rows, rows per parse status (a failed call counts as "error"), parse
    failures, plus `extra`. Warns when rows have no score; recorded by the one summary writer
    (ctx.extras["judge_summary"][prefix], `<prefix>.manifest.json` beside the journals)."""
    parse = parse_figure(records, f"{prefix}_parse", missing="error")
    failed = parse["failed"]
    summary = {"method": prefix, "rows": len(records), "parse": parse["statuses"], "parse_failures": failed,
               **(extra or {})}  # fmt: skip
    dry_run = bool(getattr(ctx.llm, "dry_run", False))  # placeholders are no scores
    if failed and ctx.progress and not dry_run:
        print(f"[{prefix}] {failed}/{len(records)} rows without a score: {parse['statuses']}", file=sys.stderr)
    write_method_summary(ctx, "judge", summary, name=prefix)
    return summary
