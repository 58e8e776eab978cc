#!/usr/bin/env python3
"""Test peer for the SSDB component: a real LevelDB writer and the checker of its copies.

An SSDB store is a directory holding two LevelDB databases, `data/` and `meta/`. This tool
writes such a store with the C++ LevelDB (through `plyvel`), the way a busy ssdb-server does,
and judges copies of it:

  write STORE --ack ACK [--seconds N] [--stop-file F] [--seed S] [--value-size B]
        [--batch OPS] [--rate OPS_PER_S] [--preload-mb X] [--write-buffer BYTES]
        [--max-file-size BYTES]
      Keeps writing SSDB-shaped keys (kv `k`, hash `h`/`H`, zset `s`/`z`/`Z`, queue `q`/`Q`,
      binlog 0x01+seq, a few unknown `T` keys) in WriteBatches: puts, overwrites, deletes,
      and now and then a small put into meta/. The write buffer is tiny so memtable flushes,
      log rotations and compactions happen all the time. After each batch is acknowledged
      (db.write returned) its ops are appended to ACK, one line each
      (`data put <hexkey> <hexvalue>` / `meta del <hexkey>`), and ACK is flushed and fsynced:
      ACK is always a prefix of the acknowledged writes. Before each batch is handed to
      LevelDB its ops are written to ACK.pending (write temp, rename), so a checker knows the
      one batch that may be applied but not yet acknowledged. Stops after N seconds, when F
      exists, or on SIGTERM/SIGINT. The ops are a pure function of the seed (and value size).
      --preload-mb first writes X MiB as `fill` does (not acknowledged, compacted), so that a
      copy of the store takes longer, as with a production-sized store.
  check COPY --ack ACK [--upto N] [--json]
      Opens a scratch copy of COPY/data and COPY/meta and checks that each of the first N
      ack lines is reflected: for each key, the last of those ops (value, or absence for a
      delete) or a value written by a later op (later ack lines or ACK.pending; a copy taken
      later may be newer) must be what the copy holds; a key no op ever wrote is also a
      violation (keys made by `fill` / --preload-mb, named `fill<seed>:`, are exempt).
      Exit 0 `ok ...`, 1 violations (`lost` / `wrong value` / `unexpected key`),
      2 the copy does not open or read (the LevelDB error is printed), 3 usage error.
  naive-copy STORE DEST
      shutil.copytree of the live store, tolerating files that vanish during the copy (as
      `cp -r` / `tar` do, with a warning): the documented, unsafe way. Exit 0.
  count STORE
      Key counts of a scratch copy per SSDB type as JSON: kv, hash, zset, queue, binlog,
      other, total (all data/ keys), plus meta (the keys of meta/, not in total).
  fill STORE --mb X [--seed S] [--value-size B] [--append]
      Writes about X MiB of new incompressible SSDB data (keys named after the seed, so
      another seed adds new keys), then compacts everything and closes; with --append it
      does not compact, so the new data stays in the log (and the existing tables untouched).

What it deliberately does not do: speak the SSDB network protocol or reproduce SSDB's exact
value encodings (scores, sizes and binlog records only have the right key shapes).
"""

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time

import plyvel

# Write tuning of the `write` subcommand: a 64 KiB memtable is flushed every few hundred ops,
# 256 KiB tables make many files, so compactions delete tables and logs rotate constantly.
WRITE_BUFFER = 64 * 1024
MAX_FILE = 256 * 1024

# Key space of the `write` workload: small enough that overwrites and deletes are frequent.
KV_NAMES = 20_000
HASH_NAMES = 300
HASH_FIELDS = 60
ZSET_NAMES = 100
ZSET_MEMBERS = 150
QUEUE_NAMES = 40
OTHER_NAMES = 200
BINLOG_WINDOW = 4_000

EXIT_OK, EXIT_VIOLATIONS, EXIT_UNOPENABLE, EXIT_USAGE = 0, 1, 2, 3


class Usage(Exception):
    """A usage error (exit 3; argparse's own exit 2 would read as `copy does not open`)."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def lp(name):
    """SSDB's one-byte length prefix."""
    return bytes([len(name)]) + name


class Workload:
    """SSDB-shaped ops with the secondary keys SSDB keeps (sizes, score index, binlog).

    Keeps a model of the store so that deletes and pops hit existing keys; deterministic for a
    given seed and value size.
    """

    def __init__(self, seed, value_size):
        self.rng = random.Random(seed)
        self.value_size = max(1, value_size)
        self.kv = set()
        self.hashes = {}  # name -> set(fields)
        self.zsets = {}  # name -> {member: score}
        self.queues = {}  # name -> [front, back)
        self.others = set()
        self.binlog_seq = 0
        self.binlog_first = 1
        self.batches = 0

    def value(self):
        n = self.rng.randint(self.value_size // 2 + 1, self.value_size * 3 // 2 + 1)
        return self.rng.randbytes(n)

    def binlog(self, out, cmd, key):
        self.binlog_seq += 1
        seq = self.binlog_seq.to_bytes(8, "big")
        out.append(("data", b"\x01" + seq, seq + b"\x00" + cmd + key))
        if self.binlog_seq - self.binlog_first >= BINLOG_WINDOW:
            out.append(("data", b"\x01" + self.binlog_first.to_bytes(8, "big"), None))
            self.binlog_first += 1

    def op(self, out):
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            key = b"k" + b"user:%d" % rng.randrange(KV_NAMES)
            if key in self.kv and rng.random() < 0.25:
                self.kv.discard(key)
                out.append(("data", key, None))
                cmd = b"d"
            else:
                self.kv.add(key)
                out.append(("data", key, self.value()))
                cmd = b"s"
        elif r < 0.65:
            name = b"h%d" % rng.randrange(HASH_NAMES)
            field = b"f%d" % rng.randrange(HASH_FIELDS)
            key = b"h" + lp(name) + b"=" + field
            fields = self.hashes.setdefault(name, set())
            if field in fields and rng.random() < 0.25:
                fields.discard(field)
                out.append(("data", key, None))
                cmd = b"D"
            else:
                fields.add(field)
                out.append(("data", key, self.value()))
                cmd = b"H"
            size_key = b"H" + name
            out.append(("data", size_key, b"%d" % len(fields) if fields else None))
        elif r < 0.80:
            name = b"z%d" % rng.randrange(ZSET_NAMES)
            member = b"m%d" % rng.randrange(ZSET_MEMBERS)
            members = self.zsets.setdefault(name, {})
            key = b"s" + lp(name) + lp(member)
            old = members.get(member)
            if old is not None:
                out.append(("data", self.score_key(name, member, old), None))
            if old is not None and rng.random() < 0.25:
                del members[member]
                out.append(("data", key, None))
                cmd = b"R"
            else:
                score = rng.randint(-1_000_000, 1_000_000)
                members[member] = score
                out.append(("data", key, b"%d" % score))
                out.append(("data", self.score_key(name, member, score), b""))
                cmd = b"Z"
            out.append(("data", b"Z" + name, b"%d" % len(members) if members else None))
        elif r < 0.95:
            name = b"q%d" % rng.randrange(QUEUE_NAMES)
            front, back = self.queues.setdefault(name, [0, 0])
            if back > front and rng.random() < 0.4:
                out.append(("data", b"q" + lp(name) + front.to_bytes(8, "big"), None))
                front += 1
                cmd = b"p"
            else:
                out.append(("data", b"q" + lp(name) + back.to_bytes(8, "big"), self.value()))
                back += 1
                cmd = b"P"
            self.queues[name] = [front, back]
            out.append(("data", b"Q" + name, b"%d" % (back - front) if back > front else None))
            key = b"q" + name
        else:
            key = b"T" + b"other:%d" % rng.randrange(OTHER_NAMES)
            if key in self.others and rng.random() < 0.3:
                self.others.discard(key)
                out.append(("data", key, None))
            else:
                self.others.add(key)
                out.append(("data", key, self.value()))
            return
        if rng.random() < 0.3:
            self.binlog(out, cmd, key)

    @staticmethod
    def score_key(name, member, score):
        sign = b"=" if score >= 0 else b"-"
        return b"z" + lp(name) + sign + (score % (1 << 64)).to_bytes(8, "big") + b"=" + member

    def batch(self, size):
        """The ops of the next batch: (db, key, value or None for a delete)."""
        out = []
        for _ in range(size):
            self.op(out)
        self.batches += 1
        if self.batches % 25 == 0:
            slave = b"slave.%d" % self.rng.randrange(4)
            if self.rng.random() < 0.2:
                out.append(("meta", slave, None))
            else:
                out.append(("meta", slave, b"last_seq=%d" % self.binlog_seq))
        return out


def ack_lines(ops):
    return "".join(
        f"{db} del {key.hex()}\n" if value is None else f"{db} put {key.hex()} {value.hex()}\n"
        for db, key, value in ops
    )


def apply(dbs, ops, sync=False):
    batches = {name: db.write_batch(sync=sync) for name, db in dbs.items()}
    for name, key, value in ops:
        if value is None:
            batches[name].delete(key)
        else:
            batches[name].put(key, value)
    for batch in batches.values():
        batch.write()


def open_db(path, create, **opts):
    return plyvel.DB(os.fspath(path), create_if_missing=create, **opts)


def cmd_write(args):
    stop = {"now": False}

    def on_signal(_signum, _frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    os.makedirs(args.store, exist_ok=True)
    if args.preload_mb:
        # With a big buffer (fast), before the workload starts.
        data = open_db(os.path.join(args.store, "data"), True, write_buffer_size=4 << 20)
        meta = open_db(os.path.join(args.store, "meta"), True)
        bulk_fill(data, meta, args.preload_mb, args.seed + 1000, 1000)
        data.compact_range()
        data.close()
        meta.close()
    opts = dict(write_buffer_size=args.write_buffer, max_file_size=args.max_file_size)
    dbs = {
        "data": open_db(os.path.join(args.store, "data"), True, **opts),
        "meta": open_db(os.path.join(args.store, "meta"), True, **opts),
    }
    work = Workload(args.seed, args.value_size)
    pending = args.ack + ".pending"
    pending_tmp = pending + ".tmp"
    started = time.monotonic()
    ops_done = 0
    batches = 0
    with open(args.ack, "a", encoding="ascii") as ack:
        while not stop["now"]:
            if args.seconds is not None and time.monotonic() - started >= args.seconds:
                break
            if args.stop_file and os.path.exists(args.stop_file):
                break
            ops = work.batch(work.rng.randint(args.batch // 2 + 1, args.batch * 3 // 2 + 1))
            lines = ack_lines(ops)
            with open(pending_tmp, "w", encoding="ascii") as f:
                f.write(lines)
            os.replace(pending_tmp, pending)
            apply(dbs, ops)
            ack.write(lines)
            ack.flush()
            os.fsync(ack.fileno())
            ops_done += len(ops)
            batches += 1
            if args.rate:
                ahead = ops_done / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    for db in dbs.values():
        db.close()
    secs = time.monotonic() - started
    print(
        f"wrote {ops_done} ops in {batches} batches in {secs:.1f} s "
        f"({ops_done / max(secs, 1e-9):.0f} ops/s)",
        file=sys.stderr,
    )
    return EXIT_OK


def read_ops(path):
    """Parses ack lines into (db, hex key, hex value or None for a delete).

    Keys and values stay hex strings: decoding a million values costs more than the check.
    """
    ops = []
    with open(path, "r", encoding="ascii") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # a torn last line: the writer is still appending it
            parts = line[:-1].split(" ")
            if len(parts) == 3 and parts[1] == "del":
                ops.append((parts[0], parts[2], None))
            elif len(parts) == 4 and parts[1] == "put":
                ops.append((parts[0], parts[2], parts[3]))
            else:
                raise Usage(f"{path}:{number}: bad ack line: expected `DB put KEY VALUE` or `DB del KEY`")
    return ops


class Unopenable(Exception):
    """The copy does not open or cannot be read to the end."""


def scratch_copy(src, tmp):
    """A private copy of a store (opening with LevelDB writes to the directory)."""
    dest = os.path.join(tmp, "store")
    try:
        shutil.copytree(src, dest, symlinks=True)
    except (OSError, shutil.Error) as e:
        raise Unopenable(f"cannot copy {src} to a scratch dir: {e}")
    return dest


def read_all(path):
    """Every key and value of the LevelDB at `path`, checksums verified."""
    if not os.path.isdir(path):
        raise Unopenable(f"{path}: no such directory")
    try:
        db = open_db(path, False)
    except plyvel.Error as e:
        raise Unopenable(f"{path}: {type(e).__name__}: {e}")
    try:
        return dict(db.iterator(verify_checksums=True, fill_cache=False))
    except plyvel.Error as e:
        raise Unopenable(f"{path}: reading: {type(e).__name__}: {e}")
    finally:
        db.close()


def read_store(store):
    """Both databases of a store, read from a scratch copy; errors name `store`, not the copy."""
    with tempfile.TemporaryDirectory(prefix="leveldb-check-") as tmp:
        copy = scratch_copy(store, tmp)
        try:
            return {name: read_all(os.path.join(copy, name)) for name in ("data", "meta")}
        except Unopenable as e:
            raise Unopenable(str(e).replace(copy, store.rstrip("/")))


def short(h, n=24):
    """A hex string, shortened for a message."""
    if h is None:
        return "(absent)"
    if not h:
        return "(empty)"
    return h if len(h) <= n else f"{h[:n]}...({len(h) // 2} B)"


def cmd_check(args):
    # Pending first: whatever batch it names, the ack file read afterwards holds every batch
    # before it, so ack + pending covers every write LevelDB may have applied by now.
    pending_path = args.ack + ".pending"
    pending = read_ops(pending_path) if os.path.exists(pending_path) else []
    ops = read_ops(args.ack)
    upto = len(ops) if args.upto is None else args.upto
    if upto > len(ops):
        raise Usage(f"--upto {upto} but {args.ack} holds only {len(ops)} lines")
    result = {
        "copy": args.copy,
        "acknowledged_ops": upto,
        "checked_keys": 0,
        "copy_keys": 0,
        "violations": [],
        "violation_count": 0,
        "error": None,
    }
    last = {}
    for i in range(upto):
        db, key, _ = ops[i]
        last[(db, key)] = i
    later = {}
    written = set(last)
    for db, key, value in ops[upto:] + pending:
        written.add((db, key))
        if (db, key) in last:
            later.setdefault((db, key), set()).add(value)
    try:
        contents = read_store(args.copy)
    except Unopenable as e:
        result["status"] = "unopenable"
        result["error"] = str(e)
        emit(args, result, f"cannot open the copy: {e}")
        return EXIT_UNOPENABLE
    result["copy_keys"] = sum(len(c) for c in contents.values())
    contents = {db: {k.hex(): v.hex() for k, v in c.items()} for db, c in contents.items()}
    violations = []
    for (db, key), i in last.items():
        want = ops[i][2]
        got = contents[db].get(key)
        if got == want or got in later.get((db, key), ()):
            continue
        if want is not None and got is None:
            kind = "lost"
            what = f"acknowledged put is missing (want {short(want)})"
        elif want is None:
            kind = "wrong value"
            what = f"acknowledged delete, but the copy holds {short(got)}"
        else:
            kind = "wrong value"
            what = f"want {short(want)}, copy holds {short(got)}"
        violations.append({"kind": kind, "db": db, "key": key, "line": i + 1, "what": what})
    for db, content in contents.items():
        for key in content:
            if (db, key) not in written and not is_bulk(bytes.fromhex(key)):
                violations.append(
                    {"kind": "unexpected key", "db": db, "key": key, "line": None,
                     "what": "no write ever made this key"}
                )
    violations.sort(key=lambda v: v["line"] or 0)
    result["checked_keys"] = len(last)
    result["violation_count"] = len(violations)
    result["violations"] = violations[:20]
    if violations:
        result["status"] = "violations"
        text = [f"{len(violations)} violation(s) among {len(last)} keys of {upto} acknowledged ops:"]
        for v in violations[:10]:
            where = f" (ack line {v['line']})" if v["line"] else ""
            text.append(f"  {v['kind']}: {v['db']} {short(v['key'], 48)}{where}: {v['what']}")
        emit(args, result, "\n".join(text))
        return EXIT_VIOLATIONS
    result["status"] = "ok"
    emit(args, result, f"ok {len(last)} keys checked against {upto} acknowledged ops "
                       f"(copy holds {result['copy_keys']} keys)")
    return EXIT_OK


def emit(args, result, text):
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(text)


def cmd_naive_copy(args):
    vanished = []
    copied = [0]

    def copy(src, dst, *, follow_symlinks=True):
        try:
            shutil.copy2(src, dst, follow_symlinks=follow_symlinks)
            copied[0] += 1
        except FileNotFoundError:
            vanished.append(src)
            print(f"naive-copy: {src}: file removed before we read it", file=sys.stderr)
        return dst

    shutil.copytree(args.store, args.dest, symlinks=True, copy_function=copy)
    print(f"naive copy: {copied[0]} files copied, {len(vanished)} vanished during the copy")
    return EXIT_OK


def ssdb_type(key):
    c = key[:1]
    if c == b"k":
        return "kv"
    if c in (b"h", b"H"):
        return "hash"
    if c in (b"s", b"z", b"Z"):
        return "zset"
    if c in (b"q", b"Q"):
        return "queue"
    if c == b"\x01":
        return "binlog"
    return "other"


def cmd_count(args):
    try:
        contents = read_store(args.store)
    except Unopenable as e:
        print(f"cannot open the store: {e}", file=sys.stderr)
        return EXIT_UNOPENABLE
    counts = dict.fromkeys(("kv", "hash", "zset", "queue", "binlog", "other"), 0)
    for key in contents["data"]:
        counts[ssdb_type(key)] += 1
    counts["total"] = len(contents["data"])
    counts["meta"] = len(contents["meta"])
    print(json.dumps(counts, sort_keys=True))
    return EXIT_OK


def bulk_fill(data, meta, mb, seed, value_size):
    """Writes about `mb` MiB of new keys named `fill<seed>:...` (binlog: seq high bits = seed).

    Returns (keys, bytes of keys and values).
    """
    rng = random.Random(seed)
    target = int(mb * 1024 * 1024)
    tag = b"fill%d:" % seed
    written = 0
    i = 0
    seq = seed << 48
    while written < target:
        batch = data.write_batch()
        for _ in range(500):
            if written >= target:
                break
            i += 1
            value = rng.randbytes(rng.randint(value_size // 2 + 1, value_size * 3 // 2 + 1))
            r = rng.random()
            if r < 0.7:
                key = b"k" + tag + b"%d" % i
            elif r < 0.85:
                key = b"h" + lp(tag + b"%d" % (i % 1000)) + b"=" + b"%d" % i
            elif r < 0.95:
                key = b"s" + lp(tag + b"%d" % (i % 100)) + lp(b"%d" % i)
                value = b"%d" % rng.randint(0, 1 << 40)
            else:
                key = b"q" + lp(tag + b"%d" % (i % 10)) + i.to_bytes(8, "big")
            batch.put(key, value)
            if i % 10 == 0:
                seq += 1
                batch.put(b"\x01" + seq.to_bytes(8, "big"), b"s" + key)
            written += len(key) + len(value)
        batch.write()
    meta.put(b"fill." + tag, b"%d" % i)
    return i, written


def is_bulk(key):
    """A key written by `bulk_fill`, not by the acknowledged workload."""
    if key[:1] == b"\x01" and len(key) == 9:
        return int.from_bytes(key[1:], "big") >> 48 != 0
    return b"fill" in key


def cmd_fill(args):
    os.makedirs(args.store, exist_ok=True)
    data = open_db(os.path.join(args.store, "data"), True, write_buffer_size=4 << 20)
    meta = open_db(os.path.join(args.store, "meta"), True)
    keys, written = bulk_fill(data, meta, args.mb, args.seed, args.value_size)
    if not args.append:
        data.compact_range()
        meta.compact_range()
    data.close()
    meta.close()
    print(f"filled {args.store}: {keys} keys, {written} bytes of keys and values", file=sys.stderr)
    return EXIT_OK


def main(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    w = sub.add_parser("write", help="write an SSDB-shaped store under load, recording acks")
    w.add_argument("store")
    w.add_argument("--ack", required=True)
    w.add_argument("--seconds", type=float)
    w.add_argument("--stop-file")
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--value-size", type=int, default=100)
    w.add_argument("--batch", type=int, default=300, help="average ops per batch")
    w.add_argument("--preload-mb", type=float, default=0,
                   help="first write this many MiB with `fill` (not acknowledged) and compact")
    w.add_argument("--rate", type=float, help="at most this many ops per second on average")
    w.add_argument("--write-buffer", type=int, default=WRITE_BUFFER)
    w.add_argument("--max-file-size", type=int, default=MAX_FILE)
    w.set_defaults(run=cmd_write)

    c = sub.add_parser("check", help="check a copy against the acknowledged writes")
    c.add_argument("copy")
    c.add_argument("--ack", required=True)
    c.add_argument("--upto", type=int, help="number of ack lines that must be reflected (default all)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=cmd_check)

    n = sub.add_parser("naive-copy", help="copytree of the live store (the unsafe way)")
    n.add_argument("store")
    n.add_argument("dest")
    n.set_defaults(run=cmd_naive_copy)

    k = sub.add_parser("count", help="key counts per SSDB type, as JSON")
    k.add_argument("store")
    k.set_defaults(run=cmd_count)

    f = sub.add_parser("fill", help="write about MB MiB of new data, then compact and close")
    f.add_argument("store")
    f.add_argument("--mb", type=float, required=True)
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--value-size", type=int, default=1000)
    f.add_argument("--append", action="store_true", help="do not compact afterwards")
    f.set_defaults(run=cmd_fill)

    args = p.parse_args(argv)
    try:
        return args.run(args)
    except Usage as e:
        print(f"leveldb_writer: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
