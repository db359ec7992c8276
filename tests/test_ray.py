"""Ray engine on a local Ray instance with 2 CPUs / 2 actors: same results, cache and resume as one process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from instructkit import registry  # noqa: E402
from instructkit.cli import main as cli_main  # noqa: E402
from instructkit.data.io import read_records, write_records  # noqa: E402
from instructkit.models import LLM  # noqa: E402
from instructkit.run.pipeline import Pipeline  # noqa: E402
from instructkit.run.ray_engine import ray_embed, ray_init, run_on_ray  # noqa: E402
from instructkit.run.runner import RunContext, merge_results  # noqa: E402

from fakes import serve_fake  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own config warnings

ROWS = [
    {"instruction": f"Explain idea number {i}", "input": "", "output": f"Idea {i} is simple."}
    for i in range(20)
]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray_init(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def fake() -> Iterator[str]:
    with serve_fake() as url:
        yield url


def ctx_for(url: str, tmp: Path, name: str) -> RunContext:
    info = registry.get("judge", "alpagasus")
    llm = LLM("fake-model", api_base=url, cache_dir=str(tmp / name / "cache"))
    return RunContext(
        llm=llm,
        options=info.make_options({}),
        method="alpagasus",
        work_dir=tmp / name / "work",
        progress=False,
    )


def sampled(records: list[dict], ctx: RunContext) -> list[dict]:
    """A judge-like method defined in a test module (shipped to the actors by value): 2 samples per row."""

    async def one(rec: dict) -> dict:
        comps = await ctx.llm.asample(
            rec["instruction"], n=2, temperature=0.7, seed=ctx.random_state, max_tokens=8
        )
        return {"votes": [c.text for c in comps]}

    return merge_results(records, ctx.map(records, one, stage="vote"), "vote")


def test_judge_on_ray_matches_one_process_and_resumes(local_ray: None, fake, tmp_path: Path) -> None:
    info = registry.get("judge", "alpagasus")
    single = info.func(ROWS, ctx_for(fake, tmp_path, "single"))
    fake.reset()
    ctx = ctx_for(fake, tmp_path, "ray")
    out = run_on_ray(info.func, ROWS, ctx, actors=2, batch_size=6)
    assert out == single
    assert fake.count() == 20
    assert ctx.stats.rows == 20 and ctx.stats.ok == 20 and ctx.llm.stats.calls == 20
    journals = sorted(p.name for p in (tmp_path / "ray" / "work").glob("alpagasus.rate.journal.*.jsonl"))
    # One journal per actor that got work (a pool of 2; a fast actor may take every batch).
    assert 1 <= len(journals) <= 2 and all(".ray-" in name for name in journals)

    again = ctx_for(fake, tmp_path, "ray")
    assert run_on_ray(info.func, ROWS, again, actors=2, batch_size=6) == single
    assert again.stats.reused == 20 and fake.count() == 20
    # One process on the Ray run's work dir reads every actor's journal: nothing to do.
    local = ctx_for(fake, tmp_path, "ray")
    assert info.func(ROWS, local) == single and local.stats.reused == 20 and local.llm.stats.calls == 0


def test_method_from_a_test_module_and_the_cli(local_ray: None, fake, tmp_path: Path) -> None:
    ctx = ctx_for(fake, tmp_path, "s1")
    expected = sampled(ROWS, ctx)
    on_ray = run_on_ray(sampled, ROWS, ctx_for(fake, tmp_path, "s2"), actors=2, batch_size=7)
    assert on_ray == expected and all(len(set(r["votes"])) == 2 for r in on_ray)

    write_records(tmp_path / "in.jsonl", ROWS[:8])
    common = [
        "judge",
        "alpagasus",
        str(tmp_path / "in.jsonl"),
        "-m",
        "fake-model",
        "--api-base",
        fake,
        "--cache-dir",
        str(tmp_path / "cli-cache"),
        "--quiet",
    ]
    assert (
        cli_main(
            [
                *common,
                "--out",
                str(tmp_path / "ray.jsonl"),
                "--engine",
                "ray",
                "--actors",
                "2",
                "--ray-batch-size",
                "3",
            ]
        )
        == 0
    )
    assert cli_main([*common, "--out", str(tmp_path / "one.jsonl")]) == 0
    ray_rows, one_rows = read_records(tmp_path / "ray.jsonl"), read_records(tmp_path / "one.jsonl")
    assert [r["alpagasus_raw"] for r in ray_rows] == [r["alpagasus_raw"] for r in one_rows]
    # The judge's own summary counts one batch on an actor: the manifest records it only from one process.
    one_manifest = json.loads((tmp_path / "one.jsonl.manifest.json").read_text())
    ray_manifest = json.loads((tmp_path / "ray.jsonl.manifest.json").read_text())
    assert one_manifest["counts"]["rows"] == 8 and "counts" not in ray_manifest

    # A pipeline step with `engine: ray` (the engine is not part of the step's fingerprint).
    (tmp_path / "p.yaml").write_text(
        f"out: {tmp_path / 'pipe'}\nmodel: fake-model\n"
        f"model_options: {{api_base: '{fake}', cache_dir: '{tmp_path / 'pipe-cache'}'}}\n"
        "steps:\n  - judge: alpagasus\n    input: in.jsonl\n    engine: ray\n    ray: {actors: 2, batch_size: 3}\n"
    )
    manifest = Pipeline.from_yaml(tmp_path / "p.yaml").run(progress=False)
    assert manifest["steps"][0]["run"]["ok"] == 8 and manifest["steps"][0]["calls"]["calls"] == 8
    assert read_records(tmp_path / "pipe" / "selected.jsonl") == ray_rows  # both paid their calls


def test_embeddings_on_ray_match_one_process(local_ray: None, tmp_path: Path) -> None:
    from instructkit.models.embeddings import embedder

    texts = [f"{r['instruction']}\n{r['output']}" for r in ROWS]
    single = embedder("local", cache_dir=str(tmp_path / "one")).embed(texts)
    vecs = ray_embed(texts, "local", actors=2, batch_size=8, cache_dir=str(tmp_path / "ray"))
    assert vecs.shape == single.shape == (20, 384) and vecs.dtype == np.float32
    # Equal up to float rounding: padding differs with the batch each text falls in.
    np.testing.assert_allclose(vecs, single, atol=1e-5)
    # The second run reads the per-text cache the actors wrote: bit-identical.
    cached = embedder("local", cache_dir=str(tmp_path / "ray"))
    assert np.array_equal(cached.embed(texts), vecs) and cached.stats.calls == 0
