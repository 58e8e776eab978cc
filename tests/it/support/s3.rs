//! The S3 test peer: [`S3Server`], moto on a free loopback port started through
//! `tests/support/s3_server.py` (one per test, `--stdin-lifetime`, killed on drop), a boto3
//! listing of what a repository stored in a bucket, and sandbox configs whose repositories live
//! in that bucket (with their `work-dir` inside the sandbox).
//!
//! The server runs under the system `python3` with `moto[server]` and boto3; `scripts/test`
//! installs them. Nothing here knows the repository format beyond the restic layout
//! (`<prefix>/data/` holds the packs).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::mongo::free_port;
use super::{Sandbox, assert_exit, parse_json, toml_str};

/// How long the server may take to print its ready line (moto imports are slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `tests/support/s3_server.py`.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/s3_server.py")
}

/// A running moto S3 server; killed (and reaped) on drop, including when the test panics.
/// Its stdin is a pipe: if the test process dies, the server exits by itself.
pub struct S3Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The access key the server accepts (any key without `--auth`).
    pub key_id: String,
    /// Its secret.
    pub secret: String,
    /// Holds the request log.
    logs: TempDir,
}

impl S3Server {
    /// Starts a server with `buckets`, accepting any credentials.
    pub fn start(buckets: &[&str]) -> Self {
        Self::spawn(buckets, false)
    }

    /// Starts a server with `buckets` that accepts only its generated key pair.
    pub fn start_with_auth(buckets: &[&str]) -> Self {
        Self::spawn(buckets, true)
    }

    fn spawn(buckets: &[&str], auth: bool) -> Self {
        let logs = tempfile::Builder::new()
            .prefix("akbackup-s3-")
            .tempdir()
            .expect("create server log dir");
        let log = logs.path().join("requests.log");
        let mut last = String::new();
        // A port picked free can be taken before the server binds it: try a few.
        for _ in 0..3 {
            let port = free_port().to_string();
            let mut cmd = Command::new("python3");
            cmd.arg(script())
                .args(["--port", &port, "--stdin-lifetime", "--log"])
                .arg(&log);
            for bucket in buckets {
                cmd.args(["--bucket", bucket]);
            }
            if auth {
                cmd.arg("--auth");
            }
            let err_log = logs.path().join(format!("stderr-{port}.log"));
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(File::create(&err_log).expect("create server stderr log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start python3 for the S3 test server: {e}"));
            let stdout = child.stdout.take().expect("server stdout");
            let line = super::first_line_within(stdout, START_TIMEOUT);
            if let Ok(ready) = serde_json::from_str::<Value>(line.trim())
                && ready["ready"] == true
            {
                let text = |k: &str| {
                    ready[k]
                        .as_str()
                        .unwrap_or_else(|| panic!("ready line without {k}: {line}"))
                        .to_string()
                };
                return S3Server {
                    endpoint: text("endpoint"),
                    key_id: text("access_key_id"),
                    secret: text("secret_access_key"),
                    child: Some(child),
                    logs,
                };
            }
            let _ = child.kill();
            let status = child.wait().ok();
            last = format!(
                "port {port}: printed {line:?}, exit {status:?}, stderr:\n{}",
                fs::read_to_string(&err_log).unwrap_or_default()
            );
        }
        panic!(
            "the S3 test server did not get ready within {} s (run scripts/test, which installs \
             moto[server] and boto3 for python3); last attempt: {last}",
            START_TIMEOUT.as_secs()
        );
    }

    /// moto's request log so far (one werkzeug line per request).
    pub fn requests(&self) -> String {
        fs::read_to_string(self.logs.path().join("requests.log")).unwrap_or_default()
    }

    /// Count and total size of the non-empty objects under `<prefix>/data/` in `bucket` (the
    /// packs of a repository at `s3://bucket/prefix`; `init` also leaves 256 empty directory
    /// markers there), listed with boto3.
    pub fn data_objects(&self, bucket: &str, prefix: &str) -> (u64, u64) {
        const LIST: &str = "import boto3, json, sys\n\
            endpoint, key, secret, bucket, prefix = sys.argv[1:6]\n\
            s3 = boto3.client('s3', endpoint_url=endpoint, aws_access_key_id=key,\n\
                              aws_secret_access_key=secret, region_name='us-east-1')\n\
            n = size = 0\n\
            for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix):\n\
            \x20   for obj in page.get('Contents', []):\n\
            \x20     if obj['Size'] > 0:\n\
            \x20       n += 1\n\
            \x20       size += obj['Size']\n\
            print(json.dumps({'count': n, 'bytes': size}))\n";
        let out = Command::new("python3")
            .args([
                "-c",
                LIST,
                &self.endpoint,
                &self.key_id,
                &self.secret,
                bucket,
            ])
            .arg(format!("{}/data/", prefix.trim_matches('/')))
            .stdin(Stdio::null())
            .output()
            .expect("spawn python3 for the bucket listing");
        assert_exit(&out, 0, "boto3 list_objects_v2");
        let v = parse_json(&out);
        (
            v["count"].as_u64().expect("count"),
            v["bytes"].as_u64().expect("bytes"),
        )
    }

    /// The keys of a repository section at `s3://bucket/prefix` on this server, with the
    /// sandbox's password file, a work dir `<root>/work-<bucket>`.
    pub fn repo_keys(&self, sb: &Sandbox, bucket: &str, prefix: &str) -> String {
        repo_keys(
            sb,
            bucket,
            prefix,
            &self.endpoint,
            &self.key_id,
            &self.secret,
        )
    }

    /// SIGKILLs the server now and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The keys of a repository section at `s3://bucket/prefix` behind `endpoint`, with the
/// sandbox's password file, a work dir `<root>/work-<bucket>`.
pub fn repo_keys(
    sb: &Sandbox,
    bucket: &str,
    prefix: &str,
    endpoint: &str,
    key_id: &str,
    secret: &str,
) -> String {
    format!(
        "url = \"s3://{bucket}/{prefix}\"\nendpoint = \"{endpoint}\"\n\
         access-key-id = \"{key_id}\"\nsecret-access-key = \"{secret}\"\n\
         work-dir = {work}\npassword-file = {pw}\n",
        work = toml_str(&sb.root().join(format!("work-{bucket}"))),
        pw = toml_str(&sb.password_file()),
    )
}

/// The `[files.control]` section (and anything after it) of the sandbox's default config.
pub fn files_section(sb: &Sandbox) -> String {
    let config = sb.default_config();
    let at = config
        .find("[files.control]")
        .expect("the default config has [files.control]");
    config[at..].to_string()
}

/// A config with the top-level keys `top`, a `[repository]` at `s3://bucket/prefix` on
/// `server` and the default `[files.control]`.
pub fn s3_config(sb: &Sandbox, server: &S3Server, bucket: &str, prefix: &str, top: &str) -> String {
    format!(
        "{top}[repository]\n{keys}\n{files}",
        keys = server.repo_keys(sb, bucket, prefix),
        files = files_section(sb),
    )
}
