"""`scratchlm serve-model`: transformers' own OpenAI-compatible server (`transformers serve`) on
127.0.0.1 over the export answers a chat completion through the `openai` client, as our own chat
does (greedy), and stops at the end-of-turn marker (finish_reason "stop"). The server is bounded
(--lifetime) and stopped by the test in any case."""
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from chat_fixtures import ANSWER, QUESTION, fine_tuned  # noqa: E402
from eval_fixtures import SOUNDS, one_torch_thread  # noqa: E402,F401

REPO = Path(__file__).resolve().parent.parent
pytest.importorskip("openai")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_model_answers_through_the_openai_client(tmp_path):
    from openai import OpenAI

    from model.checkpoint import load_model
    from model.generate import chat_reply

    folder, _, _ = fine_tuned(tmp_path)
    question = [{"role": "user", "content": QUESTION.format(animal="goat")}]
    model, tokenizer_path, _ = load_model(folder)
    ours = chat_reply(model, Tokenizer.from_file(str(tokenizer_path)), question, max_new_tokens=40, temperature=0)
    assert ours.text == ANSWER.format(animal="goat", sound=SOUNDS["goat"])

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve-model", str(folder), "--port", str(port),
                               "--device", "cpu", "--lifetime", "240", "--export-dir", str(tmp_path / "hf")],
                              cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        announced = server.stderr.readline()
        assert f"http://127.0.0.1:{port}/v1" in announced, announced
        model_id = announced.rsplit("model id: ", 1)[1].rstrip(")\n")
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=30, max_retries=0)
        deadline = time.monotonic() + 180
        while True:
            try:
                response = client.chat.completions.create(model=model_id, messages=question, max_tokens=40, temperature=0)
                break
            except Exception:  # noqa: BLE001 - the server is still loading the model
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "the server did not answer within 180 s"
                time.sleep(1)
        choice = response.choices[0]
        assert choice.finish_reason == "stop"
        assert choice.message.content == ours.text
    finally:
        server.terminate()  # serve-model stops its server on SIGTERM
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert not (tmp_path / "hf").exists() or (tmp_path / "hf" / "chat_template.jinja").is_file()
    with pytest.raises(ConnectionRefusedError):  # nothing left listening: the server went with serve-model
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
