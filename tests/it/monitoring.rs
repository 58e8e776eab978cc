//! Monitoring: the Prometheus textfile after a good and a failed run, and `status` exit
//! codes by age with a fixed clock.

use std::{collections::BTreeMap, fs};

use crate::support::Sandbox;

/// `name{labels} value` lines of a metrics file (comments skipped).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("name value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

fn with_textfile(sb: &Sandbox) -> std::path::PathBuf {
    let dir = sb.root().join("textfile");
    fs::create_dir_all(&dir).expect("textfile dir");
    let path = dir.join("akbackup.prom");
    sb.write_config(&format!(
        "{}\n[monitoring]\ntextfile = \"{}\"\n",
        sb.default_config(),
        path.display()
    ));
    path
}

#[test]
fn metrics_after_success_and_after_failure() {
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.conf"), vec![b'x'; 5000]).expect("source");
    let path = with_textfile(&sb);
    sb.init();
    let summary = sb.backup(&[]);
    let text = fs::read_to_string(&path).expect("metrics written");
    let m = samples(&text);
    assert_eq!(m["akbackup_last_run_success"], 1.0, "{text}");
    assert_eq!(m["akbackup_sets"], 1.0, "{text}");
    assert_eq!(
        m["akbackup_component_bytes{component=\"files.control\"}"],
        summary["components"][0]["bytes"].as_f64().expect("bytes"),
        "{text}"
    );
    let good = m["akbackup_last_success_timestamp_seconds{component=\"files.control\"}"];
    let started: jiff::Timestamp = summary["started"]
        .as_str()
        .expect("started")
        .parse()
        .expect("timestamp");
    assert_eq!(good, started.as_second() as f64, "{text}");
    assert!(
        text.contains("# TYPE akbackup_last_run_success gauge"),
        "{text}"
    );

    // The source disappears: the run fails before storing anything (exit 2), monitoring
    // hears it, and the last good time stays.
    fs::rename(sb.source(), sb.root().join("gone")).expect("move source away");
    let out = sb.cmd(&["backup"]).output().expect("spawn");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = fs::read_to_string(&path).expect("metrics rewritten");
    let m = samples(&text);
    assert_eq!(m["akbackup_last_run_success"], 0.0, "{text}");
    assert_eq!(m["akbackup_sets"], 1.0, "{text}");
    assert_eq!(
        m["akbackup_last_success_timestamp_seconds{component=\"files.control\"}"], good,
        "{text}"
    );
    let leftovers: Vec<_> = fs::read_dir(path.parent().expect("dir"))
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");
}

#[test]
fn status_exit_codes_follow_the_age() {
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.conf"), b"x").expect("source");
    sb.init();
    let out = sb.cmd(&["status"]).output().expect("spawn");
    assert_eq!(out.status.code(), Some(2), "never backed up is critical");
    let summary = sb.backup(&[]);
    let started: jiff::Timestamp = summary["started"]
        .as_str()
        .expect("started")
        .parse()
        .expect("timestamp");
    for (hours, code, state) in [(1, 0, "OK"), (30, 1, "WARNING"), (60, 2, "CRITICAL")] {
        let now = started + jiff::SignedDuration::from_hours(hours);
        let out = sb
            .cmd(&["status", "--now", &now.to_string()])
            .output()
            .expect("spawn");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{hours} h: {text}");
        assert!(text.contains(state), "{hours} h: {text}");
    }
    let now = started + jiff::SignedDuration::from_hours(30);
    let out = sb
        .cmd(&["status", "--now", &now.to_string(), "--warn-hours", "48"])
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(0), "thresholds are the operator's");
}

/// `verify` adds its own families to the file (result, time, whether data was read); a
/// damaged pack turns the result to 0; a later backup keeps them; and every component has
/// its prepare time.
#[test]
fn verify_result_is_in_the_metrics_and_survives_the_next_backup() {
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.conf"), vec![b'y'; 20_000]).expect("source");
    let path = with_textfile(&sb);
    sb.init();
    sb.backup(&[]);
    let m = samples(&fs::read_to_string(&path).expect("metrics"));
    assert!(
        m.contains_key("akbackup_component_prepare_seconds{component=\"files.control\"}"),
        "{m:?}"
    );
    assert!(!m.contains_key("akbackup_last_verify_success"), "{m:?}");

    sb.ok(&["verify"]);
    let text = fs::read_to_string(&path).expect("metrics");
    let m = samples(&text);
    assert_eq!(m["akbackup_last_verify_success"], 1.0, "{text}");
    assert_eq!(m["akbackup_last_verify_read_data"], 0.0, "{text}");
    assert_eq!(
        m["akbackup_last_run_success"], 1.0,
        "backup families kept: {text}"
    );
    assert_eq!(
        text.matches("# TYPE akbackup_last_verify_success gauge")
            .count(),
        1,
        "{text}"
    );

    // Flip one byte in the middle of every data pack: verify --read-data fails, and says so.
    for pack in crate::support::files_under(&sb.repo().join("data")) {
        let mut bytes = fs::read(&pack).expect("read pack");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&pack, bytes).expect("write pack");
    }
    let out = sb.cmd(&["verify", "--read-data"]).output().expect("spawn");
    assert_eq!(out.status.code(), Some(1), "verify of a damaged repository");
    let text = fs::read_to_string(&path).expect("metrics");
    let m = samples(&text);
    assert_eq!(m["akbackup_last_verify_success"], 0.0, "{text}");
    assert_eq!(m["akbackup_last_verify_read_data"], 1.0, "{text}");
    let verified_at = m["akbackup_last_verify_timestamp_seconds"];

    fs::write(sb.source().join("b.conf"), b"new").expect("change");
    let _ = sb.cmd(&["backup"]).output().expect("spawn");
    let text = fs::read_to_string(&path).expect("metrics");
    let m = samples(&text);
    assert_eq!(
        m["akbackup_last_verify_success"], 0.0,
        "kept by the backup: {text}"
    );
    assert_eq!(
        m["akbackup_last_verify_timestamp_seconds"], verified_at,
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE akbackup_last_run_success gauge")
            .count(),
        1,
        "{text}"
    );
}
