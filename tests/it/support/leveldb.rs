//! The LevelDB test peer (`tests/support/leveldb_writer.py`, plyvel): fills stores with
//! SSDB-shaped keys, counts them, and keeps one busy while a backup runs.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::{assert_exit, parse_json};

/// `python3 tests/support/leveldb_writer.py`.
pub fn peer() -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/leveldb_writer.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).stdin(Stdio::null());
    cmd
}

/// Runs the peer to completion, asserting exit 0; a missing `plyvel` is named in the message.
pub fn peer_ok(args: &[&str]) -> Output {
    let out = peer().args(args).output().expect("spawn python3");
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("plyvel") {
        panic!(
            "the LevelDB test peer needs plyvel; run scripts/test, which installs it \
             (python3 -m pip install plyvel==1.5.1):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_exit(&out, 0, &format!("leveldb_writer.py {}", args.join(" ")));
    out
}

/// `STORE` as a `&str` argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("sandbox paths are UTF-8")
}

/// Key counts per SSDB type of a (quiet) store, as the peer's `count` reports them.
pub fn count(store: &Path) -> Value {
    parse_json(&peer_ok(&["count", arg(store)]))
}

/// Writes about `mb` MiB of new keys named after `seed`; `append` skips the final compaction.
pub fn fill(store: &Path, mb: f64, seed: u32, append: bool) {
    let (mb, seed) = (mb.to_string(), seed.to_string());
    let mut args = vec!["fill", arg(store), "--mb", &mb, "--seed", &seed];
    if append {
        args.push("--append");
    }
    peer_ok(&args);
}
