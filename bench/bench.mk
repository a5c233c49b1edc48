# bench.mk - `make bench`: benchmarks of mailcell against Debian's Postfix and
# Dovecot on this machine, written to bench/RESULTS.md and bench/baseline.json.
# Included by the top-level Makefile; see bench/README.md.
#
#   make bench                      everything (about 6-8 minutes; bounded)
#   make bench BENCH_ARGS='--only startup,session'   some stages only
#   make bench-progs                only the small C helpers (build/bench/)
#
# The run is bounded: bench.py keeps to BENCH_BUDGET seconds (fewer repeats
# when the machine is slow) and `timeout` stops it after BENCH_TIMEOUT; its
# cleanup still stops the private Postfix, Dovecot and dev database then.

BENCH_DIR     := build/bench
BENCH_PROGS   := $(BENCH_DIR)/bare $(BENCH_DIR)/bare-linked $(BENCH_DIR)/connloop \
	$(BENCH_DIR)/spawnloop
BENCH_BUDGET  ?= 540
BENCH_TIMEOUT ?= 590
BENCH_ARGS    ?=
BENCH_CFLAGS  := -std=c11 -D_GNU_SOURCE -O2 -g $(WARN)

.PHONY: bench bench-progs

# The floor: libc only.
$(BENCH_DIR)/bare: bench/bare.c
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -o $@ $<

# The same program linked to (not using) OpenSSL and libcrypt, which the
# session programs linked before TLS and passwords became modules: what those
# libraries cost at exec alone.
BARE_LINKED_LIBS := $(shell pkg-config --libs openssl libxcrypt 2>/dev/null)
$(BENCH_DIR)/bare-linked: bench/bare.c
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -Wl,--no-as-needed $(BARE_LINKED_LIBS)

$(BENCH_DIR)/%: bench/%.c
	@mkdir -p $(@D)
	$(CC) $(BENCH_CFLAGS) -o $@ $<

bench-progs: $(BENCH_PROGS)

bench: deps
	@$(MAKE) --no-print-directory all bench-progs
	timeout -k 20 $(BENCH_TIMEOUT) /usr/bin/python3 bench/bench.py --budget $(BENCH_BUDGET) $(BENCH_ARGS)
