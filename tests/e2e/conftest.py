"""Shared fixtures for the end-to-end tests: a real mailcell-devdb started in a
temporary directory, a config file per test with its own database, and a helper
that runs bin/mailcell the way an operator would."""
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
# The C programs under test: bin/, or a sanitizer build's (MAILCELL_BUILD=build/san).
_build = os.environ.get("MAILCELL_BUILD", "build/rel")
BIN = TOP / _build / "bin" if _build != "build/rel" else TOP / "bin"
DEVDB = TOP / "bin" / "mailcell-devdb"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("mailcell-devdb exited with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("mailcell-devdb did not listen on %d" % port)


class DevDB:
    """One mailcell-devdb process on a free loopback port."""

    def __init__(self, tmpdir):
        self.dir = Path(tmpdir)
        self.port = free_port()
        self.log = open(self.dir / "devdb.log", "w+")
        self.proc = subprocess.Popen(
            [str(DEVDB), "--listen", "127.0.0.1:%d" % self.port,
             "--dir", str(self.dir / "data")],
            stdout=subprocess.DEVNULL, stderr=self.log)
        wait_port(self.port, self.proc)

    @property
    def uri(self):
        return "mongodb://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def devdb(tmp_path_factory):
    db = DevDB(tmp_path_factory.mktemp("devdb"))
    yield db
    db.stop()


class Mailcell:
    """Runs bin/mailcell with this test's config file."""

    def __init__(self, conf):
        self.conf = conf

    def __call__(self, *args, input=None, env=None, timeout=30):
        return subprocess.run([str(BIN / "mailcell"), "-c", str(self.conf), *args],
                              input=input, capture_output=True, text=True,
                              env=env, timeout=timeout)

    def ok(self, *args, input=None):
        r = self(*args, input=input)
        assert r.returncode == 0, "mailcell %s failed: %s" % (" ".join(args), r.stderr)
        assert r.stderr == ""
        return r.stdout


def write_conf(path, uri, database, extra=""):
    path.write_text("# test configuration\nmongodb_uri = %s\ndatabase = %s\n"
                    "write_concern = 1\ndb_timeout = 2\nlog_target = stderr\ninbound_checks = no\n%s"
                    % (uri, database, extra))
    return path


@pytest.fixture
def dbname():
    return "e2e_" + uuid.uuid4().hex[:12]


@pytest.fixture
def mailcell(devdb, tmp_path, dbname):
    return Mailcell(write_conf(tmp_path / "mailcell.conf", devdb.uri, dbname))
