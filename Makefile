# make run   - set up .venv and open the web chat on the shipped RemoteGLM-mini (http://127.0.0.1:7860)
# make test  - set up .venv with the test tools and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test setup setup-dev clean

run: $(VENV)/.runtime
	$(BIN)/python app.py

test: $(VENV)/.dev
	$(BIN)/python -m pytest tests -q

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

$(VENV)/.runtime: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

clean:
	rm -rf $(VENV)
