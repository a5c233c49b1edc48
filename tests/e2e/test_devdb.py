"""End-to-end tests of the dev database and of what the operator sees when
the database goes away: a clear temporary error within the timeout, never a
hang or a crash; and mailcell-devdb stops cleanly on SIGTERM."""
import time

from conftest import DevDB, Mailcell, write_conf


def test_killed_database_gives_clear_error(tmp_path):
    db = DevDB(tmp_path)
    m = Mailcell(write_conf(tmp_path / "m.conf", db.uri, "killed"))
    m.ok("domain", "add", "example.org")
    db.proc.kill()
    db.proc.wait()
    db.log.close()
    t0 = time.time()
    r = m("domain", "list", timeout=30)
    took = time.time() - t0
    assert r.returncode == 75, (r.returncode, r.stderr)   # EX_TEMPFAIL
    assert r.stderr.startswith("mailcell: database unavailable")
    assert len(r.stderr.splitlines()) == 1
    assert took < 10
    # Writes fail the same way, without a crash.
    r = m("user", "add", "a@example.org", input="pw\n")
    assert r.returncode == 75 and "database unavailable" in r.stderr


def test_devdb_stops_cleanly_and_keeps_data(tmp_path):
    db = DevDB(tmp_path)
    m = Mailcell(write_conf(tmp_path / "m.conf", db.uri, "persist"))
    m.ok("domain", "add", "kept.example")
    assert db.stop() == 0
    log = (tmp_path / "devdb.log").read_text()
    assert "stopped" in log
    again = DevDB(tmp_path)   # same data directory
    try:
        m2 = Mailcell(write_conf(tmp_path / "m2.conf", again.uri, "persist"))
        assert m2.ok("domain", "list") == "kept.example\n"
    finally:
        assert again.stop() == 0


def test_devdb_usage():
    import subprocess
    from conftest import DEVDB
    r = subprocess.run([str(DEVDB)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage: mailcell-devdb --listen HOST:PORT --dir DIR" in r.stderr


def test_stalled_database_is_a_bounded_temporary_error(tmp_path):
    """A database that accepts connections but never answers (stopped with
    SIGSTOP) must not hang the tool: db_timeout bounds the wait."""
    import signal
    db = DevDB(tmp_path)
    try:
        m = Mailcell(write_conf(tmp_path / "m.conf", db.uri, "stalled"))
        m.ok("domain", "add", "example.org")
        db.proc.send_signal(signal.SIGSTOP)
        t0 = time.time()
        r = m("domain", "list", timeout=60)
        took = time.time() - t0
        assert r.returncode == 75, (r.returncode, r.stderr)
        assert "database unavailable" in r.stderr
        assert took < 15
    finally:
        db.proc.send_signal(signal.SIGCONT)
        assert db.stop() == 0
