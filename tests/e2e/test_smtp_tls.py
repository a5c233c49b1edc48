"""TLS in bin/smtp-session: STARTTLS (RFC 3207) with the session on a real
socket (one end of a socketpair as fd 0/1), STARTTLS command injection (bytes
pipelined behind STARTTLS must be discarded, CVE-2011-0411 style), the reset
after the handshake, AUTH over TLS, and implicit TLS (--tls, RFC 8314)."""
import re

from smtp_helpers import (ALICE, ALICE_PW, BOB, HOSTNAME, message, plain_token, queued_id,
                          smtp_cert, smtpenv, split_trace)  # noqa: F401


def starttls(s):
    s.cmd("STARTTLS").check(220, "2.0.0")
    s.start_tls()


def test_starttls_then_ehlo_offers_auth_and_not_starttls(smtpenv):
    s = smtpenv.sock_session()
    r = s.ehlo()
    assert "STARTTLS" in r.lines
    assert not any(l.startswith("AUTH") for l in r.lines)
    starttls(s)
    assert s.tls.version() in ("TLSv1.2", "TLSv1.3")
    r = s.ehlo()
    assert r.lines[0].startswith(HOSTNAME)
    assert "STARTTLS" not in r.lines
    assert any(re.match(r"AUTH( \w+)* PLAIN", l) and "LOGIN" in l for l in r.lines), r
    r = s.cmd("STARTTLS")
    assert r.code == 503 and r.enh == "5.5.1", r
    s.cmd("QUIT").check(221)


def test_starttls_resets_the_session(smtpenv):
    s = smtpenv.sock_session()
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250)
    r = s.cmd("STARTTLS")
    if r.code == 503:           # refused inside a transaction: fine, end it first
        assert r.enh == "5.5.1", r
        s.cmd("RSET").check(250)
        r = s.cmd("STARTTLS")
    r.check(220, "2.0.0")
    s.start_tls()
    # The EHLO is forgotten: a new one is needed (RFC 3207 4.2).
    r = s.cmd("MAIL FROM:<bob@example.net>")
    assert r.code == 503 and r.enh == "5.5.1", r
    r = s.cmd("RCPT TO:<alice@example.org>")
    assert r.code == 503 and r.enh == "5.5.1", r
    s.ehlo()
    s.cmd("MAIL FROM:<bob@example.net>").check(250, "2.1.0")
    s.cmd("RCPT TO:<alice@example.org>").check(250, "2.1.5")
    assert s.cmd("DATA").code == 354
    s.send(message("over tls") + b".\r\n")
    qid = queued_id(s.reply())
    s.cmd("QUIT").check(221)
    (doc,) = smtpenv.messages(ALICE)
    trace, _ = split_trace(smtpenv.body(doc))
    trace = re.sub(rb"\r\n[ \t]+", b" ", trace)
    assert re.search(rb"with ESMTPS id " + qid.encode(), trace), trace


def test_starttls_injection_is_discarded(smtpenv):
    s = smtpenv.sock_session()
    s.ehlo()
    # Everything after STARTTLS in the same write arrives before the handshake.
    s.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\nRCPT TO:<alice@example.org>\r\n"
           b"NOOP\r\n")
    s.reply().check(220, "2.0.0")
    s.start_tls()          # asserts nothing else came in plain text
    # The first reply over TLS answers the client's first TLS command.
    r = s.cmd("EHLO client.test")
    assert r.code == 250 and r.lines[0].startswith(HOSTNAME), r
    # The injected MAIL did not take effect: RCPT needs a MAIL first.
    r = s.cmd("RCPT TO:<alice@example.org>")
    assert r.code == 503 and r.enh == "5.5.1", r
    s.cmd("NOOP").check(250, "2.0.0")
    s.cmd("QUIT").check(221, "2.0.0")
    assert smtpenv.messages() == []


def test_starttls_injection_without_ehlo_after(smtpenv):
    s = smtpenv.sock_session()
    s.ehlo()
    s.send(b"STARTTLS\r\nNOOP\r\n")
    s.reply().check(220)
    s.start_tls()
    r = s.cmd("HELP")
    assert r.code == 214, "the first TLS reply must answer HELP, not the injected NOOP: %r" % r
    s.cmd("QUIT").check(221)


def test_auth_over_starttls_and_submission(smtpenv):
    s = smtpenv.sock_session(args=["--submission"])
    s.ehlo()
    r = s.cmd("MAIL FROM:<alice@example.org>")
    assert r.code == 530 and r.enh == "5.7.0", r
    starttls(s)
    s.ehlo()
    s.cmd("AUTH PLAIN " + plain_token(ALICE, ALICE_PW)).check(235, "2.7.0")
    s.cmd("MAIL FROM:<alice@example.org>").check(250)
    s.cmd("RCPT TO:<bob@example.org>").check(250)
    s.cmd("RCPT TO:<friend@remote.example>").check(250)
    assert s.cmd("DATA").code == 354
    s.send(message("submitted", sender=ALICE, to=BOB) + b".\r\n")
    qid = queued_id(s.reply())
    s.cmd("QUIT").check(221)
    (doc,) = smtpenv.messages(BOB)
    trace = re.sub(rb"\r\n[ \t]+", b" ", split_trace(smtpenv.body(doc))[0])
    assert re.search(rb"with ESMTPSA id " + qid.encode(), trace), trace
    (out,) = smtpenv.outbound()
    assert out["state"] == "queued" and [r["address"] for r in out["recipients"]] == \
        ["friend@remote.example"]


def test_implicit_tls(smtpenv):
    s = smtpenv.sock_session(args=["--tls", "--submission"])
    s.start_tls()
    s.reply().check(220)
    r = s.ehlo()
    assert "STARTTLS" not in r.lines
    assert any(l.startswith("AUTH") for l in r.lines), r
    assert s.cmd("STARTTLS").code == 503
    s.cmd("AUTH PLAIN " + plain_token(ALICE, ALICE_PW)).check(235, "2.7.0")
    s.cmd("QUIT").check(221)


def test_implicit_tls_refuses_plain_text_client(smtpenv):
    s = smtpenv.sock_session(args=["--tls"], greet=False)
    s.send(b"EHLO client.test\r\n")
    data = s.read_available(wait=3)
    assert b"250" not in data and b"220 " not in data, data
    s.close()
    s.proc.wait(timeout=15)
