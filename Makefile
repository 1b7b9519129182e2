# Two commands a user needs: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# 3.10 lacks asyncio.timeout (every background loop); on 3.13 the Triton models' numpy<2 has no
# wheels and would be compiled from source, without an optimised BLAS (the demo 27x slower).
SUPPORTED_PYTHONS := 3.11 3.12

.PHONY: demo test lint typecheck pytest bench clean check-python

# Before anything is created or downloaded: an unsupported interpreter is refused, saying why.
check-python:
	@version=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || { \
	  echo "'$(PYTHON)' is not a Python interpreter; choose one, e.g. make PYTHON=python3.12 demo" >&2; exit 1; }; \
	case " $(SUPPORTED_PYTHONS) " in *" $$version "*) ;; *) \
	  echo "Python $$version ($(PYTHON)) is not supported: the set-up needs one of Python" \
	    "$(SUPPORTED_PYTHONS) (README.md says why); choose one, e.g. make PYTHON=python3.12 demo" >&2; \
	  exit 1;; esac

$(STAMP): pyproject.toml client/pyproject.toml
	@$(MAKE) --no-print-directory check-python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[demo,dev,postgres]' -e ./client
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sonic-gateway demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: a suite that runs no test is a failure, said plainly.
pytest: $(STAMP)
	@$(BIN)/pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .sonic
