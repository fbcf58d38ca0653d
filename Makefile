.PHONY: install test test-fast bench

install:  ## install personae and its dependencies (apt packages included) into this Python
	bash scripts/install.sh

test:  ## the whole suite; real-weight tests marked slow skip when the weights are absent
	python3 -m pytest -q

test-fast:
	python3 -m pytest -q -m "not slow"

bench:  ## the benchmarks (minutes each; see benchmarks/README.md)
	python3 benchmarks/chat_latency.py
	python3 benchmarks/voice_latency.py
