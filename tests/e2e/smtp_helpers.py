"""Shared helpers for the SMTP end-to-end tests (tests/e2e/test_smtp_*.py).

The `smtpenv` fixture gives each test its own database holding the domain
example.org, two users and an alias (see USERS, ALIASES), a configuration file
(hostname mail.test, a self-signed certificate, small limits so that the
bounds are cheap to reach) and ways to drive the real bin/smtp-session:

- env.pipe(script): pipe a whole client script into smtp-session, get stdout;
- env.session(): smtp-session on pipes, driven one command at a time;
- env.sock_session(): smtp-session with one end of a socketpair as fd 0/1,
  so that the client can start TLS on it (STARTTLS, --tls);
- env.server(): smtp-session behind systemd-socket-activate on a free
  loopback port, for real clients (smtplib, swaks, curl) and parallel load;
- env.messages(), env.body(), env.outbound(), env.body_files(): what the
  server stored, read straight from the database with pymongo/gridfs.

Test modules import the fixtures they use from here, e.g.
`from smtp_helpers import smtpenv, smtp_cert  # noqa: F401`.
"""
import base64
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import time

import gridfs
import pymongo
import pytest

from conftest import BIN, Mailcell, free_port

HOSTNAME = "mail.test"
DOMAIN = "example.org"
CLIENT_IP = "192.0.2.10"
USERS = {
    # address: (password, full name)
    "alice@example.org": ("alice secret", "Alice Liddell"),
    "bob@example.org": ("bob secret", "Bob Builder"),
    "carol@example.org": ("carol secret", "Carol Cole"),
}
ALIASES = {
    # team@ points to alice (and a remote address); sales@ and postmaster@ to bob.
    "team@example.org": ["alice@example.org", "x@remote.example"],
    "sales@example.org": ["bob@example.org"],
    "postmaster@example.org": ["bob@example.org"],
}
ALICE, ALICE_PW = "alice@example.org", "alice secret"
BOB, BOB_PW = "bob@example.org", "bob secret"
MAX_SIZE = 1048576          # max_message_size of the default test config
MAX_RCPTS = 5               # max_recipients of the default test config
SANITIZED = os.environ.get("MAILCELL_BUILD", "build/rel") != "build/rel"

# Enhanced status code at the start of a reply's text (RFC 2034/3463).
ENH_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


def conf_text(uri, database, **keys):
    """A config file's text; keys override the defaults below (None drops one)."""
    base = {
        "mongodb_uri": uri,
        "database": database,
        "write_concern": "1",
        "db_timeout": "2",
        "log_target": "stderr",
        "hostname": HOSTNAME,
        "max_message_size": str(MAX_SIZE),
        "max_recipients": str(MAX_RCPTS),
        "idle_timeout": "30",
        # SPF/DKIM/DMARC have their own tests (test_auth_*.py, with a test
        # DNS server); here they would send lookups to the host's resolver.
        "inbound_checks": "no",
    }
    base.update(keys)
    return "# SMTP e2e test configuration\n" + "".join(
        "%s = %s\n" % (k, v) for k, v in base.items() if v is not None)


@pytest.fixture(scope="session")
def smtp_cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("smtptls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=" + HOSTNAME, "-days", "2",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def client_tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def b64(text):
    if isinstance(text, str):
        text = text.encode()
    return base64.b64encode(text).decode()


def plain_token(user, password):
    return b64("\0%s\0%s" % (user, password))


# ---- replies ----

class Reply:
    """One SMTP reply: code (int) and its lines' texts (after "NNN-"/"NNN ")."""

    def __init__(self, lines):
        self.raw = lines                       # full lines, without CRLF
        self.code = int(lines[-1][:3])
        self.lines = [l[4:] for l in lines]

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def enh(self):
        m = ENH_RE.match(self.lines[0])
        return m.group(0).strip() if m else None

    def __repr__(self):
        return "Reply(%r)" % "\r\n".join(self.raw)

    def check(self, code, enh=None):
        assert self.code == code and (enh is None or self.enh == enh), \
            "expected %s %s, got %r" % (code, enh or "", "\r\n".join(self.raw))
        return self


def parse_replies(data):
    """Split server output (bytes) into Reply objects; trailing partial lines
    are ignored. Asserts every line is CRLF-terminated and well formed."""
    text = data.decode("utf-8", "replace")
    assert data.count(b"\n") == data.count(b"\r\n"), "reply lines must end in CRLF: %r" % text
    lines = text.split("\r\n")[:-1]
    out, cur = [], []
    for l in lines:
        assert re.match(r"^[2345]\d\d[ -]", l) or re.match(r"^[2345]\d\d$", l), \
            "malformed reply line %r in %r" % (l, text)
        cur.append(l)
        if len(l) == 3 or l[3] == " ":
            out.append(Reply(cur))
            cur = []
    assert not cur, "unterminated multi-line reply %r" % cur
    return out


class Client:
    """Reads SMTP replies from a file descriptor or socket with timeouts."""

    def __init__(self, recv, send, fileno):
        self._recv, self._send, self._fileno = recv, send, fileno
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self._send(data)

    def pending(self):
        """Bytes the transport has decoded but not yet delivered (TLS)."""
        return 0

    def fill(self, deadline):
        left = deadline - time.monotonic()
        if self.pending() == 0:
            r, _, _ = select.select([self._fileno()], [], [], max(left, 0))
            if not r:
                raise TimeoutError("no reply in time; got so far: %r" % self.buf[-500:])
        try:
            chunk = self._recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
            chunk = b""
        except ssl.SSLWantReadError:
            return
        if not chunk:
            self.eof = True
        self.buf += chunk

    def _take_reply(self):
        """One complete reply from the buffer, or None."""
        pos, lines = 0, []
        while True:
            i = self.buf.find(b"\r\n", pos)
            if i < 0:
                return None
            line = self.buf[pos:i].decode("utf-8", "replace")
            lines.append(line)
            pos = i + 2
            if len(line) < 4 or line[3] != "-":
                self.buf = self.buf[pos:]
                return Reply(lines)

    def reply(self, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            r = self._take_reply()
            if r is not None:
                return r
            if self.eof:
                raise EOFError("connection closed; unparsed output %r" % self.buf)
            self.fill(deadline)

    def cmd(self, line, timeout=20):
        self.send(line + "\r\n")
        return self.reply(timeout)

    def replies(self, n, timeout=20):
        return [self.reply(timeout) for _ in range(n)]

    def read_available(self, wait=0.3):
        """Whatever arrives within `wait` seconds (for 'nothing more' checks)."""
        deadline = time.monotonic() + wait
        while not self.eof:
            try:
                self.fill(deadline)
            except TimeoutError:
                break
        data, self.buf = self.buf, b""
        return data

    def read_to_eof(self, timeout=20):
        deadline = time.monotonic() + timeout
        while not self.eof:
            self.fill(deadline)
        data, self.buf = self.buf, b""
        return data

    def ehlo(self, name="client.test"):
        r = self.cmd("EHLO " + name)
        r.check(250)
        return r


class SmtpProc(Client):
    """bin/smtp-session on pipes (fd 0 and fd 1 are different pipes)."""

    def __init__(self, argv, env=None, stderr=None):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr if stderr is not None else subprocess.DEVNULL,
                                     env=env)
        self.pid = self.proc.pid
        out = self.proc.stdout.fileno()

        def send(data):
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        super().__init__(lambda n: os.read(out, n), send, lambda: out)

    def close_input(self):
        self.proc.stdin.close()

    def wait(self, timeout=20):
        """Read to end of output and wait for the exit; returns the rest."""
        rest = self.read_to_eof(timeout)
        self.proc.wait(timeout)
        return rest

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def vmhwm_kb(self):
        return vmhwm_kb(self.pid)


def vmhwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for %d" % pid)


class SockSession(Client):
    """bin/smtp-session with one end of a socketpair as fd 0 and fd 1;
    the test holds the other end and can wrap it in TLS."""

    def __init__(self, argv, env=None, stderr=None):
        self.sock, theirs = socket.socketpair()
        self.proc = subprocess.Popen(argv, stdin=theirs, stdout=theirs,
                                     stderr=stderr if stderr is not None else subprocess.DEVNULL,
                                     env=env)
        theirs.close()
        self.pid = self.proc.pid
        self.tls = None
        super().__init__(self._do_recv, self._do_send, lambda: (self.tls or self.sock).fileno())

    def _do_recv(self, n):
        return (self.tls or self.sock).recv(n)

    def _do_send(self, data):
        (self.tls or self.sock).sendall(data)

    def pending(self):
        return self.tls.pending() if self.tls else 0

    def start_tls(self, timeout=20):
        """TLS handshake on the socket; anything buffered must be empty."""
        assert self.buf == b"", "plain-text bytes before the handshake: %r" % self.buf
        self.sock.settimeout(timeout)
        self.tls = client_tls_context().wrap_socket(self.sock, server_hostname=HOSTNAME)
        return self.tls

    def close(self):
        try:
            (self.tls or self.sock).close()
        except OSError:
            pass

    def wait(self, timeout=20):
        rest = self.read_to_eof(timeout)
        self.proc.wait(timeout)
        return rest

    def kill(self):
        self.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class TcpClient(Client):
    """A raw TCP connection to a Server (for getpeername, STARTTLS by hand)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        super().__init__(lambda n: self.sock.recv(n), lambda d: self.sock.sendall(d),
                         lambda: self.sock.fileno())

    def close(self):
        self.sock.close()


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
    """bin/smtp-session behind systemd-socket-activate --inetd on a free port:
    one session process per connection, as systemd's Accept=yes does."""

    def __init__(self, argv, log_path, env=None):
        self.port = free_port()
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            ["systemd-socket-activate", "-l", "127.0.0.1:%d" % self.port, "--inetd",
             "-a", *argv],
            stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True, env=env)
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("systemd-socket-activate did not listen: %s" % argv)
            time.sleep(0.02)

    def children(self):
        """Pids of the session processes running now."""
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []

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

class SmtpEnv:
    def __init__(self, tmp_path, uri, dbname, cert):
        self.tmp = tmp_path
        self.uri = uri
        self.dbname = dbname
        self.cert = cert
        self.nconf = 0
        self.conf = self.write_conf()
        self.mailcell = Mailcell(self.conf)
        self.client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000)
        self.db = self.client[dbname]
        self.servers = []
        self.procs = []
        self.stderr_path = tmp_path / "smtp-session.stderr"

    def write_conf(self, **keys):
        """A config file for this test's database; keys override the defaults,
        e.g. write_conf(allow_plaintext_auth="yes", idle_timeout="2")."""
        keys.setdefault("tls_cert", str(self.cert[0]))
        keys.setdefault("tls_key", str(self.cert[1]))
        self.nconf += 1
        path = self.tmp / ("smtp%d.conf" % self.nconf)
        path.write_text(conf_text(self.uri, self.dbname, **keys))
        return path

    def argv(self, conf=None, args=(), remote_ip=CLIENT_IP):
        a = [str(BIN / "smtp-session"), "-c", str(conf or self.conf)]
        if remote_ip is not None:
            a += ["--remote-ip", remote_ip]
        return a + list(args)

    def pipe(self, script, conf=None, args=(), remote_ip=CLIENT_IP, timeout=60, env=None):
        """Pipe a whole client script into smtp-session; returns its stdout."""
        if isinstance(script, str):
            script = script.encode()
        with open(self.stderr_path, "ab") as err:
            r = subprocess.run(self.argv(conf, args, remote_ip), input=script,
                               stdout=subprocess.PIPE, stderr=err, timeout=timeout, env=env)
        return r.stdout

    def session(self, conf=None, args=(), remote_ip=CLIENT_IP, env=None, greet=True):
        with open(self.stderr_path, "ab") as err:
            p = SmtpProc(self.argv(conf, args, remote_ip), env=env, stderr=err)
        self.procs.append(p)
        if greet:
            p.reply().check(220)
        return p

    def sock_session(self, conf=None, args=(), remote_ip=CLIENT_IP, greet=True):
        with open(self.stderr_path, "ab") as err:
            p = SockSession(self.argv(conf, args, remote_ip), stderr=err)
        self.procs.append(p)
        if greet and "--tls" not in args:
            p.reply().check(220)
        return p

    def server(self, conf=None, args=(), remote_ip=None, env=None):
        s = Server(self.argv(conf, args, remote_ip), self.tmp / "server.log", env=env)
        self.servers.append(s)
        return s

    # what was stored

    def messages(self, mailbox=None):
        q = {} if mailbox is None else {"mailbox": mailbox}
        return list(self.db.messages.find(q))

    def outbound(self):
        return list(self.db.outbound.find({}))

    def body(self, doc):
        """The stored message (bytes) of a messages or outbound document: the
        header block the server added (trace, authentication results), kept in
        the document's "head", then the body as received, from GridFS."""
        bucket = gridfs.GridFSBucket(self.db, bucket_name="bodies")
        head = doc.get("head", "").encode()
        return head + bucket.open_download_stream(doc["body"]).read()

    def body_files(self):
        """Number of message bodies in the GridFS bucket."""
        return self.db["bodies.files"].count_documents({})

    def check_sanitizer_reports(self):
        """Fail the test if a session printed an ASan/UBSan/LSan report
        (MAILCELL_BUILD=build/san); session stderr goes to these logs."""
        for path in (self.stderr_path, self.tmp / "server.log"):
            if path.exists():
                text = path.read_text(errors="replace")
                for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                               "runtime error:"):
                    if marker in text:
                        i = text.index(marker)
                        pytest.fail("sanitizer report in %s:\n%s" % (path.name, text[i:i + 3000]))

    def close(self):
        for p in self.procs:
            try:
                p.kill()
            except Exception:
                pass
        for s in self.servers:
            s.stop()
        self.client.close()


@pytest.fixture
def smtpenv(devdb, tmp_path, dbname, smtp_cert):
    env = SmtpEnv(tmp_path, devdb.uri, dbname, smtp_cert)
    env.mailcell.ok("domain", "add", DOMAIN)
    for address, (password, name) in USERS.items():
        env.mailcell.ok("user", "add", address, "--name", name, input=password + "\n")
    for address, targets in ALIASES.items():
        env.mailcell.ok("alias", "add", address, *targets)
    yield env
    env.close()
    env.check_sanitizer_reports()


# ---- message helpers ----

def message(subject="test", body=b"hello\r\n", sender="bob@example.net", to=ALICE):
    if isinstance(body, str):
        body = body.encode()
    return (("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n"
             "Message-ID: <%s@client.test>\r\n\r\n" % (sender, to, subject, subject.replace(" ", "."))
             ).encode() + body)


def dot_stuff(msg):
    return re.sub(rb"(?m)^\.", b"..", msg)


def data_script(sender, rcpts, msg, ehlo=True, quit=True):
    """One DATA transaction as one write (pipelined), message dot-stuffed."""
    s = b"EHLO client.test\r\n" if ehlo else b""
    s += b"MAIL FROM:<%s>\r\n" % sender.encode()
    for r in ([rcpts] if isinstance(rcpts, str) else rcpts):
        s += b"RCPT TO:<%s>\r\n" % r.encode()
    s += b"DATA\r\n" + dot_stuff(msg) + b".\r\n"
    return s + (b"QUIT\r\n" if quit else b"")


TRACE_RE = re.compile(rb"(Return-Path|Received|Authentication-Results|Received-SPF|DKIM-Signature|ARC-[A-Za-z-]+):")


def split_trace(stored):
    """A stored message as (trace header block, the rest): the Return-Path,
    Received, ... lines the server added at the top, with continuations."""
    lines = stored.splitlines(keepends=True)
    i = 0
    while i < len(lines) and (TRACE_RE.match(lines[i]) or
                              (i > 0 and lines[i][:1] in (b" ", b"\t"))):
        i += 1
    return b"".join(lines[:i]), b"".join(lines[i:])


def queued_id(reply):
    m = re.match(r"2\.0\.0 OK queued as (\S+)$", reply.lines[-1])
    assert reply.code == 250 and m, "expected 250 2.0.0 OK queued as <id>, got %r" % reply
    return m.group(1)
