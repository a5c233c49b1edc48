"""Running relay workers: `--once` and its exit codes, several workers on one
queue (each message delivered exactly once, checked at a real peer,
Postfix's smtp-sink), a worker killed with SIGKILL in the middle of a
delivery whose item another worker takes over once claim_lease has run out,
and `--loop N`: sd_notify READY=1 (a NOTIFY_SOCKET the test listens on),
delivery as soon as a session touches relay_trigger while the loop period
is long, due retries on its timer, SIGTERM. Harness: relay_helpers.py."""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from relay_helpers import (STALL, conf_text, message, relay, relaylab,  # noqa: F401
                           sink_fields)


def test_once_exits_75_when_the_database_is_unavailable(relay):
    conf = relay.tmp / "nodb.conf"
    conf.write_text(conf_text("mongodb://127.0.0.1:9", relay.dbname, db_timeout="1",
                              relay_trigger=""))
    t0 = time.monotonic()
    r = relay.worker("--once", conf=conf, check=False, timeout=30)
    assert r.returncode == 75, relay.log()[-2000:]
    assert time.monotonic() - t0 < 10


def test_loop_keeps_running_without_the_database(relay):
    conf = relay.tmp / "nodb.conf"
    conf.write_text(conf_text("mongodb://127.0.0.1:9", relay.dbname, db_timeout="1",
                              relay_trigger=""))
    w = relay.worker_proc("--loop", "1", conf=conf)
    time.sleep(2.5)
    assert w.poll() is None, "the loop gave up while the database was away:\n" + \
        relay.log()[-2000:]
    w.send_signal(signal.SIGTERM)
    assert w.wait(10) == 0


def test_broken_templates_stop_the_worker_at_start(relay):
    bad = relay.tmp / "templates"
    bad.mkdir()
    for name in ("dsn-failed.txt", "dsn-failed.html", "dsn-delayed.txt", "dsn-delayed.html"):
        (bad / name).write_text("{{recipients}} {{#each recipients}}\n")
    conf = relay.write_conf(templates_dir=str(bad))
    r = relay.worker("--once", conf=conf, check=False)
    assert r.returncode not in (0, 75), r.returncode
    assert "templates" in relay.log().splitlines()[-1], relay.log()[-1000:]
    conf = relay.write_conf(templates_dir=str(relay.tmp / "nonexistent"))
    r = relay.worker("--once", conf=conf, check=False)
    assert r.returncode not in (0, 75), r.returncode


def test_once_with_an_empty_queue(relay):
    r = relay.worker("--once")
    assert r.returncode == 0
    assert r.stdout == b""


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_racing_deliver_each_message_once(relay, workers):
    sink = relay.sink()
    n = 20
    msgids = ["race-%02d-%s@example.org" % (i, relay.dbname) for i in range(n)]
    ids = relay.submit_many([
        ("user%02d@sink.test" % i, message(to="user%02d@sink.test" % i, msgid=msgids[i],
                                            subject="race %d" % i), "")
        for i in range(n)])
    assert len(set(ids)) == n
    procs = [relay.worker_proc("--once") for _ in range(workers)]
    for p in procs:
        assert p.wait(60) == 0, relay.log()[-3000:]
    deadline = time.monotonic() + 5
    while len(sink.complete()) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    dumps = sink.complete()
    got = []
    for d in dumps:
        m = re.search(rb"(?mi)^Message-ID: <([^>]+)>", d)
        assert m, d[:500]
        got.append(m.group(1).decode())
    dup = sorted({x for x in got if got.count(x) > 1})
    assert not dup, "delivered more than once: %s" % dup
    assert sorted(got) == sorted(msgids), "missing: %s" % sorted(set(msgids) - set(got))
    states = {relay.state(i) for i in ids}
    assert states == {"done"}, states
    for i, qid in enumerate(ids):
        assert relay.item(qid)["attempts"] == 1, relay.item(qid)
    # Each dump is one envelope for the right recipient.
    for d in dumps:
        fields, _ = sink_fields(d)
        i = int(re.search(rb"Subject: race (\d+)", d).group(1))
        assert fields["X-Rcpt-Args"] == ["<user%02d@sink.test>" % i], fields


def test_killed_worker_item_taken_over_after_the_lease(relay):
    relay.use_conf(claim_lease="5", relay_timeout="60", retry_schedule="1s")
    peer = relay.peer(replies={"DATA": STALL, "BDAT": STALL})
    peer.set_replies(EOM=STALL)
    msg = message(subject="taken over")
    qid = relay.submit("user@peer.test", msg)
    w1 = relay.worker_proc("--once")
    assert peer.wait(lambda p: any(s.stalled for s in p.sessions), 15), \
        "the first worker did not reach the content: %r" % peer.sessions
    t_stall = time.monotonic()
    it = relay.item(qid)
    assert it["state"] == "delivering", it["state"]
    w1.send_signal(signal.SIGKILL)
    w1.wait(10)
    # The peer now accepts; the killed worker's claim still holds for a while.
    peer.set_replies(DATA=None, BDAT=None, EOM=None)
    relay.worker("--once")
    assert peer.messages() == [], "the item was taken while its lease held"
    assert relay.state(qid) == "delivering"
    # Once claim_lease (5 s) has run out, another worker delivers it.
    left = 5.5 - (time.monotonic() - t_stall)
    if left > 0:
        time.sleep(left)
    deadline = time.monotonic() + 10
    while not peer.messages() and time.monotonic() < deadline:
        relay.worker("--once")
        if not peer.messages():
            time.sleep(0.5)
    took = time.monotonic() - t_stall
    (m,) = peer.messages()
    assert m.data.endswith(msg)
    assert took < 12, "taken over only after %.1f s with claim_lease = 5" % took
    assert relay.state(qid) == "done"
    relay.worker("--once")
    assert len(peer.messages()) == 1


def test_delivery_slower_than_the_lease_is_not_taken_over(relay):
    # The server takes 6.5 s to answer the content, longer than claim_lease:
    # the worker, alive and waiting within relay_timeout, keeps its claim.
    relay.use_conf(claim_lease="5", relay_timeout="30")
    peer = relay.peer(replies={"EOM": lambda arg, s: time.sleep(6.5)})
    msg = message(subject="slow server")
    qid = relay.submit("user@peer.test", msg)
    w1 = relay.worker_proc("--once")
    assert peer.wait(lambda p: any(v in ("DATA", "BDAT") for s in p.sessions
                                   for v in s.verbs()), 10), peer.sessions
    time.sleep(5.6)
    relay.worker("--once", timeout=60)              # a second worker comes along
    assert w1.wait(30) == 0
    assert relay.wait_state(qid, "done") == "done"
    assert len(peer.sessions) == 1, "the item was taken over while being delivered: %r" % \
        peer.sessions
    assert len(peer.messages()) == 1


class NotifySocket:
    """What systemd gives a Type=notify service: a datagram socket named in
    NOTIFY_SOCKET, on which the service sends READY=1."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.seen = []

    def wait_for(self, what, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(what in m.split("\n") for m in self.seen):
                return True
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        return any(what in m.split("\n") for m in self.seen)

    def close(self):
        self.sock.close()
        os.unlink(self.path)


def test_loop_notifies_ready_and_wakes_on_the_trigger(relay):
    peer = relay.peer()
    notify = NotifySocket(relay.tmp / "notify.sock")
    try:
        w = relay.worker_proc("--loop", "60", env={"NOTIFY_SOCKET": notify.path})
        assert notify.wait_for("READY=1"), "no READY=1 on NOTIFY_SOCKET: %r\n%s" % (
            notify.seen, relay.log()[-2000:])
        time.sleep(0.5)        # the first pass over the (empty) queue is over
        assert w.poll() is None
        for n in (1, 2):
            msg = message(subject="loop %d" % n)
            relay.submit("user@peer.test", msg)
            t_queued = time.monotonic()
            got = peer.wait_messages(n, timeout=10)
            assert got, "not delivered within 10 s although the trigger was touched"
            assert got[-1].data.endswith(msg)
            delay = got[-1].time - t_queued
            assert delay < 2.0, "delivered %.2f s after the session's 250 (loop period 60 s)" \
                % delay
        t0 = time.monotonic()
        w.send_signal(signal.SIGTERM)
        assert w.wait(10) == 0
        assert time.monotonic() - t0 < 5
    finally:
        notify.close()


def test_loop_delivers_due_retries_on_its_timer(relay):
    relay.use_conf(retry_schedule="1s", relay_trigger="")
    peer = relay.peer(replies={"RCPT": "451 4.3.0 try again"})
    msg = message()
    qid = relay.submit("user@peer.test", msg)
    w = relay.worker_proc("--loop", "1")
    assert peer.wait(lambda p: len(p.sessions) >= 1, 5)
    peer.set_replies(RCPT=None)
    got = peer.wait_messages(1, timeout=8)
    assert got and got[0].data.endswith(msg), "the loop did not retry on its timer"
    assert relay.wait_state(qid, "done") == "done"
    w.send_signal(signal.SIGTERM)
    assert w.wait(10) == 0


def test_sigterm_during_a_delivery_finishes_it(relay):
    peer = relay.peer(replies={"EOM": lambda arg, s: time.sleep(1.5)})
    w = relay.worker_proc("--loop", "60")
    qid = relay.submit("user@peer.test")
    assert peer.wait(lambda p: any(v in ("DATA", "BDAT") for s in p.sessions
                                   for v in s.verbs()), 10), peer.sessions
    w.send_signal(signal.SIGTERM)
    assert w.wait(20) == 0
    assert len(peer.messages()) == 1
    st = relay.state(qid)
    assert st == "done", "the item a stopped worker was delivering is left %r" % st


def test_loop_stops_on_sigterm_while_waiting(relay):
    w = relay.worker_proc("--loop", "3600")
    time.sleep(0.7)
    assert w.poll() is None, relay.log()[-2000:]
    t0 = time.monotonic()
    w.send_signal(signal.SIGTERM)
    assert w.wait(10) == 0
    assert time.monotonic() - t0 < 3


def test_bad_arguments_are_a_usage_error(relay):
    for args in (["--loop"], ["--loop", "0"], ["--loop", "x"], ["--frobnicate"]):
        r = subprocess.run(relay.worker_argv(*args), capture_output=True, timeout=30,
                           env=relay.env)
        assert r.returncode == 2, (args, r)
        assert b"usage" in r.stderr
