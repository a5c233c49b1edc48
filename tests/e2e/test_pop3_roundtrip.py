"""Mail that goes in by SMTP comes out by POP3 unchanged.

Messages are sent through the real bin/smtp-session (a script on a pipe,
swaks, and smtplib over TCP): plain DATA, BDAT chunks, an 8-bit body, an
SMTPUTF8 sender, lines starting with "." and a 15 MB message. Each is read
back with RETR and must equal the original octets after the trace header
lines the server adds at the top (Return-Path, Received). LIST and STAT
sizes must be the exact octets RETR sends before dot-stuffing, UIDLs must be
unique and stable, and RETR of a 15 MB message must not grow the session's
memory with the message (it streams).
"""
import os
import poplib
import re
import smtplib
import subprocess

import pytest

from conftest import BIN
from pop3_helpers import (Pop3Proc, pop3env, simple_message, strip_trace, tls_cert,  # noqa: F401
                          unstuff)

ALICE, ALICE_PW = "alice@example.org", "alice secret"

DOT_LINES = (b"Subject: dots\r\n\r\n.\r\n..\r\n...\r\n. space\r\n.\tTab\r\n"
             b"middle . dot\r\n.leading\r\n\r\n.\r\n")
EIGHT_BIT = ("Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
             "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln, ½ € — 日本語\r\n").encode() + \
    b"latin-1 \xe9t\xe9 \xff\xfe\r\n"
UTF8_HEADERS = ("From: Jörg <jörg@bücher.example>\r\nTo: alice@example.org\r\n"
                "Subject: Grüße\r\n\r\nUTF-8 everywhere: ☃\r\n").encode()


def retr_all(conf):
    """Every message of alice's mailbox through a pipe: [(LIST size, octets)]."""
    s = Pop3Proc(conf)
    s.readline()
    assert s.login(ALICE, ALICE_PW).startswith("+OK")
    first, listing = s.multi("LIST")
    sizes = [int(l.split()[1]) for l in listing.decode().splitlines()]
    out = []
    for i, size in enumerate(sizes, 1):
        first, body = s.multi("RETR %d" % i)
        assert first == "+OK %d octets" % size
        out.append((size, unstuff(body)))
    stat = s.cmd("STAT")
    assert stat == "+OK %d %d" % (len(sizes), sum(sizes))
    assert s.cmd("QUIT").startswith("+OK")
    s.wait()
    return out


def assert_same(original, retrieved, sender="bob@example.net"):
    trace, rest = strip_trace(retrieved)
    assert trace.startswith(b"Return-Path: <" + sender.encode() + b">\r\n"), trace
    assert b"\r\nReceived: " in b"\r\n" + trace, trace
    assert rest == original, "message changed on the way:\nsent %r\ngot  %r" % (
        original[:500], rest[:500])


@pytest.mark.parametrize("case", ["data", "bdat", "bdat-tiny-chunks", "8bitmime",
                                  "smtputf8", "dot-lines", "binarymime"])
def test_smtp_to_pop3_is_byte_exact(pop3env, case):
    sender, params, mode, chunk = "bob@example.net", "", "data", 65536
    msg = simple_message("plain", b"first line\r\n\r\n  indented\r\n" + b"x" * 990 + b"\r\nend\r\n")
    if case == "bdat":
        mode = "bdat"
        msg = simple_message("bdat", b".not stuffed in BDAT\r\n" * 2000)
    elif case == "bdat-tiny-chunks":
        mode, chunk = "bdat", 7
        msg = simple_message("tiny", b"chunk\r\nboundaries\r\n.\r\nanywhere\r\n")
    elif case == "8bitmime":
        params, msg = "BODY=8BITMIME", EIGHT_BIT
    elif case == "smtputf8":
        sender, params, msg = "jörg@bücher.example", "SMTPUTF8 BODY=8BITMIME", UTF8_HEADERS
    elif case == "dot-lines":
        msg = DOT_LINES
    elif case == "binarymime":
        mode, params = "bdat", "BODY=BINARYMIME"
        msg = b"Subject: binary\r\nContent-Type: application/octet-stream\r\n\r\n" + \
            bytes(b for b in range(256) if b not in (10, 13)) + b"\r\n"
    pop3env.deliver(ALICE, msg, sender=sender, mode=mode, mail_params=params, chunk=chunk)
    [(size, got)] = retr_all(pop3env.conf)
    assert size == len(got)
    assert_same(msg, got, sender)


def test_dot_lines_are_stuffed_on_the_wire(pop3env):
    pop3env.deliver(ALICE, DOT_LINES)
    out = pop3env.pipe("USER %s\r\nPASS %s\r\nRETR 1\r\nQUIT\r\n" % (ALICE, ALICE_PW))
    body = out.split(b"\r\nSubject: dots\r\n\r\n", 1)[1].split(b"\r\n+OK mail.test", 1)[0]
    assert body == (b"..\r\n...\r\n....\r\n.. space\r\n..\tTab\r\nmiddle . dot\r\n"
                    b"..leading\r\n\r\n..\r\n."), body


def test_swaks_message_round_trip(pop3env):
    data = pop3env.tmp / "swaks.eml"
    original = (b"From: Swaks <bob@example.net>\r\nTo: alice@example.org\r\nSubject: swaks\r\n"
                b"\r\n.dot first\r\nbody\r\n..two\r\nlast line")
    data.write_bytes(original)
    r = subprocess.run(
        ["swaks", "--pipe", "%s -c %s --remote-ip 192.0.2.1" % (BIN / "smtp-session", pop3env.conf),
         "--from", "bob@example.net", "--to", ALICE, "--data", str(data)],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    [(size, got)] = retr_all(pop3env.conf)
    # swaks ends the last line with CRLF before the final "."
    assert_same(original + b"\r\n", got)


def test_smtplib_data_and_bdat_read_with_poplib(pop3env):
    smtp = pop3env.server(program="smtp-session")
    pop = pop3env.server()
    m1 = ("From: jörg@bücher.example\r\nTo: alice@example.org\r\nSubject: smtplib ☃\r\n"
          "\r\n.dot\r\nGrüße\r\n").encode()
    m2 = simple_message("bdat via smtplib", b"part one\r\n" * 3000 + b".part two\r\n")
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=30) as c:
        c.ehlo("client.test")
        assert c.has_extn("smtputf8") and c.has_extn("chunking")
        c.sendmail("jörg@bücher.example", [ALICE], m1, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        assert c.mail("bob@example.net")[0] == 250
        assert c.rcpt(ALICE)[0] == 250
        half = len(m2) // 2
        for chunk, last in ((m2[:half], ""), (m2[half:], " LAST")):
            c.putcmd("BDAT %d%s" % (len(chunk), last))
            c.send(chunk)
            code, text = c.getreply()
            assert code == 250, text
    p = poplib.POP3("127.0.0.1", pop.port, timeout=30)
    p.user(ALICE)
    p.pass_(ALICE_PW)
    count, total = p.stat()
    assert count == 2
    sizes = [int(l.split()[1]) for l in p.list()[1]]
    assert sum(sizes) == total
    got = []
    for i in (1, 2):
        resp, lines, octets = p.retr(i)
        data = b"".join(l + b"\r\n" for l in lines)
        assert len(data) == sizes[i - 1], "LIST size must be the octets RETR sends"
        got.append(data)
    p.quit()
    assert_same(m1, got[0], "jörg@bücher.example")
    assert_same(m2, got[1])


def test_uidls_are_unique_and_stable(pop3env):
    for i in range(6):
        pop3env.deliver(ALICE, simple_message("same content"))   # identical messages
    def uidls():
        out = pop3env.pipe("USER %s\r\nPASS %s\r\nUIDL\r\nQUIT\r\n" % (ALICE, ALICE_PW)).decode()
        listing = out.split("\r\n")[4:-3]
        return dict(l.split(" ", 1) for l in listing)
    first = uidls()
    assert len(first) == 6 and len(set(first.values())) == 6, first
    assert all(re.fullmatch(r"[\x21-\x7e]{1,70}", u) for u in first.values()), first
    assert uidls() == first
    out = pop3env.pipe("USER %s\r\nPASS %s\r\nDELE 1\r\nDELE 4\r\nQUIT\r\n" % (ALICE, ALICE_PW))
    assert b"(4 messages left)" in out
    after = uidls()
    assert list(after.values()) == [first[k] for k in ("2", "3", "5", "6")]


BIG_LINE = b"%08d The quick brown fox jumps over the lazy dog; .:;!? 0123456789 ABCDEFGH\r\n"


def big_message():
    lines = []
    for i in range(200000):
        lines.append(b"." + BIG_LINE % i if i % 1000 == 0 else BIG_LINE % i)
    return simple_message("fifteen megabytes", b"".join(lines))


def test_15mb_message_round_trip_with_flat_memory(pop3env):
    big = big_message()
    assert len(big) > 15_000_000
    pop3env.deliver(ALICE, simple_message("small"))
    pop3env.deliver(ALICE, big)
    s = pop3env.session()
    assert s.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 2 messages")
    size = int(s.cmd("LIST 2").split()[2])
    first, small = s.multi("RETR 1")
    base = s.vmhwm_kb()
    first, body = s.multi("RETR 2", timeout=120)
    peak = s.vmhwm_kb()
    got = unstuff(body)
    assert first == "+OK %d octets" % size
    assert len(got) == size
    assert_same(big, got)
    assert s.cmd("QUIT").startswith("+OK")
    if os.environ.get("MAILCELL_BUILD", "build/rel") != "build/rel":
        pytest.skip("memory is measured on the release build, not under sanitizers")
    assert peak < 40 * 1024 and peak - base < 8 * 1024, (
        "RETR of a %d-octet message: VmHWM %d kB before, %d kB after (+%d kB); "
        "RETR should stream with flat memory" % (size, base, peak, peak - base))


def test_size_is_exact_when_the_last_line_has_no_crlf(pop3env):
    """BDAT can end a message without CRLF; RETR must still end its last
    line before the "." (RFC 1939), and LIST must count what RETR sends."""
    msg = b"Subject: no final newline\r\n\r\nlast line without CRLF"
    pop3env.deliver(ALICE, msg, mode="bdat")
    out = pop3env.pipe("USER %s\r\nPASS %s\r\nLIST 1\r\nRETR 1\r\nQUIT\r\n" % (ALICE, ALICE_PW))
    lines = out.split(b"\r\n")
    size = int(lines[3].split()[2])
    retr = out.split(b"\r\n", 5)[5].split(b"\r\n.\r\n+OK mail.test", 1)[0] + b"\r\n"
    assert retr.endswith(b"\r\nlast line without CRLF\r\n")
    assert len(unstuff(retr)) == size, (
        "LIST says %d octets, RETR sent %d:\n%s" % (size, len(unstuff(retr)), out.decode()))
