#!/usr/bin/env python3
"""Test peer for the MongoDB component: seeds a wire-protocol server and describes its state.

Runs under Python >= 3.13 with pymongo (the interpreter that also runs mongoeco; see
scripts/test). It talks to any MongoDB wire-protocol server through pymongo and knows nothing
of akbackup; akbackup knows nothing of it.

  seed URI DATASET.json [--ns DB.COLL ...]
      Creates every collection of the fixture dataset (tests/fixtures/mongodump/dataset.json:
      canonical Extended JSON v2) with its options (capped size/max as plain ints: mongoeco
      rejects an Int64 size), inserts its documents as raw BSON (so the bytes on the server
      are the bytes of the file), creates its indexes (the specs as listed) and its views.
      --ns limits it to those namespaces (a view is a namespace too). Prints a JSON summary:
      {"namespaces": N, "documents": N, "seconds": S}.
  state URI [--db DB ...]
      Prints the server's state as JSON (see STATE below) for every namespace of every
      database except admin, local and config (or only the --db ones), skipping system.*.
  expected DATASET.json [--ns DB.COLL ...]
      Prints the STATE the dataset describes, so a test can compare a server with the file.
  insert URI DB.COLL N [--start K]
      Inserts N small documents {_id: n, n, slug: "inserted-n", email: "inserted-n@...", pad}
      for n in K..K+N (K defaults to 0); slug and email keep the fixture's unique indexes happy.
  drop URI DB[.COLL]
      Drops the collection, or the whole database.
  serve LAUNCHER PORT [--user USER --password PASSWORD]
      Runs the mongoeco launcher (tests/support/mongoeco_server.py, unmodified, in this
      process: it prints the URI when listening) and exits as soon as stdin reaches EOF, so a
      server whose test process died (even by SIGKILL) does not outlive it: give it a pipe.
      With --user, that SCRAM user (source `admin`) is required for every command but hello.
      mongoeco's hello does not announce saslSupportedMechs and its SCRAM-SHA-1 does not
      verify real passwords, so clients must ask for SCRAM-SHA-256 in the URI
      (`?authMechanism=SCRAM-SHA-256`).

STATE: {"DB.COLL": entry} where a collection's entry is
  {"type": "collection", "count": N, "sha256": hex of the concatenation of the raw BSON bytes
   of all documents sorted as byte strings (natural order does not matter),
   "options": {"capped": true, "size": N, "max": N} or {} (plain ints),
   "indexes": [{"name", "key": [[field, value], ...] (order kept, canonical extjson values),
                "unique": bool, "expireAfterSeconds": canonical extjson or null,
                "partialFilterExpression": canonical extjson or null}, ...] sorted by name}
and a view's entry is {"type": "view", "viewOn": NAME, "pipeline": canonical extjson with the
keys of every object sorted} (mongodump reorders object keys of view pipelines; find on a
mongoeco view returns nothing, so a view has no count).

Exit 0 on success, 1 on a failure (the error on stderr), 2 on a usage error.
"""

import argparse
import hashlib
import json
import os
import runpy
import sys
import threading
import time

import bson
from bson import json_util
from bson.codec_options import CodecOptions
from bson.json_util import CANONICAL_JSON_OPTIONS
from bson.raw_bson import RawBSONDocument
from bson.son import SON
import pymongo

SYSTEM_DBS = ("admin", "local", "config")
RAW = CodecOptions(document_class=RawBSONDocument)


def client(uri):
    return pymongo.MongoClient(uri, serverSelectionTimeoutMS=20_000, directConnection=True)


def canonical(value):
    """`value` as canonical Extended JSON, parsed back into plain JSON (key order kept)."""
    return json.loads(json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS))


def sorted_keys(value):
    if isinstance(value, dict):
        return {k: sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(v) for v in value]
    return value


def load_dataset(path):
    """The dataset with every document as raw BSON bytes, in file order."""
    with open(path, encoding="utf-8") as f:
        data = json_util.loads(f.read(), json_options=CANONICAL_JSON_OPTIONS)
    for db in data["databases"].values():
        for coll in db.get("collections", {}).values():
            coll["raw"] = [bson.encode(doc) for doc in coll["documents"]]
    return data


def wanted(ns_filter, ns):
    return not ns_filter or ns in ns_filter


def plain_options(options):
    """Collection options with numbers as plain ints (capped size/max)."""
    out = {}
    for key in sorted(options):
        value = options[key]
        if isinstance(value, bool):
            out[key] = value
        elif isinstance(value, (int, float)):
            out[key] = int(value)
        else:
            out[key] = canonical(value)
    return out


def index_entry(spec):
    key = spec["key"]
    pairs = list(key.items()) if hasattr(key, "items") else list(key)
    opt = lambda name: canonical(spec[name]) if name in spec else None  # noqa: E731
    return {
        "name": spec["name"],
        "key": [[field, canonical(value)] for field, value in pairs],
        "unique": bool(spec.get("unique", False)),
        "expireAfterSeconds": opt("expireAfterSeconds"),
        "partialFilterExpression": opt("partialFilterExpression"),
    }


def digest(raw_docs):
    h = hashlib.sha256()
    for raw in sorted(raw_docs):
        h.update(raw)
    return h.hexdigest()


def cmd_seed(args):
    started = time.monotonic()
    data = load_dataset(args.dataset)
    mc = client(args.uri)
    namespaces = documents = 0
    for dbname, db in data["databases"].items():
        target = mc[dbname]
        for name, coll in db.get("collections", {}).items():
            if not wanted(args.ns, f"{dbname}.{name}"):
                continue
            create = SON([("create", name)])
            create.update(plain_options(coll.get("options", {})))
            target.command(create)
            if coll["raw"]:
                raw = target.get_collection(name, codec_options=RAW)
                raw.insert_many([RawBSONDocument(b) for b in coll["raw"]], ordered=True)
            if coll.get("indexes"):
                target.command(SON([("createIndexes", name), ("indexes", coll["indexes"])]))
            namespaces += 1
            documents += len(coll["raw"])
        for name, view in db.get("views", {}).items():
            if not wanted(args.ns, f"{dbname}.{name}"):
                continue
            target.command(
                SON([("create", name), ("viewOn", view["viewOn"]), ("pipeline", view["pipeline"])])
            )
            namespaces += 1
    seconds = round(time.monotonic() - started, 3)
    print(json.dumps({"namespaces": namespaces, "documents": documents, "seconds": seconds}))


def cmd_state(args):
    mc = client(args.uri)
    dbs = args.db or [d for d in mc.list_database_names() if d not in SYSTEM_DBS]
    state = {}
    for dbname in sorted(dbs):
        db = mc[dbname]
        for info in db.list_collections():
            name = info["name"]
            if name.startswith("system."):
                continue
            ns = f"{dbname}.{name}"
            options = info.get("options", {}) or {}
            if info.get("type") == "view" or "viewOn" in options:
                state[ns] = {
                    "type": "view",
                    "viewOn": options.get("viewOn"),
                    "pipeline": sorted_keys(canonical(options.get("pipeline", []))),
                }
                continue
            raw = [doc.raw for doc in db.get_collection(name, codec_options=RAW).find()]
            state[ns] = {
                "type": "collection",
                "count": len(raw),
                "sha256": digest(raw),
                "options": plain_options(
                    {k: options[k] for k in ("capped", "size", "max") if k in options}
                ),
                "indexes": sorted(
                    (index_entry(spec) for spec in db[name].list_indexes()),
                    key=lambda e: e["name"],
                ),
            }
    print(json.dumps(state, sort_keys=True, indent=1))


def cmd_expected(args):
    data = load_dataset(args.dataset)
    state = {}
    for dbname, db in data["databases"].items():
        for name, coll in db.get("collections", {}).items():
            ns = f"{dbname}.{name}"
            if not wanted(args.ns, ns):
                continue
            specs = [{"name": "_id_", "key": SON([("_id", 1)])}] + list(coll.get("indexes", []))
            options = coll.get("options", {})
            state[ns] = {
                "type": "collection",
                "count": len(coll["raw"]),
                "sha256": digest(coll["raw"]),
                "options": plain_options(
                    {k: options[k] for k in ("capped", "size", "max") if k in options}
                ),
                "indexes": sorted((index_entry(s) for s in specs), key=lambda e: e["name"]),
            }
            if coll.get("count") is not None and coll["count"] != len(coll["raw"]):
                sys.exit(f"mongo_tool: {ns}: count {coll['count']} != {len(coll['raw'])} documents")
        for name, view in db.get("views", {}).items():
            ns = f"{dbname}.{name}"
            if not wanted(args.ns, ns):
                continue
            state[ns] = {
                "type": "view",
                "viewOn": view["viewOn"],
                "pipeline": sorted_keys(canonical(view["pipeline"])),
            }
    print(json.dumps(state, sort_keys=True, indent=1))


def cmd_insert(args):
    dbname, _, coll = args.ns.partition(".")
    if not coll:
        sys.exit(f"mongo_tool: insert needs DB.COLL, got {args.ns!r}")
    docs = [
        {
            "_id": n,
            "n": n,
            "slug": f"inserted-{n}",
            "email": f"inserted-{n}@example.invalid",
            "pad": "inserted by mongo_tool " * 4,
        }
        for n in range(args.start, args.start + args.n)
    ]
    if docs:
        client(args.uri)[dbname][coll].insert_many(docs, ordered=True)
    print(json.dumps({"inserted": len(docs)}))


def cmd_drop(args):
    dbname, _, coll = args.ns.partition(".")
    mc = client(args.uri)
    if coll:
        mc[dbname].drop_collection(coll)
    else:
        mc.drop_database(dbname)
    print(json.dumps({"dropped": args.ns}))


def cmd_serve(args):
    def orphan_guard():
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=orphan_guard, daemon=True).start()
    if args.user is not None:
        import mongoeco.wire.proxy as proxy
        from mongoeco.wire.auth import WireAuthUser

        user = WireAuthUser(args.user, args.password)
        original = proxy.AsyncMongoEcoProxyServer.__init__

        def init(self, *a, **k):
            k.setdefault("auth_users", (user,))
            original(self, *a, **k)

        proxy.AsyncMongoEcoProxyServer.__init__ = init
    sys.argv = [args.launcher, str(args.port)]
    runpy.run_path(args.launcher, run_name="__main__")


def main():
    parser = argparse.ArgumentParser(description="MongoDB test peer (see the module docstring)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("seed")
    p.add_argument("uri")
    p.add_argument("dataset")
    p.add_argument("--ns", action="append")
    p.set_defaults(func=cmd_seed)
    p = sub.add_parser("state")
    p.add_argument("uri")
    p.add_argument("--db", action="append")
    p.set_defaults(func=cmd_state)
    p = sub.add_parser("expected")
    p.add_argument("dataset")
    p.add_argument("--ns", action="append")
    p.set_defaults(func=cmd_expected)
    p = sub.add_parser("insert")
    p.add_argument("uri")
    p.add_argument("ns")
    p.add_argument("n", type=int)
    p.add_argument("--start", type=int, default=0)
    p.set_defaults(func=cmd_insert)
    p = sub.add_parser("drop")
    p.add_argument("uri")
    p.add_argument("ns")
    p.set_defaults(func=cmd_drop)
    p = sub.add_parser("serve")
    p.add_argument("launcher")
    p.add_argument("port", type=int)
    p.add_argument("--user")
    p.add_argument("--password")
    p.set_defaults(func=cmd_serve)
    args = parser.parse_args()
    try:
        args.func(args)
    except pymongo.errors.PyMongoError as e:
        print(f"mongo_tool {args.command}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
