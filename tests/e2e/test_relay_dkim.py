"""DKIM signing of outbound mail (RFC 6376, relaxed/relaxed, rsa-sha256) with
the key of `mailcell dkim keygen`: the record it prints is published by the
test DNS server and every received copy is verified with python3-dkim
against it, also after the 8-bit to quoted-printable conversion, after
dot-stuffing, through Postfix, and by a receiving mailcell's own inbound
checks. Harness: relay_helpers.py."""
import re

import pytest

from relay_helpers import (RX_USER, exts, message, postfix, relay, relaylab,  # noqa: F401
                           unfold)

dkim = pytest.importorskip("dkim", reason="python3-dkim is not installed")


def lab_txt(name, timeout=5):
    """python3-dkim's DNS function, asking the lab's DNS server (the test
    runs inside the namespace)."""
    import dns.resolver
    if isinstance(name, bytes):
        name = name.decode()
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.lifetime = r.timeout = timeout
    try:
        ans = r.resolve(name, "TXT", search=False)
    except Exception:
        return None
    for rr in ans:
        return b"".join(rr.strings)
    return None


def signatures(data):
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    return [unfold(m) for m in re.findall(r"(?ms)^DKIM-Signature:(.*?)(?=^\S|\Z)", head + "\n")]


def tags(sig):
    return {k.strip(): re.sub(r"\s+", "", v) for k, _, v in
            (p.partition("=") for p in sig.split(";") if "=" in p)}


def verify(data):
    return dkim.verify(data, dnsfunc=lab_txt)


def check_signed(data, selector="sel1"):
    (sig,) = signatures(data)
    t = tags(sig)
    assert t["v"] == "1"
    assert t["a"] == "rsa-sha256"
    assert t["c"] == "relaxed/relaxed"
    assert t["d"] == "example.org"
    assert t["s"] == selector
    assert "from" in t["h"].lower().split(":")
    assert verify(data), "python3-dkim does not verify the received copy:\n%r" % data[:1500]
    # And the verifier is not a rubber stamp: a changed body fails.
    assert not verify(data.replace(b"relay", b"RELAY"))


def test_signed_and_verified(relay):
    name, record = relay.dkim_publish()
    assert name == "sel1._domainkey.example.org"
    assert record.startswith("v=DKIM1;") and "p=" in record
    peer = relay.peer()
    msg = message(subject="signed relay test")
    relay.submit("user@peer.test", msg)
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.data.endswith(msg)
    check_signed(m.data)


def test_signature_of_the_converted_message_verifies(relay):
    relay.dkim_publish()
    peer = relay.peer(extensions=exts(without=["8BITMIME", "CHUNKING"]))
    msg = message(subject="8-bit relay", body="K\u00f6ln relay caf\u00e9\r\n".encode() * 5,
                  extra=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        b"Content-Transfer-Encoding: 8bit\r\n")
    relay.submit("user@peer.test", msg, params="BODY=8BITMIME")
    relay.worker()
    (m,) = peer.wait_messages()
    assert max(m.data) < 128
    check_signed(m.data)


def test_signature_survives_dot_stuffing(relay):
    relay.dkim_publish()
    peer = relay.peer(extensions=exts(without=["CHUNKING"]))
    msg = message(subject="dots relay", body=b".\r\n..relay\r\n.x\r\n")
    relay.submit("user@peer.test", msg)
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.via == "DATA" and m.data.endswith(msg)
    check_signed(m.data)


def test_copy_received_by_postfix_verifies(relay, postfix):
    relay.dkim_publish()
    rcpt = "dkim-%s@pf.test" % relay.dbname
    relay.submit(rcpt, message(to=rcpt, subject="relay via postfix"))
    relay.worker()
    ((env, content),) = postfix.held_for(rcpt)
    check_signed(content)


def test_receiving_mailcell_finds_dkim_pass(relay):
    relay.dkim_publish()
    rx = relay.mailcell_peer(inbound_checks="yes", trusted_networks="", dns_timeout="1")
    relay.submit(RX_USER, message(to=RX_USER, subject="relay to mailcell"))
    relay.worker()
    (got,) = rx.wait_messages(1)
    head = unfold(got.split(b"\r\n\r\n", 1)[0].decode())
    m = re.search(r"Authentication-Results: mx\.remote\.test;([^\r\n]*)", head)
    assert m, head
    assert re.search(r"\bdkim=pass\b[^;]*header\.d=example\.org", m.group(1)), m.group(1)
    check_signed(got)


def test_not_signed_without_a_key(relay):
    peer = relay.peer()
    relay.submit("user@peer.test")
    relay.worker()
    (m,) = peer.wait_messages()
    assert signatures(m.data) == []


def test_not_signed_when_dkim_sign_is_off(relay):
    relay.dkim_publish()
    relay.use_conf(dkim_sign="no")
    peer = relay.peer()
    relay.submit("user@peer.test")
    relay.worker()
    (m,) = peer.wait_messages()
    assert signatures(m.data) == []
