"""The harness of the relay worker's end-to-end tests (test_relay_*.py).

The session-wide `relaylab` builds, and removes again at the end:

- a network namespace `mcrelay-XXXXXXXX` whose `lo` carries the addresses
  below, with /etc/netns/NAME/resolv.conf pointing at 127.0.0.1, so that
  bin/relay-worker, started with `ip netns exec NAME ...`, finds MX records
  in the test DNS server and connects to peers the tests started;
- dnsmasq (Debian's dnsmasq-base) inside it serving the test zones (ZONE_*
  below; `local=/test/`: other names under .test are NXDOMAIN), restarted
  with extra TXT records when a test publishes a DKIM key;
- a mailcell-devdb inside it (processes in the namespace cannot reach the
  host's loopback) and a pymongo client for it.

pytest itself enters the namespace (setns(CLONE_NEWNET) on its main thread)
for the duration of each test using the `relay` fixture, so its sockets
(pymongo, the scripted peers' listening sockets) and the programs it starts
without `ip netns exec` (smtp-session, mailcell) live there too.

Peers, all inside the namespace:
- ScriptPeer: a scripted SMTP server in Python (a thread per connection)
  that offers the extensions a test chooses, answers what the test says
  (4xx, 5xx, dropped connection, a stall), and records every command line,
  which commands arrived before the previous reply was sent (pipelining),
  STARTTLS, and each message with its MAIL parameters and content;
- SinkPeer: Postfix's smtp-sink dumping each message into a directory;
- PostfixPeer (`postfix` fixture, session-wide): a private Postfix instance
  (its own main.cf/master.cf, queue and data directories in a temporary
  directory outside pytest's, which Postfix's user could not enter; `master
  -d` in the foreground, so that stopping it is killing one process group)
  whose smtpd services listen on the addresses of PF_SERVICES, each with
  other `smtpd_discard_ehlo_keywords` (or a small message_size_limit);
  received mail is put on hold in its private queue and read back with
  postcat. The system's Postfix (if any) is never touched;
- MailcellPeer: another mailcell (bin/smtp-session behind
  systemd-socket-activate) on mx.remote.test, with its own database.

The `relay` fixture gives each test its own database holding the local
domain example.org (users alice, bob), a config file (hostname mail.test,
short timeouts; env.use_conf(**keys) for others) and: env.submit() (one
message through bin/smtp-session --submission with AUTH PLAIN, like a user;
returns the new queue item's id), env.inject() (port 25, for forwarding
aliases), env.worker() (bin/relay-worker --once inside the namespace) and
env.worker_proc() (in the background), env.peer()/sink()/mailcell_peer(),
env.item()/state()/rcpt()/queue_list()/show() (the queue, through pymongo
and `mailcell queue`; item() and items() include delivered items, which the
worker moves to outbound_done), env.backdate() (for lifetimes whose configured
minimum is long), env.mailbox()/dsns() (a local mailbox, head + GridFS
body), env.dkim_publish() (`mailcell dkim keygen` and its record served by
the DNS server). DSN parses a notification with Python's email package.

Debian packages: iproute2, dnsmasq-base, postfix (smtpd, smtp-sink,
postcat; the tests that need it skip without it), python3-dkim,
python3-dnspython, python3-pymongo.
"""
import atexit
import contextlib
import ctypes
import email
import email.policy
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from email.utils import formatdate
from pathlib import Path

import pytest

from conftest import BIN, DEVDB, TOP, Mailcell
from smtp_helpers import SmtpProc, dot_stuff, plain_token

# libmongoc's per-process shared-memory counters are of no use here, and a
# segment left by a killed process makes a later one with its pid warn on
# stderr (make check sets this too; see README "Pointing at a real MongoDB").
os.environ.setdefault("MONGOC_DISABLE_SHM", "1")

HOSTNAME = "mail.test"
DOMAIN = "example.org"
ALICE, ALICE_PW = "alice@example.org", "alice secret"
BOB, BOB_PW = "bob@example.org", "bob secret"
CLIENT_IP = "192.0.2.2"          # --remote-ip of the sessions the tests drive
DEVDB_PORT = 27017               # inside the namespace
CLONE_NEWNET = 0x40000000
SANITIZED = os.environ.get("MAILCELL_BUILD", "build/rel") != "build/rel"

# ---- addresses and zones ----

PEER_IP = "192.0.2.20"           # mx.peer.test, the MX of peer.test: a test's own peer
PEER2_IP = "192.0.2.22"          # mx.peer2.test, MX of peer2.test (a second destination)
RELAY_IP = "192.0.2.21"          # relay_host target (no name in the DNS)
MX1_IP, MX2_IP = "192.0.2.11", "192.0.2.12"     # order.test: MX 10 mx1, MX 20 mx2
IMPLICIT_IP = "192.0.2.15"       # implicit.test: an A record, no MX
RX_IP = "192.0.2.30"             # mx.remote.test: the receiving mailcell
SINK_IP = "192.0.2.50"           # mx.sink.test: smtp-sink
DOWN_IP = "192.0.2.59"           # mx.down.test: nothing ever listens there
# The Postfix peer's smtpd services: domain -> (address, smtpd -o overrides).
PF_SERVICES = {
    "pf.test": ("192.0.2.40", {}),
    "pf-no8bit.test": ("192.0.2.41", {"smtpd_discard_ehlo_keywords": "8bitmime"}),
    "pf-bare.test": ("192.0.2.42", {"smtpd_discard_ehlo_keywords":
                                    "pipelining,chunking,8bitmime,smtputf8,starttls,size"}),
    "pf-small.test": ("192.0.2.43", {"message_size_limit": "3000"}),
    "pf-noutf8.test": ("192.0.2.44", {"smtpd_discard_ehlo_keywords": "smtputf8"}),
}

ADDRESSES = [CLIENT_IP, PEER_IP, PEER2_IP, RELAY_IP, MX1_IP, MX2_IP, IMPLICIT_IP, RX_IP,
             SINK_IP, DOWN_IP] + [ip for ip, _ in PF_SERVICES.values()]

ZONE_A = {
    "mx.peer.test": PEER_IP,
    "mx.peer2.test": PEER2_IP,
    "mx1.order.test": MX1_IP,
    "mx2.order.test": MX2_IP,
    "implicit.test": IMPLICIT_IP,
    "mx.remote.test": RX_IP,
    "mx.sink.test": SINK_IP,
    "mx.down.test": DOWN_IP,
    "ready.test": "198.51.100.99",
}
ZONE_A.update({"mx." + d: ip for d, (ip, _) in PF_SERVICES.items()})
ZONE_MX = [
    ("peer.test", "mx.peer.test", 10),
    ("peer2.test", "mx.peer2.test", 10),
    ("order.test", "mx1.order.test", 10),
    ("order.test", "mx2.order.test", 20),
    ("remote.test", "mx.remote.test", 10),
    ("sink.test", "mx.sink.test", 10),
    ("down.test", "mx.down.test", 10),
    # The first MX has no address at all (its name does not exist).
    ("badmx.test", "nohost.badmx.test", 10),
    ("badmx.test", "mx.peer.test", 20),
] + [(d, "mx." + d, 10) for d in PF_SERVICES]
# RFC 7505 null MX: preference 0, the root as exchange (dnsmasq's mx-host
# cannot say ".", so the record is given raw: 00 00, then the empty name).
ZONE_RAW = [("nullmx.test", 15, "000000")]


def txt_strings(data):
    parts = [data[i:i + 255] for i in range(0, len(data), 255)] or [""]
    for p in parts:
        assert '"' not in p and "\\" not in p
    return ",".join('"%s"' % p for p in parts)


# ---- the network namespace ----

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: %s" % os.strerror(e))


class NetNS:
    def __init__(self, addresses):
        self.name = "mcrelay-" + secrets.token_hex(4)
        self.fd = self.host_fd = None
        self.depth = 0
        self.created = False
        try:
            self._ip("netns", "add", self.name)
            self.created = True
            self._ip("-n", self.name, "link", "set", "lo", "up")
            for addr in addresses:
                self._ip("-n", self.name, "addr", "add", addr + "/32", "dev", "lo")
            d = Path("/etc/netns") / self.name
            d.mkdir(parents=True, exist_ok=True)
            (d / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:2\n")
            self.fd = os.open("/var/run/netns/" + self.name, os.O_RDONLY)
            self.host_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        except Exception:
            self.destroy()
            raise

    @staticmethod
    def _ip(*args):
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("ip %s: %s" % (" ".join(args), r.stderr.strip()))

    def argv(self, *argv):
        """A command line that runs argv inside the namespace (with its resolv.conf)."""
        return ["ip", "netns", "exec", self.name, *[str(a) for a in argv]]

    @contextlib.contextmanager
    def entered(self):
        """This thread's sockets (and the processes it starts) in the namespace."""
        if self.depth == 0:
            _setns(self.fd)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                _setns(self.host_fd)

    def destroy(self):
        if self.depth:
            _setns(self.host_fd)
            self.depth = 0
        for fd in (self.fd, self.host_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.host_fd = None
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
            self.created = False
        shutil.rmtree(Path("/etc/netns") / self.name, ignore_errors=True)


def stop_process(proc, timeout=10, group=False):
    if proc is None or proc.poll() is not None:
        return
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:
            pass
        proc.wait(timeout)


def listening(port, ip=None):
    """Is something listening on (ip, port) in this thread's namespace?"""
    want = ":%04X" % port
    with open("/proc/thread-self/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(want) and fields[3] == "0A":
                if ip is None:
                    return True
                addr = socket.inet_ntoa(bytes.fromhex(fields[1].split(":")[0])[::-1])
                if addr in (ip, "0.0.0.0"):
                    return True
    return False


def wait_listening(ns, port, ip, proc=None, timeout=10, what="server"):
    with ns.entered():
        deadline = time.monotonic() + timeout
        while not listening(port, ip):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError("%s exited with %s" % (what, proc.returncode))
            if time.monotonic() > deadline:
                raise RuntimeError("%s does not listen on %s:%d" % (what, ip, port))
            time.sleep(0.02)


# ---- the DNS server ----

class TestDNS:
    __test__ = False

    def __init__(self, ns, workdir):
        self.ns = ns
        self.dir = Path(workdir)
        self.conf = self.dir / "dnsmasq.conf"
        self.log = self.dir / "dnsmasq.log"
        self.txt = {}
        self.proc = None
        self.start()

    def config(self):
        lines = ["# mailcell relay tests: generated", "local=/test/", "cache-size=0",
                 "no-negcache", "log-queries", "log-facility=%s" % self.log]
        for name, ip in sorted(ZONE_A.items()):
            lines.append("host-record=%s,%s" % (name, ip))
        for name, host, pref in ZONE_MX:
            lines.append("mx-host=%s,%s,%d" % (name, host, pref))
        for name, rrtype, hexdata in ZONE_RAW:
            lines.append("dns-rr=%s,%d,%s" % (name, rrtype, hexdata))
        for name, data in sorted(self.txt.items()):
            lines.append("txt-record=%s,%s" % (name, txt_strings(data)))
        return "\n".join(lines) + "\n"

    def start(self):
        self.conf.write_text(self.config())
        self.proc = subprocess.Popen(
            self.ns.argv("dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                         "--conf-file=%s" % self.conf, "--listen-address=127.0.0.1",
                         "--bind-interfaces", "--port", "53", "--user=root",
                         "--pid-file=%s" % (self.dir / "dnsmasq.pid")),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with self.ns.entered():
            deadline = time.monotonic() + 10
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("dnsmasq exited: %s" % self.proc.stderr.read().decode())
                try:
                    if self.query("ready.test", "A", lifetime=0.5) == ["198.51.100.99"]:
                        return
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("dnsmasq does not answer")
                time.sleep(0.05)

    def publish(self, txt):
        """Serve the zones again with these TXT records (name -> data) added."""
        self.txt.update(txt)
        stop_process(self.proc)
        self.start()

    @staticmethod
    def query(name, rdtype, lifetime=3.0):
        """Answers (text) from the test server; the caller must be inside the namespace."""
        import dns.resolver
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.lifetime = lifetime
        r.timeout = lifetime
        return [a.to_text() for a in r.resolve(name, rdtype, search=False)]

    def stop(self):
        stop_process(self.proc)


# ---- TLS material ----

def make_tls(d):
    """A test CA and, signed by it, a certificate for mx.peer.test (and
    *.test names); plus a self-signed one. Paths in a dict."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)

    def run(*a):
        subprocess.run(a, check=True, capture_output=True, timeout=60)
    ca_key, ca = d / "ca.key", d / "ca.pem"
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=relay test CA",
        "-days", "2", "-keyout", str(ca_key), "-out", str(ca),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign,cRLSign")
    key, csr, cert = d / "peer.key", d / "peer.csr", d / "peer.pem"
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.peer.test",
        "-keyout", str(key), "-out", str(csr))
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=DNS:mx.peer.test,DNS:mx.peer2.test\n"
                   "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext))
    self_key, self_cert = d / "self.key", d / "self.pem"
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=wrong.example",
        "-days", "2", "-keyout", str(self_key), "-out", str(self_cert))
    return {"ca": ca, "key": key, "cert": cert, "self_key": self_key, "self_cert": self_cert}


def server_tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


# ---- the lab ----

class RelayLab:
    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.ns = NetNS(ADDRESSES)
        self.dns = self.devdb = self.devdb_log = self.mongo = None
        self.postfix = None
        try:
            self.tls = make_tls(self.dir / "tls")
            self.dns = TestDNS(self.ns, self.dir)
            self._start_devdb()
        except Exception:
            self.close()
            raise

    def _start_devdb(self):
        import pymongo
        self.devdb_log = open(self.dir / "devdb.log", "w+")
        self.devdb = subprocess.Popen(
            self.ns.argv(DEVDB, "--listen", "127.0.0.1:%d" % DEVDB_PORT,
                         "--dir", self.dir / "devdb"),
            stdout=subprocess.DEVNULL, stderr=self.devdb_log)
        wait_listening(self.ns, DEVDB_PORT, "127.0.0.1", self.devdb, 20, "mailcell-devdb")
        with self.ns.entered():
            self.mongo = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=10000)
            self.mongo.admin.command("ping")

    @property
    def uri(self):
        return "mongodb://127.0.0.1:%d" % DEVDB_PORT

    def close(self):
        if self.postfix is not None:
            self.postfix.stop()
            self.postfix = None
        if self.mongo is not None:
            with self.ns.entered():
                self.mongo.close()
            self.mongo = None
        stop_process(self.devdb, 20)
        if self.devdb_log is not None:
            self.devdb_log.close()
            self.devdb_log = None
        if self.dns is not None:
            self.dns.stop()
        self.ns.destroy()


_lab = {"lab": None, "users": 0}


def _lab_cleanup():
    if _lab["lab"] is not None:
        _lab["lab"].close()
        _lab["lab"] = None


atexit.register(_lab_cleanup)


def _can_run():
    if os.geteuid() != 0:
        return "needs root (network namespaces, dnsmasq on port 53)"
    if shutil.which("ip") is None:
        return "no ip(8) (Debian package iproute2)"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode != 0:
        return "ip netns is unavailable: %s" % r.stderr.strip()
    if shutil.which("dnsmasq") is None:
        return "dnsmasq is not installed (Debian package dnsmasq-base)"
    if not (BIN / "relay-worker").exists():
        return "bin/relay-worker is not built"
    return None


@pytest.fixture(scope="session")
def relaylab(tmp_path_factory):
    """One namespace, DNS server and database server for all test_relay_* modules."""
    why = _can_run()
    if why:
        pytest.skip(why)
    if _lab["lab"] is None:
        _lab["lab"] = RelayLab(tmp_path_factory.mktemp("relaylab"))
    _lab["users"] += 1
    yield _lab["lab"]
    _lab["users"] -= 1
    if _lab["users"] == 0:
        _lab_cleanup()


# ---- the scripted peer ----

DROP = "<drop the connection>"
STALL = "<never answer>"

FULL_EXTS = ["PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
             "CHUNKING"]


def exts(without=(), extra=()):
    """FULL_EXTS without the extensions named (by keyword), plus extra ones."""
    drop = {w.upper() for w in without}
    return [e for e in FULL_EXTS if e.split()[0] not in drop] + list(extra)


class PeerMessage:
    """One transaction the peer accepted (or refused at its end)."""

    def __init__(self, mail_arg):
        self.mail_arg = mail_arg
        m = re.match(r"^<([^>]*)>\s*(.*)$", mail_arg)
        self.sender = m.group(1) if m else None
        self.params = {}
        for p in (m.group(2).split() if m else []):
            k, _, v = p.partition("=")
            self.params[k.upper()] = v
        self.rcpts = []          # addresses accepted at RCPT
        self.data = b""          # the content, unstuffed
        self.raw = b""           # the content as it came (DATA: dot-stuffed, without the end)
        self.via = None          # "DATA" or "BDAT"
        self.chunks = 0
        self.reply = None        # the reply the peer gave at the end
        self.time = None         # when the content was complete (time.monotonic())

    @property
    def accepted(self):
        return self.reply is not None and self.reply.startswith("2")

    def __repr__(self):
        return "PeerMessage(<%s> %r -> %r, %d octets via %s, %r)" % (
            self.sender, self.params, self.rcpts, len(self.data), self.via, self.reply)


class PeerSession:
    def __init__(self, addr):
        self.addr = addr
        self.lines = []          # every command line as received (str, no CRLF)
        self.early = []          # (verb, True when more input was waiting before our reply)
        self.tls = False
        self.tls_version = None
        self.plain_after_starttls = b""
        self.messages = []
        self.stalled = False
        self.closed = False

    def verbs(self):
        return [l.split(" ", 1)[0].upper() for l in self.lines]

    def __repr__(self):
        return "PeerSession(%r, tls=%s)" % (self.lines, self.tls)


class ScriptPeer:
    """A scripted SMTP server on ip:port (inside the namespace: create it
    while entered). `replies` maps a verb (CONNECT for the greeting, EHLO,
    HELO, STARTTLS, MAIL, RCPT, DATA for the 354, EOM for the end of the
    content, BDAT for a non-last chunk, RSET, QUIT) to a reply line, DROP,
    STALL, or a function (arg, session) returning one of those or None for
    the default. `peek` seconds: before answering MAIL and RCPT, wait and
    see whether the client sent more (for pipelining checks)."""

    def __init__(self, ip=PEER_IP, port=25, extensions=None, helo_only=False,
                 name="mx.peer.test", replies=None, tls=None, peek=0.0):
        self.ip, self.port, self.name = ip, port, name
        self.extensions = FULL_EXTS if extensions is None else extensions
        self.helo_only = helo_only
        self.replies = dict(replies or {})
        self.tls = tls
        self.peek = peek
        self.sessions = []
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.conns = []
        self.threads = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    # --- what arrived ---

    def messages(self, accepted=True):
        with self.cond:
            return [m for s in self.sessions for m in s.messages
                    if m.accepted or not accepted]

    def all_lines(self):
        with self.cond:
            return [l for s in self.sessions for l in s.lines]

    def wait(self, predicate, timeout=10):
        """Waits until predicate(self) holds; returns its last value."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = predicate(self)
                if v or time.monotonic() >= deadline:
                    return v
                self.cond.wait(min(0.1, max(deadline - time.monotonic(), 0.001)))

    def wait_messages(self, n=1, timeout=10):
        return self.wait(lambda p: len(p.messages()) >= n, timeout) and self.messages()

    def set_replies(self, **replies):
        with self.cond:
            self.replies.update(replies)

    # --- the server ---

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                conn, addr = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            conn.settimeout(60)
            with self.cond:
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, addr), daemon=True)
            t.start()
            self.threads.append(t)

    def _reply_for(self, verb, arg, sess, default):
        with self.cond:
            r = self.replies.get(verb)
        if callable(r):
            r = r(arg, sess)
        return default if r is None else r

    def _serve(self, conn, addr):
        sess = PeerSession(addr)
        with self.cond:
            self.sessions.append(sess)
            self.cond.notify_all()
        io = _PeerIO(conn, self.stopping)
        try:
            self._dialogue(io, sess)
        except (OSError, EOFError, ssl.SSLError):
            pass
        finally:
            with self.cond:
                sess.closed = True
                self.cond.notify_all()
            io.close()

    def _send(self, io, sess, reply):
        if reply == DROP:
            raise EOFError("dropped")
        if reply == STALL:
            sess.stalled = True
            with self.cond:
                self.cond.notify_all()
            io.drain_until_closed()
            raise EOFError("stalled")
        io.send(reply.encode() + b"\r\n")

    def _dialogue(self, io, sess):
        self._send(io, sess, self._reply_for("CONNECT", "", sess,
                                             "220 %s ESMTP scripted peer" % self.name))
        msg = None
        while True:
            line = io.line()
            text = line.decode("utf-8", "replace")
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            if verb in ("MAIL", "RCPT") and self.peek > 0:
                time.sleep(self.peek)
                io.pull()
            with self.cond:
                sess.lines.append(text)
                if verb != "BDAT":
                    sess.early.append((verb, io.pending() > 0))
                self.cond.notify_all()
            if verb == "EHLO":
                if self.helo_only:
                    r = "502 5.5.2 Error: command not recognized"
                else:
                    ext = list(self.extensions)
                    if self.tls is not None and not sess.tls:
                        ext.append("STARTTLS")
                    r = "\r\n".join(["250-" + self.name] + ["250-" + e for e in ext[:-1]] +
                                    ["250 " + e for e in ext[-1:]]) if ext else "250 " + self.name
                self._send(io, sess, self._reply_for("EHLO", arg, sess, r))
            elif verb == "HELO":
                self._send(io, sess, self._reply_for("HELO", arg, sess, "250 " + self.name))
            elif verb == "STARTTLS" and self.tls is not None and not sess.tls:
                r = self._reply_for("STARTTLS", arg, sess, "220 2.0.0 Ready to start TLS")
                self._send(io, sess, r)
                if r.startswith("220"):
                    sess.plain_after_starttls = io.take_pending()
                    io.start_tls(self.tls)
                    sess.tls = True
                    sess.tls_version = io.sock.version()
            elif verb == "MAIL":
                r = self._reply_for("MAIL", arg, sess, "250 2.1.0 Ok")
                if r.startswith("2"):
                    m = re.match(r"(?i)^FROM:(.*)$", arg)
                    msg = PeerMessage(m.group(1).strip() if m else arg)
                    with self.cond:
                        sess.messages.append(msg)
                self._send(io, sess, r)
            elif verb == "RCPT":
                m = re.match(r"(?i)^TO:<([^>]*)>", arg)
                if msg is None:
                    r = "503 5.5.1 Error: need MAIL command"
                else:
                    r = self._reply_for("RCPT", m.group(1) if m else arg, sess, "250 2.1.5 Ok")
                if r not in (DROP, STALL) and r.startswith("2") and m:
                    msg.rcpts.append(m.group(1))
                self._send(io, sess, r)
            elif verb == "DATA":
                if msg is None or not msg.rcpts:
                    self._send(io, sess, "503 5.5.1 Error: need RCPT command")
                    continue
                r = self._reply_for("DATA", arg, sess, "354 End data with <CR><LF>.<CR><LF>")
                self._send(io, sess, r)
                if not r.startswith("354"):
                    continue
                raw = io.data_content()
                msg.raw, msg.via = raw, "DATA"
                msg.data = _unstuff(raw)
                self._end_message(io, sess, msg)
                msg = None
            elif verb == "BDAT":
                m = re.match(r"(?i)^(\d+)(\s+LAST)?\s*$", arg)
                if not m:
                    self._send(io, sess, "501 5.5.4 Syntax: BDAT size [LAST]")
                    continue
                chunk = io.exactly(int(m.group(1)))
                with self.cond:
                    sess.early.append(("BDAT", io.pending() > 0))
                if msg is None or not msg.rcpts:
                    self._send(io, sess, "503 5.5.1 Error: need RCPT command")
                    continue
                msg.via = "BDAT"
                msg.chunks += 1
                msg.data += chunk
                msg.raw += chunk
                if m.group(2):
                    self._end_message(io, sess, msg)
                    msg = None
                else:
                    self._send(io, sess, self._reply_for(
                        "BDAT", arg, sess, "250 2.0.0 %d octets received" % len(chunk)))
            elif verb == "RSET":
                msg = None
                self._send(io, sess, self._reply_for("RSET", arg, sess, "250 2.0.0 Ok"))
            elif verb == "NOOP":
                self._send(io, sess, "250 2.0.0 Ok")
            elif verb == "QUIT":
                self._send(io, sess, self._reply_for("QUIT", arg, sess, "221 2.0.0 Bye"))
                return
            else:
                self._send(io, sess, "500 5.5.2 Error: command not recognized")

    def _end_message(self, io, sess, msg):
        r = self._reply_for("EOM", "", sess, "250 2.0.0 Ok: queued as %s" % uuid.uuid4().hex[:10])
        if r not in (DROP, STALL):
            msg.reply = r
            msg.time = time.monotonic()
        with self.cond:
            self.cond.notify_all()
        self._send(io, sess, r)

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.cond:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(5)
        for t in self.threads:
            t.join(5)


def _unstuff(raw):
    return b"".join(l[1:] if l.startswith(b".") else l for l in raw.splitlines(keepends=True))


class _PeerIO:
    """Buffered line/octet reading for ScriptPeer (plain or TLS)."""

    def __init__(self, sock, stopping):
        self.sock = sock
        self.buf = b""
        self.stopping = stopping

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("client closed")
        self.buf += chunk

    def pending(self):
        return len(self.buf)

    def take_pending(self):
        b, self.buf = self.buf, b""
        return b

    def pull(self):
        """Whatever the client has sent by now, without waiting."""
        self.sock.setblocking(False)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        finally:
            self.sock.settimeout(60)

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 100000:
                raise EOFError("line too long")
            self._recv()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, n):
        while len(self.buf) < n:
            self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def data_content(self):
        """DATA content up to CRLF.CRLF (the end not included, CRLF before it is)."""
        if self.buf.startswith(b".\r\n"):
            self.buf = self.buf[3:]
            return b""
        while True:
            i = self.buf.find(b"\r\n.\r\n")
            if i >= 0:
                data, self.buf = self.buf[:i + 2], self.buf[i + 5:]
                return data
            self._recv()

    def send(self, data):
        self.sock.sendall(data)

    def start_tls(self, ctx):
        self.sock = ctx.wrap_socket(self.sock, server_side=True)

    def drain_until_closed(self):
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                if not self.sock.recv(65536):
                    return
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except OSError:
                return

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---- smtp-sink ----

class SinkPeer:
    """Postfix's smtp-sink on ip:25, dumping each message (with X-Mail-Args,
    X-Rcpt-Args) into its own file under dir."""

    def __init__(self, ns, workdir, ip=SINK_IP, flags=()):
        if shutil.which("smtp-sink") is None:
            pytest.skip("smtp-sink is not installed (Debian package postfix)")
        # smtp-sink writes as the user nobody: pytest's directories are closed to it.
        self.dir = Path(tempfile.mkdtemp(prefix="mcrelay-sink-"))
        os.chmod(self.dir, 0o777)
        self.ip = ip
        self.err = open(Path(workdir) / ("sink-%s.log" % self.dir.name), "wb")
        self.proc = subprocess.Popen(
            ns.argv("smtp-sink", "-u", "nobody", "-h", "mx.sink.test", "-d",
                    str(self.dir) + "/%H%M%S.", *flags, "%s:25" % ip, "64"),
            stdout=subprocess.DEVNULL, stderr=self.err)
        wait_listening(ns, 25, ip, self.proc, what="smtp-sink")

    def dumps(self):
        out = []
        for p in sorted(self.dir.iterdir()):
            data = p.read_bytes()
            out.append(data)
        return out

    def complete(self):
        """Dumps of complete transactions (smtp-sink writes the file as it goes;
        a dump ends with the empty line it appends)."""
        return [d for d in self.dumps() if d.endswith(b"\n\n")]

    def stop(self):
        stop_process(self.proc)
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def sink_fields(dump):
    """(smtp-sink's fields {name: [values]}, the message) of one dump."""
    head, _, rest = dump.partition(b"\nReceived: ")
    fields = {}
    for line in head.decode("utf-8", "replace").split("\n"):
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k, []).append(v.strip())
    # The Received header smtp-sink adds takes three lines.
    msg = rest.split(b"\n", 3)[3] if rest.count(b"\n") >= 3 else b""
    return fields, msg


# ---- a private Postfix ----

POSTFIX_MASTER_CF = """\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
"""


class PostfixPeer:
    """A private Postfix instance (never the system's): main.cf and
    master.cf in DIR/etc, queue in DIR/queue, `master -d` in the foreground
    inside the namespace. Every message is put on hold (access action HOLD)
    so that it stays in DIR/queue/hold, where held() reads it with postcat."""

    def __init__(self, ns, tls):
        for prog in ("postconf", "postcat"):
            if shutil.which(prog) is None:
                pytest.skip("Postfix is not installed (Debian package postfix)")
        self.ns = ns
        self.proc = None
        daemon_dir = subprocess.run(["postconf", "-dh", "daemon_directory"], capture_output=True,
                                    text=True).stdout.strip() or "/usr/lib/postfix/sbin"
        self.master = Path(daemon_dir) / "master"
        # Postfix's daemons run as the user postfix: the directory must be
        # reachable by it (pytest's temporary directories are not).
        self.dir = Path(tempfile.mkdtemp(prefix="mcrelay-postfix-"))
        os.chmod(self.dir, 0o755)
        self.etc, self.queue, self.data = self.dir / "etc", self.dir / "queue", self.dir / "data"
        for d in (self.etc, self.queue, self.data):
            d.mkdir()
        shutil.copy(tls["cert"], self.etc / "cert.pem")
        shutil.copy(tls["key"], self.etc / "key.pem")
        shutil.chown(self.data, "postfix")
        self.maillog = self.dir / "maillog"
        (self.etc / "main.cf").write_text("""\
# private Postfix instance of mailcell's relay tests
compatibility_level = 3.6
queue_directory = {q}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.pf.test
mydomain = pf.test
myorigin = $myhostname
mydestination =
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 0.0.0.0/0
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = check_client_access static:HOLD, permit
smtpd_tls_security_level = may
smtpd_tls_cert_file = {etc}/cert.pem
smtpd_tls_key_file = {etc}/key.pem
smtputf8_enable = yes
message_size_limit = 10240000
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file = {log}
maillog_file_prefixes = {dir}
""".format(q=self.queue, data=self.data, etc=self.etc, log=self.maillog, dir=self.dir))
        services = []
        for domain, (ip, opts) in sorted(PF_SERVICES.items()):
            services.append("%s:25 inet n - n - - smtpd%s" % (
                ip, "".join(" -o %s=%s" % kv for kv in sorted(opts.items()))))
        (self.etc / "master.cf").write_text("\n".join(services) + "\n" + POSTFIX_MASTER_CF)
        try:
            # `postfix check` creates the queue directories with their owners.
            r = subprocess.run(["postfix", "-c", str(self.etc), "check"], capture_output=True,
                               text=True, timeout=60)
            if r.returncode != 0 or not (self.queue / "hold").is_dir():
                raise RuntimeError("postfix check failed (%s): %s" % (r.returncode, r.stderr))
            self.log = open(self.dir / "master.out", "wb")
            self.proc = subprocess.Popen(ns.argv(self.master, "-c", self.etc, "-d"),
                                         stdout=self.log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
            for ip, _ in PF_SERVICES.values():
                wait_listening(ns, 25, ip, self.proc, what="postfix master")
        except Exception:
            self.stop()
            raise

    def held(self):
        """Every message in the hold queue: [(envelope text, content bytes with CRLF)]."""
        out = []
        hold = self.queue / "hold"
        for p in sorted(hold.iterdir()) if hold.is_dir() else []:
            env = subprocess.run(["postcat", "-c", str(self.etc), "-e", str(p)],
                                 capture_output=True, timeout=30).stdout.decode("utf-8", "replace")
            content = subprocess.run(["postcat", "-c", str(self.etc), "-bh", str(p)],
                                     capture_output=True, timeout=30).stdout
            out.append((env, content.replace(b"\n", b"\r\n")))
        return out

    def held_for(self, rcpt, n=1, timeout=10):
        """The held messages for recipient rcpt, once there are n of them."""
        deadline = time.monotonic() + timeout
        while True:
            got = [(e, c) for e, c in self.held() if re.search(
                r"(?m)^(original_)?recipient: %s$" % re.escape(rcpt), e)]
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def log_lines(self, pattern=""):
        try:
            text = self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [l for l in text.splitlines() if pattern in l]

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, 20, group=True)
            self.proc = None
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postfix(relaylab):
    """The lab's private Postfix (started at first use, stopped with the lab)."""
    if relaylab.postfix is None:
        relaylab.postfix = PostfixPeer(relaylab.ns, relaylab.tls)
    return relaylab.postfix


# ---- another mailcell as the receiving side ----

RX_DOMAIN = "remote.test"
RX_USER, RX_PW = "rx@remote.test", "rx secret"


class MailcellPeer:
    """bin/smtp-session (port 25 mode) behind systemd-socket-activate on
    RX_IP:25, with its own database holding remote.test and rx@remote.test."""

    def __init__(self, lab, tmp, **keys):
        self.lab = lab
        self.dbname = "relayrx_" + uuid.uuid4().hex[:12]
        self.db = lab.mongo[self.dbname]
        self.conf = tmp / "rx.conf"
        keys.setdefault("hostname", "mx.remote.test")
        keys.setdefault("relay_trigger", "")
        self.conf.write_text(conf_text(lab.uri, self.dbname, **keys))
        self.mailcell = Mailcell(self.conf)
        self.mailcell.ok("domain", "add", RX_DOMAIN)
        self.mailcell.ok("user", "add", RX_USER, input=RX_PW + "\n")
        self.log = open(tmp / "rx-server.log", "ab")
        self.proc = subprocess.Popen(
            lab.ns.argv("systemd-socket-activate", "-l", "%s:25" % RX_IP, "--inetd", "-a",
                        BIN / "smtp-session", "-c", self.conf),
            stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True,
            env=dict(os.environ, MONGOC_DISABLE_SHM="1"))
        wait_listening(lab.ns, 25, RX_IP, self.proc, what="systemd-socket-activate")

    def messages(self, mailbox=RX_USER):
        return [stored_message(self.db, d) for d in
                self.db.messages.find({"mailbox": mailbox}).sort("received", 1)]

    def wait_messages(self, n=1, timeout=10, mailbox=RX_USER):
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages(mailbox)
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def stop(self):
        stop_process(self.proc, group=True)
        self.log.close()
        try:
            self.lab.mongo.drop_database(self.dbname)
        except Exception:
            pass


def stored_message(db, doc):
    """A stored message (mailbox or queue entry): its head + the GridFS body."""
    import gridfs
    bucket = gridfs.GridFSBucket(db, bucket_name="bodies")
    return doc.get("head", "").encode() + bucket.open_download_stream(doc["body"]).read()


# ---- configuration ----

def conf_text(uri, database, **keys):
    base = {
        "mongodb_uri": uri,
        "database": database,
        "write_concern": "1",
        "db_timeout": "5",
        "log_target": "stderr",
        "hostname": HOSTNAME,
        "allow_plaintext_auth": "yes",
        "inbound_checks": "no",
        "idle_timeout": "30",
        "max_message_size": "10M",
        "templates_dir": str(TOP / "templates"),
        # Tests that retry set their own short schedule.
        "retry_schedule": "1h",
        "relay_timeout": "3",
        "claim_lease": "60",
    }
    base.update(keys)
    return "# relay e2e test configuration\n" + "".join(
        "%s = %s\n" % (k, v) for k, v in base.items() if v is not None)


# ---- messages ----

def message(subject="relay test", body=b"hello from the relay tests\r\n", sender=ALICE,
            to="user@peer.test", extra=b"", msgid=None):
    if isinstance(body, str):
        body = body.encode()
    if isinstance(extra, str):
        extra = extra.encode()
    msgid = msgid or "%s@example.org" % uuid.uuid4().hex
    h = ("From: Alice <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s>\r\n"
         % (sender, to, subject, formatdate(localtime=False), msgid)).encode()
    return h + extra + b"\r\n" + body


def body_of(msg):
    """The part of a message after its header."""
    return msg.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in msg else b""


def header_of(msg):
    return msg.split(b"\r\n\r\n", 1)[0]


def parse(msg):
    return email.message_from_bytes(msg, policy=email.policy.compat32)


class SubmitError(AssertionError):
    pass


# ---- the per-test environment ----

class RelayEnv:
    def __init__(self, lab, tmp_path):
        self.lab = lab
        self.tmp = tmp_path
        self.dbname = "relay_" + uuid.uuid4().hex[:12]
        self.db = lab.mongo[self.dbname]
        self.trigger = tmp_path / "relay.trigger"
        self.nconf = 0
        self.conf = self.write_conf()
        self.mailcell = Mailcell(self.conf)
        self.session_log = tmp_path / "smtp-session.stderr"
        self.worker_log = tmp_path / "relay-worker.stderr"
        self.peers = []
        self.procs = []
        self.env = dict(os.environ, MONGOC_DISABLE_SHM="1")
        self.mailcell.ok("domain", "add", DOMAIN)
        self.mailcell.ok("user", "add", ALICE, "--name", "Alice", input=ALICE_PW + "\n")
        self.mailcell.ok("user", "add", BOB, "--name", "Bob", input=BOB_PW + "\n")

    def write_conf(self, **keys):
        """A config file for this test's database; keys override the defaults
        (conf_text), e.g. write_conf(retry_schedule="2s 4s")."""
        keys.setdefault("relay_trigger", str(self.trigger))
        self.nconf += 1
        path = self.tmp / ("relay%d.conf" % self.nconf)
        path.write_text(conf_text(self.lab.uri, self.dbname, **keys))
        return path

    def use_conf(self, **keys):
        """Make a config with these keys this test's default one."""
        self.conf = self.write_conf(**keys)
        self.mailcell = Mailcell(self.conf)
        return self.conf

    # --- peers ---

    def peer(self, **kw):
        p = ScriptPeer(**kw)
        self.peers.append(p)
        return p

    def sink(self, flags=(), ip=SINK_IP):
        s = SinkPeer(self.lab.ns, self.tmp, ip, flags)
        self.peers.append(s)
        return s

    def mailcell_peer(self, **keys):
        p = MailcellPeer(self.lab, self.tmp, **keys)
        self.peers.append(p)
        return p

    # --- putting mail into the queue, like a user ---

    def _session(self, args, conf=None):
        with open(self.session_log, "ab") as err:
            p = SmtpProc([str(BIN / "smtp-session"), "-c", str(conf or self.conf),
                          "--remote-ip", CLIENT_IP, *args], env=self.env, stderr=err)
        self.procs.append(p)
        return p

    def queue_ids(self):
        """Ids of the queue items, delivered ones (outbound_done) included: a
        worker running alongside may deliver a new item at once."""
        return {str(d["_id"]) for c in (self.db.outbound, self.db.outbound_done)
                for d in c.find({}, {"_id": 1})}

    def submit(self, rcpts, msg=None, sender=ALICE, password=ALICE_PW, params="", bdat=False,
               conf=None, user=None):
        """One message through smtp-session --submission (AUTH PLAIN); the
        new queue item's id. msg defaults to message(to=first recipient)."""
        ids = self.submit_many([(rcpts, msg, params)], sender, password, bdat, conf, user)
        return ids[0]

    def submit_many(self, txns, sender=ALICE, password=ALICE_PW, bdat=False, conf=None,
                    user=None):
        """Several transactions [(rcpts, msg, mail params)] in one session;
        the new queue items' ids in order."""
        s = self._session(["--submission"], conf)
        ids = []
        try:
            s.reply().check(220)
            s.ehlo("client.test")
            s.cmd("AUTH PLAIN " + plain_token(user or sender, password)).check(235)
            for rcpts, msg, params in txns:
                rcpts = [rcpts] if isinstance(rcpts, str) else list(rcpts)
                if msg is None:
                    msg = message(to=rcpts[0], sender=sender)
                before = self.queue_ids()
                final = self._transaction(s, sender, rcpts, msg, params, bdat)
                if final.code != 250:
                    raise SubmitError("message not accepted: %r\n%s" % (final, self.log()))
                new = self.queue_ids() - before
                assert len(new) == 1, "one queue item expected, got %r" % new
                ids.append(new.pop())
            s.cmd("QUIT")
            s.wait()
        finally:
            s.kill()
        return ids

    def inject(self, sender, rcpts, msg, params=""):
        """One message through smtp-session in port 25 mode (no AUTH): for
        local recipients and forwarding aliases. Returns the new queue item
        ids (a set: none when nothing was queued)."""
        rcpts = [rcpts] if isinstance(rcpts, str) else list(rcpts)
        s = self._session([])
        before = self.queue_ids()
        try:
            s.reply().check(220)
            s.ehlo("client.test")
            final = self._transaction(s, sender, rcpts, msg, params, False)
            if final.code != 250:
                raise SubmitError("message not accepted: %r\n%s" % (final, self.log()))
            s.cmd("QUIT")
            s.wait()
        finally:
            s.kill()
        return self.queue_ids() - before

    @staticmethod
    def _transaction(s, sender, rcpts, msg, params, bdat):
        r = s.cmd("MAIL FROM:<%s>%s" % (sender, (" " + params) if params else ""))
        if r.code != 250:
            return r
        for rc in rcpts:
            r = s.cmd("RCPT TO:<%s>" % rc)
            if r.code != 250:
                s.cmd("RSET")
                return r
        if bdat:
            s.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
            return s.reply()
        r = s.cmd("DATA")
        if r.code != 354:
            return r
        if not msg.endswith(b"\r\n"):
            msg += b"\r\n"
        s.send(dot_stuff(msg) + b".\r\n")
        return s.reply()

    # --- the worker ---

    def worker_argv(self, *args, conf=None):
        return self.lab.ns.argv(BIN / "relay-worker", "-c", conf or self.conf, *args)

    def worker(self, *args, conf=None, timeout=60, check=True):
        """bin/relay-worker --once (or other args) inside the namespace."""
        args = args or ("--once",)
        with open(self.worker_log, "ab") as err:
            err.write(b"---- relay-worker %s\n" % " ".join(args).encode())
            err.flush()
            r = subprocess.run(self.worker_argv(*args, conf=conf), stdout=subprocess.PIPE,
                               stderr=err, timeout=timeout, env=self.env)
        if check:
            assert r.returncode == 0, "relay-worker exited with %d:\n%s" % (
                r.returncode, self.log()[-3000:])
        return r

    def worker_proc(self, *args, conf=None, env=None):
        """bin/relay-worker as a background process (stopped at the end)."""
        err = open(self.worker_log, "ab")
        err.write(b"---- relay-worker %s (background)\n" % " ".join(args).encode())
        err.flush()
        p = subprocess.Popen(self.worker_argv(*args, conf=conf), stdout=subprocess.DEVNULL,
                             stderr=err, env=dict(self.env, **(env or {})))
        err.close()
        self.procs.append(p)
        return p

    def log(self):
        out = ""
        for p in (self.session_log, self.worker_log):
            try:
                out += p.read_text(errors="replace")
            except FileNotFoundError:
                pass
        return out

    # --- the queue ---

    def item(self, qid):
        """The queue item, or once delivered its record in outbound_done."""
        from bson import ObjectId
        return (self.db.outbound.find_one({"_id": ObjectId(qid)}) or
                self.db.outbound_done.find_one({"_id": ObjectId(qid)}))

    def items(self):
        """Every queue item, delivered ones (outbound_done) included."""
        return list(self.db.outbound.find({})) + list(self.db.outbound_done.find({}))

    def state(self, qid):
        return self.item(qid)["state"]

    def wait_state(self, qid, state, timeout=10):
        """Waits until the item is in that state (a worker running alongside); the state."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(qid)
            if st == state or time.monotonic() > deadline:
                return st
            time.sleep(0.05)

    def rcpt(self, qid, address):
        for r in self.item(qid)["recipients"]:
            if r["address"] == address:
                return r
        raise AssertionError("no recipient %s in %s" % (address, qid))

    def queue_list(self):
        """`mailcell queue list` as rows of fields."""
        return [l.split("\t") for l in self.mailcell.ok("queue", "list").splitlines()]

    def show(self, qid):
        return self.mailcell.ok("queue", "show", qid)

    def show_json(self, qid):
        import json
        return json.loads(self.mailcell.ok("queue", "show", qid, "--json"))

    def backdate(self, qid, seconds):
        """Pretend the item was queued `seconds` earlier (for lifetime and
        delay tests, whose configured minimums are long)."""
        from datetime import timedelta
        it = self.item(qid)
        self.db.outbound.update_one({"_id": it["_id"]}, {"$set": {
            "created": it["created"] - timedelta(seconds=seconds)}})

    # --- local mailboxes ---

    def mailbox(self, address=ALICE):
        """The messages of a local mailbox, oldest first (head + body)."""
        return [stored_message(self.db, d) for d in
                self.db.messages.find({"mailbox": address}).sort("received", 1)]

    def dsns(self, address=ALICE):
        return [m for m in self.mailbox(address) if b"multipart/report" in header_of(m)]

    # --- DKIM ---

    def dkim_publish(self, domain=DOMAIN, selector="sel1"):
        """mailcell dkim keygen; the printed record served by the test DNS."""
        out = self.mailcell.ok("dkim", "keygen", domain, selector)
        m = re.match(r"^(\S+?)\.?\s+(?:\d+\s+)?IN\s+TXT\s+(.*)$", out.strip(), re.S)
        assert m, "unexpected keygen output %r" % out
        data = "".join(re.findall(r'"([^"]*)"', m.group(2)))
        self.lab.dns.publish({m.group(1): data})
        return m.group(1), data

    def check_sanitizer_reports(self):
        for path in (self.session_log, self.worker_log):
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
                if isinstance(p, subprocess.Popen):
                    stop_process(p)
                else:
                    p.kill()
            except Exception:
                pass
        for p in self.peers:
            try:
                p.stop()
            except Exception:
                pass
        try:
            self.lab.mongo.drop_database(self.dbname)
        except Exception:
            pass


@pytest.fixture
def relay(relaylab, tmp_path):
    """A test inside the lab's namespace with its own database (RelayEnv)."""
    with relaylab.ns.entered():
        env = RelayEnv(relaylab, tmp_path)
        try:
            yield env
        finally:
            env.close()
        env.check_sanitizer_reports()


# ---- DSNs ----

class DSN:
    """A delivery status notification (RFC 3464), parsed with `email`."""

    def __init__(self, data):
        self.data = data
        self.msg = parse(data)
        self.parts = self.msg.get_payload() if self.msg.is_multipart() else []

    @property
    def content_type(self):
        return self.msg.get_content_type()

    def human(self):
        """The first part: multipart/alternative (text/plain, text/html)."""
        return self.parts[0]

    def text(self):
        return _part_text(self._alt("text/plain"))

    def html(self):
        return _part_text(self._alt("text/html"))

    def _alt(self, ctype):
        alt = self.human()
        for p in alt.walk():
            if p.get_content_type() == ctype:
                return p
        raise AssertionError("no %s in the DSN" % ctype)

    def status_part(self):
        (p,) = [p for p in self.parts if p.get_content_type() == "message/delivery-status"]
        return p

    def per_message(self):
        return self.status_part().get_payload()[0]

    def per_recipient(self):
        """One Message (a header block) per recipient."""
        return self.status_part().get_payload()[1:]

    def recipients(self):
        """The Final-Recipient addresses (RFC 6533 utf-8 ones decoded)."""
        return [final_recipient(r.get("Final-Recipient", "")) for r in self.per_recipient()]

    def recipient(self, address):
        for r in self.per_recipient():
            if final_recipient(r.get("Final-Recipient", "")).lower() == address.lower():
                return r
        raise AssertionError("no Final-Recipient %s in %r" % (
            address, [r.get("Final-Recipient") for r in self.per_recipient()]))

    def headers_part(self):
        (p,) = [p for p in self.parts if p.get_content_type() == "text/rfc822-headers"]
        payload = p.get_payload(decode=True)
        return payload if payload is not None else p.get_payload().encode()


def final_recipient(value):
    """The address of a Final-Recipient field: "rfc822; a@b", or RFC 6533's
    "utf-8; j\\x{F6}rg@b" with its \\x{HEX} escapes decoded."""
    kind, _, addr = unfold(value).partition(";")
    addr = addr.strip()
    if kind.strip().lower() == "utf-8":
        addr = re.sub(r"\\x\{([0-9A-Fa-f]{1,6})\}", lambda m: chr(int(m.group(1), 16)), addr)
    return addr


def _part_text(part):
    raw = part.get_payload(decode=True)
    return raw.decode(part.get_content_charset() or "utf-8", "replace")


def unfold(value):
    return re.sub(r"\r?\n[ \t]+", " ", value or "").strip()
