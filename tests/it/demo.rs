//! The README's first command: `akbackup demo` runs the whole job on a sandbox platform.

use crate::support::{assert_exit, parse_json};

/// A small demo completes every step: both sets verified (data read, SSDB store opened),
/// restore identical to the source, restart command run, and day two costs far less than
/// day one.
#[test]
fn demo_runs_end_to_end_on_a_small_sandbox() {
    let dir = tempfile::Builder::new()
        .prefix("akbackup-demo-it-")
        .tempdir()
        .expect("temp dir");
    let sandbox = dir.path().join("sandbox");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_akbackup"))
        .args(["--json", "demo", "--size-mb", "6", "--dir"])
        .arg(&sandbox)
        .env_remove("AKBACKUP_CONFIG")
        .env_remove("AKBACKUP_PASSWORD")
        .output()
        .expect("run demo");
    assert_exit(&out, 0, "akbackup demo");
    let s = parse_json(&out);
    assert_eq!(s["verify_ok"], true, "{s:#}");
    assert_eq!(s["differences"], serde_json::json!([]), "{s:#}");
    assert!(
        s["restart_calls"][0]
            .as_str()
            .unwrap_or("")
            .contains("restart"),
        "{s:#}"
    );
    let first = s["repo_after_first"].as_u64().expect("repo_after_first");
    let second = s["repo_after_second"].as_u64().expect("repo_after_second");
    assert!(
        second - first < first / 5,
        "day two grew the repository by {} of {first}",
        second - first
    );
    assert!(
        sandbox.join("akbackup.toml").is_file(),
        "the demo config is kept with --dir"
    );
}
