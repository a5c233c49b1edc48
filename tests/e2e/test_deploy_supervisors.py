"""A message delivered over SMTP and read back over POP3 through sessions
started by each service manager, from the files of units/ (paths, ports and
the user rewritten, see deploy_helpers.rewrite): systemd-socket-activate
running the systemd units' ExecStart= (with a journal socket, as under
systemd), tcpserver running the tcpserver run scripts, openbsd-inetd or
xinetd running the inetd.conf lines / xinetd.d snippets through the
mailcell-inetd wrapper, and s6-svscan supervising the s6 service
directories. The SMTP client connects from 127.0.0.2 and the POP3 client
from 127.0.0.3: those addresses must reach the session logs and the stored
message's Received header."""
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from deploy_helpers import (POP3_FROM_IP, SANITIZED, SESSION_USER, SMTP_FROM_IP,  # noqa: F401
                            UNITS, WRAPPER,
                            assert_logged, check_roundtrip, deployenv, free_ports, rewrite,
                            stop_group, wait_for, wait_listening)

ROOT = os.geteuid() == 0


def need(*tools, why="see scripts/install-deps.sh"):
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip("%s is not installed (%s)" % (t, why))


def installed(package):
    r = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", package],
                       capture_output=True, text=True)
    return r.stdout == "installed"


# ---- systemd: the units' ExecStart= under systemd-socket-activate ----

def unit_exec(name, conf):
    """argv and environment of a session unit's ExecStart=/Environment=."""
    text = rewrite((UNITS / name).read_text(), conf)
    argv = re.search(r"^ExecStart=(.*)$", text, re.M).group(1).split()
    env = re.findall(r"^Environment=(.*)$", text, re.M)
    return argv, env


# Run a command with a private /run in which /run/systemd/journal/socket is
# the socket given as $1: the session finds a journal as under systemd.
WITH_JOURNAL = ('mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && '
                ': >/run/systemd/journal/socket && mount --bind "$1" /run/systemd/journal/socket '
                '&& shift && exec "$@"')


def read_journal(sock):
    entries = []
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return entries
        entries.append(dict(l.split("=", 1) for l in data.decode().splitlines() if "=" in l))


def test_systemd_socket_activate_journal(deployenv):
    """The smtp and pop3 units' ExecStart= and Environment=, one process per
    connection (Accept=yes) by systemd-socket-activate with INVOCATION_ID set
    as systemd sets it: log entries go to the journal socket with structured
    fields, REMOTE_ADDR the client's address; nothing goes to stderr."""
    need("systemd-socket-activate", "unshare")
    if not ROOT:
        pytest.skip("needs root for a private mount namespace")
    env = deployenv
    conf = env.write_conf("journal.conf", log_target="auto")
    jpath = env.dir / "journal.sock"
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(jpath))
    journal.setblocking(False)
    smtp_port, pop3_port = free_ports(2)
    log = env.dir / "activate.log"
    try:
        for unit, port in (("mailcell-smtp@.service", smtp_port),
                           ("mailcell-pop3@.service", pop3_port)):
            argv, environ = unit_exec(unit, conf)
            assert environ == ["MONGOC_DISABLE_SHM=1"]
            sets = []
            for e in environ + ["INVOCATION_ID=" + uuid.uuid4().hex]:
                sets += ["-E", e]
            env.start(["unshare", "-m", "--propagation", "private", "sh", "-c", WITH_JOURNAL,
                       "sh", str(jpath), "systemd-socket-activate", "-l", "127.0.0.1:%d" % port,
                       "--inetd", "-a", *sets, *argv], log)
        wait_listening([smtp_port, pop3_port], what="systemd-socket-activate", log=log)
        check_roundtrip(smtp_port, pop3_port, "via systemd")

        def entries():
            es = read_journal(journal)
            entries.seen += es
            done = [e for e in entries.seen if e.get("MESSAGE", "").startswith("disconnect")]
            return len(done) >= 2 and entries.seen
        entries.seen = []
        seen = wait_for(entries, what="journal entries of both sessions")
    finally:
        journal.close()
    for program, addr in (("smtp-session", SMTP_FROM_IP), ("pop3-session", POP3_FROM_IP)):
        mine = [e for e in seen if e.get("MAILCELL_PROGRAM") == program]
        assert mine, seen
        for e in mine:
            assert e["SYSLOG_IDENTIFIER"] == program
            assert e["REMOTE_ADDR"] == addr, e
            assert re.fullmatch(r"[0-9a-f]{16}", e["MAILCELL_SESSION"]), e
            assert e["PRIORITY"] in "01234567"
        assert len({e["MAILCELL_SESSION"] for e in mine}) == 1
        assert any(e["MESSAGE"] == "connect" for e in mine)
    stored = [e for e in seen if "stored" in e["MESSAGE"]]
    assert stored and stored[0]["MAILCELL_PROGRAM"] == "smtp-session"
    text = log.read_text(errors="replace")
    assert "smtp-session[" not in text and "pop3-session[" not in text, text


# ---- ucspi-tcp: the tcpserver run scripts ----

def start_run_script(env, path, ports, log, **kw):
    """A run script, rewritten, run by sh in the foreground."""
    script = env.dir / ("%s.%s" % (path.parent.name, path.name))
    script.write_text(rewrite(path.read_text(), env.conf, ports, **kw))
    os.chmod(script, 0o755)
    return env.start(["sh", str(script)], log)


def session_children(pid):
    """Pids of every descendant of `pid`."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                kids = [int(x) for x in f.read().split()]
        except FileNotFoundError:
            kids = []
        out += kids
        todo += kids
    return out


def proc_name(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def test_tcpserver(deployenv):
    """tcpserver from the run scripts: TCPREMOTEIP reaches the log and the
    Received header; sessions run as the unprivileged user with the script's
    memory bound; tcpserver logs each connection."""
    need("tcpserver", "timeout")
    env = deployenv
    smtp_port, pop3_port = free_ports(2)
    log = env.dir / "tcpserver.log"
    smtp = start_run_script(env, UNITS / "tcpserver" / "mailcell-smtp.run", {25: smtp_port}, log)
    start_run_script(env, UNITS / "tcpserver" / "mailcell-pop3.run", {110: pop3_port}, log)
    wait_listening([smtp_port, pop3_port], what="tcpserver", log=log)

    # While a session runs: its user and its memory bound.
    with socket.create_connection(("127.0.0.1", smtp_port), timeout=20,
                                  source_address=(SMTP_FROM_IP, 0)) as c:
        assert c.recv(512).startswith(b"220 ")
        pids = [p for p in session_children(smtp.pid) if proc_name(p) == "smtp-session"]
        assert len(pids) == 1
        with open("/proc/%d/status" % pids[0]) as f:
            uid = int(re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1))
        assert uid == pwd.getpwnam(SESSION_USER).pw_uid
        with open("/proc/%d/limits" % pids[0]) as f:
            assert SANITIZED or re.search(r"^Max data size\s+268435456\s+268435456",
                                          f.read(), re.M)
        c.sendall(b"QUIT\r\n")

    check_roundtrip(smtp_port, pop3_port, "via tcpserver")
    text = wait_for(lambda: (lambda t: t.count("disconnect") >= 3 and t)(
        log.read_text(errors="replace")), what="session logs")
    assert_logged(text, "smtp-session", SMTP_FROM_IP)
    assert_logged(text, "pop3-session", POP3_FROM_IP)
    assert re.search(r"tcpserver: pid \d+ from %s" % re.escape(SMTP_FROM_IP), text), text


# ---- inetd / xinetd: the inetd.conf lines and xinetd snippets ----

SERVICE_PORTS = {"smtp": 25, "submission": 587, "submissions": 465, "pop3": 110, "pop3s": 995}


def session_log(env, name):
    """A log file the sessions (running as SESSION_USER) can append to."""
    return env.path(name, mode=0o666)


def check_no_log_on_the_wire(port):
    """The greeting is the first thing on the connection: no log line."""
    with socket.create_connection(("127.0.0.1", port), timeout=20,
                                  source_address=(SMTP_FROM_IP, 0)) as c:
        c.sendall(b"QUIT\r\n")
        data = b""
        while True:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
    assert re.fullmatch(rb"220 [^\r\n]*\r\n221 [^\r\n]*\r\n", data), data


def test_openbsd_inetd(deployenv):
    """A private openbsd-inetd (own config, loopback ports, a private /run so
    that its pid file cannot touch a system instance's) running the five
    inetd.conf lines: getpeername(0) gives the address; the wrapper keeps
    the log off the connection (inetd makes it fd 2 as well)."""
    if shutil.which("inetd") is None or not installed("openbsd-inetd"):
        pytest.skip("openbsd-inetd is not installed (see scripts/install-deps.sh)")
    need("unshare")
    if not ROOT:
        pytest.skip("inetd must start as root to run sessions as another user")
    env = deployenv
    ports = dict(zip(SERVICE_PORTS, free_ports(5)))
    slog = session_log(env, "sessions.log")
    lines = []
    for line in rewrite((UNITS / "inetd.conf").read_text(), env.conf).splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split()
        f[0] = "127.0.0.1:%d" % ports[f[0]]
        f[4] = SESSION_USER
        f[6:7] = [f[6], "-f", str(slog)]        # stderr to a file instead of syslog
        lines.append("\t".join(f))
    assert len(lines) == 5
    conf = env.dir / "inetd.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = env.dir / "inetd.log"
    env.start(["unshare", "-m", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs tmpfs /run && exec inetd -d "$0"', str(conf)], log)
    wait_listening(ports.values(), what="inetd", log=log)
    assert log.read_text().count("ADD: ") == 5
    check_no_log_on_the_wire(ports["smtp"])
    check_roundtrip(ports["smtp"], ports["pop3"], "via inetd")
    text = wait_for(lambda: (lambda t: t.count("disconnect") >= 3 and t)(
        slog.read_text(errors="replace")), what="session logs")
    assert_logged(text, "smtp-session", SMTP_FROM_IP)
    assert_logged(text, "pop3-session", POP3_FROM_IP)


def test_xinetd(deployenv):
    """A private xinetd (-dontfork, own config and pid file, loopback ports)
    with the five xinetd.d snippets."""
    need("xinetd", why="Debian's xinetd conflicts with openbsd-inetd, which "
         "scripts/install-deps.sh installs; the snippets are tested where xinetd is installed instead")
    if not ROOT:
        pytest.skip("xinetd must start as root to run sessions as another user")
    env = deployenv
    ports = dict(zip(SERVICE_PORTS, free_ports(5)))
    slog = session_log(env, "sessions.log")
    group = pwd.getpwnam(SESSION_USER).pw_gid
    parts = ["defaults\n{\n\tlog_type = FILE %s\n}\n" % (env.dir / "xinetd-own.log")]
    for name, port in ports.items():
        text = rewrite((UNITS / "xinetd.d" / ("mailcell-" + name)).read_text(), env.conf)
        text = re.sub(r"(?m)^(\tport\s*=).*$", r"\1 %d\n\tbind\t\t= 127.0.0.1" % port, text)
        text = re.sub(r"(?m)^(\tuser\s*=).*$", r"\1 " + SESSION_USER, text)
        text = re.sub(r"(?m)^(\tgroup\s*=).*$", r"\1 %d" % group, text)
        text = re.sub(r"(?m)^(\tserver_args\s*=)", r"\1 -f %s" % slog, text)
        text = re.sub(r"(?m)^\tlog_type\s*=.*\n", "", text)
        parts.append(text)
    conf = env.dir / "xinetd.conf"
    conf.write_text("\n".join(parts))
    log = env.dir / "xinetd.log"
    env.start(["xinetd", "-dontfork", "-f", str(conf), "-pidfile", str(env.dir / "xinetd.pid"),
               "-stayalive"], log)
    wait_listening(ports.values(), what="xinetd", log=log)
    check_no_log_on_the_wire(ports["smtp"])
    check_roundtrip(ports["smtp"], ports["pop3"], "via xinetd")
    text = wait_for(lambda: (lambda t: t.count("disconnect") >= 3 and t)(
        slog.read_text(errors="replace")), what="session logs")
    assert_logged(text, "smtp-session", SMTP_FROM_IP)
    assert_logged(text, "pop3-session", POP3_FROM_IP)


def test_inetd_wrapper_logger(tmp_path):
    """Without -f, mailcell-inetd pipes the session's stderr into logger(1)
    (tag, facility mail) while fds 0 and 1 stay the connection, which gets
    the protocol only. A stand-in logger records what it was given."""
    fake = tmp_path / "bin"
    fake.mkdir()
    record = tmp_path / "logger.out"
    (fake / "logger").write_text('#!/bin/sh\necho "args: $*" >>%s\ncat >>%s\n' % (record, record))
    os.chmod(fake / "logger", 0o755)
    prog = tmp_path / "session"
    prog.write_text('#!/bin/sh\necho "session[$$]: $MONGOC_DISABLE_SHM on stderr" >&2\n'
                    'read line\necho "reply to $line"\n')
    os.chmod(prog, 0o755)
    ours, theirs = socket.socketpair()
    # inetd's way: the connection as fds 0, 1 and 2.
    p = subprocess.Popen([str(WRAPPER), "mailcell-smtp", str(prog)], stdin=theirs,
                         stdout=theirs, stderr=theirs,
                         env={"PATH": "%s:/usr/bin:/bin" % fake})
    theirs.close()
    ours.sendall(b"hello\n")
    ours.settimeout(10)
    data = b""
    while True:
        chunk = ours.recv(4096)
        if not chunk:
            break
        data += chunk
    assert p.wait(10) == 0
    ours.close()
    assert data == b"reply to hello\n"
    out = wait_for(lambda: record.exists() and "on stderr" in record.read_text() and
                   record.read_text(), what="logger input")
    assert "args: -t mailcell-smtp -p mail.info" in out
    assert re.search(r"session\[\d+\]: 1 on stderr", out), out


# ---- s6: the service directories under a private s6-svscan ----

def test_s6(deployenv):
    """A private s6-svscan on a scan directory holding the mailcell-smtp and
    mailcell-pop3 service directories (tcpserver under s6-supervise, s6-log
    as the unprivileged user): the addresses reach s6-log's files."""
    need("s6-svscan", "s6-svscanctl", "s6-log", "tcpserver", "timeout")
    if not ROOT:
        pytest.skip("s6-envuidgid/s6-setuidgid need root")
    env = deployenv
    smtp_port, pop3_port = free_ports(2)
    scan = env.path("scan", directory=True)
    logs = env.path("logs", directory=True)
    for name, ports in (("smtp", {25: smtp_port}), ("pop3", {110: pop3_port})):
        src = UNITS / "s6" / ("mailcell-" + name)
        dst = scan / ("mailcell-" + name)
        (dst / "log").mkdir(parents=True)
        for rel in ("run", "log/run"):
            (dst / rel).write_text(rewrite((src / rel).read_text(), env.conf, ports,
                                           logdir=logs))
            os.chmod(dst / rel, 0o755)
        env.path("logs/" + name, directory=True, owner=SESSION_USER)
    log = env.dir / "s6-svscan.log"
    svscan = env.start(["s6-svscan", str(scan)], log)
    try:
        wait_listening([smtp_port, pop3_port], svscan, what="s6-svscan", log=log)
        check_roundtrip(smtp_port, pop3_port, "via s6")

        def logged():
            t = "".join((logs / n / "current").read_text(errors="replace")
                        for n in ("smtp", "pop3") if (logs / n / "current").exists())
            return t.count("disconnect") >= 2 and t
        text = wait_for(logged, what="s6-log files")
        assert_logged(text, "smtp-session", SMTP_FROM_IP)
        assert_logged(text, "pop3-session", POP3_FROM_IP)
        assert re.search(r"tcpserver: pid \d+ from %s" % re.escape(SMTP_FROM_IP), text)
    finally:
        subprocess.run(["s6-svscanctl", "-t", str(scan)], capture_output=True, timeout=10)
        try:
            svscan.wait(10)
        except subprocess.TimeoutExpired:
            pass
        stop_group(svscan)
        # Nothing of this scan directory may outlive the test.
        time.sleep(0.2)
        left = [p for p in _pids_mentioning(str(env.dir))]
        for p in left:
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
        assert not left, "processes left running: %s" % left


def _pids_mentioning(text):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink("/proc/%s/cwd" % d)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if text in cmd or cwd.startswith(text):
            out.append(int(d))
    return out
