"""Shared helpers for the POP3 end-to-end tests (tests/e2e/test_pop3_*.py).

A `pop3env` fixture gives each test its own database with the domain
example.org and a few users, a configuration file (hostname mail.test, a
self-signed certificate), and ways to drive the real programs:

- env.deliver(): put a message into a mailbox through the real SMTP server
  (bin/smtp-session on a pipe), as DATA (dot-stuffed here) or BDAT chunks;
- env.pipe(): pipe a whole client script into bin/pop3-session, get its output;
- env.session(): an interactive pop3-session on pipes (Pop3Proc), for timing,
  locks, dropped connections and memory measurements;
- env.server(): pop3-session (or smtp-session) behind systemd-socket-activate
  on a free loopback port, for real clients (poplib, curl, fetchmail, mpop).

Test modules import the fixtures they use from here, e.g.
`from pop3_helpers import pop3env, tls_cert  # noqa: F401`.
"""
import os
import re
import select
import signal
import subprocess
import time

import pytest

from conftest import BIN, Mailcell, free_port

HOSTNAME = "mail.test"
DOMAIN = "example.org"
USERS = {
    "alice@example.org": "alice secret",
    "bob@example.org": "bob secret",
    "carol@example.org": "carol secret",   # disabled by the fixture
}
CLIENT_IP = "192.0.2.10"     # what pop3-session is told the client is
SMTP_CLIENT_IP = "192.0.2.1"


# ---- configuration, certificate ----

def conf_text(uri, database, **keys):
    """A config file's text; keys override the defaults below (None drops one)."""
    base = {
        "mongodb_uri": uri,
        "database": database,
        "write_concern": "1",
        "db_timeout": "2",
        "log_target": "stderr",
        "hostname": HOSTNAME,
        "allow_plaintext_auth": "yes",
        # SPF/DKIM/DMARC have their own tests (test_auth_*.py, with a test
        # DNS server); here they would send lookups to the host's resolver.
        "inbound_checks": "no",
    }
    base.update(keys)
    return "# POP3 e2e test configuration\n" + "".join(
        "%s = %s\n" % (k, v) for k, v in base.items() if v is not None)


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("pop3tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=" + HOSTNAME, "-days", "2",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


# ---- reading replies from a process or a socket ----

class LineReader:
    """Buffered, timeout-bounded line reading from a file descriptor."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = b""
        self.eof = False

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no reply in time; got so far: %r" % self.buf[:300])
        r, _, _ = select.select([self.fd], [], [], left)
        if not r:
            raise TimeoutError("no reply in time; got so far: %r" % self.buf[:300])
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            self.eof = True
        self.buf += chunk

    def readline(self, timeout=20):
        """One line with its CRLF; b"" at end of file."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf and not self.eof:
            self._fill(deadline)
        i = self.buf.find(b"\n")
        if i < 0:
            line, self.buf = self.buf, b""
            return line
        line, self.buf = self.buf[:i + 1], self.buf[i + 1:]
        return line

    def read_multiline(self, timeout=60):
        """The lines of a multi-line reply up to, not including, ".\\r\\n"."""
        deadline = time.monotonic() + timeout
        while True:
            end = self.buf.find(b"\r\n.\r\n")
            if self.buf.startswith(b".\r\n"):
                self.buf = self.buf[3:]
                return b""
            if end >= 0:
                data, self.buf = self.buf[:end + 2], self.buf[end + 5:]
                return data
            if self.eof:
                raise EOFError("connection closed inside a multi-line reply")
            self._fill(deadline)

    def read_to_eof(self, timeout=20):
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._fill(deadline)
        data, self.buf = self.buf, b""
        return data


def unstuff(data):
    """A multi-line reply body (CRLF lines, dot-stuffed) as the original octets."""
    return b"".join(l[1:] if l.startswith(b".") else l
                    for l in data.splitlines(keepends=True))


TRACE_RE = re.compile(rb"(Return-Path|Received|Authentication-Results|Received-SPF):")


def strip_trace(message):
    """Split a retrieved message into (trace header lines, the rest): the
    Return-Path/Received/... lines and their continuations the server added."""
    lines = message.splitlines(keepends=True)
    i = 0
    while i < len(lines) and (TRACE_RE.match(lines[i]) or
                              (i > 0 and lines[i][:1] in (b" ", b"\t"))):
        i += 1
    return b"".join(lines[:i]), b"".join(lines[i:])


class Pop3Proc:
    """bin/pop3-session on pipes, driven one command at a time."""

    def __init__(self, conf, args=(), stderr=None):
        self.proc = subprocess.Popen(
            [str(BIN / "pop3-session"), "-c", str(conf), "--remote-ip", CLIENT_IP, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=stderr if stderr is not None else subprocess.DEVNULL)
        self.r = LineReader(self.proc.stdout.fileno())
        self.pid = self.proc.pid

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def readline(self, timeout=20):
        return self.r.readline(timeout).decode("utf-8", "replace")

    def cmd(self, line, timeout=20):
        """Send one command line, return the first reply line without CRLF."""
        self.send(line + "\r\n")
        return self.readline(timeout).rstrip("\r\n")

    def multi(self, line, timeout=60):
        """Send a command with a multi-line answer: (first line, body bytes)."""
        first = self.cmd(line, timeout)
        assert first.startswith("+OK"), "%s: %s" % (line, first)
        return first, self.r.read_multiline(timeout)

    def login(self, user, password):
        assert self.cmd("USER " + user).startswith("+OK")
        return self.cmd("PASS " + password)

    def drop(self):
        """Close the connection without QUIT; wait for the session to end."""
        self.proc.stdin.close()
        return self.wait()

    def wait(self, timeout=20):
        rest = self.r.read_to_eof(timeout)
        self.proc.wait(timeout)
        return rest

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def vmhwm_kb(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM")


# ---- socket servers ----

def _listening(port):
    want = ":%04X" % port
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if fields[1].endswith(want) and fields[3] == "0A":
                        return True
        except FileNotFoundError:
            pass
    return False


class Server:
    """One program behind systemd-socket-activate --inetd on a free port."""

    def __init__(self, argv, log_path):
        self.port = free_port()
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            ["systemd-socket-activate", "-l", "127.0.0.1:%d" % self.port, "--inetd",
             "-a", *argv],
            stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("systemd-socket-activate did not listen: %s" % argv)
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            # Its own process group: the activator and any session it started.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


# ---- the per-test environment ----

def smtp_script(sender, rcpt, message, mode="data", mail_params="", chunk=65536):
    """The client side of one SMTP transaction, then QUIT."""
    s = b"EHLO client.test\r\nMAIL FROM:<" + sender.encode() + b">"
    if mail_params:
        s += b" " + mail_params.encode()
    s += b"\r\nRCPT TO:<" + rcpt.encode() + b">\r\n"
    if mode == "data":
        stuffed = re.sub(rb"(?m)^\.", b"..", message)
        s += b"DATA\r\n" + stuffed + b".\r\n"
    else:
        chunks = [message[i:i + chunk] for i in range(0, len(message), chunk)] or [b""]
        for k, c in enumerate(chunks):
            last = " LAST" if k == len(chunks) - 1 else ""
            s += b"BDAT %d%s\r\n" % (len(c), last.encode()) + c
    return s + b"QUIT\r\n"


class Pop3Env:
    def __init__(self, tmp_path, uri, dbname, cert):
        self.tmp = tmp_path
        self.uri = uri
        self.dbname = dbname
        self.cert = cert
        self.conf = self.write_conf("pop3.conf")
        self.mailcell = Mailcell(self.conf)
        self.servers = []
        self.procs = []

    def write_conf(self, name, **keys):
        """Another config file for the same database, e.g. allow_plaintext_auth="no"."""
        keys.setdefault("tls_cert", str(self.cert[0]))
        keys.setdefault("tls_key", str(self.cert[1]))
        path = self.tmp / name
        path.write_text(conf_text(self.uri, self.dbname, **keys))
        return path

    def add_user(self, address, password):
        self.mailcell.ok("user", "add", address, input=password + "\n")

    def deliver(self, rcpt, message, sender="bob@example.net", mode="data",
                mail_params="", chunk=65536):
        """Send one message through bin/smtp-session; asserts it was stored."""
        r = subprocess.run(
            [str(BIN / "smtp-session"), "-c", str(self.conf), "--remote-ip", SMTP_CLIENT_IP],
            input=smtp_script(sender, rcpt, message, mode, mail_params, chunk),
            capture_output=True, timeout=120)
        out = r.stdout.decode("utf-8", "replace")
        assert "\r\n250 2.0.0 OK queued" in out, "delivery failed:\n" + out[-2000:]

    def pipe(self, script, conf=None, args=(), timeout=60):
        """Pipe a whole client script into pop3-session; its output (bytes)."""
        if isinstance(script, str):
            script = script.encode()
        r = subprocess.run(
            [str(BIN / "pop3-session"), "-c", str(conf or self.conf),
             "--remote-ip", CLIENT_IP, *args],
            input=script, capture_output=True, timeout=timeout)
        return r.stdout

    def session(self, conf=None, args=()):
        p = Pop3Proc(conf or self.conf, args)
        self.procs.append(p)
        greeting = p.readline()
        assert greeting.startswith("+OK "), greeting
        return p

    def server(self, conf=None, tls=False, program="pop3-session"):
        argv = [str(BIN / program), "-c", str(conf or self.conf)]
        if tls:
            argv.append("--tls")
        s = Server(argv, self.tmp / ("%s.log" % program))
        self.servers.append(s)
        return s

    def close(self):
        for p in self.procs:
            p.kill()
        for s in self.servers:
            s.stop()


@pytest.fixture
def pop3env(devdb, tmp_path, dbname, tls_cert):
    env = Pop3Env(tmp_path, devdb.uri, dbname, tls_cert)
    env.mailcell.ok("domain", "add", DOMAIN)
    for address, password in USERS.items():
        env.add_user(address, password)
    env.mailcell.ok("user", "disable", "carol@example.org")
    yield env
    env.close()


def simple_message(subject, body=b"hello\r\n", extra_headers=b""):
    return (b"From: Bob <bob@example.net>\r\nTo: alice@example.org\r\n"
            b"Subject: " + subject.encode() + b"\r\n" + extra_headers + b"\r\n" + body)
