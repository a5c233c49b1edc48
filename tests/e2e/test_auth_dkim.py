"""DKIM (RFC 6376) verification of inbound mail, end to end: messages signed
here with python3-dkim, keys published by the test DNS server (authdns.py),
results read back from what the mailbox shows (Authentication-Results with
one dkim= per signature, header.d/header.s/header.b) and from the stored DMARC
evaluation. Also `mailcell dkim keygen`: its printed record, published,
verifies a message signed with the key it stored."""
import re
import smtplib

import pytest

from authdns import (CLIENT_IP, RCPT, auth, authlab, b_value, dkim_sign,  # noqa: F401
                     message)


def dkims(stored):
    return stored.ours().of("dkim")


def check_pass(res, domain, selector, signed):
    assert res["result"] == "pass", res
    assert res["props"].get("header.d") == domain, res
    assert res["props"].get("header.s") == selector, res
    b = res["props"].get("header.b", "")
    assert len(b) >= 8 and b_value(signed).startswith(b), (b, b_value(signed))


@pytest.mark.parametrize("mode", ["data", "bdat"])
def test_valid_signature_passes(auth, mode):
    # Dots at line starts (stuffed for DATA), long lines, chunk boundaries
    # inside lines: the verifier must see the message as it was signed.
    body = b"".join(b".line %d %s\r\n" % (i, b"x" * (i % 90)) for i in range(300))
    signed = dkim_sign(auth.lab, message("a@dkim.test", body=body), "dkim.test", "s1")
    auth.send(signed, "x@dkim.test", mode=mode, chunk=1000).accepted()
    m = auth.fetch_one()
    (res,) = dkims(m)
    check_pass(res, "dkim.test", "s1", signed)
    # The signed message is stored unchanged below our trace fields.
    assert m.data.endswith(signed)
    (rec,) = auth.dmarc_records()
    assert rec["dkim"] == [{"domain": "dkim.test", "selector": "s1", "result": "pass"}]


def test_simple_canonicalization_passes(auth):
    signed = dkim_sign(auth.lab, message("a@dkim.test", body=b"Text  with   spaces \r\n\r\n"),
                       "dkim.test", "s1", canon=(b"simple", b"simple"))
    auth.send(signed, "x@dkim.test").accepted()
    check_pass(dkims(auth.fetch_one())[0], "dkim.test", "s1", signed)


def test_body_altered_after_signing_fails(auth):
    signed = dkim_sign(auth.lab, message("a@dkim.test", body=b"pay 10 EUR\r\n"),
                       "dkim.test", "s1")
    altered = signed.replace(b"pay 10 EUR", b"pay 99 EUR")
    auth.send(altered, "x@dkim.test").accepted()
    m = auth.fetch_one()
    (res,) = dkims(m)
    assert res["result"] == "fail", m.ours()
    assert res["props"].get("header.d") == "dkim.test"
    (rec,) = auth.dmarc_records()
    assert [d["result"] for d in rec["dkim"]] == ["fail"]


def test_signed_header_altered_fails(auth):
    signed = dkim_sign(auth.lab, message("a@dkim.test", subject="original"),
                       "dkim.test", "s1")
    altered = signed.replace(b"Subject: original", b"Subject: forged")
    auth.send(altered, "x@dkim.test").accepted()
    (res,) = dkims(auth.fetch_one())
    assert res["result"] == "fail", res


def test_unsigned_header_added_still_passes(auth):
    signed = dkim_sign(auth.lab, message("a@dkim.test"), "dkim.test", "s1")
    head, body = signed.split(b"\r\n\r\n", 1)
    auth.send(head + b"\r\nX-Mailing-List: added later\r\n\r\n" + body, "x@dkim.test").accepted()
    (res,) = dkims(auth.fetch_one())
    assert res["result"] == "pass", res


def test_two_signatures_one_good_one_bad(auth):
    lab = auth.lab
    first = dkim_sign(lab, message("a@dkim.test", subject="before"), "dkim2.test", "s2")
    # The dkim2.test signature covered the old subject; dkim.test signs the new one.
    changed = first.replace(b"Subject: before", b"Subject: after")
    both = dkim_sign(lab, changed, "dkim.test", "s1")
    auth.send(both, "x@dkim.test").accepted()
    m = auth.fetch_one()
    got = {r["props"].get("header.d"): r for r in dkims(m)}
    assert set(got) == {"dkim.test", "dkim2.test"}, m.ours()
    check_pass(got["dkim.test"], "dkim.test", "s1", both)
    assert got["dkim2.test"]["result"] == "fail", m.ours()
    assert got["dkim2.test"]["props"].get("header.s") == "s2"
    b2 = got["dkim2.test"]["props"].get("header.b", "")
    assert len(b2) >= 8 and b_value(changed).startswith(b2)
    (rec,) = auth.dmarc_records()
    assert sorted((d["domain"], d["selector"], d["result"]) for d in rec["dkim"]) == [
        ("dkim.test", "s1", "pass"), ("dkim2.test", "s2", "fail")]


def test_unsigned_is_dkim_none(auth):
    auth.send(message("a@dkim.test"), "x@dkim.test").accepted()
    m = auth.fetch_one()
    (res,) = dkims(m)
    assert res["text"] == "dkim=none", m.ours()
    (rec,) = auth.dmarc_records()
    assert rec["dkim"] == []


def test_key_not_in_dns_is_permerror(auth):
    # Signed with a real key, but no record at nokey._domainkey.dkim.test.
    signed = dkim_sign(auth.lab, message("a@dkim.test"), "dkim.test", "nokey",
                       key=auth.lab.keys[("dkim.test", "s1")])
    auth.send(signed, "x@dkim.test").accepted()
    (res,) = dkims(auth.fetch_one())
    assert res["result"] == "permerror", res
    assert res["props"].get("header.s") == "nokey"


def test_key_lookup_servfail_is_temperror(auth):
    signed = dkim_sign(auth.lab, message("a@dkim.test"), "dkim.servfail.test", "s1",
                       key=auth.lab.keys[("dkim.test", "s1")])
    t = auth.send(signed, "x@dkim.test")
    t.accepted()
    (res,) = dkims(auth.fetch_one())
    assert res["result"] == "temperror", res
    assert res["props"].get("header.d") == "dkim.servfail.test"


def test_key_lookup_without_answer_is_temperror_within_bounds(auth):
    conf = auth.write_conf(dns_timeout="1")
    signed = dkim_sign(auth.lab, message("a@dkim.test"), "dkim.stall.test", "s1",
                       key=auth.lab.keys[("dkim.test", "s1")])
    t = auth.send(signed, "x@dkim.test", conf=conf)
    t.accepted()
    (res,) = dkims(auth.fetch_one())
    assert res["result"] == "temperror", res
    assert t.seconds < 8, "the session took %.1f s" % t.seconds


def test_wrong_key_is_fail(auth):
    # Signed by dkim2.test's key but claiming d=dkim.test s=s1.
    signed = dkim_sign(auth.lab, message("a@dkim.test"), "dkim.test", "s1",
                       key=auth.lab.keys[("dkim2.test", "s2")])
    auth.send(signed, "x@dkim.test").accepted()
    (res,) = dkims(auth.fetch_one())
    assert res["result"] == "fail", res


def test_socket_client_signed_message(auth):
    srv = auth.server()
    signed = dkim_sign(auth.lab, message("a@dkim.test"), "dkim.test", "s1")
    with smtplib.SMTP(srv.host, srv.port, local_hostname="client.test",
                      source_address=(CLIENT_IP, 0), timeout=20) as c:
        c.sendmail("x@dkim.test", [RCPT], signed)
    check_pass(dkims(auth.fetch_one())[0], "dkim.test", "s1", signed)


# ---- mailcell dkim keygen ----

KEYGEN_RE = re.compile(r'^(\S+)\. 3600 IN TXT ("[^"]{1,255}"(?: "[^"]{1,255}")*)\n$')


def test_keygen_record_verifies_a_message(auth):
    out = auth.mailcell.ok("dkim", "keygen", "keygen.test", "sel1")
    m = KEYGEN_RE.match(out)
    assert m, "not one TXT record line: %r" % out
    assert m.group(1) == "sel1._domainkey.keygen.test"
    strings = re.findall(r'"([^"]*)"', m.group(2))
    data = "".join(strings)
    assert data.startswith("v=DKIM1; k=rsa; p=")
    pem = auth.db.dkim_keys.find_one({"_id": "sel1._domainkey.keygen.test"})["private_key"]
    try:
        auth.lab.dns.restart({"sel1._domainkey.keygen.test": data})
        signed = dkim_sign(auth.lab, message("a@keygen.test"), "keygen.test", "sel1",
                           key=pem.encode())
        auth.send(signed, "x@keygen.test").accepted()
        check_pass(dkims(auth.fetch_one())[0], "keygen.test", "sel1", signed)
    finally:
        auth.lab.dns.restart()
