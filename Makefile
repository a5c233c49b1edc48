# mailcell top-level build: C programs in bin/, the Go dev database, tests.
# `make` builds, `make check` builds and runs every test, `make run` starts a
# development server on the embedded dev database. See README.md.

PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
SAN     ?=

PKGS     := openssl libmongoc-1.0 libbson-1.0 libxcrypt
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# Session programs link only these; the store (libmongoc) is a module they
# load at first use (lib/mailcell/store.so), see common/lazy_store.c.
SESSION_LIBS := $(shell pkg-config --libs openssl libxcrypt 2>/dev/null)
MONGO_LIBS := $(shell pkg-config --libs libmongoc-1.0 libbson-1.0 2>/dev/null)
# What the modules use from the program that loads them.
SESSION_EXPORTS := -Wl,--export-dynamic-symbol=mc_log
# sd_notify, for the relay worker only (sessions write the journal protocol themselves).
SYSTEMD_LIBS := $(shell pkg-config --libs libsystemd 2>/dev/null)
# SPF/DKIM/DMARC for inbound mail (libspf2 and libopendmarc ship no .pc file).
AUTH_LIBS  := -lspf2 $(shell pkg-config --libs opendkim 2>/dev/null) -lopendmarc -lresolv

ifeq ($(SAN),1)
BUILD   := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD   := build/rel
SANFLAGS :=
endif

CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
ALL_CFLAGS  := -std=c11 -D_GNU_SOURCE -fPIC $(WARN) $(CFLAGS) $(SANFLAGS) -Icommon $(PKG_CFLAGS)
ALL_LDFLAGS := $(LDFLAGS) $(SANFLAGS) -Wl,--as-needed

# The store (common/store*.c) is linked into the operator tool, the relay
# worker and the tests, and built as a module for the session programs.
STORE_SRC  := $(wildcard common/store*.c)
STORE_OBJ  := $(STORE_SRC:%.c=$(BUILD)/%.o)
LIBSTORE   := $(BUILD)/libmcstore.a
COMMON_SRC := $(filter-out $(STORE_SRC) common/lazy_store.c,$(wildcard common/*.c))
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
LIBCOMMON  := $(BUILD)/libmailcell.a
LAZY_STORE := $(BUILD)/common/lazy_store.o

ADMIN_SRC  := $(wildcard admin/*.c)
ADMIN_OBJ  := $(ADMIN_SRC:%.c=$(BUILD)/%.o)
# SPF/DKIM/DMARC are a module the SMTP session loads for the first checked message.
INBOUND_SRC := $(addprefix smtp-session/,inbound.c spf.c dkimv.c dmarc.c dnsq.c)
INBOUND_OBJ := $(INBOUND_SRC:%.c=$(BUILD)/%.o) $(BUILD)/common/cidr.o $(BUILD)/common/headers.o
SMTP_SRC   := $(filter-out $(INBOUND_SRC),$(wildcard smtp-session/*.c))
SMTP_OBJ   := $(SMTP_SRC:%.c=$(BUILD)/%.o)
POP3_SRC   := $(wildcard pop3-session/*.c)
POP3_OBJ   := $(POP3_SRC:%.c=$(BUILD)/%.o)
# relay-worker: everything but main.c is a library the unit tests link too.
RELAY_SRC  := $(filter-out relay-worker/main.c,$(wildcard relay-worker/*.c))
RELAY_OBJ  := $(RELAY_SRC:%.c=$(BUILD)/%.o)
LIBRELAY   := $(BUILD)/librelay.a

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

GO_SRC     := $(wildcard devdb/*.go) devdb/go.mod devdb/go.sum

# Sanitizer builds keep their programs under build/san/bin; the tests use
# them when MAILCELL_BUILD=build/san.
ifeq ($(SAN),1)
BINDIR := $(BUILD)/bin
else
BINDIR := bin
endif
MODDIR   := $(BINDIR)/../lib/mailcell
MODULES  := $(MODDIR)/store.so $(MODDIR)/inbound.so
PROGRAMS := $(BINDIR)/mailcell $(BINDIR)/smtp-session $(BINDIR)/pop3-session \
	$(BINDIR)/relay-worker $(MODULES)

.PHONY: all deps check unit e2e run stop clean install uninstall devdb
.SUFFIXES:

all: $(PROGRAMS) bin/mailcell-devdb $(UNIT_BIN)

# Install missing Debian packages (no-op when everything is there).
deps:
	@scripts/install-deps.sh

$(BUILD)/%.o: %.c $(wildcard common/*.h smtp-session/*.h pop3-session/*.h relay-worker/*.h)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIBCOMMON): $(COMMON_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(LIBSTORE): $(STORE_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

# -Bsymbolic: the module's own calls stay inside it, never reach the program's forwarders.
$(MODDIR)/store.so: $(STORE_OBJ)
	@mkdir -p $(@D)
	$(CC) -shared $(ALL_LDFLAGS) -Wl,-Bsymbolic -o $@ $(STORE_OBJ) $(MONGO_LIBS)

$(MODDIR)/inbound.so: $(INBOUND_OBJ)
	@mkdir -p $(@D)
	$(CC) -shared $(ALL_LDFLAGS) -Wl,-Bsymbolic -o $@ $(INBOUND_OBJ) $(AUTH_LIBS)

$(BINDIR)/mailcell: $(ADMIN_OBJ) $(LIBSTORE) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(ADMIN_OBJ) $(LIBSTORE) $(LIBCOMMON) $(PKG_LIBS)

$(BINDIR)/smtp-session: $(SMTP_OBJ) $(LAZY_STORE) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) $(SESSION_EXPORTS) -o $@ $(SMTP_OBJ) $(LAZY_STORE) $(LIBCOMMON) \
	    $(SESSION_LIBS)

$(BINDIR)/pop3-session: $(POP3_OBJ) $(LAZY_STORE) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) $(SESSION_EXPORTS) -o $@ $(POP3_OBJ) $(LAZY_STORE) $(LIBCOMMON) \
	    $(SESSION_LIBS)

$(LIBRELAY): $(RELAY_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(BINDIR)/relay-worker: $(BUILD)/relay-worker/main.o $(LIBRELAY) $(LIBSTORE) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(BUILD)/relay-worker/main.o $(LIBRELAY) $(LIBSTORE) $(LIBCOMMON) \
	    $(PKG_LIBS) $(AUTH_LIBS) $(SYSTEMD_LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIBRELAY) $(LIBSTORE) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Irelay-worker $(ALL_LDFLAGS) -o $@ $< $(LIBRELAY) $(LIBSTORE) $(LIBCOMMON) \
	    $(PKG_LIBS) $(AUTH_LIBS) -lcmocka

bin/mailcell-devdb: $(GO_SRC)
	@mkdir -p $(@D)
	cd devdb && CGO_ENABLED=0 go build -trimpath -o ../bin/mailcell-devdb .

devdb: bin/mailcell-devdb

unit: $(UNIT_BIN)
	@scripts/run-unit.sh $(UNIT_BIN)

check: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) scripts/check.sh

run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run.sh

stop:
	@scripts/run.sh stop

clean:
	rm -rf build bin lib

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/mailcell
	install -m 0755 bin/mailcell $(DESTDIR)$(PREFIX)/bin/mailcell
	install -m 0755 bin/smtp-session $(DESTDIR)$(PREFIX)/bin/smtp-session
	install -m 0755 bin/pop3-session $(DESTDIR)$(PREFIX)/bin/pop3-session
	install -m 0755 bin/relay-worker $(DESTDIR)$(PREFIX)/bin/relay-worker
	install -d $(DESTDIR)/etc/mailcell
	install -m 0644 units/mailcell.conf.example $(DESTDIR)$(PREFIX)/share/mailcell/mailcell.conf.example

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/mailcell $(DESTDIR)$(PREFIX)/bin/smtp-session $(DESTDIR)$(PREFIX)/bin/pop3-session
	rm -f $(DESTDIR)$(PREFIX)/bin/relay-worker
	rm -rf $(DESTDIR)$(PREFIX)/share/mailcell

# Fuzzing (libFuzzer, clang): `make fuzz FUZZ_SECONDS=N`; see fuzz/README.md.
-include fuzz/fuzz.mk
# Benchmarks against Postfix and Dovecot: `make bench`; see bench/README.md.
-include bench/bench.mk
