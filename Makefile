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
ALL_CFLAGS  := -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SANFLAGS) -Icommon $(PKG_CFLAGS)
ALL_LDFLAGS := $(LDFLAGS) $(SANFLAGS) -Wl,--as-needed

COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
LIBCOMMON  := $(BUILD)/libmailcell.a

ADMIN_SRC  := $(wildcard admin/*.c)
ADMIN_OBJ  := $(ADMIN_SRC:%.c=$(BUILD)/%.o)
SMTP_SRC   := $(wildcard smtp-session/*.c)
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
PROGRAMS := $(BINDIR)/mailcell $(BINDIR)/smtp-session $(BINDIR)/pop3-session \
	$(BINDIR)/relay-worker

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

$(BINDIR)/mailcell: $(ADMIN_OBJ) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(ADMIN_OBJ) $(LIBCOMMON) $(PKG_LIBS)

$(BINDIR)/smtp-session: $(SMTP_OBJ) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(SMTP_OBJ) $(LIBCOMMON) $(PKG_LIBS) $(AUTH_LIBS)

$(BINDIR)/pop3-session: $(POP3_OBJ) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(POP3_OBJ) $(LIBCOMMON) $(PKG_LIBS)

$(LIBRELAY): $(RELAY_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(BINDIR)/relay-worker: $(BUILD)/relay-worker/main.o $(LIBRELAY) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(BUILD)/relay-worker/main.o $(LIBRELAY) $(LIBCOMMON) $(PKG_LIBS) $(AUTH_LIBS) $(SYSTEMD_LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIBRELAY) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Irelay-worker $(ALL_LDFLAGS) -o $@ $< $(LIBRELAY) $(LIBCOMMON) $(PKG_LIBS) $(AUTH_LIBS) -lcmocka

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
	rm -rf build bin

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
