"""bin/pop3-session behaviour over time and across sessions, driven one
command at a time on pipes: the delay after a failed login, the maildrop lock
(RFC 1939 8, RFC 2449 [IN-USE]), removal only at QUIT, the idle timeout, an
unreachable database (RFC 3206 [SYS/TEMP]) and pipelined commands (RFC 2449)."""
import datetime
import time

import pymongo
import pytest

from conftest import free_port
from pop3_helpers import pop3env, simple_message, tls_cert  # noqa: F401

ALICE, ALICE_PW = "alice@example.org", "alice secret"


def fill(env, n=3, rcpt=ALICE):
    for i in range(n):
        env.deliver(rcpt, simple_message("message %d" % (i + 1)))


@pytest.mark.parametrize("user,password", [
    (ALICE, "wrong password"),                # a real user
    ("nobody@example.org", "whatever"),       # a user that does not exist
])
def test_failed_login_is_delayed_and_says_auth(pop3env, user, password):
    s = pop3env.session()
    assert s.cmd("USER " + user) == "+OK send your password"
    t0 = time.monotonic()
    reply = s.cmd("PASS " + password)
    took = time.monotonic() - t0
    assert reply.startswith("-ERR [AUTH] ")
    assert 0.8 <= took < 5, "the answer to a bad login should come after ~1 s, took %.2f" % took
    # Still in AUTHORIZATION: the right password works now.
    assert s.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 0 messages")
    assert s.cmd("QUIT").startswith("+OK")


def test_unknown_user_and_wrong_password_look_the_same(pop3env):
    a = pop3env.session()
    b = pop3env.session()
    assert a.cmd("USER nobody@example.org") == b.cmd("USER " + ALICE) == "+OK send your password"
    assert a.cmd("PASS x") == b.cmd("PASS x")


def test_three_failed_logins_close_the_session(pop3env):
    s = pop3env.session()
    replies = [s.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAHdyb25n") for _ in range(3)]
    assert all(r.startswith("-ERR [AUTH]") for r in replies), replies
    try:
        s.send("CAPA\r\n")
    except BrokenPipeError:
        pass    # it may have closed already: that is the point
    assert s.wait() == b"", "the session should close after the third failure"
    assert s.proc.returncode == 0


def test_second_session_gets_in_use_until_the_first_quits(pop3env):
    fill(pop3env, 2)
    a = pop3env.session()
    assert a.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 2 messages")
    b = pop3env.session()
    assert b.login(ALICE, ALICE_PW).startswith("-ERR [IN-USE] ")
    # The same mailbox under another spelling is the same lock.
    assert b.login("Alice@EXAMPLE.org", ALICE_PW).startswith("-ERR [IN-USE] ")
    # Another mailbox is not affected.
    c = pop3env.session()
    assert c.login("bob@example.org", "bob secret").startswith("+OK bob@example.org has 0")
    assert a.cmd("DELE 1") == "+OK message 1 deleted"
    assert a.cmd("QUIT").startswith("+OK")
    a.wait()
    # Released at once; and b, still in AUTHORIZATION, can log in now.
    assert b.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 1 messages")
    assert b.cmd("STAT").startswith("+OK 1 ")
    assert b.cmd("QUIT").startswith("+OK")
    assert c.cmd("QUIT").startswith("+OK")


def test_dropped_connection_releases_the_lock_and_removes_nothing(pop3env):
    fill(pop3env, 3)
    a = pop3env.session()
    assert a.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 3 messages")
    assert a.cmd("DELE 1").startswith("+OK")
    assert a.cmd("DELE 2").startswith("+OK")
    a.drop()                                  # no QUIT
    b = pop3env.session()
    assert b.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 3 messages")
    assert b.cmd("STAT").startswith("+OK 3 ")
    assert b.cmd("QUIT").startswith("+OK")


def test_killed_session_keeps_the_lock_only_until_it_expires(pop3env, devdb):
    a = pop3env.session()
    assert a.login(ALICE, ALICE_PW).startswith("+OK")
    a.kill()                                  # SIGKILL: no chance to release
    b = pop3env.session()
    assert b.login(ALICE, ALICE_PW).startswith("-ERR [IN-USE]")
    # The lock carries an expiry at most 3 minutes away ...
    db = pymongo.MongoClient(devdb.uri)[pop3env.dbname]
    locks = [l for l in db.locks.find() if ALICE in l["_id"]]
    assert len(locks) == 1, locks
    expires = locks[0]["expires"].replace(tzinfo=datetime.timezone.utc)
    left = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 0 < left <= 181, "lock expires in %.0f s" % left
    # ... and once that time has passed, a new session takes the maildrop over.
    db.locks.update_one({"_id": locks[0]["_id"]},
                        {"$set": {"expires": datetime.datetime.now(datetime.timezone.utc)
                                  - datetime.timedelta(seconds=5)}})
    assert b.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 0 messages")
    assert b.cmd("QUIT").startswith("+OK")


def test_quit_removes_marked_messages_and_reports_what_is_left(pop3env):
    fill(pop3env, 4)
    s = pop3env.session()
    assert s.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 4 messages")
    _, before = s.multi("UIDL")
    uidls = [l.split()[1] for l in before.decode().splitlines()]
    assert s.cmd("DELE 2") == "+OK message 2 deleted"
    assert s.cmd("DELE 4") == "+OK message 4 deleted"
    assert s.cmd("QUIT") == "+OK mail.test POP3 server signing off (2 messages left)"
    s.wait()
    listing = pop3env.mailcell.ok("mailbox", "list", ALICE)
    assert len(listing.splitlines()) == 2, listing
    t = pop3env.session()
    assert t.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 2 messages")
    _, after = t.multi("UIDL")
    assert [l.split()[1] for l in after.decode().splitlines()] == [uidls[0], uidls[2]]
    _, msg = t.multi("RETR 2")
    assert b"Subject: message 3\r\n" in msg
    assert t.cmd("QUIT").startswith("+OK")


def test_the_listing_is_the_mailbox_as_it_was_at_login(pop3env):
    fill(pop3env, 1)
    s = pop3env.session()
    assert s.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 1 messages")
    pop3env.deliver(ALICE, simple_message("arrived later"))
    assert s.cmd("STAT").startswith("+OK 1 ")
    assert s.cmd("LIST 2") == "-ERR no such message, only 1 in maildrop"
    assert s.cmd("DELE 1").startswith("+OK")
    assert s.cmd("QUIT") == "+OK mail.test POP3 server signing off (0 messages left)"
    s.wait()
    t = pop3env.session()
    assert t.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 1 messages")
    _, msg = t.multi("RETR 1")
    assert b"Subject: arrived later\r\n" in msg


def test_idle_timeout_closes_the_session_and_removes_nothing(pop3env):
    fill(pop3env, 2)
    conf = pop3env.write_conf("idle.conf", pop3_idle_timeout="2")
    s = pop3env.session(conf)
    assert s.login(ALICE, ALICE_PW).startswith("+OK")
    assert s.cmd("DELE 1").startswith("+OK")
    t0 = time.monotonic()
    line = s.readline(timeout=10)
    took = time.monotonic() - t0
    assert line.startswith("-ERR"), line
    assert 1.5 <= took <= 5, "closed after %.1f s, pop3_idle_timeout = 2" % took
    assert s.wait() == b""
    t = pop3env.session()
    assert t.login(ALICE, ALICE_PW).startswith("+OK alice@example.org has 2 messages"), \
        "the lock must be released and nothing removed after an idle timeout"
    assert t.cmd("QUIT").startswith("+OK")


def test_unreachable_database_is_sys_temp(pop3env):
    conf = pop3env.write_conf("nodb.conf", mongodb_uri="mongodb://127.0.0.1:%d" % free_port(),
                              db_timeout="1")
    s = pop3env.session(conf)                # the greeting needs no database
    t0 = time.monotonic()
    reply = s.cmd("USER " + ALICE)
    if reply.startswith("+OK"):
        reply = s.cmd("PASS " + ALICE_PW)
    assert reply.startswith("-ERR [SYS/TEMP] "), reply
    assert time.monotonic() - t0 < 8, "db_timeout = 1 must bound the wait"
    reply = s.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlIHNlY3JldA==")
    assert reply.startswith("-ERR [SYS/TEMP] "), reply
    assert s.cmd("QUIT").startswith("+OK")


def test_pipelined_commands_are_all_answered_in_order(pop3env):
    fill(pop3env, 3)
    s = pop3env.session()
    n = 60
    burst = "USER %s\r\nPASS %s\r\n" % (ALICE, ALICE_PW)
    burst += "".join("STAT\r\nLIST %d\r\nUIDL\r\nTOP %d 0\r\nNOOP\r\n" % (i % 3 + 1, i % 3 + 1)
                     for i in range(n))
    burst += "QUIT\r\n"
    s.send(burst)                            # one write
    lines = s.wait(timeout=60).decode().split("\r\n")
    assert lines[0] == "+OK send your password"
    assert lines[1].startswith("+OK alice@example.org has 3 messages")
    k = 2

    def multi():
        nonlocal k
        end = lines.index(".", k)
        k = end + 1

    for i in range(n):
        m = i % 3 + 1
        assert lines[k].startswith("+OK 3 "), (i, "STAT", lines[k])
        assert lines[k + 1].startswith("+OK %d " % m), (i, "LIST", lines[k + 1])
        assert lines[k + 2].startswith("+OK 3 messages"), (i, "UIDL", lines[k + 2])
        k += 3
        multi()
        assert lines[k] == "+OK top of message follows", (i, "TOP", lines[k])
        k += 1
        multi()
        assert lines[k] == "+OK", (i, "NOOP", lines[k])
        k += 1
    assert lines[k:] == ["+OK mail.test POP3 server signing off (3 messages left)", ""]


def test_auth_plain_for_another_identity_is_refused(pop3env):
    """RFC 4616: an authorization identity other than the login is not allowed
    here; bob's password must not open alice's mailbox, nor the reverse."""
    import base64
    s = pop3env.session()
    token = base64.b64encode(b"alice@example.org\0bob@example.org\0bob secret").decode()
    assert s.cmd("AUTH PLAIN " + token).startswith("-ERR [AUTH] ")
    token = base64.b64encode(b"\0bob@example.org\0bob secret").decode()
    assert s.cmd("AUTH PLAIN " + token).startswith("+OK bob@example.org has 0 messages")
    assert s.cmd("QUIT").startswith("+OK")
