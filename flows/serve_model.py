"""`scratchlm serve-model`: our model behind an existing OpenAI-compatible server, on 127.0.0.1.

We do not write a server. The artifact is exported to a Hugging Face folder (model/export.py: Llama
weights, tokenizer, the chat template sft trained with, and <|assistant_end|> + <|endoftext|> as
generation_config's eos_token_id) and one of these runs on it:
- `transformers serve FOLDER` (transformers' own server; the `serve` extra of pyproject.toml installs
  what it needs: fastapi, uvicorn, pydantic, openai). CPU or GPU. The model id clients send is the
  folder's path (the server is pinned to it).
- `vllm serve FOLDER --served-model-name scratchlm` when vLLM is installed (a GPU box); an sft
  artifact trained with LoRA is also offered as the adapter `scratchlm-lora` (`--enable-lora
  --lora-modules`), over its base model.
The child runs offline (HF_HUB_OFFLINE, no update check) and is stopped on Ctrl-C or after
`--lifetime` seconds; the temporary export is removed afterwards."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

ENGINES = ("auto", "transformers", "vllm")
SERVED_NAME = "scratchlm"


class ServeError(ValueError):
    """Nothing to serve, or no server to serve it with (one line)."""


def is_hf_folder(path: Path) -> bool:
    """A folder `scratchlm export` (or transformers) wrote: config.json with a model_type."""
    try:
        return path.is_dir() and "model_type" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False


def export_for_serving(checkpoint: Path, folder: Path) -> Path:
    """Our artifact → an HF folder at `folder` (an HF folder is served as it is)."""
    from model.checkpoint import CheckpointError, load_model
    from model.export import ExportError, export_hf

    if is_hf_folder(checkpoint):
        return checkpoint
    try:
        model, tokenizer_path, _ = load_model(checkpoint, "cpu")
        if tokenizer_path is None:
            raise ServeError(f"{checkpoint}: no tokenizer.json beside the weights")
        return export_hf(model, tokenizer_path, folder, overwrite=True)
    except (CheckpointError, ExportError) as exc:
        raise ServeError(str(exc)) from None


def pick_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ServeError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    has_vllm = shutil.which("vllm") is not None or importlib.util.find_spec("vllm") is not None
    if engine == "vllm" and not has_vllm:
        raise ServeError("--engine vllm: vLLM is not installed here (pip install vllm, on a GPU machine)")
    if engine == "auto":
        engine = "vllm" if has_vllm else "transformers"
    if engine == "transformers":
        from transformers.utils.import_utils import is_serve_available

        if not is_serve_available():
            raise ServeError("`transformers serve` needs fastapi, uvicorn, pydantic and openai: "
                             "pip install -e '.[serve]'")
    return engine


def server_command(engine: str, folder: Path, port: int, device: str = "auto", adapter: Path | None = None,
                   base: Path | None = None) -> list[str]:
    if engine == "transformers":
        return [sys.executable, "-c", "from transformers.cli.transformers import app; app()", "serve", str(folder),
                "--host", "127.0.0.1", "--port", str(port), "--device", device, "--log-level", "warning"]
    vllm = shutil.which("vllm") or "vllm"
    if adapter is not None and base is not None:
        return [vllm, "serve", str(base), "--host", "127.0.0.1", "--port", str(port), "--served-model-name",
                SERVED_NAME, "--enable-lora", "--lora-modules", f"{SERVED_NAME}-lora={adapter}"]
    return [vllm, "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED_NAME]


def offline_env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_UPDATE_CHECK="1",
                HF_HUB_DISABLE_TELEMETRY="1", DO_NOT_TRACK="1")


def serve_model(checkpoint: Path, port: int, engine: str = "auto", export_dir: Path | None = None,
                device: str = "auto", lifetime: float = 0, echo: Callable[[str], None] = print) -> int:
    """Export, start the server, wait for it (or for `lifetime` seconds, or Ctrl-C); its exit code."""
    engine = pick_engine(engine)
    scratch = None
    if export_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="scratchlm-serve-"))
        export_dir = scratch / "model"
    try:
        folder = export_for_serving(Path(checkpoint), Path(export_dir))
        adapter = base = None
        if engine == "vllm" and (Path(checkpoint) / "adapter_config.json").is_file():
            from model.export import export_peft

            adapter = export_peft(checkpoint, Path(export_dir).with_name(Path(export_dir).name + "-peft"), overwrite=True)
            base = adapter / "base"
        command = server_command(engine, folder, port, device, adapter, base)
        model_id = SERVED_NAME if engine == "vllm" else str(folder)
        echo(f"serve-model: {engine} serving {folder} on http://127.0.0.1:{port}/v1 (model id: {model_id})")
        process = subprocess.Popen(command, env=offline_env())
        _stop_on_sigterm()
        try:
            return process.wait(timeout=lifetime or None)
        except subprocess.TimeoutExpired:
            echo(f"serve-model: stopping after {lifetime:g} s (--lifetime)")
            return _stop(process)
        except KeyboardInterrupt:
            return _stop(process)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _stop_on_sigterm() -> None:
    """`kill PID` stops the server too (as Ctrl-C does), instead of leaving it running alone."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (called from a test's thread): nothing to install
        pass


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly on SIGINT
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return 0
