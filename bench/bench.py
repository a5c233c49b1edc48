#!/usr/bin/python3
"""bench.py - mailcell against Debian's Postfix and Dovecot on this machine.

`make bench` runs it (bench/bench.mk); alone: `/usr/bin/python3 bench/bench.py`
as root from the top of the tree, after `make all bench-progs`. It writes
bench/RESULTS.md (the report) and bench/baseline.json (machine-readable
instruction counts and results). See bench/README.md for what each figure
means and how the peers are set up.

Everything it starts is private and on loopback ports chosen at run time: a
dev database (scripts/devdb.sh in a temporary directory), mailcell's session
programs behind systemd-socket-activate (as scripts/run.sh starts them),
a Postfix instance (its own config_directory and queue_directory, `master
-d`), a Dovecot instance (its own dovecot.conf, `dovecot -F`) and Postfix's
smtp-sink. All of them are stopped at the end, also on failure, timeout
(SIGTERM) or Ctrl-C. System services are never touched.

Stages (--only NAME,NAME...): startup, session, intake, large, pop3, outbound.
"""
import argparse
import base64
import concurrent.futures
import datetime
import json
import os
import platform
import pwd
import re
import grp
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
BIN = TOP / "bin"
HELP = TOP / "build" / "bench"
RESULTS = TOP / "bench" / "RESULTS.md"
BASELINE = TOP / "bench" / "baseline.json"
DOMAIN = "bench.test"
PASSWORD = "bench-password-1"
STAGES = ["startup", "session", "intake", "large", "pop3", "outbound"]
# Debian packages the benchmark needs beyond scripts/install-deps.sh's.
BENCH_PACKAGES = ["postfix", "dovecot-core", "dovecot-pop3d", "valgrind", "systemd",
                  "python3-pymongo", "linux-perf"]
CLK = os.sysconf("SC_CLK_TCK")
T0 = time.monotonic()
LOGF = None


def log(msg):
    line = "[%6.1fs] %s" % (time.monotonic() - T0, msg)
    print(line, file=sys.stderr, flush=True)
    if LOGF:
        LOGF.write(line + "\n")
        LOGF.flush()


class Budget:
    """The run's time bound: stages ask before optional repeats."""

    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic()


# ---------------------------------------------------------------- processes

class Procs:
    """Every long-running process we start, each in its own process group,
    stopped in reverse order (SIGTERM to the group, then SIGKILL)."""

    def __init__(self):
        self.items = []
        self.atstop = []

    def start(self, name, argv, logpath, env=None):
        f = open(logpath, "ab")
        p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=f,
                             stderr=subprocess.STDOUT, env=env, start_new_session=True)
        f.close()
        self.items.append((name, p))
        return p

    def stop(self, p, timeout=10):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        # Children left in the group (sessions of an activator): gone too.
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop_all(self):
        for name, p in reversed(self.items):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                log("stopping %s: %s" % (name, e))
        self.items = []
        for fn in reversed(self.atstop):
            try:
                fn()
            except Exception as e:
                log("cleanup: %s" % e)
        self.atstop = []


PROCS = Procs()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=20, what="server"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited (%s) before listening on %d" % (what, proc.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not listen on %d" % (what, port))


def run(argv, timeout=60, check=True, **kw):
    r = subprocess.run([str(a) for a in argv], capture_output=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%s): %s" % (" ".join(map(str, argv)), r.returncode,
                                                   (r.stderr or b"")[-500:].decode("utf-8", "replace")))
    return r


def proc_stat(pid):
    """(ppid, utime+stime+cutime+cstime in seconds, comm) of a process."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    comm = s[s.index("(") + 1:s.rindex(")")]
    rest = s[s.rindex(")") + 2:].split()
    return int(rest[1]), sum(int(x) for x in rest[11:15]) / CLK, comm


def tree_cpu(root):
    """CPU seconds of root and all its live descendants, plus what they reaped."""
    parent, cpu = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                pp, c, _ = proc_stat(int(d))
            except (OSError, ValueError):
                continue
            parent[int(d)] = pp
            cpu[int(d)] = c
    total, todo, seen = 0.0, [root], set()
    children = {}
    for pid, pp in parent.items():
        children.setdefault(pp, []).append(pid)
    while todo:
        p = todo.pop()
        if p in seen or p not in cpu:
            continue
        seen.add(p)
        total += cpu[p]
        todo.extend(children.get(p, []))
    return total


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- protocol clients

class Conn:
    """A line-oriented client connection with a bytearray buffer."""

    def __init__(self, port, timeout=120, src=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                          source_address=(src, 0) if src else None)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.port = port

    def client_port(self):
        return self.s.getsockname()[1]

    def _fill(self):
        d = self.s.recv(1 << 20)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def line(self):
        start = 0
        while True:
            i = self.buf.find(b"\r\n", start)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            start = max(0, len(self.buf) - 1)
            self._fill()

    def until(self, term):
        start = 0
        while True:
            i = self.buf.find(term, start)
            if i >= 0:
                out = bytes(self.buf[:i + len(term)])
                del self.buf[:i + len(term)]
                return out
            start = max(0, len(self.buf) - len(term) + 1)
            self._fill()

    def send(self, data):
        self.s.sendall(data)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    # SMTP
    def reply(self):
        lines = []
        while True:
            l = self.line()
            lines.append(l)
            if l[3:4] != b"-":
                return int(l[:3]), lines

    def cmd(self, line, want):
        self.send(line + b"\r\n")
        code, lines = self.reply()
        if code != want:
            raise RuntimeError("%r: got %r" % (line[:60], lines[-1][:200]))
        return lines

    # POP3
    def pop(self, line=None):
        if line is not None:
            self.send(line + b"\r\n")
        l = self.line()
        if not l.startswith(b"+OK"):
            raise RuntimeError("%r: got %r" % (line, l[:200]))
        return l

    def pop_multi(self, line):
        """A multi-line POP3 response, dot-terminated (the +OK line included)."""
        self.send(line + b"\r\n")
        first = self.line()
        if not first.startswith(b"+OK"):
            raise RuntimeError("%r: got %r" % (line, first[:200]))
        while len(self.buf) < 3:
            self._fill()
        if self.buf[:3] == b".\r\n":
            del self.buf[:3]
            return first + b"\r\n.\r\n"
        return first + b"\r\n" + self.until(b"\r\n.\r\n")


def smtp_open(port, ehlo=b"client.bench.test", src=None):
    c = Conn(port, src=src)
    code, lines = c.reply()
    if code != 220:
        raise RuntimeError("greeting: %r" % lines)
    c.cmd(b"EHLO " + ehlo, 250)
    return c


def smtp_auth(c, user, password):
    tok = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
    c.cmd(b"AUTH PLAIN " + tok, 235)


def smtp_send(c, sender, rcpt, msg):
    """One transaction, one command at a time (as smtp-source does)."""
    c.cmd(b"MAIL FROM:<" + sender.encode() + b">", 250)
    c.cmd(b"RCPT TO:<" + rcpt.encode() + b">", 250)
    c.cmd(b"DATA", 354)
    c.send(msg + b".\r\n")
    code, lines = c.reply()
    if code != 250:
        raise RuntimeError("after DATA: %r" % lines[-1][:200])


def make_message(size, i=0, sender="sender@example.org", rcpt="rcpt@bench.test"):
    """An RFC 5322 message of about `size` body octets, CRLF, never a dot line."""
    head = ("From: <%s>\r\nTo: <%s>\r\nSubject: bench message %d\r\n"
            "Date: Sun, 29 Nov 2026 00:00:00 +0000\r\nMessage-ID: <bench-%d-%d@bench.test>\r\n\r\n"
            % (sender, rcpt, i, i, size)).encode()
    line = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-abcdefghijklmno\r\n"
    n = max(1, size // len(line))
    return head + line * n


def pop_login(port, user, password=PASSWORD):
    c = Conn(port)
    c.pop()
    c.pop(b"USER " + user.encode())
    c.pop(b"PASS " + password.encode())
    return c


# ---------------------------------------------------------------- process inspection

def server_pid(conn, names):
    """The pid of the server process holding the other end of conn."""
    cport, sport = conn.client_port(), conn.port
    inode = None
    for _ in range(50):
        with open("/proc/net/tcp") as f:
            for l in f.readlines()[1:]:
                p = l.split()
                lp, rp = int(p[1].split(":")[1], 16), int(p[2].split(":")[1], 16)
                if lp == sport and rp == cport and p[9] != "0":
                    inode = p[9]
        if inode:
            break
        time.sleep(0.02)
    if inode is None:
        raise RuntimeError("no server socket for port %d" % cport)
    want = "socket:[%s]" % inode
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            for fd in os.listdir("/proc/%s/fd" % d):
                if os.readlink("/proc/%s/fd/%s" % (d, fd)) == want:
                    found.append(int(d))
                    break
        except OSError:
            continue
    for pid in found:
        try:
            if proc_stat(pid)[2] in names:
                return pid
        except OSError:
            pass
    raise RuntimeError("no %s process holds the connection (found %s)" % (names, found))


def memory(pid):
    """kB: pss, uss (private), rss, hwm (VmHWM, peak RSS)."""
    r = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for l in f:
            k, _, v = l.partition(":")
            v = v.split()
            if len(v) == 2 and v[1] == "kB":
                r[k] = int(v[0])
    st = {}
    with open("/proc/%d/status" % pid) as f:
        for l in f:
            k, _, v = l.partition(":")
            if k in ("VmHWM", "VmRSS"):
                st[k] = int(v.split()[0])
    return {"pss": r.get("Pss", 0), "uss": r.get("Private_Clean", 0) + r.get("Private_Dirty", 0),
            "rss": st.get("VmRSS", 0), "hwm": st.get("VmHWM", 0)}


def reset_hwm(pid):
    """Resets VmHWM to the current RSS (Linux: 5 > /proc/PID/clear_refs)."""
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")


# ---------------------------------------------------------------- the DB command tracer

class DBTrace:
    """A TCP proxy in front of the dev database that records each command a
    client sends (name, collection, the shape of its filter) and how long the
    server took to answer it. Needs the bson module (python3-pymongo)."""

    def __init__(self, upstream):
        import bson  # noqa: F401 (checked here, used in the threads)
        self.upstream = upstream
        self.port = free_port()
        self.records = []
        self.lock = threading.Lock()
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", self.port))
        self.srv.listen(64)
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def shape(v, depth=0):
        import bson
        if isinstance(v, dict):
            if depth > 3:
                return "{...}"
            return "{" + ", ".join("%s: %s" % (k, DBTrace.shape(x, depth + 1)) for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(DBTrace.shape(x, depth + 1) for x in v[:3]) + "]"
        if isinstance(v, bson.ObjectId):
            return "<oid>"
        if isinstance(v, bool):
            return "<bool>"
        if isinstance(v, int):
            return "<int %d>" % v if depth <= 1 else "<int>"
        if isinstance(v, str):
            return "<str>"
        return "<%s>" % type(v).__name__

    def _summary(self, msg):
        import bson
        flags = struct.unpack("<I", msg[16:20])[0]
        pos, end = 20, len(msg) - (4 if flags & 1 else 0)
        docs = 0
        body = None
        while pos < end:
            kind = msg[pos]
            pos += 1
            ln = struct.unpack("<i", msg[pos:pos + 4])[0]
            if kind == 0:
                body = bson.decode(msg[pos:pos + ln])
            else:
                docs += 1
            pos += ln
        if body is None:
            return "?", "", ""
        name = next(iter(body))
        coll = body[name] if isinstance(body[name], str) else ""
        detail = ""
        if "filter" in body:
            detail = "filter " + self.shape(body["filter"])
            if body.get("sort"):
                detail += " sort " + self.shape(body["sort"])
        elif "updates" in body:
            detail = "q " + self.shape(body["updates"][0].get("q", {}))
        elif "deletes" in body:
            detail = "q " + self.shape(body["deletes"][0].get("q", {}))
        return name, coll, detail

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                c.close()
                continue
            pending = {}
            threading.Thread(target=self._pipe, args=(c, u, pending, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, pending, False), daemon=True).start()

    def _pipe(self, a, b, pending, requests):
        """Forwards a -> b. Requests are registered (arrival time, raw message)
        before their last bytes go on, so a reply always finds its request."""
        buf = b""
        try:
            while True:
                d = a.recv(1 << 16)
                if not d:
                    break
                now = time.monotonic()
                buf += d
                while len(buf) >= 16:
                    ln, rid, rto, op = struct.unpack("<iiii", buf[:16])
                    if len(buf) < ln:
                        break
                    m, buf = buf[:ln], buf[ln:]
                    if requests:
                        pending[rid] = (now, op, m if op == 2013 else None)
                    elif rto in pending:
                        t, rop, raw = pending.pop(rto)
                        with self.lock:
                            self.records.append((rop, raw, (now - t) * 1e3))
                b.sendall(d)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self):
        """[((command, collection, filter shape), ms)] since the last take()."""
        with self.lock:
            r, self.records = self.records, []
        out = []
        for op, raw, ms in r:
            try:
                summ = self._summary(raw) if raw is not None else ("op%d" % op, "", "")
            except Exception:
                summ = ("?", "", "")
            out.append((summ, ms))
        return out

    def close(self):
        self.closed = True
        self.srv.close()


def trace_table(records, skip=("hello", "isMaster", "ismaster", "endSessions", "ping", "buildInfo",
                               "saslStart", "saslContinue", "getMore")):
    """Commands of a trace grouped: [(command, collection, detail, count, total ms)]."""
    groups = {}
    order = []
    for (name, coll, detail), ms in records:
        if name in skip or name.startswith("op"):
            continue
        k = (name, coll, detail)
        if k not in groups:
            groups[k] = [0, 0.0]
            order.append(k)
        groups[k][0] += 1
        groups[k][1] += ms
    return [(k[0], k[1], k[2], groups[k][0], groups[k][1]) for k in order]


# ---------------------------------------------------------------- callgrind

def callgrind(outfile, argv, stdin_bytes, env, timeout=180):
    """Runs argv under callgrind; returns (total Ir, {object: self Ir})."""
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=%s" % outfile,
                        *[str(a) for a in argv]], input=stdin_bytes, capture_output=True,
                       timeout=timeout, env=env)
    if not os.path.exists(outfile):
        raise RuntimeError("callgrind failed: %s" % r.stderr[-400:].decode("utf-8", "replace"))
    return parse_callgrind(outfile)


def parse_callgrind(path):
    """Self cost (Ir) per object file, the way `callgrind_annotate --inclusive=no`
    counts it, summed by object instead of by function."""
    names = {}
    per_obj = {}
    total = summary = 0
    ob = "?"
    after_calls = False
    cre = re.compile(r"^\((\d+)\)(?: (.*))?$")

    def resolve(v):
        m = cre.match(v)
        if not m:
            return v
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), v)

    with open(path, errors="replace") as f:
        for line in f:
            if not line or line[0] == "#":
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if after_calls:
                    after_calls = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    ir = int(parts[1])
                    per_obj[ob] = per_obj.get(ob, 0) + ir
                    total += ir
                continue
            if line.startswith("ob="):
                ob = resolve(line[3:].strip())
            elif line.startswith("cob="):
                resolve(line[4:].strip())
            elif line.startswith("calls="):
                after_calls = True
            elif line.startswith("summary:") or line.startswith("totals:"):
                summary = int(line.split()[1])
    if summary and abs(summary - total) > summary * 0.01:
        log("callgrind parse of %s: %d != summary %d" % (path, total, summary))
    return summary or total, per_obj


def short_obj(path):
    b = os.path.basename(path)
    return re.sub(r"\.so(\.[0-9.]+)?$", ".so", b)


# ---------------------------------------------------------------- formatting

def fmt(v, unit="", nd=None):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if nd is None:
        nd = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    s = "{:,.{}f}".format(v, nd)
    return s + (" " + unit if unit else "")


def ratio(m, p):
    if m is None or p is None or p == 0:
        return None
    return m / p


def fmt_ratio(r):
    return "—" if r is None else ("%.2f×" % r if r < 10 else "%.0f×" % r)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    return xs[min(len(xs) - 1, int(len(xs) * q))]


# ---------------------------------------------------------------- the lab

class Lab:
    def __init__(self, args):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="mailcell-bench-"))
        os.chmod(self.work, 0o755)  # Postfix's and Dovecot's users must reach their parts
        self.env = dict(os.environ, MONGOC_DISABLE_SHM="1")
        self.results = {}
        self.notes = []
        self.trace = {}
        self.sockact = {}
        self.nobody = pwd.getpwnam("nobody")
        self.nogroup = grp.getgrgid(self.nobody.pw_gid)

    # -- mailcell ------------------------------------------------------------

    def start_devdb(self):
        self.devdb_dir = self.work / "devdb"
        self.devdb_port = free_port()
        PROCS.atstop.append(lambda: run([TOP / "scripts" / "devdb.sh", "stop", self.devdb_dir],
                                        timeout=30, check=False))
        run([TOP / "scripts" / "devdb.sh", "start", self.devdb_dir, self.devdb_port], timeout=60)
        self.devdb_pid = int((self.devdb_dir / "devdb.pid").read_text())

    def conf(self, database, port=None, extra=""):
        """A configuration like scripts/run.sh's, with its own database."""
        path = self.work / ("mailcell-%s%s.conf" % (database, "-%d" % port if port else ""))
        path.write_text(
            "# mailcell's benchmark configuration (as scripts/run.sh writes it, plus:\n"
            "# its own database per stage, relay_host to the sink, a long db_timeout\n"
            "# for the runs under valgrind, no relay trigger: the worker is run by hand)\n"
            "hostname = mail.bench.test\n"
            "mongodb_uri = mongodb://127.0.0.1:%d\n"
            "database = %s\n"
            "templates_dir = %s\n"
            "allow_plaintext_auth = yes\n"
            "log_target = stderr\n"
            "relay_host = [127.0.0.1]:%d\n"
            "relay_trigger =\n"
            "db_timeout = 60\n%s" % (port or self.devdb_port, database, TOP / "templates",
                                     self.sink_port, extra))
        return path

    def mailcell(self, conf, *args, input=None):
        r = subprocess.run([str(BIN / "mailcell"), "-c", str(conf), *args], input=input,
                           capture_output=True, text=True, timeout=60, env=self.env)
        if r.returncode != 0:
            raise RuntimeError("mailcell %s: %s" % (" ".join(args), r.stderr.strip()))
        return r.stdout

    def new_db(self, database, users=()):
        conf = self.conf(database)
        self.mailcell(conf, "domain", "add", DOMAIN)
        for u in users:
            self.mailcell(conf, "user", "add", "%s@%s" % (u, DOMAIN), input=PASSWORD + "\n")
        return conf

    def listen(self, name, program, *args):
        """program behind systemd-socket-activate on a free loopback port."""
        port = free_port()
        argv = ["systemd-socket-activate", "-l", "127.0.0.1:%d" % port, "--inetd",
                "-E", "MONGOC_DISABLE_SHM=1", "-a", program, *args]
        p = PROCS.start(name, argv, self.work / ("%s.log" % name), env=self.env)
        wait_port(port, p, what=name)
        self.sockact[name] = p
        return port, p

    def stop_listener(self, name):
        p = self.sockact.pop(name, None)
        if p is not None:
            PROCS.stop(p)

    def mailbox_count(self, conf, address):
        return len(self.mailcell(conf, "mailbox", "list", address).splitlines())

    # -- smtp-sink ------------------------------------------------------------

    def start_sink(self):
        self.sink_port = free_port()
        self.sink_out = self.work / "sink.out"
        p = PROCS.start("smtp-sink", ["smtp-sink", "-u", "nobody", "-c",
                                      "127.0.0.1:%d" % self.sink_port, "256"], self.sink_out)
        wait_port(self.sink_port, p, what="smtp-sink")

    def sink_count(self):
        try:
            data = self.sink_out.read_bytes()[-400:]
        except OSError:
            return 0
        m = re.findall(rb"mesg=(\d+)", data)
        return int(m[-1]) if m else 0

    def wait_sink(self, target, timeout, poll=0.02):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.sink_count() >= target:
                return True
            time.sleep(poll)
        return self.sink_count() >= target

    # -- Postfix ---------------------------------------------------------------

    def start_postfix(self):
        d = self.work / "postfix"
        self.pf = d
        etc, queue, data, vmail = d / "etc", d / "queue", d / "data", d / "vmail"
        for x in (etc, queue, data, vmail):
            x.mkdir(parents=True)
        os.chown(data, pwd.getpwnam("postfix").pw_uid, -1)
        os.chown(vmail, self.nobody.pw_uid, self.nobody.pw_gid)
        self.pf_port, self.pf_hold_port = free_port(), free_port()
        daemon_dir = run(["postconf", "-dh", "daemon_directory"]).stdout.decode().strip()
        users = ["in%d" % i for i in range(1, 6)] + ["lat", "mem", "big1m", "big15m"]
        (etc / "vmailbox").write_text("".join("%s@%s %s/%s/\n" % (u, DOMAIN, DOMAIN, u)
                                              for u in users))
        (etc / "main.cf").write_text("""\
# private Postfix of mailcell's benchmarks (never the system's)
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = pf.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
# mailcell does no reverse DNS lookups either
smtpd_peername_lookup = no
smtputf8_enable = yes
message_size_limit = 31457280
# durable mailbox storage: virtual(8) writes Maildir files and fsyncs them
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {vmail}
virtual_mailbox_maps = texthash:{etc}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_mailbox_limit = 0
# outbound: everything else to the same smtp-sink as mailcell's relay worker
relayhost = [127.0.0.1]:{sink}
biff = no
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
""".format(queue=queue, data=data, domain=DOMAIN, vmail=vmail, etc=etc, uid=self.nobody.pw_uid,
           gid=self.nobody.pw_gid, sink=self.sink_port, d=d))
        (etc / "master.cf").write_text("""\
127.0.0.1:{p} inet n - n - - smtpd
127.0.0.1:{h} inet n - n - - smtpd -o {{ smtpd_client_restrictions = check_client_access static:HOLD }}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
showq     unix  n       -       n       -       -       showq
""".format(p=self.pf_port, h=self.pf_hold_port))
        run(["postfix", "-c", etc, "check"], timeout=60)
        self.pf_etc = etc
        self.pf_vmail = vmail / DOMAIN
        self.pf_queue = queue
        p = PROCS.start("postfix", [Path(daemon_dir) / "master", "-c", etc, "-d"], d / "master.out")
        self.pf_master = p
        wait_port(self.pf_port, p, what="postfix")
        wait_port(self.pf_hold_port, p, what="postfix")

    def pf_maildir_count(self, user):
        n = 0
        for sub in ("new", "cur"):
            try:
                n += len(os.listdir(self.pf_vmail / user / sub))
            except FileNotFoundError:
                pass
        return n

    def pf_queue_count(self):
        n = 0
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            for _, _, files in os.walk(self.pf_queue / sub):
                n += len(files)
        return n

    # -- Dovecot ----------------------------------------------------------------

    def start_dovecot(self):
        d = self.work / "dovecot"
        self.dv = d
        for x in ("run", "state", "home"):
            (d / x).mkdir(parents=True)
        os.chmod(d, 0o755)
        os.chown(d / "home", self.nobody.pw_uid, self.nobody.pw_gid)
        self.dv_port = free_port()
        users = ["pop1k", "big1m", "big15m", "mem"]
        # The same password hash as mailcell stores (yescrypt via libxcrypt),
        # so that both servers do the same work at login.
        scheme, pw = "PLAIN", PASSWORD
        try:
            import pymongo
            self.new_db("hash", users=["hash"])
            cl = pymongo.MongoClient("mongodb://127.0.0.1:%d" % self.devdb_port,
                                     serverSelectionTimeoutMS=10000)
            pw = cl["hash"]["users"].find_one({"_id": "hash@" + DOMAIN})["password"]
            cl.close()
            scheme = "CRYPT"
        except Exception as e:
            self.notes.append("Dovecot uses a plain-text password (no hash to copy: %s)" % e)
        self.pw_hash = pw if scheme == "CRYPT" else None
        (d / "passwd").write_text("".join("%s@%s:{%s}%s::::::\n" % (u, DOMAIN, scheme, pw)
                                          for u in users))
        os.chmod(d / "passwd", 0o644)
        self.dv_conf = d / "dovecot.conf"
        self.dv_conf.write_text("""\
# private Dovecot of mailcell's benchmarks (never the system's)
protocols = pop3
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
instance_name = mailcell-bench
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:~/Maildir
# durable storage: Dovecot's default fsync policy, stated
mail_fsync = optimized
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = {d}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/home/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {port}
  }}
  # the built-in pop3s listener (port 995) stays closed
  inet_listener pop3s {{
    port = 0
  }}
}}
""".format(d=d, uid=self.nobody.pw_uid, gid=self.nobody.pw_gid, port=self.dv_port))
        p = PROCS.start("dovecot", ["dovecot", "-F", "-c", self.dv_conf], d / "master.out")
        self.dv_master = p
        wait_port(self.dv_port, p, what="dovecot")

    def dv_maildir(self, user, messages):
        """Puts messages (CRLF bytes) into user's Maildir as Dovecot stores them (LF)."""
        md = self.dv / "home" / ("%s@%s" % (user, DOMAIN)) / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (md / sub).mkdir(parents=True, exist_ok=True)
        now = int(time.time())
        for i, m in enumerate(messages):
            data = m.replace(b"\r\n", b"\n")
            name = "%d.M%dP%d.bench,S=%d,W=%d:2," % (now, i, os.getpid(), len(data), len(m))
            (md / "cur" / name).write_bytes(data)
        for root, dirs, files in os.walk(self.dv / "home"):
            for x in dirs + files:
                os.chown(os.path.join(root, x), self.nobody.pw_uid, self.nobody.pw_gid)
        os.chown(self.dv / "home", self.nobody.pw_uid, self.nobody.pw_gid)


# ---------------------------------------------------------------- stages

def stage_startup(lab, budget):
    """Start-up budget: instructions (callgrind) and wall time (pipes) per program."""
    R = lab.results.setdefault("startup", {})
    conf = lab.new_db("cg", users=["cg", "cg100k"])
    # The 100 KB message for the POP3 RETR count.
    msg100k = make_message(100 * 1024, 1, rcpt="cg100k@" + DOMAIN)
    feed = (b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<cg100k@" + DOMAIN.encode() +
            b">\r\nDATA\r\n" + msg100k + b".\r\nQUIT\r\n")
    r = subprocess.run([str(BIN / "smtp-session"), "-c", str(conf)], input=feed,
                       capture_output=True, timeout=60, env=lab.env)
    if b"250 2.0.0" not in r.stdout:
        raise RuntimeError("could not store the 100 KB message: %r" % r.stdout[-300:])
    txn = make_message(4096, 2, rcpt="cg@" + DOMAIN)
    user = ("cg100k@" + DOMAIN).encode()
    pw = PASSWORD.encode()
    smtp = [BIN / "smtp-session", "-c", conf]
    pop3 = [BIN / "pop3-session", "-c", conf]
    # The same sessions with store.so (Debian's libmongoc), as a URI with
    # credentials, TLS or compression gets it: a module directory without
    # store-lite.so.
    full = lab.work / "modules-full"
    full.mkdir(exist_ok=True)
    for so in (BIN / ".." / "lib" / "mailcell").glob("*.so"):
        if so.name != "store-lite.so" and not (full / so.name).exists():
            (full / so.name).symlink_to(so.resolve())
    full_env = dict(lab.env, MAILCELL_LIBDIR=str(full))
    rcpt_in = b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<cg@bench.test>\r\nQUIT\r\n"
    cases = [
        ("bare_ehlo_quit", [HELP / "bare"], b"EHLO x\r\nQUIT\r\n"),
        ("bare_linked_ehlo_quit", [HELP / "bare-linked"], b"EHLO x\r\nQUIT\r\n"),
        ("smtp_quit", smtp, b"QUIT\r\n"),
        ("smtp_ehlo_quit", smtp, b"EHLO x\r\nQUIT\r\n"),
        ("pop3_quit", pop3, b"QUIT\r\n"),
        ("smtp_rcpt_quit", smtp, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<cg@bench.test>\r\nQUIT\r\n"),
        ("smtp_txn_4k", smtp, b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<cg@bench.test>\r\nDATA\r\n" +
         txn + b".\r\nQUIT\r\n"),
        ("pop3_login_quit", pop3, b"USER " + user + b"\r\nPASS " + pw + b"\r\nSTAT\r\nQUIT\r\n"),
        ("pop3_retr_100k", pop3, b"USER " + user + b"\r\nPASS " + pw + b"\r\nSTAT\r\nRETR 1\r\nQUIT\r\n"),
        ("smtp_rcpt_quit_full", smtp, rcpt_in, full_env),
    ]
    log("startup: callgrind, %d runs (2 at a time)" % len(cases))
    cg = {}

    def one(case):
        name, argv, inp = case[:3]
        return name, callgrind(lab.work / ("callgrind.%s" % name), argv, inp,
                               case[3] if len(case) > 3 else lab.env)

    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        for name, (total, objs) in ex.map(one, cases):
            cg[name] = {"total": total, "objects": {short_obj(k): v for k, v in objs.items()}}
    R["callgrind"] = cg
    # Top functions of the full transaction and of the EHLO/QUIT session, by self cost.
    for name in ("smtp_ehlo_quit", "smtp_txn_4k", "pop3_retr_100k"):
        out = run(["callgrind_annotate", "--inclusive=no", "--threshold=95",
                   lab.work / ("callgrind.%s" % name)], check=False).stdout.decode("utf-8", "replace")
        funcs = []
        for l in out.splitlines():
            m = re.match(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$", l)
            if m and "PROGRAM TOTALS" not in l:
                funcs.append((int(m.group(1).replace(",", "")), m.group(3)))
        R.setdefault("top_functions", {})[name] = funcs[:12]

    # Inclusive costs of the transaction's start-up (loading store.so).
    inc = {}
    out = run(["callgrind_annotate", "--inclusive=yes", "--threshold=99.9",
               lab.work / "callgrind.smtp_rcpt_quit"], check=False).stdout.decode("utf-8", "replace")
    for l in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:(mongoc_init|_mongoc_openssl_init|dl_open_worker|"
                     r"mc_module_load|_dl_relocate_object|sasl_client_init|_mongoc_rand_bytes|RAND_bytes|"
                     r"mongoc_client_new_from_uri_with_error) ", l)
        if m and m.group(2) not in inc:
            inc[m.group(2)] = int(m.group(1).replace(",", ""))
    R["rcpt_inclusive"] = inc
    # Wall time through pipes (as the recorded history measured it).
    loops = [
        ("bare_ehlo_quit", 300, "EHLO x\\r\\nQUIT\\r\\n", [HELP / "bare"]),
        ("bare_linked_ehlo_quit", 300, "EHLO x\\r\\nQUIT\\r\\n", [HELP / "bare-linked"]),
        ("smtp_ehlo_quit", 300, "EHLO x\\r\\nQUIT\\r\\n", smtp),
        ("smtp_quit", 300, "QUIT\\r\\n", smtp),
        ("pop3_quit", 300, "QUIT\\r\\n", pop3),
        ("smtp_rcpt_quit", 60, "EHLO x\\r\\nMAIL FROM:<a@example.org>\\r\\nRCPT TO:<cg@bench.test>\\r\\nQUIT\\r\\n", smtp),
        ("smtp_txn_4k", 60, "EHLO x\\r\\nMAIL FROM:<a@example.org>\\r\\nRCPT TO:<cg@bench.test>\\r\\nDATA\\r\\n" +
         txn.decode().replace("\r\n", "\\r\\n") + ".\\r\\nQUIT\\r\\n", smtp),
        ("smtp_rcpt_quit_full", 60, "EHLO x\\r\\nMAIL FROM:<a@example.org>\\r\\nRCPT TO:<cg@bench.test>\\r\\nQUIT\\r\\n",
         smtp, full_env),
    ]
    # Interleaved rounds (each program a slice of its runs per round), so that
    # load from elsewhere on the machine falls on all programs alike; the
    # figures are medians over the rounds of each round's median run.
    # The programs without the database first, in an order that rotates each
    # round; then the two that use it (the dev database's own work after them
    # would otherwise fall on whatever runs next).
    wall = {name: [] for name, *_ in loops}
    rounds = 2 * lab.args.runs
    light, heavy = loops[:5], loops[5:]
    order = []
    for rnd in range(rounds):
        order.append([light[(rnd + i) % len(light)] for i in range(len(light))])
    for rnd in range(rounds):
        order.append(heavy)
    for rnd, batch in enumerate(order):
        if rnd % rounds > 1 and budget.left() < 420:
            continue
        for name, n, inp, argv, *env in batch:
            k = max(1, n // rounds)
            out = run([HELP / "spawnloop", k, inp, *argv], timeout=120, env=env[0] if env else lab.env,
                      check=False).stdout.decode()
            kv = dict(x.split("=") for x in out.split())
            if int(kv.get("runs", 0)) < k:
                raise RuntimeError("spawnloop %s: %s" % (name, out))
            wall[name].append({k2: float(v) for k2, v in kv.items()})
    R["wall"] = {name: {"greet_ms": med([x["greet_p50_ms"] for x in v]),
                        "session_ms": med([x["session_p50_ms"] for x in v]),
                        "session_mean_ms": med([x["session_mean_ms"] for x in v]),
                        "cpu_ms": med([x["cpu_ms"] for x in v]),
                        "repeats": len(v), "n": sum(int(x["runs"]) for x in v),
                        "each": [round(x["session_p50_ms"], 3) for x in v]}
                 for name, v in wall.items()}
    # The way the recorded history measured it: a shell loop, printf piped
    # into the program 300 times (the shell's fork and printf are in it too).
    shell = {}
    for name, prog in (("bare", "%s" % (HELP / "bare")),
                       ("smtp-session", "%s -c %s" % (BIN / "smtp-session", conf))):
        vals = []
        for rep in range(max(1, len(wall["bare_ehlo_quit"]) // 2)):
            t0 = time.monotonic()
            run(["sh", "-c", "i=0; while [ $i -lt 300 ]; do printf 'EHLO x\\r\\nQUIT\\r\\n' | %s "
                 ">/dev/null 2>&1; i=$((i+1)); done" % prog], timeout=120, env=lab.env)
            vals.append((time.monotonic() - t0) / 300 * 1e3)
        shell[name] = med(vals)
    R["shell_loop_ms"] = shell
    log("startup: EHLO/QUIT %.2f ms vs bare %.2f ms" % (R["wall"]["smtp_ehlo_quit"]["session_ms"],
                                                      R["wall"]["bare_ehlo_quit"]["session_ms"]))


def stage_session(lab, budget):
    """Connect/EHLO/QUIT rates and per-session memory against Postfix and Dovecot."""
    R = lab.results.setdefault("session", {})
    conf = lab.new_db("session", users=["mem", "pop1k"])
    smtp_port, smtp_act = lab.listen("smtp-session", BIN / "smtp-session", "-c", conf)
    pop3_port, pop3_act = lab.listen("pop3-session", BIN / "pop3-session", "-c", conf)
    bare_port, bare_act = lab.listen("bare", HELP / "bare")
    # (name, protocol, port, the process whose tree does the server's work)
    targets = [("bare", "smtp", bare_port, bare_act.pid),
               ("mailcell smtp-session", "smtp", smtp_port, smtp_act.pid),
               ("Postfix smtpd", "smtp", lab.pf_port, lab.pf_master.pid),
               ("mailcell pop3-session", "pop3", pop3_port, pop3_act.pid),
               ("Dovecot pop3", "pop3", lab.dv_port, lab.dv_master.pid)]
    rates = {}
    src = 10
    secs = lab.args.session_seconds
    for rep in range(lab.args.runs):
        if rep > 0 and budget.left() < 330:
            log("session: budget: %d repeat(s)" % rep)
            break
        for name, proto, port, root in targets:
            for workers in (1, 8):
                src += 1
                cpu0 = tree_cpu(root)
                out = run([HELP / "connloop", proto, "127.0.0.1", port, workers, secs, src],
                          timeout=secs + 60, check=False).stdout.decode()
                cpu = tree_cpu(root) - cpu0
                kv = {k: float(v) for k, v in (x.split("=") for x in out.split())}
                kv["cpu_ms"] = cpu / max(kv.get("sessions", 0), 1) * 1e3
                rates.setdefault((name, workers), []).append(kv)
                if float(kv.get("errors", 0)) > 0:
                    log("session: %s x%d: %s" % (name, workers, out.strip()))
    R["rates"] = {"%s|%d" % k: {"rate": med([x["rate"] for x in v]),
                                "p50_ms": med([x["p50_ms"] for x in v]),
                                "errors": sum(x["errors"] for x in v),
                                "cpu_ms": med([x["cpu_ms"] for x in v]),
                                "each": [round(x["rate"]) for x in v]} for k, v in rates.items()}
    for k, v in R["rates"].items():
        log("session: %-28s %8.0f /s" % (k, v["rate"]))

    # Memory of one session held open mid-way.
    mem = {}

    def smtp_mem(port, names, key):
        for rep in range(3):
            c = smtp_open(port)
            pid = server_pid(c, names)
            a = memory(pid)
            c.cmd(b"MAIL FROM:<a@example.org>", 250)
            c.cmd(b"RCPT TO:<mem@bench.test>", 250)
            b = memory(pid)
            c.cmd(b"DATA", 354)
            c.send(make_message(4096) + b".\r\n")
            c.reply()
            d = memory(pid)
            c.cmd(b"QUIT", 221)
            c.close()
            mem.setdefault(key + "|ehlo", []).append(a)
            mem.setdefault(key + "|rcpt", []).append(b)
            mem.setdefault(key + "|data", []).append(d)

    smtp_mem(smtp_port, ("smtp-session",), "mailcell smtp-session")
    smtp_mem(lab.pf_port, ("smtpd",), "Postfix smtpd")
    for rep in range(3):
        c = smtp_open(bare_port)
        mem.setdefault("bare|ehlo", []).append(memory(server_pid(c, ("bare",))))
        c.cmd(b"QUIT", 221)
        c.close()
    # POP3: a mailbox of 20 messages; after login and STAT, and after a RETR.
    msgs = [make_message(2048, i, rcpt="mem@" + DOMAIN) for i in range(20)]
    c = smtp_open(smtp_port)
    for m in msgs:
        smtp_send(c, "a@example.org", "mem@" + DOMAIN, m)
    c.cmd(b"QUIT", 221)
    c.close()
    lab.dv_maildir("mem", msgs)
    for key, port, names in (("mailcell pop3-session", pop3_port, ("pop3-session",)),
                             ("Dovecot pop3", lab.dv_port, ("pop3",))):
        for rep in range(3):
            c = pop_login(port, "mem@" + DOMAIN)
            c.pop(b"STAT")
            pid = server_pid(c, names)
            a = memory(pid)
            c.pop_multi(b"RETR 1")
            b = memory(pid)
            c.pop(b"QUIT")
            c.close()
            mem.setdefault(key + "|login", []).append(a)
            mem.setdefault(key + "|retr", []).append(b)
    R["memory"] = {k: {m: med([x[m] for x in v]) for m in ("pss", "uss", "rss", "hwm")}
                   for k, v in mem.items()}
    for k, v in R["memory"].items():
        log("session: memory %-32s PSS %5d kB  HWM %5d kB" % (k, v["pss"], v["hwm"]))
    for name in ("smtp-session", "pop3-session", "bare"):
        lab.stop_listener(name)


def stage_intake(lab, budget):
    """smtp-source: 2,000 messages of 4 KB over 20 sessions, into mailcell and Postfix."""
    R = lab.results.setdefault("intake", {})
    N, S = lab.args.messages, 20
    runs = {"mailcell": [], "postfix": []}
    rcpt_users = ["in%d" % i for i in range(1, 6)]
    # Postfix first (cheap): acknowledged (250, queued durably) and stored (in the Maildir).
    for rep in range(lab.args.runs):
        user = rcpt_users[rep]
        before = lab.pf_maildir_count(user)
        cpu0 = tree_cpu(lab.pf_master.pid)
        t0 = time.monotonic()
        run(["smtp-source", "-s", S, "-m", N, "-l", 4096, "-f", "sender@example.org",
             "-t", "%s@%s" % (user, DOMAIN), "-M", "client.bench.test",
             "127.0.0.1:%d" % lab.pf_port], timeout=300)
        t_ack = time.monotonic()
        end = t_ack + 120
        while lab.pf_maildir_count(user) < before + N and time.monotonic() < end:
            time.sleep(0.01)
        t_stored = time.monotonic()
        stored = lab.pf_maildir_count(user) - before
        cpu = tree_cpu(lab.pf_master.pid) - cpu0
        runs["postfix"].append({"seconds": t_stored - t0, "ack_seconds": t_ack - t0, "stored": stored,
                                "rate": stored / (t_stored - t0), "ack_rate": N / (t_ack - t0),
                                "cpu_ms": cpu / max(stored, 1) * 1e3})
        log("intake: postfix run %d: %d acked in %.1f s, stored in %.1f s" % (
            rep + 1, N, t_ack - t0, t_stored - t0))
    # mailcell: each run into a database of its own (the dev database's cost
    # per message grows with what it already holds: see RESULTS.md); another
    # run only while the budget leaves room for it and the later stages.
    for rep in range(lab.args.runs):
        if rep > 0 and budget.left() < 300 + runs["mailcell"][-1]["seconds"]:
            log("intake: budget: %d mailcell run(s)" % rep)
            break
        db = "intake%d" % (rep + 1)
        conf = lab.new_db(db, users=[rcpt_users[rep]])
        port, act = lab.listen("smtp-intake", BIN / "smtp-session", "-c", conf)
        cpu_db0, cpu_s0 = tree_cpu(lab.devdb_pid), tree_cpu(act.pid)
        t0 = time.monotonic()
        sp = subprocess.Popen(["smtp-source", "-s", str(S), "-m", str(N), "-l", "4096",
                               "-f", "sender@example.org", "-t", "%s@%s" % (rcpt_users[rep], DOMAIN),
                               "-M", "client.bench.test", "127.0.0.1:%d" % port],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        perf = perf_start(lab, "intake", lab.devdb_pid) if rep == 0 and shutil.which("perf") else None
        try:
            err = sp.communicate(timeout=lab.args.intake_cap)[1]
            capped = False
        except subprocess.TimeoutExpired:
            sp.kill()
            err = sp.communicate()[1]
            capped = True
        t1 = time.monotonic()
        if perf:
            perf_stop(lab, perf)
        cpu_db, cpu_s = tree_cpu(lab.devdb_pid) - cpu_db0, tree_cpu(act.pid) - cpu_s0
        lab.stop_listener("smtp-intake")
        stored = lab.mailbox_count(conf, "%s@%s" % (rcpt_users[rep], DOMAIN))
        if sp.returncode not in (0, None) and not capped:
            log("intake: smtp-source: %s" % err.decode(errors="replace")[-300:])
        secs = t1 - t0
        runs["mailcell"].append({"seconds": secs, "stored": stored, "rate": stored / secs,
                                 "capped": capped, "cpu_session_ms": cpu_s / max(stored, 1) * 1e3,
                                 "cpu_db_ms": cpu_db / max(stored, 1) * 1e3})
        log("intake: mailcell run %d: %d stored in %.1f s (%.1f/s)%s" % (
            rep + 1, stored, secs, stored / secs, " CAPPED" if capped else ""))
        if rep == 0:
            lab.trace_intake_db = db
    R["runs"] = runs

    # Transaction latency: our own client, 20 threads, a new connection each.
    def latency(port, rcpt, n_per_thread=10, threads=20):
        lat, greet, errors = [], [], []
        lock = threading.Lock()
        msg = make_message(4096, rcpt=rcpt)

        def worker():
            for _ in range(n_per_thread):
                try:
                    t0 = time.monotonic()
                    c = Conn(port)
                    c.reply()
                    t1 = time.monotonic()
                    c.cmd(b"EHLO client.bench.test", 250)
                    t2 = time.monotonic()
                    smtp_send(c, "sender@example.org", rcpt, msg)
                    t3 = time.monotonic()
                    c.cmd(b"QUIT", 221)
                    c.close()
                    with lock:
                        greet.append((t1 - t0) * 1e3)
                        lat.append((t3 - t2) * 1e3)
                except Exception as e:
                    with lock:
                        errors.append(str(e))

        th = [threading.Thread(target=worker) for _ in range(threads)]
        t0 = time.monotonic()
        for t in th:
            t.start()
        for t in th:
            t.join(300)
        return {"n": len(lat), "p50": pct(lat, 0.5), "p90": pct(lat, 0.9), "p99": pct(lat, 0.99),
                "greet_p50": pct(greet, 0.5), "greet_p99": pct(greet, 0.99), "errors": len(errors),
                "seconds": time.monotonic() - t0, "threads": threads,
                "slowest": [round(x, 1) for x in sorted(lat)[-5:]]}

    conf = lab.new_db("latency", users=["lat"])
    port, _ = lab.listen("smtp-latency", BIN / "smtp-session", "-c", conf)
    # The same one client at a time: whether a tail comes from concurrency.
    R["latency"] = {"mailcell": latency(port, "lat@" + DOMAIN),
                    "postfix": latency(lab.pf_port, "lat@" + DOMAIN),
                    "mailcell|1": latency(port, "lat@" + DOMAIN, n_per_thread=100, threads=1),
                    "postfix|1": latency(lab.pf_port, "lat@" + DOMAIN, n_per_thread=100, threads=1)}
    lab.stop_listener("smtp-latency")
    for k, v in R["latency"].items():
        log("intake: latency %s: p50 %.1f ms p99 %.1f ms (n=%d)" % (k, v["p50"], v["p99"], v["n"]))

    # Where the time goes: the commands one transaction sends to the database
    # holding the first run's messages.
    if lab.tracer:
        tconf = lab.conf(lab.trace_intake_db, port=lab.tracer.port)
        lab.tracer.take()
        feed = (b"EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<in1@bench.test>\r\nDATA\r\n" +
                make_message(4096) + b".\r\nQUIT\r\n")
        subprocess.run([str(BIN / "smtp-session"), "-c", str(tconf)], input=feed, capture_output=True,
                       timeout=60, env=lab.env)
        R["trace"] = trace_table(lab.tracer.take())
        R["trace_db_size"] = runs["mailcell"][0]["stored"]


def perf_start(lab, name, pid):
    out = lab.work / ("perf.%s.data" % name)
    p = subprocess.Popen(["perf", "record", "-F", "199", "-g", "-p", str(pid), "-o", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return (p, out, name)


def perf_stop(lab, perf):
    p, out, name = perf
    try:
        os.killpg(p.pid, signal.SIGINT)
        p.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    try:
        rep = run(["perf", "report", "-i", out, "--children", "--sort", "sym", "--stdio"],
                  timeout=120, check=False).stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        return
    handlers, selfs = [], []
    for l in rep.splitlines():
        m = re.match(r"^\s+([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*)$", l)
        if not m:
            continue
        sym = m.group(3).strip()
        short = re.sub(r"^github\.com/FerretDB/FerretDB/internal/", "", sym)
        if re.search(r"handler\.\(\*Handler\)\.Msg[A-Za-z]+$", sym):
            handlers.append((float(m.group(1)), short))
        if re.search(r"(SortIterator|filterIterator\)\.Next|sjson\.Unmarshal$|queryIterator\)\.Next|"
                     r"fsql\.\(\*Tx\)|\.Commit$|InTransaction|sqlite\.\(\*collection\)\.(Query|InsertAll|"
                     r"UpdateAll|DeleteAll))", sym):
            selfs.append((float(m.group(1)), short))
    lab.results.setdefault("profiles", {})[name] = {"handlers": handlers[:8], "parts": selfs[:10]}


def stage_large(lab, budget):
    """One 1 MB and one 15 MB message in by SMTP and out by POP3, and peak RSS.
    VmHWM is read twice: for the whole session, and for the message alone
    (reset to the current RSS just before DATA or RETR)."""
    R = lab.results.setdefault("large", {})
    out = {}

    def record(key, t0, t1, nbytes, pid, hwm_session, cpu=None):
        m = memory(pid)
        out.setdefault(key, []).append({"seconds": t1 - t0, "mbps": nbytes / (t1 - t0) / 1e6,
                                        "hwm": max(m["hwm"], hwm_session), "hwm_msg": m["hwm"],
                                        "cpu": cpu})

    for size_name, size in (("1 MB", 1 << 20), ("15 MB", 15 << 20)):
        user = "big1m" if size < (2 << 20) else "big15m"
        addr = "%s@%s" % (user, DOMAIN)
        msg = make_message(size, 7, rcpt=addr)
        retrieved = None
        for rep in range(lab.args.runs):
            if rep > 0 and budget.left() < 240:
                break
            # mailcell: a fresh database each time (RETR reads the chunks
            # with a query the dev database answers by scanning them all).
            conf = lab.new_db("large%d%s" % (rep, user), users=[user])
            sport, sact = lab.listen("smtp-large", BIN / "smtp-session", "-c", conf)
            pport, pact = lab.listen("pop3-large", BIN / "pop3-session", "-c", conf)
            for server, port, names in (("mailcell", sport, ("smtp-session",)),
                                        ("postfix", lab.pf_port, ("smtpd",))):
                c = smtp_open(port)
                pid = server_pid(c, names)
                c.cmd(b"MAIL FROM:<a@example.org> SIZE=%d" % len(msg), 250)
                c.cmd(b"RCPT TO:<" + addr.encode() + b">", 250)
                c.cmd(b"DATA", 354)
                before = memory(pid)["hwm"]
                reset_hwm(pid)
                cpu0 = (tree_cpu(sact.pid), tree_cpu(lab.devdb_pid)) if server == "mailcell" else None
                t0 = time.monotonic()
                c.send(msg + b".\r\n")
                code, lines = c.reply()
                t1 = time.monotonic()
                if code != 250:
                    raise RuntimeError("%s refused the %s message: %r" % (server, size_name, lines))
                cpu = ((tree_cpu(sact.pid) - cpu0[0], tree_cpu(lab.devdb_pid) - cpu0[1])
                       if cpu0 else None)
                record((server, "smtp", size_name), t0, t1, len(msg), pid, before, cpu)
                c.cmd(b"QUIT", 221)
                c.close()
            c = pop_login(pport, addr)
            c.pop(b"STAT")
            pid = server_pid(c, ("pop3-session",))
            before = memory(pid)["hwm"]
            reset_hwm(pid)
            cpu0 = (tree_cpu(pact.pid), tree_cpu(lab.devdb_pid))
            t0 = time.monotonic()
            data = c.pop_multi(b"RETR 1")
            t1 = time.monotonic()
            cpu = (tree_cpu(pact.pid) - cpu0[0], tree_cpu(lab.devdb_pid) - cpu0[1])
            record(("mailcell", "pop3", size_name), t0, t1, len(data), pid, before, cpu)
            c.pop(b"QUIT")
            c.close()
            if retrieved is None:
                body = data[data.index(b"\r\n") + 2:-3]
                retrieved = body.replace(b"\r\n..", b"\r\n.")
            lab.stop_listener("smtp-large")
            lab.stop_listener("pop3-large")
        # Dovecot: the same message as mailcell stored it.
        lab.dv_maildir(user, [retrieved])
        for rep in range(len(out[("mailcell", "pop3", size_name)])):
            c = pop_login(lab.dv_port, addr)
            c.pop(b"STAT")
            pid = server_pid(c, ("pop3",))
            before = memory(pid)["hwm"]
            reset_hwm(pid)
            t0 = time.monotonic()
            data = c.pop_multi(b"RETR 1")
            t1 = time.monotonic()
            record(("dovecot", "pop3", size_name), t0, t1, len(data), pid, before)
            c.pop(b"QUIT")
            c.close()
    R["results"] = {}
    for k, v in out.items():
        cpus = [x["cpu"] for x in v if x["cpu"]]
        R["results"]["|".join(k)] = {
            "mbps": med([x["mbps"] for x in v]), "seconds": med([x["seconds"] for x in v]),
            "hwm": med([x["hwm"] for x in v]), "hwm_msg": med([x["hwm_msg"] for x in v]),
            "cpu_session": med([c[0] for c in cpus]) if cpus else None,
            "cpu_db": med([c[1] for c in cpus]) if cpus else None, "runs": len(v)}
    for k, v in R["results"].items():
        log("large: %-24s %7.1f MB/s  HWM %6d kB, during the message %6d kB" % (
            k, v["mbps"], v["hwm"], v["hwm_msg"]))


def pop3_pass(port, addr, n_expected, cap):
    """Log in, STAT, LIST, UIDL, RETR every message, QUIT: (seconds, retrieved, octets)."""
    t0 = time.monotonic()
    c = pop_login(port, addr)
    stat = c.pop(b"STAT").split()
    n = int(stat[1])
    c.pop_multi(b"LIST")
    c.pop_multi(b"UIDL")
    octets = 0
    got = 0
    for i in range(1, n + 1):
        octets += len(c.pop_multi(b"RETR %d" % i))
        got += 1
        if time.monotonic() - t0 > cap:
            break
    c.pop(b"QUIT")
    c.close()
    return time.monotonic() - t0, got, n, octets


def stage_pop3(lab, budget):
    """A 1,000-message mailbox: log in, STAT, LIST, UIDL, RETR all; against Dovecot."""
    R = lab.results.setdefault("pop3", {})
    N = lab.args.pop3_messages
    addr = "pop1k@" + DOMAIN
    conf = lab.new_db("pop3", users=["pop1k"])
    sport, _ = lab.listen("smtp-pop3fill", BIN / "smtp-session", "-c", conf)
    msgs = [make_message(1024 + (i % 7) * 256, i, rcpt=addr) for i in range(N)]
    log("pop3: filling a %d-message mailbox in mailcell" % N)
    t0 = time.monotonic()
    errors = []

    def fill(part):
        try:
            c = smtp_open(sport)
            for m in part:
                smtp_send(c, "sender@example.org", addr, m)
            c.cmd(b"QUIT", 221)
            c.close()
        except Exception as e:
            errors.append(str(e))

    th = [threading.Thread(target=fill, args=(msgs[i::10],)) for i in range(10)]
    for t in th:
        t.start()
    for t in th:
        t.join(600)
    if errors:
        raise RuntimeError("pop3 fill: %s" % errors[0])
    R["fill_seconds"] = time.monotonic() - t0
    lab.stop_listener("smtp-pop3fill")
    pport, act = lab.listen("pop3-1k", BIN / "pop3-session", "-c", conf)
    # The head mailcell adds (Return-Path, Received), to give Dovecot the same messages.
    c = pop_login(pport, addr)
    first = c.pop_multi(b"RETR 1")
    c.pop(b"QUIT")
    c.close()
    first = first[first.index(b"\r\n") + 2:-3].replace(b"\r\n..", b"\r\n.")
    idx = first.find(b"From: <")
    head = first[:idx] if idx > 0 else b""
    lab.dv_maildir("pop1k", [head + m for m in msgs])
    res = {"mailcell": [], "dovecot": []}
    for rep in range(lab.args.runs):
        for server, port, root in (("mailcell", pport, None), ("dovecot", lab.dv_port, lab.dv_master)):
            if server == "mailcell" and rep > 0 and budget.left() < 150 + res["mailcell"][-1]["seconds"]:
                continue
            cpu0 = (tree_cpu(lab.devdb_pid) + tree_cpu(act.pid)) if server == "mailcell" else tree_cpu(root.pid)
            perf = None
            if server == "mailcell" and rep == 0 and shutil.which("perf"):
                perf = perf_start(lab, "pop3", lab.devdb_pid)
            secs, got, n, octets = pop3_pass(port, addr, N, lab.args.pop3_cap)
            if perf:
                perf_stop(lab, perf)
            cpu = ((tree_cpu(lab.devdb_pid) + tree_cpu(act.pid)) if server == "mailcell"
                   else tree_cpu(root.pid)) - cpu0
            res[server].append({"seconds": secs, "retrieved": got, "messages": n, "octets": octets,
                                "rate": got / secs, "cpu_ms": cpu / max(got, 1) * 1e3,
                                "complete": got == n})
            log("pop3: %s pass %d: %d of %d messages in %.1f s (%.0f/s)" % (
                server, rep + 1, got, n, secs, got / secs))
        if budget.left() < 150:
            break
    R["runs"] = res
    if lab.tracer:
        tconf = lab.conf("pop3", port=lab.tracer.port)
        p2, _ = lab.listen("pop3-trace", BIN / "pop3-session", "-c", tconf)
        c = pop_login(p2, addr)
        c.pop(b"STAT")
        lab.tracer.take()
        c.pop_multi(b"RETR %d" % max(1, N // 2))
        R["trace_retr"] = trace_table(lab.tracer.take())
        c.pop(b"QUIT")
        c.close()
        R["trace_login"] = None
        lab.stop_listener("pop3-trace")
    lab.stop_listener("pop3-1k")


def submit(port, sessions, total, auth, rcpt_fmt, sender, size=4096):
    """Queues `total` messages over parallel sessions, each with many
    transactions (AUTH once per session when auth); seconds taken."""
    errors = []
    sessions = max(1, min(sessions, total))
    counts = [total // sessions + (1 if k < total % sessions else 0) for k in range(sessions)]
    firsts = [sum(counts[:k]) for k in range(sessions)]

    def one(k):
        try:
            c = smtp_open(port)
            if auth:
                smtp_auth(c, *auth)
            for i in range(firsts[k], firsts[k] + counts[k]):
                smtp_send(c, sender, rcpt_fmt % i, make_message(size, i, sender=sender, rcpt=rcpt_fmt % i))
            c.cmd(b"QUIT", 221)
            c.close()
        except Exception as e:
            errors.append(str(e))

    th = [threading.Thread(target=one, args=(k,)) for k in range(sessions)]
    t0 = time.monotonic()
    for t in th:
        t.start()
    for t in th:
        t.join(900)
    if errors:
        raise RuntimeError("submit: %s" % errors[0])
    return time.monotonic() - t0


def stage_outbound(lab, budget):
    """Relay: the relay worker against Postfix delivering to the same smtp-sink."""
    R = lab.results.setdefault("outbound", {})
    sender = "sub@" + DOMAIN
    res = {"mailcell": [], "postfix": [], "postfix_e2e": []}
    # mailcell: submission with AUTH, then one `relay-worker --once`, timed
    # until it exits. Batches of growing size, the last the full 2,000 when
    # the budget allows (relay_cap bounds each run).
    for n in lab.args.relay_batches:
        if res["mailcell"]:
            prev = res["mailcell"][-1]
            est = (prev["seconds"] + prev["queue_seconds"]) * n / max(prev["queued"], 1)
            if budget.left() < 1.3 * est + 50:
                log("outbound: budget: no batch of %d (about %.0f s)" % (n, est))
                break
        db = "outbound%d" % n
        conf = lab.new_db(db, users=["sub"])
        port, act = lab.listen("submission", BIN / "smtp-session", "-c", conf, "--submission")
        qsecs = submit(port, 20, n, (sender, PASSWORD), "dest%d@remote.test", sender)
        lab.stop_listener("submission")
        queued = len([l for l in lab.mailcell(conf, "queue", "list").splitlines() if "\tqueued\t" in l])
        c0 = lab.sink_count()
        cpu_db0 = tree_cpu(lab.devdb_pid)
        t0 = time.monotonic()
        w = subprocess.Popen([str(BIN / "relay-worker"), "-c", str(conf), "--once"],
                             stdout=subprocess.DEVNULL, stderr=open(lab.work / ("worker%d.log" % n), "wb"),
                             env=lab.env)
        perf = perf_start(lab, "relay", lab.devdb_pid) if (n == lab.args.relay_batches[-1]
                                                           and shutil.which("perf")) else None
        # wait4: the worker's own CPU time as well
        capped, ru, deadline = False, None, t0 + min(lab.args.relay_cap, max(30, budget.left() - 60))
        while ru is None:
            pid, status, usage = os.wait4(w.pid, os.WNOHANG)
            if pid == w.pid:
                ru = usage
                w.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline and not capped:
                capped = True
                w.terminate()
                deadline = time.monotonic() + 30
            elif time.monotonic() > deadline:
                w.kill()
            time.sleep(0.01)
        t1 = time.monotonic()
        if perf:
            perf_stop(lab, perf)
        lab.wait_sink(c0 + queued, 5)
        delivered = lab.sink_count() - c0
        cpu_db = tree_cpu(lab.devdb_pid) - cpu_db0
        res["mailcell"].append({"batch": n, "queued": queued, "queue_seconds": qsecs,
                                "seconds": t1 - t0, "delivered": delivered,
                                "rate": delivered / (t1 - t0), "capped": capped,
                                "cpu_db_ms": cpu_db / max(delivered, 1) * 1e3,
                                "cpu_worker_ms": (ru.ru_utime + ru.ru_stime) / max(delivered, 1) * 1e3})
        log("outbound: mailcell batch %d: queued in %.1f s, worker delivered %d in %.1f s (%.1f/s)%s" % (
            n, qsecs, delivered, t1 - t0, delivered / (t1 - t0), " CAPPED" if capped else ""))
        if lab.tracer and n == lab.args.relay_batches[-1]:
            port, _ = lab.listen("submission", BIN / "smtp-session", "-c", conf, "--submission")
            submit(port, 1, 1, (sender, PASSWORD), "trace%d@remote.test", sender)
            lab.stop_listener("submission")
            tconf = lab.conf(db, port=lab.tracer.port)
            lab.tracer.take()
            run([BIN / "relay-worker", "-c", tconf, "--once"], timeout=120, env=lab.env, check=False)
            R["trace"] = trace_table(lab.tracer.take())
            R["trace_queue_size"] = n + 1
    # Postfix: the same 2,000 messages put on hold while they are injected,
    # then released: from the release until the sink has them all.
    N = lab.args.messages
    for rep in range(lab.args.runs):
        if rep > 0 and budget.left() < 60:
            break
        qsecs = submit(lab.pf_hold_port, 20, N, None, "dest%d@remote.test", sender)
        end = time.monotonic() + 60
        while len(os.listdir(lab.pf_queue / "hold")) < N and time.monotonic() < end:
            time.sleep(0.05)
        c0 = lab.sink_count()
        cpu0 = tree_cpu(lab.pf_master.pid)
        t0 = time.monotonic()
        run(["postsuper", "-c", lab.pf_etc, "-H", "ALL"], timeout=60)
        run(["postqueue", "-c", lab.pf_etc, "-f"], timeout=60)
        ok = lab.wait_sink(c0 + N, 180)
        t1 = time.monotonic()
        cpu = tree_cpu(lab.pf_master.pid) - cpu0
        delivered = lab.sink_count() - c0
        res["postfix"].append({"queued": N, "queue_seconds": qsecs, "seconds": t1 - t0,
                               "delivered": delivered, "rate": delivered / (t1 - t0), "complete": ok,
                               "cpu_ms": cpu / max(delivered, 1) * 1e3})
        log("outbound: postfix run %d: queued in %.1f s, delivered %d in %.1f s" % (
            rep + 1, qsecs, delivered, t1 - t0))
        # End to end, as Postfix normally runs: first injection until the sink has all.
        c0 = lab.sink_count()
        t0 = time.monotonic()
        submit(lab.pf_port, 20, N, None, "dest%d@remote.test", sender)
        ok = lab.wait_sink(c0 + N, 180)
        t1 = time.monotonic()
        res["postfix_e2e"].append({"seconds": t1 - t0, "delivered": lab.sink_count() - c0,
                                   "rate": (lab.sink_count() - c0) / (t1 - t0)})
        log("outbound: postfix end to end run %d: %.1f s" % (rep + 1, t1 - t0))
    R["runs"] = res


# ---------------------------------------------------------------- the report

def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for l in f:
            if l.startswith("model name"):
                cpu = l.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    try:
        deb = Path("/etc/debian_version").read_text().strip()
    except OSError:
        deb = "?"
    virt = ""
    try:
        for l in run(["lscpu"], check=False).stdout.decode().splitlines():
            if l.startswith("Hypervisor vendor:"):
                virt = l.split(":", 1)[1].strip()
    except Exception:
        pass

    def ver(argv, pat=r"(.*)"):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            m = re.search(pat, (r.stdout + r.stderr).strip())
            return m.group(1) if m else "?"
        except Exception:
            return "?"

    commit = ver(["git", "-C", str(TOP), "rev-parse", "--short", "HEAD"])
    dirty = ver(["git", "--no-optional-locks", "-C", str(TOP), "status", "--porcelain",
                 "--untracked-files=no"])
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_mb": mem, "kernel": platform.release(),
            "debian": deb, "virt": virt,
            "postfix": ver(["postconf", "-dh", "mail_version"]),
            "dovecot": ver(["dovecot", "--version"]),
            "valgrind": ver(["valgrind", "--version"]),
            "mailcell": commit + (" (with uncommitted changes)" if dirty.strip() and dirty != "?" else "")}


def write_report(lab, started, wall_seconds):
    R = lab.results
    M = lab.machine
    L = []
    add = L.append
    add("# mailcell benchmarks")
    add("")
    add("Written by `make bench` (bench/bench.py) on %s UTC in %.0f s; how to run and read it: "
        "bench/README.md. Raw figures: bench/baseline.json." % (started, wall_seconds))
    add("")
    add("| machine | |")
    add("|---|---|")
    add("| CPU | %s, %d cores%s |" % (M["cpu"], M["cores"], " (%s guest)" % M["virt"] if M["virt"] not in ("", "none", "?") else ""))
    add("| RAM | %s MB |" % format(M["ram_mb"], ","))
    add("| kernel | %s |" % M["kernel"])
    add("| Debian | %s |" % M["debian"])
    add("| peers | Postfix %s, Dovecot %s (Debian's packages) |" % (M["postfix"], M["dovecot"]))
    add("| mailcell | %s, dev database `bin/mailcell-devdb` (FerretDB v1.24 on SQLite) |" % M["mailcell"])
    add("| load average | %s at the start, %s at the end (other work on the machine shares its cores) |"
        % (lab.load_start, lab.load_end))
    add("")
    add("Figures are medians of the runs shown (`runs`); ratios are mailcell ÷ peer. For rates "
        "higher is better, for times and memory lower is better.")
    add("")
    rows = summary_rows(lab)
    add("## Summary")
    add("")
    add("| benchmark | mailcell | peer | ratio | runs | |")
    add("|---|---:|---:|---:|---|---|")
    for r in rows:
        add("| %s | %s | %s | %s | %s | %s |" % r[:6])
    add("")
    report_changes(lab, rows, add)
    for section in (report_startup, report_regress, report_session, report_intake, report_large, report_pop3,
                    report_outbound, report_fix, report_method):
        try:
            section(lab, add)
        except Exception as e:  # a stage that did not run
            add("_(%s: no data: %s)_" % (section.__name__.replace("report_", ""), e))
            add("")
    for n in lab.notes:
        add("- " + n)
    RESULTS.write_text("\n".join(L) + "\n")


class PreviousRun:
    """The run recorded in bench/baseline.json, shaped like a lab for summary_rows()."""

    def __init__(self, data, args):
        self.args = args
        self.written = data.get("written", "?")
        self.mailcell = data.get("machine", {}).get("mailcell", "?")
        self.results = dict(data.get("results", {}))
        wall = data.get("startup_wall_ms")
        if wall:
            self.results["startup"] = {"wall": wall, "callgrind": {
                k: {"total": v} for k, v in data.get("instructions", {}).items()}}


def load_previous(args):
    try:
        return PreviousRun(json.loads(BASELINE.read_text()), args)
    except (OSError, ValueError):
        return None


def report_changes(lab, rows, add):
    """Each summary figure of mailcell against the previous run: what the cuts since then did."""
    prev = lab.previous
    if prev is None:
        return
    try:
        old = {r[0]: r for r in summary_rows(prev)}
    except (KeyError, TypeError, IndexError):
        return
    add("## Change since the previous run")
    add("")
    add("mailcell's figures in this run against the run recorded in bench/baseline.json before it "
        "(written %s, mailcell %s); the peers did not change. *better* is this run ÷ the previous "
        "one for rates, the previous ÷ this run for times, memory and instructions." % (prev.written, prev.mailcell))
    add("")
    add("| benchmark | previous | this run | better |")
    add("|---|---:|---:|---:|")
    for r in rows:
        o = old.get(r[0])
        if o is None or not o[6] or not r[6]:
            continue
        f = r[6] / o[6] if r[7] else o[6] / r[6]
        add("| %s | %s | %s | %s |" % (r[0], fmt(o[6], r[8], r[9]), fmt(r[6], r[8], r[9]),
                                         ("%.0f×" if f >= 10 else "%.2f×") % f))
    add("")


def verdict(r, higher_better):
    if r is None:
        return ""

    def x(f):
        return ("%.0f×" if f >= 10 else "%.1f×") % f

    if higher_better:
        return "mailcell %s faster" % x(r) if r >= 1.05 else ("mailcell %s slower" % x(1 / r) if r <= 0.95 else "even")
    return "mailcell %s less" % x(1 / r) if r <= 0.95 else ("mailcell %s more" % x(r) if r >= 1.05 else "even")


def summary_rows(lab):
    R = lab.results
    rows = []

    def row(name, m, p, unit, runs, higher_better, nd=None):
        r = ratio(m, p)
        rows.append((name, fmt(m, unit, nd), fmt(p, unit, nd), fmt_ratio(r), runs, verdict(r, higher_better),
                     m, higher_better, unit, nd))

    it = R.get("intake")
    if it:
        mc, pf = it["runs"]["mailcell"], it["runs"]["postfix"]
        row("SMTP intake, %s × 4 KB over 20 sessions (msg/s, until stored in the mailbox)"
            % format(lab.args.messages, ","),
            med([x["rate"] for x in mc]), med([x["rate"] for x in pf]), "msg/s",
            "%d / %d" % (len(mc), len(pf)), True)
        row("SMTP intake: msg/s until the last 250 (Postfix: queued, not yet in the Maildir)",
            med([x["rate"] for x in mc]), med([x["ack_rate"] for x in pf]), "msg/s",
            "%d / %d" % (len(mc), len(pf)), True)
        la = it.get("latency")
        if la:
            row("transaction latency p50, MAIL to 250 after DATA (ms)", la["mailcell"]["p50"],
                la["postfix"]["p50"], "ms", "%d txns" % la["mailcell"]["n"], False)
            row("transaction latency p99 (ms)", la["mailcell"]["p99"], la["postfix"]["p99"], "ms",
                "%d txns" % la["mailcell"]["n"], False)
    se = R.get("session")
    if se:
        rt = se["rates"]
        for w in (1, 8):
            a, b = rt.get("mailcell smtp-session|%d" % w), rt.get("Postfix smtpd|%d" % w)
            if a and b:
                row("connect+EHLO+QUIT, %d client%s (sessions/s)" % (w, "s" if w > 1 else ""),
                    a["rate"], b["rate"], "/s", "%d" % len(a["each"]), True)
        for w in (1, 8):
            a, b = rt.get("mailcell pop3-session|%d" % w), rt.get("Dovecot pop3|%d" % w)
            if a and b:
                row("POP3 connect+QUIT, %d client%s (sessions/s)" % (w, "s" if w > 1 else ""),
                    a["rate"], b["rate"], "/s", "%d" % len(a["each"]), True)
        for w in (1, 8):
            a, b = rt.get("mailcell smtp-session|%d" % w), rt.get("bare|%d" % w)
            if a and b:
                row("connect+EHLO+QUIT vs the bare floor, %d client%s" % (w, "s" if w > 1 else ""),
                    a["rate"], b["rate"], "/s", "%d" % len(a["each"]), True)
        mm = se["memory"]
        for key, peer, label in (("mailcell smtp-session|rcpt", "Postfix smtpd|rcpt", "SMTP session after RCPT"),
                                 ("mailcell pop3-session|login", "Dovecot pop3|login", "POP3 session after login+STAT")):
            if key in mm and peer in mm:
                row("%s: PSS (kB)" % label, mm[key]["pss"], mm[peer]["pss"], "kB", "3", False)
                row("%s: peak RSS, VmHWM (kB)" % label, mm[key]["hwm"], mm[peer]["hwm"], "kB", "3", False)
    st = R.get("startup")
    if st:
        w = st["wall"]
        row("EHLO/QUIT session through a pipe vs bare (ms, exec to exit)", w["smtp_ehlo_quit"]["session_ms"],
            w["bare_ehlo_quit"]["session_ms"], "ms", "%d runs" % w["smtp_ehlo_quit"]["n"], False, 2)
        row("EHLO/QUIT session through a pipe vs bare (CPU ms)", w["smtp_ehlo_quit"]["cpu_ms"],
            w["bare_ehlo_quit"]["cpu_ms"], "ms", "%d runs" % w["smtp_ehlo_quit"]["n"], False, 2)
        cg = st["callgrind"]
        row("EHLO/QUIT session vs bare (instructions)", cg["smtp_ehlo_quit"]["total"],
            cg["bare_ehlo_quit"]["total"], "", "1", False)
    lg = R.get("large")
    if lg:
        x = lg["results"]
        for size in ("1 MB", "15 MB"):
            a, b = x.get("mailcell|smtp|" + size), x.get("postfix|smtp|" + size)
            if a and b:
                row("%s message in by SMTP (MB/s)" % size, a["mbps"], b["mbps"], "MB/s", str(a["runs"]), True)
            a, b = x.get("mailcell|pop3|" + size), x.get("dovecot|pop3|" + size)
            if a and b:
                row("%s message out by POP3 RETR (MB/s)" % size, a["mbps"], b["mbps"], "MB/s", str(a["runs"]), True)
        for proto, peer in (("smtp", "postfix"), ("pop3", "dovecot")):
            a, b = x.get("mailcell|%s|15 MB" % proto), x.get("%s|%s|15 MB" % (peer, proto))
            if a and b:
                row("%s: peak RSS during a 15 MB message (kB)" % proto.upper(), a["hwm_msg"], b["hwm_msg"],
                    "kB", str(a["runs"]), False)
    po = R.get("pop3")
    if po:
        mc, dv = po["runs"]["mailcell"], po["runs"]["dovecot"]
        capped = [x for x in mc if not x["complete"]]
        row("POP3: STAT, LIST, UIDL, RETR all of %s messages (msg/s)" % format(lab.args.pop3_messages, ","),
            med([x["rate"] for x in mc]), med([x["rate"] for x in dv]), "msg/s",
            "%d%s / %d" % (len(mc), " (capped at %d s: %d of %d)" % (lab.args.pop3_cap, capped[0]["retrieved"],
                                                                   capped[0]["messages"]) if capped else "",
                           len(dv)), True)
    ob = R.get("outbound")
    if ob:
        mc, pf = ob["runs"]["mailcell"], ob["runs"]["postfix"]
        if mc and pf:
            last = mc[-1]
            row("relay to smtp-sink, delivery only (msg/s; mailcell: %d queued, Postfix: %d)" % (
                last["queued"], pf[0]["queued"]), last["rate"], med([x["rate"] for x in pf]), "msg/s",
                "1 / %d" % len(pf), True)
            full = [x for x in mc if x["queued"] >= lab.args.messages and not x["capped"]]
            if full:
                row("relay of %s queued messages (s)" % format(lab.args.messages, ","),
                    full[-1]["seconds"], med([x["seconds"] for x in pf]), "s", "1 / %d" % len(pf), False)
            else:
                est = relay_estimate(mc, lab.args.messages)
                if est:
                    row("relay of 2,000 queued messages (s; mailcell extrapolated from the batches)",
                        est, med([x["seconds"] for x in pf]), "s", "fit / %d" % len(pf), False)
    return rows


def relay_estimate(mc, n):
    """Fits t = a*n + b*n^2 through the batches (the claim scan grows with the queue)."""
    pts = [(x["delivered"], x["seconds"]) for x in mc if x["delivered"] > 0 and not x["capped"]]
    if len(pts) < 2:
        return None
    # least squares for a, b without numpy
    s11 = sum(q * q for q, _ in pts)
    s12 = sum(q ** 3 for q, _ in pts)
    s22 = sum(q ** 4 for q, _ in pts)
    t1 = sum(q * t for q, t in pts)
    t2 = sum(q * q * t for q, t in pts)
    det = s11 * s22 - s12 * s12
    if det == 0:
        return None
    a = (t1 * s22 - t2 * s12) / det
    b = (s11 * t2 - s12 * t1) / det
    return a * n + b * n * n


def report_startup(lab, add):
    st = lab.results["startup"]
    cg, w = st["callgrind"], st["wall"]
    add("## Start-up budget")
    add("")
    add("Each row is one program run on pipes (fd 0/1), like `printf 'EHLO x\\r\\nQUIT\\r\\n' | "
        "bin/smtp-session`. Instructions: `valgrind --tool=callgrind`, the whole process (exec "
        "to exit). Time: `build/bench/spawnloop`, N runs in rounds that alternate the programs; "
        "the median over the rounds of each round's median run: *to greeting* = fork+exec "
        "until the first byte of the greeting, *session* = until the process is reaped; CPU = "
        "user+system time of the session process (getrusage). The database rows talk to the "
        "dev database (loopback TCP).")
    add("")
    add("| program and input | instructions | ms to greeting | ms per session | CPU ms per session | runs × rounds |")
    add("|---|---:|---:|---:|---:|---|")
    labels = [("bare_ehlo_quit", "bench/bare.c (libc only): EHLO, QUIT"),
              ("bare_linked_ehlo_quit", "bare.c linked to libssl, libcrypto, libcrypt (unused): EHLO, QUIT"),
              ("smtp_quit", "smtp-session: QUIT (exec to greeting)"),
              ("smtp_ehlo_quit", "smtp-session: EHLO, QUIT"),
              ("pop3_quit", "pop3-session: QUIT"),
              ("smtp_rcpt_quit", "smtp-session: EHLO, MAIL, RCPT, QUIT (loads store-lite.so, connects)"),
              ("smtp_rcpt_quit_full", "the same with store.so (Debian's libmongoc: a URI with a login, TLS or compression)"),
              ("smtp_txn_4k", "smtp-session: one 4 KB transaction"),
              ("pop3_login_quit", "pop3-session: USER, PASS, STAT, QUIT"),
              ("pop3_retr_100k", "pop3-session: USER, PASS, STAT, RETR 100 KB, QUIT")]
    for key, label in labels:
        ww = w.get(key, {})
        add("| %s | %s | %s | %s | %s | %s |" % (label, fmt(cg[key]["total"]) if key in cg else "—",
                                                fmt(ww.get("greet_ms"), nd=2), fmt(ww.get("session_ms"), nd=2),
                                                fmt(ww.get("cpu_ms"), nd=2),
                                                "%d × %d" % (ww["n"] // max(ww["repeats"], 1), ww["repeats"])
                                                if ww else "—"))
    add("")
    e, b = w["smtp_ehlo_quit"]["session_ms"], w["bare_ehlo_quit"]["session_ms"]
    ce, cb = w["smtp_ehlo_quit"]["cpu_ms"], w["bare_ehlo_quit"]["cpu_ms"]
    ie, ib = cg["smtp_ehlo_quit"]["total"], cg["bare_ehlo_quit"]["total"]
    bl = w["bare_linked_ehlo_quit"]["session_ms"]
    ld = cg["smtp_ehlo_quit"].get("objects", {}).get("ld-linux-x86-64.so", 0)
    add("**Is an EHLO/QUIT session at most 2× the bare floor?** In wall time per session, %s: "
        "%.2f ms against %.2f ms (%.2f×); in CPU time, %s: %.2f ms against %.2f ms (%.2f×); in "
        "instructions, %s: %s against %s (%.1f×, of which the dynamic linker %s; fork, exec and "
        "page faults outweigh instructions in time). For scale: bare.c linked to libssl, "
        "libcrypto and libcrypt, which it never calls, takes %.2f ms."
        % ("yes" if e <= 2 * b else "no", e, b, e / b, "yes" if ce <= 2 * cb else "no", ce, cb, ce / cb,
           "yes" if ie <= 2 * ib else "no", fmt(ie), fmt(ib), ie / ib, fmt(ld), bl))
    add("")
    start = cg["smtp_rcpt_quit"]["total"] - cg["smtp_ehlo_quit"]["total"]
    txn = cg["smtp_txn_4k"]["total"] - cg["smtp_rcpt_quit"]["total"]
    ws = w["smtp_rcpt_quit"]["session_ms"] - w["smtp_ehlo_quit"]["session_ms"]
    wt = w["smtp_txn_4k"]["session_ms"] - w["smtp_rcpt_quit"]["session_ms"]
    para = ("**A mail transaction's start-up.** Loading the store module (store-lite.so for this "
        "URI) and connecting to the database, i.e. (EHLO, MAIL, RCPT, QUIT) − (EHLO, QUIT): "
        "%s instructions, %.2f ms. The transaction itself, (4 KB transaction) − (EHLO, MAIL, "
        "RCPT, QUIT): %s instructions, %.2f ms. The start-up is %.1f× the transaction in "
        "instructions and %.1f× in time%s."
        % (fmt(start), ws, fmt(txn), wt, start / max(txn, 1), ws / wt if wt > 0 else float("nan"),
           " (the transaction's time is mostly the database's: fsync and the dev database's work, "
           "see below)" if wt > ws else ""))
    if "smtp_rcpt_quit_full" in cg and "smtp_rcpt_quit_full" in w:
        sf = cg["smtp_rcpt_quit_full"]["total"] - cg["smtp_ehlo_quit"]["total"]
        wf = w["smtp_rcpt_quit_full"]["session_ms"] - w["smtp_ehlo_quit"]["session_ms"]
        para += (" With store.so instead (Debian's libmongoc, which a URI with a login, TLS or "
                 "compression needs): %s instructions, %.2f ms, %.0f× store-lite.so's instructions."
                 % (fmt(sf), wf, sf / max(start, 1)))
    add(para)
    add("")
    verdict = intake_profile(lab)
    if verdict:
        add(verdict)
        add("")
    retr = cg["pop3_retr_100k"]["total"] - cg["pop3_login_quit"]["total"]
    add("A POP3 RETR of 100 KB, (login, RETR, QUIT) − (login, QUIT): %s instructions; the login "
        "alone is %s (yescrypt in PASS, the store module, the connection)." % (fmt(retr), fmt(cg["pop3_login_quit"]["total"])))
    add("")
    add("### Instructions by object file (self cost, `callgrind_annotate --inclusive=no` summed per object)")
    add("")
    cols = ["bare_ehlo_quit", "smtp_ehlo_quit", "smtp_rcpt_quit", "smtp_txn_4k", "pop3_retr_100k"]
    objs = {}
    for c in cols:
        for o, v in cg[c]["objects"].items():
            objs[o] = max(objs.get(o, 0), v)
    top = sorted(objs, key=lambda o: -objs[o])[:14]
    add("| object | " + " | ".join(c.replace("_", " ") for c in cols) + " |")
    add("|---|" + "---:|" * len(cols))
    for o in top:
        add("| %s | %s |" % (o, " | ".join(fmt(cg[c]["objects"].get(o)) if cg[c]["objects"].get(o) else "·"
                                          for c in cols)))
    add("| **total** | %s |" % " | ".join(fmt(cg[c]["total"]) for c in cols))
    add("")
    for name in ("smtp_ehlo_quit", "smtp_txn_4k"):
        f = st.get("top_functions", {}).get(name)
        if f:
            add("Top functions (self) of %s: %s." % (name.replace("_", " "), "; ".join(
                "%s %s" % (fmt(ir), re.sub(r"^.*?:", "", fn)[:70]) for ir, fn in f[:6])))
            add("")
    add("### Cuts so far")
    add("")
    add("| step | EHLO/QUIT session through a pipe | bare C program | how measured |")
    add("|---|---:|---:|---|")
    add("| all libraries linked (OpenSSL, libmongoc, libspf2, libopendkim, libopendmarc, libsystemd, libcrypt) | 14.4 ms | — | recorded before: 300 sessions through a pipe |")
    add("| journal written without libsystemd; store and inbound checks as modules (dlopen at first use) | 3.0 ms | 2.8 ms | recorded before: 300 sessions through a pipe |")
    sh = st.get("shell_loop_ms", {})
    if sh:
        add("| this run, the recorded way | %.2f ms | %.2f ms | a shell loop: `printf ... \\| PROGRAM` 300 times, median of %d |"
            % (sh["smtp-session"], sh["bare"], w["smtp_ehlo_quit"]["repeats"]))
    add("| this run, the program alone | %.2f ms | %.2f ms | spawnloop: %d sessions in %d rounds, median (the shell's fork and printf are not in it) |"
        % (e, b, w["smtp_ehlo_quit"]["n"], w["smtp_ehlo_quit"]["repeats"]))
    prev = getattr(lab, "previous", None)
    pw = (prev.results.get("startup", {}).get("wall", {}) if prev else {})
    if pw.get("smtp_ehlo_quit") and pw.get("bare_ehlo_quit"):
        add("| the previous recorded run (%s), the program alone | %.2f ms | %.2f ms | spawnloop, as in this run |"
            % (prev.written, pw["smtp_ehlo_quit"]["session_ms"], pw["bare_ehlo_quit"]["session_ms"]))
    needed = run(["readelf", "-d", BIN / "smtp-session"], check=False).stdout.decode("utf-8", "replace")
    libs = re.findall(r"Shared library: \[([^\]]+)\]", needed)
    add("| this run: smtp-session links %s | %.2f ms | %.2f ms | spawnloop (above) |" % (", ".join(libs), e, b))
    bl = w["bare_linked_ehlo_quit"]["session_ms"]
    if any(l.startswith(("libssl", "libcrypto", "libcrypt")) for l in libs):
        add("| next cut (not made): TLS and libcrypt as modules too — estimated as this run minus (bare.c linked to them − bare.c) | %s | %.2f ms | bare-linked − bare = %.2f ms (CPU %.2f ms), %s instructions |"
            % ("%.2f ms" % (e - (bl - b)) if bl > b else "within noise", b, bl - b,
               w["bare_linked_ehlo_quit"]["cpu_ms"] - w["bare_ehlo_quit"]["cpu_ms"],
               fmt(cg["bare_linked_ehlo_quit"]["total"] - cg["bare_ehlo_quit"]["total"])))
    add("")
    pc = (prev.results.get("startup", {}).get("callgrind", {}) if prev else {})
    if pc.get("smtp_rcpt_quit") and pc.get("smtp_ehlo_quit"):
        add("A mail transaction's start-up (RCPT session − EHLO/QUIT session, instructions): %s in the "
            "previous run, %s in this one (see \"What is ours to fix\" for each cut)."
            % (fmt(pc["smtp_rcpt_quit"]["total"] - pc["smtp_ehlo_quit"]["total"]),
               fmt(cg["smtp_rcpt_quit"]["total"] - cg["smtp_ehlo_quit"]["total"])))
        add("")
    add("| step | a transaction's start-up: RCPT session − EHLO/QUIT session, instructions | how measured |")
    add("|---|---:|---|")
    add("| store.so on Debian's libmongoc as it is | 23,036,996 | recorded before (run of 2026-11-29 02:21) |")
    add("| store.so skipping libmongoc's OpenSSL self-check and DRBG start-up (common/store_module.c) | 14,856,018 | recorded before (run of 2026-11-29 06:45) |")
    base = cg["smtp_ehlo_quit"]["total"]
    if "smtp_rcpt_quit_full" in cg:
        add("| store.so, this run (a URI with a login, TLS or compression) | %s | callgrind (above) |"
            % fmt(cg["smtp_rcpt_quit_full"]["total"] - base))
    add("| store-lite.so, this run (Debian's mongo-c-driver source, static, without TLS/SASL/ICU/compression) | %s | callgrind (above) |"
        % fmt(cg["smtp_rcpt_quit"]["total"] - base))
    add("")


def intake_parts(lab):
    """Per message of the intake, where the CPU goes (name, ms): the session's
    exec, its store start-up, its transaction, and the dev database; or None."""
    R = lab.results
    w = R.get("startup", {}).get("wall", {})
    runs = R.get("intake", {}).get("runs", {}).get("mailcell")
    if not runs or not all(k in w for k in ("smtp_ehlo_quit", "smtp_rcpt_quit", "smtp_txn_4k")):
        return None
    return [
        ("the session's exec, greeting, EHLO and QUIT", w["smtp_ehlo_quit"]["cpu_ms"]),
        ("the transaction's start-up (store module, connection)",
         w["smtp_rcpt_quit"]["cpu_ms"] - w["smtp_ehlo_quit"]["cpu_ms"]),
        ("the transaction in the session (MAIL to the 250 after DATA)",
         w["smtp_txn_4k"]["cpu_ms"] - w["smtp_rcpt_quit"]["cpu_ms"]),
        ("the dev database (intake, per message)", med([x["cpu_db_ms"] for x in runs])),
    ]


def intake_profile(lab):
    """The verdict on the start-up's share of the intake, or None without data."""
    parts = intake_parts(lab)
    if not parts:
        return None
    runs = lab.results["intake"]["runs"]["mailcell"]
    largest = max(parts, key=lambda p: p[1])
    start = parts[1]
    return ("**Is a transaction's start-up still the largest cost in the intake profile?** %s. "
            "CPU per message: %s; all of the session during the intake, measured on its own: "
            "%.2f ms. The largest is %s."
            % ("No" if largest is not start else "Yes",
               "; ".join("%s %.2f ms" % (n, v) for n, v in parts),
               med([x["cpu_session_ms"] for x in runs]), largest[0]))


def report_regress(lab, add):
    cg = lab.results["startup"]["callgrind"]
    add("## Instruction counts (regression figures)")
    add("")
    add("`valgrind --tool=callgrind`, whole process, input on a pipe; repeatable to about 1% "
        "on the same machine and Debian packages (also in bench/baseline.json, key "
        "`instructions`). A change of more than a few percent is a regression or a win.")
    add("")
    add("| figure | instructions |")
    add("|---|---:|")
    rows = [("one SMTP transaction, 4 KB, whole session (EHLO, MAIL, RCPT, DATA, QUIT)", cg["smtp_txn_4k"]["total"]),
            ("  of which the transaction (DATA and storing): 4 KB session − RCPT session",
             cg["smtp_txn_4k"]["total"] - cg["smtp_rcpt_quit"]["total"]),
            ("  of which store.so and connecting: RCPT session − EHLO/QUIT session",
             cg["smtp_rcpt_quit"]["total"] - cg["smtp_ehlo_quit"]["total"]),
            ("one POP3 RETR of 100 KB, whole session (USER, PASS, STAT, RETR, QUIT)", cg["pop3_retr_100k"]["total"]),
            ("  of which the RETR: RETR session − login session",
             cg["pop3_retr_100k"]["total"] - cg["pop3_login_quit"]["total"]),
            ("  of which yescrypt (libcrypt) in PASS", cg["pop3_login_quit"]["objects"].get("libcrypt.so", 0)),
            ("EHLO/QUIT session", cg["smtp_ehlo_quit"]["total"]),
            ("exec to greeting (QUIT at once): smtp-session", cg["smtp_quit"]["total"]),
            ("exec to greeting (QUIT at once): pop3-session", cg["pop3_quit"]["total"]),
            ("bare.c EHLO/QUIT (the floor)", cg["bare_ehlo_quit"]["total"])]
    for label, v in rows:
        add("| %s | %s |" % (label.replace("  of which", "&nbsp;&nbsp;of which"), fmt(v)))
    add("")


def report_session(lab, add):
    se = lab.results["session"]
    rt, mm = se["rates"], se["memory"]
    add("## Session cost")
    add("")
    add("Sessions per second of `build/bench/connloop` (C): each connection reads the greeting, "
        "sends EHLO, reads the reply, sends QUIT, reads 221 (POP3: greeting, QUIT). %.1f s per "
        "measurement, median of the repeats. mailcell and bare run under "
        "`systemd-socket-activate --inetd` (a fork and exec per connection); Postfix's smtpd "
        "processes are reused across connections; Dovecot starts a pop3-login process per "
        "connection (Debian's default service_count = 1). Server CPU: the whole process tree "
        "of the activator, Postfix's master or Dovecot's master (fork and exec included), "
        "divided by the sessions." % lab.args.session_seconds)
    add("")
    add("| server | 1 client /s | p50 ms | 8 clients /s | p50 ms | server CPU ms per session (1 / 8) | each run (1 / 8) |")
    add("|---|---:|---:|---:|---:|---:|---|")
    for name in ("bare", "mailcell smtp-session", "Postfix smtpd", "mailcell pop3-session", "Dovecot pop3"):
        a, b = rt.get(name + "|1"), rt.get(name + "|8")
        if a and b:
            add("| %s | %s | %s | %s | %s | %s / %s | %s / %s |" % (
                name, fmt(a["rate"]), fmt(a["p50_ms"], nd=2), fmt(b["rate"]), fmt(b["p50_ms"], nd=2),
                fmt(a.get("cpu_ms"), nd=2), fmt(b.get("cpu_ms"), nd=2),
                ", ".join(map(str, a["each"])), ", ".join(map(str, b["each"]))))
    add("")
    add("Memory of one session held open mid-way (kB; `/proc/PID/smaps_rollup` and `status`; "
        "median of 3). PSS counts shared pages divided by their sharers; private = "
        "Private_Clean + Private_Dirty; peak = VmHWM. Postfix's smtpd has served earlier "
        "connections, so its peak includes them.")
    add("")
    add("| process, moment | PSS | private | RSS | peak RSS (VmHWM) |")
    add("|---|---:|---:|---:|---:|")
    for k in ("bare|ehlo", "mailcell smtp-session|ehlo", "mailcell smtp-session|rcpt",
              "mailcell smtp-session|data", "Postfix smtpd|ehlo", "Postfix smtpd|rcpt", "Postfix smtpd|data",
              "mailcell pop3-session|login", "mailcell pop3-session|retr", "Dovecot pop3|login",
              "Dovecot pop3|retr"):
        if k in mm:
            v = mm[k]
            n, moment = k.split("|")
            moment = {"ehlo": "after EHLO", "rcpt": "after RCPT", "data": "after a 4 KB message",
                      "login": "after login and STAT (20 messages)", "retr": "after RETR 1"}[moment]
            add("| %s, %s | %s | %s | %s | %s |" % (n, moment, fmt(v["pss"]), fmt(v["uss"]), fmt(v["rss"]),
                                                  fmt(v["hwm"])))
    add("")


def report_intake(lab, add):
    it = lab.results["intake"]
    mc, pf = it["runs"]["mailcell"], it["runs"]["postfix"]
    add("## SMTP intake")
    add("")
    add("`smtp-source -s 20 -m %d -l 4096` (a new connection per message, no pipelining). "
        "mailcell: each run into a new database (`intake1`, ...), timed until smtp-source has "
        "its last 250, which mailcell sends once the message is stored. Postfix: the same, "
        "and until the last message is in the Maildir (virtual(8), fsync'd). CPU per message: "
        "mailcell's sessions (the activator's reaped children) and the dev database process; "
        "Postfix: master and all its processes." % lab.args.messages)
    add("")
    add("| run | mailcell msg/s | stored | session CPU ms/msg | dev db CPU ms/msg | Postfix msg/s to 250 | Postfix msg/s to Maildir | Postfix CPU ms/msg |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i in range(max(len(mc), len(pf))):
        a = mc[i] if i < len(mc) else {}
        b = pf[i] if i < len(pf) else {}
        add("| %d | %s%s | %s | %s | %s | %s | %s | %s |" % (
            i + 1, fmt(a.get("rate")), " (capped)" if a.get("capped") else "", fmt(a.get("stored")),
            fmt(a.get("cpu_session_ms")), fmt(a.get("cpu_db_ms")), fmt(b.get("ack_rate")), fmt(b.get("rate")),
            fmt(b.get("cpu_ms"))))
    add("")
    la = it.get("latency")
    if la:
        add("Latency with our own client (20 threads, then 1, each transaction on a new "
            "connection, one command at a time; mailcell into a new database): MAIL FROM to the "
            "250 after DATA, and connect to greeting.")
        add("")
        add("| server | clients | transactions | p50 ms | p90 ms | p99 ms | slowest 5 ms | greeting p50 ms | greeting p99 ms |")
        add("|---|---:|---:|---:|---:|---:|---|---:|---:|")
        for k in ("mailcell", "postfix", "mailcell|1", "postfix|1"):
            v = la.get(k)
            if not v or not v["n"]:
                continue
            add("| %s | %d | %d | %s | %s | %s | %s | %s | %s |"
                % (k.split("|")[0], v.get("threads", 20), v["n"], fmt(v["p50"], nd=1),
                   fmt(v.get("p90"), nd=1), fmt(v["p99"], nd=1),
                   ", ".join("%.0f" % x for x in v.get("slowest", [])),
                   fmt(v["greet_p50"], nd=2), fmt(v["greet_p99"], nd=2)))
        add("")
        one, many = la.get("mailcell|1"), la.get("mailcell")
        if one and one["n"] and many and many["n"]:
            add("mailcell's tail is %s: p99 %.1f ms with one client against %.1f ms with 20 "
                "(p50 %.1f against %.1f). With one client the dev database's commits never wait "
                "for each other; with 20 they queue on SQLite's single writer, whose busy handler "
                "sleeps a waiting writer in growing steps (up to 100 ms), so some wait far longer "
                "than others. Postfix writes each message to its own file."
                % ("concurrency's" if many["p99"] > 3 * one["p99"] else "not from concurrency",
                   one["p99"], many["p99"], one["p50"], many["p50"]))
            add("")
    if it.get("trace"):
        add("The database commands of one 4 KB transaction into the database holding run 1's "
            "%d messages (a tracing proxy in front of the dev database; time = until its reply):"
            % it["trace_db_size"])
        add("")
        add_trace(add, it["trace"])
    prof = lab.results.get("profiles", {}).get("intake")
    if prof:
        add_profile(add, prof, "the dev database during intake run 1")


def add_trace(add, rows):
    add("| command | collection | filter | count | ms |")
    add("|---|---|---|---:|---:|")
    for name, coll, detail, n, ms in rows:
        add("| %s | %s | `%s` | %d | %.1f |" % (name, coll, detail.replace("|", "\\|") or "—", n, ms))
    add("")


def add_profile(add, prof, what):
    if prof.get("handlers"):
        add("perf profile of %s (inclusive share of its samples): %s; inside: %s." % (
            what, ", ".join("%s %.0f%%" % (re.sub(r".*\.Msg", "Msg", s), p) for p, s in prof["handlers"][:5]),
            ", ".join("%s %.0f%%" % (re.sub(r"^(handler|backends)/", "", s), p) for p, s in prof["parts"][:5])))
        add("")


def report_large(lab, add):
    x = lab.results["large"]["results"]
    add("## Large messages")
    add("")
    add("One message by SMTP (DATA, timed from the first octet to the 250) and out by POP3 "
        "(RETR, timed to the final dot), each mailcell run on a new database; MB/s of message "
        "octets. Peak RSS (VmHWM, kB) of the session process: for the whole session, and "
        "during the message alone (VmHWM reset to the current RSS with `echo 5 > "
        "/proc/PID/clear_refs` just before DATA or RETR). CPU: mailcell's session and dev "
        "database during the message.")
    add("")
    add("| direction | size | mailcell MB/s | peer MB/s | mailcell peak, session / message | peer peak, session / message | mailcell CPU s, session + db |")
    add("|---|---|---:|---:|---:|---:|---:|")
    for proto, peer in (("smtp", "postfix"), ("pop3", "dovecot")):
        for size in ("1 MB", "15 MB"):
            a, b = x.get("mailcell|%s|%s" % (proto, size)), x.get("%s|%s|%s" % (peer, proto, size))
            if a:
                add("| %s (%s) | %s | %s | %s | %s / %s | %s | %s |" % (
                    "in, SMTP" if proto == "smtp" else "out, POP3 RETR", "Postfix smtpd" if peer == "postfix"
                    else "Dovecot pop3", size, fmt(a["mbps"]), fmt(b["mbps"]) if b else "—", fmt(a["hwm"]),
                    fmt(a["hwm_msg"]), "%s / %s" % (fmt(b["hwm"]), fmt(b["hwm_msg"])) if b else "—",
                    "%.2f + %.2f" % (a["cpu_session"], a["cpu_db"]) if a.get("cpu_session") is not None else "—"))
    add("")
    for proto, name in (("smtp", "smtp-session"), ("pop3", "pop3-session")):
        a, b = x.get("mailcell|%s|1 MB" % proto), x.get("mailcell|%s|15 MB" % proto)
        if a and b:
            grow = b["hwm_msg"] - a["hwm_msg"]
            add("- %s: peak RSS during a 1 MB message %s kB, during a 15 MB message %s kB: %s." % (
                name, fmt(a["hwm_msg"]), fmt(b["hwm_msg"]),
                "does not grow with the message (%+d kB)" % grow if grow < 2048 else
                "**grows with the message (%+d kB)**" % grow))
    add("")


def report_pop3(lab, add):
    po = lab.results["pop3"]
    mc, dv = po["runs"]["mailcell"], po["runs"]["dovecot"]
    add("## POP3: a 1,000-message mailbox")
    add("")
    add("One session: USER, PASS, STAT, LIST, UIDL, then RETR 1 to 1,000 one at a time, QUIT "
        "(no DELE). The same messages (1 to 2.5 KB, with mailcell's Return-Path and Received "
        "lines) in mailcell's store and in Dovecot's Maildir. mailcell's mailbox was filled "
        "over SMTP in %.0f s; a pass stops after %d s (capped) and counts what it retrieved. "
        "CPU per message: mailcell's session and dev database; Dovecot: all its processes."
        % (po.get("fill_seconds", 0), lab.args.pop3_cap))
    add("")
    add("| run | mailcell s | retrieved | msg/s | CPU ms/msg | Dovecot s | msg/s | CPU ms/msg |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i in range(max(len(mc), len(dv))):
        a = mc[i] if i < len(mc) else {}
        b = dv[i] if i < len(dv) else {}
        add("| %d | %s | %s | %s | %s | %s | %s | %s |" % (
            i + 1, fmt(a.get("seconds")), "%d of %d" % (a["retrieved"], a["messages"]) if a else "—",
            fmt(a.get("rate")), fmt(a.get("cpu_ms")), fmt(b.get("seconds")), fmt(b.get("rate")),
            fmt(b.get("cpu_ms"))))
    add("")
    if po.get("trace_retr"):
        add("The database commands of one RETR in that mailbox:")
        add("")
        add_trace(add, po["trace_retr"])
    prof = lab.results.get("profiles", {}).get("pop3")
    if prof:
        add_profile(add, prof, "the dev database during the first mailcell pass")


def report_outbound(lab, add):
    ob = lab.results["outbound"]
    mc, pf, e2e = ob["runs"]["mailcell"], ob["runs"]["postfix"], ob["runs"]["postfix_e2e"]
    add("## Outbound relay")
    add("")
    add("mailcell: messages to `destN@remote.test` submitted with AUTH PLAIN over "
        "`smtp-session --submission` (20 sessions, several transactions each), then one "
        "`relay-worker --once` (`relay_host = [127.0.0.1]:SINK`) timed until it exits; the sink "
        "(Postfix's smtp-sink) counts what arrived. Postfix: the same messages injected into a "
        "listener that puts them on hold, released (`postsuper -H ALL; postqueue -f`), timed until "
        "the sink has them all; and end to end (normal listener, first injection until the sink "
        "has all). mailcell runs batches of growing size in new databases: a full 2,000 does "
        "not fit in the time bound (see \"what is ours to fix\").")
    add("")
    add("| who | queued | submit s | deliver s | delivered | msg/s | CPU ms/msg |")
    add("|---|---:|---:|---:|---:|---:|---:|")
    for a in mc:
        add("| mailcell relay-worker (batch %d) | %d | %s | %s%s | %d | %s | worker %s + dev db %s |" % (
            a["batch"], a["queued"], fmt(a["queue_seconds"]), fmt(a["seconds"]), " (capped)" if a["capped"] else "",
            a["delivered"], fmt(a["rate"]), fmt(a.get("cpu_worker_ms")), fmt(a["cpu_db_ms"])))
    for i, a in enumerate(pf):
        add("| Postfix, run %d | %d | %s | %s | %d | %s | %s |" % (
            i + 1, a["queued"], fmt(a["queue_seconds"]), fmt(a["seconds"]), a["delivered"], fmt(a["rate"]),
            fmt(a["cpu_ms"])))
    for i, a in enumerate(e2e):
        add("| Postfix end to end, run %d | %d | — | %s (total) | %d | %s | |" % (
            i + 1, a["delivered"], fmt(a["seconds"]), a["delivered"], fmt(a["rate"])))
    add("")
    est = relay_estimate(mc, lab.args.messages)
    if est:
        add("Fitting t = a·n + b·n² through mailcell's batches gives %.0f s for %d queued messages "
            "(Postfix: %.1f s)." % (est, lab.args.messages, med([x["seconds"] for x in pf]) or 0))
        add("")
    if ob.get("trace"):
        add("The database commands of one `relay-worker --once` delivering 1 message, with %d "
            "items (done or due) in the outbound collection:" % ob["trace_queue_size"])
        add("")
        add_trace(add, ob["trace"])
    prof = lab.results.get("profiles", {}).get("relay")
    if prof:
        add_profile(add, prof, "the dev database during the largest relay batch")


def report_fix(lab, add):
    add("## What is ours to fix")
    add("")
    R = lab.results
    st = R.get("startup", {})
    cg = st.get("callgrind", {})
    w = st.get("wall", {})
    add("Where mailcell loses, the cause as the database command traces, the perf profiles of the "
        "dev database and the callgrind counts above show it, and what has been done about it. "
        "The dev database (FerretDB v1 on SQLite) pushes down to SQLite only a filter that is "
        "exactly `{_id: <string or ObjectId>}`; anything else, and every sort, is done in Go over "
        "the whole collection, so the store's queries are written as primary-key reads wherever a "
        "message's path depends on them, and `mailcell db init` creates the indexes MongoDB uses "
        "for the rest.")
    add("")
    n = 1
    it = R.get("intake", {})
    if it:
        tr = it.get("trace") or []
        mc = it["runs"]["mailcell"]
        pf = it["runs"]["postfix"]
        prof = R.get("profiles", {}).get("intake", {})
        cmds = ", ".join("%s %s%s" % (r[0], r[1], " ×%d" % r[3] if r[3] > 1 else "") for r in tr)
        add("%d. **Intake.** Fixed: bodies were written through libmongoc's GridFS bucket, which "
            "looks for an existing file (`find bodies.files {_id: 1}`, a full scan on the dev "
            "database: 79%% of its time in the run of 2026-11-29 02:21) and lists both collections' indexes "
            "before every upload. The store now writes chunks and the files document with plain "
            "inserts. One 4 KB transaction's commands are now: %s. Per message: mailcell %s ms of "
            "session CPU and %s ms of dev-database CPU, against %s ms for all of Postfix (smtpd, "
            "cleanup, qmgr, virtual). The largest part of a message's cost is now %s (see the "
            "intake profile under \"Start-up budget\"; the session's start-up is item %d); the dev "
            "database's cost is per insert (each a SQLite transaction with an fsync of its WAL)%s."
            % (n, cmds or "(no trace)", fmt(med([x["cpu_session_ms"] for x in mc]), nd=1),
               fmt(med([x["cpu_db_ms"] for x in mc]), nd=1), fmt(med([x["cpu_ms"] for x in pf]), nd=1),
               max(intake_parts(lab) or [("?", 0)], key=lambda p: p[1])[0],
               n + 3, "; its profile: " + ", ".join("%s %.0f%%" % (h, p) for p, h in prof.get("handlers", [])[:3])
               if prof.get("handlers") else ""))
        add("")
        n += 1
    po = R.get("pop3", {})
    if po:
        tr = po.get("trace_retr") or []
        cmds = ", ".join("%s %s `%s` %.1f ms" % (r[0], r[1], r[2], r[4]) for r in tr)
        lg = R.get("large", {}).get("results", {})
        l15 = lg.get("mailcell|pop3|15 MB")
        add("%d. **RETR.** Fixed: the chunks were asked for with `{files_id: ...}` sorted by `n`, "
            "which the dev database answered by decoding and sorting every chunk in the database "
            "(a mailbox pass was quadratic: 10.7 messages/s in the run of 2026-11-29 02:21). Chunks now have "
            "computable ids (`<files_id>-<n>`) and are read by `_id`; a RETR takes the body's "
            "length from the mailbox entry and its chunk count from chunk 0, without the files "
            "document, and the session keeps each entry's head and body id from the login's "
            "listing, so a small message is one primary-key read (three before): %s; the pass does %s "
            "messages/s where Dovecot does %s. Large messages (15 MB out at %s MB/s) are now "
            "bounded by the dev database itself: FerretDB v1 keeps each document as JSON text in "
            "a SQLite row and finds even an `_id` by evaluating `json_extract` over the rows, so "
            "with 255 KB chunks a lookup costs time in proportion to all the chunk bytes stored "
            "(measured by hand: 6 ms per chunk with 5 chunks stored, 47 ms with 600). On MongoDB "
            "each chunk is one primary-key read."
            % (n, cmds or "(no trace)", fmt(med([x["rate"] for x in po["runs"]["mailcell"]]), nd=1),
               fmt(med([x["rate"] for x in po["runs"]["dovecot"]])),
               "%.1f" % l15["mbps"] if l15 else "?"))
        add("")
        n += 1
    ob = R.get("outbound", {})
    if ob:
        tr = ob.get("trace") or []
        mc = ob["runs"]["mailcell"]
        cmds = ", ".join("%s %s%s %.1f ms" % (r[0], r[1], " ×%d" % r[3] if r[3] > 1 else "", r[4])
                         for r in tr if r[0] != "createIndexes")
        rates = "; ".join("%d queued: %.0f msg/s%s" % (x["queued"], x["rate"], " (capped)" if x["capped"] else "")
                          for x in mc)
        add("%d. **Relay.** Fixed: each claim scanned and sorted the whole outbound collection "
            "and used 1 of the 32 ids it fetched, finished items stayed in the collection, and "
            "the worker delivered one item per connection, one after the other (8.5 msg/s with "
            "120 queued in the run of 2026-11-29 02:21, growing quadratically). Now the worker claims from "
            "the ids it already has, finished items move to `outbound_done`, `relay_concurrency` "
            "deliveries run at once and a connection to the same host is reused (RSET). This "
            "run: %s. The commands of one `relay-worker --once` with %d items queued (all "
            "its deliveries): %s. Cut in this run: a delivered item cost seven writes (claim "
            "lock, claim, insert into outbound_done, delete from outbound, lock release, the "
            "body's files document and chunks); the bodies of delivered items are now deleted "
            "32 at a time, one delete per collection (2,000 queued: 97.8 s before, 74.3 s "
            "after, measured side by side with `--only outbound`). Tried and dropped: moving "
            "delivered items out of the queue in batches too (outcome as an update in place, "
            "one bulk insert and one delete per 32) made it slower (200 queued: 35.6 against "
            "63 msg/s), because the done items stay in outbound until their batch and every "
            "dev-database lookup by `_id` scans the collection. *Left:* on the dev database "
            "each write is a SQLite transaction, "
            "they serialize, and FerretDB's update and delete by `_id` scan the collection, so "
            "concurrent children wait for each other and the rate still falls as the queue "
            "grows; on MongoDB these are single-document writes by primary key. The claim lock "
            "and the claim are separate writes because FerretDB v1 does not make a filtered "
            "update atomic (DESIGN.md); on MongoDB alone they could be one."
            % (n, rates or "no run", ob.get("trace_queue_size", 0), cmds or "(no trace)"))
        add("")
        n += 1
    if cg and w:
        start = cg["smtp_rcpt_quit"]["total"] - cg["smtp_ehlo_quit"]["total"]
        ws = w["smtp_rcpt_quit"]["session_ms"] - w["smtp_ehlo_quit"]["session_ms"]
        full = cg.get("smtp_rcpt_quit_full", {}).get("total")
        sf = full - cg["smtp_ehlo_quit"]["total"] if full else None
        add("%d. **A transaction's start-up: %s instructions (%.1f ms) before the first database "
            "command, %.1f× the transaction itself in instructions, no longer the largest cost "
            "of a message (see the intake profile).** Fixed in two cuts. First, libmongoc's "
            "load-time `mongoc_init()` built an OpenSSL `SSL_CTX` only to see that OpenSSL works "
            "(10.6 M instructions), and its first command instantiated OpenSSL's random generator "
            "(7.9 M): store.so provides `_mongoc_openssl_init` (empty) and `_mongoc_rand_bytes` "
            "(`getrandom`), which libmongoc binds through its PLT (common/store_module.c). "
            "Second, what was left was `dlopen` itself: Debian's libmongoc pulls OpenSSL, ICU, "
            "libstdc++, Cyrus SASL, libmongocrypt, snappy and zstd, all relocated at load "
            "(BIND_NOW), plus `sasl_client_init` loading SASL's plugins. Sessions now load "
            "store-lite.so: the same store code on Debian's own mongo-c-driver source and patches "
            "(the installed version), built static without TLS, SASL, ICU, SRV and compression "
            "(scripts/build-mongoc-lite.sh); it links libc only. A URI that needs one of those "
            "(credentials, TLS, `mongodb+srv`, compressors) still gets store.so: %s instructions "
            "for the same start-up in this run. With such a URI the start-up is again the "
            "largest part; the next cut for it would be TLS and SCRAM in store-lite.so through "
            "OpenSSL loaded only when the URI asks for them."
            % (n, fmt(start), ws, start / max(cg["smtp_txn_4k"]["total"] - cg["smtp_rcpt_quit"]["total"], 1),
               fmt(sf) if sf else "not measured"))
        add("")
        n += 1
        e, b = w["smtp_ehlo_quit"]["session_ms"], w["bare_ehlo_quit"]["session_ms"]
        bl = w["bare_linked_ehlo_quit"]["session_ms"]
        add("%d. **OpenSSL and libcrypt at every exec.** Fixed: Debian builds libssl and libcrypto "
            "with BIND_NOW, so each exec resolved their symbols although an EHLO/QUIT session never "
            "calls them (bare.c linked to them, unused: %.2f ms against %.2f ms). TLS is now the "
            "module tls.so and libcrypt is loaded with the first password check, so the session "
            "programs link libc only: EHLO/QUIT %.2f ms, %.2f× the bare floor (%s instructions "
            "against %s)."
            % (n, bl, b, e, e / b, fmt(cg["smtp_ehlo_quit"]["total"]), fmt(cg["bare_ehlo_quit"]["total"])))
        add("")
        n += 1
        yc = cg["pop3_login_quit"]["objects"].get("libcrypt.so", 0)
        mm = R.get("session", {}).get("memory", {})
        hw = mm.get("mailcell pop3-session|login", {}).get("hwm")
        add("%d. **A POP3 login costs %s instructions of yescrypt and leaves a %s kB peak RSS** "
            "(the hash's 16 MiB working memory), in every session. That is the price of the "
            "password hash and not a defect; Dovecot, checking the same hash here, pays it in "
            "its long-lived auth process, which is why its pop3 process stays small. Keep it "
            "in mind for `MemoryMax=` and for the login rate: measure `AUTH` / `PASS` rates "
            "before lowering the hash cost." % (n, fmt(yc), fmt(hw)))
        add("")
        n += 1
    se = R.get("session", {})
    if se:
        rt = se["rates"]
        a, p = rt.get("mailcell smtp-session|8"), rt.get("Postfix smtpd|8")
        if a and p and a["rate"] < p["rate"]:
            add("%d. **The connection rate against Postfix** (%.0f against %.0f sessions/s with 8 "
                "clients) is the price of a process per connection: Postfix reuses its smtpd "
                "processes. The floor of that model here is bare.c under the same supervisor "
                "(%.0f/s)." % (n, a["rate"], p["rate"], rt.get("bare|8", {}).get("rate", 0)))
            add("")
            n += 1


def report_method(lab, add):
    add("## Method and set-up")
    add("")
    add("- **mailcell**: the programs in bin/ and lib/mailcell/ as built by `make`; each listener "
        "is `systemd-socket-activate -l 127.0.0.1:PORT --inetd -E MONGOC_DISABLE_SHM=1 -a "
        "bin/smtp-session -c CONF` (as scripts/run.sh does; `-E` because "
        "systemd-socket-activate passes only the variables it is told to). The configuration "
        "is run.sh's: `write_concern` and `write_journal` are left at their defaults "
        "(`majority`, journal yes), which the dev database accepts; plus its own database per "
        "stage, `relay_host` to the sink, no relay trigger and `db_timeout = 60` (for the "
        "runs under valgrind). Clients connect from loopback, which is in the default "
        "`trusted_networks`: no SPF/DKIM/DMARC checks, and inbound.so is not loaded — as "
        "Postfix, which checks nothing here either.")
    add("- **Durability**: the dev database is FerretDB on SQLite in WAL mode with SQLite's "
        "default synchronous=FULL: each commit fsyncs the WAL before the reply. Postfix "
        "fsyncs the queue file before its 250 and virtual(8) fsyncs each Maildir file. Dovecot "
        "runs with `mail_fsync = optimized` (its default).")
    add("- **Postfix** (private instance: its own main.cf and master.cf, queue and data "
        "directories in a temporary directory, `master -c DIR -d`, listening on 127.0.0.1 "
        "only): local mail for bench.test goes to virtual(8) Maildirs owned by nobody; "
        "`smtpd_peername_lookup = no`; everything else to `relayhost = [127.0.0.1]:SINK`; a "
        "second smtpd on another port puts mail on hold (outbound test). Default process "
        "limits and concurrency (20 per destination).")
    add("- **Dovecot** (private instance: its own dovecot.conf, base_dir, state_dir and log, "
        "`dovecot -F -c FILE`): POP3 only on a loopback port, passwd-file users, Maildir "
        "homes owned by nobody, plaintext login allowed (no TLS on either side); %s; otherwise "
        "Debian's defaults (a pop3-login process per connection, service_count = 1)."
        % ("its users have the very password hash mailcell stores (`{CRYPT}$y$...`, yescrypt, "
           "checked by Dovecot's auth process)" if getattr(lab, "pw_hash", None) else
           "its users have plain-text passwords (no hash could be copied)"))
    add("- **Clients** run on the same machine (2 cores here), so client, server and database "
        "share the CPU; CPU-time-per-message columns are less sensitive to that than rates.")
    sl, ss = lab.results.get("stage_load", {}), lab.results.get("stage_seconds", {})
    if ss:
        add("- **Stages** (seconds; load average when each started): %s." % "; ".join(
            "%s %.0f s (%s)" % (k, ss[k], sl.get(k, "?")) for k in STAGES if k in ss))
    add("- **Not done**: TLS (STARTTLS/implicit) is not benchmarked; the inbound checks "
        "(SPF/DKIM/DMARC with inbound.so) are not exercised (loopback is trusted); mailcell's "
        "relay of a full 2,000-message queue and its POP3 pass over 1,000 messages are "
        "bounded by the time limit where the dev database's scans make them too slow "
        "(capped runs are marked).")
    add("")


# ---------------------------------------------------------------- main

def ensure_tools(args):
    need = {"smtp-source": "postfix", "smtp-sink": "postfix", "postconf": "postfix",
            "dovecot": "dovecot-core", "valgrind": "valgrind", "callgrind_annotate": "valgrind",
            "systemd-socket-activate": "systemd"}
    missing = sorted({pkg for prog, pkg in need.items() if shutil.which(prog) is None})
    if not Path("/usr/lib/dovecot/pop3").exists():
        missing.append("dovecot-pop3d")
    try:
        import bson  # noqa: F401
    except ImportError:
        missing.append("python3-pymongo")
    if missing:
        if os.geteuid() != 0:
            sys.exit("bench: missing Debian packages: %s (run as root)" % " ".join(missing))
        log("installing %s" % " ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env,
                       stdout=subprocess.DEVNULL, check=True)
    for prog in ("bare", "bare-linked", "connloop", "spawnloop"):
        if not (HELP / prog).exists():
            run(["make", "-C", TOP, "--no-print-directory", "bench-progs"], timeout=300)
            break
    for p in (BIN / "smtp-session", BIN / "pop3-session", BIN / "relay-worker", BIN / "mailcell",
              BIN / "mailcell-devdb", TOP / "lib" / "mailcell" / "store.so"):
        if not p.exists():
            sys.exit("bench: %s is missing: run `make` first" % p)


def main():
    global LOGF
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=540, help="seconds for the whole run (default 540)")
    ap.add_argument("--runs", type=int, default=3, help="repeats of each measurement (default 3)")
    ap.add_argument("--only", default="", help="comma-separated stages: " + ",".join(STAGES))
    ap.add_argument("--messages", type=int, default=2000, help="intake and relay messages (2000)")
    ap.add_argument("--pop3-messages", type=int, default=1000)
    ap.add_argument("--pop3-cap", type=float, default=45, help="seconds per POP3 pass at most")
    ap.add_argument("--intake-cap", type=float, default=170, help="seconds per mailcell intake run at most")
    ap.add_argument("--relay-cap", type=float, default=200,
                    help="seconds per relay-worker run at most (and what the budget leaves)")
    ap.add_argument("--relay-batches", default="200,2000", help="mailcell relay batch sizes")
    ap.add_argument("--session-seconds", type=float, default=1.5)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--no-write", action="store_true", help="do not write RESULTS.md/baseline.json")
    args = ap.parse_args()
    args.relay_batches = [int(x) for x in args.relay_batches.split(",") if x]
    args.runs = max(1, min(args.runs, 5))
    only = [s for s in args.only.split(",") if s] or STAGES
    for s in only:
        if s not in STAGES:
            sys.exit("bench: unknown stage %s (stages: %s)" % (s, ", ".join(STAGES)))
    if os.geteuid() != 0:
        sys.exit("bench: run as root (private Postfix and Dovecot instances need it)")
    budget = Budget(args.budget)

    def on_signal(sig, frame):
        raise SystemExit("bench: stopped by signal %d" % sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    ensure_tools(args)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    lab = Lab(args)
    lab.previous = load_previous(args)
    LOGF = open(lab.work / "bench.log", "w")
    log("work directory %s; load average %s" % (lab.work, loadavg()))
    lab.load_start = loadavg()
    lab.machine = machine()
    lab.tracer = None
    ok = False
    try:
        lab.start_sink()
        lab.start_devdb()
        lab.start_postfix()
        lab.start_dovecot()
        try:
            lab.tracer = DBTrace(lab.devdb_port)
        except ImportError:
            lab.notes.append("python3-pymongo (bson) missing: no database command traces.")
        for name in STAGES:
            if name not in only:
                continue
            if budget.left() < 20:
                lab.notes.append("stage %s skipped: out of time" % name)
                log("skipping %s: out of time" % name)
                continue
            log("stage %s (%.0f s left; load %s)" % (name, budget.left(), loadavg()))
            lab.results.setdefault("stage_load", {})[name] = loadavg()
            t = time.monotonic()
            try:
                globals()["stage_" + name](lab, budget)
            except (SystemExit, KeyboardInterrupt):
                raise
            except Exception as e:
                lab.notes.append("stage %s failed: %s" % (name, e))
                log("stage %s FAILED: %s" % (name, e))
                import traceback
                traceback.print_exc()
            lab.results.setdefault("stage_seconds", {})[name] = round(time.monotonic() - t, 1)
        ok = True
    finally:
        if lab.tracer:
            lab.tracer.close()
        log("stopping the peers and the dev database")
        PROCS.stop_all()
        lab.load_end = loadavg()
        wall = time.monotonic() - T0
        (lab.work / "results.json").write_text(json.dumps(lab.results, indent=1, default=str))
        if ok and not args.no_write:
            write_report(lab, started, wall)
            baseline = {
                "schema": 1,
                "written": started,
                "machine": lab.machine,
                "note": "instruction counts are repeatable within about 1%; compare against "
                        "the same machine and Debian packages",
                "instructions": {k: v["total"] for k, v in
                                 lab.results.get("startup", {}).get("callgrind", {}).items()},
                "instructions_by_object": {k: v["objects"] for k, v in
                                           lab.results.get("startup", {}).get("callgrind", {}).items()},
                "results": {k: v for k, v in lab.results.items() if k != "startup"},
                "startup_wall_ms": lab.results.get("startup", {}).get("wall"),
                "seconds": round(wall, 1),
            }
            BASELINE.write_text(json.dumps(baseline, indent=1, default=str) + "\n")
            log("wrote %s and %s" % (RESULTS, BASELINE))
        if not args.keep:
            shutil.rmtree(lab.work, ignore_errors=True)
        log("done in %.0f s" % wall)


if __name__ == "__main__":
    main()
