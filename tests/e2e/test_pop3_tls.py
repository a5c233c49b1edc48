"""TLS for POP3: STLS on the plain port (RFC 2595) and implicit TLS with
--tls (port 995), over TCP through systemd-socket-activate, with Python's
poplib and raw sockets. The server's configuration refuses plaintext logins
(allow_plaintext_auth = no) so that TLS is what makes a login possible."""
import poplib
import socket
import ssl

import pytest

from pop3_helpers import LineReader, pop3env, simple_message, tls_cert  # noqa: F401

ALICE, ALICE_PW = "alice@example.org", "alice secret"


def client_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
def strict(pop3env):
    """pop3env's configuration without plaintext logins."""
    return pop3env.write_conf("strict.conf", allow_plaintext_auth="no")


def test_stls_with_poplib_then_login(pop3env, strict):
    pop3env.deliver(ALICE, simple_message("over tls"))
    srv = pop3env.server(strict)
    p = poplib.POP3("127.0.0.1", srv.port, timeout=30)
    assert p.getwelcome() == b"+OK mail.test POP3 mailcell ready"
    caps = p.capa()
    assert "STLS" in caps
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\].*STLS"):
        p.user(ALICE)
    assert p.stls(context=client_ctx()).startswith(b"+OK begin TLS negotiation")
    assert "STLS" not in p.capa(), "STLS must not be offered inside TLS"
    p.user(ALICE)
    assert p.pass_(ALICE_PW).startswith(b"+OK alice@example.org has 1 messages")
    resp, lines, _ = p.retr(1)
    assert b"Subject: over tls" in lines
    p.quit()


def test_implicit_tls_with_poplib(pop3env, strict):
    pop3env.deliver(ALICE, simple_message("pop3s"))
    srv = pop3env.server(strict, tls=True)
    p = poplib.POP3_SSL("127.0.0.1", srv.port, context=client_ctx(), timeout=30)
    assert p.getwelcome() == b"+OK mail.test POP3 mailcell ready"
    caps = p.capa()
    assert "STLS" not in caps and "USER" in caps and caps.get("SASL") == ["PLAIN"]
    with pytest.raises(poplib.error_proto):
        p._shortcmd("STLS")
    p.user(ALICE)
    p.pass_(ALICE_PW)
    assert p.stat()[0] == 1
    assert b"Subject: pop3s" in p.retr(1)[1]
    p.quit()


def test_implicit_tls_server_refuses_a_plaintext_client(pop3env, strict):
    srv = pop3env.server(strict, tls=True)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"CAPA\r\n")
        s.settimeout(10)
        data = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert b"+OK" not in data, "no POP3 in the clear on the implicit TLS port: %r" % data


def test_stls_discards_pipelined_commands(pop3env, strict):
    """STLS injection (RFC 2595, CVE-2011-0411 style): commands sent in the
    same packet as STLS must not be executed after the handshake."""
    srv = pop3env.server(strict)
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    r = LineReader(raw.fileno())
    assert r.readline().startswith(b"+OK ")
    raw.sendall(b"STLS\r\nUSER " + ALICE.encode() + b"\r\nCAPA\r\n")
    assert r.readline() == b"+OK begin TLS negotiation\r\n"
    assert r.buf == b"", "nothing may follow the STLS answer in the clear: %r" % r.buf
    tls = client_ctx().wrap_socket(raw, server_hostname="mail.test")
    tls.settimeout(10)
    tls.sendall(b"NOOP\r\n")
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = tls.recv(4096)
        assert chunk, "connection closed after the handshake"
        data += chunk
    assert data.startswith(b"-ERR"), (
        "the first answer inside TLS must be to NOOP; got %r (the injected "
        "USER/CAPA were executed)" % data)
    assert b"+OK send your password" not in data and b"capability" not in data
    # The injected USER left no trace: PASS has no user to go with.
    tls.sendall(b"PASS " + ALICE_PW.encode() + b"\r\n")
    reply = tls.recv(4096)
    assert reply.startswith(b"-ERR"), reply
    tls.sendall(b"QUIT\r\n")
    tls.close()


def test_stls_is_refused_after_login(pop3env):
    srv = pop3env.server()                    # plaintext allowed here
    p = poplib.POP3("127.0.0.1", srv.port, timeout=30)
    p.user(ALICE)
    p.pass_(ALICE_PW)
    assert "STLS" not in p.capa(), "STLS must not be offered after login"
    with pytest.raises(poplib.error_proto):
        p.stls(context=client_ctx())
    assert p.stat() == (0, 0), "the session goes on, in the clear"
    p.quit()


def test_auth_plain_inside_tls(pop3env, strict):
    srv = pop3env.server(strict, tls=True)
    with client_ctx().wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=10),
                                  server_hostname="mail.test") as s:
        def reply():
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(4096)
                assert chunk, "connection closed"
                data += chunk
            return data

        def cmd(line):
            s.sendall(line + b"\r\n")
            return reply()

        assert reply().startswith(b"+OK mail.test POP3 mailcell ready")
        assert cmd(b"AUTH PLAIN") == b"+ \r\n"
        assert cmd(b"AGFsaWNlQGV4YW1wbGUub3JnAGFsaWNlIHNlY3JldA==").startswith(
            b"+OK alice@example.org has 0 messages")
        assert cmd(b"QUIT").startswith(b"+OK")
