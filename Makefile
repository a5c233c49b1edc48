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
# Session programs link libc only: the store (libmongoc) and TLS (OpenSSL)
# are modules they load at first use (lib/mailcell/store.so, tls.so; see
# common/lazy_store.c, common/lazy_tls.c), libcrypt is loaded by the first
# password check (common/password.c).
SESSION_LIBS :=
TLS_LIBS   := $(shell pkg-config --libs openssl 2>/dev/null)
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
# Programs and modules built from the same headers carry the same checksum;
# a program refuses a module with another (common/module.h).
MC_IFACE := $(shell cat $(sort $(wildcard common/*.h)) smtp-session/inbound.h | cksum | cut -d' ' -f1)
ALL_CFLAGS  := -std=c11 -D_GNU_SOURCE -fPIC $(WARN) $(CFLAGS) $(SANFLAGS) -Icommon $(PKG_CFLAGS) \
	-DMC_IFACE_ID=$(MC_IFACE)UL
ALL_LDFLAGS := $(LDFLAGS) $(SANFLAGS) -Wl,--as-needed

# The store (common/store*.c) is linked into the operator tool, the relay
# worker and the tests, and built as a module for the session programs.
STORE_SRC  := $(filter-out common/store_lite.c,$(wildcard common/store*.c))
STORE_OBJ  := $(STORE_SRC:%.c=$(BUILD)/%.o)
LIBSTORE   := $(BUILD)/libmcstore.a
# store-lite.so: the same store code on Debian's mongo-c-driver source built
# static without TLS, SASL, ICU and compression (scripts/build-mongoc-lite.sh;
# when the source cannot be fetched it says so and store-lite.so is skipped),
# which sessions load when the mongodb_uri needs none of them: a fraction of
# libmongoc's load cost. LITE=0 builds without it (sessions use store.so).
LITE       ?= 1
MONGOC_LITE := build/mongoc-lite
LITE_ARCHIVES := $(MONGOC_LITE)/lib/libmongoc-static-1.0.a $(MONGOC_LITE)/lib/libbson-static-1.0.a
LITE_STAMP := $(MONGOC_LITE)/stamp
LITE_CFLAGS := -DMONGOC_STATIC -DBSON_STATIC -I$(MONGOC_LITE)/include/libmongoc-1.0 \
	-I$(MONGOC_LITE)/include/libbson-1.0
STORE_LITE_SRC := $(filter-out common/store_module.c,$(STORE_SRC)) common/store_lite.c
STORE_LITE_OBJ := $(STORE_LITE_SRC:%.c=$(BUILD)/lite/%.o)
COMMON_SRC := $(filter-out $(STORE_SRC) common/store_lite.c common/lazy_store.c common/lazy_tls.c \
	common/module_iface.c,$(wildcard common/*.c))
# In each module: the interface checksum mc_module_load() checks.
MOD_IFACE  := $(BUILD)/common/module_iface.o
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
LIBCOMMON  := $(BUILD)/libmailcell.a
LAZY_STORE := $(BUILD)/common/lazy_store.o
# The OpenSSL code: in libmailcell.a for the programs that link OpenSSL, and
# the module tls.so for the sessions, which link lazy_tls.o instead (it
# defines the same entry points, so these archive members are never pulled).
TLS_OBJ    := $(BUILD)/common/tls.o $(BUILD)/common/tls_conn.o
LAZY_TLS   := $(BUILD)/common/lazy_tls.o

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
MODULES  := $(MODDIR)/store.so $(MODDIR)/inbound.so $(MODDIR)/tls.so
ifneq ($(LITE),0)
MODULES  += $(MODDIR)/store-lite.so
endif
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
$(MODDIR)/store.so: $(STORE_OBJ) $(MOD_IFACE)
	@mkdir -p $(@D)
	$(CC) -shared $(ALL_LDFLAGS) -Wl,-Bsymbolic -o $@ $(STORE_OBJ) $(MOD_IFACE) $(MONGO_LIBS)

# The stamp says "built" or "unavailable"; rebuilt when Debian's libmongoc
# changes (its dpkg file list is rewritten).
$(LITE_STAMP): scripts/build-mongoc-lite.sh $(wildcard /var/lib/dpkg/info/libmongoc-1.0-0*.list)
	scripts/build-mongoc-lite.sh $(MONGOC_LITE)

# Compiled against the lite build's headers only, not Debian's.
$(BUILD)/lite/%.o: %.c $(wildcard common/*.h) $(LITE_STAMP)
	@mkdir -p $(@D)
	$(CC) -std=c11 -D_GNU_SOURCE -fPIC $(WARN) $(CFLAGS) $(SANFLAGS) -Icommon $(LITE_CFLAGS) \
	    -DMC_IFACE_ID=$(MC_IFACE)UL -c -o $@ $<

# Without the lite libraries there is no store-lite.so, and sessions load
# store.so (slower to start, otherwise the same).
$(MODDIR)/store-lite.so: $(LITE_STAMP) $(STORE_LITE_SRC) $(wildcard common/*.h) common/module_iface.c
	@if grep -q '^built' $(LITE_STAMP); then \
	    $(MAKE) --no-print-directory store-lite-link; \
	else \
	    rm -f $@; echo "store-lite.so not built (see $(MONGOC_LITE)/build.log): sessions use store.so"; \
	fi

# --exclude-libs: libmongoc's and libbson's symbols stay private to the module.
.PHONY: store-lite-link
store-lite-link: $(STORE_LITE_OBJ) $(MOD_IFACE)
	@mkdir -p $(MODDIR)
	$(CC) -shared $(ALL_LDFLAGS) -Wl,-Bsymbolic -Wl,--exclude-libs,ALL -Wl,-z,relro,-z,now \
	    -o $(MODDIR)/store-lite.so $(STORE_LITE_OBJ) $(MOD_IFACE) $(LITE_ARCHIVES)

$(MODDIR)/inbound.so: $(INBOUND_OBJ) $(MOD_IFACE)
	@mkdir -p $(@D)
	$(CC) -shared $(ALL_LDFLAGS) -Wl,-Bsymbolic -o $@ $(INBOUND_OBJ) $(MOD_IFACE) $(AUTH_LIBS)

$(MODDIR)/tls.so: $(TLS_OBJ) $(MOD_IFACE)
	@mkdir -p $(@D)
	$(CC) -shared $(ALL_LDFLAGS) -Wl,-Bsymbolic -o $@ $(TLS_OBJ) $(MOD_IFACE) $(TLS_LIBS)

$(BINDIR)/mailcell: $(ADMIN_OBJ) $(LIBSTORE) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(ADMIN_OBJ) $(LIBSTORE) $(LIBCOMMON) $(PKG_LIBS)

$(BINDIR)/smtp-session: $(SMTP_OBJ) $(LAZY_STORE) $(LAZY_TLS) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) $(SESSION_EXPORTS) -o $@ $(SMTP_OBJ) $(LAZY_STORE) $(LAZY_TLS) \
	    $(LIBCOMMON) $(SESSION_LIBS)

$(BINDIR)/pop3-session: $(POP3_OBJ) $(LAZY_STORE) $(LAZY_TLS) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) $(SESSION_EXPORTS) -o $@ $(POP3_OBJ) $(LAZY_STORE) $(LAZY_TLS) \
	    $(LIBCOMMON) $(SESSION_LIBS)

$(LIBRELAY): $(RELAY_OBJ)
	@mkdir -p $(@D)
	rm -f $@
	ar rcs $@ $^

$(BINDIR)/relay-worker: $(BUILD)/relay-worker/main.o $(LIBRELAY) $(LIBSTORE) $(LIBCOMMON)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $(BUILD)/relay-worker/main.o $(LIBRELAY) $(LIBSTORE) $(LIBCOMMON) \
	    $(PKG_LIBS) $(AUTH_LIBS) $(SYSTEMD_LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(LIBRELAY) $(LIBSTORE) $(LIBCOMMON)
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

# `make install` needs the C programs only: not the Go dev database, not a
# database. PREFIX (default /usr/local) and DESTDIR (staging) as usual:
#   $(PREFIX)/bin                  mailcell smtp-session pop3-session relay-worker
#   $(PREFIX)/lib/mailcell         store.so store-lite.so inbound.so tls.so (found from ../lib/mailcell
#                                  of the programs), mailcell-inetd (inetd wrapper)
#   $(PREFIX)/share/mailcell       templates/, mailcell.conf.example, and inetd.conf,
#                                  xinetd.d/, tcpserver/, s6/, cron.d/ as examples
#   UNITDIR, SYSUSERSDIR,          systemd units, the mailcell user, /run/mailcell:
#   TMPFILESDIR                    $(PREFIX)/lib/{systemd/system,sysusers.d,tmpfiles.d},
#                                  where systemd looks for PREFIX=/usr/local and /usr
#   $(PREFIX)/share/doc/mailcell   README.md
#   /etc/mailcell/mailcell.conf    the example, mode 640, only when there is none
# Paths inside installed files follow PREFIX. Without DESTDIR, as root, it also
# creates the mailcell user and /run/mailcell and reloads systemd. `make
# uninstall` removes what install put, but never /etc/mailcell.
install uninstall: UNITDIR ?= $(PREFIX)/lib/systemd/system
install uninstall: SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
install uninstall: TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
install uninstall: MC_UNITS = $(notdir $(wildcard units/*.socket units/*.service units/*.timer units/*.path))
install: MC_EXAMPLES = inetd.conf xinetd.d tcpserver s6 cron.d
install: MC_SUBST = sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' \
	-e 's|/usr/local/lib/mailcell/|$(PREFIX)/lib/mailcell/|g' -e 's|/usr/local/share/|$(PREFIX)/share/|g'
# The programs' built-in templates_dir is /usr/local/share/mailcell/templates.
install: MC_CONF = $(MC_SUBST) $(if $(filter /usr/local,$(PREFIX)),,-e 's|^\#\(templates_dir = \)|\1|')
install: $(PROGRAMS)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/mailcell \
	    $(DESTDIR)$(PREFIX)/share/mailcell/templates $(DESTDIR)$(PREFIX)/share/doc/mailcell \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR)
	install -m 0755 $(BINDIR)/mailcell $(BINDIR)/smtp-session $(BINDIR)/pop3-session \
	    $(BINDIR)/relay-worker $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 $(wildcard $(MODULES)) $(DESTDIR)$(PREFIX)/lib/mailcell/
	[ -f $(MODDIR)/store-lite.so ] || rm -f $(DESTDIR)$(PREFIX)/lib/mailcell/store-lite.so
	$(MC_SUBST) units/mailcell-inetd >$(DESTDIR)$(PREFIX)/lib/mailcell/mailcell-inetd
	chmod 0755 $(DESTDIR)$(PREFIX)/lib/mailcell/mailcell-inetd
	install -m 0644 templates/* $(DESTDIR)$(PREFIX)/share/mailcell/templates/
	for f in $(MC_UNITS); do \
	    $(MC_SUBST) units/$$f >$(DESTDIR)$(UNITDIR)/$$f && chmod 0644 $(DESTDIR)$(UNITDIR)/$$f || exit 1; \
	done
	install -m 0644 units/sysusers.d/mailcell.conf $(DESTDIR)$(SYSUSERSDIR)/mailcell.conf
	install -m 0644 units/tmpfiles.d/mailcell.conf $(DESTDIR)$(TMPFILESDIR)/mailcell.conf
	$(MC_CONF) units/mailcell.conf.example >$(DESTDIR)$(PREFIX)/share/mailcell/mailcell.conf.example
	chmod 0644 $(DESTDIR)$(PREFIX)/share/mailcell/mailcell.conf.example
	for f in $$(cd units && find $(MC_EXAMPLES) -type f); do \
	    d=$(DESTDIR)$(PREFIX)/share/mailcell/$$f; mode=0644; [ -x units/$$f ] && mode=0755; \
	    install -d $$(dirname $$d) && $(MC_SUBST) units/$$f >$$d && chmod $$mode $$d || exit 1; \
	done
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/mailcell/README.md
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
	    if command -v systemd-sysusers >/dev/null; then \
	        echo "systemd-sysusers $(SYSUSERSDIR)/mailcell.conf"; \
	        systemd-sysusers $(SYSUSERSDIR)/mailcell.conf || exit 1; fi; \
	    if command -v systemd-tmpfiles >/dev/null && getent passwd mailcell >/dev/null; then \
	        echo "systemd-tmpfiles --create $(TMPFILESDIR)/mailcell.conf"; \
	        systemd-tmpfiles --create $(TMPFILESDIR)/mailcell.conf || exit 1; fi; \
	    if [ -d /run/systemd/system ]; then echo "systemctl daemon-reload"; systemctl daemon-reload; fi; \
	fi
	@conf=$(DESTDIR)/etc/mailcell/mailcell.conf; \
	if [ -e $$conf ] || [ -L $$conf ]; then \
	    echo "install: $$conf exists, left as it is"; \
	else \
	    dir=; [ -d $(DESTDIR)/etc/mailcell ] || dir=$(DESTDIR)/etc/mailcell; \
	    [ -z "$$dir" ] || install -d -m 0750 $$dir || exit 1; \
	    $(MC_CONF) units/mailcell.conf.example >$$conf && chmod 0640 $$conf || exit 1; \
	    if [ -z "$(DESTDIR)" ] && getent group mailcell >/dev/null; then \
	        chgrp mailcell $$conf $$dir || exit 1; fi; \
	    echo "install: wrote $$conf (mode 640): edit it"; \
	fi

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/bin/,mailcell smtp-session pop3-session relay-worker)
	rm -rf $(DESTDIR)$(PREFIX)/lib/mailcell
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(MC_UNITS))
	rm -f $(DESTDIR)$(SYSUSERSDIR)/mailcell.conf $(DESTDIR)$(TMPFILESDIR)/mailcell.conf
	rm -rf $(DESTDIR)$(PREFIX)/share/mailcell $(DESTDIR)$(PREFIX)/share/doc/mailcell
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# Fuzzing (libFuzzer, clang): `make fuzz FUZZ_SECONDS=N`; see fuzz/README.md.
-include fuzz/fuzz.mk
# Benchmarks against Postfix and Dovecot: `make bench`; see bench/README.md.
-include bench/bench.mk
