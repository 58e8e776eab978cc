#!/usr/bin/env python3
"""Writes small, valid seed inputs for the fuzz targets into fuzz/corpus/<target>/.

Runs under the Python 3.13 that has pymongo (PYENV_VERSION=3.13.0 python3 fuzz/seeds.py) and
plyvel for the LevelDB MANIFEST seeds (any python with plyvel; skipped with a note if absent).
The archive layout mirrors mongodump's (and akbackup's writer): magic, prelude, namespace
headers, terminator, then per namespace a segment, documents, terminator, EOF block with the
CRC-64/XZ of the documents, terminator.
"""
import gzip, json, os, pathlib, struct, subprocess, sys, tempfile

import bson

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"
MAGIC = struct.pack("<i", 0x6DE29981)
TERM = b"\xff\xff\xff\xff"


def crc64_xz(data):
    poly, crc = 0xC96C5795D7870F42, 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFFFFFFFFFF


def archive(spaces):
    out = bytearray(MAGIC)
    out += bson.encode({"concurrent_collections": 1, "version": "0.1",
                        "server_version": "7.0.0", "tool_version": "seeds"})
    for db, coll, docs in spaces:
        meta = json.dumps({"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}],
                           "collectionName": coll, "type": "collection"})
        out += bson.encode({"db": db, "collection": coll, "metadata": meta, "size": 0,
                            "type": "collection"})
    out += TERM
    for db, coll, docs in spaces:
        out += bson.encode({"db": db, "collection": coll, "EOF": False, "CRC": bson.Int64(0)})
        body = b"".join(bson.encode(d) for d in docs)
        out += body + TERM
        crc = crc64_xz(body)
        out += bson.encode({"db": db, "collection": coll, "EOF": True,
                            "CRC": bson.Int64(crc - (1 << 64) if crc >= 1 << 63 else crc)})
        out += TERM
    return bytes(out)


def write(target, name, data):
    d = ROOT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


docs = [{"_id": i, "name": f"user-{i}", "tags": ["a", "b"], "n": i * 1.5} for i in range(3)]
one = archive([("control", "users", docs)])
two = archive([("control", "users", docs), ("account_1", "contacts", docs[:1]),
               ("empty", "nothing", [])])
write("mongodump_archive", "one.archive", one)
write("mongodump_archive", "two.archive", two)
write("mongodump_archive", "two.archive.gz", gzip.compress(two, mtime=0))
write("bson_file", "three.bson", b"".join(bson.encode(d) for d in docs))
write("bson_file", "empty.bson", b"")

manifest = {"format": 1, "akbackup_version": "0.1.0", "host": "seed", "started":
            "2026-11-24T02:30:00Z", "finished": "2026-11-24T02:31:00Z", "tags": [],
            "components": [{"name": "files.control", "kind": "files", "source": "/opt/altcraft",
                            "repo_path": "/opt/altcraft", "files": 3, "dirs": 1, "bytes": 10,
                            "read_bytes": 10, "status": "complete", "warnings": [],
                            "errors": [], "prepare_seconds": 0.5}]}
write("set_manifest", "manifest.json", json.dumps(manifest).encode())

# plyvel lives in the machine's default python (scripts/test installs it there), not in the
# pyenv 3.13 this runs under: drop pyenv's version directories from PATH to reach it.
code = ("import plyvel,sys\n"
        "db=plyvel.DB(sys.argv[1],create_if_missing=True)\n"
        "n=int(sys.argv[2])\n"
        "[db.put(b'k%05d'%i,b'v'*50) for i in range(n)]\n"
        "[db.delete(b'k%05d'%i) for i in range(0,n,7)]\n"
        "db.compact_range(); db.close()\n")
env = {k: v for k, v in os.environ.items() if k != "PYENV_VERSION"}
env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                              if "/.pyenv/versions/" not in p)
with tempfile.TemporaryDirectory() as tmp:
    # 2000 keys: a MANIFEST with several edits; 150 keys: one table that fits -max_len.
    for keys in (2000, 150):
        store = os.path.join(tmp, f"db{keys}")
        r = subprocess.run(["python3", "-c", code, store, str(keys)], env=env)
        if r.returncode != 0:
            print("seeds.py: no plyvel: the LevelDB targets have no seed", file=sys.stderr)
            break
        for f in os.listdir(store):
            if f.startswith("MANIFEST-") and keys == 2000:
                write("leveldb_manifest", "compacted.manifest",
                      pathlib.Path(store, f).read_bytes())
            if f.endswith(".ldb") and keys == 150:
                write("leveldb_table", "small.ldb", pathlib.Path(store, f).read_bytes())
print("seeds written to", ROOT)
