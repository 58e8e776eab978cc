//! `schedule` (systemd service + timer) and `completions`.

use std::fs;

use crate::support::Sandbox;

/// `--dry-run` prints both units, with the time and the config, and writes nothing.
#[test]
fn dry_run_prints_the_units() {
    let sb = Sandbox::new();
    let dir = sb.root().join("units");
    let out = sb.ok(&["schedule", "install", "--daily", "3:05", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OnCalendar=*-*-* 03:05:00\n"), "{text}");
    assert!(text.contains("Persistent=true\n"), "{text}");
    assert!(text.contains("IOSchedulingClass=idle\n"), "{text}");
    let config = fs::canonicalize(sb.config_path()).expect("config path");
    assert!(
        text.contains(&format!("--config {} backup\n", config.display())),
        "{text}"
    );
    assert!(!dir.exists(), "a dry run wrote units");
}

/// The installed units pass `systemd-analyze verify` (installed by scripts/test), and
/// `remove` deletes them; a bad time is one line, exit 2.
#[test]
fn installed_units_verify_and_remove() {
    let sb = Sandbox::new();
    let dir = sb.root().join("units");
    let dir_s = dir.display().to_string();
    sb.ok(&[
        "schedule",
        "install",
        "--daily",
        "23:59",
        "--unit-dir",
        &dir_s,
    ]);
    let service = dir.join("akbackup.service");
    let timer = dir.join("akbackup.timer");
    assert!(
        fs::read_to_string(&timer)
            .expect("timer written")
            .contains("OnCalendar=*-*-* 23:59:00"),
        "timer content"
    );
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&service)
        .arg(&timer)
        .output()
        .expect("systemd-analyze (scripts/test installs it)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let out = sb.ok(&["schedule", "remove", "--unit-dir", &dir_s]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed"));
    assert!(!service.exists() && !timer.exists(), "units left behind");

    let out = sb
        .cmd(&["schedule", "install", "--daily", "25:00", "--dry-run"])
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("HH:MM"), "{err}");
}

/// Completion scripts name the subcommands for each shell.
#[test]
fn completions_for_each_shell() {
    let sb = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = sb.ok(&["completions", shell]);
        let text = String::from_utf8_lossy(&out.stdout);
        for word in ["backup", "restore", "copy", "schedule"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
}

/// A config path with `%`, `$` and a space goes into the unit the way systemd reads it back
/// (`%%`, `$$`, double-quoted) and the units pass `systemd-analyze verify`; a config path with
/// a newline, which would inject a unit setting, is refused with exit 2 and one line.
#[test]
fn config_paths_are_escaped_or_refused_in_units() {
    let sb = Sandbox::new();
    let odd = sb.root().join("cfg 100% $HOME.toml");
    fs::write(&odd, sb.default_config()).expect("write config");
    let odd = fs::canonicalize(&odd).expect("config path");
    let odd_s = odd.display().to_string();
    let out = sb.ok(&["--config", &odd_s, "schedule", "install", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let escaped = odd_s.replace('%', "%%").replace('$', "$$");
    assert!(
        text.contains(&format!("--config \"{escaped}\" backup\n")),
        "{text}"
    );
    let dir = sb.root().join("units");
    let dir_s = dir.display().to_string();
    sb.ok(&[
        "--config",
        &odd_s,
        "schedule",
        "install",
        "--unit-dir",
        &dir_s,
    ]);
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("akbackup.service"))
        .arg(dir.join("akbackup.timer"))
        .output()
        .expect("systemd-analyze (scripts/test installs it)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    let injected = sb.root().join("x.toml\nExecStartPre=false");
    fs::write(&injected, sb.default_config()).expect("write config");
    let injected_s = injected.display().to_string();
    let out = sb
        .cmd(&["--config", &injected_s, "schedule", "install", "--dry-run"])
        .output()
        .expect("spawn");
    let line = crate::support::usage_error(&out, "schedule install with a newline in the path");
    assert!(line.contains("control character"), "{line}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ExecStartPre"),
        "the newline reached a unit"
    );
}
