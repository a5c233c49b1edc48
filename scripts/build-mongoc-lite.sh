#!/bin/sh
# build-mongoc-lite.sh DEST - builds Debian's mongo-c-driver source (installed
# version, Debian's patches) as static libraries without TLS, SASL, ICU or
# compression, for lib/mailcell/store-lite.so. DEST/stamp says "built VERSION",
# or "unavailable VERSION" (no source: the build goes on without store-lite.so).
set -eu

dest=${1:?usage: build-mongoc-lite.sh DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

# The same source and patches as the libmongoc the rest of mailcell links.
version=$(dpkg-query -W -f='${source:Version}' libmongoc-1.0-0 2>/dev/null || true)
upstream=${version%%-*}
if [ -z "$version" ]; then
	echo "build-mongoc-lite: libmongoc-1.0-0 is not installed (run scripts/install-deps.sh)" >&2
	exit 1
fi
if [ "$(cat "$dest/version" 2>/dev/null || true)" = "$version" ] &&
	[ -f "$dest/lib/libmongoc-static-1.0.a" ] && [ -f "$dest/lib/libbson-static-1.0.a" ]; then
	echo "built $version" >"$dest/stamp"
	exit 0
fi

# Give up without failing the build: sessions then load store.so.
unavailable() {
	echo "build-mongoc-lite: $1" >&2
	echo "build-mongoc-lite: building without store-lite.so (sessions load store.so);" \
		"to try again: rm -r $dest && make" >&2
	echo "unavailable $version" >"$dest/stamp"
	exit 0
}
echo "build-mongoc-lite: building mongo-c-driver $version (Debian's source) into $dest"

# apt-get source with a private deb-src list, lists directory and cache, so
# that the machine's apt configuration and package lists stay as they are.
apt=$dest/apt
rm -rf "$apt" "$dest/src" "$dest/build" "$dest/include" "$dest/lib" "$dest/version" "$dest/stamp"
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$dest/src"
uris=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null |
	grep -v security | head -n 1)
[ -n "$uris" ] || uris=http://deb.debian.org/debian
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
cat >"$apt/sources.list" <<EOF
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uris $suite main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uris $suite-updates main
EOF
aptopts="-o Dir::Etc::sourcelist=$apt/sources.list -o Dir::Etc::sourceparts=-
 -o Dir::State::Lists=$apt/lists -o Dir::Cache=$apt/cache -o APT::Sandbox::User=root -q"
log=$dest/build.log
# shellcheck disable=SC2086
if ! apt-get $aptopts update >"$log" 2>&1 ||
	! (cd "$dest/src" && apt-get $aptopts source "mongo-c-driver=$version") >>"$log" 2>&1; then
	tail -n 20 "$log" >&2
	unavailable "could not fetch mongo-c-driver $version from $uris (log: $log)"
fi

# Only what a plain mongodb:// connection uses: no TLS or SCRAM (they need
# OpenSSL), no Cyrus SASL, no ICU, no snappy/zlib/zstd, no client-side
# encryption, no SRV lookups, no shared-memory counters, no automatic init.
mkdir -p "$dest/build"
if ! (cd "$dest/build" && cmake "$dest/src/mongo-c-driver-$upstream" \
	-DBUILD_VERSION="$upstream" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DCMAKE_INSTALL_PREFIX="$dest" -DCMAKE_INSTALL_LIBDIR=lib \
	-DCMAKE_C_FLAGS="-fstack-protector-strong -D_FORTIFY_SOURCE=2 -Wformat -Werror=format-security" \
	-DENABLE_PIC=ON -DENABLE_STATIC=ON -DENABLE_TESTS=OFF -DENABLE_EXAMPLES=OFF \
	-DENABLE_SSL=OFF -DENABLE_SASL=OFF -DENABLE_ICU=OFF -DENABLE_SRV=OFF \
	-DENABLE_SNAPPY=OFF -DENABLE_ZLIB=OFF -DENABLE_ZSTD=OFF \
	-DENABLE_CLIENT_SIDE_ENCRYPTION=OFF -DENABLE_MONGODB_AWS_AUTH=OFF \
	-DENABLE_SHM_COUNTERS=OFF -DENABLE_AUTOMATIC_INIT_AND_CLEANUP=OFF \
	-DENABLE_UNINSTALL=OFF -DENABLE_MAN_PAGES=OFF -DENABLE_HTML_DOCS=OFF &&
	make -j"$(nproc)" && make install) >>"$log" 2>&1; then
	tail -n 30 "$log" >&2
	unavailable "the build failed; the whole log is $log"
fi
rm -rf "$dest/build" "$apt/cache"
echo "$version" >"$dest/version"
echo "built $version" >"$dest/stamp"
