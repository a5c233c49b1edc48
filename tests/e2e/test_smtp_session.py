"""bin/smtp-session driven command by command on pipes, with what it stored
checked in the database: the stored form of a message (trace headers, CRLF,
size), DATA's end and SMTP smuggling (RFC 5321 4.1.1.4, 2.3.8), bare CR/LF and
NUL, line and size bounds, CHUNKING (RFC 3030) including failed chunks that
must be swallowed, PIPELINING (RFC 2920), AUTH (RFC 4954) limits, relaying for
authenticated users, VRFY/EXPN, the idle timeout, the client address and
the session log."""
import base64
import os
import re
import shutil
import time

import pytest

from conftest import free_port
from smtp_helpers import (ALICE, ALICE_PW, BOB, BOB_PW, CLIENT_IP, HOSTNAME, MAX_SIZE, SmtpProc,
                          data_script, dot_stuff, message, parse_replies, plain_token,
                          queued_id, smtp_cert, smtpenv, split_trace)  # noqa: F401


def begin_data(s, rcpt=ALICE, sender="bob@example.net"):
    s.ehlo()
    s.cmd("MAIL FROM:<%s>" % sender).check(250, "2.1.0")
    s.cmd("RCPT TO:<%s>" % rcpt).check(250, "2.1.5")
    assert s.cmd("DATA").code == 354


def deliver_ok(s, rcpt=ALICE, subject="ok"):
    """A normal transaction in the same session; returns the queue id."""
    s.cmd("MAIL FROM:<bob@example.net>").check(250, "2.1.0")
    s.cmd("RCPT TO:<%s>" % rcpt).check(250, "2.1.5")
    assert s.cmd("DATA").code == 354
    s.send(message(subject) + b".\r\n")
    return queued_id(s.reply())


# ---- the stored message ----

def test_stored_message_has_trace_headers_and_exact_content(smtpenv):
    msg = (b"From: <bob@example.net>\r\nTo: <alice@example.org>\r\nSubject: stored\r\n\r\n"
           b"line one\r\n..leading dot was stuffed\r\n...\r\n\r\n  spaced  \r\nlast line\r\n")
    s = smtpenv.session()
    begin_data(s)
    s.send(msg + b".\r\n")
    qid = queued_id(s.reply())
    s.cmd("QUIT").check(221, "2.0.0")

    (doc,) = smtpenv.messages(ALICE)
    body = smtpenv.body(doc)
    assert doc["size"] == len(body), "size must be the stored octet count"
    assert doc["sender"] == "bob@example.net"
    trace, rest = split_trace(body)
    # Dot-unstuffing: a leading ".." arrives as "."; nothing else changes.
    assert rest == msg.replace(b"\r\n..leading", b"\r\n.leading").replace(b"\r\n...\r\n", b"\r\n..\r\n")
    assert trace.startswith(b"Return-Path: <bob@example.net>\r\n")
    received = re.sub(rb"\r\n[ \t]+", b" ", trace.split(b"\r\n", 1)[1])
    assert received.startswith(b"Received: from client.test ")
    assert (b"[" + CLIENT_IP.encode() + b"]") in received
    assert re.search(rb"\bby mail\.test\b", received)
    assert re.search(rb"\bwith ESMTP id " + qid.encode() + rb"\b", received), received
    assert body.count(b"\n") == body.count(b"\r\n"), "stored with CRLF line ends"


def test_helo_session_and_null_sender(smtpenv):
    s = smtpenv.session()
    s.cmd("HELO old.client.test").check(250)
    s.cmd("MAIL FROM:<>").check(250, "2.1.0")
    s.cmd("RCPT TO:<bob@example.org>").check(250, "2.1.5")
    assert s.cmd("DATA").code == 354
    s.send(message("bounce") + b".\r\n")
    queued_id(s.reply())
    (doc,) = smtpenv.messages(BOB)
    trace, _ = split_trace(smtpenv.body(doc))
    assert trace.startswith(b"Return-Path: <>\r\n")
    assert re.search(rb"with E?SMTP id", trace), "HELO session: with SMTP (or ESMTP)"


def test_bdat_chunks_are_stored_byte_for_byte(smtpenv):
    # Nothing in a chunk is special: dots stay, a lone "." line ends nothing.
    msg = message("chunks", b".not unstuffed in BDAT\r\n..two\r\n.\r\nQUIT\r\n" +
                  (b"y" * 998 + b"\r\n") * 70)
    parts = [msg[:10], msg[10:50000], msg[50000:]]
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net> BODY=8BITMIME").check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    for p in parts:
        s.send(b"BDAT %d\r\n" % len(p) + p)
        r = s.reply()
        r.check(250, "2.0.0")
        assert r.lines[0] == "2.0.0 %d octets received" % len(p)
    s.send(b"BDAT 0 LAST\r\n")
    queued_id(s.reply())
    (doc,) = smtpenv.messages(ALICE)
    body = smtpenv.body(doc)
    assert split_trace(body)[1] == msg
    assert doc["size"] == len(body)


# ---- SMTP smuggling: only CRLF.CRLF ends DATA ----

SMUGGLE = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r\n.\r\r\n", b"\r.\r\n", b"\r\n.\n",
           b"\n..\n"]


@pytest.mark.parametrize("seq", SMUGGLE, ids=[repr(s)[2:-1] for s in SMUGGLE])
def test_smuggled_end_of_data_is_not_an_end(smtpenv, seq):
    s = smtpenv.session()
    begin_data(s)
    s.send(b"Subject: innocent\r\n\r\nhello" + seq +
           b"MAIL FROM:<ceo@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
           b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
    r = s.reply()
    # The whole thing was one message with a bare CR or LF in it: refused.
    assert r.code == 550 and r.enh == "5.5.2", r
    assert "bare" in r.text.lower(), r
    s.cmd("NOOP").check(250, "2.0.0")       # nothing further is pending
    s.cmd("QUIT").check(221)
    assert s.wait() == b""
    assert smtpenv.messages() == [], "nothing may be stored"
    assert smtpenv.body_files() == 0


@pytest.mark.parametrize("bad,what", [
    (b"a bare\nLF\r\n", "bare lf"),
    (b"ends in a bare LF\n", "bare lf"),
    (b"a bare\rCR\r\n", "bare cr"),
])
def test_bare_cr_or_lf_refuses_the_message(smtpenv, bad, what):
    s = smtpenv.session()
    begin_data(s)
    s.send(b"Subject: bare\r\n\r\n" + bad + b"more\r\n.\r\n")
    r = s.reply()
    assert r.code == 550 and r.enh == "5.5.2", r
    assert what in r.text.lower(), r
    assert smtpenv.messages() == [] and smtpenv.body_files() == 0
    # The session goes on: the next message is accepted.
    deliver_ok(s)
    assert len(smtpenv.messages(ALICE)) == 1


def test_nul_refuses_the_message(smtpenv):
    s = smtpenv.session()
    begin_data(s)
    s.send(b"Subject: nul\r\n\r\nbefore\x00after\r\n.\r\n")
    r = s.reply()
    assert r.code // 100 == 5 and r.enh in ("5.6.0", "5.5.2", "5.6.1"), r
    assert smtpenv.messages() == [] and smtpenv.body_files() == 0
    deliver_ok(s)


def test_text_line_limit_is_998_octets(smtpenv):
    s = smtpenv.session()
    begin_data(s)
    s.send(b"Subject: long\r\n\r\n" + b"x" * 998 + b"\r\n.\r\n")
    queued_id(s.reply())
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    s.cmd("RCPT TO:<bob@example.org>").check(250)
    assert s.cmd("DATA").code == 354
    s.send(b"Subject: too long\r\n\r\n" + b"y" * 999 + b"\r\n.\r\n")
    r = s.reply()
    assert r.code // 100 == 5, r
    s.cmd("NOOP").check(250)
    assert len(smtpenv.messages(ALICE)) == 1 and smtpenv.messages(BOB) == []
    assert smtpenv.body_files() == 1


def test_message_over_max_size_is_refused_after_its_end(smtpenv):
    s = smtpenv.session()
    begin_data(s)
    line = b"a" * 78 + b"\r\n"
    s.send(b"Subject: big\r\n\r\n" + line * (MAX_SIZE // len(line) + 10) +
           b"QUIT\r\n.\r\n")
    s.reply().check(552, "5.3.4")
    s.cmd("NOOP").check(250)
    assert smtpenv.messages() == [] and smtpenv.body_files() == 0


def test_command_line_limit_and_no_split_execution(smtpenv):
    s = smtpenv.session()
    s.ehlo()
    s.cmd("NOOP " + "a" * 505).check(250, "2.0.0")   # 512 octets with CRLF
    # 513 octets: refused; its tail (QUIT) must not run as a command.
    s.send("NOOP " + "a" * 502 + "QUIT\r\n")
    s.reply().check(500, "5.5.2")
    s.cmd("NOOP").check(250, "2.0.0")
    s.send("RSET " + "b" * 2000 + "\r\nRCPT TO:<alice@example.org>\r\n")
    s.reply().check(500, "5.5.2")
    s.reply().check(503, "5.5.1")


# ---- CHUNKING: a failed BDAT still swallows its octets ----

def test_failed_bdat_swallows_its_chunks_pipelined(smtpenv):
    s = smtpenv.session()
    s.ehlo()
    # No MAIL: both chunks fail, and their contents are not commands.
    s.send(b"BDAT 12\r\nRSET\r\nQUIT\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    r1, r2, r3 = s.replies(3)
    assert r1.code == 503 and r1.enh == "5.5.1", r1
    assert r2.code // 100 == 5, r2
    r3.check(250, "2.0.0")
    # No valid recipient.
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    s.cmd("RCPT TO:<nobody@example.org>").check(550, "5.1.1")
    inner = b"MAIL FROM:<x@example.net>\r\nQUIT\r\n"
    s.send(b"BDAT 6\r\nQUIT\r\nBDAT %d LAST\r\n" % len(inner) + inner + b"NOOP\r\n")
    r1, r2, r3 = s.replies(3)
    assert r1.code in (503, 554) and r1.enh == "5.5.1", r1
    assert r2.code // 100 == 5, r2
    r3.check(250, "2.0.0")
    s.cmd("RSET").check(250, "2.0.0")
    deliver_ok(s)
    s.cmd("QUIT").check(221)
    assert len(smtpenv.messages()) == 1 and smtpenv.body_files() == 1


def test_bdat_over_size_limit_is_552_and_swallowed(smtpenv):
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    half = (b"QUIT\r\n" * (MAX_SIZE // 6 // 2 + 100))
    s.send(b"BDAT %d\r\n" % len(half) + half + b"BDAT %d LAST\r\n" % len(half) + half +
           b"NOOP\r\n")
    replies = [s.reply(), s.reply()]
    assert replies[0].code == 250 or replies[0].code == 552, replies
    assert any(r.code == 552 and r.enh == "5.3.4" for r in replies), replies
    assert replies[1].code // 100 == 5, replies
    s.reply().check(250, "2.0.0")         # the NOOP: the session is alive
    s.cmd("RSET").check(250)
    assert smtpenv.messages() == [] and smtpenv.body_files() == 0


def test_bdat_size_declared_too_big_in_one_chunk(smtpenv):
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net> BODY=BINARYMIME").check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    chunk = b"RSET\r\n" * (MAX_SIZE // 6 + 10)
    s.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n")
    s.reply().check(552, "5.3.4")
    s.reply().check(250, "2.0.0")
    assert smtpenv.body_files() == 0


def test_binarymime_message_through_bdat(smtpenv):
    msg = (b"Subject: binary\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: binary\r\n\r\n" + bytes(range(1, 256)) + b"\r\n")
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net> BODY=BINARYMIME").check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    s.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    queued_id(s.reply())
    (doc,) = smtpenv.messages(ALICE)
    assert split_trace(smtpenv.body(doc))[1] == msg


# ---- PIPELINING ----

def test_pipelined_group_is_answered_in_order_without_more_input(smtpenv):
    s = smtpenv.session()
    s.send(b"EHLO client.test\r\nMAIL FROM:<bob@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
           b"RCPT TO:<nobody@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
    # All six replies arrive although the client sends nothing more.
    replies = s.replies(6, timeout=5)
    assert [r.code for r in replies] == [250, 250, 250, 550, 250, 354], replies
    assert replies[0].lines[0].startswith(HOSTNAME)
    s.send(message("pipelined") + b".\r\nQUIT\r\n")
    queued_id(s.reply())
    s.reply().check(221)
    assert len(smtpenv.messages()) == 2     # alice and bob


def test_many_transactions_in_one_write(smtpenv):
    script = b"EHLO client.test\r\n" + b"".join(
        data_script("bob@example.net", ALICE, message("m%d" % i), ehlo=False, quit=False)
        for i in range(10)) + b"QUIT\r\n"
    out = smtpenv.pipe(script)
    replies = parse_replies(out)
    ids = [queued_id(r) for r in replies if r.code == 250 and "queued" in r.text]
    assert len(ids) == 10 and len(set(ids)) == 10, out
    assert replies[-1].code == 221
    assert len(smtpenv.messages(ALICE)) == 10


# ---- bounds ----

def test_idle_timeout_answers_421_and_closes(smtpenv):
    conf = smtpenv.write_conf(idle_timeout="2")
    s = smtpenv.session(conf=conf)
    s.ehlo()
    t0 = time.monotonic()
    r = s.reply(timeout=10)
    took = time.monotonic() - t0
    assert r.code == 421 and r.enh == "4.4.2", r
    assert 1.5 <= took < 6, "idle timeout of 2 s took %.1f s" % took
    assert s.wait(timeout=5) == b""


def test_idle_timeout_inside_data_stores_nothing(smtpenv):
    conf = smtpenv.write_conf(idle_timeout="2")
    s = smtpenv.session(conf=conf)
    begin_data(s)
    s.send(b"Subject: half\r\n\r\nhalf a message\r\n")
    r = s.reply(timeout=10)
    assert r.code == 421 and r.enh == "4.4.2", r
    s.wait(timeout=5)
    assert smtpenv.messages() == [] and smtpenv.body_files() == 0


def test_dropped_connection_mid_message_leaves_nothing(smtpenv):
    s = smtpenv.session()
    begin_data(s)
    s.send(b"Subject: dropped\r\n\r\n" + b"x" * 70 + b"\r\n" * 2000)
    s.close_input()
    s.wait(timeout=10)
    assert smtpenv.messages() == [] and smtpenv.body_files() == 0


def test_max_errors_closes_the_session(smtpenv):
    conf = smtpenv.write_conf(max_errors="20")
    s = smtpenv.session(conf=conf)
    s.ehlo()
    codes = []
    for i in range(25):
        try:
            codes.append(s.cmd("RCPT TO:<alice@example.org>").code)
        except (EOFError, BrokenPipeError):
            # Closed: collect whatever it said before closing (the 421).
            codes += [r.code for r in parse_replies(s.read_to_eof(timeout=5))]
            break
    assert codes[:19] == [503] * 19 and codes[-1] == 421 and len(codes) <= 21, codes
    assert s.wait(timeout=5) == b""


def test_enhanced_status_codes_have_the_class_of_the_reply(smtpenv):
    conf = smtpenv.write_conf(allow_plaintext_auth="yes")
    script = (b"EHLO client.test\r\nNOOP\r\nHELP\r\nFOO\r\nRCPT TO:<a@b.example>\r\n"
              b"MAIL FROM:<bob@example.net>\r\nRCPT TO:<nobody@example.org>\r\n"
              b"RCPT TO:<x@remote.example>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
              b"Subject: x\r\n\r\nx\r\n.\r\nVRFY alice@example.org\r\nBDAT x\r\n"
              b"AUTH PLAIN " + plain_token(ALICE, ALICE_PW).encode() + b"\r\nQUIT\r\n")
    replies = parse_replies(smtpenv.pipe(script, conf=conf))
    assert len(replies) == 16, replies
    for r in replies[2:]:                      # after the greeting and EHLO
        m = re.match(r"^(\d)\.\d{1,3}\.\d{1,3} ", r.lines[0])
        if r.code // 100 == 3:
            # 354 and 334 are intermediate: RFC 3463 has no class 3, so an
            # enhanced code here would claim success (2.x.x) that has not happened.
            assert m is None, "intermediate reply with a status code: %r" % r
            continue
        assert m and int(m.group(1)) == r.code // 100, r


# ---- AUTH ----

def test_auth_not_offered_or_accepted_without_tls(smtpenv):
    s = smtpenv.session()
    r = s.ehlo()
    assert not any(l.upper().startswith("AUTH") for l in r.lines), r
    assert "STARTTLS" in r.lines
    r = s.cmd("AUTH PLAIN " + plain_token(ALICE, ALICE_PW))
    assert r.code in (530, 538) and r.enh in ("5.7.0", "5.7.11"), r


def test_bad_credentials_look_the_same_for_unknown_users(smtpenv):
    conf = smtpenv.write_conf(allow_plaintext_auth="yes")
    a = smtpenv.session(conf=conf)
    b = smtpenv.session(conf=conf)
    a.ehlo()
    b.ehlo()
    a.send("AUTH PLAIN " + plain_token(ALICE, "wrong") + "\r\n")
    b.send("AUTH PLAIN " + plain_token("nobody@example.org", "wrong") + "\r\n")
    ra, rb = a.reply(), b.reply()
    ra.check(535, "5.7.8")
    assert ra.raw == rb.raw
    # One failure is not the end: the right password works now.
    a.cmd("AUTH PLAIN " + plain_token(ALICE, ALICE_PW)).check(235, "2.7.0")


def test_three_failed_auth_attempts_close_the_session(smtpenv):
    conf = smtpenv.write_conf(allow_plaintext_auth="yes")
    s = smtpenv.session(conf=conf)
    s.ehlo()
    t0 = time.monotonic()
    r1 = s.cmd("AUTH PLAIN " + plain_token(ALICE, "wrong 1"), timeout=15)
    t1 = time.monotonic()
    s.send("AUTH LOGIN\r\n")
    assert s.reply().code == 334
    assert s.cmd("YWxpY2VAZXhhbXBsZS5vcmc=").code == 334
    r2 = s.cmd("d3Jvbmc=", timeout=15)
    t2 = time.monotonic()
    r3 = s.cmd("AUTH PLAIN " + plain_token(BOB, "wrong 3"), timeout=15)
    r1.check(535, "5.7.8")
    r2.check(535, "5.7.8")
    assert r3.code == 421 and r3.enh is not None and r3.enh.startswith("4."), r3
    assert t1 - t0 >= 0.5, "a failed AUTH should be answered after a delay"
    assert t2 - t1 >= 0.5
    assert s.wait(timeout=5) == b"", "the session must close after 421"


def test_authenticated_relay_goes_to_the_outbound_queue(smtpenv):
    conf = smtpenv.write_conf(allow_plaintext_auth="yes")
    s = smtpenv.session(conf=conf)
    s.ehlo()
    s.cmd("AUTH PLAIN " + plain_token(ALICE, ALICE_PW)).check(235, "2.7.0")
    s.cmd("MAIL FROM:<alice@example.org>").check(250, "2.1.0")
    s.cmd("RCPT TO:<friend@remote.example>").check(250, "2.1.5")
    s.cmd("RCPT TO:<other@elsewhere.example>").check(250, "2.1.5")
    s.cmd("RCPT TO:<bob@example.org>").check(250, "2.1.5")
    assert s.cmd("DATA").code == 354
    msg = message("relayed", sender=ALICE, to="friend@remote.example")
    s.send(msg + b".\r\n")
    qid = queued_id(s.reply())
    (out,) = smtpenv.outbound()
    assert out["state"] == "queued"
    assert out["sender"] == ALICE
    assert sorted(r["address"] for r in out["recipients"]) == \
        ["friend@remote.example", "other@elsewhere.example"]
    body = smtpenv.body(out)
    trace, rest = split_trace(body)
    assert rest == msg
    assert re.search(rb"with ESMTPA id " + qid.encode(), re.sub(rb"\r\n[ \t]+", b" ", trace))
    # Return-Path is added at final delivery (RFC 5321 4.4), not on the
    # copy that leaves for another server.
    assert not body.startswith(b"Return-Path:")
    (local,) = smtpenv.messages(BOB)
    assert smtpenv.body(local) == b"Return-Path: <" + ALICE.encode() + b">\r\n" + body


def test_unauthenticated_relay_is_denied_and_nothing_queued(smtpenv):
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<alice@example.org>").check(250)
    for rcpt in ["friend@remote.example", "@example.org:friend@remote.example",
                 "friend@[127.0.0.1]", "friend@[IPv6:::1]"]:
        r = s.cmd("RCPT TO:<%s>" % rcpt)
        assert r.code == 554 and r.enh == "5.7.1", (rcpt, r)
    for rcpt in ["friend%remote.example@example.org", '"friend@remote.example"@example.org',
                 "remote.example!friend@example.org"]:
        r = s.cmd("RCPT TO:<%s>" % rcpt)
        assert r.code == 550 and r.enh == "5.1.1", (rcpt, r)
    assert s.cmd("DATA").code in (503, 554)
    assert smtpenv.outbound() == []


def test_vrfy_and_expn_answer_only_authenticated_users(smtpenv):
    conf = smtpenv.write_conf(allow_plaintext_auth="yes")
    s = smtpenv.session(conf=conf)
    s.ehlo()
    anon = [s.cmd(c) for c in ("VRFY alice@example.org", "VRFY nobody@example.org",
                               "EXPN team@example.org", "EXPN nobody@example.org")]
    assert all(r.code == 252 and r.enh == "2.5.2" for r in anon), anon
    assert len({r.text for r in anon}) == 1, "the same answer for every address"
    s.cmd("AUTH PLAIN " + plain_token(BOB, BOB_PW)).check(235)
    r = s.cmd("VRFY alice@example.org")
    assert r.code == 250 and "Alice Liddell <alice@example.org>" in r.text, r
    r = s.cmd("EXPN team@example.org")
    assert r.code == 250, r
    assert "alice@example.org" in r.text and "x@remote.example" in r.text, r
    assert s.cmd("VRFY nobody@example.org").code // 100 == 5


# ---- the client address ----

def received_of(env, mailbox=ALICE):
    (doc,) = env.messages(mailbox)
    trace, _ = split_trace(env.body(doc))
    return re.sub(rb"\r\n[ \t]+", b" ", trace).decode()


@pytest.mark.parametrize("args,environ,expect", [
    (["--remote-ip", "203.0.113.5"], {"TCPREMOTEIP": "198.51.100.7"}, "203.0.113.5"),
    ([], {"TCPREMOTEIP": "198.51.100.7"}, "198.51.100.7"),
    ([], {"REMOTE_ADDR": "192.0.2.99"}, "192.0.2.99"),
    ([], {}, "unknown"),
])
def test_client_address_in_received(smtpenv, args, environ, expect):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TCPREMOTEIP", "REMOTE_ADDR")}
    env.update(environ)
    out = smtpenv.pipe(data_script("bob@example.net", ALICE, message("addr")),
                       args=args, remote_ip=None, env=env)
    assert b" OK queued as " in out, out
    received = received_of(smtpenv)
    assert expect in received, received


# ---- more recipients and parameters ----

def test_postmaster_without_domain_reaches_the_postmaster_alias(smtpenv):
    out = smtpenv.pipe(b"HELO client.test\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\n"
                       b"DATA\r\nSubject: to postmaster\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert b"250 2.0.0 OK queued as " in out, out
    # postmaster@example.org is an alias of bob (smtp_helpers.ALIASES).
    assert [m["mailbox"] for m in smtpenv.messages()] == [BOB]


def test_non_ascii_recipient_needs_smtputf8(smtpenv):
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    r = s.cmd("RCPT TO:<jöran@example.org>")
    assert r.code == 553 and r.enh == "5.6.7", r
    s.cmd("RSET").check(250)
    s.cmd("MAIL FROM:<bob@example.net> SMTPUTF8").check(250)
    r = s.cmd("RCPT TO:<jöran@example.org>")
    assert r.code == 550 and r.enh == "5.1.1", r        # unknown, but not a syntax matter


def test_8bit_content_is_stored_unchanged(smtpenv):
    msg = ("Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln, ½ € ✓\r\n").encode()
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net> BODY=8BITMIME").check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    assert s.cmd("DATA").code == 354
    s.send(msg + b".\r\n")
    queued_id(s.reply())
    (doc,) = smtpenv.messages(ALICE)
    assert split_trace(smtpenv.body(doc))[1] == msg


def test_auth_as_one_user_for_another_is_not_granted(smtpenv):
    conf = smtpenv.write_conf(allow_plaintext_auth="yes")
    s = smtpenv.session(conf=conf)
    s.ehlo()
    # SASL PLAIN with authzid bob, authcid alice and alice's password (RFC 4616).
    token = base64.b64encode(b"bob@example.org\0alice@example.org\0alice secret").decode()
    r = s.cmd("AUTH PLAIN " + token)
    if r.code == 235:
        # Accepted only as alice herself: bob's address is still not hers.
        r = s.cmd("MAIL FROM:<bob@example.org>")
        assert r.code == 553 and r.enh == "5.7.1", r
    else:
        assert r.code == 535 and r.enh == "5.7.8", r


def test_passwords_are_not_logged(smtpenv):
    conf = smtpenv.write_conf(allow_plaintext_auth="yes", log_debug="yes")
    token = plain_token(ALICE, ALICE_PW)
    login_user = base64.b64encode(BOB.encode()).decode()
    login_pw = base64.b64encode(BOB_PW.encode()).decode()
    out = smtpenv.pipe("EHLO client.test\r\nAUTH PLAIN %s\r\nQUIT\r\n" % token, conf=conf)
    assert b"235 2.7.0" in out, out
    out = smtpenv.pipe("EHLO client.test\r\nAUTH LOGIN\r\n%s\r\n%s\r\nQUIT\r\n"
                       % (login_user, login_pw), conf=conf)
    assert b"235 2.7.0" in out, out
    log = smtpenv.stderr_path.read_text(errors="replace")
    assert log, "the sessions log to stderr (log_target = stderr)"
    for secret in (ALICE_PW, BOB_PW, token, login_pw):
        assert secret not in log, "a password or AUTH payload was logged"


def test_unreachable_database_is_a_temporary_error(smtpenv):
    conf = smtpenv.write_conf(mongodb_uri="mongodb://127.0.0.1:%d" % free_port(),
                              db_timeout="1")
    t0 = time.monotonic()
    out = smtpenv.pipe(b"EHLO client.test\r\nMAIL FROM:<bob@example.net>\r\n"
                       b"RCPT TO:<alice@example.org>\r\nQUIT\r\n", conf=conf, timeout=30)
    replies = parse_replies(out)
    assert time.monotonic() - t0 < 10, "a database that does not answer must not hang the session"
    rcpt = replies[3] if replies[2].code == 250 else replies[2]
    assert rcpt.code == 451 and rcpt.enh == "4.3.0", replies
    assert replies[-1].code == 221


def test_bdat_text_message_with_bare_lf_is_not_stored_with_bare_lf(smtpenv):
    # Stored bodies have CRLF line ends (POP3 sizes are octet counts, and a
    # bare LF is refused in DATA). A text (not BINARYMIME) message sent with
    # BDAT must be refused or stored with CRLF line ends, not kept with bare LFs.
    msg = b"Subject: lf\n\nbare lf line\nanother\n"
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    s.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    r = s.reply()
    if r.code // 100 == 5:
        assert smtpenv.messages() == [] and smtpenv.body_files() == 0
    else:
        queued_id(r)
        (doc,) = smtpenv.messages(ALICE)
        body = smtpenv.body(doc)
        assert body.count(b"\n") == body.count(b"\r\n"), body


@pytest.mark.parametrize("chunks,enh", [
    ([b"Subject: cr\r\n\r\nline\rmore\r\n"], "5.5.2"),      # bare CR inside a chunk
    ([b"Subject: cr\r\n\r\nline\r", b"more\r\n"], "5.5.2"),   # CR ends a chunk, no LF follows
    ([b"Subject: cr\r\n\r\nends with CR\r"], "5.5.2"),         # the final octet is a CR
    ([b"Subject: nul\r\n\r\na\x00b\r\n"], "5.6.0"),           # NUL in text
])
def test_bdat_text_refuses_what_data_refuses(smtpenv, chunks, enh):
    # A bare CR kept in a text message could end it early at a lax server when
    # the message is relayed with DATA (SMTP smuggling); NUL is not text.
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    for i, c in enumerate(chunks):
        last = b" LAST" if i == len(chunks) - 1 else b""
        s.send(b"BDAT %d%s\r\n" % (len(c), last) + c)
    replies = [s.reply() for _ in chunks]
    assert replies[-1].code == 550 and replies[-1].enh == enh, replies
    s.cmd("NOOP").check(250)
    assert smtpenv.messages() == [] and smtpenv.body_files() == 0


def test_bdat_text_crlf_split_across_chunks_is_fine(smtpenv):
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    first = b"Subject: split\r\n\r\nab\r"
    s.send(b"BDAT %d\r\n" % len(first) + first)
    s.reply().check(250)
    s.send(b"BDAT 1 LAST\r\n\n")
    queued_id(s.reply())
    (doc,) = smtpenv.messages(ALICE)
    assert smtpenv.body(doc).endswith(b"\r\n\r\nab\r\n")


def test_bdat_text_bare_lf_growth_counts_against_the_size_limit(smtpenv):
    # Each bare LF is stored as CR LF: a message of bare LFs just under the
    # limit would be stored at twice the limit.
    msg = b"Subject: lf\n\n" + b"\n" * (MAX_SIZE - 20)
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    s.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    s.reply().check(552, "5.3.4")
    s.cmd("NOOP").check(250)
    assert smtpenv.messages() == [] and smtpenv.body_files() == 0


@pytest.mark.parametrize("mode", ["data", "bdat"])
def test_message_of_exactly_max_size_is_accepted(smtpenv, mode):
    # SIZE (RFC 1870) advertises the largest message the client may send: the
    # message itself, not counting the trace headers the server adds.
    head = b"Subject: exact\r\n\r\n"
    line = b"b" * 98 + b"\r\n"
    n = (MAX_SIZE - len(head)) // len(line)
    pad = MAX_SIZE - len(head) - n * len(line)
    msg = head + line * n + b"c" * (pad - 2) + b"\r\n"
    assert len(msg) == MAX_SIZE
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net> SIZE=%d" % MAX_SIZE).check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    if mode == "data":
        assert s.cmd("DATA").code == 354
        s.send(msg + b".\r\n")
    else:
        s.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
    queued_id(s.reply())
    (doc,) = smtpenv.messages(ALICE)
    assert split_trace(smtpenv.body(doc))[1] == msg


def test_data_end_and_dots_across_read_boundaries(smtpenv):
    # Lines of 7 octets ("..xyz" dot-stuffed) over more than 128 KB, shifted by
    # 0..6 octets: every CR LF and every stuffed dot falls on every alignment
    # of the server's buffers, and so does the final CR LF . CR LF.
    s = smtpenv.session()
    s.ehlo()
    expected = []
    for shift in range(7):
        msg = b"Subject: s%d%s\r\n\r\n" % (shift, b"x" * shift) + b".xyz\r\n" * 20000
        expected.append(msg)
        s.cmd("MAIL FROM:<bob@example.net>").check(250)
        s.cmd("RCPT TO:<alice@example.org>").check(250)
        assert s.cmd("DATA").code == 354
        stuffed = dot_stuff(msg) + b".\r\n"
        # In pieces, so that reads end at odd places too.
        for i in range(0, len(stuffed), 4093):
            s.send(stuffed[i:i + 4093])
        queued_id(s.reply())
    # And an end of data sent one octet at a time.
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    assert s.cmd("DATA").code == 354
    for b in b"Subject: slow\r\n\r\n..a\r\n.\r\n":
        s.send(bytes([b]))
        time.sleep(0.01)
    queued_id(s.reply())
    expected.append(b"Subject: slow\r\n\r\n.a\r\n")
    stored = sorted(split_trace(smtpenv.body(d))[1] for d in smtpenv.messages(ALICE))
    assert stored == sorted(expected)


@pytest.mark.parametrize("line", [
    b"RCPT TO:<alice@example.org\x00@remote.example>",
    b"RCPT TO:<x@remote.example\x00alice@example.org>",
    b"RCPT TO:<user@remote.example@example.org>",
    b"RCPT TO:<x@remote.example>\rRCPT TO:<alice@example.org>",
    b"RCPT TO:<alice@example.org\r>",
    b"RCPT TO:<x@remote.example\n>",
    b"RCPT TO:<user@[192.0.2.10]>",
    b"RCPT TO:<user@localhost>",
    b"RCPT TO:<user@remote.example%example.org>",
    b"RCPT TO:<@remote.example,@example.org:alice@example.org>",
], ids=lambda l: repr(l)[10:40])
def test_no_relay_through_odd_bytes_and_forms(smtpenv, line):
    s = smtpenv.session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    s.send(line + b"\r\n")
    r = s.reply()
    if b"\n>" in line:
        s.reply()       # the stray ">" line is a command of its own
    if r.code == 250:
        # Only acceptable as a purely local delivery (e.g. a source route
        # ending at a local user, RFC 5321 C): never queued for relaying.
        assert line.endswith(b":alice@example.org>"), r
    else:
        assert r.code // 100 == 5, r
    assert s.cmd("DATA").code in (354, 503, 554)
    s.send(b"Subject: x\r\n\r\nx\r\n.\r\n")
    s.read_available(0.5)
    assert smtpenv.outbound() == [], "nothing may be queued for relaying"


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_pipelined_replies_go_out_in_one_write(smtpenv, tmp_path):
    # RFC 2920: the replies to a group of pipelined commands go out together,
    # not one write (one TCP segment) per reply.
    trace = tmp_path / "strace.out"
    argv = ["strace", "-f", "-qq", "-s", "4096", "-e", "trace=write,writev,sendto,sendmsg",
            "-o", str(trace)] + smtpenv.argv()
    with open(smtpenv.stderr_path, "ab") as err:
        p = SmtpProc(argv, stderr=err)
    smtpenv.procs.append(p)
    p.reply().check(220)
    p.send(b"EHLO client.test\r\nMAIL FROM:<bob@example.net>\r\nRCPT TO:<alice@example.org>\r\n"
           b"RCPT TO:<bob@example.org>\r\nDATA\r\n")
    assert [r.code for r in p.replies(5, timeout=10)] == [250, 250, 250, 250, 354]
    p.send(b"Subject: x\r\n\r\nx\r\n.\r\nQUIT\r\n")
    queued_id(p.reply())
    p.reply().check(221)
    p.wait()
    writes = [l for l in trace.read_text(errors="replace").splitlines()
              if re.match(r"^\d+\s+(write|writev|sendto|sendmsg)\(1,", l)]
    group = [l for l in writes if "PIPELINING" in l or "354 " in l or "2.1.5" in l]
    assert len(group) == 1, "replies to one pipelined group in %d writes:\n%s" % (
        len(group), "\n".join(group))


def test_idle_timeout_inside_bdat_chunk_stores_nothing(smtpenv):
    conf = smtpenv.write_conf(idle_timeout="2")
    s = smtpenv.session(conf=conf)
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    s.cmd("RCPT TO:<alice@example.org>").check(250)
    s.send(b"BDAT 100 LAST\r\nSubject: only part\r\n")
    r = s.reply(timeout=10)
    assert r.code == 421 and r.enh == "4.4.2", r
    s.wait(timeout=5)
    assert smtpenv.messages() == [] and smtpenv.body_files() == 0


def test_one_log_line_per_transaction(smtpenv):
    out = smtpenv.pipe(data_script("bob@example.net", [ALICE, "nobody@example.org", BOB],
                                   message("logged")))
    (qid,) = re.findall(rb"OK queued as (\w+)", out)
    log = smtpenv.stderr_path.read_text(errors="replace").splitlines()
    lines = [l for l in log if qid.decode() in l]
    assert len(lines) == 1, "one log entry per transaction, naming its id:\n%s" % "\n".join(log)
    (doc,) = smtpenv.messages(ALICE)
    for part in ("bob@example.net", ALICE, BOB, str(doc["size"]), CLIENT_IP):
        assert part in lines[0], (part, lines[0])


@pytest.mark.parametrize("ending", [b"RSET\r\nQUIT\r\n", b"EHLO again.test\r\nQUIT\r\n",
                                    b"QUIT\r\n", b""], ids=["rset", "ehlo", "quit", "eof"])
def test_unfinished_bdat_transaction_leaves_nothing(smtpenv, ending):
    out = smtpenv.pipe(b"EHLO client.test\r\nMAIL FROM:<bob@example.net>\r\n"
                       b"RCPT TO:<alice@example.org>\r\nBDAT 12\r\nSubject: x\r\n" + ending)
    assert b"250 2.0.0 12 octets received\r\n" in out, out
    assert b"queued" not in out
    assert smtpenv.messages() == [] and smtpenv.body_files() == 0
