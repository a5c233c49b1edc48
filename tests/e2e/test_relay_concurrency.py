"""The relay worker's processes and kept connections: relay_concurrency
children delivering a queue at once (each message exactly once, counted at
Postfix's smtp-sink; faster than one process where the server takes its
time), the connection to a host
kept for the next item (RSET between transactions, each item's log right),
a kept connection the server dropped (a new one, no extra attempt), SIGTERM
to a --loop worker whose children are delivering, and delivered items
leaving the queue for outbound_done (queue show finds them; queue_keep_done
purges them). Harness: relay_helpers.py."""
import re
import signal
import time
from datetime import datetime, timedelta, timezone

from bson import ObjectId

from relay_helpers import (DROP, RELAY_IP, message, relay, relaylab,  # noqa: F401
                           sink_fields)


def queue_at_sink(relay, n, tag):
    """n messages for n recipients of sink.test, queued: (Message-IDs, queue ids)."""
    msgids = ["%s-%03d-%s@example.org" % (tag, i, relay.dbname) for i in range(n)]
    ids = relay.submit_many([("u%03d@sink.test" % i, message(
        to="u%03d@sink.test" % i, msgid=msgids[i], subject="%s %d" % (tag, i)), "")
        for i in range(n)])
    return msgids, ids


def owners(relay, ids):
    """The worker processes (claim owners) that delivered these items."""
    return {d["owner"] for d in relay.db.outbound_done.find(
        {"_id": {"$in": [ObjectId(i) for i in ids]}}, {"owner": 1})}


def delivered_ids(sink, want, timeout=10):
    """The Message-IDs at the sink once there are `want` complete dumps."""
    deadline = time.monotonic() + timeout
    while len(sink.complete()) < want and time.monotonic() < deadline:
        time.sleep(0.1)
    got = []
    for d in sink.complete():
        m = re.search(rb"(?mi)^Message-ID: <([^>]+)>", d)
        assert m, d[:300]
        got.append(m.group(1).decode())
    return got


def timed_worker(relay, conf):
    """relay-worker --once; the seconds it took."""
    t0 = time.monotonic()
    relay.worker("--once", conf=conf, timeout=300)
    return time.monotonic() - t0


def test_concurrent_children_deliver_each_message_once(relay):
    sink = relay.sink()
    n = 200
    msgids, ids = queue_at_sink(relay, n, "c10")
    t = timed_worker(relay, relay.write_conf(relay_concurrency="10"))
    got = delivered_ids(sink, n)
    dup = sorted({x for x in got if got.count(x) > 1})
    assert not dup, "delivered more than once: %s" % dup[:10]
    assert sorted(got) == sorted(msgids), "missing: %s" % sorted(set(msgids) - set(got))[:10]
    assert relay.db.outbound.count_documents({}) == 0, "delivered items left in the queue"
    assert relay.db.outbound_done.count_documents({"attempts": 1}) == n
    assert 1 < len(owners(relay, ids)) <= 10, owners(relay, ids)
    # On this machine the dev database, not the sink, bounds the rate: one
    # process does about as well here (see the slow server below).
    print("relay_concurrency 10: %d messages to smtp-sink in %.2f s" % (n, t))


def test_concurrency_against_a_slow_server(relay):
    # Each message takes the server 0.3 s: time that processes overlap.
    peer = relay.peer(replies={"EOM": lambda arg, s: time.sleep(0.3)})
    n = 16
    ids = relay.submit_many([("u%02d@peer.test" % i, None, "") for i in range(n)])
    t8 = timed_worker(relay, relay.write_conf(relay_concurrency="8"))
    assert len(peer.messages()) == n
    assert len(owners(relay, ids)) > 1
    more = relay.submit_many([("v%02d@peer.test" % i, None, "") for i in range(n)])
    t1 = timed_worker(relay, relay.write_conf(relay_concurrency="1"))
    assert len(peer.messages()) == 2 * n
    assert len(owners(relay, more)) == 1
    print("%d messages, 0.3 s each at the server: relay_concurrency 8 %.2f s, 1 %.2f s"
          % (n, t8, t1))
    assert t1 > 2 * t8, "8 processes took %.2f s, one %.2f s" % (t8, t1)


def test_kept_connection_carries_the_next_items(relay):
    relay.use_conf(relay_host="[%s]:25" % RELAY_IP, relay_concurrency="3")
    peer = relay.peer(ip=RELAY_IP, name="relay.test")
    n = 20
    ids = relay.submit_many([("r%02d@dest%d.test" % (i, i % 4), message(
        to="r%02d@dest%d.test" % (i, i % 4), subject="kept %d" % i), "") for i in range(n)])
    relay.worker()
    assert len(peer.messages()) == n
    assert 1 <= len(peer.sessions) <= 3, "%d connections for %d messages" % (
        len(peer.sessions), n)
    for s in peer.sessions:
        verbs = s.verbs()
        assert verbs[0] == "EHLO" and verbs.count("EHLO") == 1, verbs
        assert verbs[-1] == "QUIT", verbs
        # RSET before every transaction but the first on the connection.
        assert verbs.count("RSET") == verbs.count("MAIL") - 1, verbs
        for i, v in enumerate(verbs):
            if v == "MAIL" and i > 1:
                assert verbs[i - 1] == "RSET", verbs
    greeted = 0
    for qid in ids:
        it = relay.show_json(qid)
        assert it["state"] == "done", it
        assert it["attempts"] == 1
        cmds = [e["command"] for e in it["log"]]
        if cmds[0] == "":
            greeted += 1                 # the first item on its connection
            assert cmds[1].startswith("EHLO "), cmds
            assert "RSET" not in cmds, cmds
        else:
            assert cmds[0] == "<connection reused>", cmds
            assert "%s [%s]:25, transaction " % (RELAY_IP, RELAY_IP) in it["log"][0]["reply"]
            assert cmds[1] == "RSET" and cmds[2].startswith("MAIL FROM:<"), cmds
            assert not any(c.startswith("EHLO") for c in cmds), cmds
        assert cmds[-1].startswith("<message: "), cmds
        assert it["log"][-1]["reply"].startswith("250 "), it["log"][-1]
        assert any(c == "RCPT TO:<%s>" % it["recipients"][0]["address"] for c in cmds), cmds
    assert greeted == len(peer.sessions)


def test_dropped_kept_connection_goes_through_a_new_one(relay):
    relay.use_conf(relay_concurrency="1")
    # Every kept connection is found dead: the server hangs up at RSET.
    peer = relay.peer(replies={"RSET": DROP})
    ids = relay.submit_many([("u%d@peer.test" % i, None, "") for i in range(3)])
    relay.worker()
    assert len(peer.messages()) == 3
    assert len(peer.sessions) == 3
    for k, qid in enumerate(ids):
        it = relay.item(qid)
        assert it["state"] == "done" and it["attempts"] == 1, it
        assert it["recipients"][0]["state"] == "delivered"
        cmds = [(e["command"], e["reply"]) for e in it["log"]]
        if k == 0:
            assert cmds[0][0] == "", cmds
            continue
        assert cmds[0][0] == "<connection reused>", cmds
        assert cmds[1] == ("RSET", "(no reply: connection lost)"), cmds
        assert cmds[2][0] == "<connection reused>" and "new connection" in cmds[2][1], cmds
        assert cmds[3][0] == "" and cmds[3][1].startswith("220 "), cmds   # a new greeting


def test_421_to_mail_on_a_kept_connection_goes_through_a_new_one(relay):
    relay.use_conf(relay_concurrency="1")
    # A connection that carried a message refuses the next with 421.
    peer = relay.peer(replies={"MAIL": lambda arg, s: "421 4.3.2 closing" if s.messages
                               else None})
    ids = relay.submit_many([("u%d@peer.test" % i, None, "") for i in range(2)])
    relay.worker()
    assert len(peer.messages()) == 2
    it = relay.item(ids[1])
    assert it["state"] == "done" and it["attempts"] == 1, it
    assert any(e["reply"].startswith("421 ") for e in it["log"]), it["log"]


def test_sigterm_stops_the_children_cleanly(relay):
    relay.use_conf(relay_concurrency="4")
    peer = relay.peer(replies={"EOM": lambda arg, s: time.sleep(1.5)})
    n = 12
    ids = relay.submit_many([("u%02d@peer.test" % i, None, "") for i in range(n)])
    w = relay.worker_proc("--loop", "60")
    assert peer.wait(lambda p: sum(1 for s in p.sessions if "DATA" in s.verbs() or
                                   "BDAT" in s.verbs()) >= 2, 15), peer.sessions
    w.send_signal(signal.SIGTERM)
    assert w.wait(30) == 0
    delivered = len(peer.messages())
    assert 2 <= delivered < n, delivered
    states = [relay.item(q)["state"] for q in ids]
    assert states.count("done") == delivered, states
    assert set(states) <= {"done", "queued"}, states      # none left delivering
    # The rest is due at once for the next worker, and goes then, each exactly once.
    relay.worker()
    assert len(peer.messages()) == n
    assert {relay.state(q) for q in ids} == {"done"}


def test_delivered_items_leave_the_queue(relay):
    peer = relay.peer()
    qid = relay.submit("user@peer.test")
    relay.worker()
    assert len(peer.messages()) == 1
    assert relay.db.outbound.find_one({"_id": ObjectId(qid)}) is None
    done = relay.db.outbound_done.find_one({"_id": ObjectId(qid)})
    assert done["state"] == "done" and isinstance(done["finished"], datetime), done
    assert "body" not in done
    assert [r for r in relay.queue_list() if r[0] == qid] == [], "queue list shows only the queue"
    show = relay.show(qid)
    assert "state: done" in show and "\n  <user@peer.test>\tdelivered\t2.0.0" in show, show
    assert "> EHLO mail.test" in show, show
    assert relay.show_json(qid)["recipients"][0]["state"] == "delivered"
    # The body went with the delivery.
    assert relay.db["bodies.files"].count_documents({}) == 0
    # An operator may still delete it.
    relay.mailcell.ok("queue", "delete", qid)
    r = relay.mailcell("queue", "show", qid)
    assert r.returncode == 1 and "no such queue item" in r.stderr


def backdate_done(relay, qid, seconds):
    relay.db.outbound_done.update_one({"_id": ObjectId(qid)}, {"$set": {
        "finished": datetime.now(timezone.utc) - timedelta(seconds=seconds)}})


def test_queue_keep_done_purges_old_delivered_items(relay):
    relay.use_conf(queue_keep_done="10m")
    peer = relay.peer()
    old, new = relay.submit_many([("a@peer.test", None, ""), ("b@peer.test", None, "")])
    relay.worker()
    assert len(peer.messages()) == 2
    backdate_done(relay, old, 11 * 60)
    backdate_done(relay, new, 9 * 60)
    relay.worker()                       # a run with nothing due still purges
    assert relay.db.outbound_done.find_one({"_id": ObjectId(old)}) is None
    assert relay.item(new)["state"] == "done"
    r = relay.mailcell("queue", "show", old)
    assert r.returncode == 1 and "no such queue item" in r.stderr
    # A short retention, as set: gone a little later.
    conf = relay.write_conf(queue_keep_done="1s")
    time.sleep(1.2)
    relay.worker(conf=conf)
    assert relay.db.outbound_done.count_documents({}) == 0


def test_done_items_left_in_the_queue_are_moved(relay):
    # An older worker left delivered items in outbound (state done).
    when = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    legacy = ObjectId()
    relay.db.outbound.insert_one({
        "_id": legacy, "state": "done", "created": when, "next_attempt": when,
        "lease_until": when, "attempts": 1, "sender": "alice@example.org",
        "recipients": [{"address": "x@peer.test", "state": "delivered", "status": "2.0.0",
                        "reply": "250 ok", "remote_mta": "mx.peer.test"}], "log": []})
    relay.worker()
    assert relay.db.outbound.find_one({"_id": legacy}) is None
    done = relay.db.outbound_done.find_one({"_id": legacy})
    assert done["state"] == "done"
    assert done["finished"].replace(tzinfo=timezone.utc) == when
    assert "state: done" in relay.show(str(legacy))


def test_takeover_of_an_item_delivered_before_its_worker_died(relay):
    # A worker died between keeping the delivered item in outbound_done and
    # removing it from outbound: the item is still "delivering" there.
    relay.use_conf(claim_lease="5")
    peer = relay.peer()
    qid = relay.submit("user@peer.test")
    relay.worker()
    assert len(peer.messages()) == 1
    done = relay.db.outbound_done.find_one({"_id": ObjectId(qid)})
    past = datetime.now(timezone.utc) - timedelta(minutes=5)
    stale = dict(done, state="delivering", lease_until=past, next_attempt=past)
    stale.pop("finished")
    relay.db.outbound.insert_one(stale)
    relay.worker()
    assert len(peer.messages()) == 1, "delivered twice"
    assert relay.db.outbound.find_one({"_id": ObjectId(qid)}) is None
    assert relay.state(qid) == "done"


def test_failed_items_are_purged_with_their_bodies(relay):
    """A failed item stays in the queue (queue list) for queue_keep_done, then
    goes, and its body with it: the queue does not grow for ever."""
    relay.use_conf(queue_keep_done="10m")
    old = relay.submit("user@nullmx.test", message(to="user@nullmx.test", subject="old"))
    new = relay.submit("user@nullmx.test", message(to="user@nullmx.test", subject="new"))
    relay.worker()
    assert relay.state(old) == relay.state(new) == "failed"
    listed = relay.mailcell("queue", "list").stdout
    assert old in listed and new in listed
    body = relay.db.outbound.find_one({"_id": ObjectId(old)})["body"]
    relay.db.outbound.update_one({"_id": ObjectId(old)}, {"$set": {
        "next_attempt": datetime.now(timezone.utc) - timedelta(minutes=11)}})
    relay.worker()
    assert relay.db.outbound.find_one({"_id": ObjectId(old)}) is None
    assert relay.db["bodies.files"].find_one({"_id": body}) is None
    assert relay.db["bodies.chunks"].count_documents({"files_id": body}) == 0
    r = relay.mailcell("queue", "show", old)
    assert r.returncode == 1 and "no such queue item" in r.stderr
    assert relay.state(new) == "failed"
    assert new in relay.mailcell("queue", "list").stdout
