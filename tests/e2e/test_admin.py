"""End-to-end tests of the operator tool bin/mailcell against a real dev
database: domains, users (hashed passwords read from stdin), aliases, the
queue and mailboxes, as an operator would use them from a shell."""
import pymongo


def test_domains(mailcell):
    assert mailcell.ok("domain", "list") == ""
    mailcell.ok("domain", "add", "example.org")
    mailcell.ok("domain", "add", "Other.Example")
    assert mailcell.ok("domain", "list").splitlines() == ["example.org", "other.example"]
    r = mailcell("domain", "add", "example.org")
    assert r.returncode != 0 and "already exists" in r.stderr
    r = mailcell("domain", "add", "bad..domain")
    assert r.returncode != 0 and "not a valid domain" in r.stderr
    mailcell.ok("domain", "remove", "other.example")
    assert mailcell.ok("domain", "list").splitlines() == ["example.org"]
    r = mailcell("domain", "remove", "other.example")
    assert r.returncode == 1 and "not found" in r.stderr


def test_users(mailcell, devdb, dbname):
    mailcell.ok("domain", "add", "example.org")
    mailcell.ok("user", "add", "Alice@Example.ORG", "--name", "Alice Liddell",
                input="wonder land\n")
    mailcell.ok("user", "add", "bob@example.org", input="builder")
    lines = mailcell.ok("user", "list").splitlines()
    assert lines == ["alice@example.org\tenabled\tAlice Liddell",
                     "bob@example.org\tenabled\t"]
    # Stored as a yescrypt hash, never as the password itself.
    doc = pymongo.MongoClient(devdb.uri)[dbname].users.find_one({"_id": "alice@example.org"})
    assert doc["password"].startswith("$y$")
    assert "wonder" not in doc["password"]

    r = mailcell("user", "add", "alice@example.org", input="again\n")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = mailcell("user", "add", "carol@unknown.example", input="pw\n")
    assert r.returncode == 1 and "not a local domain" in r.stderr
    for bad in ("no-at-sign", "a@b@c", "<x@example.org>", "x@", "@example.org",
                "sp ace@example.org", "x@[192.0.2.1]"):
        r = mailcell("user", "add", bad, input="pw\n")
        assert r.returncode == 1 and "not a valid address" in r.stderr, bad
    r = mailcell("user", "add", "dave@example.org", input="")
    assert r.returncode == 1 and "empty password" in r.stderr
    # There is no way to give a password in argv.
    r = mailcell("user", "add", "dave@example.org", "--password", "x")
    assert r.returncode == 2


def test_user_passwd_and_state(mailcell, devdb, dbname):
    users = pymongo.MongoClient(devdb.uri)[dbname].users
    mailcell.ok("domain", "add", "example.org")
    mailcell.ok("user", "add", "alice@example.org", input="first\n")
    before = users.find_one({"_id": "alice@example.org"})["password"]
    mailcell.ok("user", "passwd", "alice@example.org", input="second\n")
    after = users.find_one({"_id": "alice@example.org"})["password"]
    assert before != after and after.startswith("$y$")
    r = mailcell("user", "passwd", "ghost@example.org", input="x\n")
    assert r.returncode == 1 and "no such user" in r.stderr
    mailcell.ok("user", "disable", "alice@example.org")
    assert mailcell.ok("user", "list") == "alice@example.org\tdisabled\t\n"
    mailcell.ok("user", "enable", "alice@example.org")
    r = mailcell("domain", "remove", "example.org")
    assert r.returncode == 1 and "remove them first" in r.stderr
    mailcell.ok("user", "remove", "alice@example.org")
    mailcell.ok("domain", "remove", "example.org")


def test_aliases(mailcell):
    mailcell.ok("domain", "add", "example.org")
    mailcell.ok("user", "add", "alice@example.org", input="pw\n")
    mailcell.ok("alias", "add", "team@example.org", "alice@example.org", "x@remote.example")
    mailcell.ok("alias", "add", "team@example.org", "y@remote.example", "alice@example.org")
    mailcell.ok("alias", "add", "postmaster@example.org", "alice@example.org")
    assert mailcell.ok("alias", "list").splitlines() == [
        "postmaster@example.org\talice@example.org",
        "team@example.org\talice@example.org, x@remote.example, y@remote.example"]
    r = mailcell("alias", "add", "alice@example.org", "bob@example.org")
    assert r.returncode == 1 and "already exists as a user" in r.stderr
    r = mailcell("alias", "add", "x@elsewhere.example", "alice@example.org")
    assert r.returncode == 1 and "not a local domain" in r.stderr
    r = mailcell("alias", "add", "z@example.org", "not an address")
    assert r.returncode == 1 and "not a valid address" in r.stderr
    r = mailcell("alias", "add", "z@example.org")
    assert r.returncode == 2
    mailcell.ok("alias", "remove", "team@example.org")
    assert mailcell.ok("alias", "list") == "postmaster@example.org\talice@example.org\n"
    r = mailcell("alias", "remove", "team@example.org")
    assert r.returncode == 1 and "not found" in r.stderr


def test_queue_and_mailbox(mailcell, devdb, dbname):
    """Queue items made the way a submission session will make them."""
    db = pymongo.MongoClient(devdb.uri)[dbname]
    assert mailcell.ok("queue", "list") == ""
    import datetime
    from bson import ObjectId
    now = datetime.datetime.now(datetime.timezone.utc)
    item = ObjectId()
    db.outbound.insert_one({"_id": item, "state": "queued", "created": now,
                            "next_attempt": now, "lease_until": now, "attempts": 0,
                            "sender": "alice@example.org",
                            "recipients": [{"address": "x@remote.example", "state": "pending"},
                                           {"address": "y@remote.example", "state": "pending"}],
                            "body": ObjectId(), "log": []})
    line = mailcell.ok("queue", "list").rstrip("\n")
    fields = line.split("\t")
    assert fields[0] == str(item) and fields[1] == "queued"
    assert fields[3] == "<alice@example.org>"
    assert fields[4] == "x@remote.example,y@remote.example"
    assert "x@remote.example" in mailcell.ok("queue", "show", str(item))
    mailcell.ok("queue", "hold", str(item))
    assert mailcell.ok("queue", "list").split("\t")[1] == "held"
    r = mailcell("queue", "retry", str(item))
    assert r.returncode == 1 and "held" in r.stderr
    mailcell.ok("queue", "release", str(item))
    assert mailcell.ok("queue", "list").split("\t")[1] == "queued"
    mailcell.ok("queue", "retry", str(item))
    mailcell.ok("queue", "delete", str(item))
    assert mailcell.ok("queue", "list") == ""
    r = mailcell("queue", "show", str(item))
    assert r.returncode == 1 and "no such queue item" in r.stderr
    r = mailcell("queue", "show", "zzz")
    assert r.returncode == 1 and "malformed id" in r.stderr

    mailcell.ok("domain", "add", "example.org")
    mailcell.ok("user", "add", "alice@example.org", input="pw\n")
    assert mailcell.ok("mailbox", "list", "alice@example.org") == ""
    db.messages.insert_one({"mailbox": "alice@example.org", "uidl": "u1", "size": 1234,
                            "received": now, "body": ObjectId(), "sender": "bob@x.example",
                            "quarantined": False})
    fields = mailcell.ok("mailbox", "list", "alice@example.org").rstrip("\n").split("\t")
    assert fields[1] == "1234" and fields[3] == "<bob@x.example>"
    r = mailcell("mailbox", "list", "ghost@example.org")
    assert r.returncode == 1 and "no such user" in r.stderr


def test_usage_errors(mailcell):
    for args in ([], ["frobnicate"], ["domain"], ["domain", "add"], ["user", "list", "x"],
                 ["queue", "show"], ["mailbox", "list"]):
        r = mailcell(*args)
        assert r.returncode == 2, args
        assert "usage: mailcell" in r.stderr
        assert r.stdout == ""


def test_db_init_creates_indexes(mailcell, devdb, dbname):
    db = pymongo.MongoClient(devdb.uri)[dbname]
    out = mailcell.ok("db", "init").splitlines()
    # One line per index, collection first; running it again changes nothing.
    assert "messages\tmailbox_received" in out and "outbound\tstate_next_attempt" in out
    assert mailcell.ok("db", "init").splitlines() == out
    names = {c: {i["name"] for i in db[c].list_indexes()} for c in db.list_collection_names()}
    for line in out:
        coll, name = line.split("\t")
        assert name in names.get(coll, set()), line
    chunks = {i["name"]: i for i in db["bodies.chunks"].list_indexes()}
    assert chunks["files_id_1_n_1"].get("unique") is True
    r = mailcell("db", "frobnicate")
    assert r.returncode == 2


def test_domain_add_creates_indexes(mailcell, devdb, dbname):
    mailcell.ok("domain", "add", "example.org")
    db = pymongo.MongoClient(devdb.uri)[dbname]
    assert "mailbox_received" in {i["name"] for i in db.messages.list_indexes()}


def test_db_gc_removes_only_what_a_crash_left(mailcell, devdb, dbname):
    import datetime
    from bson import ObjectId
    db = pymongo.MongoClient(devdb.uri)[dbname]
    now = datetime.datetime.now(datetime.timezone.utc)
    old = now - datetime.timedelta(days=2)

    def oid(when, n):   # unique ObjectIds created at a given time
        return ObjectId(ObjectId.from_datetime(when).binary[:4] + bytes([n]) * 8)

    def chunks(fid, count=3):
        db["bodies.chunks"].insert_many([{"_id": "%s-%d" % (fid, n), "files_id": fid, "n": n,
                                          "data": b"x" * 10} for n in range(count)])

    def files(fid, when):
        db["bodies.files"].insert_one({"_id": fid, "length": 30, "chunkSize": 10,
                                       "uploadDate": when, "filename": "m",
                                       "metadata": {"chunk_ids": "files_id-n"}})
    unfinished_old, unfinished_new = oid(old, 1), oid(now, 2)
    orphan, in_mailbox, in_queue, fresh = oid(old, 3), oid(old, 4), oid(old, 5), oid(now, 6)
    chunks(unfinished_old)
    chunks(unfinished_new)                  # a DATA in progress right now
    for fid in (orphan, in_mailbox, in_queue):
        chunks(fid)
        files(fid, old)
    chunks(fresh)
    files(fresh, now)                       # finished, entries about to be inserted
    db.messages.insert_one({"mailbox": "a@example.org", "body": in_mailbox})
    db.outbound.insert_one({"state": "queued", "body": in_queue})

    assert mailcell.ok("db", "gc").splitlines() == ["unfinished\t1", "unreferenced\t1"]
    left = {d["files_id"] for d in db["bodies.chunks"].find()}
    assert left == {unfinished_new, in_mailbox, in_queue, fresh}
    assert {d["_id"] for d in db["bodies.files"].find()} == {in_mailbox, in_queue, fresh}
    assert mailcell.ok("db", "gc").splitlines() == ["unfinished\t0", "unreferenced\t0"]

    r = mailcell("db", "gc", "--older-than", "5m")
    assert r.returncode == 1 and "at least 10m" in r.stderr
    r = mailcell("db", "gc", "--older-than", "soon")
    assert r.returncode == 1
    assert mailcell.ok("db", "gc", "--older-than", "1h").splitlines()[0] == "unfinished\t0"
