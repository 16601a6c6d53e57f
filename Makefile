# Everything runs from project-local virtualenvs that these targets build themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_VENV := .venv-runtime
TOOLS_VENV := .venv-tools
MLSERVER_VENV := .venv-mlserver
TARGET ?= local
STACK ?= dev
STACKS := dev prod
PIP_FLAGS := --quiet --disable-pip-version-check

DURATION ?= 60
USERS ?= 16

.PHONY: install runtime tools-venv mlserver-venv images test test-fast plan plan-all plan-check reference local bench loadtest promote challenger challenger-weight challenger-mirror challenger-abort rollback drift-reference rotate-secret chat-webhook clean

$(VENV)/.installed: requirements.txt requirements-dev.txt loadtest/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -r requirements-dev.txt
	touch $@

# Programs the tests run beside .venv whose pins clash with its protobuf 5 (the Pulumi SDK): checkov,
# and the last MLflow 2.x to rehearse the upgrade of an existing database (tests/test_upgrade.py).
# pip resolves the two together without changing a version checkov pins.
$(TOOLS_VENV)/.installed: tools/requirements-checkov.txt tools/requirements-upgrade.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install $(PIP_FLAGS) -r tools/requirements-checkov.txt -r tools/requirements-upgrade.txt
	touch $@

# What the pods run (mlflow_image/ pins) plus the local stand-ins for Cloud SQL and GCS.
$(RUNTIME_VENV)/.installed: tools/requirements-runtime.txt mlflow_image/requirements-common.txt \
		mlflow_image/requirements-tracking.txt mlflow_image/requirements-serving.txt
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install $(PIP_FLAGS) -r tools/requirements-runtime.txt
	touch $@

# MLServer + mlserver-mlflow, the serving peer of `make bench`: it pins FastAPI and uvloop below what
# the pods run, so it gets its own virtualenv, never used by the pods or by `make test`.
$(MLSERVER_VENV)/.installed: tools/requirements-mlserver.txt
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/pip install $(PIP_FLAGS) -r tools/requirements-mlserver.txt
	touch $@

## make images: build the tracking, serving and Locust images from their Dockerfiles (buildah, as
## root; `apt-get install buildah debootstrap`) into .images/; `make local` and `make test` run them.
images: install
	$(PY) -m tools.local.images

install: $(VENV)/.installed
runtime: $(RUNTIME_VENV)/.installed
tools-venv: $(TOOLS_VENV)/.installed
mlserver-venv: $(MLSERVER_VENV)/.installed

## make test: the whole offline suite (unit, component, policy, plan, manifests, local end to end),
## whole modules on three processes, longest first (the local ones mostly wait on their processes).
test:
	$(MAKE) -j4 install runtime tools-venv images  # side by side: the images wait only for .venv
	$(PY) -m pytest -n 3 --dist loadfile --durations=15

## make test-fast: the tests that start no process (about a minute and a half).
test-fast: install tools-venv
	$(PY) -m pytest -m unit

## make plan STACK=dev|prod: print every resource of the stack and write plan/<stack>/.
plan: install
	$(PY) -m tools.offline.plan --stack $(STACK)

## make plan-all: every platform stack into plan/<stack>/, every load-test stack into plan/loadtest-<stack>/.
plan-all: install
	$(PY) -m tools.offline.plan $(addprefix --stack ,$(STACKS)) $(addprefix --loadtest-stack ,$(STACKS)) --quiet

## make plan-check: fail with a diff when the committed plan/ is stale.
plan-check: install
	$(PY) -m tools.offline.plan $(addprefix --stack ,$(STACKS)) $(addprefix --loadtest-stack ,$(STACKS)) --check

## make reference: regenerate Pulumi.yaml's config section and README's table from the settings model (infra/settings.py).
reference: install
	$(PY) -m tools.offline.reference --write

## make local [STACK=prod]: the platform on this machine (Postgres, GCS emulator, tracking, serving); Ctrl-C stops it.
## STACK=prod runs prod's manifests: tracking behind a stand-in for IAP, where people sign in by e-mail.
local: install runtime images
	$(PY) -m tools.local --stack $(STACK)

## make bench [BENCH_ARGS=--quick]: serving, tracking and program-time benchmarks side by side on
## the local platform, with MLServer beside the serving pod (~10 min); results in tools/benchmarks/results/,
## tables and plots in docs/benchmarks.md (its conclusions are written by hand; tests/test_benchmark_prose.py).
bench: install runtime mlserver-venv
	$(PY) -m tools.benchmarks $(BENCH_ARGS)
	$(PY) -m tools.benchmarks.program_time

## make loadtest [DURATION=60] [USERS=16]: Locust (1 master, 2 workers) against a running `make local`,
## serving then tracking; results in loadtest-results/local/, report in docs/loadtest.md.
## make loadtest TARGET=cluster STACK=dev|prod: the same runs as Jobs on the pool of the load-test stack
## (loadtest/Pulumi.yaml, `cd loadtest && pulumi up -s STACK`); results in loadtest-results/cluster/<stack>/.
loadtest: install
	$(PY) -m loadtest.run --target $(TARGET) --stack $(STACK) --seconds $(DURATION) --users $(USERS)

## make promote MODEL=iris-classifier VERSION=3 ALIAS=champion [REQUIRE='accuracy>=0.9'] [REQUEST=req.json] [TARGET=local|cluster] [STACK=dev]
##   [STRATEGY=rolling|canary] [STEPS=10,50,100]: canary goes through the challenger track (serving.challenger)
STRATEGY ?= rolling
promote: install runtime
	$(PY) -m tools.ops.promote --model '$(MODEL)' --version '$(VERSION)' --alias '$(ALIAS)' \
		$(foreach r,$(REQUIRE),--require '$(r)') $(if $(REQUEST),--request '$(REQUEST)') --target $(TARGET) --stack $(STACK) \
		--strategy '$(STRATEGY)' $(if $(STEPS),--steps '$(STEPS)')

## make challenger MODEL=iris-classifier VERSION=4: serve VERSION on the challenger track [TARGET=local|cluster] [STACK=dev]
## make challenger-weight WEIGHT=0..100 | challenger-mirror MIRROR=on|off | challenger-abort: its share of the traffic
challenger: install runtime
	$(PY) -m tools.ops.challenger --model '$(MODEL)' --version '$(VERSION)' --target $(TARGET) --stack $(STACK)

challenger-weight: install
	$(PY) -m tools.ops.challenger --weight '$(WEIGHT)' --target $(TARGET) --stack $(STACK)

challenger-mirror: install
	$(PY) -m tools.ops.challenger --mirror '$(MIRROR)' --target $(TARGET) --stack $(STACK)

challenger-abort: install
	$(PY) -m tools.ops.challenger --abort --target $(TARGET) --stack $(STACK)

## make rollback MODEL=iris-classifier ALIAS=champion [TARGET=local|cluster] [STACK=dev]
rollback: install runtime
	$(PY) -m tools.ops.promote --model '$(MODEL)' --alias '$(ALIAS)' --rollback --target $(TARGET) --stack $(STACK)

## make drift-reference MODEL=iris-classifier VERSION=3 DATA=train.csv|train.parquet [TARGET=local|cluster] [STACK=dev]
drift-reference: install runtime
	$(PY) -m tools.ops.drift_reference --model '$(MODEL)' --version '$(VERSION)' --data '$(DATA)' --target $(TARGET) --stack $(STACK)

## make rotate-secret NAME=admin-password|flask-secret-key|serving-password [TARGET=local|cluster] [STACK=dev]
rotate-secret: install runtime
	$(PY) -m tools.ops.rotate_secret --name '$(NAME)' --target $(TARGET) --stack $(STACK)

## make chat-webhook [STACK=prod] -- the chat webhook's URL, prompted without echo or piped on stdin (monitoring.notify.chat)
chat-webhook: install
	$(PY) -m tools.ops.chat_webhook --stack $(STACK)

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) $(TOOLS_VENV) $(MLSERVER_VENV) .pytest_cache .local loadtest-results
	-buildah --storage-driver vfs --root $(CURDIR)/.images/storage --runroot $(CURDIR)/.images/run rm --all
	rm -rf .images
