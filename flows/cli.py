"""The `scratchlm` command line. Options of `scratchlm stage NAME` come from the stage's config
dataclass; the last line printed on stdout is always the output folder."""
from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from flows.options import (OneLineErrors, build_config, check_config, check_crawl, check_store, dataclass_parameters,
                           name_artifacts, parse_assignments)
from pipeline.errors import StageError
from pipeline.runner import RunOptions
from pipeline.stages import DATA_STAGES, STAGE_MODULES, get_stage

app = typer.Typer(help="scratchlm: from a raw web crawl to an evaluated GPT.", no_args_is_help=True, cls=OneLineErrors,
                  add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
stage_app = typer.Typer(help="Run one stage on its own data (Parquet/JSONL with a `text` column, or WARC for ingest).", rich_markup_mode=None,
                        no_args_is_help=True)
app.add_typer(stage_app, name="stage")


def fail(message: str, code: int = 2):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _stage_command(stage):
    common = [
        inspect.Parameter("input", inspect.Parameter.KEYWORD_ONLY, annotation=list[Path],
                          default=typer.Option(..., "--input", "-i", help="Input files, folders, globs or artifact folders (several allowed after one --input).")),
        inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                          default=typer.Option(None, "--output", "-o", help="Also place the finished artifact at this folder.")),
        inspect.Parameter("store", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                          default=typer.Option(None, "--store", envvar="SCRATCHLM_STORE", help="Artifact store root [default: ./artifacts].")),
    ]
    if getattr(stage, "resolve_against", None) is not None:
        common.append(inspect.Parameter(
            "against", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[Path]],
            default=typer.Option(None, "--against", help="Earlier dedup artifact(s) whose saved index the input is deduplicated against.")))
    run_params = dataclass_parameters(RunOptions, "Run options")
    config_params = dataclass_parameters(stage.config_cls, f"{stage.name} knobs")

    def command(**values):
        from pipeline.runner import run_stage
        from storage.store import ArtifactStore, export_artifact

        config = build_config(stage.config_cls, values)
        options = build_config(RunOptions, values)
        against = values.get("against") or []
        check_store(values["store"])
        try:
            result = run_stage(stage, values["input"], config, ArtifactStore(values["store"]), options,
                               against=[str(a) for a in against])
        except StageError as exc:
            fail(name_artifacts(str(exc), values["input"]))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        _print_summary(result)
        path = result.path
        if values["output"] is not None:
            try:
                path = export_artifact(result.path, values["output"])
            except FileExistsError as exc:
                fail(str(exc))
        typer.echo(str(path))

    command.__signature__ = inspect.Signature(common + run_params + config_params)
    command.__doc__ = stage.description
    return command


def _print_summary(result) -> None:
    stats = result.manifest["stats"]
    state = "cached" if result.cached else "done"
    line = f"{result.manifest['stage']} {state}: {stats['docs_in']} docs in, {stats['docs_out']} out"
    if stats.get("dropped"):
        line += "; dropped " + ", ".join(f"{k}={v}" for k, v in stats["dropped"].items())
    if stats.get("faults"):
        line += "; faults " + ", ".join(f"{k}={v}" for k, v in stats["faults"].items())
    if "shards" in stats:
        line += f"; shards computed {stats['shards']['computed']}, reused {stats['shards']['reused']}"
    typer.echo(line, err=True)
    for extra_line in _result_lines(result.manifest["stage"], stats, result.path):
        typer.echo(f"  {extra_line}", err=True)


for _name in STAGE_MODULES:
    _stage = get_stage(_name)
    stage_app.command(name=_name, help=_stage.description)(_stage_command(_stage))


def _knob_listing() -> str:
    import dataclasses

    lines = []
    for name in STAGE_MODULES:
        fields = dataclasses.fields(get_stage(name).config_cls)
        lines.append(f"{name}: " + ", ".join(f"{f.name}={f.default if f.default is not dataclasses.MISSING else f.default_factory()}" for f in fields))
    return "\n\n".join(lines)


@app.command("run", help="Run the pipeline as a Prefect flow (ingest → extract → langid → quality → dedup → "
                         "train-tokenizer → tokenize → pretrain → evaluate; stages not registered yet are skipped). "
                         "Unchanged stages come back Cached; a changed knob re-runs only what depends on it.\n\n"
                         "Knobs (set with --set STAGE.KNOB=VALUE):\n\n" + _knob_listing())
def run_pipeline(
    crawl: list[Path] = typer.Option(None, "--crawl", "-c", help="WARC files or folders [default: the bundled sample crawl]."),
    store: Optional[Path] = typer.Option(None, "--store", envvar="SCRATCHLM_STORE", help="Artifact store root [default: ./artifacts]."),
    until: str = typer.Option("dedup", "--until", help="Last stage to run: ingest … dedup, train-tokenizer, tokenize, pretrain, evaluate."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="A knob, STAGE.KNOB=VALUE (repeatable), e.g. quality.min_words=30."),
    workers: int = typer.Option(0, "--workers", help="Worker processes per stage [default: one per core]."),
    runner: str = typer.Option("local", "--runner", help="local: worker processes on this machine; dask: one Prefect task per input file on a Dask cluster."),
    dask_address: str = typer.Option("", "--dask-address", help="Scheduler of an existing Dask cluster (tcp://host:8786) [default: a LocalCluster of 2 workers]."),
    held_out: Optional[Path] = typer.Option(None, "--held-out", help="A fixed held-out set evaluate scores instead of the val split (text JSONL/Parquet, a folder, or a dedup/tokenize artifact): the same bytes for every run, so `report --compare` compares."),
    seeds: str = typer.Option("", "--seeds", help="Pretrain and evaluate once per seed, e.g. 0,1,2; the report gives mean ± spread across seeds."),
):
    from flows.pipeline_flow import PIPELINE, RUNNERS
    from storage.store import default_root

    try:
        seed_list = [int(v) for v in seeds.split(",") if v.strip()]
    except ValueError:
        fail(f"--seeds: a comma-separated list of integers, e.g. 0,1,2; got {seeds!r}")
    if len(set(seed_list)) != len(seed_list):
        fail(f"--seeds: {seeds!r} names a seed twice")
    if held_out is not None and not held_out.exists():
        fail(f"--held-out {held_out}: no such file or folder")

    if until not in PIPELINE:
        fail(f"--until must be one of {', '.join(PIPELINE)}, not {until!r}")
    if runner not in RUNNERS:
        fail(f"--runner must be one of {', '.join(RUNNERS)}, not {runner!r}")
    configs = {name: get_stage(name).config_cls() for name in STAGE_MODULES}
    try:
        configs = parse_assignments(set_ or [], configs)
    except typer.BadParameter as exc:
        fail(str(exc))
    from flows.forms import parameter_name
    from flows.pipeline_flow import SAMPLE_CRAWL, data_pipeline, scratchlm_pipeline

    crawl_paths = [str(p) for p in crawl] if crawl else [SAMPLE_CRAWL]
    for p in crawl_paths:
        if not Path(p).exists():
            fail(f"{p}: no such file or folder")
    check_crawl(crawl_paths)  # WARC files, before a Prefect server starts
    check_store(store)
    if workers < 0:
        fail(f"--workers: must be at least 0 (0: one per core), got {workers}")
    try:
        flow = data_pipeline if until in DATA_STAGES else scratchlm_pipeline
        model_params = {"held_out": str(held_out.resolve()) if held_out else "", "seeds": seed_list} \
            if flow is scratchlm_pipeline else {}
        outputs = flow(crawl=crawl_paths, store=str(store or default_root()), until=until, workers=workers, runner=runner,
                       dask_address=dask_address, **model_params, **{parameter_name(n): c for n, c in configs.items()
                                                                     if n in DATA_STAGES or (flow is scratchlm_pipeline and n in PIPELINE)})
    except StageError as exc:
        fail(str(exc))
    from storage.store import load_manifest

    from flows.report import base_stage, model_output

    for name, path in outputs.items():
        if base_stage(name) not in STAGE_MODULES:
            typer.echo(f"{name:8s} {path}", err=True)
            continue
        stats = load_manifest(path)["stats"]
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats.get("dropped", {}).items(), key=lambda kv: -kv[1])[:3])
        made = model_output(name, stats)  # a model stage: tokens trained / items scored, not documents
        funnel = made if made else f"{stats['docs_in']:>7} → {stats['docs_out']:<7} docs"
        typer.echo(f"{name:8s} {funnel}  {path}" + (f"  (dropped: {dropped})" if dropped else ""), err=True)
        for line in _result_lines(base_stage(name), stats, Path(path)):
            typer.echo(f"         {line}", err=True)
    typer.echo(outputs.get(until) or list(outputs.values())[-1])


def _result_lines(name: str, stats: dict, folder: Path) -> list[str]:
    """What a stage produced beyond its funnel: tokens, the losses, the scores."""
    if name == "train-tokenizer" and "extra" in stats:
        return [f"vocab {stats['extra'].get('vocab_size')}; bytes/token " +
                ", ".join(f"{k} {v}" for k, v in list(stats.get("bytes_per_token", {}).items())[:10])]
    if name == "tokenize" and "splits" in stats:
        return ["tokens " + ", ".join(f"{s} {v['tokens']:,} ({v['docs']} docs)" for s, v in stats["splits"].items()) +
                f"; {stats.get('tokens_per_byte')} tokens per byte"]
    if name == "pretrain":
        return [line.removeprefix("pretrain: ") for line in stats.get("summary_lines", [])]
    if name == "evaluate" and "eval" in stats:
        try:  # the stage's own summary (set, standard errors, contamination), from eval.json
            from pipeline.stages.evaluate import summary_lines

            return summary_lines(json.loads((folder / "eval.json").read_text()))
        except (OSError, KeyError, ValueError, TypeError):
            pass
        scores = stats["eval"]
        lines = []
        lines += [f"{task}: " + ", ".join(f"{k} {v:.3f}" for k, v in values.items())
                  for task, values in scores.items() if isinstance(values, dict)]
        return lines
    return []


@app.command("serve", help="Register the deployments (whole pipeline, each sub-flow, each stage, retokenize-incremental "
                           "on a cron schedule, crawl-watch polling) and run what is triggered from the Prefect UI or API "
                           "(needs a server: `scratchlm ui`, then PREFECT_API_URL=http://127.0.0.1:4200/api).")
def serve_pipeline(
    crawl: list[Path] = typer.Option(None, "--crawl", "-c", help="Default crawl for runs [default: the bundled sample crawl]."),
    store: Optional[Path] = typer.Option(None, "--store", envvar="SCRATCHLM_STORE", help="Artifact store root [default: ./artifacts]."),
    every_hours: float = typer.Option(0, "--every-hours", help="Also run the data flow on a schedule, every N hours (0: only when triggered)."),
    cron: str = typer.Option("0 3 * * *", "--cron", help="Schedule of retokenize-incremental (cron, UTC)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="The fixed tokenizer (train-tokenizer artifact) of incremental runs [default: the last one used, else the newest in the store]."),
    poll_minutes: float = typer.Option(5, "--poll-minutes", help="crawl-watch looks for new crawl files this often (0: no crawl-watch)."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Serve only these groups: pipeline, data, tokens, model, align, stages, incremental (e.g. --only model align on the GPU machine)."),
):
    if crawl:
        check_crawl(crawl)
    if not every_hours >= 0:
        fail(f"--every-hours: must be 0 or more, got {every_hours}")
    check_store(store)
    from flows.deployments import GROUPS, serve

    for group in only or []:
        if group not in GROUPS:
            fail(f"--only must be among {', '.join(GROUPS)}, not {group!r}")
    serve([str(p.resolve()) for p in crawl] if crawl else None, str(store.resolve()) if store else None, every_hours,
          cron, str(tokenizer.resolve()) if tokenizer else "", poll_minutes, tuple(only) if only else GROUPS)


@app.command("update-tokens", help="The incremental re-tokenization, without Prefect: runs ingest → … → dedup → tokenize "
                                   "over everything under --crawl with a fixed tokenizer. Files seen before come back "
                                   "from the store; only new files are read, deduplicated against what was kept, and "
                                   "tokenized. The last line is the token dataset to pretrain on.")
def update_tokens_command(
    crawl: list[Path] = typer.Option(..., "--crawl", "-c", help="WARC files or folders (everything under them)."),
    tokenizer: Path = typer.Option(..., "--tokenizer", help="The fixed tokenizer: a train-tokenizer artifact or tokenizer.json."),
    store: Optional[Path] = typer.Option(None, "--store", envvar="SCRATCHLM_STORE", help="Artifact store root [default: ./artifacts]."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="A knob, STAGE.KNOB=VALUE (repeatable), e.g. langid.languages=all."),
    workers: int = typer.Option(0, "--workers", help="Worker processes per stage [default: one per core]."),
):
    from dataclasses import replace

    from pipeline.chain import TOKEN_CHAIN, shard_counts, update_tokens
    from storage.store import ArtifactStore

    try:
        configs = parse_assignments(set_ or [], {name: get_stage(name).config_cls() for name in TOKEN_CHAIN})
    except typer.BadParameter as exc:
        fail(str(exc))
    check_store(store)
    check_crawl(crawl)  # and the tokenizer, before ingest … dedup spend minutes on the crawl
    check_config(replace(configs["tokenize"], tokenizer=str(tokenizer)))
    if workers < 0:
        fail(f"--workers: must be at least 0 (0: one per core), got {workers}")
    options = RunOptions(workers=workers or RunOptions().workers)

    def report(name, result):
        computed, reused = shard_counts(result)
        typer.echo(f"{name:9s} shards computed {computed:>3}, reused {reused:>3}  {result.path}", err=True)

    try:
        results = update_tokens(crawl, tokenizer, ArtifactStore(store), configs, options, on_stage=report)
    except StageError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    typer.echo(str(results["tokenize"].path))


from flows.cli_flow import register as _register_flow_commands  # noqa: E402 - ui, report, knobs
_register_flow_commands(app)


def _sample_crawl_command():
    from pipeline.sample_crawl import SampleCrawlConfig

    params = [
        inspect.Parameter("out_dir", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                          default=typer.Option(Path("sample-crawl"), "--output", "-o", help="Folder for the WARC files.")),
        inspect.Parameter("small", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--small", help="The settings of the committed sample (a few MB); other knobs still apply on top.")),
    ] + dataclass_parameters(SampleCrawlConfig, "crawl knobs")

    def command(**values):
        import dataclasses

        from pipeline.sample_crawl import build_sample_crawl

        base = SampleCrawlConfig.small() if values["small"] else SampleCrawlConfig()
        defaults = SampleCrawlConfig()
        changed = {f.name: values[f.name] for f in dataclasses.fields(SampleCrawlConfig)
                   if values.get(f.name) is not None and values[f.name] != getattr(defaults, f.name)}
        config = check_config(dataclasses.replace(base, **changed))
        if values["out_dir"].exists() and not values["out_dir"].is_dir():
            fail(f"--output {values['out_dir']}: a file, not a folder")
        try:
            build_sample_crawl(config, values["out_dir"])
        except RuntimeError as exc:
            fail(str(exc))
        typer.echo(str(values["out_dir"]))

    command.__signature__ = inspect.Signature(params)
    return command


app.command("sample-crawl", help="Build a crawl (WARC) of Debian HTML documentation served on 127.0.0.1 and fetched "
                                 "by wget: thousands of pages in 10+ languages by default.")(_sample_crawl_command())


def _expand_multi_value_options(argv: list[str], names=("--input", "-i", "--against", "--compare", "--only", "--crawl", "-c")) -> list[str]:
    """Accept `--input a b c` as well as `--input a --input b` (click takes one value per flag)."""
    out: list[str] = []
    current = None
    for arg in argv:
        if arg in names:
            current = arg
            out.append(arg)
            continue
        if current and not arg.startswith("-") and out[-1] != current:
            out.extend([current, arg])
            continue
        if arg.startswith("-"):
            current = None
        out.append(arg)
    return out


from flows.cli_model import register as _register_model_commands  # noqa: E402 - generate, export, make-benchmark
_register_model_commands(app)
from flows.cli_align import register as _register_align_commands  # noqa: E402 - classify
_register_align_commands(app)


def main() -> None:
    import os

    # Prefect's temporary server gets 20 s to start by default; a busy 2-core machine needs more.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    sys.argv = [sys.argv[0]] + _expand_multi_value_options(sys.argv[1:])
    app()


if __name__ == "__main__":
    main()
