#!/bin/sh
# install-deps.sh - installs the Debian packages mailcell needs to build, run
# and test, and only those that are missing (a no-op when all are there).
# Called by `make check` and `make run`; usable alone. Needs root for apt-get.
# Tests run with Debian's /usr/bin/python3, which sees these packages.
set -eu

PACKAGES="pkg-config gcc make cmake dpkg-dev clang libssl-dev openssl libmongoc-dev libbson-dev
libspf2-dev libopendkim-dev libopendmarc-dev libsystemd-dev libcrypt-dev
libcmocka-dev python3 python3-pytest python3-pymongo python3-gridfs swaks systemd curl strace fetchmail mpop publicsuffix valgrind ca-certificates
python3-dkim dnsmasq-base iproute2 ucspi-tcp openbsd-inetd s6 postfix dovecot-core dovecot-pop3d libclang-rt-14-dev"

missing=""
for p in $PACKAGES; do
	st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$st" = "installed" ] || missing="$missing $p"
done

if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps: missing Debian packages:$missing" >&2
		echo "install-deps: run as root: apt-get install$missing" >&2
		exit 1
	fi
	echo "install-deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	# Postfix is a test peer and benchmark, never this machine's MTA: the
	# tests run private instances, so the package configures nothing.
	echo "postfix postfix/main_mailer_type select No configuration" |
		debconf-set-selections 2>/dev/null || true
	apt-get update -q >/dev/null
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing >/dev/null
fi

# The dev database is Go (FerretDB v1.24 needs Go 1.24 or newer; Debian 12's is older).
if ! command -v go >/dev/null 2>&1; then
	for d in /usr/local/go/bin /usr/lib/go/bin; do
		[ -x "$d/go" ] && { echo "install-deps: add $d to PATH" >&2; exit 1; }
	done
	echo "install-deps: Go 1.24 or newer is needed to build bin/mailcell-devdb" >&2
	exit 1
fi
