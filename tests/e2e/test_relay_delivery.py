"""bin/relay-worker delivering what authenticated users queued, end to end:
destinations from MX records served by a real DNS server (preference order,
the next MX when one is down or answers 4xx, the implicit MX, the null MX
of RFC 7505, a domain that does not exist), relay_host, local domains,
per-recipient outcomes, another mailcell as the receiving side, and what
`mailcell queue list|show` prints. Harness: relay_helpers.py."""
import re
import time

from relay_helpers import (ALICE, BOB, DOWN_IP, DSN, IMPLICIT_IP, MX1_IP,  # noqa: F401
                           MX2_IP, PEER2_IP, RELAY_IP, RX_USER, STALL, message, relay,
                           relaylab)


def delivered_once(peer, rcpts, msg):
    (m,) = peer.wait_messages(1)
    assert m.sender == ALICE
    assert sorted(m.rcpts) == sorted(rcpts)
    # What arrives is the submitted message below our trace header.
    assert m.data.endswith(msg), m.data[:800]
    return m


def test_delivers_to_the_mx_host(relay):
    peer = relay.peer()
    msg = message(body=b"one\r\n.two with a leading dot\r\n..\r\nthree\r\n")
    qid = relay.submit("user@peer.test", msg)
    assert relay.state(qid) == "queued"
    relay.worker()
    m = delivered_once(peer, ["user@peer.test"], msg)
    assert m.data.startswith(b"Received: ")
    assert relay.state(qid) == "done"
    r = relay.rcpt(qid, "user@peer.test")
    assert r["state"] == "delivered"
    assert r["reply"].startswith("250")
    # Nothing more to do: a second run does not send it again.
    relay.worker()
    assert len(peer.messages()) == 1
    assert len(peer.sessions) == 1


def test_mx_preference_order(relay):
    # order.test: MX 10 mx1, MX 20 mx2. Both up: only the first is used.
    mx1 = relay.peer(ip=MX1_IP, name="mx1.order.test")
    mx2 = relay.peer(ip=MX2_IP, name="mx2.order.test")
    msg = message(to="user@order.test")
    qid = relay.submit("user@order.test", msg)
    relay.worker()
    delivered_once(mx1, ["user@order.test"], msg)
    assert mx2.sessions == []
    assert relay.rcpt(qid, "user@order.test")["remote_mta"] == "mx1.order.test"


def test_first_mx_down_second_mx_used(relay):
    mx2 = relay.peer(ip=MX2_IP, name="mx2.order.test")
    msg = message(to="user@order.test")
    qid = relay.submit("user@order.test", msg)
    relay.worker()
    delivered_once(mx2, ["user@order.test"], msg)
    assert relay.state(qid) == "done"
    assert relay.rcpt(qid, "user@order.test")["remote_mta"] == "mx2.order.test"
    show = relay.show(qid)
    assert "mx1.order.test" in show, "the failed connection to mx1 is in the log:\n" + show


def test_first_mx_temporary_failure_second_mx_used(relay):
    mx1 = relay.peer(ip=MX1_IP, name="mx1.order.test",
                     replies={"CONNECT": "421 4.3.2 mx1 is shutting down"})
    mx2 = relay.peer(ip=MX2_IP, name="mx2.order.test")
    msg = message(to="user@order.test")
    qid = relay.submit("user@order.test", msg)
    relay.worker()
    delivered_once(mx2, ["user@order.test"], msg)
    assert len(mx1.sessions) == 1 and mx1.messages(accepted=False) == []
    assert relay.state(qid) == "done"


def test_first_mx_4xx_at_rcpt_second_mx_used(relay):
    mx1 = relay.peer(ip=MX1_IP, name="mx1.order.test",
                     replies={"RCPT": "451 4.3.0 greylisted, try later"})
    mx2 = relay.peer(ip=MX2_IP, name="mx2.order.test")
    msg = message(to="user@order.test")
    qid = relay.submit("user@order.test", msg)
    relay.worker()
    delivered_once(mx2, ["user@order.test"], msg)
    assert mx1.messages() == []
    assert relay.rcpt(qid, "user@order.test")["state"] == "delivered"


def test_first_mx_stalls_second_mx_used_after_relay_timeout(relay):
    relay.use_conf(relay_timeout="1")
    relay.peer(ip=MX1_IP, name="mx1.order.test", replies={"CONNECT": STALL})
    mx2 = relay.peer(ip=MX2_IP, name="mx2.order.test")
    msg = message(to="user@order.test")
    qid = relay.submit("user@order.test", msg)
    t0 = time.monotonic()
    relay.worker(timeout=30)
    took = time.monotonic() - t0
    delivered_once(mx2, ["user@order.test"], msg)
    assert took < 6, "relay_timeout = 1 but the worker took %.1f s" % took
    assert relay.state(qid) == "done"


def test_implicit_mx_is_the_domain_itself(relay):
    peer = relay.peer(ip=IMPLICIT_IP, name="implicit.test")
    msg = message(to="user@implicit.test")
    qid = relay.submit("user@implicit.test", msg)
    relay.worker()
    delivered_once(peer, ["user@implicit.test"], msg)
    assert relay.rcpt(qid, "user@implicit.test")["remote_mta"] == "implicit.test"


def test_null_mx_fails_at_once_with_5_1_10(relay):
    peer = relay.peer()   # must not be involved
    qid = relay.submit("user@nullmx.test", message(to="user@nullmx.test", subject="to null MX"))
    relay.worker()
    assert relay.state(qid) == "failed"
    r = relay.rcpt(qid, "user@nullmx.test")
    assert r["state"] == "failed" and r["status"] == "5.1.10", r
    assert peer.sessions == []
    (dsn,) = relay.dsns(ALICE)
    d = DSN(dsn)
    rr = d.recipient("user@nullmx.test")
    assert rr["Action"].strip() == "failed"
    assert rr["Status"].strip() == "5.1.10"


def test_domain_that_does_not_exist_fails(relay):
    qid = relay.submit("user@nowhere.test", message(to="user@nowhere.test"))
    relay.worker()
    assert relay.state(qid) == "failed"
    r = relay.rcpt(qid, "user@nowhere.test")
    assert r["status"].startswith("5."), r
    assert len(relay.dsns(ALICE)) == 1


def test_relay_host_overrides_mx(relay):
    relay.use_conf(relay_host="[%s]:2526" % RELAY_IP)
    smarthost = relay.peer(ip=RELAY_IP, port=2526, name="smarthost.test")
    mx = relay.peer()                      # peer.test's MX: must not be used
    msg = message(to="user@peer.test")
    qid = relay.submit(["user@peer.test", "user@nowhere.test", "x@nullmx.test"], msg)
    relay.worker()
    got = smarthost.wait(lambda p: sum(len(m.rcpts) for m in p.messages()) >= 3)
    assert got, smarthost.sessions
    rcpts = sorted(r for m in smarthost.messages() for r in m.rcpts)
    assert rcpts == ["user@nowhere.test", "user@peer.test", "x@nullmx.test"]
    for m in smarthost.messages():
        assert m.data.endswith(msg)
    assert mx.sessions == []
    assert relay.state(qid) == "done"
    assert relay.rcpt(qid, "user@peer.test")["remote_mta"] == RELAY_IP


def test_relay_host_down_stays_queued(relay):
    relay.use_conf(relay_host="[%s]:2526" % DOWN_IP, retry_schedule="1h")
    mx = relay.peer()
    qid = relay.submit("user@peer.test")
    t0 = time.time()
    relay.worker()
    it = relay.item(qid)
    assert it["state"] == "queued"
    assert it["recipients"][0]["state"] == "pending"
    assert it["next_attempt"].timestamp() > t0 + 3000
    assert mx.sessions == []
    assert relay.dsns(ALICE) == []


def test_recipients_of_two_domains_and_per_recipient_outcomes(relay):
    relay.use_conf(retry_schedule="1s")
    a = relay.peer(replies={"RCPT": lambda addr, s: {
        "bad@peer.test": "550 5.1.1 <bad@peer.test>: no such user",
        "later@peer.test": "452 4.2.2 mailbox full, try later"}.get(addr)})
    b = relay.peer(ip=PEER2_IP, name="mx.peer2.test")
    msg = message(to="ok@peer.test")
    rcpts = ["ok@peer.test", "bad@peer.test", "later@peer.test", "x@peer2.test", "y@peer2.test"]
    qid = relay.submit(rcpts, msg)
    relay.worker()
    (ma,) = a.messages()
    assert ma.rcpts == ["ok@peer.test"]
    (mb,) = b.messages()
    assert sorted(mb.rcpts) == ["x@peer2.test", "y@peer2.test"], "one transaction per domain"
    assert ma.data.endswith(msg) and mb.data.endswith(msg)
    states = {r["address"]: (r["state"], r["status"]) for r in relay.item(qid)["recipients"]}
    assert states == {"ok@peer.test": ("delivered", "2.0.0"),
                      "bad@peer.test": ("failed", "5.1.1"),
                      "later@peer.test": ("pending", "4.2.2"),
                      "x@peer2.test": ("delivered", "2.0.0"),
                      "y@peer2.test": ("delivered", "2.0.0")}, states
    assert relay.state(qid) == "queued"
    # The failed recipient is reported at once, alone.
    (dsn,) = relay.dsns(ALICE)
    d = DSN(dsn)
    assert d.recipients() == \
        ["bad@peer.test"]
    # The next attempt is for the pending recipient only.
    a.set_replies(RCPT=None)
    time.sleep(1.1)
    relay.worker()
    assert [m.rcpts for m in a.messages()] == [["ok@peer.test"], ["later@peer.test"]]
    assert len(b.messages()) == 1
    assert relay.state(qid) == "failed", "done with a failed recipient: failed"
    assert relay.rcpt(qid, "later@peer.test")["state"] == "delivered"
    assert len(relay.dsns(ALICE)) == 1, "no second bounce for the same failure"


def test_queued_for_a_domain_that_became_local_goes_to_the_mailbox(relay):
    msg = message(to="carol@later.test", subject="now local")
    qid = relay.submit("carol@later.test", msg)
    relay.mailcell.ok("domain", "add", "later.test")
    relay.mailcell.ok("user", "add", "carol@later.test", input="carol secret\n")
    relay.worker()
    assert relay.state(qid) == "done"
    (got,) = relay.mailbox("carol@later.test")
    assert got.endswith(msg)
    assert got.startswith(b"Return-Path: <alice@example.org>\r\n")


def test_to_another_mailcell(relay):
    rx = relay.mailcell_peer()
    msg = message(to=RX_USER, subject="mailcell to mailcell",
                  body="8-bit: caf\u00e9 \u00fcber\r\n".encode(),
                  extra=b"Content-Type: text/plain; charset=utf-8\r\n"
                        b"Content-Transfer-Encoding: 8bit\r\nMIME-Version: 1.0\r\n")
    qid = relay.submit(RX_USER, msg, params="BODY=8BITMIME")
    relay.worker()
    (got,) = rx.wait_messages(1)
    assert got.endswith(msg), got[:1000]
    # The receiving mailcell's trace header names us as the client.
    head = got.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("Return-Path: <alice@example.org>")
    assert re.search(r"Received: from mail\.test \(", head), head
    assert relay.state(qid) == "done"
    assert relay.rcpt(qid, RX_USER)["remote_mta"] == "mx.remote.test"


def test_queue_list_and_show_print_the_item_and_its_log(relay):
    peer = relay.peer(replies={"RCPT": lambda addr, s: "550 5.1.1 <%s>: no such user" % addr
                               if addr.startswith("bad") else None})
    qid = relay.submit(["good@peer.test", "bad@peer.test"], message(to="good@peer.test"))
    rows = [r for r in relay.queue_list() if r[0] == qid]
    assert len(rows) == 1, relay.queue_list()
    row = rows[0]
    assert row[1] == "queued"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", row[2]), row
    assert row[3] == "<%s>" % ALICE
    assert "good@peer.test" in row[4] and "bad@peer.test" in row[4]
    relay.worker()
    assert len(peer.messages()) == 1
    show = relay.show(qid)
    fields = dict(l.split(": ", 1) for l in show.split("\nrecipients:")[0].splitlines())
    assert fields["id"] == qid
    assert fields["state"] == "failed"
    assert fields["sender"] == "<%s>" % ALICE
    assert fields["attempts"] == "1"
    for k in ("created", "next attempt", "size"):
        assert k in fields, show
    rcpt_lines = [l for l in show.splitlines() if l.startswith("  <")]
    good = [l for l in rcpt_lines if l.startswith("  <good@peer.test>")][0].split("\t")
    bad = [l for l in rcpt_lines if l.startswith("  <bad@peer.test>")][0].split("\t")
    assert good[1:3] == ["delivered", "2.0.0"] and good[-1] == "via mx.peer.test", good
    assert bad[1:3] == ["failed", "5.1.1"] and "no such user" in bad[3], bad
    assert bad[-1] == "via mx.peer.test"
    log = show.split("\nlog:\n", 1)[1]
    # "  TIME  > COMMAND" and "  ...  < REPLY", times with milliseconds.
    ts = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.search(r"(?m)^  %s  < 220 mx\.peer\.test" % ts, log), log
    assert re.search(r"(?m)^  %s  > EHLO mail\.test$" % ts, log), log
    assert re.search(r"(?m)^  %s  > MAIL FROM:<alice@example\.org>" % ts, log), log
    assert re.search(r"(?m)^  %s  > RCPT TO:<bad@peer\.test>\n\s+< 550 5\.1\.1 <bad@peer\.test>: "
                     r"no such user$" % ts, log), log
    assert re.search(r"(?m)^\s+< 250", log)
    js = relay.show_json(qid)
    assert js["state"] == "failed"
    assert {r["address"] for r in js["recipients"]} == {"good@peer.test", "bad@peer.test"}


def test_queue_show_size_stays_the_message_size(relay):
    relay.peer()
    msg = message(body=(b"x" * 70 + b"\r\n") * 70)
    qid = relay.submit("user@peer.test", msg)

    def size():
        return int(re.search(r"(?m)^size: (\d+)$", relay.show(qid)).group(1))
    before = size()
    assert before >= len(msg)
    relay.worker()
    assert relay.state(qid) == "done"
    assert size() == before, "queue show reports another size once the item is delivered"


def test_relay_port_is_used_for_mx_hosts(relay):
    relay.use_conf(relay_port="2525")
    on25 = relay.peer()
    on2525 = relay.peer(port=2525)
    msg = message()
    qid = relay.submit("user@peer.test", msg)
    relay.worker()
    delivered_once(on2525, ["user@peer.test"], msg)
    assert on25.sessions == []
    assert relay.state(qid) == "done"


def test_first_mx_4xx_after_the_content_second_mx_used(relay):
    mx1 = relay.peer(ip=MX1_IP, name="mx1.order.test",
                     replies={"EOM": "451 4.3.0 local error in processing"})
    mx2 = relay.peer(ip=MX2_IP, name="mx2.order.test")
    msg = message(to="user@order.test")
    qid = relay.submit("user@order.test", msg)
    relay.worker()
    delivered_once(mx2, ["user@order.test"], msg)
    assert len(mx1.messages(accepted=False)) == 1 and mx1.messages() == []
    assert relay.state(qid) == "done"


def test_server_recipient_limit(relay):
    # The server takes two recipients per transaction (452 4.5.3 for more,
    # RFC 5321 4.5.3.1.10): the others must still arrive, each once.
    relay.use_conf(retry_schedule="1s")
    peer = relay.peer(replies={"RCPT": lambda addr, s: "452 4.5.3 Too many recipients"
                               if s.messages and len(s.messages[-1].rcpts) >= 2 else None})
    rcpts = ["r%d@peer.test" % i for i in range(5)]
    msg = message(to=rcpts[0])
    qid = relay.submit(rcpts, msg)
    for _ in range(4):
        relay.worker()
        if relay.state(qid) != "queued":
            break
        time.sleep(1.1)
    got = [r for m in peer.messages() for r in m.rcpts]
    assert sorted(got) == rcpts, "each recipient once: %r" % got
    for m in peer.messages():
        assert m.data.endswith(msg)
    assert relay.state(qid) == "done"
    assert relay.dsns(ALICE) == []


def test_mx_without_an_address_is_skipped(relay):
    # badmx.test: MX 10 nohost.badmx.test (no such name), MX 20 mx.peer.test.
    peer = relay.peer()
    msg = message(to="user@badmx.test")
    qid = relay.submit("user@badmx.test", msg)
    relay.worker()
    delivered_once(peer, ["user@badmx.test"], msg)
    assert relay.rcpt(qid, "user@badmx.test")["remote_mta"] == "mx.peer.test"
    assert "nohost.badmx.test" in relay.show(qid)


def test_relay_host_by_name(relay):
    relay.use_conf(relay_host="mx.peer2.test:2526")
    smarthost = relay.peer(ip=PEER2_IP, port=2526, name="mx.peer2.test")
    msg = message(to="user@nowhere.test")
    qid = relay.submit("user@nowhere.test", msg)
    relay.worker()
    delivered_once(smarthost, ["user@nowhere.test"], msg)
    assert relay.state(qid) == "done"


def test_local_and_remote_recipients_of_one_submission(relay):
    peer = relay.peer()
    msg = message(to="user@peer.test")
    qid = relay.submit([BOB, "user@peer.test"], msg)
    assert [r["address"] for r in relay.item(qid)["recipients"]] == ["user@peer.test"]
    (local,) = relay.mailbox(BOB)
    assert local.endswith(msg)
    relay.worker()
    delivered_once(peer, ["user@peer.test"], msg)
    assert len(relay.mailbox(BOB)) == 1, "the local recipient got the message twice"
