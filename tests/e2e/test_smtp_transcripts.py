"""Golden transcripts of bin/smtp-session.

Each tests/e2e/transcripts/NAME.in is a client script (CRLF line ends) piped
whole into `smtp-session -c CONF --remote-ip 192.0.2.10` (so every command is
pipelined behind the previous one); its output must match NAME.out line for
line, CRLF included. The database is the one of smtp_helpers.smtpenv:
example.org with alice, bob and carol, the aliases team@ (alice and
x@remote.example), sales@ (bob) and postmaster@ (bob); the configuration has
hostname mail.test, max_message_size 1048576 and max_recipients 5.

Placeholders in .out files stand for what changes from run to run or is the
server's free choice of words:
  {ID1} {ID2} ...  a queue id (letters and digits); different numbers must be
                   different ids
  {*}              any text up to the end of the line

After each transcript, what was stored must match EXPECT below: the number of
messages per mailbox, the number of outbound (relay queue) entries, and no
message body left in GridFS that no message or queue entry refers to.

To see the output of a transcript while writing one:
  SMTP_TRANSCRIPT_SHOW=1 python3 -m pytest -q tests/e2e/test_smtp_transcripts.py -k NAME
"""
import os
import re
from pathlib import Path

import pytest

from smtp_helpers import ENH_RE, parse_replies, smtp_cert, smtpenv  # noqa: F401

DIR = Path(__file__).resolve().parent / "transcripts"

PLAIN_AUTH = {"allow_plaintext_auth": "yes"}
# Configuration keys and command-line arguments per transcript, where they differ.
CONF = {
    "ehlo_plaintext_auth": PLAIN_AUTH,
    "auth_plain": PLAIN_AUTH,
    "auth_plain_continuation": PLAIN_AUTH,
    "auth_variants": PLAIN_AUTH,
    "submission_requires_auth": PLAIN_AUTH,
    # Errors of every kind count toward max_errors; the 4th command gets 421.
    "max_errors_mixed": {"max_errors": "3"},
}
ARGS = {
    "submission_requires_auth": ["--submission"],
}
# What must be stored afterwards: ({mailbox: messages}, outbound entries).
EXPECT = {
    "helo": ({"alice@example.org": 1}, 0),
    "relay_tricks": ({"alice@example.org": 1}, 0),
    # alice, sales@ (bob), postmaster (bob), bob, carol: one copy per mailbox;
    # team@ and Postmaster@ came after the fifth recipient and were refused.
    "recipients": ({"alice@example.org": 1, "bob@example.org": 1, "carol@example.org": 1}, 0),
    "data_dot": ({"alice@example.org": 1}, 0),
    "bdat": ({"alice@example.org": 2}, 0),
    "bdat_errors": ({"alice@example.org": 1}, 0),
    "auth_plain": ({"bob@example.org": 1}, 1),
    "submission_requires_auth": ({"alice@example.org": 1}, 0),
}


def transcripts():
    return sorted(p.name[:-3] for p in DIR.glob("*.in"))


PLACEHOLDER = re.compile(r"\{(ID\d+|\*)\}")


def line_regex(expected, bound):
    """A regex for one expected line; ids already bound are literal."""
    out, pos, names = "", 0, []
    for m in PLACEHOLDER.finditer(expected):
        out += re.escape(expected[pos:m.start()])
        name = m.group(1)
        if name == "*":
            out += r"[^\r\n]*"
        elif name in bound:
            out += re.escape(bound[name])
        elif name in names:
            out += "(?P=g%d)" % names.index(name)
        else:
            out += "(?P<g%d>[0-9A-Za-z]+)" % len(names)
            names.append(name)
        pos = m.end()
    return re.compile(out + re.escape(expected[pos:]) + r"\Z"), names


def match_transcript(expected, actual):
    """Match output lines against expected lines; a failure text or None."""
    bound = {}
    exp = expected.split("\r\n")
    act = actual.split("\r\n")
    for i, e in enumerate(exp):
        if i >= len(act):
            return "output ended; expected line %d: %r" % (i + 1, e)
        rx, names = line_regex(e, bound)
        m = rx.match(act[i])
        if not m:
            return "line %d: expected %r, got %r" % (i + 1, e, act[i])
        for k, name in enumerate(names):
            value = m.group("g%d" % k)
            if value in bound.values():
                return "line %d: queue id %s used twice" % (i + 1, value)
            bound[name] = value
    if len(act) > len(exp):
        return "unexpected output from line %d: %r" % (len(exp) + 1, act[len(exp):])
    return None


def check_enhanced_codes(out):
    """Every reply but the greeting, EHLO/HELO and 3xx intermediate replies
    carries an enhanced status code of the reply's class (RFC 2034, 3463)."""
    replies = parse_replies(out)
    for r in replies[1:]:
        if r.code // 100 == 3 or r.lines[0].startswith("mail.test"):
            continue   # 354/334, or the EHLO reply (its first line names the host)
        for line in r.lines:
            m = ENH_RE.match(line)
            assert m and int(m.group(1)) == r.code // 100, \
                "reply without a matching enhanced status code: %r" % r


@pytest.mark.parametrize("name", transcripts())
def test_transcript(smtpenv, name):
    script = (DIR / (name + ".in")).read_bytes()
    assert script.endswith(b"\r\n") and script.count(b"\n") == script.count(b"\r\n"), \
        "%s.in: client scripts use CRLF line ends" % name
    conf = smtpenv.write_conf(**CONF[name]) if name in CONF else None
    out = smtpenv.pipe(script, conf=conf, args=ARGS.get(name, ()))
    text = out.decode("utf-8", "replace")
    if os.environ.get("SMTP_TRANSCRIPT_SHOW"):
        print("\n--- %s output ---\n%s" % (name, text))
    assert out.count(b"\n") == out.count(b"\r\n"), \
        "%s: every reply line must end in CRLF:\n%s" % (name, text)
    golden = (DIR / (name + ".out")).read_bytes().decode()
    failure = match_transcript(golden, text)
    assert failure is None, "%s: %s\n--- full output ---\n%s" % (name, failure, text)
    check_enhanced_codes(out)

    mailboxes, n_outbound = EXPECT.get(name, ({}, 0))
    stored = {}
    for m in smtpenv.messages():
        stored[m["mailbox"]] = stored.get(m["mailbox"], 0) + 1
    assert stored == mailboxes, "%s: stored messages per mailbox" % name
    outbound = smtpenv.outbound()
    assert len(outbound) == n_outbound, "%s: outbound entries %r" % (name, outbound)
    bodies = {m["body"] for m in smtpenv.messages()} | {o["body"] for o in outbound}
    queued = text.count(" OK queued as ")
    assert len(bodies) == queued, "%s: one stored body per accepted message" % name
    assert smtpenv.body_files() == queued, "%s: message bodies left behind in GridFS" % name
