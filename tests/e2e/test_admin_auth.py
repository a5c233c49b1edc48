"""End-to-end tests of `mailcell dkim keygen|list` and `mailcell dmarc report`
against a real dev database: the printed DNS record is checked with the openssl
CLI against the stored private key, and reports are parsed as XML."""
import base64
import datetime
import re
import subprocess
import xml.etree.ElementTree as ET

import pymongo
import pytest

from conftest import Mailcell, write_conf

TXT_RE = re.compile(r'^(\S+)\. 3600 IN TXT ("[^"]{1,255}"(?: "[^"]{1,255}")*)\n$')
UTC = datetime.timezone.utc


@pytest.fixture
def mc(devdb, tmp_path, dbname):
    """bin/mailcell with a known hostname (the report's org_name)."""
    return Mailcell(write_conf(tmp_path / "mailcell.conf", devdb.uri, dbname,
                               "hostname = mx.reports.example\n"))


@pytest.fixture
def db(devdb, dbname):
    return pymongo.MongoClient(devdb.uri)[dbname]


def openssl(*args, input=None):
    r = subprocess.run(["openssl", *args], input=input, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout


def parse_txt(out):
    """(owner name, TXT data) of the one line keygen prints."""
    m = TXT_RE.match(out)
    assert m, "not one DNS TXT record line: %r" % out
    strings = re.findall(r'"([^"]*)"', m.group(2))
    assert all(len(s) <= 255 for s in strings)
    return m.group(1), "".join(strings)


def check_keygen(mc, db, domain, selector, bits, args=()):
    out = mc.ok("dkim", "keygen", domain, selector, *args)
    name, data = parse_txt(out)
    assert name == "%s._domainkey.%s" % (selector.lower(), domain.lower())
    assert data.startswith("v=DKIM1; k=rsa; p=")
    der = base64.b64decode(data[len("v=DKIM1; k=rsa; p="):], validate=True)
    text = openssl("pkey", "-pubin", "-inform", "DER", "-noout", "-text", input=der).decode()
    assert "Public-Key: (%d bit)" % bits in text
    doc = db.dkim_keys.find_one({"_id": name})
    assert doc["domain"] == domain.lower() and doc["selector"] == selector.lower()
    assert isinstance(doc["created"], datetime.datetime)
    pem = doc["private_key"].encode()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    # The published key is the public half of the stored private key.
    assert openssl("pkey", "-pubout", "-outform", "DER", input=pem) == der
    assert "Private-Key: (%d bit" % bits in openssl("pkey", "-noout", "-text", input=pem).decode()
    return name, data


def test_keygen_record_matches_stored_key(mc, db):
    name, data = check_keygen(mc, db, "Example.ORG", "mail2024", 2048)
    # A 2048-bit key does not fit one 255-octet string: split, each quoted.
    assert len(data) > 255
    check_keygen(mc, db, "example.org", "small", 1024, ("--bits", "1024"))
    check_keygen(mc, db, "sub.example.org", "k_3.x-y", 3072, ("--bits", "3072"))


def test_keygen_replaces_and_lists(mc, db):
    _, first = check_keygen(mc, db, "example.org", "s1", 1024, ("--bits", "1024"))
    _, second = check_keygen(mc, db, "example.org", "s1", 1024, ("--bits", "1024"))
    assert first != second
    assert db.dkim_keys.count_documents({"domain": "example.org"}) == 1
    check_keygen(mc, db, "other.example", "a", 1024, ("--bits", "1024"))
    lines = mc.ok("dkim", "list").splitlines()
    assert [l.split("\t")[:3] for l in lines] == [
        ["s1._domainkey.example.org", "example.org", "s1"],
        ["a._domainkey.other.example", "other.example", "a"]]
    for l in lines:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", l.split("\t")[3]), l


def test_dkim_list_empty(mc):
    assert mc.ok("dkim", "list") == ""


def test_keygen_errors(mc, db):
    for domain in ("bad..domain", "-x.example", "x_y.example", "", "a" * 64 + ".example",
                   "[192.0.2.1]"):
        r = mc("dkim", "keygen", domain, "sel")
        assert r.returncode == 1 and "not a valid domain name" in r.stderr, domain
        assert r.stdout == "" and len(r.stderr.splitlines()) == 1
    for sel in ("bad sel", "a/b", "", "x" * 64, ".lead", "trail.", "a..b", "sél"):
        r = mc("dkim", "keygen", "example.org", sel)
        assert r.returncode == 1 and "not a valid selector" in r.stderr, sel
        assert r.stdout == ""
    for bits in ("512", "8192", "2k", ""):
        r = mc("dkim", "keygen", "example.org", "s", "--bits", bits)
        assert r.returncode == 1 and "--bits" in r.stderr, bits
    for args in (["keygen"], ["keygen", "example.org"], ["keygen", "a.example", "s", "x"],
                 ["keygen", "a.example", "s", "--bits"], ["frob"], ["list", "x"]):
        r = mc("dkim", *args)
        assert r.returncode == 2 and "usage: mailcell" in r.stderr, args
    assert db.dkim_keys.count_documents({}) == 0


def test_database_unavailable(tmp_path):
    down = Mailcell(write_conf(tmp_path / "down.conf", "mongodb://127.0.0.1:1", "x"))
    r = down("dkim", "keygen", "example.org", "s", "--bits", "1024")
    assert r.returncode == 75 and r.stdout == ""
    assert "database unavailable" in r.stderr
    r = down("dkim", "list")
    assert r.returncode == 75
    r = down("dmarc", "report", "example.org", "--since", "2024-01-01")
    assert r.returncode == 75 and r.stdout == ""


# ---- dmarc report ----

DAY = datetime.datetime(2024, 5, 1, tzinfo=UTC)


def record(t, ip, header_from="example.org", spf=("example.org", "pass"), spf_aligned=True,
           dkim=(("example.org", "s1", "pass"),), dkim_aligned=True, disposition="none",
           result="pass", p="none", sp="", adkim="r", aspf="r", pct=100,
           envelope_from="example.org", policy_domain="example.org"):
    """A dmarc_records document as the SMTP session stores it."""
    return {"time": t, "qid": "Q%d" % int(t.timestamp()), "source_ip": ip,
            "helo": "mx.sender.example", "envelope_from": envelope_from,
            "envelope_to": "local.example", "header_from": header_from,
            "policy_domain": policy_domain,
            "spf": {"domain": spf[0], "scope": "mfrom", "result": spf[1]},
            "dkim": [{"domain": d, "selector": s, "result": res} for d, s, res in dkim],
            "spf_aligned": spf_aligned, "dkim_aligned": dkim_aligned, "result": result,
            "disposition": disposition,
            "policy": {"p": p, "sp": sp, "pct": pct, "adkim": adkim, "aspf": aspf}}


def at(minutes):
    return DAY + datetime.timedelta(minutes=minutes)


def insert_records(db):
    db.dmarc_records.insert_many([
        # Three good messages from one source: one row, count 3.
        record(at(10), "192.0.2.1"),
        record(at(20), "192.0.2.1"),
        record(at(30), "192.0.2.1"),
        # Forged: nothing passes; the newest record publishes p=reject.
        record(at(40), "192.0.2.2", spf=("forger.example", "fail"), spf_aligned=False,
               dkim=(), dkim_aligned=False, disposition="reject", result="fail",
               envelope_from="forger.example", p="reject"),
        record(at(50), "192.0.2.2", spf=("forger.example", "fail"), spf_aligned=False,
               dkim=(), dkim_aligned=False, disposition="reject", result="fail",
               envelope_from="forger.example", p="reject", sp="quarantine", adkim="s",
               pct=90),
        # A mailing service: SPF passes aligned, its own DKIM signature does not align.
        record(at(60), "2001:db8::25", spf=("example.org", "pass"),
               dkim=(("esp.example", "k1", "pass"), ("example.org", "s1", "fail")),
               dkim_aligned=False),
        # Escaping: a hostile envelope domain must not break the XML.
        record(at(70), "198.51.100.9", envelope_from='x<&>"\'.example', spf_aligned=False,
               spf=('x<&>"\'.example', "softfail"), disposition="quarantine", result="fail",
               dkim=(), dkim_aligned=False, p="quarantine"),
        # Another domain, and records outside the period: none of these appear.
        record(at(35), "203.0.113.5", header_from="other.example",
               policy_domain="other.example"),
        record(DAY - datetime.timedelta(seconds=1), "203.0.113.6"),
        record(DAY + datetime.timedelta(days=1), "203.0.113.7"),
    ])


def report(mc, *args):
    out = mc.ok("dmarc", "report", *args)
    assert out.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(out.encode())


def rows(root):
    """{(source_ip, envelope_from): record element}"""
    return {(r.findtext("row/source_ip"), r.findtext("identifiers/envelope_from")): r
            for r in root.findall("record")}


def test_report(mc, db):
    insert_records(db)
    root = report(mc, "example.org", "--since", "2024-05-01", "--until", "2024-05-02")
    assert root.tag == "feedback"
    meta = root.find("report_metadata")
    assert meta.findtext("org_name") == "mx.reports.example"
    assert meta.findtext("email") == "postmaster@mx.reports.example"
    begin, end = int(DAY.timestamp()), int(DAY.timestamp()) + 86400
    assert meta.findtext("date_range/begin") == str(begin)
    assert meta.findtext("date_range/end") == str(end)
    assert meta.findtext("report_id") == "example.org!%d!%d" % (begin, end)

    # policy_published: from the newest record that had a policy.
    pol = root.find("policy_published")
    assert {c.tag: c.text for c in pol} == {"domain": "example.org", "adkim": "r",
                                            "aspf": "r", "p": "quarantine",
                                            "sp": "quarantine", "pct": "100"}

    got = rows(root)
    assert set(got) == {("192.0.2.1", "example.org"), ("192.0.2.2", "forger.example"),
                        ("2001:db8::25", "example.org"),
                        ("198.51.100.9", 'x<&>"\'.example')}
    total = sum(int(r.findtext("row/count")) for r in root.findall("record"))
    assert total == 7

    good = got[("192.0.2.1", "example.org")]
    assert good.findtext("row/count") == "3"
    assert good.findtext("row/policy_evaluated/disposition") == "none"
    assert good.findtext("row/policy_evaluated/dkim") == "pass"
    assert good.findtext("row/policy_evaluated/spf") == "pass"
    assert good.findtext("identifiers/header_from") == "example.org"
    # Elements in the order of the RFC 7489 appendix C schema.
    assert [c.tag for c in root] == ["version", "report_metadata", "policy_published"] + \
        ["record"] * 4
    assert [c.tag for c in good] == ["row", "identifiers", "auth_results"]
    assert [c.tag for c in good.find("identifiers")] == ["envelope_from", "header_from"]
    assert [(d.findtext("domain"), d.findtext("selector"), d.findtext("result"))
            for d in good.findall("auth_results/dkim")] == [("example.org", "s1", "pass")]
    assert good.findtext("auth_results/spf/domain") == "example.org"
    assert good.findtext("auth_results/spf/scope") == "mfrom"
    assert good.findtext("auth_results/spf/result") == "pass"

    forged = got[("192.0.2.2", "forger.example")]
    assert forged.findtext("row/count") == "2"
    assert forged.findtext("row/policy_evaluated/disposition") == "reject"
    assert forged.findtext("row/policy_evaluated/dkim") == "fail"
    assert forged.findtext("row/policy_evaluated/spf") == "fail"
    assert forged.findall("auth_results/dkim") == []
    assert forged.findtext("auth_results/spf/result") == "fail"

    esp = got[("2001:db8::25", "example.org")]
    assert esp.findtext("row/count") == "1"
    assert esp.findtext("row/policy_evaluated/dkim") == "fail"   # passed, not aligned
    assert esp.findtext("row/policy_evaluated/spf") == "pass"
    assert [d.findtext("domain") for d in esp.findall("auth_results/dkim")] == [
        "esp.example", "example.org"]
    assert [c.tag for c in esp.find("auth_results")] == ["dkim", "dkim", "spf"]

    odd = got[("198.51.100.9", 'x<&>"\'.example')]
    assert odd.findtext("row/policy_evaluated/disposition") == "quarantine"
    assert odd.findtext("auth_results/spf/domain") == 'x<&>"\'.example'
    assert odd.findtext("row/policy_evaluated/spf") == "fail"


def test_report_policy_and_periods(mc, db):
    insert_records(db)
    # Up to 00:55 the newest record with a policy is the p=reject one at 00:50.
    root = report(mc, "EXAMPLE.org", "--since", "2024-05-01T00:00:00Z",
                  "--until", "2024-05-01T00:55:00Z")
    pol = root.find("policy_published")
    assert (pol.findtext("p"), pol.findtext("sp"), pol.findtext("adkim"),
            pol.findtext("pct")) == ("reject", "quarantine", "s", "90")
    assert sum(int(c.text) for c in root.iter("count")) == 5
    # Epoch seconds; since is inclusive, until exclusive.
    start = int(at(10).timestamp())
    root = report(mc, "example.org", "--since", "@%d" % start, "--until", "@%d" % (start + 1))
    assert [c.text for c in root.iter("count")] == ["1"]
    root = report(mc, "example.org", "--since", "@%d" % (start + 1),
                  "--until", "@%d" % int(at(20).timestamp()))
    assert root.findall("record") == []
    # The other domain has its own report.
    root = report(mc, "other.example", "--since", "2024-05-01", "--until", "2024-05-02")
    assert [(r.findtext("row/source_ip"), r.findtext("row/count"))
            for r in root.findall("record")] == [("203.0.113.5", "1")]
    # --until defaults to now.
    root = report(mc, "example.org", "--since", "2024-04-30")
    assert sum(int(c.text) for c in root.iter("count")) == 9


def test_report_without_records(mc):
    root = report(mc, "quiet.example", "--since", "2024-01-01", "--until", "2024-02-01")
    assert root.findall("record") == []
    pol = root.find("policy_published")
    assert pol.findtext("domain") == "quiet.example"
    assert pol.findtext("p") == "none" and pol.findtext("pct") == "100"


def test_report_errors(mc):
    for date in ("2024-13-01", "2024-02-30", "yesterday", "2024-5-1", "@", "@12x",
                 "2024-05-01T25:00:00Z", "2024-05-01 00:00:00", "2024-05-01T00:00:00"):
        r = mc("dmarc", "report", "example.org", "--since", date)
        assert r.returncode == 1, date
        assert "not a valid date" in r.stderr and date in r.stderr, date
        assert r.stdout == "" and len(r.stderr.splitlines()) == 1
    r = mc("dmarc", "report", "example.org", "--since", "2024-05-01", "--until", "2024-31-01")
    assert r.returncode == 1 and "--until" in r.stderr and "not a valid date" in r.stderr
    r = mc("dmarc", "report", "example.org", "--since", "2024-05-02", "--until", "2024-05-01")
    assert r.returncode == 1 and "period is empty" in r.stderr
    r = mc("dmarc", "report", "bad..domain", "--since", "2024-05-01")
    assert r.returncode == 1 and "not a valid domain name" in r.stderr
    for args in ([], ["report"], ["report", "example.org"], ["summary", "example.org"],
                 ["report", "example.org", "--since"],
                 ["report", "example.org", "--since", "2024-05-01", "--frob"]):
        r = mc("dmarc", *args)
        assert r.returncode == 2 and "usage: mailcell" in r.stderr, args
        assert r.stdout == ""
