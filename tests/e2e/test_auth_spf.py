"""SPF (RFC 7208) on inbound port-25 mail, end to end: bin/smtp-session in a
network namespace whose DNS is a real dnsmasq serving test zones (authdns.py),
clients at documentation addresses. Every SPF result, the lookup limit across
include chains, DNS failures (SERVFAIL, no answer) with a bounded wait, the
HELO identity of the null sender, spf_fail_reject, the Received-SPF and
Authentication-Results headers, who is exempt (trusted networks, pipes,
authenticated clients, inbound_checks = no), and real TCP clients whose
address the server learns from getpeername."""
import re
import smtplib
import subprocess
import time

import pytest

from authdns import (CLIENT_IP, HOSTNAME, OTHER_IP, RCPT, RCPT_PW, auth,  # noqa: F401
                     authlab, message, unfold)


def spf_of(stored):
    return stored.ours().one("spf")


# ---- the harness itself ----

def test_harness_dns_answers(auth):
    import dns.exception
    import dns.rcode
    import dns.resolver
    q = auth.lab.dns.query
    assert q("spf-pass.test", "TXT") == ['"v=spf1 ip4:%s -all"' % CLIENT_IP]
    assert q("h3.dns.test", "A") == ["198.51.100.3"]
    assert q("mx-spf.test", "MX") == ["10 mx1.mx-spf.test."]
    # A long TXT record (a DKIM key) arrives as several strings.
    key = q("s1._domainkey.dkim.test", "TXT")[0]
    assert key.startswith('"v=DKIM1; k=rsa; p=') and '" "' not in key[:250]
    with pytest.raises(dns.resolver.NXDOMAIN):
        q("no-such-name.test", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        q("spf-pass.test", "A")
    # servfail.test: SERVFAIL from the scripted responder, passed on by dnsmasq.
    with pytest.raises(dns.resolver.NoNameservers) as e:
        q("spf.servfail.test", "TXT")
    assert "SERVFAIL" in str(e.value)
    # stall.test: nobody answers.
    t0 = time.monotonic()
    with pytest.raises(dns.exception.Timeout):
        q("spf.stall.test", "TXT", lifetime=1.0)
    assert time.monotonic() - t0 < 3
    # Programs started with `ip netns exec` resolve through the test server.
    r = subprocess.run(auth.lab.ns.argv("getent", "ahostsv4", "h5.dns.test"),
                       capture_output=True, text=True, timeout=20)
    assert r.stdout.split()[:1] == ["198.51.100.5"], r


# ---- every SPF result ----

@pytest.mark.parametrize("domain,result", [
    ("spf-pass.test", "pass"),
    ("spf-fail.test", "fail"),
    ("spf-softfail.test", "softfail"),
    ("spf-neutral.test", "neutral"),
    ("spf-none.test", "none"),
    ("norecord.test", "none"),
    ("mx-spf.test", "pass"),
])
def test_spf_result(auth, domain, result):
    sender = "someone@" + domain
    t = auth.send(message("a@" + domain), sender, helo="client.test").accepted()
    m = auth.fetch_one()
    spf = spf_of(m)
    assert spf["result"] == result, m.ours()
    assert spf["props"] == {"smtp.mailfrom": domain}, m.ours()
    rs_result, comment, kv = m.received_spf()
    assert rs_result == result
    assert kv["client-ip"] == CLIENT_IP
    assert kv["envelope-from"] == '"%s"' % sender
    assert kv["helo"] == "client.test"
    assert kv["receiver"] == HOSTNAME
    assert kv["identity"] == "mailfrom"
    assert comment, "Received-SPF needs a comment"
    assert t.mail.code == 250


def test_header_block_layout(auth):
    """Return-Path stays first; our two fields come before Received; the
    Authentication-Results is folded with CRLF TAB, one method per line."""
    auth.send(message("a@spf-pass.test"), "x@spf-pass.test").accepted()
    m = auth.fetch_one()
    assert m.data.startswith(b"Return-Path: <x@spf-pass.test>\r\nAuthentication-Results: ")
    names = m.names()
    assert names[0] == "return-path"
    top = names[:names.index("received")]
    assert sorted(top) == ["authentication-results", "received-spf", "return-path"], names
    assert re.search(rb"\r\nAuthentication-Results: mail\.test;\r\n\tspf=pass "
                     rb"smtp\.mailfrom=spf-pass\.test;\r\n\tdkim=none;\r\n\tdmarc=none"
                     rb"[^\r\n]* header\.from=spf-pass\.test\r\n", m.data), m.head
    assert re.search(rb"\r\nReceived-SPF: pass \(", m.data), m.head
    # The stored size (what POP3 LIST says) matches what RETR gives.
    (doc,) = auth.messages()
    assert doc["size"] == len(m.data)


def test_spf_fail_from_unlisted_address(auth):
    auth.send(message("a@spf-pass.test"), "x@spf-pass.test", ip=OTHER_IP).accepted()
    m = auth.fetch_one()
    assert spf_of(m)["result"] == "fail"
    assert m.received_spf()[2]["client-ip"] == OTHER_IP


def test_each_transaction_gets_its_own_spf(auth):
    """Two messages in one session: SPF follows each MAIL FROM."""
    s = auth.session()
    s.reply().check(220)
    s.cmd("EHLO client.test").check(250)
    for sender in ("x@spf-pass.test", "x@spf-fail.test", "x@spf-softfail.test"):
        s.cmd("MAIL FROM:<%s>" % sender).check(250)
        s.cmd("RCPT TO:<%s>" % RCPT).check(250)
        assert s.cmd("DATA").code == 354
        s.send(message("a@" + sender.split("@")[1], subject=sender) + b".\r\n")
        s.reply().check(250)
    s.cmd("RSET").check(250)
    s.cmd("QUIT").check(221)
    got = {m.values("Subject")[0]: spf_of(m)["result"] for m in auth.fetch()}
    assert got == {"x@spf-pass.test": "pass", "x@spf-fail.test": "fail",
                   "x@spf-softfail.test": "softfail"}


def test_spf_ipv6_client(auth):
    auth.send(message("a@spf-ip6.test"), "x@spf-ip6.test", ip="2001:db8::10").accepted()
    auth.send(message("a@spf-ip6.test"), "x@spf-ip6.test", ip="2001:db8::20").accepted()
    got = auth.fetch()
    assert [spf_of(m)["result"] for m in got] == ["pass", "fail"]
    assert [m.received_spf()[2]["client-ip"] for m in got] == ["2001:db8::10", "2001:db8::20"]


def test_spf_redirect(auth):
    auth.send(message("a@spf-redirect.test"), "x@spf-redirect.test").accepted()
    auth.send(message("a@spf-redirect.test"), "x@spf-redirect.test", ip=OTHER_IP).accepted()
    assert [spf_of(m)["result"] for m in auth.fetch()] == ["pass", "fail"]


# ---- permerror ----

@pytest.mark.parametrize("domain", ["spf-badip.test", "spf-badmech.test"])
def test_spf_syntax_error_is_permerror(auth, domain):
    auth.send(message("a@" + domain), "x@" + domain).accepted()
    m = auth.fetch_one()
    assert spf_of(m)["result"] == "permerror", m.ours()
    assert m.received_spf()[0] == "permerror"


def test_spf_eleven_lookups_across_includes_is_permerror(auth):
    """2 + 3 + 6 DNS-querying mechanisms over an include chain: permerror,
    although the last record would match the client."""
    auth.send(message("a@spf-many.test"), "x@spf-many.test").accepted()
    m = auth.fetch_one()
    assert spf_of(m)["result"] == "permerror", m.ours()


def test_spf_include_without_record_is_permerror(auth):
    """RFC 7208 5.2: an include target without an SPF record is permerror."""
    auth.send(message("a@spf-incnone.test"), "x@spf-incnone.test").accepted()
    assert spf_of(auth.fetch_one())["result"] == "permerror"


def test_spf_ten_lookups_across_includes_pass(auth):
    """The same chain with 10 lookups in total is within the limit."""
    auth.send(message("a@spf-ten.test"), "x@spf-ten.test").accepted()
    assert spf_of(auth.fetch_one())["result"] == "pass"


# ---- temperror ----

def test_spf_servfail_is_temperror(auth):
    t = auth.send(message("a@spf-pass.test"), "x@spf.servfail.test")
    t.accepted()
    m = auth.fetch_one()
    assert spf_of(m)["result"] == "temperror", m.ours()
    assert m.received_spf()[0] == "temperror"
    assert t.mail_seconds < 3


def test_spf_no_answer_is_temperror_within_bounds(auth):
    conf = auth.write_conf(dns_timeout="1")
    t = auth.send(message("a@spf-pass.test"), "x@spf.stall.test", conf=conf)
    t.accepted()
    m = auth.fetch_one()
    assert spf_of(m)["result"] == "temperror", m.ours()
    # One lookup (or a retry of it) may wait for dns_timeout, not more.
    assert t.mail_seconds < 4.5, "MAIL took %.1f s" % t.mail_seconds
    assert t.seconds < 8, "the session took %.1f s" % t.seconds


def test_spf_include_servfail_is_temperror(auth):
    """RFC 7208 5.2: temperror inside an include ends the check with temperror,
    although a later mechanism would match."""
    auth.send(message("a@spf-incfail.test"), "x@spf-incfail.test").accepted()
    assert spf_of(auth.fetch_one())["result"] == "temperror"


def test_spf_include_without_answer_is_temperror_within_bounds(auth):
    conf = auth.write_conf(dns_timeout="1")
    t = auth.send(message("a@spf-pass.test"), "x@spf-incstall.test", conf=conf)
    t.accepted()
    assert spf_of(auth.fetch_one())["result"] == "temperror"
    assert t.mail_seconds < 4.5, "MAIL took %.1f s" % t.mail_seconds


def test_dns_timeout_config_sets_the_wait(auth):
    """The namespace's resolv.conf says timeout:1; dns_timeout = 2 must be
    what a lookup without answer waits for (so the key is not ignored)."""
    conf = auth.write_conf(dns_timeout="2")
    t = auth.send(message("a@spf-pass.test"), "x@spf.stall.test", conf=conf)
    t.accepted()
    assert spf_of(auth.fetch_one())["result"] == "temperror"
    assert 1.8 < t.mail_seconds < 6.5, "MAIL took %.1f s" % t.mail_seconds


def test_spf_temperror_does_not_refuse_even_with_spf_fail_reject(auth):
    conf = auth.write_conf(spf_fail_reject="yes")
    auth.send(message("a@spf-pass.test"), "x@spf.servfail.test", conf=conf).accepted()
    assert spf_of(auth.fetch_one())["result"] == "temperror"


# ---- the null sender: HELO identity ----

@pytest.mark.parametrize("helo,result", [("helo-pass.test", "pass"),
                                         ("helo-fail.test", "fail")])
@pytest.mark.parametrize("verb", ["EHLO", "HELO"])
def test_null_sender_uses_helo_identity(auth, helo, result, verb):
    auth.send(message("mailer-daemon@" + helo), "", helo=helo, verb=verb).accepted()
    m = auth.fetch_one()
    spf = spf_of(m)
    assert spf["result"] == result, m.ours()
    assert spf["props"] == {"smtp.helo": helo}, m.ours()
    rs_result, _, kv = m.received_spf()
    assert rs_result == result
    assert kv["identity"] == "helo"
    assert kv["helo"] == helo
    assert m.data.startswith(b"Return-Path: <>\r\n")


# ---- spf_fail_reject ----

def test_spf_fail_is_only_marked_by_default(auth):
    t = auth.send(message("a@spf-fail.test"), "x@spf-fail.test")
    assert t.mail.code == 250
    t.accepted()
    assert spf_of(auth.fetch_one())["result"] == "fail"


def test_spf_fail_reject_refuses_at_mail(auth):
    conf = auth.write_conf(spf_fail_reject="yes")
    t = auth.send(message("a@spf-fail.test"), "x@spf-fail.test", conf=conf)
    t.mail.check(550, "5.7.23")
    assert t.rcpt is None
    assert auth.messages() == []
    # Other results are not refused.
    for domain in ("spf-softfail.test", "spf-pass.test", "spf-neutral.test"):
        auth.send(message("a@" + domain), "x@" + domain, conf=conf).accepted()
    assert len(auth.messages()) == 3


def test_spf_fail_reject_session_goes_on(auth):
    conf = auth.write_conf(spf_fail_reject="yes")
    s = auth.session(conf)
    s.reply().check(220)
    s.cmd("EHLO client.test").check(250)
    s.cmd("MAIL FROM:<x@spf-fail.test>").check(550, "5.7.23")
    s.cmd("RCPT TO:<%s>" % RCPT).check(503)
    s.cmd("MAIL FROM:<x@spf-pass.test>").check(250)
    s.cmd("RCPT TO:<%s>" % RCPT).check(250)
    assert s.cmd("DATA").code == 354
    s.send(message("a@spf-pass.test") + b".\r\n")
    s.reply().check(250)
    s.cmd("QUIT").check(221)
    assert spf_of(auth.fetch_one())["result"] == "pass"


# ---- who is not checked ----

def assert_unchecked(stored):
    assert stored.values("Authentication-Results") == [], stored.head
    assert stored.values("Received-SPF") == [], stored.head
    assert stored.names()[:2] == ["return-path", "received"], stored.head


def test_loopback_client_is_not_checked(auth):
    auth.send(message("a@reject.test"), "x@spf-fail.test", ip="127.0.0.1").accepted()
    assert_unchecked(auth.fetch_one())


def test_ipv6_loopback_client_is_not_checked(auth):
    auth.send(message("a@reject.test"), "x@spf-fail.test", ip="::1").accepted()
    assert_unchecked(auth.fetch_one())


def test_pipe_without_address_is_not_checked(auth):
    # No --remote-ip and fd 0 is a pipe: the client address is "unknown".
    auth.send(message("a@reject.test"), "x@spf-fail.test", ip=None).accepted()
    assert_unchecked(auth.fetch_one())


def test_trusted_networks_config(auth):
    conf = auth.write_conf(trusted_networks="%s/32, 10.0.0.0/8" % OTHER_IP)
    auth.send(message("a@spf-pass.test", subject="trusted"), "x@spf-fail.test",
              ip=OTHER_IP, conf=conf).accepted()
    auth.send(message("a@spf-pass.test", subject="checked"), "x@spf-fail.test",
              ip=CLIENT_IP, conf=conf).accepted()
    got = {m.values("Subject")[0]: m for m in auth.fetch()}
    assert_unchecked(got["trusted"])
    assert spf_of(got["checked"])["result"] == "fail"
    # A loopback client is checked once the list does not name loopback.
    auth.send(message("a@spf-pass.test", subject="loop"), "x@spf-fail.test",
              ip="127.0.0.1", conf=conf).accepted()
    got = {m.values("Subject")[0]: m for m in auth.fetch()}
    assert got["loop"].values("Authentication-Results"), got["loop"].head


def test_inbound_checks_no(auth):
    conf = auth.write_conf(inbound_checks="no")
    auth.send(message("a@reject.test"), "x@spf-fail.test", conf=conf).accepted()
    assert_unchecked(auth.fetch_one())


def test_authenticated_client_is_not_checked(auth):
    conf = auth.write_conf(spf_fail_reject="yes")
    t = auth.send(message("a@reject.test"), RCPT, conf=conf, auth=(RCPT, RCPT_PW))
    t.mail.check(250)
    t.accepted()
    assert_unchecked(auth.fetch_one())


def test_submission_is_not_checked(auth):
    conf = auth.write_conf(spf_fail_reject="yes")
    t = auth.send(message("a@reject.test"), RCPT, conf=conf, auth=(RCPT, RCPT_PW),
                  args=("--submission",))
    t.accepted()
    assert_unchecked(auth.fetch_one())


# ---- real TCP clients: the address comes from getpeername ----

def test_socket_clients_spf_by_peer_address(auth):
    srv = auth.server()
    for ip, subject in ((CLIENT_IP, "from ten"), (OTHER_IP, "from twenty")):
        with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test",
                          source_address=(ip, 0), timeout=20) as c:
            c.sendmail("x@spf-pass.test", [RCPT], message("a@spf-pass.test", subject=subject))
    got = {m.values("Subject")[0]: m for m in auth.fetch()}
    assert spf_of(got["from ten"])["result"] == "pass"
    assert got["from ten"].received_spf()[2]["client-ip"] == CLIENT_IP
    assert spf_of(got["from twenty"])["result"] == "fail"
    assert got["from twenty"].received_spf()[2]["client-ip"] == OTHER_IP
    assert re.search(r"\[%s\]" % re.escape(OTHER_IP),
                     unfold(got["from twenty"].values("Received")[0]))


def test_socket_client_spf_fail_reject(auth):
    srv = auth.server(auth.write_conf(spf_fail_reject="yes"))
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test",
                      source_address=(OTHER_IP, 0), timeout=20) as c:
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            c.sendmail("x@spf-pass.test", [RCPT], message("a@spf-pass.test"))
        assert e.value.smtp_code == 550 and e.value.smtp_error.startswith(b"5.7.23")
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test",
                      source_address=(CLIENT_IP, 0), timeout=20) as c:
        c.sendmail("x@spf-pass.test", [RCPT], message("a@spf-pass.test"))
    assert spf_of(auth.fetch_one())["result"] == "pass"


def test_socket_loopback_client_is_not_checked(auth):
    srv = auth.server(auth.write_conf(spf_fail_reject="yes"))
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test",
                      source_address=("127.0.0.1", 0), timeout=20) as c:
        c.sendmail("x@spf-fail.test", [RCPT], message("a@reject.test"))
    assert_unchecked(auth.fetch_one())


def test_swaks_null_sender_helo_identity(auth):
    srv = auth.server()
    r = subprocess.run(
        ["swaks", "--server", srv.host, "--port", str(srv.port), "--local-interface",
         OTHER_IP, "--helo", "helo-pass.test", "--from", "<>", "--to", RCPT,
         "--header", "From: <postmaster@helo-pass.test>", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    m = auth.fetch_one()
    # helo-pass.test names only 192.0.2.10: from .20 the HELO identity fails.
    spf = spf_of(m)
    assert (spf["result"], spf["props"]) == ("fail", {"smtp.helo": "helo-pass.test"}), m.ours()
    assert m.received_spf()[2]["identity"] == "helo"
