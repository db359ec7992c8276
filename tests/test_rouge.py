"""instructkit.rouge: parity with rouge_score, and NoveltyIndex decisions equal to brute force."""

from __future__ import annotations

import random

import pytest

from instructkit.rouge import NoveltyIndex, lcs_length, rouge_l, score_tokens, tokenize

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

WORDS = (
    "write a short story about the given topic explain why sky is blue list three ways to save water "
    "classify sentence as positive or negative translate into french summarize article in two sentences "
    "give an example of metaphor find the error code fix it sort numbers ascending name capital city"
).split()


def _pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        a = " ".join(rnd.choices(WORDS, k=rnd.randint(0, 30)))
        if rnd.random() < 0.5:  # a noisy variant of a: shared subsequences
            toks = a.split()
            b = (
                " ".join(t for t in toks if rnd.random() < 0.7)
                + " "
                + " ".join(rnd.choices(WORDS, k=rnd.randint(0, 8)))
            )
        else:
            b = " ".join(rnd.choices(WORDS, k=rnd.randint(0, 30)))
        if rnd.random() < 0.2:
            a = a.upper().replace(" ", ", ") + "!"  # case and punctuation are tokenizer business
        out.append((a, b))
    out += [
        ("", "something"),
        ("", ""),
        ("¿Qué tal? café", "cafe"),
        ("naïve façade", "na ve fa ade"),
        ("a-b_c", "a b c"),
    ]
    return out


def test_rouge_l_equals_rouge_score_on_hundreds_of_pairs() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    for a, b in _pairs(400):
        ref = scorer.score(a, b)["rougeL"]
        assert rouge_l(a, b) == ref.fmeasure, (a, b)
        assert score_tokens(tokenize(a), tokenize(b)) == (ref.precision, ref.recall, ref.fmeasure)


def test_tokenize_matches_rouge_score_default_tokenizer() -> None:
    from rouge_score import tokenize as rs_tokenize

    for a, _ in _pairs(100, seed=1):
        assert tokenize(a) == rs_tokenize.tokenize(a, None)


def test_lcs_length_long_sequences() -> None:
    rnd = random.Random(3)
    for _ in range(30):
        a = rnd.choices("abcde", k=rnd.randint(50, 150))
        b = rnd.choices("abcde", k=rnd.randint(50, 150))
        # plain DP reference
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i][j] = (
                    table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
                )
        assert lcs_length(a, b) == table[-1][-1]


def test_novelty_index_equals_brute_force() -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rnd = random.Random(5)
    pool = [" ".join(rnd.choices(WORDS, k=rnd.randint(1, 25))) for _ in range(300)]
    pool.append(" ".join(rnd.choices(WORDS, k=90)))  # longer than 64 tokens
    index = NoveltyIndex(pool)
    queries = [p + " " + rnd.choice(WORDS) for p in rnd.sample(pool, 20)]
    queries += [" ".join(rnd.choices(WORDS, k=rnd.randint(1, 25))) for _ in range(20)]
    queries += [pool[-1], " ".join(pool[-1].split()[:80]), "", "zzz unseen words only", pool[0]]
    for q in queries:
        brute = [scorer.score(q, p)["rougeL"].fmeasure for p in pool]
        assert index.scores(q).tolist() == brute
        for threshold in (0.5, 0.7, 0.9):
            assert (index.any_above(q, threshold) is None) == (max(brute) <= threshold), (q, threshold)
        top = index.top_k(q, 10)
        assert [m.score for m in top] == sorted(brute, reverse=True)[:10]
        assert all(brute[m.index] == m.score for m in top)


def test_exact_threshold_is_kept_and_just_above_rejected() -> None:
    # 10 and 10 tokens with an LCS of 7: F = 0.7 exactly in rouge_score's arithmetic -> not "> 0.7".
    base = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    seven = "alpha beta gamma delta epsilon zeta eta other words here"
    eight = "alpha beta gamma delta epsilon zeta eta theta words here"
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    index = NoveltyIndex([base])
    f7 = scorer.score(seven, base)["rougeL"].fmeasure
    assert (index.any_above(seven, 0.7) is None) == (not f7 > 0.7)
    assert index.is_novel(seven, 0.7) == (f7 <= 0.7)
    assert not index.is_novel(eight, 0.7)


def test_index_grows_and_unseen_tokens_never_match() -> None:
    index = NoveltyIndex()
    assert index.is_novel("anything at all") and index.max_similarity("x") is None
    index.add("Give three tips for staying healthy.")
    assert not index.is_novel("give three tips for staying healthy")
    assert index.is_novel("Brand new unseen vocabulary entirely")
    index.extend(["Describe the water cycle.", "Name a famous painter."])
    assert len(index) == 3
    best = index.max_similarity("Describe the water cycle in detail.")
    assert best is not None and index.texts[best.index] == "Describe the water cycle."
