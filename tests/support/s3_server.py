#!/usr/bin/env python3
"""Local S3 server for akbackup's tests: moto (PyPI `moto[server]`) on loopback.

Runs moto's server in this process on 127.0.0.1:PORT, creates the buckets given with
--bucket, and with --auth creates an IAM user whose key pair is then the only one accepted
(moto accepts any credentials otherwise). When ready it prints one line of JSON on stdout:

  {"ready": true, "endpoint": "http://127.0.0.1:PORT", "region": "us-east-1",
   "access_key_id": "...", "secret_access_key": "...", "buckets": [...], "auth": true,
   "startup_seconds": 1.2}

and serves until SIGTERM/SIGINT, or with --stdin-lifetime until stdin reaches EOF, so a
test harness that dies (closing the pipe) does not leave a server behind.

--auth fixes one moto bug first: moto checks a SigV4 signature against the *decoded* query
string, so every ListObjectsV2 with `prefix=a/b/` (which clients sign as `a%2Fb%2F`) fails
with SignatureDoesNotMatch. We re-encode the query the way AWS specifies before moto checks.

It deliberately installs nothing: `python3 -m pip install 'moto[server]'` first.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request

# An IAM policy that allows everything on S3 for the test user.
ALLOW_S3 = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
)


def aws_query(query: str) -> str:
    """The query string as AWS SigV4 canonicalises it: every key and value percent-encoded
    except the unreserved characters, from whatever (decoded) form the WSGI layer left."""
    parts = []
    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        key = urllib.parse.quote(urllib.parse.unquote(key), safe="-_.~")
        value = urllib.parse.quote(urllib.parse.unquote(value), safe="-_.~")
        parts.append(key + eq + value)
    return "&".join(parts)


def patch_moto_query_signing() -> None:
    from moto.iam import access_control

    original = access_control.IAMRequestBase.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        path, sep, query = self._path.partition("?")
        if sep:
            self._path = path + "?" + aws_query(query)

    access_control.IAMRequestBase.__init__ = init


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bucket", action="append", default=[], help="bucket to create (repeatable)")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--auth", action="store_true", help="enforce credentials (IAM) after setup")
    ap.add_argument("--stdin-lifetime", action="store_true", help="exit when stdin reaches EOF")
    ap.add_argument("--log", help="append moto's request log to this file (default: discarded)")
    args = ap.parse_args()

    t0 = time.monotonic()
    endpoint = f"http://127.0.0.1:{args.port}"
    # Setup requests below run unauthenticated; --auth switches enforcement on afterwards.
    os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    if args.log:
        # werkzeug writes its request log to stderr.
        sys.stderr = open(args.log, "a", buffering=1)
    else:
        import logging

        logging.getLogger("werkzeug").disabled = True

    from moto.server import ThreadedMotoServer

    if args.auth:
        patch_moto_query_signing()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()

    def stop(*_):
        server.stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    import boto3  # installed with moto

    key_id, secret = "testing", "testing"
    session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=args.region)
    s3 = session.client("s3", endpoint_url=endpoint)
    for bucket in args.bucket:
        if args.region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": args.region})
    if args.auth:
        iam = session.client("iam", endpoint_url=endpoint)
        iam.create_user(UserName="akbackup-test")
        iam.put_user_policy(UserName="akbackup-test", PolicyName="s3-all", PolicyDocument=ALLOW_S3)
        key = iam.create_access_key(UserName="akbackup-test")["AccessKey"]
        key_id, secret = key["AccessKeyId"], key["SecretAccessKey"]
        # From now on every request must be signed with a key moto's IAM knows.
        # text/plain: with urllib's default form type Flask swallows the body (HTTP 500).
        urllib.request.urlopen(
            urllib.request.Request(
                endpoint + "/moto-api/reset-auth",
                data=b"0",
                method="POST",
                headers={"Content-Type": "text/plain"},
            )
        )

    print(
        json.dumps(
            {
                "ready": True,
                "endpoint": endpoint,
                "region": args.region,
                "access_key_id": key_id,
                "secret_access_key": secret,
                "buckets": args.bucket,
                "auth": args.auth,
                "startup_seconds": round(time.monotonic() - t0, 3),
            }
        ),
        flush=True,
    )

    if args.stdin_lifetime:
        sys.stdin.read()
        stop()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
