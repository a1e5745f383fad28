# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
BENCH_VENV ?= .venv-bench

.PHONY: setup test-servers demo test bench lm-eval-venv clean

# Prefect's temporary server would otherwise phone home on every start.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

setup: $(STAMP)

# The main job on the bundled sample crawl: the whole Prefect flow, ingest → ... → evaluate. The
# sample is 577 pages in 10 languages, so every language is kept; a 1,024-token vocabulary and the
# `tiny` model (700 steps of 2,048 tokens) train in about three minutes on this 2-core VM with two
# threads (7,700 tokens/s; one thread: 4,900, the same before and after the shuffled loader).
# lr 1e-3 measured against 2e-3 at this budget (val loss 3.71 vs 4.42; BENCHMARKS.md, "The demo's
# pretraining knobs"); the shuffled loader (docs/pretraining.md) took it from 5.72 to 3.71.
# stderr shows each stage's funnel, the losses beside the unigram entropy, the scores and the report.
DEMO_KNOBS := --set langid.languages=all --set train-tokenizer.vocab_size=1024 --set tokenize.val_fraction=0.1 \
	--set pretrain.max_steps=700 --set pretrain.batch_tokens=2048 --set pretrain.lr=0.001 --set pretrain.cpu_threads=2
# Then the align step: sft of that model on the instruction set built from the same crawl
# (data/align/, 3 epochs, about a minute) and one question to the fine-tuned model, answered with
# {"text", "finish_reason", "tokens"}: finish_reason "stop" means it ended its turn by itself.
DEMO_SFT_KNOBS := --data data/align/instructions.jsonl --lr 0.001 --cpu-threads 2
DEMO_QUESTION := Which document does this page belong to?\n\nThis chapter explains how to partition your hard disk before you install Debian.
demo: setup
	@evaluate=$$($(VENV)/bin/scratchlm run --crawl data/sample-crawl --until evaluate $(DEMO_KNOBS) | tail -n 1) && \
	test -f "$$evaluate/eval.json" && pretrain=$$($(PY) -c 'import json, sys; print(json.load(open(sys.argv[1] + "/eval.json"))["checkpoint"])' "$$evaluate") && \
	sft=$$($(VENV)/bin/scratchlm stage sft --input "$$pretrain" $(DEMO_SFT_KNOBS) | tail -n 1) && \
	question="$$(printf '$(DEMO_QUESTION)')" && echo "chat $$sft: $$question" >&2 && \
	$(VENV)/bin/scratchlm chat "$$sft" "$$question" --json

# Servers that tests start privately: redis-server (the dedup LSH in Redis) and PostgreSQL (a
# Prefect server's database; initdb and pg_ctl under /usr/lib/postgresql). Debian's packages,
# installed only when missing; without root or apt-get a warning, and those two tests skip.
test-servers:
	@missing=""; \
	command -v redis-server >/dev/null || missing="redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $$missing (Debian packages) for their tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
	  echo "warning: not installed:$$missing (needs root and apt-get); their tests will be skipped" >&2; \
	fi

test: setup test-servers
	$(PY) -m pytest

# Benchmarks need datatrove and trafilatura as references; they conflict with our pins, so they
# live in their own venv which the benchmark scripts call as a subprocess.
$(BENCH_VENV)/.installed: benchmarks/requirements.txt
	test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
	touch $@

bench: setup $(BENCH_VENV)/.installed
	$(PY) benchmarks/run_all.py

# lm-evaluation-harness, for benchmarks/lm_eval_parity.py: its own venv on top of .venv's packages
# (a .pth file), so lm-eval's extra dependencies never touch .venv and torch is not downloaded again.
LMEVAL_VENV ?= .venv-lmeval
$(LMEVAL_VENV)/.installed: benchmarks/requirements-lmeval.txt $(STAMP)
	test -x $(LMEVAL_VENV)/bin/python || python3 -m venv $(LMEVAL_VENV)
	$(PY) -c "import site; print(site.getsitepackages()[0])" > "$$($(LMEVAL_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/scratchlm-venv.pth"
	$(LMEVAL_VENV)/bin/pip install --quiet --disable-pip-version-check -r benchmarks/requirements-lmeval.txt
	touch $@

lm-eval-venv: setup $(LMEVAL_VENV)/.installed

clean:
	rm -rf artifacts .pytest_cache
