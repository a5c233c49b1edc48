"""The files of units/ as files: systemd-analyze verify and an offline
security review of every systemd unit, the sysusers.d and tmpfiles.d files
applied to a scratch root, the flags and hardening each unit must carry, and
the same port -> program/flags mapping in every manager's files (systemd,
inetd, xinetd, tcpserver, s6). Running them is test_deploy_supervisors.py."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import BIN
from deploy_helpers import UNITS

SESSIONS = {
    # unit name: (port, program, flags)
    "smtp": (25, "smtp-session", []),
    "submission": (587, "smtp-session", ["--submission"]),
    "submissions": (465, "smtp-session", ["--tls", "--submission"]),
    "pop3": (110, "pop3-session", []),
    "pop3s": (995, "pop3-session", ["--tls"]),
}
SERVICE_NAMES = {25: "smtp", 587: "submission", 465: "submissions", 110: "pop3", 995: "pop3s"}
SYSTEMD_UNITS = sorted(p.name for p in UNITS.iterdir()
                       if p.suffix in (".socket", ".service", ".timer", ".path"))
HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "User": "mailcell", "Group": "mailcell",
}


def parse_unit(name):
    """{section: {key: [values...]}} of a unit file (repeated keys kept)."""
    out, sec = {}, None
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            sec = out.setdefault(line.strip("[]"), {})
            continue
        k, v = line.split("=", 1)
        sec.setdefault(k.strip(), []).append(v.strip())
    return out


def one(unit, section, key):
    vals = unit.get(section, {}).get(key)
    assert vals and len(vals) == 1, "%s= in [%s]: %r" % (key, section, vals)
    return vals[0]


def exec_argv(unit):
    return one(unit, "Service", "ExecStart").split()


def test_all_expected_units_exist():
    want = {"mailcell-%s.socket" % n for n in SESSIONS} | {"mailcell-%s@.service" % n for n in SESSIONS}
    want |= {"relay-worker.service", "relay-worker.timer", "relay-worker.path",
             "relay-worker-loop.service", "mailcell-gc.service", "mailcell-gc.timer"}
    assert want == set(SYSTEMD_UNITS)


def test_systemd_analyze_verify(tmp_path):
    """Every unit passes `systemd-analyze verify` without a single message.
    ExecStart= must name an existing executable, so the copies point at the
    repo's bin/ (the only change). verify does not resolve User=: the user
    is checked against sysusers.d in test_sysusers_and_tmpfiles."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    for name in SYSTEMD_UNITS:
        text = (UNITS / name).read_text().replace("/usr/local/bin/", str(BIN) + "/")
        (tmp_path / name).write_text(text)
    env = dict(os.environ, SYSTEMD_LOG_LEVEL="info")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        *[str(tmp_path / n) for n in SYSTEMD_UNITS]],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", \
        "systemd-analyze verify (rc %d):\n%s%s" % (r.returncode, r.stdout, r.stderr)


@pytest.mark.parametrize("name", [n for n in SYSTEMD_UNITS if n.endswith(".service")])
def test_security_exposure(tmp_path, name):
    """systemd's own review of the sandboxing, offline: every service rates
    "OK" (exposure 2.0 or less of 10)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    path = tmp_path / name
    path.write_text((UNITS / name).read_text().replace("/usr/local/bin/", str(BIN) + "/"))
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                        str(path)], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


def test_sysusers_and_tmpfiles(tmp_path):
    """sysusers.d makes the user the units name (in a scratch root, not on
    this machine), and tmpfiles.d then makes /run/mailcell owned by it."""
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None:
            pytest.skip(tool + " is not installed")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for f in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / f).write_text("")
    r = subprocess.run(["systemd-sysusers", "--root", str(root),
                        str(UNITS / "sysusers.d" / "mailcell.conf")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    users = {l.split(":")[0]: l.split(":") for l in (root / "etc/passwd").read_text().splitlines()}
    assert "mailcell" in users, (root / "etc/passwd").read_text()
    uid, gid, shell = int(users["mailcell"][2]), int(users["mailcell"][3]), users["mailcell"][6]
    assert uid < 1000 and shell.endswith("nologin")
    r = subprocess.run(["systemd-tmpfiles", "--root", str(root), "--create",
                        str(UNITS / "tmpfiles.d" / "mailcell.conf")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    st = os.stat(root / "run" / "mailcell")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, 0o750)
    # The relay trigger the path unit watches is the configuration default.
    example = (UNITS / "mailcell.conf.example").read_text()
    assert re.search(r"^#relay_trigger = /run/mailcell/relay.trigger$", example, re.M)


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_session_units(name):
    port, program, flags = SESSIONS[name]
    sock = parse_unit("mailcell-%s.socket" % name)
    assert one(sock, "Socket", "ListenStream") == str(port)
    assert one(sock, "Socket", "Accept") == "yes"
    assert int(one(sock, "Socket", "MaxConnections")) > 0
    assert int(one(sock, "Socket", "MaxConnectionsPerSource")) > 0
    assert one(sock, "Install", "WantedBy") == "sockets.target"

    svc = parse_unit("mailcell-%s@.service" % name)
    argv = exec_argv(svc)
    assert argv[0] == "/usr/local/bin/" + program
    assert argv[1:3] == ["-c", "/etc/mailcell/mailcell.conf"]
    assert argv[3:] == flags
    # The connection is stdin and stdout; the log goes to the journal.
    assert one(svc, "Service", "StandardInput") == "socket"
    assert one(svc, "Service", "StandardOutput") == "socket"
    assert one(svc, "Service", "StandardError") == "journal"
    for k, v in HARDENING.items():
        assert one(svc, "Service", k) == v, k
    assert "@system-service" in svc["Service"]["SystemCallFilter"]
    assert one(svc, "Service", "MemoryMax")
    assert one(svc, "Service", "RuntimeMaxSec")
    assert one(svc, "Service", "ReadWritePaths").lstrip("-") == "/run/mailcell"
    assert "MONGOC_DISABLE_SHM=1" in svc["Service"]["Environment"]


def test_relay_worker_units():
    once = parse_unit("relay-worker.service")
    assert one(once, "Service", "Type") == "oneshot"
    assert exec_argv(once)[0] == "/usr/local/bin/relay-worker"
    assert exec_argv(once)[-1] == "--once"
    timer = parse_unit("relay-worker.timer")
    assert one(timer, "Timer", "Unit") == "relay-worker.service"
    assert one(timer, "Install", "WantedBy") == "timers.target"
    path = parse_unit("relay-worker.path")
    assert one(path, "Path", "PathChanged") == "/run/mailcell/relay.trigger"
    assert one(path, "Path", "Unit") == "relay-worker.service"
    loop = parse_unit("relay-worker-loop.service")
    assert one(loop, "Service", "Type") == "notify"
    assert exec_argv(loop)[-2:] == ["--loop", "60"]
    for unit in (once, loop):
        for k, v in HARDENING.items():
            assert one(unit, "Service", k) == v, k
        assert "MONGOC_DISABLE_SHM=1" in unit["Service"]["Environment"]
        assert one(unit, "Service", "ReadWritePaths").lstrip("-") == "/run/mailcell"


def _check_mapping(where, port, argv):
    name = SERVICE_NAMES[port]
    _, program, flags = SESSIONS[name]
    assert argv[0].endswith("/" + program), (where, argv)
    assert argv[1:] == ["-c", "/etc/mailcell/mailcell.conf"] + flags, (where, argv)


def test_inetd_lines():
    names = {"smtp": 25, "submission": 587, "submissions": 465, "pop3": 110, "pop3s": 995}
    seen = set()
    for line in (UNITS / "inetd.conf").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split()
        service, stype, proto, wait, user, server = f[:6]
        assert (stype, proto, user) == ("stream", "tcp", "mailcell")
        assert wait.startswith("nowait")
        assert server == "/usr/local/lib/mailcell/mailcell-inetd" and f[6] == "mailcell-inetd"
        assert f[7] == "mailcell-" + service
        _check_mapping("inetd.conf " + service, names[service], f[8:])
        seen.add(service)
    assert seen == set(names)


def test_xinetd_snippets():
    files = sorted((UNITS / "xinetd.d").iterdir())
    assert [f.name for f in files] == sorted("mailcell-" + n for n in SESSIONS)
    for f in files:
        attrs = dict(re.findall(r"^\s*(\w+)\s*=\s*(.*?)\s*$", f.read_text(), re.M))
        assert attrs["user"] == "mailcell" and attrs["wait"] == "no"
        assert attrs["server"] == "/usr/local/lib/mailcell/mailcell-inetd"
        args = attrs["server_args"].split()
        assert args[0] == f.name
        _check_mapping(f.name, int(attrs["port"]), args[1:])
        assert int(attrs["instances"]) > 0 and int(attrs["per_source"]) > 0


def _tcpserver_argv(text):
    """Port and session argv of the tcpserver line of a run script."""
    cmd = re.sub(r"\s*\\\n\s*", " ", text)
    m = re.search(r"tcpserver .* 0 (\d+) timeout -k \d+ \d+ (.*)", cmd)
    assert m, text
    return int(m.group(1)), m.group(2).split()


def test_tcpserver_and_s6_scripts():
    for name in SESSIONS:
        for path in (UNITS / "tcpserver" / ("mailcell-%s.run" % name),
                     UNITS / "s6" / ("mailcell-" + name) / "run"):
            text = path.read_text()
            assert os.access(path, os.X_OK), path
            port, argv = _tcpserver_argv(text)
            _check_mapping(str(path), port, argv)
            assert "MONGOC_DISABLE_SHM=1" in text and "exec 2>&1" in text
        log = UNITS / "s6" / ("mailcell-" + name) / "log" / "run"
        assert os.access(log, os.X_OK) and "s6-log" in log.read_text()
    relay = UNITS / "s6" / "mailcell-relay-worker" / "run"
    assert "relay-worker -c /etc/mailcell/mailcell.conf --loop" in relay.read_text()


def test_shell_scripts_parse():
    scripts = [UNITS / "mailcell-inetd"] + sorted((UNITS / "tcpserver").iterdir())
    scripts += sorted(p for p in (UNITS / "s6").rglob("run"))
    for s in scripts:
        r = subprocess.run(["sh", "-n", str(s)], capture_output=True, text=True)
        assert r.returncode == 0, "%s: %s" % (s, r.stderr)
        assert s.read_text().startswith("#!/bin/sh\n"), s
