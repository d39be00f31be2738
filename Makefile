# The course's commands. Quick start on a new machine: `make course`, then `make test`.
# `make help` lists every target.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.ONESHELL:
.DEFAULT_GOAL := help

# One environment per lock file, cached outside the checkout: every clone with the same requirements.lock
# reuses it, and a changed lock gets a fresh one.
LOCK_HASH := $(shell sha256sum requirements.lock | cut -c1-12)
COURSE_ENV ?= $(HOME)/.cache/internvl2-course/env-$(LOCK_HASH)
PY := $(COURSE_ENV)/bin/python
ENV_STAMP := $(COURSE_ENV)/.course-env-complete
ENV_INCOMPLETE := $(COURSE_ENV).incomplete
# conda makes the base env from environment.yml when it is on PATH; USE_CONDA=no forces python -m venv.
USE_CONDA ?= $(if $(shell command -v conda),yes,no)
# Packages whose pin in requirements.in deliberately overrides a dependency's own pin (requirements.in says why).
# The lock is therefore installed with --no-deps, and pip check may report only these.
LOCK_OVERRIDES := bitsandbytes

# The checkout itself is the course_utils package (nothing is installed into the shared env), and the env's
# own Jupyter data comes first, so its python3 kernel is the one papermill and JupyterLab start.
export PYTHONPATH := $(CURDIR)
export JUPYTER_PATH := $(abspath $(COURSE_ENV))/share/jupyter
# DeepSpeed compiles its CUDA ops on first use instead of at install time, so it installs on CPU machines too.
export DS_BUILD_OPS := 0

space := $(subst ,, )

.PHONY: help env course site test lab doctor lock clean browser-tools

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'
	echo "  environment: $(COURSE_ENV)"

env: $(ENV_STAMP) ## create the course environment if it is missing

course: $(ENV_STAMP) ## build the embedded defaults and execute every lesson of both editions into build/notebooks/
	"$(PY)" -m course_utils run-course

site: $(ENV_STAMP) ## turn the lessons `make course` executed into a browsable site: build/site/index.html
	"$(PY)" -m course_utils build-site

test: $(ENV_STAMP) ## run the whole test suite (unit tests and notebook tests); the ten slowest are listed at the end
	"$(PY)" -m pytest --durations=10 $(PYTEST_ARGS)

# JupyterLab refuses to start as root without --allow-root; root is common on cloud GPU machines and containers.
# EDITION=zh-CN opens the Chinese edition (notebooks/zh-CN); the English one is notebooks/.
EDITION ?= en
lab: $(ENV_STAMP) ## open the lessons in JupyterLab (EDITION=zh-CN: the Chinese edition)
	"$(PY)" -m jupyter lab --notebook-dir="$(CURDIR)/notebooks$(if $(filter-out en,$(EDITION)),/$(EDITION))" $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

doctor: $(ENV_STAMP) ## show versions, GPU and what will run where
	"$(PY)" -m course_utils doctor

# The browser test (tests/test_browser_playground.py) drives Debian's Chromium with Playwright from a small venv of its
# own, so the course environment stays exactly requirements.lock; Playwright's own browser download is not used.
BROWSER_TOOLS ?= $(HOME)/.cache/internvl2-course/browser-tools
PLAYWRIGHT_VERSION := 1.65.2
export BROWSER_TOOLS

# A CJK font lets the screenshot show the Chinese questions and answers as text rather than empty boxes.
browser-tools: $(ENV_STAMP) ## install Chromium and a CJK font (apt, as root) and Playwright (own venv) for the browser test
	@if ! command -v chromium >/dev/null || [ -z "$$(fc-list :lang=zh 2>/dev/null)" ]; then
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
	    echo "error: the browser test needs Chromium and a CJK font (Debian: sudo apt-get install chromium fonts-wqy-zenhei)" >&2
	    exit 1
	  fi
	  apt-get update -qq
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null
	fi
	if ! "$(BROWSER_TOOLS)/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("playwright") != sys.argv[1])' \
	     $(PLAYWRIGHT_VERSION) 2>/dev/null; then
	  "$(PY)" -m venv --clear "$(BROWSER_TOOLS)"
	  "$(BROWSER_TOOLS)/bin/python" -m pip install --no-input -q $(if $(CI),--progress-bar off) playwright==$(PLAYWRIGHT_VERSION)
	fi
	echo "browser tools ready: $$(command -v chromium) ($$(chromium --version 2>/dev/null)), Playwright $(PLAYWRIGHT_VERSION) in $(BROWSER_TOOLS)"

# The stamp is written last: an interrupted build leaves no stamp and is removed and redone, never half-used.
$(ENV_STAMP):
	@mkdir -p "$(dir $(abspath $(COURSE_ENV)))"
	if command -v flock >/dev/null; then exec 9>"$(COURSE_ENV).lock"; flock 9; fi  # two checkouts: one builds
	if [ -f "$(ENV_STAMP)" ]; then exit 0; fi
	rmdir "$(COURSE_ENV)" 2>/dev/null || true  # an empty folder is as good as none
	if [ -e "$(COURSE_ENV)" ]; then
	  if [ ! -e "$(ENV_INCOMPLETE)" ]; then
	    echo "error: $(COURSE_ENV) exists but was not built by 'make env'." >&2
	    echo "Remove it, choose another COURSE_ENV=..., or, if it is a complete course env, touch $(ENV_STAMP)" >&2
	    exit 1
	  fi
	  echo "Removing the unfinished environment at $(COURSE_ENV)"
	  rm -rf "$(COURSE_ENV)"
	fi
	touch "$(ENV_INCOMPLETE)"
	start=$$SECONDS
	if [ "$(USE_CONDA)" = yes ]; then
	  echo "Creating the course environment with conda at $(COURSE_ENV) (a few GB; takes minutes)"
	  conda env create --file environment.yml --prefix "$(COURSE_ENV)"
	else
	  base=""
	  for candidate in python3.11 python3.12 python3; do
	    if command -v $$candidate >/dev/null &&
	       $$candidate -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null; then
	      base=$$candidate; break
	    fi
	  done
	  if [ -z "$$base" ]; then
	    echo "error: the course needs Python 3.11 (3.12 may work) with venv, or conda." >&2
	    echo "Install one, e.g. 'sudo apt-get install python3.11 python3.11-venv', then run make again." >&2
	    exit 1
	  fi
	  echo "Creating the course environment with $$($$base --version) at $(COURSE_ENV) (a few GB; takes minutes)"
	  $$base -m venv "$(COURSE_ENV)"
	fi
	"$(PY)" -m pip install --no-input --no-deps $(if $(CI),--progress-bar off) -r requirements.lock
	problems=$$("$(PY)" -m pip check | grep -vE 'has requirement ($(subst $(space),|,$(LOCK_OVERRIDES)))[=<>!~ ]' || true)
	if [ -n "$$problems" ] && [ "$$problems" != "No broken requirements found." ]; then
	  echo "$$problems" >&2
	  echo "error: requirements.lock is inconsistent (pip check above); regenerate it with 'make lock'." >&2
	  exit 1
	fi
	touch "$(ENV_STAMP)"
	rm -f "$(ENV_INCOMPLETE)"
	echo "Course environment ready in $$((SECONDS - start)) s: $(COURSE_ENV) ($$(du -sh "$(COURSE_ENV)" | cut -f1))"

lock: ## re-resolve requirements.in into requirements.lock (in a scratch venv)
	@scratch=$$(mktemp -d)
	trap 'rm -rf "$$scratch"' EXIT
	python3.11 -m venv "$$scratch"
	overrides='^($(subst $(space),|,$(LOCK_OVERRIDES)))[=<>!~ ]'
	grep -vE "$$overrides" requirements.in > "$$scratch/resolvable.in"
	"$$scratch/bin/pip" install --no-input -r "$$scratch/resolvable.in"
	"$$scratch/bin/pip" install --no-input --no-deps $$(grep -E "$$overrides" requirements.in)
	{
	  echo "# Exact versions of the course environment (pip freeze of requirements.in, resolved on Python 3.11)."
	  echo "# Regenerate: make lock. Installed with pip --no-deps by make env (after environment.yml, with conda)."
	  "$$scratch/bin/pip" freeze
	} > requirements.lock
	echo "requirements.lock updated; the next 'make env' builds env-$$(sha256sum requirements.lock | cut -c1-12)"

clean: ## remove build outputs and caches (keeps runs/ and the environment)
	@rm -rf build .pytest_cache
	find course_utils tests -name __pycache__ -type d -prune -exec rm -rf {} +
	echo "Kept: runs/ (lesson outputs) and the environment at $(COURSE_ENV)"
