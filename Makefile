# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench train-shapes clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m textimg_helpers demo

# No TEXTIMG_* setting of your shell (your photos, server, token, bf16 choice) reaches the tests, except
# TEXTIMG_TEST_MODEL (the suite with another checkpoint); conftest.py clears them again.
test: $(STAMP)
	env $$(env | sed -n 's/^\(TEXTIMG_[A-Za-z0-9_]*\)=.*/-u \1/p' | grep -v '^-u TEXTIMG_TEST_MODEL$$') \
	    TEXTIMG_PROFILE=shapes $(BIN)/python -m pytest --nbval-lax -p no:cacheprovider tests notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py --random-weights
	$(BIN)/python benchmarks/bench_search.py --random-weights
	$(BIN)/python benchmarks/bench_duplicates.py
	$(BIN)/python benchmarks/bench_ocr.py --random-weights

train-shapes: $(STAMP)
	$(BIN)/python scripts/train_shapes_clip.py

clean:
	rm -rf outputs data/milvus.db data/shapes .pytest_cache
