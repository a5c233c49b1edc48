"""Memcheck on representative sessions: an SMTP transaction that stores a
message (loading the store module at first use) and a POP3 session that
lists, reads and deletes it, each run under valgrind. Any memory error, or
memory definitely lost, fails the test. Skipped for sanitizer builds (ASan
and valgrind do not mix) and where valgrind is missing."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import BIN
from pop3_helpers import CLIENT_IP, SMTP_CLIENT_IP, pop3env, smtp_script, tls_cert  # noqa: F401

pytestmark = pytest.mark.skipif(
    "san" in os.environ.get("MAILCELL_BUILD", "") or shutil.which("valgrind") is None,
    reason="valgrind does not run ASan builds (or is not installed)")

VALGRIND = ["valgrind", "--tool=memcheck", "--leak-check=full",
            "--errors-for-leak-kinds=definite", "--error-exitcode=99",
            "--track-fds=no", "--num-callers=30"]


def run_checked(argv, script, log):
    r = subprocess.run(VALGRIND + ["--log-file=%s" % log] + argv, input=script,
                       capture_output=True, timeout=300)
    report = log.read_text(errors="replace")
    summary = re.search(r"ERROR SUMMARY: (\d+) errors", report)
    assert summary, "no valgrind summary:\n" + report[-3000:]
    assert summary.group(1) == "0" and r.returncode != 99, \
        "memcheck found errors:\n" + report[-6000:]
    lost = re.search(r"definitely lost: ([\d,]+) bytes", report)
    assert lost is None or lost.group(1) == "0", report[-6000:]
    return r.stdout


def test_smtp_and_pop3_sessions_are_memcheck_clean(pop3env, tmp_path):
    msg = (b"From: <bob@example.net>\r\nTo: <alice@example.org>\r\nSubject: memcheck\r\n"
           b"\r\n" + b"line of text\r\n" * 2000 + b".dot-stuffed line\r\n")
    smtp_out = run_checked(
        [str(BIN / "smtp-session"), "-c", str(pop3env.conf), "--remote-ip", SMTP_CLIENT_IP],
        smtp_script("bob@example.net", "alice@example.org", msg), tmp_path / "smtp.vg")
    assert b"\r\n250 2.0.0 OK queued" in smtp_out, smtp_out[-1000:]

    script = (b"USER alice@example.org\r\nPASS alice secret\r\nSTAT\r\nLIST\r\nUIDL\r\n"
              b"TOP 1 3\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n")
    pop_out = run_checked(
        [str(BIN / "pop3-session"), "-c", str(pop3env.conf), "--remote-ip", CLIENT_IP],
        script, tmp_path / "pop3.vg")
    assert b"Subject: memcheck\r\n" in pop_out
    assert b"\r\n..dot-stuffed line\r\n" in pop_out
    assert pop_out.rstrip().endswith(b"+OK mail.test POP3 server signing off (maildrop empty)") \
        or b"signing off" in pop_out.splitlines()[-1]
