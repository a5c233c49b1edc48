"""DMARC (RFC 7489) on inbound mail, end to end, with the test DNS server of
authdns.py: pass through aligned SPF or aligned DKIM, relaxed and strict
alignment, sp= for subdomains (organizational domain from the public suffix
list), pct=, the three policies (reject refuses after the end of data and
stores nothing but the evaluation, quarantine marks, none only reports), no
record, From header errors, DNS temperror (accepted, or 451 with
dmarc_temperror_defer), forged Authentication-Results, the stored
`dmarc_records` and the aggregate report built from them."""
import datetime
import math
import re
import smtplib
import time
import xml.etree.ElementTree as ET

import pytest

from authdns import (CLIENT_IP, HOSTNAME, OTHER_IP, RCPT, RCPT_DOMAIN, auth,  # noqa: F401
                     authlab, dkim_sign, message)


def dmarc_of(stored):
    return stored.ours().one("dmarc")


def policy_comment(res):
    """The (p=.. sp=.. pct=.. dis=..) comment of a dmarc= result as a dict."""
    assert res["comment"], "no policy comment in %r" % res["text"]
    return dict(kv.split("=", 1) for kv in res["comment"].split())


def check_dmarc(stored, result, header_from, dis=None, p=None):
    res = dmarc_of(stored)
    assert res["result"] == result, stored.ours()
    assert res["props"].get("header.from") == header_from, stored.ours()
    if dis is not None or p is not None:
        c = policy_comment(res)
        assert set(c) == {"p", "sp", "pct", "dis"}, res["text"]
        if dis is not None:
            assert c["dis"] == dis, res["text"]
        if p is not None:
            assert c["p"] == p, res["text"]
    return res


def check_refused(t, domain):
    assert t.final is not None, t
    t.final.check(550, "5.7.1")
    assert domain in t.final.text, t.final
    assert "DMARC" in t.final.text, t.final


def assert_nothing_stored(auth):
    assert auth.messages() == []
    assert auth.db["bodies.files"].count_documents({}) == 0, "a refused body was kept"


# ---- pass ----

def test_pass_via_aligned_spf(auth):
    # p=reject, unsigned: SPF pass for the From domain alone carries it.
    auth.send(message("a@dmarc-spf.test"), "bounce@dmarc-spf.test").accepted()
    m = auth.fetch_one()
    assert m.ours().one("spf")["result"] == "pass"
    assert m.ours().one("dkim")["text"] == "dkim=none"
    check_dmarc(m, "pass", "dmarc-spf.test", dis="none", p="reject")
    (rec,) = auth.dmarc_records()
    assert (rec["result"], rec["spf_aligned"], rec["dkim_aligned"]) == ("pass", True, False)


def test_pass_via_aligned_dkim_when_spf_fails(auth):
    signed = dkim_sign(auth.lab, message("a@dmarc-dkim.test"), "dmarc-dkim.test", "s1")
    auth.send(signed, "bounce@dmarc-dkim.test").accepted()
    m = auth.fetch_one()
    assert m.ours().one("spf")["result"] == "fail"
    assert m.ours().one("dkim")["result"] == "pass"
    check_dmarc(m, "pass", "dmarc-dkim.test", dis="none", p="reject")
    (rec,) = auth.dmarc_records()
    assert (rec["result"], rec["spf_aligned"], rec["dkim_aligned"]) == ("pass", False, True)


def test_null_sender_aligns_through_the_helo_identity(auth):
    """RFC 7489 4.1 with RFC 7208 2.4: for MAIL FROM:<> the SPF identity is
    the HELO name, and DMARC uses that result (p=reject here)."""
    auth.send(message("mailer-daemon@bounce-helo.test"), "", helo="bounce-helo.test").accepted()
    m = auth.fetch_one()
    assert m.ours().one("spf")["props"] == {"smtp.helo": "bounce-helo.test"}
    check_dmarc(m, "pass", "bounce-helo.test", dis="none", p="reject")
    (rec,) = auth.dmarc_records()
    assert rec["spf"] == {"domain": "bounce-helo.test", "scope": "helo", "result": "pass"}


def test_unaligned_dkim_pass_does_not_count(auth):
    # A valid signature by another domain, SPF failing: p=reject applies.
    signed = dkim_sign(auth.lab, message("a@dmarc-dkim.test"), "dkim.test", "s1")
    t = auth.send(signed, "bounce@dmarc-dkim.test")
    check_refused(t, "dmarc-dkim.test")
    assert_nothing_stored(auth)


def test_relaxed_spf_alignment_passes_for_a_subdomain(auth):
    auth.send(message("a@relax.test"), "bounce@bounce.relax.test").accepted()
    m = auth.fetch_one()
    assert m.ours().one("spf")["result"] == "pass"
    check_dmarc(m, "pass", "relax.test")


def test_strict_spf_alignment_fails_for_a_subdomain(auth):
    t = auth.send(message("a@strict.test"), "bounce@bounce.strict.test")
    check_refused(t, "strict.test")
    assert_nothing_stored(auth)
    (rec,) = auth.dmarc_records()
    assert rec["spf"]["result"] == "pass" and rec["spf_aligned"] is False
    assert rec["policy"]["aspf"] == "s"


def test_relaxed_dkim_alignment_passes_for_a_subdomain_signer(auth):
    signed = dkim_sign(auth.lab, message("a@adkimr.test"), "sub.adkimr.test", "s1")
    auth.send(signed, "x@spf-fail.test").accepted()
    m = auth.fetch_one()
    assert m.ours().one("dkim")["props"]["header.d"] == "sub.adkimr.test"
    check_dmarc(m, "pass", "adkimr.test")


def test_strict_dkim_alignment_fails_for_a_subdomain_signer(auth):
    signed = dkim_sign(auth.lab, message("a@adkims.test"), "sub.adkims.test", "s1")
    t = auth.send(signed, "x@spf-fail.test")
    check_refused(t, "adkims.test")
    (rec,) = auth.dmarc_records()
    assert rec["dkim"] == [{"domain": "sub.adkims.test", "selector": "s1", "result": "pass"}]
    assert rec["dkim_aligned"] is False and rec["policy"]["adkim"] == "s"


# ---- policies ----

@pytest.mark.parametrize("mode", ["data", "bdat"])
def test_reject_policy_refuses_after_the_end(auth, mode):
    t = auth.send(message("Someone <a@reject.test>", body=b"x\r\n" * 2000), "x@spf-fail.test",
                  mode=mode, chunk=3000)
    assert t.mail.code == 250 and t.rcpt.code == 250
    if mode == "data":
        assert t.data.code == 354
    else:
        assert t.chunks and all(r.code == 250 for r in t.chunks)
    check_refused(t, "reject.test")
    assert_nothing_stored(auth)
    # The evaluation is stored, with disposition reject.
    (rec,) = auth.dmarc_records()
    assert rec["source_ip"] == CLIENT_IP
    assert rec["helo"] == "client.test"
    assert rec["envelope_from"] in ("spf-fail.test", "x@spf-fail.test")
    assert rec["envelope_to"] in (RCPT_DOMAIN, RCPT)
    assert rec["header_from"] == "reject.test"
    assert rec["policy_domain"] == "reject.test"
    assert rec["spf"] == {"domain": "spf-fail.test", "scope": "mfrom", "result": "fail"}
    assert rec["dkim"] == []
    assert rec["spf_aligned"] is False and rec["dkim_aligned"] is False
    assert rec["result"] == "fail" and rec["disposition"] == "reject"
    assert rec["policy"] == {"p": "reject", "sp": "reject", "pct": 100, "adkim": "r",
                             "aspf": "r"}
    assert isinstance(rec["time"], datetime.datetime)
    assert re.fullmatch(r"[0-9A-Za-z]+", rec["qid"]), rec["qid"]


def test_reject_then_next_message_in_the_same_session(auth):
    s = auth.session()
    s.reply().check(220)
    s.cmd("EHLO client.test").check(250)
    for frm, code in (("a@reject.test", 550), ("a@dmarc-spf.test", 250)):
        s.cmd("MAIL FROM:<x@dmarc-spf.test>").check(250)
        s.cmd("RCPT TO:<%s>" % RCPT).check(250)
        assert s.cmd("DATA").code == 354
        s.send(message(frm) + b".\r\n")
        r = s.reply()
        assert r.code == code, r
    s.cmd("QUIT").check(221)
    m = auth.fetch_one()
    check_dmarc(m, "pass", "dmarc-spf.test")
    assert [r["disposition"] for r in auth.dmarc_records()] == ["reject", "none"]


def test_reject_policy_for_a_socket_client(auth):
    srv = auth.server()
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test",
                      source_address=(OTHER_IP, 0), timeout=20) as c:
        with pytest.raises(smtplib.SMTPDataError) as e:
            c.sendmail("x@dmarc-spf.test", [RCPT], message("a@dmarc-spf.test"))
        assert e.value.smtp_code == 550
        text = e.value.smtp_error.decode()
        assert text.startswith("5.7.1") and "dmarc-spf.test" in text and "DMARC" in text
        # The session goes on after the refusal.
        c.rset()
        c.noop()
    assert_nothing_stored(auth)
    (rec,) = auth.dmarc_records()
    assert rec["source_ip"] == OTHER_IP and rec["disposition"] == "reject"


def test_quarantine_policy_marks(auth):
    auth.send(message("a@quar.test"), "x@spf-fail.test").accepted()
    m = auth.fetch_one()
    check_dmarc(m, "fail", "quar.test", dis="quarantine", p="quarantine")
    assert m.values("X-Spam-Flag") == ["YES"], m.head
    (doc,) = auth.messages()
    assert doc.get("quarantined") is True
    (rec,) = auth.dmarc_records()
    assert rec["disposition"] == "quarantine"


def test_none_policy_only_reports(auth):
    auth.send(message("a@pnone.test"), "x@spf-fail.test").accepted()
    m = auth.fetch_one()
    check_dmarc(m, "fail", "pnone.test", dis="none", p="none")
    assert m.values("X-Spam-Flag") == []
    (doc,) = auth.messages()
    assert not doc.get("quarantined")


def test_passing_message_is_not_marked(auth):
    auth.send(message("a@dmarc-spf.test"), "x@dmarc-spf.test").accepted()
    m = auth.fetch_one()
    assert m.values("X-Spam-Flag") == []
    (doc,) = auth.messages()
    assert not doc.get("quarantined")


def test_no_record_is_dmarc_none(auth):
    auth.send(message("a@norecord.test"), "x@spf-fail.test").accepted()
    m = auth.fetch_one()
    res = check_dmarc(m, "none", "norecord.test")
    if res["comment"]:
        assert policy_comment(res)["dis"] == "none"
    assert m.values("X-Spam-Flag") == []


def test_subdomain_policy_sp_rejects(auth):
    # _dmarc.sp.test says p=none sp=reject; sub.sp.test has no record of its own.
    t = auth.send(message("a@sub.sp.test"), "x@spf-fail.test")
    check_refused(t, "sub.sp.test")
    assert_nothing_stored(auth)
    (rec,) = auth.dmarc_records()
    assert rec["header_from"] == "sub.sp.test" and rec["policy_domain"] == "sp.test"
    assert rec["disposition"] == "reject"
    assert (rec["policy"]["p"], rec["policy"]["sp"]) == ("none", "reject")


def test_organizational_domain_policy_p_none_applies_to_itself(auth):
    auth.send(message("a@sp.test"), "x@spf-fail.test").accepted()
    check_dmarc(auth.fetch_one(), "fail", "sp.test", dis="none", p="none")


def test_organizational_domain_lookup_for_deep_subdomain(auth):
    # a.b.reject.test: policy found at _dmarc.reject.test (p=reject, sp defaults to p).
    t = auth.send(message("x@a.b.reject.test"), "x@spf-fail.test")
    check_refused(t, "a.b.reject.test")


@pytest.mark.parametrize("domain,dis", [("pct-reject.test", "quarantine"),
                                        ("pct-quar.test", "none")])
def test_pct_zero_applies_the_next_lower_policy(auth, domain, dis):
    """RFC 7489 6.6.4: a message outside pct gets the next lower policy."""
    auth.send(message("a@" + domain), "x@spf-fail.test").accepted()
    m = auth.fetch_one()
    res = check_dmarc(m, "fail", domain, dis=dis)
    assert policy_comment(res)["pct"] == "0"
    assert (m.values("X-Spam-Flag") == ["YES"]) == (dis == "quarantine"), m.head
    (doc,) = auth.messages()
    assert bool(doc.get("quarantined")) == (dis == "quarantine")


def test_from_domain_is_case_insensitive(auth):
    t = auth.send(message("Someone <a@ReJeCt.TEST>"), "x@spf-fail.test")
    t.final.check(550, "5.7.1")
    assert "DMARC" in t.final.text


# ---- From header errors ----

@pytest.mark.parametrize("mode", ["data", "bdat"])
def test_no_from_header_is_refused(auth, mode):
    t = auth.send(message(from_line=False), "x@spf-pass.test", mode=mode)
    t.final.check(550, "5.7.1")
    assert_nothing_stored(auth)


@pytest.mark.parametrize("second", [b"From: <b@spf-pass.test>", b"FROM:b@spf-pass.test",
                                    b"from: Other <a@spf-pass.test>"])
def test_two_from_headers_are_refused(auth, second):
    t = auth.send(message("a@spf-pass.test", extra=second + b"\r\n"), "x@spf-pass.test")
    t.final.check(550, "5.7.1")
    assert_nothing_stored(auth)


def test_two_from_headers_refused_even_when_aligned(auth):
    # The first From would pass DMARC: the second must not slip through.
    t = auth.send(message("a@dmarc-spf.test", extra=b"From: <boss@reject.test>\r\n"),
                  "x@dmarc-spf.test")
    t.final.check(550, "5.7.1")
    assert_nothing_stored(auth)


def test_from_with_quoted_display_name(auth):
    t = auth.send(message('"Doe, John (CEO)" <boss@reject.test>'), "x@spf-fail.test")
    check_refused(t, "reject.test")
    auth.send(message('"Doe, John" <a@dmarc-spf.test>'), "x@dmarc-spf.test").accepted()
    check_dmarc(auth.fetch_one(), "pass", "dmarc-spf.test")


def test_from_in_the_body_does_not_count(auth):
    body = b"Forwarded:\r\nFrom: <boss@reject.test>\r\nFrom: <x@y.test>\r\n"
    auth.send(message("a@dmarc-spf.test", body=body), "x@dmarc-spf.test").accepted()
    m = auth.fetch_one()
    check_dmarc(m, "pass", "dmarc-spf.test")
    assert m.data.endswith(body)


# ---- temperror ----

def test_temperror_without_answer_is_delivered(auth):
    conf = auth.write_conf(dns_timeout="1")
    t = auth.send(message("a@dm.stall.test"), "x@spf-pass.test", conf=conf)
    t.accepted()
    assert t.seconds < 10, "the session took %.1f s" % t.seconds
    m = auth.fetch_one()
    check_dmarc(m, "temperror", "dm.stall.test")
    assert m.values("X-Spam-Flag") == []


def test_temperror_without_answer_deferred(auth):
    conf = auth.write_conf(dns_timeout="1", dmarc_temperror_defer="yes")
    t = auth.send(message("a@dm.stall.test"), "x@spf-pass.test", conf=conf)
    assert t.final is not None
    t.final.check(451, "4.7.5")
    assert t.seconds < 10, "the session took %.1f s" % t.seconds
    assert_nothing_stored(auth)


def test_temperror_servfail_deferred(auth):
    conf = auth.write_conf(dmarc_temperror_defer="yes")
    t = auth.send(message("a@dm.servfail.test"), "x@spf-pass.test", conf=conf)
    t.final.check(451, "4.7.5")
    assert_nothing_stored(auth)
    # The default accepts it, marked.
    auth.send(message("a@dm.servfail.test"), "x@spf-pass.test").accepted()
    check_dmarc(auth.fetch_one(), "temperror", "dm.servfail.test")


def test_defer_does_not_touch_definite_results(auth):
    conf = auth.write_conf(dmarc_temperror_defer="yes")
    auth.send(message("a@norecord.test"), "x@spf-pass.test", conf=conf).accepted()
    auth.send(message("a@pnone.test"), "x@spf-fail.test", conf=conf).accepted()
    assert len(auth.messages()) == 2


# ---- Authentication-Results that arrive with the message ----

def test_forged_authentication_results_removed(auth):
    extra = ("Authentication-Results: %s; dkim=pass header.d=reject.test\r\n"
             "Authentication-Results: other.example;\r\n\tspf=pass smtp.mailfrom=x.example\r\n"
             "Authentication-Results: MAIL.Test;\r\n dmarc=pass header.from=reject.test\r\n"
             "Authentication-Results: %s (comment); spf=pass\r\n"
             % (HOSTNAME, HOSTNAME.upper())).encode()
    auth.send(message("a@pnone.test", extra=extra), "x@spf-fail.test").accepted()
    m = auth.fetch_one()
    ars = m.auth_results()
    assert [a.authserv_id.lower() for a in ars] == [HOSTNAME, "other.example"], m.head
    assert ars[0].one("spf")["result"] == "fail"
    assert ars[1].one("spf")["props"] == {"smtp.mailfrom": "x.example"}
    assert b"dkim=pass header.d=reject.test" not in m.data
    assert b"dmarc=pass header.from=reject.test" not in m.data


def test_forged_authentication_results_folded_and_versioned(auth):
    extra = ("Authentication-Results:\r\n\t%s;\r\n\tdkim=pass header.d=reject.test\r\n"
             "Authentication-Results: %s 1; spf=pass smtp.mailfrom=reject.test\r\n"
             % (HOSTNAME, HOSTNAME)).encode()
    auth.send(message("a@pnone.test", extra=extra), "x@spf-fail.test").accepted()
    m = auth.fetch_one()
    assert len(m.auth_results()) == 1, m.head
    assert b"reject.test" not in m.data


def test_removal_follows_the_configured_hostname(auth):
    conf = auth.write_conf(hostname="mx9.example")
    extra = ("Authentication-Results: %s; dkim=pass header.d=kept.test\r\n"
             "Authentication-Results: mx9.example; dkim=pass header.d=gone.test\r\n"
             % HOSTNAME).encode()
    auth.send(message("a@pnone.test", extra=extra), "x@spf-fail.test", conf=conf).accepted()
    (m,) = auth.fetch()
    ars = m.auth_results()
    assert [a.authserv_id for a in ars] == ["mx9.example", HOSTNAME], m.head
    assert ars[0].one("spf")["result"] == "fail"
    assert b"gone.test" not in m.data and b"kept.test" in m.data
    assert m.received_spf()[2]["receiver"] == "mx9.example"


def test_authentication_results_in_the_body_are_kept(auth):
    body = ("Authentication-Results: %s; dkim=pass header.d=reject.test\r\n" % HOSTNAME).encode()
    auth.send(message("a@pnone.test", body=body), "x@spf-fail.test").accepted()
    m = auth.fetch_one()
    assert m.data.endswith(b"\r\n\r\n" + body)


def test_forged_results_do_not_influence_dmarc(auth):
    extra = ("Authentication-Results: %s; spf=pass smtp.mailfrom=reject.test;\r\n"
             "\tdkim=pass header.d=reject.test; dmarc=pass header.from=reject.test\r\n"
             % HOSTNAME).encode()
    t = auth.send(message("a@reject.test", extra=extra), "x@spf-fail.test")
    check_refused(t, "reject.test")


# ---- the aggregate report ----

def report(auth, domain, wait=True):
    """`mailcell dmarc report DOMAIN --since YESTERDAY`, parsed. With wait,
    the wall clock first moves on to the next second, so that records stored
    in this second are in the past for the report (see the test below)."""
    if wait:
        now = time.time()
        time.sleep(math.ceil(now) - now + 0.02)
    since = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)).date()
    out = auth.mailcell.ok("dmarc", "report", domain, "--since", since.isoformat())
    return ET.fromstring(out.encode())


def test_dmarc_report_counts_what_was_sent(auth):
    lab = auth.lab
    # report.test: SPF names 192.0.2.10 only, p=quarantine.
    for i in range(3):
        auth.send(message("a@report.test", subject="spf %d" % i), "b@report.test",
                  ip=CLIENT_IP).accepted()
    for i in range(2):
        auth.send(message("a@report.test", subject="fail %d" % i), "b@report.test",
                  ip=OTHER_IP).accepted()
    signed = dkim_sign(lab, message("a@report.test", subject="dkim"), "report.test", "s1")
    auth.send(signed, "b@spf-fail.test", ip=OTHER_IP).accepted()
    auth.send(message("a@other-report.test"), "b@spf-pass.test").accepted()   # another domain
    assert len(auth.dmarc_records({"header_from": "report.test"})) == 6

    root = report(auth, "report.test")
    assert root.tag == "feedback"
    assert root.find("report_metadata") is not None
    pol = root.find("policy_published")
    assert pol.findtext("domain") == "report.test"
    assert pol.findtext("p") == "quarantine"
    records = root.findall("record")
    assert sum(int(r.findtext("row/count")) for r in records) == 6

    def rows(ip, spf, dis):
        return sum(int(r.findtext("row/count")) for r in records
                   if r.findtext("row/source_ip") == ip
                   and r.findtext("row/policy_evaluated/spf") == spf
                   and r.findtext("row/policy_evaluated/disposition") == dis)
    assert rows(CLIENT_IP, "pass", "none") == 3
    assert rows(OTHER_IP, "fail", "quarantine") == 2
    assert rows(OTHER_IP, "fail", "none") == 1          # passed by the aligned signature
    for r in records:
        assert r.findtext("identifiers/header_from") == "report.test"
        assert r.find("auth_results/spf") is not None
    dk = [r for r in records if r.findtext("row/policy_evaluated/dkim") == "pass"]
    assert len(dk) == 1 and dk[0].findtext("auth_results/dkim/domain") == "report.test"
    assert dk[0].findtext("auth_results/dkim/result") == "pass"


def test_dmarc_report_includes_refused_messages(auth):
    for _ in range(2):
        check_refused(auth.send(message("a@reject.test"), "x@spf-fail.test"), "reject.test")
    # SPF pass, but not aligned: refused as well.
    check_refused(auth.send(message("a@reject.test"), "x@spf-pass.test"), "reject.test")
    root = report(auth, "reject.test")
    assert root.find("policy_published").findtext("p") == "reject"
    records = root.findall("record")
    assert sum(int(r.findtext("row/count")) for r in records) == 3
    assert {r.findtext("row/policy_evaluated/disposition") for r in records} == {"reject"}


def test_dmarc_report_includes_a_message_stored_just_now(auth):
    # Start right after a second boundary, so that the message is stored and
    # the report made within the same second.
    now = time.time()
    time.sleep(math.ceil(now) - now + 0.01)
    auth.send(message("a@quar.test"), "x@spf-fail.test").accepted()
    assert len(auth.dmarc_records()) == 1
    root = report(auth, "quar.test", wait=False)
    assert [(r.findtext("row/count"), r.findtext("row/policy_evaluated/disposition"))
            for r in root.findall("record")] == [("1", "quarantine")], \
        ET.tostring(root).decode()
    assert root.find("policy_published").findtext("p") == "quarantine"
