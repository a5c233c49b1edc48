# fuzz.mk - libFuzzer harnesses (clang -fsanitize=fuzzer,address,undefined),
# included by the top-level Makefile: `make fuzz FUZZ_SECONDS=N` builds them
# into build/fuzz/, replays fuzz/regress/ and fuzzes each for N seconds;
# `make fuzz-repro [FUZZ_INPUT=FILE...]` only replays. See fuzz/README.md.

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 30
FUZZ_DIR     := build/fuzz
FUZZ_NAMES   := smtp address pop3 smtp_data headers template

FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
# Coverage for the code under test (and the fakes it talks to), not for the oracles.
FUZZ_COV     := -fsanitize=fuzzer-no-link
FUZZ_CFLAGS   = -std=c11 -D_GNU_SOURCE $(WARN) -O1 -g $(FUZZ_SAN) $(FUZZ_COV) \
	-Icommon -Ismtp-session -Ipop3-session -Ifuzz $(shell pkg-config --cflags openssl 2>/dev/null) \
	-DMC_IFACE_ID=$(MC_IFACE)UL
FUZZ_LDFLAGS := -fsanitize=fuzzer $(FUZZ_SAN) -Wl,--wrap=nanosleep
FUZZ_LIBS    := $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)

# The code under test, instrumented and linked in directly (inbound.c too, not
# the lazy_*.c loaders of the modules). The store and password hashing are
# replaced by fuzz/fake_store.c, the DNS-bound SPF/DKIM/DMARC parts by
# fuzz/fake_inbound.c.
FUZZ_COMMON_SRC := $(filter-out common/store%.c common/lazy_%.c common/password.c, \
	$(wildcard common/*.c))
FUZZ_SMTP_SRC   := $(filter-out smtp-session/main.c smtp-session/lazy_%.c smtp-session/spf.c \
	smtp-session/dkimv.c smtp-session/dmarc.c smtp-session/dnsq.c, $(wildcard smtp-session/*.c))
FUZZ_POP3_SRC   := $(filter-out pop3-session/main.c, $(wildcard pop3-session/*.c))
fuzz_obj         = $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(1))

FUZZ_LIBCOMMON := $(FUZZ_DIR)/libcommon.a
FUZZ_LIBSMTP   := $(FUZZ_DIR)/libsmtp.a
FUZZ_LIBPOP3   := $(FUZZ_DIR)/libpop3.a
FUZZ_SUPPORT   := $(call fuzz_obj,fuzz/fuzz_common.c)
FUZZ_FAKES     := $(call fuzz_obj,fuzz/fake_store.c fuzz/fake_inbound.c)
FUZZ_BINS      := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
FUZZ_HEADERS   := $(wildcard common/*.h smtp-session/*.h pop3-session/*.h fuzz/*.h)
FUZZ_HINT      := $(FUZZ_CC) -fsanitize=fuzzer does not link; on Debian 12: apt-get install clang libclang-rt-14-dev

.PHONY: fuzz fuzz-build fuzz-repro fuzz-toolchain

fuzz-build: fuzz-toolchain
	@$(MAKE) --no-print-directory $(FUZZ_BINS)

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(FUZZ_NAMES)

# Replays fuzz/regress/ and the seed corpora, or only FUZZ_INPUT (files) if given.
fuzz-repro: fuzz-build
	@FUZZ_MODE=repro FUZZ_INPUT="$(FUZZ_INPUT)" FUZZ_TARGET="$(FUZZ_TARGET)" fuzz/run.sh $(FUZZ_NAMES)

# libFuzzer's runtime is in Debian's libclang-rt-14-dev (only "recommended" by clang-14).
fuzz-toolchain:
	@mkdir -p $(FUZZ_DIR)
	@echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d && n; }' \
		>$(FUZZ_DIR)/probe.c
	@$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $(FUZZ_DIR)/probe $(FUZZ_DIR)/probe.c \
		2>$(FUZZ_DIR)/probe.err || { cat $(FUZZ_DIR)/probe.err >&2; echo "fuzz: $(FUZZ_HINT)" >&2; exit 1; }

$(FUZZ_DIR)/obj/fuzz/fuzz_common.o: FUZZ_COV :=
$(FUZZ_DIR)/obj/%.o: %.c $(FUZZ_HEADERS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

$(FUZZ_LIBCOMMON): $(call fuzz_obj,$(FUZZ_COMMON_SRC))
$(FUZZ_LIBSMTP): $(call fuzz_obj,$(FUZZ_SMTP_SRC))
$(FUZZ_LIBPOP3): $(call fuzz_obj,$(FUZZ_POP3_SRC))
$(FUZZ_LIBCOMMON) $(FUZZ_LIBSMTP) $(FUZZ_LIBPOP3):
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

fuzz_link = $(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ $(FUZZ_LIBS)

$(FUZZ_DIR)/fuzz_smtp: $(call fuzz_obj,fuzz/fuzz_smtp.c fuzz/smtp_run.c) $(FUZZ_SUPPORT) \
		$(FUZZ_FAKES) $(FUZZ_LIBSMTP) $(FUZZ_LIBCOMMON)
	$(fuzz_link)
$(FUZZ_DIR)/fuzz_smtp_data: $(call fuzz_obj,fuzz/fuzz_smtp_data.c fuzz/smtp_run.c) \
		$(FUZZ_SUPPORT) $(FUZZ_FAKES) $(FUZZ_LIBSMTP) $(FUZZ_LIBCOMMON)
	$(fuzz_link)
$(FUZZ_DIR)/fuzz_pop3: $(call fuzz_obj,fuzz/fuzz_pop3.c) $(FUZZ_SUPPORT) $(FUZZ_FAKES) \
		$(FUZZ_LIBPOP3) $(FUZZ_LIBCOMMON)
	$(fuzz_link)
$(FUZZ_DIR)/fuzz_headers: $(call fuzz_obj,fuzz/fuzz_headers.c) $(FUZZ_SUPPORT) $(FUZZ_FAKES) \
		$(FUZZ_LIBSMTP) $(FUZZ_LIBCOMMON)
	$(fuzz_link)
$(FUZZ_DIR)/fuzz_address $(FUZZ_DIR)/fuzz_template: $(FUZZ_DIR)/fuzz_%: \
		$(FUZZ_DIR)/obj/fuzz/fuzz_%.o $(FUZZ_SUPPORT) $(FUZZ_LIBCOMMON)
	$(fuzz_link)
