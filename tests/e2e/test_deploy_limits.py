"""A session killed by its supervisor loses nothing it acknowledged, and
leaves nothing half-stored in sight: one message gets its 250, a second is
in the middle of DATA when the session dies (the run time limit of the
tcpserver run script, the way RuntimeMaxSec= does it under systemd; or a
SIGKILL of the session started by systemd-socket-activate from the unit's
ExecStart=). The mailbox, read back over POP3 and in the database, holds
the first message and only it."""
import os
import re
import signal
import socket
import time

import pytest

from deploy_helpers import (ALICE, SMTP_FROM_IP, UNITS, deployenv, free_ports,  # noqa: F401
                            pop3_messages, rewrite, wait_for, wait_listening)
from test_deploy_supervisors import need, proc_name, session_children, start_run_script

LIMIT = 3   # seconds a session may run in the test (an hour in the run scripts)


class Smtp:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20,
                                             source_address=(SMTP_FROM_IP, 0))
        self.buf = b""

    def reply(self):
        while True:
            m = re.search(rb"(?m)^(\d{3}) [^\r\n]*\r\n", self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m.group(0).decode()
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed; got %r" % self.buf
            self.buf += chunk

    def cmd(self, line, code):
        self.sock.sendall(line.encode() + b"\r\n")
        r = self.reply()
        assert r.startswith(str(code)), "%s: %s" % (line, r)
        return r

    def message(self, subject):
        return ("From: <bob@example.net>\r\nTo: <%s>\r\nSubject: %s\r\n"
                "Message-ID: <%s@client.test>\r\n\r\n" % (ALICE, subject, subject.replace(" ", ".")))

    def first_then_half(self, on_half=None, give_up=15):
        """Message 1 acknowledged; message 2 sent line by line until the
        connection dies. Returns seconds from connect to the 250 and to death."""
        t0 = time.monotonic()
        assert self.reply().startswith("220")
        self.cmd("EHLO client.test", 250)
        self.cmd("MAIL FROM:<bob@example.net>", 250)
        self.cmd("RCPT TO:<%s>" % ALICE, 250)
        self.cmd("DATA", 354)
        self.sock.sendall(self.message("acknowledged").encode() + b"first body\r\n.\r\n")
        assert self.reply().startswith("250 "), "message 1 not acknowledged"
        acked = time.monotonic() - t0
        self.cmd("MAIL FROM:<bob@example.net>", 250)
        self.cmd("RCPT TO:<%s>" % ALICE, 250)
        self.cmd("DATA", 354)
        self.sock.sendall(self.message("cut off").encode())
        if on_half:
            on_half()
        deadline = time.monotonic() + give_up
        try:
            while time.monotonic() < deadline:
                self.sock.sendall(b"a line of the message that never ends\r\n")
                self.sock.settimeout(0.1)
                try:
                    if self.sock.recv(4096) == b"":
                        break
                except socket.timeout:
                    pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            if time.monotonic() >= deadline:
                pytest.fail("the session was not stopped")
        finally:
            self.sock.close()
        return acked, time.monotonic() - t0


def check_mailbox(env, pop3_port):
    msgs = pop3_messages(pop3_port)
    assert len(msgs) == 1, msgs
    assert b"Subject: acknowledged" in msgs[0] and msgs[0].endswith(b"first body\r\n")
    assert env.db.messages.count_documents({"mailbox": ALICE}) == 1
    assert env.db.messages.count_documents({}) == 1


def test_runtime_limit_under_tcpserver(deployenv):
    """The tcpserver run scripts bound each session's run time with
    timeout(1) (TERM, then KILL): here LIMIT seconds instead of an hour."""
    need("tcpserver", "timeout")
    env = deployenv
    smtp_port, pop3_port = free_ports(2)
    log = env.dir / "tcpserver.log"
    text = (UNITS / "tcpserver" / "mailcell-smtp.run").read_text()
    assert "timeout -k 10 3600 " in text
    tight = env.dir / "mailcell-smtp.run"
    tight.write_text(text.replace("timeout -k 10 3600 ", "timeout -k 1 %d " % LIMIT))
    start_run_script(env, tight, {25: smtp_port}, log)
    start_run_script(env, UNITS / "tcpserver" / "mailcell-pop3.run", {110: pop3_port}, log)
    wait_listening([smtp_port, pop3_port], what="tcpserver", log=log)

    acked, died = Smtp(smtp_port).first_then_half()
    assert acked < LIMIT, "message 1 took %.1f s: the test needs it before the limit" % acked
    assert LIMIT - 0.5 <= died <= LIMIT + 5, "session ended after %.1f s" % died
    check_mailbox(env, pop3_port)
    text = wait_for(lambda: "tcpserver: end" in log.read_text() and log.read_text(),
                    what="tcpserver's end line")
    assert text.count(": stored") == 1, text


def test_sigkill_under_socket_activation(deployenv):
    """The smtp unit's ExecStart= under systemd-socket-activate; the session
    gets SIGKILL in the middle of message 2, as when MemoryMax= is hit."""
    need("systemd-socket-activate", "tcpserver")
    env = deployenv
    smtp_port, pop3_port = free_ports(2)
    log = env.dir / "activate.log"
    unit = rewrite((UNITS / "mailcell-smtp@.service").read_text(), env.conf)
    argv = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    act = env.start(["systemd-socket-activate", "-l", "127.0.0.1:%d" % smtp_port, "--inetd",
                     "-a", "-E", "MONGOC_DISABLE_SHM=1", *argv], log)
    start_run_script(env, UNITS / "tcpserver" / "mailcell-pop3.run", {110: pop3_port}, log)
    wait_listening([smtp_port, pop3_port], what="servers", log=log)

    killed = []

    def kill_session():
        time.sleep(0.3)     # some of message 2 is in, and being stored
        pids = [p for p in session_children(act.pid) if proc_name(p) == "smtp-session"]
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)
        killed.append(pids[0])

    Smtp(smtp_port).first_then_half(on_half=kill_session)
    assert killed
    check_mailbox(env, pop3_port)
