# Quick start: `make demo` and `make test` on a fresh clone (see README.md).
# The exact torch pin lives here, not in pyproject.toml: on our machines `torch==2.13.0`
# resolves to the local CPU wheel, while a range would pull several GB of CUDA wheels.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_PIN)" -e ".[dev,video]"
	$(BIN)/python -c "import sys, torch; sys.exit(torch.version.cuda is not None)" \
		|| { echo "error: a CUDA build of torch was installed; expected the CPU wheel $(TORCH_PIN)"; exit 1; }
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vidseg demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest -n 2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
