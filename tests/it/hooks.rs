//! `[[hooks]]` around a backup: order, environment, a failing and a hung `before` hook.

use std::{fs, time::Instant};

use crate::support::Sandbox;

/// A hook line appending the hook's environment to `log` (argv: `sh -c` is the program).
fn recorder(log: &std::path::Path, on: &str, extra: &str) -> String {
    format!(
        "[[hooks]]\non = \"{on}\"\ncommand = [\"sh\", \"-c\", \"echo $AKBACKUP_HOOK set=$AKBACKUP_SET status=$AKBACKUP_STATUS component=$AKBACKUP_COMPONENT >> {}\"]\n{extra}\n",
        log.display()
    )
}

#[test]
fn hooks_run_in_order_with_the_set_and_status() {
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.conf"), b"x").expect("source");
    let log = sb.root().join("hooks.log");
    sb.write_config(&format!(
        "{}\n{}{}{}{}",
        sb.default_config(),
        recorder(&log, "before", ""),
        recorder(&log, "after", ""),
        recorder(&log, "after", "component = \"files.control\""),
        recorder(&log, "failure", ""),
    ));
    sb.init();
    let set = Sandbox::set_id(&sb.backup(&[]));
    let lines: Vec<String> = fs::read_to_string(&log)
        .expect("hooks ran")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        vec![
            "before set= status= component=".to_string(),
            format!("after set={set} status=complete component="),
            format!("after set={set} status=complete component=files.control"),
        ]
    );
}

#[test]
fn failing_or_hung_before_hook_cancels_the_backup() {
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.conf"), b"x").expect("source");
    let log = sb.root().join("hooks.log");
    sb.init();
    for (before, expect) in [
        (
            "[[hooks]]\non = \"before\"\ncommand = [\"sh\", \"-c\", \"echo queue busy >&2; exit 4\"]\n",
            "queue busy",
        ),
        (
            "[[hooks]]\non = \"before\"\ncommand = [\"sleep\", \"30\"]\ntimeout = 1\n",
            "timed out after 1 s",
        ),
    ] {
        let _ = fs::remove_file(&log);
        sb.write_config(&format!(
            "{}\n{before}{}",
            sb.default_config(),
            recorder(&log, "failure", "")
        ));
        let started = Instant::now();
        let out = sb.cmd(&["backup"]).output().expect("spawn");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(expect) && err.contains("nothing was backed up"),
            "{err}"
        );
        assert!(started.elapsed().as_secs() < 20, "a hung hook held the run");
        assert_eq!(
            fs::read_to_string(&log).expect("failure hook ran"),
            "failure set= status=failed component=\n"
        );
        assert!(sb.sets().is_empty(), "a cancelled backup recorded a set");
    }
}

/// The environment a child command left in `file`, one `NAME=value` per line.
fn dumped_env(file: &std::path::Path) -> String {
    fs::read_to_string(file).unwrap_or_else(|e| panic!("{} was not written: {e}", file.display()))
}

#[test]
/// Hooks and restart commands get none of akbackup's secrets: no `AWS_*` variable, no
/// `AKBACKUP_PASSWORD`, although akbackup itself ran with them; they do get the documented
/// `AKBACKUP_HOOK` and the rest of the environment (`PATH`).
fn children_do_not_inherit_credentials() {
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.conf"), b"x").expect("source");
    let hook_env = sb.root().join("hook.env");
    let restart_env = sb.root().join("restart.env");
    let config = sb.default_config().replace(
        &format!(
            "restart = [{}, \"restart\"]",
            crate::support::toml_str(&sb.akd())
        ),
        &format!(
            "restart = [\"sh\", \"-c\", \"env > {}\"]",
            restart_env.display()
        ),
    );
    assert!(config.contains("env >"), "the restart command was replaced");
    sb.write_config(&format!(
        "{config}\n[[hooks]]\non = \"before\"\ncommand = [\"sh\", \"-c\", \"env > {}\"]\n",
        hook_env.display()
    ));
    sb.init();
    let secrets = [
        ("AWS_ACCESS_KEY_ID", "AKIACHILDENVTEST"),
        ("AWS_SECRET_ACCESS_KEY", "ChildEnvSecret0123456789abcdef"),
        ("AWS_SESSION_TOKEN", "ChildEnvSessionToken0123456789"),
        ("AWS_PROFILE", "child-env-profile"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/child-env-credentials",
        ),
        ("AKBACKUP_PASSWORD", crate::support::PASSWORD),
    ];
    let with_secrets = |args: &[&str]| {
        let mut cmd = sb.cmd(args);
        for (name, value) in secrets {
            cmd.env(name, value);
        }
        let out = cmd.output().expect("spawn");
        crate::support::assert_exit(&out, 0, &format!("akbackup {}", args.join(" ")));
    };
    with_secrets(&["backup"]);
    with_secrets(&["restore", "latest", "--yes"]);
    for (who, file) in [("hook", &hook_env), ("restart command", &restart_env)] {
        let env = dumped_env(file);
        for (name, value) in secrets {
            assert!(
                !env.contains(&format!("{name}=")) && !env.contains(value),
                "the {who} got {name}:\n{env}"
            );
        }
        assert!(env.contains("PATH="), "the {who} keeps the rest: {env}");
    }
    assert!(dumped_env(&hook_env).contains("AKBACKUP_HOOK=before"));
}
