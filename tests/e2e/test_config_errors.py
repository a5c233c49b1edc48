"""End-to-end tests of configuration handling as an operator meets it: the
file is found by -c, $MAILCELL_CONFIG or the default path, and every mistake
is one line naming the file, line and key, with a non-zero exit."""
import os
import re
import subprocess

from conftest import BIN, TOP, write_conf


def run(args, env=None):
    e = dict(os.environ)
    e.pop("MAILCELL_CONFIG", None)
    e.update(env or {})
    return subprocess.run([str(BIN / "mailcell"), *args], capture_output=True, text=True,
                          env=e, timeout=30)


def one_line_error(r):
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_unknown_key(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("database = x\n# fine\nmax_recipents = 5\n")
    err = one_line_error(run(["-c", str(conf), "domain", "list"]))
    assert err == "mailcell: %s:3: unknown key 'max_recipents'" % conf


def test_bad_value(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("allow_plaintext_auth = sometimes\n")
    err = one_line_error(run(["-c", str(conf), "user", "list"]))
    assert err.startswith("mailcell: %s:1: bad value for key 'allow_plaintext_auth'" % conf)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.conf"
    err = one_line_error(run(["-c", str(missing), "domain", "list"]))
    assert str(missing) in err and "No such file" in err


def test_env_variable_is_used(tmp_path, devdb, dbname):
    conf = write_conf(tmp_path / "env.conf", devdb.uri, dbname)
    r = run(["domain", "add", "env.example"], env={"MAILCELL_CONFIG": str(conf)})
    assert r.returncode == 0, r.stderr
    r = run(["domain", "list"], env={"MAILCELL_CONFIG": str(conf)})
    assert r.stdout == "env.example\n"
    # -c wins over the environment.
    bad = tmp_path / "bad.conf"
    bad.write_text("nonsense = 1\n")
    r = run(["-c", str(conf), "domain", "list"], env={"MAILCELL_CONFIG": str(bad)})
    assert r.stdout == "env.example\n"


def test_example_config_parses(tmp_path, devdb, dbname):
    """units/mailcell.conf.example documents every key; uncommented, it is valid."""
    example = (TOP / "units" / "mailcell.conf.example").read_text()
    lines = []
    for line in example.splitlines():
        if re.match(r"^#[a-z_]+ =", line):
            line = line[1:]
        lines.append(line)
    conf = tmp_path / "example.conf"
    text = "\n".join(lines) + "\n"
    text = text.replace("mongodb_uri = mongodb://127.0.0.1:27017", "mongodb_uri = " + devdb.uri)
    text = text.replace("database = mailcell", "database = " + dbname)
    text = text.replace("write_concern = majority", "write_concern = 1")
    conf.write_text(text)
    keys = [l.split("=")[0].strip() for l in text.splitlines()
            if l and not l.startswith("#") and "=" in l]
    for k in ("hostname", "mongodb_uri", "database", "tls_cert", "tls_key",
              "max_message_size", "max_recipients", "templates_dir", "relay_host"):
        assert k in keys
    r = run(["-c", str(conf), "domain", "list"])
    assert r.returncode == 0, r.stderr
