"""The `instructkit` command line, built from the method registry (built-ins and plugins alike).

Model options follow the `llm` CLI: `-m MODEL`, `-o NAME VALUE` for method options, `--key` for an
API key (never written anywhere), `--system` where a method takes one.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from . import registry
from .credentials import redact
from .data.io import InputError, read_records
from .guard import describe_os_error, refuse_overwrite
from .models.llm import BudgetExceeded
from .models.types import ModelCallError
from .run.manifest import done_rows, dry_run_line

RECORD_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".parquet"}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """The model flags, one per `ModelConfig` option."""
    from .models.config import add_model_args

    add_model_args(p)


def _add_scale_args(p: argparse.ArgumentParser, batch: bool = True) -> None:
    """Execution flags (Batch API, Ray); they never change a step's results."""
    g = p.add_argument_group("execution")
    if batch:
        g.add_argument("--batch", action="store_true",
                       help="send uncached chat requests through the provider's Batch API (OpenAI-compatible); "
                            "resumable: run again to collect a submitted batch")
        g.add_argument("--batch-poll", type=float, default=30.0, help="seconds between batch status checks")
        g.add_argument("--window", type=int, default=None, metavar="ROWS",
                       help="judges and scorers whose rows stand alone read, run, journal and write a JSONL input "
                            "ROWS at a time, so memory does not grow with it (default 10000; 0: all at once)")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: judge/score/embed over a Ray Data actor pool (RAY_ADDRESS or a local instance)")
    g.add_argument("--actors", type=int, default=2, help="ray: actors holding the model (default 2)")
    g.add_argument("--gpus-per-actor", type=float, default=0.0, help="ray: GPUs per actor (default 0)")
    g.add_argument("--ray-batch-size", type=int, default=64, help="ray: rows per batch (default 64)")


def _execution(args: argparse.Namespace) -> Any:
    from .run.execution import Execution

    return Execution(batch=getattr(args, "batch", False), poll_s=getattr(args, "batch_poll", 30.0),
                     engine=args.engine, ray={"actors": args.actors, "num_gpus": args.gpus_per_actor,
                                              "batch_size": args.ray_batch_size})


def _add_run_args(p: argparse.ArgumentParser, needs_input: bool = True) -> None:
    p.add_argument("input", nargs=None if needs_input else "?", help="input file or folder")
    p.add_argument("--out", required=True, help="output file (.jsonl, .json, .csv, .parquet, or a folder for datasets)")
    p.add_argument("-o", "--option", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="method option (repeatable); see the method's help for names")
    p.add_argument("--map", action="append", default=[], metavar="OURS=THEIRS", help="column mapping")
    p.add_argument("--seed", type=int, default=0, help="random_state for every sampling step (recorded)")
    p.add_argument("--work-dir", help="journals and side files (default OUT.work)")
    p.add_argument("--in-place", action="store_true",
                   help="allow --out to be the input file: it is replaced (atomically) once the run is done")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


RUN_DESCRIPTION = """Run the steps of a pipeline file in order. Each step is one method (generate, judge, score,
select), a `concat` of earlier steps, an `export` of the set as trainer files with a dataset card, or a
`train` of a model on it (TRL; `input` may name an export step); a step reads the previous step's output
unless its `input` names a file or another step."""

RUN_EPILOG = """resume:
  Run the same command again after a stop, a crash or an edit. A step whose fingerprint (method,
  options, model, model options, seed and input content) is unchanged is skipped and its saved output
  reused; a changed step re-runs, and inside it every row already answered comes back from the step's
  journals (OUT/work/STEP/) and the response cache, so only new or failed rows cost anything. A step
  with failed rows is saved but not marked done, so the next run retries just those rows.

outputs and the manifest:
  OUT/NN_STEP.jsonl each step's rows (OUT/NN_STEP.step.json once it finished cleanly)
  OUT/selected.jsonl the last step's rows
  OUT/manifest.json  per step: method, options, model identity and model options (never the key),
                     fingerprint, rows in/out, calls, cache hits, tokens, cost, wall time, failures;
                     the card's figures come from it
  `instructkit report OUT` turns the folder into one HTML page.

engines and batch mode (per step; neither changes a step's results or its cache entries):
  engine: ray          run a judge or score step on Ray actors; `ray: {actors: 4, num_gpus: 1,
                       batch_size: 64}`. Methods whose rows depend on each other are refused.
  batch: true          send a generate/judge/score step's calls through the provider's Batch API
                       (OpenAI-compatible; half price where the provider discounts it); `batch_poll:
                       SECONDS` between status checks (default 30). The run waits for the batch.

model options, budget and exit status:
  model_options (top level, then per step) take every model flag of `instructkit judge METHOD
  --help` by name (max_cost, concurrency, rpm, timeout, cache_dir, dtype, ...; api_key for --key,
  cache: false for --no-cache, engine for --local-engine): a step runs with the model a CLI call
  with those flags would get; a misspelt name is refused before the first step. A run stopped by
  max_cost exits 3 with everything done so far saved; run it again to go on.

checks before the first step (exit 2, with the file, line and key):
  every key at every level is known (the nearest valid name is suggested), step names are unique,
  each `input` is an earlier step or an existing file, each method and option exists, and templates
  stay in Jinja's sandbox. A step that gets 0 rows is an error unless it says `allow_empty: true`.
  One run at a time per OUT folder (a lock); a step never writes over a file it reads.

example:
  name: small
  model: openai/gpt-4o-mini
  out: out
  seed: 0
  model_options: {max_cost: 2.0}
  steps:
    - {name: rated, judge: alpagasus, input: data.jsonl, batch: true}
    - {name: ifd, score: ifd, model: local, engine: ray, ray: {actors: 2}}
    - {name: picked, select: topk, options: {k: 1000, score: alpagasus_score}}
    - {name: sft, export: messages}
"""


def methods_named(kind: str, rest: list[str]) -> list[registry.MethodInfo]:
    """The methods whose parsers `KIND REST...` needs: the one REST names (only its module is imported),
    else every method of the kind (for `KIND --help` and argparse's list of choices)."""
    if rest and not rest[0].startswith("-"):
        try:
            return [registry.get(kind, rest[0])]
        except KeyError:
            pass  # argparse says "invalid choice" and lists the methods
    return registry.list_methods(kind)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line parser. Method parsers are built only for the kind `argv` names (all kinds
    when `argv` is None), so `instructkit judge alpagasus ...` imports AlpaGasus and no other method."""
    parser = argparse.ArgumentParser(
        prog="instructkit",
        description="Make instruction-tuning data with LLMs, judge it, and select the best and most diverse subset.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for kind, verb in (("generate", "Generate instruction data"), ("judge", "Judge records with an LLM"),
                       ("score", "Score records with a local model"), ("select", "Select a subset")):
        kp = sub.add_parser(kind, help=verb, description=f"{verb}. Methods:")
        msub = kp.add_subparsers(dest="method", metavar="METHOD")
        if argv is not None and (not argv or argv[0] != kind):
            continue
        for info in registry.list_methods(kind) if argv is None else methods_named(kind, argv[1:]):
            options = "\n".join(f"  -o {n} VALUE   ({t}, default {d})" for n, t, d in info.option_help())
            mp = msub.add_parser(
                info.name, help=info.summary, description=info.summary,
                epilog=f"options:\n{options}" if options else None,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            _add_run_args(mp, needs_input=kind != "generate")
            _add_model_args(mp)
            if kind == "select":
                mp.add_argument("--report", action="store_true", help="print and save the diversity report")
            else:
                _add_scale_args(mp)
            mp.set_defaults(kind=kind)

    ep = sub.add_parser("embed", help="Embed records to a float32 .npy")
    ep.add_argument("input")
    ep.add_argument("--out", required=True, help="output .npy path")
    ep.add_argument("--fields", default="instruction,input,output", help="fields joined into the text")
    ep.add_argument("--text-template", default=None,
                    help="Jinja over the row's fields (or car_iqs, vicuna_v1.1) instead of --fields")
    ep.add_argument("--pooling", default=None, help="hf: mean|cls; causal: mean|last (default: the spec's)")
    ep.add_argument("--max-length", type=int, default=None, help="tokens the local encoder reads")
    _add_model_args(ep)
    _add_scale_args(ep, batch=False)
    ep.set_defaults(kind="embed")

    rp = sub.add_parser("run", help="Run a pipeline YAML file", description=RUN_DESCRIPTION,
                        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    rp.add_argument("pipeline", help="the pipeline YAML file (see examples/pipeline.yaml)")
    rp.add_argument("--out", help="output folder (overrides the file's `out`)")
    rp.add_argument("--dry-run", action="store_true",
                    help="call nothing: print each step's calls, tokens and cost (only the rows still to do)")

    xp = sub.add_parser("export", help="Write a set as SFT trainer files with a dataset card (and push it to the Hub)",
                        description="Trainer columns (alpaca, messages, sharegpt, or the Hub's parquet layout with "
                                    "messages), instructkit's columns kept apart, seeded splits, and a README.md card "
                                    "whose figures come from the run's manifest.")
    xp.add_argument("input", help="records to export (e.g. OUT/selected.jsonl)")
    xp.add_argument("--format", choices=["alpaca", "messages", "sharegpt", "hf"], default="messages")
    xp.add_argument("--out", required=True, help="output folder")
    xp.add_argument("--split", default="train=1", help="NAME=RATIO[,NAME=RATIO...] (default train=1)")
    xp.add_argument("--seed", type=int, default=0, help="random_state of the split")
    xp.add_argument("--roles", choices=["sharegpt", "openai"], default="sharegpt",
                    help="sharegpt format: `from` as human/gpt (sharegpt) or user/assistant (openai: what TRL needs)")
    xp.add_argument("--meta", choices=["field", "side", "none"], default="field",
                    help="instructkit's columns: a `meta` JSON string per row, SPLIT.meta.jsonl files, or dropped")
    xp.add_argument("--manifest", help="manifest for the card (default: INPUT.manifest.json or the folder's manifest.json)")
    xp.add_argument("--language", help="card: language codes, comma-separated (default: the rows' `language`, else en)")
    xp.add_argument("--license", help="card: license id (default: what the inputs declare)")
    xp.add_argument("--name", help="card: title")
    xp.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hub dataset repo (HF_ENDPOINT, HF_TOKEN)")
    xp.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")

    from .evaluation import add_evaluate_args, add_train_args

    add_train_args(sub.add_parser("train", help="Fine-tune a causal LM on a set with TRL's SFTTrainer (LoRA optional)",
                                  description="TRL's SFTTrainer on the rows (loss on the answers); every setting and "
                                              "the seed go to OUT/train.manifest.json. Needs the `train` extra."))
    add_evaluate_args(sub.add_parser("evaluate", help="Held-out answer loss of a model, and a judge's win rate vs a baseline"))

    cp = sub.add_parser("cache", help="Inspect or clean the response cache")
    cp.add_argument("action", choices=["stats", "clear", "prune"])
    cp.add_argument("--cache-dir")
    cp.add_argument("--older-than", type=float, default=30.0, help="prune: days")

    mp = sub.add_parser("models", help="List model kinds or check one")
    mp.add_argument("action", choices=["list", "check"])
    mp.add_argument("model", nargs="?")
    from .models.config import add_model_args

    add_model_args(mp, only=("api_base", "api_key", "via"))

    dp = sub.add_parser("doctor", help="Which local engines this machine can run, which one `local` uses, and why")
    dp.add_argument("--short", action="store_true", help="one line (the demo prints it first)")
    dp.add_argument("--probe-again", action="store_true", help="run the llama.cpp probe anew (not the stored verdict)")

    rep = sub.add_parser("report", help="Write a self-contained HTML report for a pipeline output folder")
    rep.add_argument("out_dir")
    rep.add_argument("--html", help="report path (default OUT_DIR/report.html)")
    rep.add_argument("--encoder", default="local", help="embedding model for the map (default local)")

    lp = sub.add_parser("methods", help="List every method (built-in and plugins)")
    lp.add_argument("kind", nargs="?", choices=registry.KINDS)
    sub.add_parser("plugins", help="List methods that come from plugins")
    return parser


def model_config(args: argparse.Namespace) -> Any:
    """The `ModelConfig` the command's model flags describe."""
    from .models.config import ModelConfig

    return ModelConfig.from_args(args)


def run_method_command(args: argparse.Namespace) -> int:
    from .run.steps import DEFAULT_WINDOW, MethodStep, Models, method_options, run_step, step_input, streams

    info = registry.get(args.kind, args.method)
    mapping = dict(m.split("=", 1) for m in args.map)
    options, turns = method_options(info, dict(args.option))
    out = Path(args.out)
    config = model_config(args)
    how = _execution(args) if info.kind != "select" else None
    records: Any = []
    if args.input and (Path(args.input).suffix.lower() in RECORD_SUFFIXES or args.kind != "generate"):
        window = getattr(args, "window", None)
        window = (DEFAULT_WINDOW if window is None else window) if streams(info, options, how, config, out) else 0
        records = step_input(args.input, mapping or None, window)
    if not args.in_place:
        refuse_overwrite(out, [args.input])
    work_dir = Path(args.work_dir) if args.work_dir else out.with_name(out.name + ".work")
    refuse_overwrite(work_dir, [args.input], flag="")
    step = MethodStep(info, records, options, config, work_dir, seed=args.seed, turns=turns, how=how,
                input_path=args.input, progress=not args.quiet, extras={"report": getattr(args, "report", False)},
                lock=True)  # one writer per work folder: a second identical command stops, it does not pay again
    with Models() as models:
        result = run_step(step, models, out)
        return _finish_method(args, step, result, out)


def _finish_method(args: argparse.Namespace, step: Any, result: Any, out: Path) -> int:
    """The command's manifest, summary lines and exit status for its one step."""
    from .run.manifest import little_output_line, write_manifest

    info, ctx = step.info, result.ctx
    summary = {"method": f"{info.kind} {info.name}", "rows_in": len(step.records), "rows_out": result.rows_out,
               **ctx.stats.as_dict(), "model": result.model_identity, "calls": result.calls}
    if step.model.dry_run:
        if ctx.stats.reused:
            print(f"dry run: {done_rows(ctx.stats.as_dict())} (journals in {step.work_dir}); the estimate is for the "
                  "rest", file=sys.stderr)
        print(dry_run_line(result.calls), file=sys.stderr)
        return 0
    entry = result.entry(len(step.records))
    write_manifest(out.with_name(out.name + ".manifest.json"), **summary, **result.figures,
                   calls_total=entry["calls_total"],
                   model_config=entry["model_config"],
                   options=step.options.__dict__ if step.options is not None else None, seed=args.seed)
    print_summary(summary, out, model_path(step.model))
    if info.kind == "select" and getattr(args, "report", False):
        write_selection_report(step.records, result.rows, ctx, step.options, out)
    if ctx.stats.stopped_reason:
        print(f"stopped: {ctx.stats.stopped_reason}. Run the same command again to continue.", file=sys.stderr)
    if flags := little_output_line([{"step": summary["method"], **summary, **result.figures}]):
        print(flags, file=sys.stderr)  # the last line: a step that produced little is never a quiet success
    if ctx.stats.stopped_reason:
        return 3
    return 1 if ctx.stats.failed else 0


def write_selection_report(records: list[dict], selected: list[dict], ctx: Any, options: Any, out: Path) -> None:
    """`select --report`: diversity of the selection beside a random subset of the same size."""
    idx = [int(r["_select_index"]) for r in selected if "_select_index" in r]
    score = getattr(options, "score", None)
    score = score if score and any(isinstance(r.get(score), (int, float)) for r in records) else None
    reports = registry.extension_of("select.report")(records, idx, ctx, options, score=score)
    print(registry.extension_of("select.report_table")(reports))
    path = out.with_name(out.name + ".report.json")
    path.write_text(redact(json.dumps(reports, indent=1, default=str)))
    print(f"diversity report: {path}", file=sys.stderr)


def model_path(config: Any) -> str:
    """What sends a hosted model's requests and why ("fast HTTP (groq: OpenAI-compatible API, ...)",
    "litellm (--via litellm)"); "" for a local model."""
    from .models.spec import parse_spec

    ref = parse_spec(config.model, config.api_base, config.via)
    return "" if ref.path == "local" else f"{ref.path} ({ref.why})"


def print_summary(summary: dict[str, Any], out: Path, path: str = "") -> None:
    """The run's one summary line (and the warnings that mean something); `path`: what sent the
    model's requests and why (`model_path`)."""
    calls = summary.get("calls") or {}
    print(
        f"{summary['method']}: {summary['rows_out']} rows -> {out} | ok {summary['ok']} failed {summary['failed']} "
        f"reused {summary['reused']} | calls {calls.get('calls', 0)} cache hits {calls.get('cache_hits', 0)} "
        f"retries {calls.get('retries', 0)} | tokens {calls.get('prompt_tokens', 0) + calls.get('completion_tokens', 0):,} "
        f"cost ${calls.get('cost', 0.0):.4f} | {summary['wall_s']:.1f}s"
        + (f" | {path}" if path else ""),
        file=sys.stderr,
    )
    gate = calls.get("limiter") or {}
    if calls.get("throttled") or calls.get("limit_wait_s", 0) >= 1 or gate.get("paced_rpm"):
        learned = f"; learned concurrency {gate['concurrency']} (peak {gate['peak_in_flight']} in flight)" if gate else ""
        paced = f", paced at {gate['paced_rpm']:,.0f} rpm from the provider's headers" if gate.get("paced_rpm") else ""
        print(f"rate limits: {calls.get('throttled', 0)} replies were 429, {calls.get('limit_wait_s', 0.0):.1f}s spent "
              f"waiting for the provider's limits{paced}{learned}", file=sys.stderr)
    if calls.get("truncated"):
        print(f"{calls['truncated']} replies were cut at max_tokens (finish_reason length)"
              + ("" if calls.get("length_retries") else "; --retry-length 2 asks them again with twice the limit"),
              file=sys.stderr)
    if summary["failed"]:
        first = (summary.get("failures") or [{}])[0].get("error", "")
        print(f"{summary['failed']} rows failed (first: {first[:200]}; all in the output's _errors field); "
              "run the same command again to retry only them.", file=sys.stderr)


def cache_command(args: argparse.Namespace) -> int:
    from .models.cache import ResponseCache

    cache = ResponseCache(args.cache_dir)
    if args.action == "stats":
        print(json.dumps(cache.stats(), indent=1))
    elif args.action == "clear":
        print(f"removed {cache.clear()} entries")
    else:
        print(f"removed {cache.prune(args.older_than)} entries older than {args.older_than} days")
    return 0


def models_command(args: argparse.Namespace) -> int:
    if args.action == "list" or not args.model:
        print("local            embedded SmolLM2-135M-Instruct (transformers, offline)\n"
              "hf:PATH          any transformers causal LM folder or .gguf file\n"
              "MODEL@URL        any OpenAI-compatible server (vLLM, llama.cpp, Ollama, SGLang)\n"
              "provider/model   a hosted provider: fast HTTP for openai, azure, together_ai, groq, fireworks_ai,\n"
              "                 deepseek, openrouter, mistral (OpenAI-compatible) and anthropic (Messages API);\n"
              "                 litellm for the rest (gemini/..., bedrock/...) and with --via litellm")
        return 0
    from .models import LLM

    llm = LLM(args.model, api_base=args.api_base, api_key=args.api_key, via=args.via, cache=False, max_retries=1)
    try:
        return _check_model(llm)
    finally:
        llm.close()


def _check_model(llm: Any) -> int:
    report: dict[str, Any] = {"model": llm.identity, "path": llm.ref.path, "why": llm.ref.why}
    start = time.monotonic()
    try:
        c = llm.chat("Reply with the single word: ready", max_tokens=8, logprobs=True, top_logprobs=3)
        report.update(ok=True, latency_s=round(time.monotonic() - start, 3), reply=c.text[:80],
                      logprobs=bool(c.logprobs), top_logprobs=bool(c.logprobs and c.logprobs[0].top))
    except Exception as exc:
        report.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
        print(json.dumps(report, indent=1))
        return 1
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    try:
        value, _ = llm.json("Give a JSON object with key answer set to yes.", schema, max_tokens=32, repairs=0)
        report["json_schema"] = isinstance(value, dict) and "answer" in value
    except Exception as exc:
        report["json_schema"] = False
        report["json_schema_error"] = str(exc)[:200]
    report["json_schema_native"] = llm.supports_json_schema
    print(json.dumps(report, indent=1))
    return 0


def methods_command(args: argparse.Namespace, plugins_only: bool = False) -> int:
    rows = registry.list_methods(getattr(args, "kind", None))
    if plugins_only:
        rows = [m for m in rows if m.source != "builtin"]
        if not rows:
            print("no plugins installed (entry-point group instructkit.methods)")
    for m in rows:
        print(f"{m.kind:9} {m.name:22} {m.source:18} {m.summary}")
    return 0


def embed_command(args: argparse.Namespace) -> int:
    import numpy as np

    from .models.config import COMMON_OPTIONS
    from .models.embeddings import embedder

    records = read_records(args.input)
    fields = [f.strip() for f in args.fields.split(",") if f.strip()]
    texts = registry.extension_of("embed.texts")(records, fields, args.text_template)
    encoder = {k: v for k, v in (("pooling", args.pooling), ("max_length", args.max_length)) if v is not None}
    config = model_config(args)
    options = {name: getattr(config, name) for name in COMMON_OPTIONS if name != "api_key"}  # key: this process only
    if args.engine == "ray" and not config.dry_run:  # an estimate needs no cluster
        from .run.ray_engine import ray_embed

        vectors = ray_embed(texts, config.model, actors=args.actors, num_gpus=args.gpus_per_actor,
                            batch_size=args.ray_batch_size, **options, **encoder)
    else:
        model = embedder(config.model, api_key=config.api_key, **options, **encoder)
        try:
            vectors = model.embed(texts)
        finally:
            model.close()
        if config.dry_run:  # placeholder vectors: nothing is written
            print(dry_run_line(model.stats.as_dict()), file=sys.stderr)
            return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vectors.astype(np.float32))
    print(f"embedded {len(texts)} rows -> {out} {vectors.shape}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        if args.command in registry.KINDS:
            if not getattr(args, "method", None):
                parser.parse_args([args.command, "--help"])
            return run_method_command(args)
        if args.command == "embed":
            return embed_command(args)
        if args.command == "cache":
            return cache_command(args)
        if args.command == "export":
            from .data.export import export_command

            return export_command(args)
        if args.command in ("train", "evaluate"):
            from . import evaluation

            return evaluation.train_command(args) if args.command == "train" else evaluation.evaluate_command(args)
        if args.command == "models":
            return models_command(args)
        if args.command == "doctor":
            from .doctor import doctor_command

            return doctor_command(args)
        if args.command == "methods":
            return methods_command(args)
        if args.command == "plugins":
            return methods_command(args, plugins_only=True)
        if args.command == "report":
            from .data.report import write_report

            print(f"report: {write_report(args.out_dir, args.html, args.encoder)}", file=sys.stderr)
            return 0
        if args.command == "run":
            from .run.pipeline import run_pipeline_command

            return run_pipeline_command(args)
        parser.print_help()
        return 0
    except (InputError, ValueError, KeyError, TemplateError) as exc:  # bad input or options: nothing was called
        return fail(f"error: {str(exc).strip(chr(39)) if isinstance(exc, KeyError) else exc}", 2)
    except BudgetExceeded as exc:
        return fail(f"stopped: {exc}. Run the same command again to continue.", 3)
    except ModelCallError as exc:  # a call outside the row runner (an embedding step, a check) failed for good
        return fail(f"error: model call failed: {exc}", 1)
    except (OSError, sqlite3.Error) as exc:  # a full or read-only disk mid-run: the journals keep what was paid
        return fail(f"error: cannot write ({describe_os_error(exc)}); every answer so far is kept in the run's "
                    "journals and the response cache: free the space or fix the permission, then run the same "
                    "command again", 1)
    except KeyboardInterrupt:
        return fail("interrupted: every answer so far is kept; run the same command again to continue", 130)


def fail(message: str, code: int) -> int:
    """Print the message (no traceback, no key inside a URL) and return the exit status: 1 rows failed or the run could
    not finish, 2 bad input or options (nothing called), 3 budget."""
    print(redact(message), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
