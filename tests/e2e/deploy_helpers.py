"""Shared helpers for the deployment tests (tests/e2e/test_deploy_*.py).

These tests run the very files of units/ (systemd units, inetd.conf lines,
xinetd snippets, tcpserver run scripts, s6 service directories) with only
what must differ on a test machine rewritten (see `rewrite`): the programs'
paths (/usr/local/bin -> the repo's bin/), the configuration file, the ports
(free loopback ports instead of 25/110/...), log directories, and the user
(mailcell, made by sysusers in production, -> SESSION_USER, an existing
unprivileged user, so that dropping privileges is exercised too).

The `deployenv` fixture gives each test its own database (domain example.org,
user alice) and a world-readable directory for the configuration and logs
(sessions run as SESSION_USER must read them; pytest's tmp_path is 0700).
Real clients talk to the servers: smtplib from 127.0.0.2, poplib from
127.0.0.3, so the address each supervisor passes is checked end to end.
"""
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
import poplib
from email.message import EmailMessage
from pathlib import Path

import pymongo
import pytest

from conftest import BIN, TOP, Mailcell, free_port

UNITS = TOP / "units"
WRAPPER = UNITS / "mailcell-inetd"
DOMAIN = "example.org"
ALICE, ALICE_PW = "alice@example.org", "alice secret"
SMTP_FROM_IP = "127.0.0.2"    # the SMTP client's source address
POP3_FROM_IP = "127.0.0.3"    # the POP3 client's source address
HOSTNAME = "mail.test"
# Sanitizer builds (MAILCELL_BUILD=build/san) reserve terabytes of shadow
# memory: the per-session memory bounds of the run scripts cannot apply.
SANITIZED = os.environ.get("MAILCELL_BUILD", "build/rel") != "build/rel"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def _can_run_as(user):
    """True when `user` can read the repo's programs and modules."""
    if shutil.which("runuser") is None:
        return False
    probe = "test -x '%s' && test -r '%s'" % (BIN / "smtp-session",
                                              BIN / ".." / "lib" / "mailcell" / "store.so")
    r = subprocess.run(["runuser", "-u", user, "--", "sh", "-c", probe],
                       capture_output=True)
    return r.returncode == 0


# Sessions run as this user; root only where the checkout is not readable by
# nobody (then the privilege drop is not exercised, the rest is).
SESSION_USER = "nobody" if _can_run_as("nobody") else "root"


def rewrite(text, conf, ports=None, user=SESSION_USER, logdir=None):
    """A unit/run file's text made runnable here: program paths, config
    file, user, and `ports` {production port: test port}."""
    text = text.replace("/usr/local/bin/", str(BIN) + "/")
    text = text.replace("/usr/local/lib/mailcell/mailcell-inetd", str(WRAPPER))
    text = text.replace("/etc/mailcell/mailcell.conf", str(conf))
    text = re.sub(r"\b(id -[ug]|s6-envuidgid|s6-setuidgid) mailcell\b", r"\1 " + user, text)
    if logdir is not None:
        text = text.replace("/var/log/mailcell/", str(logdir) + "/")
    if SANITIZED:
        text = re.sub(r"ulimit -d \d+", "ulimit -d unlimited", text)
        text = re.sub(r"(?m)^(\trlimit_as\s*=).*$", r"\1 UNLIMITED", text)
    for prod, test in (ports or {}).items():
        # tcpserver: "tcpserver ... 0 25 \" listens on all addresses, port 25.
        text = re.sub(r" 0 %d \\$" % prod, " 127.0.0.1 %d \\\\" % test, text, flags=re.M)
    return text


def listening(port):
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


def wait_listening(ports, proc=None, timeout=15, what="server", log=None):
    deadline = time.monotonic() + timeout
    while not all(listening(p) for p in ports):
        if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
            extra = ""
            if log is not None and Path(log).exists():
                extra = "\n" + Path(log).read_text(errors="replace")[-3000:]
            raise AssertionError("%s does not listen on %s%s" % (what, ports, extra))
        time.sleep(0.05)


def wait_for(predicate, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def stop_group(proc, timeout=10):
    """Stops a process started with start_new_session=True, and its group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    try:   # sessions that outlived their supervisor (they are in its group)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---- clients ----

def make_message(subject, body="hello from the deployment test\n"):
    m = EmailMessage()
    m["From"] = "bob@example.net"
    m["To"] = ALICE
    m["Subject"] = subject
    m["Message-ID"] = "<%s@client.test>" % subject.replace(" ", ".")
    m.set_content(body)
    return m


def smtp_send(port, subject, source=SMTP_FROM_IP):
    """Delivers one message to alice with smtplib, from `source`."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=20,
                      source_address=(source, 0)) as s:
        refused = s.send_message(make_message(subject))
        assert refused == {}, refused


class POP3From(poplib.POP3):
    """poplib.POP3 that connects from a given source address."""

    def __init__(self, host, port, source, timeout=20):
        self._source = source
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))


def pop3_messages(port, source=POP3_FROM_IP):
    """All of alice's messages (bytes, CRLF) read with poplib, from `source`."""
    p = POP3From("127.0.0.1", port, source)
    try:
        p.user(ALICE)
        p.pass_(ALICE_PW)
        count, _ = p.stat()
        out = []
        for i in range(1, count + 1):
            _, lines, _ = p.retr(i)
            out.append(b"\r\n".join(lines) + b"\r\n")
        return out
    finally:
        p.quit()


def received_from(message):
    """The first Received header of a stored message, unfolded."""
    m = re.search(rb"^Received: (.*?)\r\n(?![ \t])", message, re.M | re.S)
    assert m, "no Received header in %r" % message[:500]
    return re.sub(rb"\r\n[ \t]+", b" ", m.group(1)).decode()


def check_roundtrip(smtp_port, pop3_port, subject):
    """SMTP from 127.0.0.2, then POP3 from 127.0.0.3: the message is there,
    and its Received header names the client address the supervisor gave."""
    smtp_send(smtp_port, subject)
    msgs = pop3_messages(pop3_port)
    mine = [m for m in msgs if b"Subject: " + subject.encode() in m]
    assert len(mine) == 1, "message %r not read back: %r" % (subject, msgs)
    rcvd = received_from(mine[0])
    assert "([%s])" % SMTP_FROM_IP in rcvd, rcvd
    assert "by %s" % HOSTNAME in rcvd, rcvd
    return mine[0]


def assert_logged(text, program, address):
    """The session log names the client address the supervisor passed."""
    pat = re.compile(r"%s\[\d+\]: [0-9a-f]+ %s: connect" % (program, re.escape(address)))
    assert pat.search(text), "no %s line for %s in the log:\n%s" % (program, address, text[-3000:])


# ---- per-test environment ----

class DeployEnv:
    def __init__(self, uri, dbname):
        self.dir = Path(tempfile.mkdtemp(prefix="mailcell-deploy-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.uri, self.dbname = uri, dbname
        self.conf = self.write_conf("mailcell.conf")
        self.mailcell = Mailcell(self.conf)
        self.procs = []
        self.client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10000)
        self.db = self.client[dbname]

    def write_conf(self, name, **keys):
        base = {
            "hostname": HOSTNAME,
            "mongodb_uri": self.uri,
            "database": self.dbname,
            "write_concern": "1",
            "db_timeout": "5",
            "log_target": "stderr",
            "inbound_checks": "no",
            "allow_plaintext_auth": "yes",
            "relay_trigger": "",
        }
        base.update(keys)
        path = self.dir / name
        path.write_text("# deployment test configuration\n" + "".join(
            "%s = %s\n" % (k, v) for k, v in base.items() if v is not None))
        os.chmod(path, 0o644)
        return path

    def path(self, name, mode=None, owner=None, directory=False):
        """A file or directory in the world-readable test dir."""
        p = self.dir / name
        if directory:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
        if mode is not None:
            os.chmod(p, mode)
        if owner is not None:
            shutil.chown(p, user=owner)
        return p

    def start(self, argv, log, **kw):
        """A supervisor in its own process group, stdout+stderr to `log`."""
        with open(log, "ab") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def sanitizer_reports(self):
        """Sanitizer reports in any log the sessions wrote (build/san)."""
        for f in self.dir.rglob("*"):
            if f.is_file() and f.suffix != ".sock":
                text = f.read_text(errors="replace")
                for marker in SANITIZER_MARKERS:
                    if marker in text:
                        i = text.index(marker)
                        return "%s:\n%s" % (f.name, text[i:i + 3000])
        return None

    def close(self):
        for p in reversed(self.procs):
            stop_group(p)
        self.client.close()
        report = self.sanitizer_reports()
        shutil.rmtree(self.dir, ignore_errors=True)
        if report:
            pytest.fail("sanitizer report in " + report)


@pytest.fixture
def deployenv(devdb, dbname):
    env = DeployEnv(devdb.uri, dbname)
    env.mailcell.ok("domain", "add", DOMAIN)
    env.mailcell.ok("user", "add", ALICE, "--name", "Alice", input=ALICE_PW + "\n")
    yield env
    env.close()


def free_ports(n):
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)
