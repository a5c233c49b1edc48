"""`make install` and `make uninstall` into a DESTDIR: FHS places, modes,
paths inside installed files following PREFIX, the configuration copied
only when there is none (mode 640) and never removed, the installed units
verifiable, the installed programs finding their modules and templates, and
uninstall removing everything install put. make is told the programs are up
to date (-o), so the test never rebuilds bin/ under other tests' feet."""
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import TOP
from deploy_helpers import ALICE, UNITS, deployenv  # noqa: F401

PROGRAMS = ["bin/mailcell", "bin/smtp-session", "bin/pop3-session", "bin/relay-worker",
            "lib/mailcell/store.so", "lib/mailcell/inbound.so", "lib/mailcell/tls.so"]
SYSTEMD_UNITS = sorted(p.name for p in UNITS.iterdir()
                       if p.suffix in (".socket", ".service", ".timer", ".path"))


def make(target, destdir, prefix=None):
    missing = [p for p in PROGRAMS if not (TOP / p).exists()]
    if missing:
        pytest.skip("not built: %s (make first)" % " ".join(missing))
    argv = ["make", "--no-print-directory", "-C", str(TOP), target, "DESTDIR=%s" % destdir]
    if prefix:
        argv.append("PREFIX=%s" % prefix)
    for p in PROGRAMS:
        argv += ["-o", p]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, "make %s:\n%s%s" % (target, r.stdout, r.stderr)
    return r.stdout


def files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if not p.is_dir())


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_install_prefix_usr(tmp_path, deployenv):
    dest = tmp_path / "stage"
    out = make("install", dest, "/usr")
    u = dest / "usr"
    for prog in ("mailcell", "smtp-session", "pop3-session", "relay-worker"):
        assert mode(u / "bin" / prog) == 0o755
    for mod in ("store.so", "inbound.so", "tls.so"):
        assert (u / "lib/mailcell" / mod).is_file()
    assert mode(u / "lib/mailcell/mailcell-inetd") == 0o755
    for t in (TOP / "templates").iterdir():
        assert (u / "share/mailcell/templates" / t.name).read_bytes() == t.read_bytes()
    for name in SYSTEMD_UNITS:
        assert mode(u / "lib/systemd/system" / name) == 0o644
    assert (u / "lib/sysusers.d/mailcell.conf").is_file()
    assert (u / "lib/tmpfiles.d/mailcell.conf").is_file()
    assert (u / "share/doc/mailcell/README.md").is_file()
    for ex in ("inetd.conf", "xinetd.d/mailcell-smtp", "tcpserver/mailcell-smtp.run",
               "s6/mailcell-smtp/run", "s6/mailcell-smtp/log/run", "cron.d/mailcell-relay-worker",
               "mailcell.conf.example"):
        assert (u / "share/mailcell" / ex).is_file(), ex
    assert mode(u / "share/mailcell/s6/mailcell-smtp/run") == 0o755
    assert mode(u / "share/mailcell/tcpserver/mailcell-smtp.run") == 0o755

    # Paths follow PREFIX; the built-in templates_dir (/usr/local/...) is overridden.
    smtp = (u / "lib/systemd/system/mailcell-smtp@.service").read_text()
    assert "ExecStart=/usr/bin/smtp-session " in smtp and "/usr/local" not in smtp
    assert "/usr/lib/mailcell/mailcell-inetd" in (u / "share/mailcell/inetd.conf").read_text()
    conf = dest / "etc/mailcell/mailcell.conf"
    assert mode(conf) == 0o640 and mode(conf.parent) == 0o750
    assert "\ntemplates_dir = /usr/share/mailcell/templates\n" in conf.read_text()
    assert "wrote" in out

    # The installed units verify with their installed programs.
    if shutil.which("systemd-analyze"):
        vdir = tmp_path / "verify"
        vdir.mkdir()
        for name in SYSTEMD_UNITS:
            text = (u / "lib/systemd/system" / name).read_text()
            (vdir / name).write_text(text.replace("/usr/bin/", str(u / "bin") + "/"))
        r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                            *[str(vdir / n) for n in SYSTEMD_UNITS]],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == "", r.stderr

    # The installed session finds its modules (../lib/mailcell) and stores mail.
    env = deployenv
    script = (b"EHLO client.test\r\nMAIL FROM:<bob@example.net>\r\nRCPT TO:<%s>\r\n"
              b"DATA\r\nSubject: installed\r\n\r\nhi\r\n.\r\nQUIT\r\n" % ALICE.encode())
    r = subprocess.run([str(u / "bin/smtp-session"), "-c", str(env.conf), "--remote-ip",
                        "192.0.2.7"], input=script, capture_output=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "MONGOC_DISABLE_SHM": "1"})
    assert b"\r\n250 2.0.0 OK queued" in r.stdout, r.stdout + r.stderr
    assert env.db.messages.count_documents({"mailbox": ALICE}) == 1

    # A second install keeps the configuration the operator edited.
    conf.write_text("hostname = edited.example\n")
    out = make("install", dest, "/usr")
    assert conf.read_text() == "hostname = edited.example\n"
    assert "left as it is" in out

    # Uninstall removes all that install put, and only the configuration stays.
    make("uninstall", dest, "/usr")
    assert files(dest) == ["etc/mailcell/mailcell.conf"]


def test_install_default_prefix(tmp_path):
    """PREFIX=/usr/local: the units are installed as they are in units/, where
    systemd looks for an administrator's units; the example config keeps
    every key commented."""
    dest = tmp_path / "stage"
    make("install", dest)
    u = dest / "usr/local"
    for name in SYSTEMD_UNITS:
        assert (u / "lib/systemd/system" / name).read_text() == (UNITS / name).read_text()
    assert (u / "lib/mailcell/mailcell-inetd").read_text() == (UNITS / "mailcell-inetd").read_text()
    conf = (dest / "etc/mailcell/mailcell.conf").read_text()
    assert conf == (UNITS / "mailcell.conf.example").read_text()
    # Every file of units/ is installed somewhere (units/README.md aside).
    for f in UNITS.rglob("*"):
        rel = str(f.relative_to(UNITS))
        if f.is_dir() or rel == "README.md":
            continue
        if f.suffix in (".socket", ".service", ".timer", ".path"):
            where = u / "lib/systemd/system" / rel
        elif rel.startswith(("sysusers.d/", "tmpfiles.d/")):
            where = u / "lib" / rel
        elif rel == "mailcell-inetd":
            where = u / "lib/mailcell" / rel
        else:
            where = u / "share/mailcell" / rel
        assert where.is_file(), rel
    make("uninstall", dest)
    assert files(dest) == ["etc/mailcell/mailcell.conf"]
