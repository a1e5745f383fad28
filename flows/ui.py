"""`scratchlm ui`: a local Prefect server (API and UI), its database SQLite under PREFECT_HOME unless a
PostgreSQL connection URL is set (docs/orchestration.md)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def server_env(home: str | None = None, host: str | None = None, port: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if home:
        env["PREFECT_HOME"] = str(Path(home).resolve())
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.pop("PREFECT_API_URL", None)  # the server serves the API, it does not talk to another one
    if host and port and not (env.get("PREFECT_SERVER_UI_API_URL") or env.get("PREFECT_UI_API_URL")):
        # The UI's browser code asks /ui-settings where the API is. Prefect answers from its own
        # settings (port 4200 by default), not from `prefect server start --port`, so a UI on
        # another port would call an API that is not there. A URL the user set (a proxy) wins.
        env["PREFECT_SERVER_UI_API_URL"] = ui_api_url(host, port)
    return env


def ui_api_url(host: str, port: int) -> str:
    """The API URL the browser should call: the server's own host and port (a wildcard listen
    address is not one a browser can call, so the UI then uses the loopback address)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"http://{host}:{port}/api"


def start_server(host: str = "127.0.0.1", port: int = 4200, home: str | None = None, log=None) -> subprocess.Popen:
    """Start `prefect server start` as a child process (its own process group, so it can be stopped)."""
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    return subprocess.Popen(command, env=server_env(home, host, port), stdout=log,
                            stderr=subprocess.STDOUT if log else None, start_new_session=True)


def wait_healthy(api_url: str, timeout: float = 120, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Prefect server at {api_url} did not answer within {timeout:.0f} s")


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server and its uvicorn child (the server runs in its own process group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _exit_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def database_description(prefect_home: Path) -> str:
    """Where the server keeps its state: the connection URL a user set (password hidden), else SQLite."""
    url = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL")
    if not url or url.startswith("sqlite"):
        return f"SQLite under {prefect_home}"
    scheme, _, rest = url.partition("://")
    return f"{scheme.split('+')[0]} at {rest.rsplit('@', 1)[-1]}"


def run_ui(host: str, port: int, home: str | None) -> int:
    prefect_home = Path(home or os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").resolve()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # `kill` stops the server too, not only Ctrl-C
    process = start_server(host, port, str(prefect_home))
    api = ui_api_url(host, port)
    try:
        wait_healthy(api, process=process)
        browser_api = os.environ.get("PREFECT_SERVER_UI_API_URL") or os.environ.get("PREFECT_UI_API_URL") or api
        print(f"Prefect UI: {api.removesuffix('/api')}  (it calls the API at {browser_api}; "
              f"database: {database_description(prefect_home)})\n"
              + (f"Browsers on other machines: set PREFECT_SERVER_UI_API_URL=http://<this machine>:{port}/api "
                 f"before `scratchlm ui`.\n" if browser_api != f"http://{host}:{port}/api" and browser_api == api else "")
              + f"Register and run the deployments from another shell:\n"
              f"  export PREFECT_API_URL={api}\n  scratchlm serve\n"
              f"Ctrl-C stops the server.", file=sys.stderr, flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_server(process)
