# Two set-up commands on a fresh machine: `make run` (serve the bundled model) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: run test browser lint bench demo bundle inspect demo-fashion fashion-accuracy inspect-fashion clean

# Serving needs no torch: a quick install of the service and the CPU ONNX Runtime.
$(VENV)/.serve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[cpu]'
	touch $@

# Everything: torch (CPU build, pinned), export and test tools, and vit-client (its own package).
# timm and open_clip (the family parity tests' references) go in without their dependencies:
# they would pull a CUDA torchvision that cannot load next to the CPU torch; the tests give both
# a stand-in. ftfy and wcwidth are what open_clip's import needs beyond those.
$(VENV)/.dev: pyproject.toml constraints/cpu.txt client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -c constraints/cpu.txt -e '.[cpu,export,dev]' -e ./client
	$(PIP) --no-deps 'timm>=1.0,<2' 'open_clip_torch>=3,<4' 'ftfy>=6' wcwidth
	touch $@ $(VENV)/.serve

run: $(VENV)/.serve
	$(BIN)/vit-serve

test: $(VENV)/.dev browser
	$(BIN)/python -m pytest

# The page's browser test drives Debian's chromium through chromedriver: installed with apt-get
# when missing (as root, as on CI, or through sudo); without apt-get the test says why it skips.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver (apt-get) for the page's browser test"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "no chromium and no apt-get: the page's browser test will be skipped"; fi

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# The demo model, from nothing (~40 min, one thread): the paper's hybrid (ResNet stem + small ViT)
# on synthetic shapes in any colours; geometry at 64 px, appearance at 96 px, fine-tune at 224 px;
# scored on fresh free-appearance, light-on-dark and hue-only shapes.
demo: $(VENV)/.dev
	$(BIN)/python -m model_export.demo.shapes_train --out checkpoints/demo --threads 1

# The default bundle, from the committed demo checkpoint.
bundle: $(VENV)/.dev
	$(BIN)/vit-export checkpoints/demo --out models/demo --name vit-shapes-demo --version 4 --force

# The README's figures of the demo model (docs/inspect/): vit-inspect over 120 fresh shapes.
inspect: $(VENV)/.dev
	images=$$(mktemp -d) \
	  && $(BIN)/python -m model_export.demo.shapes --out $$images --per-class 20 --seed 3 --appearance free \
	  && $(BIN)/vit-inspect models/demo --images $$images --out docs/inspect; \
	  status=$$?; rm -rf $$images; exit $$status

# The second demo, on real data: Fashion-MNIST from Debian's package (installed when missing),
# the paper's hybrid (ResNet stem and block + small ViT) pre-trained at 28 px, fine-tuned at 32 px
# (~92 min, one thread), scored on the official test set, exported.
FASHION_DATA ?= /usr/share/datasets/fashion-mnist
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(FASHION_DATA)/t10k-labels-idx1-ubyte.gz:
	@echo "Fashion-MNIST is missing: installing Debian's dataset-fashion-mnist (Expat licence)"
	$(SUDO) apt-get update
	$(SUDO) apt-get install -y dataset-fashion-mnist

demo-fashion: $(VENV)/.dev $(FASHION_DATA)/t10k-labels-idx1-ubyte.gz
	$(BIN)/python -m model_export.demo.fashion_train --out checkpoints/fashion --data $(FASHION_DATA) --threads 1
	$(BIN)/vit-export checkpoints/fashion --out models/fashion --name vit-fashion-mnist --version 5 --force

# The Fashion-MNIST test set through a real vit-serve, against the checkpoint in PyTorch.
fashion-accuracy: $(VENV)/.dev $(FASHION_DATA)/t10k-labels-idx1-ubyte.gz
	$(BIN)/python bench/fashion_accuracy.py --data $(FASHION_DATA)

# The README's figures of the Fashion-MNIST model (docs/inspect-fashion/): 120 test images.
inspect-fashion: $(VENV)/.dev $(FASHION_DATA)/t10k-labels-idx1-ubyte.gz
	images=$$(mktemp -d) \
	  && $(BIN)/python -m model_export.demo.fashion_data --out $$images --per-class 12 --data $(FASHION_DATA) \
	  && $(BIN)/vit-inspect models/fashion --images $$images --out docs/inspect-fashion; \
	  status=$$?; rm -rf $$images; exit $$status

bench: $(VENV)/.dev
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/load.py

# The wheels a lent GPU machine lacks (onnxruntime-gpu, nvImageCodec, the serving packages), for
# its CPython 3.12: downloaded from PyPI, re-compressed and cut into .whl/batch-1 … batch-N, each
# small enough to travel with the repository in one device call. Prints those calls; bench/gpu.sh
# and docs/benchmarks.md ("GPU results") say the rest. Needs only python3 with pip.
.PHONY: gpu-wheels
gpu-wheels:
	$(PYTHON) bench/gpu_wheels.py prepare

# Deployment
IMAGE ?= vit-service
DOCKER ?= docker

.PHONY: lock image image-cpu image-export test-deploy test-image test-image-gpu

# Re-pin the image's dependencies (docker/requirements-{gpu,cpu}.txt) after changing pyproject.toml.
lock: $(VENV)/.dev
	$(BIN)/python docker/lock.py

# The serving image: gpu (onnxruntime-gpu with CUDA/cuDNN wheels) or cpu; and the torch side.
image:
	$(DOCKER) build --build-arg FLAVOR=gpu -t $(IMAGE):gpu .

image-cpu:
	$(DOCKER) build --build-arg FLAVOR=cpu -t $(IMAGE):cpu .

image-export:
	$(DOCKER) build --target export -t $(IMAGE):export .

# The deployment checks alone (part of `make test`); the image-environment install takes a minute.
test-deploy: $(VENV)/.dev
	$(BIN)/python -m pytest tests/deploy

# Build the CPU image with image-cpu and run it as compose does: read-only, non-root, on
# 127.0.0.1; classify, HEALTHCHECK, SIGTERM drain. Then as Kubernetes would: deploy/k8s-cpu's
# Deployment under `podman kube play` (its probes, user, ports, environment; drained on delete).
# Uses docker, else podman (installed from apt when missing and run as root; IMAGE_ENGINE=podman
# prefers it; the kube play test needs it); the output names the base image it used. Adds ~5
# minutes to CI.
test-image: $(VENV)/.dev
	PYTHON=$(BIN)/python bash tests/deploy/image/run.sh cpu

# The same for the GPU image (~2.8 GB, 5-7 minutes here): ldd and cuobjdump of the CUDA provider,
# the driver check, start-up without a GPU. Skipped, saying why, when the disk is too small.
test-image-gpu: $(VENV)/.dev
	PYTHON=$(BIN)/python bash tests/deploy/image/run.sh gpu
