"""The relay worker's ESMTP client adapting to what each server offers:
PIPELINING (RFC 2920), CHUNKING/BDAT and BINARYMIME (RFC 3030) or DATA with
dot-stuffing, 8BITMIME (RFC 6152) or a conversion to quoted-printable,
SMTPUTF8 (RFC 6531), STARTTLS (RFC 3207) opportunistic / required / verify,
HELO when EHLO is refused, and SIZE (RFC 1870) checked before the content.
Peers: the scripted ScriptPeer (exact commands), Postfix's smtpd (a private
instance with extensions switched off) and smtp-sink. Harness:
relay_helpers.py."""
import base64
import email
import email.policy
import re

import pytest

from relay_helpers import (ALICE, DSN, exts, message, postfix, relay, relaylab,  # noqa: F401
                           server_tls_context, sink_fields)

EIGHTBIT_TEXT = "Gr\u00fc\u00dfe aus K\u00f6ln: caf\u00e9, na\u00efve, \u20ac 10\r\n" * 3


def eightbit_message(to="user@peer.test", subject="8-bit text"):
    return message(to=to, subject=subject, body=EIGHTBIT_TEXT.encode(),
                   extra=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         b"Content-Transfer-Encoding: 8bit\r\n")


def check_7bit_qp(data, text=EIGHTBIT_TEXT):
    """data (what arrived) is 7-bit, quoted-printable, and decodes to text."""
    assert max(data) < 128, "8-bit octets sent to a server without 8BITMIME"
    for line in data.split(b"\r\n"):
        assert len(line) <= 998
    m = email.message_from_bytes(data, policy=email.policy.default)
    cte = m["Content-Transfer-Encoding"]
    assert cte and cte.lower() == "quoted-printable", cte
    got = m.get_content().replace("\r\n", "\n").rstrip("\n")
    assert got == text.replace("\r\n", "\n").rstrip("\n")
    assert (m.get("MIME-Version") or "").strip() == "1.0"


# ---- PIPELINING ----

def test_pipelining_when_offered(relay):
    peer = relay.peer(extensions=exts(without=["CHUNKING"]), peek=0.3)
    relay.submit(["a@peer.test", "b@peer.test"])
    relay.worker()
    (m,) = peer.wait_messages()
    (sess,) = peer.sessions
    early = dict((v, e) for v, e in sess.early if v in ("MAIL",))
    assert early["MAIL"], "RCPT was not sent before MAIL's reply: %r" % sess.early
    assert sess.verbs()[:5] == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA"], sess.lines


def test_no_pipelining_when_not_offered(relay):
    peer = relay.peer(extensions=exts(without=["PIPELINING", "CHUNKING"]), peek=0.3)
    msg = message(to="a@peer.test")
    relay.submit(["a@peer.test", "b@peer.test"], msg)
    relay.worker(timeout=30)
    (m,) = peer.wait_messages()
    assert m.data.endswith(msg)
    (sess,) = peer.sessions
    assert [v for v, e in sess.early if e] == [], \
        "commands sent before the previous reply to a server without PIPELINING: %r" % sess.early


# ---- CHUNKING / DATA ----

DOTTED = (b"first line\r\n.a line starting with a dot\r\n..two dots\r\n.\r\n"
          b"the line above was a single dot\r\n.\r\n")


def test_bdat_when_chunking_offered(relay):
    peer = relay.peer()
    big = b"".join(b"%06d %s\r\n" % (i, b"y" * 70) for i in range(4000))   # ~300 KB
    msg = message(body=DOTTED + big)
    relay.submit("user@peer.test", msg)
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.via == "BDAT"
    assert "DATA" not in peer.sessions[0].verbs()
    assert m.data.endswith(msg), "BDAT content must be the message, unstuffed"
    assert m.raw == m.data


def test_data_dot_stuffed_when_no_chunking(relay):
    peer = relay.peer(extensions=exts(without=["CHUNKING"]))
    msg = message(body=DOTTED)
    relay.submit("user@peer.test", msg)
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.via == "DATA"
    assert "BDAT" not in peer.sessions[0].verbs()
    assert m.data.endswith(msg)
    assert b"\r\n..a line starting with a dot\r\n...two dots\r\n..\r\n" in m.raw


# ---- 8BITMIME ----

def test_body_8bitmime_when_offered(relay):
    peer = relay.peer()
    msg = eightbit_message()
    relay.submit("user@peer.test", msg, params="BODY=8BITMIME")
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.params.get("BODY") == "8BITMIME", m.mail_arg
    assert m.data.endswith(msg), "the 8-bit message arrives unchanged"


def test_8bit_converted_to_quoted_printable_without_8bitmime(relay):
    peer = relay.peer(extensions=exts(without=["8BITMIME"]))
    msg = eightbit_message()
    qid = relay.submit("user@peer.test", msg, params="BODY=8BITMIME")
    relay.worker()
    (m,) = peer.wait_messages()
    assert "BODY" not in m.params or m.params["BODY"] == "7BIT", m.mail_arg
    check_7bit_qp(m.data)
    assert relay.state(qid) == "done"
    size = int(m.params.get("SIZE", len(m.data)))
    assert size >= len(m.data) - 2, "SIZE= must be the converted size: %d < %d" % (
        size, len(m.data))


TRICKY_TEXT = ("." + "\u00e9" * 3 + "\r\n"            # a dot first, then 8-bit
               ".\r\n"                              # a line holding only a dot
               "trailing spaces \u00fc   \r\n"       # must survive the encoding
               "equals = sign and =3D \u00e4\r\n"
               + "long \u00f6 line " * 60 + "\r\n"   # ~1000 octets, soft breaks needed
               "\tTab \u00df\r\n"
               "last line without 8-bit\r\n")


@pytest.mark.parametrize("chunking", [False, True])
def test_conversion_edge_cases(relay, chunking):
    peer = relay.peer(extensions=exts(without=["8BITMIME"] + ([] if chunking else ["CHUNKING"])))
    msg = message(subject="tricky 8-bit", body=TRICKY_TEXT.encode(),
                  extra=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        b"Content-Transfer-Encoding: 8bit\r\n")
    relay.submit("user@peer.test", msg, params="BODY=8BITMIME")
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.via == ("BDAT" if chunking else "DATA")
    check_7bit_qp(m.data, TRICKY_TEXT)
    got = email.message_from_bytes(m.data, policy=email.policy.default).get_content()
    assert "trailing spaces \u00fc   \n" in got.replace("\r\n", "\n"), "trailing blanks lost"


def nested_message():
    html_part = "<p>K\u00f6ln &amp; caf\u00e9</p>\r\n".encode()
    att = base64.encodebytes(bytes(range(256))).replace(b"\n", b"\r\n")
    return message(subject="nested 8-bit", body=b"".join([
        b"preamble\r\n--outer\r\n",
        b"Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n",
        b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n", EIGHTBIT_TEXT.encode(),
        b"--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n", html_part,
        b"--inner--\r\n",
        b"--outer\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n", att,
        b"--outer--\r\n"]),
        extra=b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n")


def test_nested_multipart_converted_part_by_part(relay):
    peer = relay.peer(extensions=exts(without=["8BITMIME", "CHUNKING"]))
    msg = nested_message()
    relay.submit("user@peer.test", msg, params="BODY=8BITMIME")
    relay.worker()
    (m,) = peer.wait_messages()
    assert max(m.data) < 128
    got = email.message_from_bytes(m.data, policy=email.policy.default)
    orig = email.message_from_bytes(msg, policy=email.policy.default)
    gp = [p for p in got.walk() if not p.is_multipart()]
    op = [p for p in orig.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in gp] == [p.get_content_type() for p in op]
    for g, o in zip(gp, op):
        assert g.get_payload(decode=True).replace(b"\r\n", b"\n") == \
            o.get_payload(decode=True).replace(b"\r\n", b"\n"), g.get_content_type()
    # The base64 attachment is left as it was.
    assert m.data.count(b"Content-Transfer-Encoding: base64") == 1
    assert base64.encodebytes(bytes(range(256))).replace(b"\n", b"\r\n") in m.data


def test_7bit_message_passes_unchanged_without_8bitmime(relay):
    peer = relay.peer(extensions=exts(without=["8BITMIME", "CHUNKING"]))
    msg = message(body=b"plain ASCII =3D stays as it is\r\n")
    relay.submit("user@peer.test", msg, params="BODY=8BITMIME")
    relay.worker()
    (m,) = peer.wait_messages()
    assert "BODY" not in m.params or m.params["BODY"] == "7BIT", m.mail_arg
    assert m.data.endswith(msg)


def test_8bit_header_never_goes_to_a_server_without_8bitmime(relay):
    # Raw UTF-8 in a header field cannot become quoted-printable: the
    # message is either sent 7-bit (the field encoded) or bounced, never
    # sent with 8-bit octets.
    peer = relay.peer(extensions=exts(without=["8BITMIME"]))
    msg = message(subject="Gr\u00fc\u00dfe aus K\u00f6ln", body=b"plain body\r\n")
    assert max(msg) > 127
    qid = relay.submit("user@peer.test", msg, params="BODY=8BITMIME")
    relay.worker()
    sent = peer.messages(accepted=False)
    for m in sent:
        assert max(m.data) < 128, "8-bit header sent to a server without 8BITMIME"
    if not sent:
        assert relay.state(qid) == "failed"
        status = relay.rcpt(qid, "user@peer.test")["status"]
        assert status.startswith("5.6."), status
        (dsn,) = relay.dsns(ALICE)


# ---- BINARYMIME ----

BINARY = bytes(range(256)) * 4


def binary_message(to="user@peer.test"):
    return (message(to=to, subject="binary", body=b"", extra=(
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0und\"\r\n"))
        + b"--b0und\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nsee attachment\r\n"
        + b"--b0und\r\nContent-Type: application/octet-stream\r\n"
        + b"Content-Transfer-Encoding: binary\r\n\r\n" + BINARY + b"\r\n--b0und--\r\n")


def test_binarymime_through_bdat_when_offered(relay):
    peer = relay.peer(extensions=exts(extra=["BINARYMIME"]))
    msg = binary_message()
    relay.submit("user@peer.test", msg, params="BODY=BINARYMIME", bdat=True)
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.via == "BDAT"
    assert m.params.get("BODY") == "BINARYMIME", m.mail_arg
    assert m.data.endswith(msg)


def test_binarymime_converted_for_a_server_without_it(relay):
    peer = relay.peer(extensions=exts(without=["CHUNKING"]))   # 8BITMIME, no BINARYMIME
    msg = binary_message()
    qid = relay.submit("user@peer.test", msg, params="BODY=BINARYMIME", bdat=True)
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.params.get("BODY") != "BINARYMIME", m.mail_arg
    assert max(m.data) < 128 or m.params.get("BODY") == "8BITMIME"
    assert b"\x00" not in m.data
    parsed = email.message_from_bytes(m.data, policy=email.policy.default)
    parts = [p for p in parsed.walk() if p.get_content_type() == "application/octet-stream"]
    assert len(parts) == 1
    assert parts[0].get_payload(decode=True) == BINARY
    assert relay.state(qid) == "done"


def test_binarymime_without_chunking_is_not_used(relay):
    # BINARYMIME needs BDAT (RFC 3030): a server offering it without
    # CHUNKING gets the converted message through DATA.
    peer = relay.peer(extensions=exts(without=["CHUNKING"], extra=["BINARYMIME"]))
    msg = binary_message()
    relay.submit("user@peer.test", msg, params="BODY=BINARYMIME", bdat=True)
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.via == "DATA"
    assert m.params.get("BODY") != "BINARYMIME", m.mail_arg
    parsed = email.message_from_bytes(m.data, policy=email.policy.default)
    (part,) = [p for p in parsed.walk() if p.get_content_type() == "application/octet-stream"]
    assert part.get_payload(decode=True) == BINARY


# ---- SMTPUTF8 ----

UTF8_RCPT = "j\u00f6rg@peer.test"


def test_smtputf8_address_to_a_server_with_smtputf8(relay):
    peer = relay.peer()
    msg = message(to=UTF8_RCPT, subject="utf8")
    qid = relay.submit(UTF8_RCPT, msg, params="SMTPUTF8")
    relay.worker()
    (m,) = peer.wait_messages()
    assert "SMTPUTF8" in m.params, m.mail_arg
    assert m.rcpts == [UTF8_RCPT]
    assert relay.state(qid) == "done"


def test_smtputf8_address_to_a_server_without_bounces_5_6_7(relay):
    peer = relay.peer(extensions=exts(without=["SMTPUTF8"]))
    qid = relay.submit(UTF8_RCPT, message(to=UTF8_RCPT, subject="utf8"), params="SMTPUTF8")
    relay.worker()
    assert peer.messages(accepted=False) == []
    assert not any(l.upper().startswith("RCPT") for l in peer.all_lines())
    assert relay.state(qid) == "failed"
    assert relay.rcpt(qid, UTF8_RCPT)["status"] == "5.6.7"
    (dsn,) = relay.dsns(ALICE)
    assert DSN(dsn).recipient(UTF8_RCPT)["Status"].strip() == "5.6.7"


# ---- STARTTLS ----

def tls_peer(relay, cert="cert", key="key", **kw):
    t = relay.lab.tls
    return relay.peer(tls=server_tls_context(t[cert], t[key]), **kw)


def test_starttls_used_when_offered(relay):
    peer = tls_peer(relay)
    msg = message()
    qid = relay.submit("user@peer.test", msg)
    relay.worker()
    (m,) = peer.wait_messages()
    (sess,) = peer.sessions
    assert sess.tls
    v = sess.verbs()
    assert v[:3] == ["EHLO", "STARTTLS", "EHLO"], sess.lines
    assert sess.plain_after_starttls == b"", "nothing may be pipelined after STARTTLS"
    assert m.data.endswith(msg)
    assert "TLS" in relay.show(qid)


def test_opportunistic_tls_does_not_verify_the_certificate(relay):
    peer = tls_peer(relay, cert="self_cert", key="self_key")
    msg = message()
    qid = relay.submit("user@peer.test", msg)
    relay.worker()
    (m,) = peer.wait_messages()
    assert peer.sessions[0].tls and m.data.endswith(msg)
    assert relay.state(qid) == "done"


def test_plaintext_when_starttls_not_offered(relay):
    peer = relay.peer()
    msg = message()
    relay.submit("user@peer.test", msg)
    relay.worker()
    (m,) = peer.wait_messages()
    assert not peer.sessions[0].tls
    assert m.data.endswith(msg)


def test_relay_tls_required_never_sends_in_plaintext(relay):
    relay.use_conf(relay_tls="required", retry_schedule="1h")
    peer = relay.peer()
    qid = relay.submit("user@peer.test")
    relay.worker()
    assert not any(v in ("MAIL", "RCPT", "DATA", "BDAT")
                   for s in peer.sessions for v in s.verbs()), peer.sessions
    it = relay.item(qid)
    assert it["state"] == "queued"
    assert it["recipients"][0]["state"] == "pending"
    assert relay.dsns(ALICE) == []


def test_relay_tls_required_with_starttls_delivers(relay):
    relay.use_conf(relay_tls="required")
    peer = tls_peer(relay)
    msg = message()
    qid = relay.submit("user@peer.test", msg)
    relay.worker()
    (m,) = peer.wait_messages()
    assert peer.sessions[0].tls and m.data.endswith(msg)
    assert relay.state(qid) == "done"


def test_relay_tls_verify_with_a_valid_certificate(relay):
    relay.use_conf(relay_tls="verify", relay_ca_file=str(relay.lab.tls["ca"]))
    peer = tls_peer(relay)
    qid = relay.submit("user@peer.test")
    relay.worker()
    assert peer.wait_messages() and peer.sessions[0].tls
    assert relay.state(qid) == "done"


def test_relay_tls_verify_refuses_a_wrong_certificate(relay):
    relay.use_conf(relay_tls="verify", relay_ca_file=str(relay.lab.tls["ca"]),
                   retry_schedule="1h")
    peer = tls_peer(relay, cert="self_cert", key="self_key")
    qid = relay.submit("user@peer.test")
    relay.worker()
    assert not any(v in ("MAIL", "RCPT") for s in peer.sessions for v in s.verbs()), \
        peer.sessions
    assert relay.item(qid)["recipients"][0]["state"] == "pending"
    assert relay.state(qid) == "queued"


# ---- HELO ----

def test_helo_when_ehlo_is_refused(relay):
    peer = relay.peer(helo_only=True, extensions=[])
    msg = eightbit_message()
    qid = relay.submit("user@peer.test", msg, params="BODY=8BITMIME")
    relay.worker()
    (m,) = peer.wait_messages()
    (sess,) = peer.sessions
    assert sess.verbs()[:2] == ["EHLO", "HELO"], sess.lines
    assert sess.lines[1] == "HELO mail.test"
    assert m.params == {}, "no ESMTP parameters after HELO: %r" % m.mail_arg
    assert m.via == "DATA"
    check_7bit_qp(m.data)
    assert relay.state(qid) == "done"


def test_helo_only_smtp_sink(relay):
    sink = relay.sink(flags=["-e"])        # smtp-sink: "Do not announce ESMTP support"
    msg = message(to="user@sink.test", body=DOTTED)
    qid = relay.submit("user@sink.test", msg)
    relay.worker()
    (dump,) = sink.complete()
    fields, _ = sink_fields(dump)
    assert fields["X-Client-Proto"] == ["SMTP"], fields
    assert fields["X-Helo-Args"] == ["mail.test"]
    assert fields["X-Mail-Args"] == ["<alice@example.org>"], "no ESMTP parameters after HELO"
    assert relay.state(qid) == "done"


# ---- unusual but valid servers ----

def test_lowercase_keywords_and_a_multiline_greeting(relay):
    # EHLO keywords are case-insensitive (RFC 5321 4.1.1.1); a greeting may
    # take several lines; unknown extensions and SIZE without a number are fine.
    peer = relay.peer(replies={"CONNECT": "220-mx.peer.test ESMTP\r\n220-welcome\r\n220 go ahead"},
                      extensions=["pipelining", "size", "8bitmime", "X-FROBNICATE a b",
                                  "chunking", "smtputf8", "enhancedstatuscodes"])
    msg = eightbit_message()
    qid = relay.submit("user@peer.test", msg, params="BODY=8BITMIME")
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.via == "BDAT", "chunking offered in lower case"
    assert m.params.get("BODY") == "8BITMIME", m.mail_arg
    assert m.data.endswith(msg)
    assert relay.state(qid) == "done"


def test_quoted_local_part(relay):
    peer = relay.peer()
    rcpt = '"john smith"@peer.test'
    msg = message(to=rcpt)
    relay.submit(rcpt, msg)
    relay.worker()
    (m,) = peer.wait_messages()
    assert m.rcpts == [rcpt]
    assert 'RCPT TO:<"john smith"@peer.test>' in peer.all_lines()


# ---- SIZE ----

def test_size_announced_and_checked_before_the_content(relay):
    peer = relay.peer(extensions=exts(without=["SIZE"], extra=["SIZE 2000"]))
    qid = relay.submit("user@peer.test", message(body=(b"z" * 60 + b"\r\n") * 60))
    relay.worker()
    verbs = [v for s in peer.sessions for v in s.verbs()]
    assert "DATA" not in verbs and "BDAT" not in verbs, peer.sessions
    assert relay.state(qid) == "failed"
    assert relay.rcpt(qid, "user@peer.test")["status"] == "5.3.4"
    (dsn,) = relay.dsns(ALICE)
    assert DSN(dsn).recipient("user@peer.test")["Status"].strip() == "5.3.4"


def test_size_parameter_when_it_fits(relay):
    peer = relay.peer(extensions=exts(without=["SIZE"], extra=["SIZE 100000"]))
    msg = message(body=(b"z" * 60 + b"\r\n") * 60)
    relay.submit("user@peer.test", msg)
    relay.worker()
    (m,) = peer.wait_messages()
    assert int(m.params["SIZE"]) >= len(msg)
    assert m.data.endswith(msg)


# ---- against Postfix's smtpd ----

def pf_disconnect(postfix, rcpt_domain):
    """Postfix's "disconnect from ..." summary lines (command counts)."""
    return [l for l in postfix.log_lines("disconnect from") if "192.0.2." in l]


def test_postfix_full_featured(relay, postfix):
    rcpt = "full-%s@pf.test" % relay.dbname
    msg = eightbit_message(to=rcpt)
    qid = relay.submit(rcpt, msg, params="BODY=8BITMIME")
    relay.worker()
    ((env, content),) = postfix.held_for(rcpt)
    assert re.search(r"(?m)^sender: alice@example\.org$", env), env
    assert content.endswith(msg), content[-600:]
    assert relay.state(qid) == "done"
    log = relay.show(qid)
    assert "STARTTLS" in log and "BDAT" in log, log
    lines = [l for l in postfix.log_lines("disconnect from") if "bdat=" in l and "starttls=1" in l]
    assert lines, postfix.log_lines("disconnect from")


def test_postfix_without_8bitmime_gets_quoted_printable(relay, postfix):
    rcpt = "no8bit-%s@pf-no8bit.test" % relay.dbname
    msg = eightbit_message(to=rcpt)
    relay.submit(rcpt, msg, params="BODY=8BITMIME")
    relay.worker()
    ((env, content),) = postfix.held_for(rcpt)
    # Postfix adds its Received line on top; the rest is the converted message.
    check_7bit_qp(content)


def test_postfix_with_every_extension_switched_off(relay, postfix):
    rcpt = "bare-%s@pf-bare.test" % relay.dbname
    msg = message(to=rcpt, body=DOTTED)
    qid = relay.submit(rcpt, msg)
    relay.worker()
    ((env, content),) = postfix.held_for(rcpt)
    assert content.endswith(msg)
    show = relay.show(qid)
    assert "STARTTLS" not in show and "BDAT" not in show, show
    assert re.search(r"(?m)> DATA$", show), show


def test_postfix_message_size_limit(relay, postfix):
    rcpt = "small-%s@pf-small.test" % relay.dbname
    qid = relay.submit(rcpt, message(to=rcpt, body=(b"z" * 60 + b"\r\n") * 80))
    relay.worker()
    assert postfix.held_for(rcpt, timeout=0.5) == []
    assert relay.state(qid) == "failed"
    assert relay.rcpt(qid, rcpt)["status"] == "5.3.4"


def test_postfix_without_smtputf8(relay, postfix):
    rcpt = "j\u00f6rg-%s@pf-noutf8.test" % relay.dbname
    qid = relay.submit(rcpt, message(to=rcpt), params="SMTPUTF8")
    relay.worker()
    assert relay.state(qid) == "failed"
    assert relay.rcpt(qid, rcpt)["status"] == "5.6.7"


def test_postfix_with_smtputf8(relay, postfix):
    rcpt = "j\u00f6rg-%s@pf.test" % relay.dbname
    msg = message(to=rcpt)
    qid = relay.submit(rcpt, msg, params="SMTPUTF8")
    relay.worker()
    ((env, content),) = postfix.held_for(rcpt)
    assert content.endswith(msg)
    assert relay.state(qid) == "done"
