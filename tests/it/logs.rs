//! stderr as a log: `--log-format json` gives one JSON object per line for collectors, and
//! plain lines off a terminal carry an RFC 3339 timestamp; no line carries a secret.

use std::fs;

use serde_json::Value;

use crate::support::{PASSWORD, Sandbox, assert_exit};

/// Every non-empty stderr line parsed as a JSON object with the documented keys.
fn json_lines(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l:?}"));
            assert!(v.is_object(), "not an object: {l}");
            let ts = v["timestamp"]
                .as_str()
                .unwrap_or_else(|| panic!("timestamp: {l}"));
            ts.parse::<jiff::Timestamp>()
                .unwrap_or_else(|e| panic!("timestamp {ts:?} is not RFC 3339 ({e}): {l}"));
            assert!(v["level"].is_string(), "level: {l}");
            assert!(v["message"].is_string(), "message: {l}");
            v
        })
        .collect()
}

#[test]
/// A real backup with `--log-format json` writes only JSON lines on stderr, with the
/// component as a field, and a failing command's error line is JSON too.
fn json_log_lines_of_a_backup_and_an_error() {
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.conf"), b"listen 8080\n").expect("source");
    sb.init();
    let out = sb
        .cmd(&["--log-format", "json", "backup"])
        .output()
        .expect("spawn");
    assert_exit(&out, 0, "backup --log-format json");
    let lines = json_lines(&out.stderr);
    assert!(
        lines.iter().any(|v| v["component"] == "files.control"
            && v["level"] == "INFO"
            && v["message"].as_str().is_some_and(|m| m.contains("started"))),
        "no INFO line about files.control: {lines:#?}"
    );
    let all = String::from_utf8_lossy(&out.stderr);
    assert!(!all.contains(PASSWORD), "the password leaked: {all}");

    // The environment variable works as the flag does (for systemd units).
    fs::remove_dir_all(sb.repo()).expect("remove repository");
    let out = sb
        .cmd(&["snapshots"])
        .env("AKBACKUP_LOG_FORMAT", "json")
        .output()
        .expect("spawn");
    assert_exit(&out, 2, "snapshots without a repository");
    let lines = json_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["level"], "ERROR", "{lines:#?}");
    assert!(
        lines[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("repository")),
        "{lines:#?}"
    );
}

#[test]
/// Without a terminal the progress lines start with an RFC 3339 timestamp, then the usual
/// `akbackup: ` line.
fn plain_lines_carry_a_timestamp() {
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.conf"), b"listen 8080\n").expect("source");
    sb.init();
    let out = sb.ok(&["backup"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let progress: Vec<&str> = stderr.lines().filter(|l| l.contains("started")).collect();
    assert!(!progress.is_empty(), "no progress line: {stderr}");
    for line in progress {
        let (ts, rest) = line.split_once(' ').expect("timestamp and text");
        ts.parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("{ts:?} is not RFC 3339 ({e}): {line}"));
        assert!(ts.ends_with('Z'), "not UTC: {line}");
        assert!(rest.starts_with("akbackup: files.control"), "{line}");
    }
}
