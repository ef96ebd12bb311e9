# The two commands a new machine needs:  make serve   and   make test
# the interpreter: the distribution's optimised python3 where usable, else PATH's (scripts/python.sh)
PYTHON ?= $(shell bash scripts/python.sh)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CSRC   := $(wildcard src/smbring/_uring/*.c src/smbring/_uring/*.h src/smbring/_events/*.c src/smbring/_events/*.h \
         src/smbring/_dirent/*.c src/smbring/_dirent/*.h src/smbring/_wire/*.c src/smbring/_wire/*.h)

# What `make serve` shares, and where; override on the command line.
SHARE  ?= $(CURDIR)/share
LISTEN ?= 127.0.0.1:4445

.PHONY: all build test test-asan serve system-deps bench clean

all: build

# The Debian packages come first (as root): the Kerberos extra's gssapi compiles against MIT's
# GSS-API headers (libkrb5-dev). Without them (not root, no apt) everything else is installed and
# the Kerberos tests skip, saying what is missing.
$(STAMP): pyproject.toml setup.py Makefile scripts/system-deps.sh
	@bash scripts/system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip 'setuptools>=77'
	if command -v krb5-config >/dev/null 2>&1; then extras=test,kerberos; else \
		echo "make: krb5-config not found (libkrb5-dev): installing without the Kerberos extra" >&2; \
		extras=test; fi; \
	$(BIN)/pip install -q --disable-pip-version-check -e ".[$$extras]"
	touch $@

# The extension is rebuilt in place whenever a C file changes. The Python modules are compiled
# to bytecode as an installed package is (pip compiles at install): where the environment sets
# PYTHONDONTWRITEBYTECODE, every `smbring` command (a server's start: ~0.3 CPU-s) would
# otherwise compile them again each time it runs.
build: $(STAMP) $(CSRC)
	$(BIN)/python setup.py -q build_ext --inplace > $(VENV)/build.log 2>&1 || { cat $(VENV)/build.log; exit 1; }
	$(BIN)/python -c 'import smbring._uring'
	$(BIN)/python -m compileall -q -j 0 src/smbring > /dev/null

system-deps:
	@bash scripts/system-deps.sh

# The C tests (engine, event loop, the SMB2 header codec and its review, the ECHOs answered in C,
# the credit window's take, the request sizes checked, the usual request's admission and answer,
# an open's information encoded, instances made without __init__, the open a request names,
# the receive buffer and its serving), run under AddressSanitizer.
ASAN_TESTS := tests/uring tests/events tests/smb/test_frame_paths.py tests/smb/test_header_codec_review.py \
              tests/vfs/test_metadata_read.py tests/smb/test_directory_batch.py tests/smb/test_network_open_info.py \
              tests/smb/test_answer_echoes.py tests/smb/test_credit_window_take.py tests/smb/test_check_sizes.py \
              tests/smb/test_admission.py tests/smb/test_slot_maker.py tests/smb/test_open_for.py tests/vfs/test_path_split.py \
              tests/smb/test_frame_handler.py \
              tests/server/test_serve_frames.py tests/server/test_pipelined.py
# Tests the main run leaves out because test-asan runs them already: the same tests on the same
# Python code, only the C extension built with -fsanitize=address. CPython's asyncio tests on
# the ring loop (minutes) are about the loop's Python side; the engine's own tests, which check
# the C code, run on both builds (the optimised one, -O2 -flto and hidden symbols, is the one
# installed). `make test` so runs every test, and fails if either run fails.
ASAN_ONLY  := tests/uring/test_loop_cpython.py

# Test processes the main run spreads the test files over (pytest-xdist, one file to one
# process: a file's servers and accounts are made once): most tests wait on servers, clients
# and timeouts rather than on the CPU, so three share two cores well. TEST_JOBS=0 runs them in
# one process.
TEST_JOBS ?= 3

# The ring tests run under AddressSanitizer first, then the whole suite on the normal build.
test: system-deps build
	$(BIN)/lint-imports --no-cache
	$(MAKE) --no-print-directory test-asan
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile $(addprefix --ignore=,$(ASAN_ONLY)) $(PYTEST_ARGS)

# ASAN_TESTS under AddressSanitizer (rebuilt with -fsanitize=address, then rebuilt as usual).
test-asan: $(STAMP)
	rm -rf build && SMBRING_ASAN=1 $(BIN)/python setup.py -q build_ext --inplace --force
	ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
		$(BIN)/python -m pytest -q -p no:cacheprovider $(ASAN_TESTS); \
	status=$$?; rm -rf build && $(BIN)/python setup.py -q build_ext --inplace --force; exit $$status

serve: build
	SHARE="$(SHARE)" LISTEN="$(LISTEN)" SERVE_ARGS="$(SERVE_ARGS)" bash scripts/serve.sh

bench: build
	$(BIN)/smbring bench ops

clean:
	rm -rf build $(VENV) src/*.egg-info src/smbring/*.so

# Coverage-guided fuzzing of the protocol core (docs/FUZZING.md): FUZZ_TIME seconds, new
# inputs and any crash-* in FUZZ_DIR; more libFuzzer options in FUZZ_ARGS.
FUZZ_TIME ?= 600
FUZZ_DIR  ?= /tmp/smbring-fuzz
.PHONY: fuzz
fuzz: build
	mkdir -p $(FUZZ_DIR)/corpus
	nice -n 10 $(BIN)/python tests/fuzz/harness.py -max_total_time=$(FUZZ_TIME) -timeout=10 \
		-rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/ \
		$(FUZZ_ARGS) $(FUZZ_DIR)/corpus tests/fuzz/corpus

# The same for the named pipes' DCE/RPC (srvsvc, wkssvc, lsarpc), from tests/fuzz/rpc_corpus
.PHONY: fuzz-rpc
fuzz-rpc: build
	mkdir -p $(FUZZ_DIR)/rpc-corpus
	nice -n 10 $(BIN)/python tests/fuzz/rpc_harness.py -max_total_time=$(FUZZ_TIME) -timeout=10 \
		-rss_limit_mb=2048 -max_len=70000 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/ \
		$(FUZZ_ARGS) $(FUZZ_DIR)/rpc-corpus tests/fuzz/rpc_corpus
