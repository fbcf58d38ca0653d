.PHONY: install chat test test-fast bench

PYTHON ?= python3
# passed on to the command: make chat ARGS="--persona hale", make test ARGS="-x tests/test_tts.py"
ARGS ?=

install:  ## install personae and its dependencies (apt packages included) into this Python; a second when all is there
	@PYTHON=$(PYTHON) bash scripts/install.sh

chat: install  ## install what is missing, then talk to Captain Mara Vell on the embedded default, offline
	@$(PYTHON) -m agent chat $(ARGS)

test: install  ## install what is missing, then the whole suite; real-weight tests marked slow skip when the weights are absent
	$(PYTHON) -m pytest -q $(ARGS)

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

bench:  ## the benchmarks (minutes each; see benchmarks/README.md)
	$(PYTHON) benchmarks/chat_latency.py
	$(PYTHON) benchmarks/voice_latency.py
