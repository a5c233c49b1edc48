"""Real POP3 clients against pop3-session behind systemd-socket-activate:
curl (pop3://, STLS with --ssl-reqd, pop3s://), fetchmail and mpop keeping
UIDL state across runs (only new mail the second time), and 20 poplib
sessions on 20 mailboxes at once."""
import os
import poplib
import shutil
import subprocess
import threading

import pytest

from pop3_helpers import pop3env, simple_message, strip_trace, tls_cert  # noqa: F401

ALICE, ALICE_PW = "alice@example.org", "alice secret"


def curl(*args):
    r = subprocess.run(["curl", "-sS", "--max-time", "30", *args],
                       capture_output=True, timeout=60)
    return r


def test_curl_lists_and_retrieves(pop3env):
    m1 = simple_message("curl one", b".dotted\r\nplain\r\n")
    m2 = simple_message("curl two", b"second\r\n")
    pop3env.deliver(ALICE, m1)
    pop3env.deliver(ALICE, m2)
    srv = pop3env.server()
    url = "pop3://127.0.0.1:%d/" % srv.port
    r = curl("--user", "%s:%s" % (ALICE, ALICE_PW), url)
    assert r.returncode == 0, r.stderr
    listing = r.stdout.decode().splitlines()
    assert [l.split()[0] for l in listing] == ["1", "2"]
    r = curl("--user", "%s:%s" % (ALICE, ALICE_PW), url + "1")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == int(listing[0].split()[1])
    assert strip_trace(r.stdout)[1] == m1
    r = curl("--user", "%s:%s" % (ALICE, ALICE_PW), url + "3")
    assert r.returncode != 0, "message 3 does not exist"


def test_curl_wrong_password_is_refused(pop3env):
    srv = pop3env.server()
    r = curl("--user", "%s:wrong" % ALICE, "pop3://127.0.0.1:%d/" % srv.port)
    assert r.returncode == 67, (r.returncode, r.stderr)   # CURLE_LOGIN_DENIED


def test_curl_stls_and_pop3s(pop3env):
    m = simple_message("curl tls", b"secret body\r\n")
    pop3env.deliver(ALICE, m)
    strict = pop3env.write_conf("strict.conf", allow_plaintext_auth="no")
    plain = pop3env.server(strict)
    implicit = pop3env.server(strict, tls=True)
    user = ("--user", "%s:%s" % (ALICE, ALICE_PW))
    # Without TLS the login is refused ...
    r = curl(*user, "pop3://127.0.0.1:%d/1" % plain.port)
    assert r.returncode != 0 and r.stdout == b""
    # ... with STLS it works.
    r = curl("-k", "--ssl-reqd", *user, "pop3://127.0.0.1:%d/1" % plain.port)
    assert r.returncode == 0, r.stderr
    assert strip_trace(r.stdout)[1] == m
    r = curl("-k", *user, "pop3s://127.0.0.1:%d/1" % implicit.port)
    assert r.returncode == 0, r.stderr
    assert strip_trace(r.stdout)[1] == m


def messages_in(path):
    """Messages in a file that an MDA appended them to, as Subject lines."""
    if not path.exists():
        return []
    return [l for l in path.read_bytes().replace(b"\r\n", b"\n").split(b"\n")
            if l.startswith(b"Subject: ")]


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail not installed")
def test_fetchmail_keeps_uidl_state_across_runs(pop3env):
    srv = pop3env.server()
    out = pop3env.tmp / "fetched"
    rc = pop3env.tmp / "fetchmailrc"
    rc.write_text(
        'set no syslog\n'
        'poll 127.0.0.1 service %d protocol pop3 uidl auth password\n'
        '  user "%s" password "%s" is root here\n'
        '  keep sslproto "" mda "/bin/sh -c \'cat >> %s\'"\n' % (srv.port, ALICE, ALICE_PW, out))
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(pop3env.tmp), FETCHMAILHOME=str(pop3env.tmp))

    def run():
        r = subprocess.run(["fetchmail", "-f", str(rc), "--idfile", str(pop3env.tmp / "ids"),
                            "--nodetach", "--nosyslog"], env=env,
                           capture_output=True, text=True, timeout=60)
        return r

    pop3env.deliver(ALICE, simple_message("fetch one"))
    pop3env.deliver(ALICE, simple_message("fetch two"))
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert messages_in(out) == [b"Subject: fetch one", b"Subject: fetch two"]
    pop3env.deliver(ALICE, simple_message("fetch three"))
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert messages_in(out) == [b"Subject: fetch one", b"Subject: fetch two",
                                b"Subject: fetch three"], "only new mail the second time"
    r = run()
    assert r.returncode == 1, "exit 1: no new mail; " + r.stdout + r.stderr
    assert len(messages_in(out)) == 3
    # --keep: everything is still on the server.
    assert len(pop3env.mailcell.ok("mailbox", "list", ALICE).splitlines()) == 3


@pytest.mark.skipif(shutil.which("mpop") is None, reason="mpop not installed")
def test_mpop_over_stls_keeps_uidl_state_across_runs(pop3env):
    strict = pop3env.write_conf("strict.conf", allow_plaintext_auth="no")
    srv = pop3env.server(strict)
    out = pop3env.tmp / "mpop-mbox"
    out.touch()

    def run():
        return subprocess.run(
            ["mpop", "--file=/dev/null", "--host=127.0.0.1", "--port=%d" % srv.port,
             "--user=" + ALICE, "--passwordeval=echo '%s'" % ALICE_PW,
             "--tls=on", "--tls-starttls=on", "--tls-certcheck=off", "--keep=on",
             "--uidls-file=" + str(pop3env.tmp / "uidls"),
             "--delivery=mbox," + str(out), "--quiet"],
            capture_output=True, text=True, timeout=60)

    pop3env.deliver(ALICE, simple_message("mpop one"))
    pop3env.deliver(ALICE, simple_message("mpop two"))
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert messages_in(out) == [b"Subject: mpop one", b"Subject: mpop two"]
    pop3env.deliver(ALICE, simple_message("mpop three"))
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert messages_in(out) == [b"Subject: mpop one", b"Subject: mpop two",
                                b"Subject: mpop three"], "only new mail the second time"
    assert len(pop3env.mailcell.ok("mailbox", "list", ALICE).splitlines()) == 3


def test_20_parallel_sessions_on_20_mailboxes(pop3env):
    users = ["p%02d@example.org" % i for i in range(20)]
    for i, u in enumerate(users):
        pop3env.add_user(u, "pw %d" % i)
        pop3env.deliver(u, simple_message("for %s" % u))
    srv = pop3env.server()
    start = threading.Barrier(20)
    results = {}

    def one(i, u):
        try:
            p = poplib.POP3("127.0.0.1", srv.port, timeout=60)
            start.wait(30)
            p.user(u)
            p.pass_("pw %d" % i)
            count, _ = p.stat()
            lines = p.retr(1)[1]
            p.dele(1)
            p.quit()
            results[u] = (count, ("Subject: for %s" % u).encode() in lines)
        except Exception as e:          # reported below, per user
            results[u] = repr(e)

    threads = [threading.Thread(target=one, args=(i, u)) for i, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert results == {u: (1, True) for u in users}
    for u in users:
        assert pop3env.mailcell.ok("mailbox", "list", u) == "", "%s not emptied" % u
