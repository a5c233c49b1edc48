"""The test harness of the SPF/DKIM/DMARC end-to-end tests (test_auth_*.py).

libspf2 answers `pass` for every 127.0.0.0/8 client, so the checks need
non-loopback client addresses and a DNS server that answers for test zones.
The session-wide `authlab` builds, and removes again at the end:

- a network namespace `mcauth-XXXXXXXX` whose `lo` carries 192.0.2.10 and
  192.0.2.20 (clients) and 192.0.2.1 (the server, for socket tests), with
  /etc/netns/NAME/resolv.conf pointing at 127.0.0.1, so that every program
  started with `ip netns exec NAME ...` resolves through the test DNS server;
- dnsmasq (Debian's dnsmasq-base) inside it, serving the zones of ZONE below
  (`local=/test/`: other names under .test are NXDOMAIN); names under
  servfail.test are forwarded to a responder that answers every query with
  SERVFAIL, names under stall.test to a socket that reads and never answers;
- a mailcell-devdb inside it (processes in the namespace cannot reach the
  host's loopback), and a pymongo client for it.

pytest itself enters the namespace (setns(CLONE_NEWNET) on its main thread)
for the duration of each test using the `auth` fixture, so its own sockets
(pymongo, smtplib) and the programs it starts without `ip netns exec` (pop3-
session, mailcell) live there too; smtp-session, which resolves names, is
always started through `ip netns exec` to get the namespace's resolv.conf.

The `auth` fixture gives each test its own database with the local domain
mx.test and the user rcpt@mx.test, a config file (hostname mail.test), and:
- auth.send(msg, sender, ...): one transaction on bin/smtp-session (pipes,
  --remote-ip), command by command, replies kept (Txn);
- auth.fetch(): what the mailbox holds, read through bin/pop3-session RETR,
  each as a Stored (headers, our Authentication-Results parsed);
- auth.server(): smtp-session behind systemd-socket-activate on
  192.0.2.1:PORT inside the namespace, for real clients (smtplib, swaks);
- auth.messages(), auth.dmarc_records(): the store, read with pymongo.
"""
import atexit
import base64
import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from email.utils import formatdate
from pathlib import Path

import pytest

from conftest import BIN, DEVDB, Mailcell
from smtp_helpers import SmtpProc, dot_stuff

HOSTNAME = "mail.test"           # our hostname: authserv-id of Authentication-Results
RCPT_DOMAIN = "mx.test"          # the local domain of every test database
RCPT = "rcpt@mx.test"
RCPT_PW = "rcpt secret"
CLIENT_IP = "192.0.2.10"         # the usual client
OTHER_IP = "192.0.2.20"          # a client no SPF record names
SERVER_IP = "192.0.2.1"          # where socket servers listen
SERVFAIL_PORT = 5398
STALL_PORT = 5399
DEVDB_PORT = 27017               # inside the namespace
CLONE_NEWNET = 0x40000000

# DKIM keys made for the session: (domain, selector); the public halves are
# published in the zone, the private ones are in authlab.keys.
DKIM_KEYS = [
    ("dkim.test", "s1"),
    ("dkim2.test", "s2"),
    ("dmarc-dkim.test", "s1"),
    ("sub.adkimr.test", "s1"),
    ("sub.adkims.test", "s1"),
    ("report.test", "s1"),
]


def spf_chain(top, total):
    """An SPF record at `top` that pulls in two includes and, over the whole
    chain, `total` DNS-querying mechanisms (the includes count) before
    ip4:CLIENT_IP matches at the end of the last one."""
    last = total - 2 - 3
    hosts = iter(range(1, 20))
    return {
        top: "v=spf1 a:h%d.dns.test include:i1.%s -all" % (next(hosts), top),
        "i1." + top: "v=spf1 a:h%d.dns.test a:h%d.dns.test include:i2.%s -all"
                     % (next(hosts), next(hosts), top),
        "i2." + top: "v=spf1 %s ip4:%s -all"
                     % (" ".join("a:h%d.dns.test" % next(hosts) for _ in range(last)), CLIENT_IP),
    }


# name -> TXT data (one string; split into <=255-octet strings when published)
TXT = {
    # SPF: one domain per result
    "spf-pass.test": "v=spf1 ip4:%s -all" % CLIENT_IP,
    "spf-fail.test": "v=spf1 ip4:192.0.2.99 -all",
    "spf-softfail.test": "v=spf1 ip4:192.0.2.99 ~all",
    "spf-neutral.test": "v=spf1 ip4:192.0.2.99 ?all",
    "spf-none.test": "site-verification=0123456789",           # a TXT, but no SPF
    "spf-badip.test": "v=spf1 ip4:192.0.2.300 -all",             # syntax: bad address
    "spf-badmech.test": "v=spf1 frobnicate:x.test ip4:%s -all" % CLIENT_IP,  # unknown mechanism
    "helo-pass.test": "v=spf1 ip4:%s -all" % CLIENT_IP,
    "helo-fail.test": "v=spf1 -all",
    "mx-spf.test": "v=spf1 mx -all",
    "spf-ip6.test": "v=spf1 ip6:2001:db8::10 -all",
    "spf-redirect.test": "v=spf1 redirect=spf-pass.test",
    "spf-incfail.test": "v=spf1 include:x.servfail.test ip4:%s -all" % CLIENT_IP,
    "spf-incstall.test": "v=spf1 include:x.stall.test ip4:%s -all" % CLIENT_IP,
    "spf-incnone.test": "v=spf1 include:norecord.test ip4:%s -all" % CLIENT_IP,
    # DMARC
    "dmarc-spf.test": "v=spf1 ip4:%s -all" % CLIENT_IP,
    "_dmarc.dmarc-spf.test": "v=DMARC1; p=reject",
    "bounce-helo.test": "v=spf1 ip4:%s -all" % CLIENT_IP,
    "_dmarc.bounce-helo.test": "v=DMARC1; p=reject",
    "dmarc-dkim.test": "v=spf1 ip4:192.0.2.99 -all",
    "_dmarc.dmarc-dkim.test": "v=DMARC1; p=reject",
    "bounce.relax.test": "v=spf1 ip4:%s -all" % CLIENT_IP,
    "_dmarc.relax.test": "v=DMARC1; p=reject; aspf=r",
    "bounce.strict.test": "v=spf1 ip4:%s -all" % CLIENT_IP,
    "_dmarc.strict.test": "v=DMARC1; p=reject; aspf=s",
    "_dmarc.adkimr.test": "v=DMARC1; p=reject; adkim=r",
    "_dmarc.adkims.test": "v=DMARC1; p=reject; adkim=s",
    "_dmarc.sp.test": "v=DMARC1; p=none; sp=reject",
    "_dmarc.reject.test": "v=DMARC1; p=reject",
    "_dmarc.quar.test": "v=DMARC1; p=quarantine",
    "_dmarc.pnone.test": "v=DMARC1; p=none",
    "_dmarc.pct-reject.test": "v=DMARC1; p=reject; pct=0",
    "_dmarc.pct-quar.test": "v=DMARC1; p=quarantine; pct=0",
    "report.test": "v=spf1 ip4:%s -all" % CLIENT_IP,
    "_dmarc.report.test": "v=DMARC1; p=quarantine; rua=mailto:dmarc@report.test",
}
TXT.update(spf_chain("spf-many.test", 11))
TXT.update(spf_chain("spf-ten.test", 10))

A = {"h%d.dns.test" % i: "198.51.100.%d" % i for i in range(1, 20)}
A.update({
    "norecord.test": "198.51.100.50",
    "spf-none.test": "198.51.100.51",
    "mx1.mx-spf.test": CLIENT_IP,
    "client.test": CLIENT_IP,
    "ready.test": "198.51.100.99",
})
MX = [("mx-spf.test", "mx1.mx-spf.test", 10), (RCPT_DOMAIN, "mail.test", 10)]


def txt_strings(data):
    """One TXT record's data as quoted <=255-octet strings for dnsmasq."""
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
    def __init__(self):
        self.name = "mcauth-" + secrets.token_hex(4)
        self.fd = self.host_fd = None
        self.depth = 0
        self.created = False
        try:
            self._ip("netns", "add", self.name)
            self.created = True
            self._ip("-n", self.name, "link", "set", "lo", "up")
            for addr in (CLIENT_IP, OTHER_IP, SERVER_IP):
                self._ip("-n", self.name, "addr", "add", addr + "/32", "dev", "lo")
            d = Path("/etc/netns") / self.name
            d.mkdir(parents=True, exist_ok=True)
            (d / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
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


def stop_process(proc, timeout=10):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


# ---- the DNS server ----

# Answers every query on SERVFAIL_PORT with SERVFAIL; reads and drops those
# on STALL_PORT.
RESPONDER = r"""
import select, socket, sys
def sock(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    return s
fail, stall = sock(int(sys.argv[1])), sock(int(sys.argv[2]))
print("ready", flush=True)
while True:
    for s in select.select([fail, stall], [], [])[0]:
        q, peer = s.recvfrom(4096)
        if s is stall or len(q) < 12:
            continue
        i = 12
        while i < len(q) and q[i] != 0:
            i += q[i] + 1
        i += 5
        head = q[:2] + bytes([0x80 | (q[2] & 0x79), 0x80 | 2]) + q[4:6] + bytes(6)
        s.sendto(head + q[12:i], peer)
"""


class TestDNS:
    __test__ = False

    def __init__(self, ns, workdir, txt):
        self.ns = ns
        self.txt = txt
        self.dir = Path(workdir)
        self.conf = self.dir / "dnsmasq.conf"
        self.log = self.dir / "dnsmasq.log"
        self.proc = self.responder = None
        self.extra = []
        self.responder_err = open(self.dir / "responder.log", "wb")
        self.responder = subprocess.Popen(
            ns.argv(sys.executable, "-c", RESPONDER, SERVFAIL_PORT, STALL_PORT),
            stdout=subprocess.PIPE, stderr=self.responder_err)
        if self.responder.stdout.readline().strip() != b"ready":
            raise RuntimeError("the SERVFAIL/stall responder did not start")
        self.start()

    def config(self):
        lines = ["# mailcell auth tests: generated", "local=/test/",
                 "server=/servfail.test/127.0.0.1#%d" % SERVFAIL_PORT,
                 "server=/stall.test/127.0.0.1#%d" % STALL_PORT,
                 "cache-size=0", "no-negcache", "log-queries",
                 "log-facility=%s" % self.log]
        for name, data in sorted(self.txt.items()):
            lines.append("txt-record=%s,%s" % (name, txt_strings(data)))
        for name, ip in sorted(A.items()):
            lines.append("host-record=%s,%s" % (name, ip))
        for name, host, pref in MX:
            lines.append("mx-host=%s,%s,%d" % (name, host, pref))
        return "\n".join(lines + self.extra) + "\n"

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

    def restart(self, extra_txt=None):
        """Serve the zones again with these TXT records (name -> data) added."""
        stop_process(self.proc)
        self.extra = ["txt-record=%s,%s" % (n, txt_strings(d))
                      for n, d in sorted((extra_txt or {}).items())]
        self.start()

    @staticmethod
    def query(name, rdtype, lifetime=3.0):
        """Answers (text) from the test server; raises dnspython's exceptions.
        The caller must be inside the namespace."""
        import dns.resolver
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = ["127.0.0.1"]
        r.lifetime = lifetime
        r.timeout = lifetime
        r.retry_servfail = False
        return [a.to_text() for a in r.resolve(name, rdtype, search=False)]

    def stop(self):
        stop_process(self.proc)
        stop_process(self.responder)
        self.responder_err.close()


# ---- the lab: namespace, DNS, database ----

def make_key(path):
    """A 1024-bit RSA key: (private PEM bytes, public key base64 of its DER)."""
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:1024", "-out", str(path)], check=True,
                   capture_output=True, timeout=60)
    der = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True, timeout=60).stdout
    return path.read_bytes(), base64.b64encode(der).decode()


class AuthLab:
    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.ns = NetNS()
        self.dns = self.devdb = self.devdb_log = self.mongo = None
        try:
            self.keys = {}
            txt = dict(TXT)
            for domain, selector in DKIM_KEYS:
                pem, pub = make_key(self.dir / ("%s.%s.pem" % (selector, domain)))
                self.keys[(domain, selector)] = pem
                txt["%s._domainkey.%s" % (selector, domain)] = "v=DKIM1; k=rsa; p=" + pub
            self.dns = TestDNS(self.ns, self.dir, txt)
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
        with self.ns.entered():
            deadline = time.monotonic() + 20
            while True:
                if self.devdb.poll() is not None:
                    raise RuntimeError("mailcell-devdb exited with %s" % self.devdb.returncode)
                try:
                    with socket.create_connection(("127.0.0.1", DEVDB_PORT), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("mailcell-devdb does not listen")
                    time.sleep(0.05)
            self.mongo = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=10000)
            self.mongo.admin.command("ping")

    @property
    def uri(self):
        return "mongodb://127.0.0.1:%d" % DEVDB_PORT

    def close(self):
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
        return "no ip(8)"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode != 0:
        return "ip netns is unavailable: %s" % r.stderr.strip()
    if shutil.which("dnsmasq") is None:
        return "dnsmasq is not installed (Debian package dnsmasq-base)"
    return None


@pytest.fixture(scope="session")
def authlab(tmp_path_factory):
    """One namespace, DNS server and database for all test_auth_* modules
    (each module that imports this fixture shares the same lab)."""
    why = _can_run()
    if why:
        pytest.skip(why)
    if _lab["lab"] is None:
        _lab["lab"] = AuthLab(tmp_path_factory.mktemp("authlab"))
    _lab["users"] += 1
    yield _lab["lab"]
    _lab["users"] -= 1
    if _lab["users"] == 0:
        _lab_cleanup()


# ---- SMTP transactions ----

class Txn:
    """The replies of one transaction (None: the command was not sent)."""

    def __init__(self):
        self.greeting = self.ehlo = self.mail = self.rcpt = self.data = self.final = None
        self.chunks = []
        self.mail_seconds = self.seconds = None
        self.stderr = ""

    @property
    def qid(self):
        m = self.final and re.match(r"2\.0\.0 OK queued as (\S+)$", self.final.lines[-1])
        return m.group(1) if m else None

    def accepted(self):
        assert self.final is not None and self.final.code == 250 and self.qid, \
            "message not accepted: %r\nsession log:\n%s" % (self, self.stderr[-3000:])
        return self

    def __repr__(self):
        return "Txn(mail=%r, rcpt=%r, data=%r, final=%r)" % (self.mail, self.rcpt, self.data,
                                                              self.final)


def message(from_hdr="a@example.test", subject="test", body=b"hello\r\n", extra=b"",
            to=RCPT, from_line=True):
    """A message; from_hdr may be a bare address or a full field value."""
    if isinstance(body, str):
        body = body.encode()
    if isinstance(extra, str):
        extra = extra.encode()
    h = b""
    if from_line:
        fv = from_hdr if "<" in from_hdr else "Sender <%s>" % from_hdr
        h += b"From: " + fv.encode() + b"\r\n"
    h += ("To: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@client.test>\r\n"
          % (to, subject, formatdate(localtime=False), uuid.uuid4().hex)).encode()
    return h + extra + b"\r\n" + body


SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


def dkim_sign(lab, msg, domain, selector, key=None, headers=SIGNED_HEADERS, canon=None):
    """msg with a DKIM-Signature by (domain, selector) prepended."""
    import dkim
    key = key or lab.keys[(domain, selector)]
    kw = {"include_headers": list(headers)}
    if canon is not None:
        kw["canonicalize"] = canon
    sig = dkim.sign(msg, selector.encode(), domain.encode(), key, **kw)
    assert sig.startswith(b"DKIM-Signature:"), sig
    return sig + msg


def b_value(signed):
    """The b= tag of the first DKIM-Signature of a signed message (unfolded)."""
    head = signed.split(b"\r\n\r\n", 1)[0].decode()
    m = re.search(r"(?ms)^DKIM-Signature:.*?(?=^\S|\Z)", head)
    sig = re.sub(r"\s+", "", m.group(0))
    return re.search(r";b=([^;]*)", sig).group(1)


# ---- what was stored ----

def unfold(value):
    return re.sub(r"\r?\n[ \t]+", " ", value).strip()


class AuthResults:
    """One Authentication-Results field value, parsed (RFC 8601)."""

    def __init__(self, raw):
        self.raw = raw
        parts = [p.strip() for p in unfold(raw).split(";")]
        self.authserv_id = parts[0].split()[0] if parts[0] else ""
        self.results = []
        for p in parts[1:]:
            m = re.match(r"^([A-Za-z0-9-]+)\s*=\s*([A-Za-z]+)\s*(?:\(([^)]*)\))?\s*(.*)$", p)
            assert m, "malformed resinfo %r in %r" % (p, raw)
            props = dict(re.findall(r'([A-Za-z0-9-]+\.[A-Za-z0-9_.-]+)=("[^"]*"|[^\s;]+)',
                                    m.group(4)))
            self.results.append({"method": m.group(1), "result": m.group(2),
                                 "comment": m.group(3), "props": props, "text": p})

    def of(self, method):
        return [r for r in self.results if r["method"] == method]

    def one(self, method):
        got = self.of(method)
        assert len(got) == 1, "expected one %s result in %r" % (method, self.raw)
        return got[0]

    def __repr__(self):
        return "AuthResults(%r)" % unfold(self.raw)


class Stored:
    """A message as the mailbox shows it (RETR)."""

    def __init__(self, data):
        self.data = data
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        self.head = head
        self.fields = []                        # (name, raw value with folding)
        for line in head.split("\r\n"):
            if line[:1] in (" ", "\t") and self.fields:
                n, v = self.fields[-1]
                self.fields[-1] = (n, v + "\r\n" + line)
            elif ":" in line:
                n, v = line.split(":", 1)
                self.fields.append((n, v.lstrip(" ")))

    def names(self):
        return [n.lower() for n, _ in self.fields]

    def values(self, name):
        return [v for n, v in self.fields if n.lower() == name.lower()]

    def auth_results(self):
        """Every Authentication-Results, top first, parsed."""
        return [AuthResults(v) for v in self.values("Authentication-Results")]

    def ours(self):
        """Our Authentication-Results: the top one, naming HOSTNAME."""
        ar = self.auth_results()
        assert ar, "no Authentication-Results in:\n%s" % self.head
        assert ar[0].authserv_id == HOSTNAME, ar[0]
        for r in ar[0].results:
            assert r["result"] == r["result"].lower(), "result words are lower-case: %r" % ar[0]
        return ar[0]

    def received_spf(self):
        """(result, comment, {key: value}) of the Received-SPF field."""
        (v,) = self.values("Received-SPF")
        v = unfold(v)
        m = re.match(r"^([a-z]+)\s+\((.*)\)\s+(.*)$", v)
        assert m, "malformed Received-SPF %r" % v
        kv = {}
        for part in m.group(3).split(";"):
            if "=" in part:
                k, val = part.strip().split("=", 1)
                kv[k] = val
        return m.group(1), m.group(2), kv

    def __repr__(self):
        return "Stored(%r...)" % self.data[:600]


def pop3_retr_all(conf, user, password, count):
    """RETR 1..count through bin/pop3-session; the messages' octets."""
    script = "USER %s\r\nPASS %s\r\n" % (user, password)
    script += "".join("RETR %d\r\n" % i for i in range(1, count + 1)) + "QUIT\r\n"
    r = subprocess.run([str(BIN / "pop3-session"), "-c", str(conf), "--remote-ip", CLIENT_IP],
                       input=script.encode(), capture_output=True, timeout=60)
    out = r.stdout
    lines = out.split(b"\r\n")
    assert lines[0].startswith(b"+OK") and lines[1].startswith(b"+OK") and \
        lines[2].startswith(b"+OK"), "POP3 login failed: %r" % out[:500]
    pos = sum(len(l) + 2 for l in lines[:3])
    msgs = []
    for _ in range(count):
        end = out.index(b"\r\n", pos)
        first = out[pos:end]
        assert first.startswith(b"+OK"), "RETR failed: %r" % first
        stop = out.index(b"\r\n.\r\n", end)
        body = out[end + 2:stop + 2]
        msgs.append(b"".join(l[1:] if l.startswith(b".") else l
                             for l in body.splitlines(keepends=True)))
        pos = stop + 5
    return msgs


class AuthEnv:
    def __init__(self, lab, tmp_path):
        self.lab = lab
        self.tmp = tmp_path
        self.dbname = "auth_" + uuid.uuid4().hex[:12]
        self.db = lab.mongo[self.dbname]
        self.nconf = 0
        self.conf = self.write_conf()
        self.mailcell = Mailcell(self.conf)
        self.stderr_path = tmp_path / "smtp-session.stderr"
        self.procs = []
        self.servers = []
        self.mailcell.ok("domain", "add", RCPT_DOMAIN)
        self.mailcell.ok("user", "add", RCPT, input=RCPT_PW + "\n")

    def write_conf(self, **keys):
        base = {
            "mongodb_uri": self.lab.uri,
            "database": self.dbname,
            "write_concern": "1",
            "db_timeout": "5",
            "log_target": "stderr",
            "hostname": HOSTNAME,
            "allow_plaintext_auth": "yes",
            "idle_timeout": "30",
            "inbound_checks": "yes",
        }
        base.update(keys)
        self.nconf += 1
        path = self.tmp / ("auth%d.conf" % self.nconf)
        path.write_text("# auth e2e test configuration\n" + "".join(
            "%s = %s\n" % (k, v) for k, v in base.items() if v is not None))
        return path

    # ---- sessions ----

    def argv(self, conf=None, ip=CLIENT_IP, args=()):
        a = [BIN / "smtp-session", "-c", conf or self.conf]
        if ip is not None:
            a += ["--remote-ip", ip]
        return self.lab.ns.argv(*a, *args)

    def session(self, conf=None, ip=CLIENT_IP, args=()):
        with open(self.stderr_path, "ab") as err:
            p = SmtpProc(self.argv(conf, ip, args), stderr=err)
        self.procs.append(p)
        return p

    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send(self, msg, sender, rcpt=RCPT, helo="client.test", ip=CLIENT_IP, conf=None,
             mode="data", chunk=4000, args=(), verb="EHLO", auth=None, timeout=60):
        """One transaction in a new session (replies in a Txn); the message
        goes as DATA (dot-stuffed here) or as BDAT chunks."""
        t = Txn()
        start = time.monotonic()
        s = self.session(conf, ip, args)
        try:
            t.greeting = s.reply(timeout)
            t.ehlo = s.cmd("%s %s" % (verb, helo), timeout)
            if auth is not None:
                s.cmd("AUTH PLAIN " + base64.b64encode(
                    ("\0%s\0%s" % auth).encode()).decode(), timeout).check(235)
            m0 = time.monotonic()
            t.mail = s.cmd("MAIL FROM:<%s>" % sender, timeout)
            t.mail_seconds = time.monotonic() - m0
            if t.mail.code == 250:
                t.rcpt = s.cmd("RCPT TO:<%s>" % rcpt, timeout)
            if t.rcpt is not None and t.rcpt.code == 250:
                if not msg.endswith(b"\r\n"):
                    msg += b"\r\n"
                if mode == "data":
                    t.data = s.cmd("DATA", timeout)
                    if t.data.code == 354:
                        s.send(dot_stuff(msg) + b".\r\n")
                        t.final = s.reply(timeout)
                else:
                    parts = [msg[i:i + chunk] for i in range(0, len(msg), chunk)]
                    for k, part in enumerate(parts):
                        last = k == len(parts) - 1
                        s.send(b"BDAT %d%s\r\n" % (len(part), b" LAST" if last else b"") + part)
                        r = s.reply(timeout)
                        if last:
                            t.final = r
                        else:
                            t.chunks.append(r)
                            if r.code != 250:
                                break
            s.cmd("QUIT", timeout)
            s.wait(timeout)
        finally:
            s.kill()
        t.seconds = time.monotonic() - start
        t.stderr = self.log()
        return t

    def server(self, conf=None, port=2525):
        s = SocketServer(self.lab.ns, self.argv(conf, None)[4:], port, self.tmp / "server.log")
        self.servers.append(s)
        return s

    # ---- what was stored ----

    def messages(self):
        return list(self.db.messages.find({}))

    def dmarc_records(self, query=None):
        return list(self.db.dmarc_records.find(query or {}).sort("time", 1))

    def fetch(self, user=RCPT, password=RCPT_PW):
        """Every message of the mailbox through pop3-session, oldest first."""
        n = self.db.messages.count_documents({"mailbox": user})
        return [Stored(m) for m in pop3_retr_all(self.conf, user, password, n)]

    def fetch_one(self):
        got = self.fetch()
        assert len(got) == 1, "expected one stored message, found %d" % len(got)
        return got[0]

    def check_sanitizer_reports(self):
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
        try:
            self.lab.mongo.drop_database(self.dbname)
        except Exception:
            pass


class SocketServer:
    """smtp-session behind systemd-socket-activate --inetd inside the
    namespace, listening on SERVER_IP:port; one session per connection."""

    def __init__(self, ns, argv, port, log_path):
        self.port = port
        self.host = SERVER_IP
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            ns.argv("systemd-socket-activate", "-l", "%s:%d" % (SERVER_IP, port), "--inetd",
                    "-a", *argv),
            stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        want = ":%04X" % port
        deadline = time.monotonic() + 10
        while True:
            with open("/proc/thread-self/net/tcp") as f:
                if any(l.split()[1].endswith(want) and l.split()[3] == "0A"
                       for l in f.readlines()[1:]):
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("systemd-socket-activate did not listen")
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


@pytest.fixture
def auth(authlab, tmp_path):
    """A test inside the lab's namespace with its own database (see AuthEnv)."""
    with authlab.ns.entered():
        env = AuthEnv(authlab, tmp_path)
        try:
            yield env
        finally:
            env.close()
        env.check_sanitizer_reports()
