"""A Prefect server on PostgreSQL, the setup for a server shared by a team (docs/backends.md): a
private cluster from Debian's `postgresql` package (initdb and pg_ctl under /usr/lib/postgresql,
a temporary data folder, a free loopback port, its unix socket in that folder), a real `prefect
server start` pointed at it through PREFECT_API_DATABASE_CONNECTION_URL, and two `scratchlm run`
processes started at once against that server: every stage is computed once, a later run is all
Cached, and the runs are recorded in PostgreSQL (no SQLite file appears)."""
import asyncio
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from flows.ui import server_env, stop_server, wait_healthy

REPO = Path(__file__).resolve().parent.parent
SCRATCHLM = [sys.executable, "-c", "from flows.cli import main; main()"]
DATA_STAGES = ("ingest", "extract", "langid", "quality", "dedup")
DATABASE_SETTINGS = ("PREFECT_API_DATABASE_", "PREFECT_SERVER_DATABASE_")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing(reason: str):
    """.ci/run sets SCRATCHLM_REQUIRE_SERVERS=1: there a missing server is a failure, not a skip."""
    if os.environ.get("SCRATCHLM_REQUIRE_SERVERS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def _postgres_bin() -> Path:
    """Debian's binaries for the newest installed PostgreSQL (never a pg_ctl found on PATH, which may
    be anything, e.g. a link made by hand)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: [int(n) for n in Path(p).parts[4].split(".") if n.isdigit()])  # 15, 9.6
    if not found:
        _missing("PostgreSQL is not installed (apt-get install postgresql)")
    return Path(found[-1]).parent


def _as_cluster_owner() -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as Debian's `postgres` user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        _missing("running as root and there is no `postgres` user to own the cluster")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="module")
def postgres_url():
    """A private PostgreSQL cluster on a free loopback port, removed afterwards; yields the
    connection URL Prefect takes and a function running SQL through psql."""
    bin_dir = _postgres_bin()
    as_owner = _as_cluster_owner()
    # Not pytest's tmp_path: its parent is private to the user running the tests, and the cluster
    # owner (postgres, when that is root) must reach its data folder.
    root = Path(tempfile.mkdtemp(prefix="scratchlm-postgres-"))
    if as_owner:
        shutil.chown(root, user="postgres")
    data, log = root / "data", root / "postgres.log"
    port = _free_port()
    user = "prefect"
    pg_ctl = as_owner + [str(bin_dir / "pg_ctl"), "-D", str(data)]
    started = None
    try:
        made = subprocess.run(as_owner + [str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust",
                                          "--no-sync", "-E", "UTF8", "--no-locale"],
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stdout + made.stderr
        # -F: no fsync, a throwaway cluster; -k: the unix socket in our folder, not /var/run/postgresql.
        started = subprocess.run(pg_ctl + ["-l", str(log), "-w", "-t", "60", "-o",
                                           f"-p {port} -h 127.0.0.1 -k {root} -F", "start"],
                                 capture_output=True, text=True, timeout=90)
        assert started.returncode == 0, started.stdout + started.stderr + (log.read_text() if log.exists() else "")
        address = ["-h", "127.0.0.1", "-p", str(port), "-U", user]
        subprocess.run([str(bin_dir / "createdb")] + address + ["prefect"], check=True, capture_output=True, timeout=60)

        def sql(query: str) -> str:
            return subprocess.run([str(bin_dir / "psql")] + address + ["-d", "prefect", "-tAc", query],
                                  check=True, capture_output=True, text=True, timeout=60).stdout.strip()

        yield f"postgresql+asyncpg://{user}@127.0.0.1:{port}/prefect", sql
    finally:
        if started is not None:
            subprocess.run(pg_ctl + ["-m", "fast", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server(postgres_url, tmp_path_factory):
    """`prefect server start` on a free loopback port with its database in the private cluster.
    Only the subprocess's environment names the database: this test process's Prefect settings
    (and so every other test's) are left alone."""
    url, sql = postgres_url
    root = tmp_path_factory.mktemp("prefect-postgres")
    home = root / "prefect-home"
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    # Any database setting of the calling shell goes (the new name would win over the old one).
    env = {k: v for k, v in server_env(str(home)).items() if not k.startswith(DATABASE_SETTINGS)}
    env.update(PREFECT_API_DATABASE_CONNECTION_URL=url, PREFECT_LOGGING_TO_API_ENABLED="false")
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            try:
                wait_healthy(api, timeout=150, process=server)
            except RuntimeError as exc:
                raise AssertionError(f"{exc}\n{log_path.read_text()[-3000:]}") from None
            client_env = {k: v for k, v in env.items() if not k.startswith(DATABASE_SETTINGS)}
            yield {"api": api, "sql": sql, "home": home, "root": root, "log": log_path,
                   "env": dict(client_env, PREFECT_API_URL=api)}
        finally:
            stop_server(server)


def _task_states_by_run(api: str) -> dict:
    """Flow run name → {stage: state name}, read from the server."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def fetch():
        async with PrefectClient(api) as client:  # this server, whatever the test session's settings say
            runs = await client.read_flow_runs()
            states = {}
            for run in runs:
                tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
                states[run.name] = {"flow": run.state.name, **{t.name.rsplit("-", 1)[0]: t.state.name for t in tasks}}
            return states

    return asyncio.run(fetch())


def _run(server, crawl: Path, store: Path, name: str) -> subprocess.Popen:
    with open(server["root"] / f"{name}.log", "w") as log:  # the child keeps its own copy
        return subprocess.Popen(SCRATCHLM + ["run", "--crawl", str(crawl), "--store", str(store), "--until", "dedup",
                                             "--workers", "1"],
                                env=server["env"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def _wait(server, process: subprocess.Popen, name: str) -> None:
    assert process.wait(timeout=240) == 0, (server["root"] / f"{name}.log").read_text()[-3000:]


@pytest.mark.timeout(400)  # ~50 s alone on 2 cores; minutes when the machine is shared
def test_two_concurrent_runs_on_a_postgres_backed_server_compute_each_stage_once(postgres_server, sample_warcs,
                                                                                 tmp_path):
    crawl, store = tmp_path / "crawl", tmp_path / "store"
    crawl.mkdir()
    shutil.copy(sample_warcs[0], crawl / sample_warcs[0].name)

    # Two users start the same run at the same moment, two processes writing to one server.
    first, second = _run(postgres_server, crawl, store, "first"), _run(postgres_server, crawl, store, "second")
    _wait(postgres_server, first, "first")
    _wait(postgres_server, second, "second")
    runs = _task_states_by_run(postgres_server["api"])
    assert len(runs) == 2 and all(r["flow"] == "Completed" for r in runs.values()), runs
    for stage in DATA_STAGES:
        # Computed in one run, Cached in the other (the lock beside the store serialises them).
        assert sorted(r[stage] for r in runs.values()) == ["Cached", "Completed"], (stage, runs)
        finished = [p for p in (store / stage).iterdir() if (p / "manifest.json").is_file()]
        assert len(finished) == 1 and not list((store / stage).glob(".tmp-*")), stage
        assert json.loads((finished[0] / "manifest.json").read_text())["stage"] == stage

    # A third run after both: every stage Cached.
    _wait(postgres_server, _run(postgres_server, crawl, store, "third"), "third")
    after = _task_states_by_run(postgres_server["api"])
    [third] = [states for name, states in after.items() if name not in runs]
    assert third == {"flow": "Completed", **{stage: "Cached" for stage in DATA_STAGES}}

    # Recorded in PostgreSQL, not in a SQLite file under the server's PREFECT_HOME.
    sql = postgres_server["sql"]
    assert sql("select count(*) from flow_run") == "3"
    assert sql("select count(*) from task_run where state_name = 'Cached'") == str(2 * len(DATA_STAGES))
    assert not list(postgres_server["home"].rglob("*.db")), list(postgres_server["home"].rglob("*"))
    assert "database is locked" not in postgres_server["log"].read_text()
