"""Served deployments against a real Prefect server (`scratchlm ui` on a free loopback port, a
temporary PREFECT_HOME) and a real `scratchlm serve` process: runs triggered through the API and
the Prefect CLI, the Cached second run, the retokenize-incremental schedule, a new WARC computing
only its shards, and two concurrent runs writing one intact artifact per key."""
import asyncio
import contextvars
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows.ui import stop_server, wait_healthy
from storage.keys import file_digest

REPO = Path(__file__).resolve().parent.parent
SCRATCHLM = [sys.executable, "-c", "from flows.cli import main; main()"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory, sample_warcs):
    """A Prefect server and `scratchlm serve` on a crawl of one WARC file."""
    root = tmp_path_factory.mktemp("served")
    crawl, store, home = root / "crawl", root / "store", root / "prefect-home"
    crawl.mkdir()
    shutil.copy(sample_warcs[0], crawl / sample_warcs[0].name)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_TO_API_ENABLED="false", PREFECT_RUNNER_POLL_FREQUENCY="1")
    env.pop("PREFECT_API_URL", None)
    server_log = open(root / "server.log", "w")
    server = subprocess.Popen(SCRATCHLM + ["ui", "--port", str(port), "--home", str(home)], env=env, cwd=REPO,
                              stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True)
    serve_log = open(root / "serve.log", "w")
    serve = None
    try:
        wait_healthy(api, timeout=150, process=server)
        client_env = dict(env, PREFECT_API_URL=api)
        serve = subprocess.Popen(SCRATCHLM + ["serve", "--crawl", str(crawl), "--store", str(store), "--cron", "0 4 * * *",
                                              "--poll-minutes", "0"],
                                 env=client_env, cwd=REPO, stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True)
        os.environ["PREFECT_API_URL"] = api
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api}):
            yield {"crawl": crawl, "store": store, "api": api, "env": client_env, "serve": serve, "root": root,
                   "warcs": sample_warcs}
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        if serve is not None:
            stop_server(serve)
        stop_server(server)
        server_log.close()
        serve_log.close()


def _client_call(fn):
    from prefect.client.orchestration import get_client

    async def call():
        async with get_client() as client:
            return await fn(client)

    return asyncio.run(call())


def _deployments(served, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _client_call(lambda c: c.read_deployments())
        if any(d.name == "nightly" for d in found):  # serve registers them all at once, this one last
            return {d.name: d for d in found}
        assert served["serve"].poll() is None, (served["root"] / "serve.log").read_text()[-3000:]
        time.sleep(1)
    raise AssertionError(f"only {len(found)} deployments registered: " + (served["root"] / "serve.log").read_text()[-3000:])


def _run(name: str, parameters: dict, timeout: float = 240):
    from prefect.deployments import run_deployment

    flow_run = run_deployment(name, parameters=parameters, timeout=timeout, poll_interval=1)
    return flow_run


def _task_states(flow_run_id) -> dict:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = _client_call(lambda c: c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))))
    return {r.name.rsplit("-", 1)[0]: r.state.name for r in runs}


def _intact(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["outputs"] + manifest.get("side_outputs", []):
        assert file_digest(folder / entry["file"]) == "sha256:" + entry["sha256"], (folder, entry["file"])


@pytest.mark.timeout(600)  # a minute or two alone; more when the machine is shared
def test_served_deployments_run_cache_and_grow_incrementally(served):
    from pipeline.stages import STAGE_MODULES

    deployments = _deployments(served)
    names = set(deployments)
    assert {"whole-pipeline", "crawl-to-corpus", "corpus-to-tokens", "tokens-to-model", "nightly"} <= names
    assert set(STAGE_MODULES) <= names
    nightly = deployments["nightly"]
    assert nightly.schedules and nightly.schedules[0].schedule.cron == "0 4 * * *"
    flow_name = _client_call(lambda c: c.read_flow(nightly.flow_id)).name
    assert flow_name == "retokenize-incremental"

    # A parameter of the wrong type is refused by the server before any run starts.
    from prefect.exceptions import PrefectHTTPStatusError

    with pytest.raises(PrefectHTTPStatusError):
        _client_call(lambda c: c.create_flow_run_from_deployment(deployments["crawl-to-corpus"].id,
                                                                 parameters={"workers": "many"}))

    # Two runs with parameters started at once through the API: both complete, every task runs
    # once (Completed in one run, Cached in the other), one intact artifact per key.
    parameters = {"until": "quality", "workers": 1, "quality": {"gopher_min_words": 40}}
    with ThreadPoolExecutor(2) as pool:  # each thread with this one's Prefect settings (the API URL)
        futures = [pool.submit(contextvars.copy_context().run, _run, "scratchlm-data/crawl-to-corpus", parameters)
                   for _ in range(2)]
        both = [f.result() for f in futures]
    assert all(r.state.is_completed() for r in both), [r.state for r in both]
    states = [_task_states(r.id) for r in both]
    for stage in ("ingest", "extract", "langid", "quality"):
        assert sorted(s[stage] for s in states) == ["Cached", "Completed"], states
        folder = served["store"] / stage
        finished = [p for p in folder.iterdir() if (p / "manifest.json").is_file()]
        assert len(finished) == 1 and not list(folder.glob(".tmp-*")), stage
        _intact(finished[0])
    assert json.loads((finished[0] / "manifest.json").read_text())["config"]["gopher_min_words"] == 40

    # The same through `prefect deployment run -p key=value`: everything Cached.
    proc = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "scratchlm-data/crawl-to-corpus",
                           "-p", "until=quality", "-p", "workers=1", "-p", 'quality={"gopher_min_words": 40}',
                           "--watch", "--watch-timeout", "180"],
                          env=served["env"], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [latest] = _client_call(lambda c: c.read_flow_runs(sort="START_TIME_DESC", limit=1))
    assert latest.parameters["quality"] == {"gopher_min_words": 40}
    assert _task_states(latest.id) == {"ingest": "Cached", "extract": "Cached", "langid": "Cached", "quality": "Cached"}

    # The whole pipeline up to tokenize (a small vocabulary) makes the tokenizer that the
    # incremental flow then keeps fixed.
    whole = _run("scratchlm-pipeline/whole-pipeline", {"until": "tokenize", "workers": 1,
                                                       "train_tokenizer": {"vocab_size": 400}})
    assert whole.state.is_completed(), whole.state
    [tokenizer] = [p for p in (served["store"] / "train-tokenizer").iterdir() if (p / "manifest.json").is_file()]
    [tokens] = [p for p in (served["store"] / "tokenize").iterdir() if (p / "manifest.json").is_file()]
    # The tokenize task was handed the train-tokenizer task's artifact.
    assert json.loads((tokens / "manifest.json").read_text())["config"]["tokenizer"] == str(tokenizer)
    reports = list((served["store"] / "reports").glob("*/report.md"))
    assert reports and "Bytes per token" in reports[0].read_text()

    # A new WARC in the crawl: only its shards are computed, the tokenizer stays.
    shutil.copy(served["warcs"][1], served["crawl"] / served["warcs"][1].name)
    grown = _run("retokenize-incremental/nightly", {"workers": 1})  # tokenizer: the newest in the store
    assert grown.state.is_completed(), grown.state
    record = json.loads((served["store"] / "next-pretrain-tokens.json").read_text())
    assert record["tokens"] != str(tokens) and record["tokenizer"] == str(tokenizer)
    new_tokens = json.loads((Path(record["tokens"]) / "manifest.json").read_text())
    assert len(new_tokens["inputs"]) == 2
    for stage in ("ingest", "extract", "langid", "quality"):
        newest = max((p for p in (served["store"] / stage).iterdir() if (p / "manifest.json").is_file()),
                     key=lambda p: (p / "manifest.json").stat().st_mtime)
        shards = json.loads((newest / "manifest.json").read_text())["stats"]["shards"]
        assert shards["total"] == 2 and shards["computed"] == 1, (stage, shards)
    assert new_tokens["stats"]["shards"]["computed"] == 1, new_tokens["stats"]["shards"]
    _intact(Path(record["tokens"]))

    # crawl-watch (the polling trigger): it runs the incremental flow when the crawl differs from
    # its last look (here: it has never looked), and does nothing while the crawl stays the same.
    from flows.pipeline_flow import watch_crawl

    first_look = watch_crawl(crawl=[str(served["crawl"])], store=str(served["store"]), workers=1)
    assert first_look["next_pretrain_tokens"] == record["tokens"]
    assert watch_crawl(crawl=[str(served["crawl"])], store=str(served["store"]), workers=1) == {}


def test_the_ui_on_another_port_calls_the_api_on_that_port(served):
    """`scratchlm ui --port P`: the UI's browser code reads /ui-settings to find the API; it must
    say port P (Prefect's own default would send it to 4200, where nothing listens)."""
    import urllib.request

    base = served["api"].removesuffix("/api")
    assert not base.endswith(":4200")
    with urllib.request.urlopen(f"{base}/ui-settings", timeout=10) as response:
        settings = json.load(response)
    assert settings["api_url"] == served["api"]
