"""The pipeline as Prefect flows, built from the stage registry.

    scratchlm-pipeline = scratchlm-data (ingest → extract → langid → quality → dedup)
                       → scratchlm-tokens (train-tokenizer, tokenize) → scratchlm-model (pretrain, evaluate)

Each sub-flow also runs alone, each stage has its own flow (`stage-NAME`), and
`retokenize-incremental` re-runs the data stages over a whole crawl folder and tokenizes with a
fixed tokenizer. Every stage's knobs are flow parameters (its config dataclass, with the help
text of each knob in the form, see flows/forms.py). Tasks are cached under their artifact key
(flows/tasks.py), so an unchanged stage comes back Cached and a changed knob re-runs that stage and
what depends on it. A stage that is not registered (yet) is skipped with a log line. Tasks pass
artifact folders, never data; the model stages can therefore run wherever the store is mounted.
"""
from __future__ import annotations

import dataclasses
import inspect
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import wait

from flows.forms import parameter_name, run_parameter, stage_parameters, with_signature
from flows.tasks import shard_task_for, stage_input_files, stage_task_for
from pipeline.stages import STAGE_MODULES, get_stage
from storage.store import default_root, write_json_atomic

SAMPLE_CRAWL = str(Path(__file__).resolve().parent.parent / "data" / "sample-crawl")

# The whole DAG in order, registered or not; the sub-flows are consecutive slices of it.
PIPELINE = ("ingest", "extract", "langid", "quality", "dedup", "train-tokenizer", "tokenize", "pretrain", "evaluate")
SUBFLOWS = {"data": PIPELINE[:5], "tokens": PIPELINE[5:7], "model": PIPELINE[7:]}
# Where a stage's input comes from when it is not simply the stage before it.
INPUT_OF = {"train-tokenizer": "dedup", "tokenize": "dedup"}
# Knobs that name another stage's artifact, filled by the flow when left empty: a required one
# (no artifact to name → the stage is skipped) and optional ones (filled when there is one).
REFERENCE_KNOBS = {"tokenize": {"tokenizer": "train-tokenizer"}}
OPTIONAL_REFERENCE_KNOBS = {"evaluate": {"tokens": "tokenize"}}  # held-out split of the data trained on
RUNNERS = ("local", "dask")


def registered(names) -> list[str]:
    return [n for n in names if n in STAGE_MODULES]


def _stages(names) -> list:
    return [get_stage(n) for n in registered(names)]


# --------------------------------------------------------------------------------- the chain

@contextmanager
def shard_runner(runner: str, dask_address: str):
    """`local`: each stage is one task using the runner's worker processes. `dask`: shard stages
    become one task per input file on a Dask cluster (the one at `dask_address`, or a LocalCluster
    of 2 workers started for this flow run)."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, not {runner!r}")
    if runner == "local":
        yield None
        return
    import dask
    from prefect_dask import DaskTaskRunner

    if dask_address:
        task_runner = DaskTaskRunner(address=dask_address)
    else:
        task_runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True,
                                                     "dashboard_address": None})
    # Shard tasks start the runner's watched worker process: Dask workers may not be daemonic.
    with dask.config.set({"distributed.worker.daemon": False}), task_runner:
        yield task_runner


def run_stages(names, first_inputs: list[str], configs: dict[str, Any], store: str, workers: int = 0,
               task_runner=None, outputs: dict[str, str] | None = None) -> dict[str, str]:
    """Run the registered stages of `names` in order; each reads the artifact of its input stage
    (`input_stage`); one whose input stage lies before `names` reads `first_inputs`; one whose input
    stage did not run is skipped. Returns {stage: artifact folder}."""
    logger = get_run_logger()
    outputs = dict(outputs or {})
    for name in names:
        if name not in STAGE_MODULES:
            logger.info("%s: stage not registered yet, skipped", name)
            continue
        source = input_stage(name)
        if source in outputs:
            inputs = [outputs[source]]
        elif source is None or source not in names:  # made before this chain: its first inputs
            inputs = list(first_inputs)
        else:
            logger.info("%s: skipped, its input stage %s did not run", name, source)
            continue
        config = configs.get(name) or get_stage(name).config_cls()
        config, missing = _fill_references(name, config, outputs)
        if missing:
            logger.info("%s: skipped, no %s artifact to read (set %s.%s)", name, missing[1], name, missing[0])
            continue
        outputs[name] = run_one(name, inputs, config, store, workers, task_runner)
    return outputs


def input_stage(name: str) -> str | None:
    """The stage whose artifact `name` reads: INPUT_OF, else the stage before it in the DAG."""
    if name in INPUT_OF:
        return INPUT_OF[name]
    index = PIPELINE.index(name) if name in PIPELINE else 0
    return PIPELINE[index - 1] if index > 0 else None


def _fill_references(name: str, config, outputs: dict[str, str]):
    for knob, source in REFERENCE_KNOBS.get(name, {}).items():
        if not hasattr(config, knob) or getattr(config, knob):
            continue
        if source not in outputs:
            return config, (knob, source)
        config = dataclasses.replace(config, **{knob: outputs[source]})
    for knob, source in OPTIONAL_REFERENCE_KNOBS.get(name, {}).items():
        if hasattr(config, knob) and not getattr(config, knob) and source in outputs:
            config = dataclasses.replace(config, **{knob: outputs[source]})
    return config, None


def run_one(name: str, inputs: list[str], config, store: str, workers: int = 0, task_runner=None) -> str:
    stage = get_stage(name)
    if task_runner is not None and stage.kind == "shard":
        shard = shard_task_for(name, store)
        futures = [task_runner.submit(shard, parameters={"stage_name": name, "file": f, "config": config,
                                                         "store_root": store})
                   for f in stage_input_files(name, inputs)]
        wait(futures)
        for future in futures:
            future.result()  # raises the first shard's error
    return stage_task_for(name, store)(name, inputs, config, store, workers)


def _resolved(paths) -> list[str]:
    return [str(Path(p).resolve()) for p in paths]


def _configs(values: dict, names) -> dict[str, Any]:
    return {n: values[parameter_name(n)] for n in registered(names) if parameter_name(n) in values}


def _until(until: str, names) -> list[str]:
    if until not in PIPELINE:
        raise ValueError(f"until must be one of {', '.join(PIPELINE)}, not {until!r}")
    return [n for n in names if PIPELINE.index(n) <= PIPELINE.index(until)]


# ------------------------------------------------------------------------------------- flows

def _common(until_default: str | None = None, runner: bool = True, until_choices=PIPELINE) -> list[inspect.Parameter]:
    """store, until (a choice among this flow's stages), workers, runner (local/dask), dask_address."""
    params = [run_parameter("store", str, str(default_root().resolve())), run_parameter("workers", int, 0)]
    if until_default:
        params.insert(1, run_parameter("until", str, until_default, choices=until_choices))
    if runner:
        params += [run_parameter("runner", str, "local", choices=RUNNERS), run_parameter("dask_address", str, "")]
    return params


def _input(name: str, default: list[str] | None = None) -> inspect.Parameter:
    return run_parameter(name, list[str], inspect.Parameter.empty if default is None else default)


def _data(**values) -> dict[str, str]:
    names = _until(values.get("until", "dedup"), SUBFLOWS["data"])
    store = str(Path(values.get("store") or default_root()).resolve())
    with shard_runner(values.get("runner", "local"), values.get("dask_address", "")) as task_runner:
        outputs = run_stages(names, _resolved(values.get("crawl") or [SAMPLE_CRAWL]), _configs(values, names),
                             store, values.get("workers", 0), task_runner)
    get_run_logger().info("artifacts: %s", outputs)
    return outputs


data_pipeline = flow(name="scratchlm-data", log_prints=True)(with_signature(
    _data, "data_pipeline",
    [_input("crawl", [SAMPLE_CRAWL])] + _common("dedup", until_choices=SUBFLOWS["data"])
    + stage_parameters(_stages(SUBFLOWS["data"])),
    "Data stages on a crawl (WARC files or folders) up to `until`; returns each stage's artifact folder."))


def _tokens(**values) -> dict[str, str]:
    names = _until(values.get("until", "tokenize"), SUBFLOWS["tokens"])
    store = str(Path(values.get("store") or default_root()).resolve())
    configs = _configs(values, names)
    outputs: dict[str, str] = {}
    if values.get("tokenizer"):  # a fixed tokenizer: no training
        names = [n for n in names if n != "train-tokenizer"]
        outputs["train-tokenizer"] = str(Path(values["tokenizer"]).resolve())
        if "tokenize" in STAGE_MODULES:
            config = configs.get("tokenize") or get_stage("tokenize").config_cls()
            configs["tokenize"] = dataclasses.replace(config, tokenizer=outputs["train-tokenizer"])
    result = run_stages(names, _resolved(values["corpus"]), configs, store, values.get("workers", 0), outputs=outputs)
    return {k: v for k, v in result.items() if k in SUBFLOWS["tokens"]}


tokens_pipeline = flow(name="scratchlm-tokens", log_prints=True)(with_signature(
    _tokens, "tokens_pipeline",
    [_input("corpus"), run_parameter("tokenizer", str, "", help="A train-tokenizer artifact folder (or tokenizer.json) "
                                     "used as is; empty: train one on the corpus.")]
    + _common("tokenize", runner=False, until_choices=SUBFLOWS["tokens"]) + stage_parameters(_stages(SUBFLOWS["tokens"])),
    "Train a tokenizer on a corpus (a dedup artifact, or Parquet/JSONL) and tokenize it; with `tokenizer` "
    "(a train-tokenizer artifact) that tokenizer is used as is."))


def _model(**values) -> dict[str, str]:
    names = _until(values.get("until", "evaluate"), SUBFLOWS["model"])
    store = str(Path(values.get("store") or default_root()).resolve())
    tokens = _resolved(values["tokens"])
    configs = _with_held_out(_configs(values, names), values.get("held_out", ""))
    outputs: dict[str, str] = {}
    # --seeds: pretrain (and what follows it) once per seed; the first seed's artifacts under the
    # stage names, the others as `pretrain@seed1`, ... (flows/report.py gives mean ± spread)
    for n, seed in enumerate(values.get("seeds") or [None]):
        seeded = dict(configs)
        if seed is not None and "pretrain" in STAGE_MODULES:
            seeded["pretrain"] = dataclasses.replace(configs.get("pretrain") or get_stage("pretrain").config_cls(), seed=seed)
        made = run_stages(names, tokens, seeded, store, values.get("workers", 0),
                          outputs={"tokenize": tokens[0]} if len(tokens) == 1 else None)
        outputs.update({(k if n == 0 else f"{k}@seed{seed}"): v for k, v in made.items() if k in names})
    return outputs


def _with_held_out(configs: dict[str, Any], held_out: str) -> dict[str, Any]:
    """The `held_out` flow parameter: evaluate's fixed held-out set, unless its knob names one."""
    if held_out and "evaluate" in STAGE_MODULES:
        config = configs.get("evaluate") or get_stage("evaluate").config_cls()
        if not config.held_out:
            configs = dict(configs, evaluate=dataclasses.replace(config, held_out=str(Path(held_out).resolve())))
    return configs


def _model_parameters() -> list[inspect.Parameter]:
    return [run_parameter("held_out", str, "", help="A fixed held-out set evaluate scores instead of the val split (text "
                          "JSONL/Parquet, a folder, or a dedup/tokenize artifact): the same bytes for every run."),
            run_parameter("seeds", list[int], [], help="Pretrain and evaluate once per seed, e.g. [0, 1, 2]; the report "
                          "gives mean ± spread across seeds (empty: once, with pretrain's own seed).")]


model_pipeline = flow(name="scratchlm-model", log_prints=True)(with_signature(
    _model, "model_pipeline",
    [_input("tokens")] + _common("evaluate", runner=False, until_choices=SUBFLOWS["model"]) + _model_parameters()
    + stage_parameters(_stages(SUBFLOWS["model"])),
    "Pretrain a GPT on a token artifact and evaluate it (run this deployment where the GPU is). `held_out`: a fixed "
    "held-out set for evaluate (text files or a dedup/tokenize artifact); `seeds`: pretrain and evaluate once per seed."))


def _pipeline(**values) -> dict[str, str]:
    until = values.get("until", "evaluate")
    _until(until, PIPELINE)
    common = {k: values[k] for k in ("store", "workers") if k in values}
    pick = lambda part: {parameter_name(n): values[parameter_name(n)] for n in registered(SUBFLOWS[part])  # noqa: E731
                         if parameter_name(n) in values}
    data_until = until if until in SUBFLOWS["data"] else "dedup"
    outputs = data_pipeline(crawl=values.get("crawl") or [SAMPLE_CRAWL], until=data_until,
                            runner=values.get("runner", "local"), dask_address=values.get("dask_address", ""),
                            **common, **pick("data"))
    if _until(until, SUBFLOWS["tokens"]) and "dedup" in outputs:
        outputs.update(tokens_pipeline(corpus=[outputs["dedup"]], until=min(until, "tokenize", key=PIPELINE.index),
                                       **common, **pick("tokens")))
    if _until(until, SUBFLOWS["model"]) and "tokenize" in outputs:
        outputs.update(model_pipeline(tokens=[outputs["tokenize"]], until=until, held_out=values.get("held_out", ""),
                                      seeds=values.get("seeds") or [], **common, **pick("model")))
    elif _until(until, SUBFLOWS["model"]):
        get_run_logger().info("model stages skipped: no token artifact")
    _finish(outputs, values)
    return outputs


def _finish(outputs: dict[str, str], values: dict) -> None:
    """The run report: report.md (images beside it) in `<store>/reports/<keys digest>/`, also a
    markdown artifact in Prefect; its folder is returned as outputs["report"]."""
    from prefect.artifacts import create_markdown_artifact

    from flows.report import write_report
    from storage.keys import content_key

    store = Path(values.get("store") or default_root()).resolve()
    report = write_report(outputs, store / "reports" / content_key(sorted(outputs.items())))
    create_markdown_artifact(key="scratchlm-run-report", markdown=report.read_text(),
                             description=f"scratchlm run report ({report})")
    get_run_logger().info("run report: %s", report)
    outputs["report"] = str(report.parent)


scratchlm_pipeline = flow(name="scratchlm-pipeline", log_prints=True)(with_signature(
    _pipeline, "scratchlm_pipeline",
    [_input("crawl", [SAMPLE_CRAWL])] + _common("evaluate") + _model_parameters() + stage_parameters(_stages(PIPELINE)),
    "The whole DAG: crawl → corpus → tokens → model → scores, up to `until`. Ends with a run report."))


def _incremental(**values) -> dict[str, str]:
    """Data stages over the whole crawl (per-shard caching computes only new WARC files; dedup
    reuses unchanged parts), then tokenize with the FIXED tokenizer given."""
    store = str(Path(values.get("store") or default_root()).resolve())
    tokenizer = values.get("tokenizer") or fixed_tokenizer(store)
    common = {k: values[k] for k in ("store", "workers") if k in values}
    data_params = {parameter_name(n): values[parameter_name(n)] for n in registered(SUBFLOWS["data"])
                   if parameter_name(n) in values}
    outputs = data_pipeline(crawl=values["crawl"], until="dedup", runner=values.get("runner", "local"),
                            dask_address=values.get("dask_address", ""), **common, **data_params)
    token_params = {"tokenize": values["tokenize"]} if "tokenize" in values else {}
    outputs.update(tokens_pipeline(corpus=[outputs["dedup"]], tokenizer=tokenizer, **common, **token_params))
    if "tokenize" in outputs:
        # The token dataset pretraining should read next, also kept beside the artifacts.
        write_json_atomic(Path(store) / NEXT_TOKENS,
                          {"tokens": outputs["tokenize"], "tokenizer": outputs["train-tokenizer"],
                           "crawl": _resolved(values["crawl"])})
        get_run_logger().info("pretraining should read next: %s", outputs["tokenize"])
        outputs["next_pretrain_tokens"] = outputs["tokenize"]
    return outputs


NEXT_TOKENS = "next-pretrain-tokens.json"


def fixed_tokenizer(store: str) -> str:
    """The tokenizer an incremental run keeps when none is given: the one the previous incremental
    run used, else the newest train-tokenizer artifact in the store. A new tokenizer is a
    deliberate full run (scratchlm-pipeline or scratchlm-tokens)."""
    import json

    record = Path(store) / NEXT_TOKENS
    if record.is_file():
        return json.loads(record.read_text())["tokenizer"]
    from storage.store import ArtifactStore

    found = ArtifactStore(store).artifacts("train-tokenizer")
    if not found:
        raise ValueError(f"retokenize-incremental needs `tokenizer` (a train-tokenizer artifact folder): "
                         f"none given and none in {store}")
    return str(found[-1])


retokenize_incremental = flow(name="retokenize-incremental", log_prints=True)(with_signature(
    _incremental, "retokenize_incremental",
    [_input("crawl", [SAMPLE_CRAWL]), run_parameter("tokenizer", str, "")]
    + _common() + stage_parameters(_stages(SUBFLOWS["data"] + ("tokenize",))),
    "New crawl files → data stages (only new shards compute) → tokenize with a fixed tokenizer. "
    "The result's `next_pretrain_tokens` is the token dataset pretraining should read next."))


def _crawl_fingerprint(crawl: list[str]) -> list:
    from pipeline.documents import expand_inputs

    files = expand_inputs(_resolved(crawl), get_stage("ingest").input_suffixes)
    return sorted([str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files)


def _watch(**values) -> dict[str, str]:
    """Poll: when the crawl's files (names, sizes, mtimes) differ from the last look, run
    retokenize-incremental now instead of waiting for its nightly schedule."""
    import hashlib
    import json

    store = str(Path(values.get("store") or default_root()).resolve())
    crawl = values.get("crawl") or [SAMPLE_CRAWL]
    fingerprint = _crawl_fingerprint(crawl)
    state = Path(store) / ".prefect" / f"crawl-watch-{hashlib.sha256(json.dumps(_resolved(crawl)).encode()).hexdigest()[:12]}.json"
    if state.is_file() and json.loads(state.read_text()) == fingerprint:
        get_run_logger().info("crawl unchanged (%d files): nothing to do", len(fingerprint))
        return {}
    tokenizer = values.get("tokenizer", "")
    if not tokenizer:
        try:
            tokenizer = fixed_tokenizer(store)
        except ValueError as exc:  # no tokenizer trained yet: not an error of every poll
            get_run_logger().info("%s; waiting for a full run (scratchlm-pipeline) to train one", exc)
            return {}
    outputs = retokenize_incremental(crawl=crawl, tokenizer=tokenizer, store=store, workers=values.get("workers", 0))
    state.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state, fingerprint)
    return outputs


watch_crawl = flow(name="crawl-watch", log_prints=True)(with_signature(
    _watch, "watch_crawl",
    [_input("crawl", [SAMPLE_CRAWL]), run_parameter("tokenizer", str, "")] + _common(runner=False),
    "Runs retokenize-incremental as soon as the crawl folder has new or changed files (a short-interval poll)."))


def _make_stage_flow(name: str):
    stage = get_stage(name)
    params = [_input("inputs")] + _common(runner=False)
    if stage.kind == "global":
        params.append(run_parameter("against", list[str], []))
    params += stage_parameters([stage])

    def run(**values) -> dict[str, str]:
        store = str(Path(values.get("store") or default_root()).resolve())
        config = values.get(parameter_name(name)) or stage.config_cls()
        task = stage_task_for(name, store)
        return {name: task(name, _resolved(values["inputs"]), config, store, values.get("workers", 0),
                           against=_resolved(values.get("against") or []))}

    fn = with_signature(run, f"stage_{parameter_name(name)}", params, f"{name}: {stage.description}")
    return flow(name=f"stage-{name}", log_prints=True)(fn)


STAGE_FLOWS = {name: _make_stage_flow(name) for name in STAGE_MODULES}
globals().update({f.fn.__name__: f for f in STAGE_FLOWS.values()})  # importable by a served deployment

SUBFLOW_OBJECTS = {"data": data_pipeline, "tokens": tokens_pipeline, "model": model_pipeline}
