# cyphy: two commands matter, `make demo` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_SECONDS ?= 30
# Parallel test workers, sized for 2 cores: most tests wait on sim nodes (line rates,
# comms timeouts, real-time sleeps), so with 2 workers the cores were busy a third of the
# time (14 min 17 s); 3 workers keep them busier and the run takes about 10 minutes.
TEST_WORKERS ?= 3
PYTEST_ARGS ?=
# make bench QUICK=1: the short run (under two minutes).
QUICK ?=
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: demo demo-fleet test venv lock clean bench

venv: $(STAMP)

# The package is installed editable as plain paths (host/, and firmware/lib for cyphy_node,
# which setuptools' compat mode leaves out): no import hook runs at every Python start,
# which starts in 10 ms instead of 35 (the CLI, the sim's supervisors and nodes start often).
# npm ci: the MicroPython WebAssembly port (a 32-bit MicroPython, pinned in package-lock.json)
# into ./node_modules, for the firmware's 32-bit checks (cyphy.mp32, tests/firmware/test_32bit.py).
# tools/install-debian-packages: Mosquitto (fleet tests) and gcc-multilib, where this user
# may install them; then cyphy.frozen builds the 32-bit MicroPython with the firmware frozen
# in (MicroPython's source from Debian's registry, pinned; the firmware is re-frozen when it
# changes) for `cyphy check --frozen` and the WROOM RAM tests.
$(STAMP): pyproject.toml requirements.lock package.json package-lock.json tools/install-debian-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
	  --config-settings editable_mode=compat
	$(BIN)/python -c "import pathlib, site; pathlib.Path(site.getsitepackages()[0], 'cyphy_node.pth').write_text(str(pathlib.Path('firmware/lib').resolve()) + '\n')"
	npm ci --silent --no-audit --no-fund
	tools/install-debian-packages
	$(BIN)/python -m cyphy.frozen
	$(BIN)/python -m cyphy.sim.speed fetch >/dev/null
	$(BIN)/python -m cyphy.sim.speed >/dev/null  # calibrate now, while the machine is quiet
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py --seconds $(DEMO_SECONDS)

# Two sim nodes on an MQTT broker through `cyphy gateway`; cyphy set/get/monitor over mqtt://.
demo-fleet: $(STAMP)
	$(BIN)/python tools/demo_fleet.py --seconds $(DEMO_SECONDS)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Figures next to the anchors' (docs/benchmarks.md); never fails for a slow machine.
bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(if $(QUICK),--quick)

# The anchors' own libraries (pymavlink, protobuf), optional: without them their figures
# are recorded as skipped.
$(BENCH_STAMP): $(STAMP) bench/requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r bench/requirements.txt && touch $@ \
	  || echo "bench: could not install bench/requirements.txt; the anchors' codec rates will be skipped"

# Re-pin every dependency to what is installed in .venv right now.
lock: $(STAMP)
	{ echo "# Exact versions of every dependency (direct and transitive); \`make\` installs from this file."; \
	  echo "# Regenerate: make lock"; \
	  $(BIN)/pip freeze --exclude-editable; } > requirements.lock

clean:
	rm -rf $(VENV) out .pytest_cache node_modules  # (the frozen build's cache is in .venv)
