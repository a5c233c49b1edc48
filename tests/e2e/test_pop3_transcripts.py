"""Golden transcripts of bin/pop3-session.

Each tests/e2e/pop3_transcripts/NAME.in is a client script (CRLF line ends)
piped whole into `pop3-session -c CONF --remote-ip 192.0.2.10`; its output
must match NAME.out line for line, CRLF included. A transcript in several
steps (NAME.1.in, NAME.2.in, ...) runs its steps one after another against
the same mailbox, so that a later session sees what an earlier one did.

Before each transcript the mailbox alice@example.org receives the three
messages below through bin/smtp-session; bob@example.org is empty and
carol@example.org is disabled (see pop3_helpers.pop3env).

Placeholders in .out files stand for what changes from run to run:
  {U1} {U2} ...   a UIDL value (printable, 1-70 octets)
  {S1} {T} {N..}  a number
  {ID1} ...       an SMTP queue id;   {DATE1} ... the rest of a line
  {TRACE}         a whole line: zero or more trace header lines (Return-Path,
                  Received, Authentication-Results and their continuations)
The same placeholder must stand for the same value wherever it appears, and
different {U..} placeholders for different values.
"""
import re
from pathlib import Path

import pytest

from pop3_helpers import TRACE_RE, pop3env, tls_cert  # noqa: F401

DIR = Path(__file__).resolve().parent / "pop3_transcripts"

MESSAGES = [
    # 1: dot lines (SMTP dot-stuffs them; POP3 must stuff them again)
    b"From: Bob <bob@example.net>\r\nTo: alice@example.org\r\nSubject: first\r\n"
    b"\r\nline one\r\n.leading dot\r\n.\r\n..two dots\r\nline five\r\n",
    # 2: a folded header, a short body
    b"Subject: second\r\nX-Folded: a\r\n b\r\n\r\nshort body\r\n",
    # 3: three body lines
    b"Subject: third\r\n\r\nx\r\ny\r\nz\r\n",
]

# Configuration per transcript, where it differs from pop3env's.
CONF = {
    "plaintext_refused": {"allow_plaintext_auth": "no"},
    "max_errors": {"max_errors": "3"},
}


def transcripts():
    names = sorted({p.name.split(".")[0] for p in DIR.glob("*.in")})
    return names


def steps(name):
    single = DIR / (name + ".in")
    if single.exists():
        return [(single, DIR / (name + ".out"))]
    ins = sorted(DIR.glob(name + ".*.in"), key=lambda p: int(p.name.split(".")[1]))
    return [(p, p.with_name(p.name[:-3] + ".out")) for p in ins]


PLACEHOLDER = re.compile(r"\{([A-Z]+)(\d*)\}")
KIND = {"U": r"[\x21-\x7e]{1,70}", "S": r"\d+", "T": r"\d+", "N": r"\d+",
        "ID": r"[0-9A-Za-z]+", "DATE": r"[^\r\n]+"}


def line_regex(expected, bound):
    """A regex for one expected line; placeholders already bound are literal."""
    out, pos, names = "", 0, []
    for m in PLACEHOLDER.finditer(expected):
        out += re.escape(expected[pos:m.start()])
        name = m.group(0)
        if name in bound:
            out += re.escape(bound[name])
        elif name in names:
            out += "(?P=g%d)" % names.index(name)
        else:
            out += "(?P<g%d>%s)" % (len(names), KIND[m.group(1)])
            names.append(name)
        pos = m.end()
    return re.compile(out + re.escape(expected[pos:]) + r"\Z"), names


def match_transcript(expected, actual, bound):
    """Match output lines against expected lines; returns a failure text or None."""
    exp = expected.split("\r\n")
    act = actual.split("\r\n")
    i = j = 0
    while i < len(exp):
        e = exp[i]
        if e == "{TRACE}":
            while j < len(act) and (TRACE_RE.match(act[j].encode()) or
                                    (act[j][:1] in (" ", "\t") and j > 0)):
                j += 1
            i += 1
            continue
        if j >= len(act):
            return "output ended; expected line %d: %r" % (i + 1, e)
        rx, names = line_regex(e, bound)
        m = rx.match(act[j])
        if not m:
            return "line %d: expected %r, got %r" % (j + 1, e, act[j])
        for k, name in enumerate(names):
            bound[name] = m.group("g%d" % k)
        i += 1
        j += 1
    if j < len(act):
        return "unexpected output from line %d: %r" % (j + 1, act[j:])
    return None


@pytest.mark.parametrize("name", transcripts())
def test_transcript(pop3env, name):
    for m in MESSAGES:
        pop3env.deliver("alice@example.org", m)
    conf = pop3env.write_conf("t.conf", **CONF[name]) if name in CONF else None
    bound = {}
    for script, golden in steps(name):
        raw_in = script.read_bytes()
        assert raw_in.endswith(b"\r\n") and raw_in.count(b"\n") == raw_in.count(b"\r\n"), \
            "%s: client scripts use CRLF line ends" % script.name
        out = pop3env.pipe(raw_in, conf=conf)
        text = out.decode("utf-8", "replace")
        assert out.count(b"\n") == out.count(b"\r\n"), \
            "%s: every reply line must end in CRLF:\n%s" % (script.name, text)
        failure = match_transcript(golden.read_bytes().decode(), text, bound)
        assert failure is None, "%s: %s\n--- full output ---\n%s" % (
            script.name, failure, text)
    uidls = {v for k, v in bound.items() if k.startswith("{U")}
    assert len(uidls) == len([k for k in bound if k.startswith("{U")]), \
        "different messages must have different UIDLs: %r" % bound
