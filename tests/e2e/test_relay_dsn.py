"""Delivery status notifications (RFC 3464) of the relay worker, parsed with
Python's email package: one per message to its sender, from
MAILER-DAEMON@hostname with the null sender; multipart/report with a
text/html alternative carrying the log, message/delivery-status with a
block per failed recipient, and text/rfc822-headers with the original's
header. A local sender finds it in the mailbox, a remote one gets it through
the queue; mail from <> never gets one. Also the final failure when
queue_lifetime runs out, and the delay warning. Harness: relay_helpers.py."""
import html
import re
import subprocess
import time

from conftest import BIN
from relay_helpers import (ALICE, ALICE_PW, CLIENT_IP, DSN, PEER2_IP, message,  # noqa: F401
                           relay, relaylab, unfold)

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z"


def rejecting_peer(relay, reply="550 5.1.1 <%s>: Recipient address rejected: no such user"):
    return relay.peer(replies={"RCPT": lambda addr, s: reply % addr
                               if addr.startswith("bad") else None})


def test_bounce_structure(relay):
    rejecting_peer(relay)
    msg = message(subject="quarterly report", to="bad1@peer.test",
                  msgid="report-123@example.org")
    qid = relay.submit(["bad1@peer.test", "bad2@peer.test", "ok@peer.test"], msg)
    relay.worker()
    assert relay.state(qid) == "failed"
    (raw,) = relay.dsns(ALICE)
    d = DSN(raw)
    m = d.msg
    # The envelope and the header.
    assert raw.startswith(b"Return-Path: <>\r\n"), raw[:200]
    doc = relay.db.messages.find_one({"mailbox": ALICE})
    assert doc["sender"] == ""
    assert re.search(r"MAILER-DAEMON@mail\.test", m["From"]), m["From"]
    assert ALICE in m["To"]
    assert m["Subject"] and m["Date"] and m["Message-ID"]
    assert (m["Auto-Submitted"] or "").strip() == "auto-replied", "RFC 3834"
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    assert (m.get("MIME-Version") or "").strip() == "1.0"
    assert raw.count(b"\n") == raw.count(b"\r\n"), "CRLF line ends"
    # Three parts: the human-readable one, delivery-status, the headers.
    assert [p.get_content_type() for p in d.parts] == [
        "multipart/alternative", "message/delivery-status", "text/rfc822-headers"]
    assert [p.get_content_type() for p in d.human().get_payload()] == ["text/plain", "text/html"]
    # The per-message block.
    pm = d.per_message()
    assert unfold(pm["Reporting-MTA"]).replace(" ", "") == "dns;mail.test", pm["Reporting-MTA"]
    # One block per failed recipient; the delivered one is not in it.
    assert sorted(d.recipients()) == ["bad1@peer.test", "bad2@peer.test"]
    for addr in ("bad1@peer.test", "bad2@peer.test"):
        r = d.recipient(addr)
        assert r["Action"].strip() == "failed"
        assert r["Status"].strip() == "5.1.1"
        assert unfold(r["Remote-MTA"]).replace(" ", "").lower() == "dns;mx.peer.test"
        diag = unfold(r["Diagnostic-Code"])
        assert re.match(r"(?i)^smtp;\s*550 5\.1\.1 <%s>: Recipient address rejected" %
                        re.escape(addr), diag), diag
        assert r.get("Last-Attempt-Date")
    # The text part: recipients, reason, and the log with times.
    text = d.text()
    for addr in ("bad1@peer.test", "bad2@peer.test"):
        assert addr in text
    assert "5.1.1" in text and "no such user" in text
    assert re.search(ISO + r".*RCPT TO:<bad1@peer\.test>", text), text
    assert re.search(ISO + r".*550 5\.1\.1 <bad1@peer\.test>", text), text
    assert re.search(ISO + r".*220 mx\.peer\.test", text), text
    assert "ok@peer.test" not in text.split("Delivery log")[0]
    # The HTML part says the same, escaped.
    h = d.html()
    assert "<html" in h.lower()
    assert "bad1@peer.test" in h
    assert "&lt;bad1@peer.test&gt;" in h, "reply text must be HTML-escaped"
    assert "<bad1@peer.test>" not in h
    assert "RCPT TO:&lt;bad2@peer.test&gt;" in h
    assert re.search(ISO, html.unescape(h))
    # The original's header, not its body.
    hp = d.headers_part()
    assert b"Subject: quarterly report" in hp
    assert b"Message-ID: <report-123@example.org>" in hp
    assert b"hello from the relay tests" not in hp


def test_one_bounce_for_a_message_refused_at_its_end(relay):
    relay.peer(replies={"EOM": "554 5.7.1 message content rejected"})
    qid = relay.submit(["a@peer.test", "b@peer.test"], message(to="a@peer.test"))
    relay.worker()
    assert relay.state(qid) == "failed"
    (raw,) = relay.dsns(ALICE)
    d = DSN(raw)
    assert sorted(d.recipients()) == ["a@peer.test", "b@peer.test"]
    for r in d.per_recipient():
        assert r["Status"].strip() == "5.7.1"
        assert "content rejected" in unfold(r["Diagnostic-Code"])


def test_bounce_for_a_5xx_greeting(relay):
    relay.peer(replies={"CONNECT": "554 5.7.1 no mail from you"})
    qid = relay.submit("user@peer.test")
    relay.worker()
    assert relay.state(qid) == "failed"
    (raw,) = relay.dsns(ALICE)
    r = DSN(raw).recipient("user@peer.test")
    assert r["Status"].strip() == "5.7.1"
    assert "no mail from you" in unfold(r["Diagnostic-Code"])


def test_bounce_is_readable_through_pop3(relay):
    rejecting_peer(relay)
    relay.submit("bad@peer.test", message(to="bad@peer.test"))
    relay.worker()
    (stored,) = relay.dsns(ALICE)
    script = ("USER %s\r\nPASS %s\r\nRETR 1\r\nQUIT\r\n" % (ALICE, ALICE_PW)).encode()
    out = subprocess.run([str(BIN / "pop3-session"), "-c", str(relay.conf),
                          "--remote-ip", CLIENT_IP], input=script, capture_output=True,
                         timeout=30, env=relay.env).stdout
    lines = out.split(b"\r\n")
    oks = [n for n, l in enumerate(lines) if l.startswith(b"+OK")]
    assert len(oks) >= 4, out[:500]          # greeting, USER, PASS, RETR
    body = []
    for l in lines[oks[3] + 1:]:
        if l == b".":
            break
        body.append(l[1:] if l.startswith(b".") else l)
    assert b"\r\n".join(body) + b"\r\n" == stored


def test_remote_sender_gets_the_bounce_through_the_queue(relay):
    # A forwarding alias: mail from a remote sender to fwd@example.org goes
    # on to user@peer.test, which refuses it; the bounce goes back out.
    relay.mailcell.ok("alias", "add", "fwd@example.org", "bad@peer.test")
    rejecting_peer(relay)
    home = relay.peer(ip=PEER2_IP, name="mx.peer2.test")
    ids = relay.inject("someone@peer2.test", "fwd@example.org",
                       message(sender="someone@peer2.test", to="fwd@example.org",
                               subject="forward me"))
    assert len(ids) == 1
    relay.worker()
    (qid,) = ids
    assert relay.state(qid) == "failed"
    # The bounce is queued for the remote sender and delivered (at the
    # latest by the next run).
    if not home.messages():
        relay.worker()
    (m,) = home.wait_messages()
    assert m.sender == "", "a bounce is sent from the null sender: %r" % m.mail_arg
    assert m.rcpts == ["someone@peer2.test"]
    d = DSN(m.data)
    assert d.content_type == "multipart/report"
    assert d.recipient("bad@peer.test")["Action"].strip() == "failed"
    assert b"Subject: forward me" in d.headers_part()
    assert relay.mailbox(ALICE) == []
    bounce_items = [it for it in relay.items() if it["sender"] == ""]
    assert len(bounce_items) == 1 and bounce_items[0]["state"] == "done"


def test_no_bounce_for_the_null_sender(relay):
    relay.mailcell.ok("alias", "add", "fwd@example.org", "bad@peer.test")
    peer = rejecting_peer(relay)
    ids = relay.inject("", "fwd@example.org", message(sender="mailer-daemon@peer2.test",
                                                     to="fwd@example.org", subject="a bounce"))
    (qid,) = ids
    relay.worker()
    relay.worker()
    assert relay.state(qid) == "failed"
    assert len(peer.sessions) == 1
    assert [it["_id"] for it in relay.items()] == [relay.item(qid)["_id"]], \
        "nothing may be queued in answer to mail from <>"
    assert relay.db.messages.count_documents({}) == 0


def test_queue_lifetime_reached_bounces(relay):
    # queue_lifetime cannot be below a minute: the item is made a little
    # older than that instead of waiting.
    relay.use_conf(queue_lifetime="60s", retry_schedule="1s")
    peer = relay.peer(replies={"RCPT": "451 4.3.0 temporarily unavailable"})
    qid = relay.submit("user@peer.test", message(subject="too late"))
    relay.worker()
    assert relay.state(qid) == "queued"
    assert relay.dsns(ALICE) == []
    relay.backdate(qid, 120)
    time.sleep(1.1)
    relay.worker()
    assert len(peer.sessions) >= 1
    it = relay.item(qid)
    assert it["state"] == "failed", it
    r = it["recipients"][0]
    assert r["state"] == "failed"
    (raw,) = relay.dsns(ALICE)
    d = DSN(raw)
    rr = d.recipient("user@peer.test")
    assert rr["Action"].strip() == "failed"
    assert rr["Status"].strip().startswith("4.4.7") or rr["Status"].strip().startswith("5."), rr
    assert "temporarily unavailable" in d.text() or "temporarily unavailable" in unfold(
        rr.get("Diagnostic-Code", "")), "the last error is reported"
    relay.worker()
    assert len(relay.dsns(ALICE)) == 1


def test_delay_warning_once(relay):
    relay.use_conf(delay_warning="2s", retry_schedule="1s")
    peer = relay.peer(replies={"RCPT": "451 4.3.0 temporarily unavailable"})
    qid = relay.submit("user@peer.test", message(subject="slow one"))
    relay.worker()
    assert relay.dsns(ALICE) == [], "no warning before delay_warning"
    time.sleep(2.2)
    relay.worker()
    (raw,) = relay.dsns(ALICE)
    d = DSN(raw)
    assert re.search(r"MAILER-DAEMON@mail\.test", d.msg["From"])
    assert raw.startswith(b"Return-Path: <>\r\n")
    r = d.recipient("user@peer.test")
    assert r["Action"].strip() == "delayed"
    assert r["Status"].strip().startswith("4."), r["Status"]
    assert "temporarily unavailable" in unfold(r.get("Diagnostic-Code", ""))
    wru = r.get("Will-Retry-Until")
    assert wru is None or wru.strip()
    assert b"Subject: slow one" in d.headers_part()
    assert "user@peer.test" in d.text()
    assert relay.state(qid) == "queued"
    # Once only.
    time.sleep(1.1)
    relay.worker()
    assert len(relay.dsns(ALICE)) == 1
    assert len(peer.sessions) >= 3
    # Delivered in the end: no failure notice follows.
    peer.set_replies(RCPT=None)
    time.sleep(1.1)
    relay.worker()
    assert relay.state(qid) == "done"
    assert len(relay.dsns(ALICE)) == 1


def test_no_delay_warning_when_switched_off(relay):
    relay.use_conf(delay_warning="0", retry_schedule="1s")
    relay.peer(replies={"RCPT": "451 4.3.0 temporarily unavailable"})
    qid = relay.submit("user@peer.test")
    relay.worker()
    relay.backdate(qid, 86400)       # past the default 4h, within the 5d lifetime
    time.sleep(1.1)
    relay.worker()
    assert relay.dsns(ALICE) == []


def test_failures_in_two_domains_make_one_bounce(relay):
    rejecting_peer(relay)
    qid = relay.submit(["bad@peer.test", "x@nullmx.test", "ok@peer.test"],
                       message(to="bad@peer.test"))
    relay.worker()
    assert relay.state(qid) == "failed"
    (raw,) = relay.dsns(ALICE)
    d = DSN(raw)
    assert sorted(d.recipients()) == ["bad@peer.test", "x@nullmx.test"]
    assert d.recipient("x@nullmx.test")["Status"].strip() == "5.1.10"
    assert d.recipient("bad@peer.test")["Status"].strip() == "5.1.1"


def test_no_delay_warning_for_the_null_sender(relay):
    relay.mailcell.ok("alias", "add", "fwd@example.org", "user@peer.test")
    relay.peer(replies={"RCPT": "451 4.3.0 temporarily unavailable"})
    (qid,) = relay.inject("", "fwd@example.org", message(sender="mailer-daemon@peer2.test",
                                                         to="fwd@example.org"))
    relay.worker()
    relay.backdate(qid, 5 * 3600)      # past the default delay_warning of 4h
    relay.mailcell.ok("queue", "retry", qid)
    relay.worker()
    assert relay.item(qid)["attempts"] == 2
    assert relay.state(qid) == "queued"
    assert len(relay.items()) == 1, "nothing may be queued in answer to mail from <>"
    assert relay.db.messages.count_documents({}) == 0
