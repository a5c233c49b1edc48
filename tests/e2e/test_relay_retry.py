"""Retries of the relay worker: 4xx replies, dropped connections and stalled
servers (relay_timeout) leave the recipient pending and the item queued for
the next attempt after the retry_schedule's wait (the last one repeating);
an item is not touched before it is due; held items wait until released;
`mailcell queue retry|hold|release|delete`. Harness: relay_helpers.py."""
import time
from datetime import timezone

from relay_helpers import ALICE, DROP, STALL, message, relay, relaylab  # noqa: F401


def ts(dt):
    """A BSON date from pymongo (naive UTC) as a POSIX timestamp."""
    return dt.replace(tzinfo=timezone.utc).timestamp()


def wait_due(relay, qid, slack=0.15):
    left = ts(relay.item(qid)["next_attempt"]) - time.time()
    if left > 0:
        time.sleep(left + slack)


def test_4xx_is_retried_with_growing_waits(relay):
    relay.use_conf(retry_schedule="2s 4s")
    peer = relay.peer(replies={"RCPT": "450 4.2.0 mailbox busy, try later"})
    msg = message()
    qid = relay.submit("user@peer.test", msg)

    t1 = time.time()
    relay.worker()
    it = relay.item(qid)
    assert it["state"] == "queued" and it["attempts"] == 1, it
    r = it["recipients"][0]
    assert (r["state"], r["status"]) == ("pending", "4.2.0"), r
    assert "mailbox busy" in r["reply"]
    # Next attempts are kept in whole seconds: now + 2 s, rounded down.
    gap1 = ts(it["next_attempt"]) - t1
    assert 1.0 < gap1 <= 3.2, "first wait of retry_schedule = 2s 4s: %.2f s" % gap1
    # `queue list` shows the same next attempt.
    (row,) = [x for x in relay.queue_list() if x[0] == qid]
    assert row[1] == "queued"
    assert row[2] == it["next_attempt"].strftime("%Y-%m-%dT%H:%M:%SZ")

    # Not due yet: a worker leaves it alone.
    relay.worker()
    assert len(peer.sessions) == 1
    assert relay.item(qid)["attempts"] == 1

    wait_due(relay, qid)
    t2 = time.time()
    relay.worker()
    it = relay.item(qid)
    assert it["attempts"] == 2 and it["state"] == "queued"
    assert len(peer.sessions) == 2
    gap2 = ts(it["next_attempt"]) - t2
    assert 3.0 < gap2 <= 5.2, "second wait of retry_schedule = 2s 4s: %.2f s" % gap2
    assert gap2 > gap1

    peer.set_replies(RCPT=None)
    relay.worker()                       # still not due
    assert len(peer.sessions) == 2
    wait_due(relay, qid)
    relay.worker()
    (m,) = peer.messages()
    assert m.data.endswith(msg)
    it = relay.item(qid)
    assert it["state"] == "done" and it["attempts"] == 3
    assert relay.dsns(ALICE) == []


def test_last_wait_of_the_schedule_repeats(relay):
    relay.use_conf(retry_schedule="2s 3s")
    peer = relay.peer(replies={"MAIL": "421 4.3.2 service not available"})
    qid = relay.submit("user@peer.test")
    gaps = []
    for i in range(3):
        wait_due(relay, qid)
        t = time.time()
        relay.worker()
        gaps.append(ts(relay.item(qid)["next_attempt"]) - t)
    assert len(peer.sessions) == 3
    # Whole seconds: 2 s is (1, 2] from now, 3 s is (2, 3].
    assert 1.0 < gaps[0] < 2.6 and 2.0 < gaps[1] < 3.6 and 2.0 < gaps[2] < 3.6, gaps
    assert relay.state(qid) == "queued"


def test_dropped_connection_is_retried(relay):
    relay.use_conf(retry_schedule="1s")
    peer = relay.peer(replies={"RCPT": DROP})
    msg = message()
    qid = relay.submit("user@peer.test", msg)
    relay.worker()
    it = relay.item(qid)
    assert it["state"] == "queued"
    assert it["recipients"][0]["state"] == "pending"
    assert it["recipients"][0]["status"].startswith("4."), it["recipients"][0]
    peer.set_replies(RCPT=None)
    wait_due(relay, qid)
    relay.worker()
    (m,) = peer.messages()
    assert m.data.endswith(msg)
    assert relay.state(qid) == "done"


def test_connection_refused_is_retried(relay):
    relay.use_conf(retry_schedule="1s")
    msg = message()
    qid = relay.submit("user@peer.test", msg)
    relay.worker()                                   # nothing listens yet
    assert relay.item(qid)["recipients"][0]["state"] == "pending"
    assert relay.state(qid) == "queued"
    peer = relay.peer()
    wait_due(relay, qid)
    relay.worker()
    (m,) = peer.messages()
    assert m.data.endswith(msg)


def test_stalled_server_times_out_and_is_retried(relay):
    relay.use_conf(relay_timeout="1", retry_schedule="1s")
    peer = relay.peer(replies={"EOM": STALL})
    qid = relay.submit("user@peer.test")
    t0 = time.monotonic()
    relay.worker(timeout=30)
    took = time.monotonic() - t0
    assert took < 5, "relay_timeout = 1, yet the worker took %.1f s" % took
    assert peer.sessions[0].stalled
    it = relay.item(qid)
    assert it["state"] == "queued"
    assert it["recipients"][0]["state"] == "pending"
    assert relay.dsns(ALICE) == []
    peer.set_replies(EOM=None)
    wait_due(relay, qid)
    relay.worker()
    assert len(peer.messages()) == 1
    assert relay.state(qid) == "done"


def test_held_item_waits_until_released(relay):
    peer = relay.peer()
    msg = message()
    qid = relay.submit("user@peer.test", msg)
    relay.mailcell.ok("queue", "hold", qid)
    assert relay.state(qid) == "held"
    (row,) = [x for x in relay.queue_list() if x[0] == qid]
    assert row[1] == "held"
    relay.worker()
    relay.worker()
    assert peer.sessions == []
    assert relay.state(qid) == "held"
    relay.mailcell.ok("queue", "release", qid)
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.data.endswith(msg)
    assert relay.state(qid) == "done"


def test_queue_retry_makes_an_item_due_now(relay):
    relay.use_conf(retry_schedule="1h")
    peer = relay.peer(replies={"RCPT": "451 4.3.0 try again later"})
    qid = relay.submit("user@peer.test")
    relay.worker()
    assert ts(relay.item(qid)["next_attempt"]) > time.time() + 3000
    peer.set_replies(RCPT=None)
    relay.worker()
    assert len(peer.sessions) == 1, "not due for an hour"
    relay.mailcell.ok("queue", "retry", qid)
    relay.worker()
    assert len(peer.messages()) == 1
    assert relay.state(qid) == "done"


def test_queue_delete_removes_an_item(relay):
    peer = relay.peer()
    qid = relay.submit("user@peer.test")
    relay.mailcell.ok("queue", "delete", qid)
    assert relay.item(qid) is None
    assert qid not in [r[0] for r in relay.queue_list()]
    relay.worker()
    assert peer.sessions == []
    r = relay.mailcell("queue", "show", qid)
    assert r.returncode != 0 and r.stderr.strip()
