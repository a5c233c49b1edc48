"""What the session programs link and load (DESIGN.md, "Startup budget"):
smtp-session and pop3-session link libc only; OpenSSL comes with
lib/mailcell/tls.so at the first STARTTLS/STLS or with --tls, libcrypt at the
first password check. Checked with readelf and with /proc/PID/maps of a live
session at each step, and the failures: a missing tls.so is a 454 / -ERR and
a log line, an unloadable libcrypt a temporary AUTH failure, never a login."""
import os
import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from conftest import BIN
from pop3_helpers import pop3env, tls_cert  # noqa: F401
from smtp_helpers import (ALICE, ALICE_PW, BOB, SockSession, b64, client_tls_context, message,
                          plain_token, queued_id, smtp_cert, smtpenv, split_trace)  # noqa: F401

MODDIR = BIN / ".." / "lib" / "mailcell"
SESSIONS = ("smtp-session", "pop3-session")
SANITIZED = os.environ.get("MAILCELL_BUILD", "build/rel") != "build/rel"


def needed(path):
    out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def loaded(pid):
    """Basenames of the files mapped into process pid."""
    names = set()
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[5].startswith("/"):
                names.add(os.path.basename(fields[5].strip()))
    return names


def has(names, lib):
    """lib is "libssl", "libcrypto", "libcrypt" or "tls.so" (exact, not a prefix)."""
    if lib.endswith(".so"):
        return lib in names
    return any(n.startswith(lib + ".so") for n in names)


def assert_not_loaded(pid, *libs):
    names = loaded(pid)
    assert not [l for l in libs if has(names, l)], sorted(names)


def assert_loaded(pid, *libs):
    names = loaded(pid)
    assert all(has(names, l) for l in libs), (libs, sorted(names))


@pytest.mark.parametrize("program", SESSIONS)
def test_sessions_do_not_link_tls_or_libcrypt(program):
    libs = needed(BIN / program)
    for lib in libs:
        assert not re.match(r"lib(ssl|crypto|crypt)\.so", lib), libs
    if not SANITIZED:
        assert libs == ["libc.so.6"], libs
    ldd = subprocess.run(["ldd", str(BIN / program)], capture_output=True, text=True).stdout
    assert not re.search(r"\blib(ssl|crypto|crypt)\.so", ldd), ldd


def test_tls_module_carries_openssl():
    libs = needed(MODDIR / "tls.so")
    assert "libssl.so.3" in libs and "libcrypto.so.3" in libs, libs


def test_smtp_loads_tls_and_libcrypt_only_when_used(smtpenv):
    s = smtpenv.sock_session(args=["--submission"])
    s.ehlo()
    assert_not_loaded(s.pid, "libssl", "libcrypto", "libcrypt", "tls.so", "store.so")
    s.cmd("STARTTLS").check(220, "2.0.0")
    s.start_tls()
    s.ehlo()
    assert_loaded(s.pid, "tls.so", "libssl", "libcrypto")
    assert_not_loaded(s.pid, "libcrypt")
    # AUTH LOGIN (the PLAIN path is below): the first password check loads libcrypt.
    s.cmd("AUTH LOGIN").check(334)
    s.cmd(b64(ALICE)).check(334)
    s.cmd(b64(ALICE_PW)).check(235, "2.7.0")
    assert_loaded(s.pid, "libcrypt")
    s.cmd("MAIL FROM:<%s>" % ALICE).check(250)
    s.cmd("RCPT TO:<%s>" % BOB).check(250)
    assert s.cmd("DATA").code == 354
    s.send(message("lazy tls", sender=ALICE, to=BOB) + b".\r\n")
    qid = queued_id(s.reply())
    version, cipher = s.tls.version(), s.tls.cipher()[0]
    s.cmd("QUIT").check(221)
    (doc,) = smtpenv.messages(BOB)
    trace = re.sub(rb"\r\n[ \t]+", b" ", split_trace(smtpenv.body(doc))[0])
    # mc_io_tls_info through the module: "(using PROTOCOL:CIPHER)" in Received.
    assert re.search(rb"with ESMTPSA id " + qid.encode() + rb" \(using " +
                     re.escape(("%s:%s" % (version, cipher)).encode()) + rb"\)", trace), trace


def test_smtp_implicit_tls_and_auth_plain(smtpenv):
    s = smtpenv.sock_session(args=["--tls", "--submission"])
    s.start_tls()
    s.reply().check(220)
    assert_loaded(s.pid, "tls.so", "libssl")
    assert_not_loaded(s.pid, "libcrypt")
    s.ehlo()
    s.cmd("AUTH PLAIN " + plain_token(ALICE, "wrong")).check(535, "5.7.8")
    s.cmd("AUTH PLAIN " + plain_token(ALICE, ALICE_PW)).check(235, "2.7.0")
    s.cmd("QUIT").check(221)


@pytest.mark.skipif(SANITIZED or shutil.which("valgrind") is None,
                    reason="valgrind does not run ASan builds (or is not installed)")
def test_smtp_starttls_auth_is_memcheck_clean(smtpenv, tmp_path):
    """tls.so and libcrypt loaded at run time, used and freed: no memory errors."""
    log = tmp_path / "memcheck.log"
    s = SockSession(["valgrind", "--tool=memcheck", "--leak-check=full",
                     "--errors-for-leak-kinds=definite", "--error-exitcode=99",
                     "--log-file=%s" % log] + smtpenv.argv(args=["--submission"]))
    smtpenv.procs.append(s)
    s.reply(timeout=60).check(220)
    s.ehlo()
    s.cmd("STARTTLS").check(220, "2.0.0")
    s.start_tls(timeout=60)
    s.ehlo()
    s.cmd("AUTH PLAIN " + plain_token(ALICE, ALICE_PW), timeout=60).check(235, "2.7.0")
    s.cmd("QUIT").check(221)
    s.wait(timeout=60)
    report = log.read_text(errors="replace")
    assert re.search(r"ERROR SUMMARY: 0 errors", report), report[-6000:]
    assert s.proc.returncode == 0, report[-6000:]


class Pop3Sock:
    """pop3-session on one end of a socketpair (so that the test can start TLS)."""

    def __init__(self, conf, args=()):
        self.sock, theirs = socket.socketpair()
        self.sock.settimeout(20)
        self.proc = subprocess.Popen([str(BIN / "pop3-session"), "-c", str(conf), *args],
                                     stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL)
        theirs.close()
        self.pid = self.proc.pid
        self.io = self.sock
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.io.recv(4096)
            assert chunk, "connection closed; got %r" % self.buf
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def cmd(self, text):
        self.io.sendall(text.encode() + b"\r\n")
        return self.line()

    def start_tls(self):
        assert self.buf == b""
        self.io = client_tls_context().wrap_socket(self.sock, server_hostname="mail.test")

    def close(self):
        self.io.close()
        self.proc.wait(20)


def test_pop3_loads_tls_and_libcrypt_only_when_used(pop3env):
    strict = pop3env.write_conf("strict.conf", allow_plaintext_auth="no")
    p = Pop3Sock(strict)
    try:
        assert p.line().startswith("+OK ")
        assert p.cmd("NOOP").startswith("-ERR")      # only after a login
        assert_not_loaded(p.pid, "libssl", "libcrypto", "libcrypt", "tls.so", "store.so")
        assert p.cmd("STLS").startswith("+OK begin TLS negotiation")
        p.start_tls()
        assert_loaded(p.pid, "tls.so", "libssl")
        assert_not_loaded(p.pid, "libcrypt")
        assert p.cmd("USER " + ALICE).startswith("+OK")
        assert p.cmd("PASS " + ALICE_PW).startswith("+OK alice@example.org has 0 messages")
        assert_loaded(p.pid, "libcrypt")
        assert p.cmd("QUIT").startswith("+OK")
    finally:
        p.close()


def test_pop3_implicit_tls_user_pass(pop3env):
    p = Pop3Sock(pop3env.conf, args=["--tls"])
    try:
        p.start_tls()
        assert p.line().startswith("+OK ")
        assert p.cmd("USER " + ALICE).startswith("+OK")
        assert p.cmd("PASS " + ALICE_PW).startswith("+OK alice@example.org")
        assert p.cmd("QUIT").startswith("+OK")
    finally:
        p.close()


# ---- when the module or libcrypt cannot be loaded ----

@pytest.fixture
def no_tls_module(tmp_path):
    """An environment whose module directory has every module but tls.so."""
    d = tmp_path / "modules"
    d.mkdir()
    for so in MODDIR.glob("*.so"):
        if so.name != "tls.so":
            (d / so.name).symlink_to(so.resolve())
    return dict(os.environ, MAILCELL_LIBDIR=str(d))


def test_smtp_without_tls_module(smtpenv, no_tls_module):
    out = smtpenv.pipe("EHLO client.test\r\nSTARTTLS\r\nNOOP\r\nQUIT\r\n", env=no_tls_module)
    assert b"\r\n454 4.7.0 TLS not available due to temporary reason\r\n" in out, out
    assert b"\r\n250 2.0.0" in out and out.endswith(b"221 2.0.0 mail.test closing connection\r\n"), out
    log = smtpenv.stderr_path.read_text()
    assert re.search(r"TLS not available: module tls: .*tls\.so", log), log
    # Implicit TLS: no greeting, a log line, a normal exit.
    r = subprocess.run(smtpenv.argv(args=["--tls"]), input=b"EHLO x\r\n", capture_output=True,
                       timeout=30, env=no_tls_module)
    assert r.returncode == 0 and r.stdout == b"", r
    assert b"TLS not available: module tls:" in r.stderr, r.stderr


def test_pop3_without_tls_module(pop3env, no_tls_module):
    r = subprocess.run([str(BIN / "pop3-session"), "-c", str(pop3env.conf)],
                       input=b"STLS\r\nCAPA\r\nQUIT\r\n", capture_output=True, timeout=30,
                       env=no_tls_module)
    lines = r.stdout.decode().split("\r\n")
    assert lines[1] == "-ERR [SYS/TEMP] TLS not available", lines
    assert lines[2] == "+OK capability list follows" and lines[-2].startswith("+OK"), lines
    assert r.returncode == 0
    assert b"TLS not available: module tls:" in r.stderr, r.stderr


def libcrypt_file():
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"\blibcrypt\.so\.1 \([^)]*\) => (\S+)", out)
    assert m, out
    return os.path.realpath(m.group(1))


def without_libcrypt(argv, tmp_path):
    """argv in a mount namespace where libcrypt.so.1 is an empty file."""
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" "$1" && shift && exec "$@"', str(empty), libcrypt_file(),
            *argv]


needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                                   reason="needs unshare and root")


@needs_unshare
def test_smtp_auth_without_libcrypt_is_a_temporary_failure(smtpenv, tmp_path):
    conf = smtpenv.write_conf(allow_plaintext_auth="yes")
    r = subprocess.run(without_libcrypt(smtpenv.argv(conf), tmp_path),
                       input=("EHLO client.test\r\nAUTH PLAIN %s\r\nMAIL FROM:<%s>\r\nQUIT\r\n"
                              % (plain_token(ALICE, ALICE_PW), ALICE)).encode(),
                       capture_output=True, timeout=60)
    out = r.stdout.decode()
    assert "\r\n454 4.7.0 Temporary authentication failure\r\n" in out, (out, r.stderr)
    assert "235" not in out and out.endswith("221 2.0.0 mail.test closing connection\r\n"), out
    assert b"password hashing unavailable:" in r.stderr, r.stderr
    assert b"AUTH failed temporarily: password check unavailable" in r.stderr, r.stderr


@needs_unshare
def test_pop3_login_without_libcrypt_is_a_temporary_failure(pop3env, tmp_path):
    r = subprocess.run(without_libcrypt([str(BIN / "pop3-session"), "-c", str(pop3env.conf)],
                                        tmp_path),
                       input=("USER %s\r\nPASS %s\r\nSTAT\r\nQUIT\r\n" % (ALICE, ALICE_PW)).encode(),
                       capture_output=True, timeout=60)
    lines = r.stdout.decode().split("\r\n")
    assert lines[2] == "-ERR [SYS/TEMP] authentication unavailable, try again later", lines
    assert lines[3].startswith("-ERR"), lines               # STAT: still not logged in
    assert b"password hashing unavailable:" in r.stderr, r.stderr


# ---- which store module a session loads ----
# store-lite.so is the store on a libmongoc built without TLS, logins and
# compression (scripts/build-mongoc-lite.sh); a URI that needs one of them,
# or a module directory without it, gets store.so and Debian's libmongoc.

DEBIAN_MONGOC = ("libmongoc-1.0", "libssl", "libcrypto", "libsasl2", "libicuuc", "store.so")


def smtp_transaction(s, subject):
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    s.cmd("RCPT TO:<%s>" % ALICE).check(250)
    assert s.cmd("DATA").code == 354
    s.send(message(subject) + b".\r\n")
    s.reply().check(250)


def test_store_lite_links_libc_only():
    libs = needed(MODDIR / "store-lite.so")
    assert not [l for l in libs if re.match(r"lib(mongoc|bson|ssl|crypto|sasl2|icu)", l)], libs
    if not SANITIZED:
        assert libs == ["libc.so.6"], libs


def test_plain_uri_uses_store_lite(smtpenv):
    s = smtpenv.sock_session()
    smtp_transaction(s, "lite")
    assert_loaded(s.pid, "store-lite.so")
    assert_not_loaded(s.pid, *DEBIAN_MONGOC)
    s.cmd("QUIT").check(221)
    (doc,) = smtpenv.messages(ALICE)
    assert b"Subject: lite" in smtpenv.body(doc)


def test_pop3_plain_uri_uses_store_lite(pop3env):
    pop3env.deliver(ALICE, message("for pop3"))
    p = Pop3Sock(pop3env.conf)
    try:
        assert p.line().startswith("+OK ")
        assert p.cmd("USER " + ALICE).startswith("+OK")
        assert p.cmd("PASS " + ALICE_PW).startswith("+OK alice@example.org has 1 message")
        assert_loaded(p.pid, "store-lite.so")
        assert_not_loaded(p.pid, *DEBIAN_MONGOC)
        assert p.cmd("QUIT").startswith("+OK")
    finally:
        p.close()


def test_uri_with_compression_uses_debian_libmongoc(smtpenv):
    """The lite libmongoc has no compressors: such a URI gets store.so, and works."""
    conf = smtpenv.write_conf(mongodb_uri=smtpenv.uri.rstrip("/") + "/?compressors=zlib")
    s = smtpenv.sock_session(conf=conf)
    smtp_transaction(s, "full")
    assert_loaded(s.pid, "store.so", "libmongoc-1.0")
    assert_not_loaded(s.pid, "store-lite.so")
    s.cmd("QUIT").check(221)
    (doc,) = smtpenv.messages(ALICE)
    assert b"Subject: full" in smtpenv.body(doc)


def test_uri_with_a_login_uses_debian_libmongoc(smtpenv):
    """SCRAM needs OpenSSL: a URI with credentials gets store.so (the dev
    database refuses the login, which is a temporary failure, never a 250)."""
    port = smtpenv.uri.rsplit(":", 1)[1].strip("/")
    conf = smtpenv.write_conf(mongodb_uri="mongodb://someone:secret@127.0.0.1:%s/" % port)
    s = smtpenv.sock_session(conf=conf)
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    r = s.cmd("RCPT TO:<%s>" % ALICE)
    assert_loaded(s.pid, "store.so", "libmongoc-1.0")
    assert_not_loaded(s.pid, "store-lite.so")
    r.check(451)
    s.cmd("QUIT").check(221)


def test_without_store_lite_sessions_use_store_so(smtpenv, tmp_path):
    """A build with LITE=0 (no store-lite.so) still stores mail, through store.so."""
    d = tmp_path / "modules-nolite"
    d.mkdir()
    for so in MODDIR.glob("*.so"):
        if so.name != "store-lite.so":
            (d / so.name).symlink_to(so.resolve())
    out = smtpenv.pipe("EHLO x\r\nMAIL FROM:<bob@example.net>\r\nRCPT TO:<%s>\r\nDATA\r\n"
                       % ALICE + message("nolite").decode() + ".\r\nQUIT\r\n",
                       env=dict(os.environ, MAILCELL_LIBDIR=str(d)))
    assert re.search(rb"^250 2\.0\.0 ", out, re.M), out
    (doc,) = smtpenv.messages(ALICE)
    assert b"Subject: nolite" in smtpenv.body(doc)


def test_module_from_other_sources_is_refused(smtpenv, tmp_path):
    """A store module built from other headers (as after an upgrade under a
    running session) is never called: a temporary failure and a log line."""
    src = tmp_path / "other.c"
    src.write_text("const unsigned long mc_module_iface = 1;\n"
                   "void *mc_store_new(void *cfg) { return cfg; }\n"
                   "int mc_store_lite_fits(const char *uri) { (void)uri; return 1; }\n")
    d = tmp_path / "modules-other"
    d.mkdir()
    for so in MODDIR.glob("*.so"):
        if so.name not in ("store.so", "store-lite.so"):
            (d / so.name).symlink_to(so.resolve())
    for name in ("store.so", "store-lite.so"):
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(d / name), str(src)], check=True)
    with open(smtpenv.stderr_path, "ab") as err:
        r = subprocess.run(smtpenv.argv(), input=b"EHLO x\r\nMAIL FROM:<bob@example.net>\r\n"
                           b"RCPT TO:<%s>\r\nQUIT\r\n" % ALICE.encode(), stdout=subprocess.PIPE,
                           stderr=err, timeout=30, env=dict(os.environ, MAILCELL_LIBDIR=str(d)))
    assert re.search(rb"^451 4\.3\.0 ", r.stdout, re.M), r.stdout
    log = smtpenv.stderr_path.read_text(errors="replace")
    assert "module store: built from other sources than this program" in log, log[-2000:]
    assert smtpenv.messages(ALICE) == []
