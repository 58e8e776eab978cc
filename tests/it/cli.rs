//! What the command line promises outside the data path: exit codes and one-line errors for
//! bad passwords, missing repositories and bad configs; `config show` / `config check`;
//! `init` twice; `--yes` without a terminal; the repository lock.

use std::fs;
use std::process::{Child, Stdio};

use crate::support::{
    self, PASSWORD, Sandbox, all_output, assert_exit, build_rich_tree, hostname, parse_json,
    spawn_lock_holder, toml_str, usage_error,
};

/// A wrong password fails with exit 2 and one stderr line that mentions the password.
#[test]
fn wrong_password_exits_2_with_one_line_naming_password() {
    let sb = Sandbox::new();
    sb.init();
    support::write_file(&sb.password_file(), b"not the password\n");
    support::chmod(&sb.password_file(), 0o600);
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    let line = usage_error(&out, "snapshots with a wrong password");
    assert!(
        line.to_lowercase().contains("password"),
        "does not mention the password: {line}"
    );
}

/// `AKBACKUP_PASSWORD` wins over the password file (here a wrong one).
#[test]
fn env_password_overrides_password_file() {
    let sb = Sandbox::new();
    sb.init();
    support::write_file(&sb.password_file(), b"not the password\n");
    support::chmod(&sb.password_file(), 0o600);
    let out = sb
        .cmd(&["snapshots"])
        .env("AKBACKUP_PASSWORD", PASSWORD)
        .output()
        .expect("spawn");
    assert_exit(&out, 0, "snapshots with AKBACKUP_PASSWORD");
}

/// `password-command` supplies the password instead of a password file.
#[test]
fn password_command_supplies_the_password() {
    let sb = Sandbox::new();
    sb.init();
    let config = sb.default_config().replace(
        &format!("password-file = {}", toml_str(&sb.password_file())),
        &format!(
            "password-command = [\"cat\", {}]",
            toml_str(&sb.password_file())
        ),
    );
    assert!(config.contains("password-command"), "{config}");
    sb.write_config(&config);
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    assert_exit(&out, 0, "snapshots with password-command");
}

/// A repository path that does not exist (never initialised) gives exit 2 and one line
/// naming the path, for reading and writing commands alike.
#[test]
fn missing_repository_exits_2_with_one_line() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 1024);
    let repo = sb.repo();
    let repo = repo.to_str().expect("utf-8");
    for command in ["snapshots", "backup", "verify"] {
        let out = sb.cmd(&[command]).output().expect("spawn");
        let line = usage_error(&out, &format!("{command} without a repository"));
        assert!(
            line.contains(repo),
            "{command}: does not name {repo}: {line}"
        );
    }
    assert!(
        !sb.repo().exists(),
        "a command other than init created the repository"
    );
}

/// `init` on an existing repository refuses with exit 2.
#[test]
fn init_twice_exits_2() {
    let sb = Sandbox::new();
    sb.init();
    let out = sb.cmd(&["init"]).output().expect("spawn");
    usage_error(&out, "second init");
}

/// An unknown key `pathh` gives exit 2 and one line that names `pathh` and suggests `path`.
#[test]
fn unknown_config_key_is_named_with_a_suggestion() {
    let sb = Sandbox::new();
    sb.init();
    let config = sb.default_config().replacen(
        &format!("path = {}", toml_str(&sb.source())),
        &format!("pathh = {}", toml_str(&sb.source())),
        1,
    );
    assert!(config.contains("pathh"), "{config}");
    sb.write_config(&config);
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    let line = usage_error(&out, "config with unknown key");
    assert!(line.contains("pathh"), "does not name `pathh`: {line}");
    let suggestion = line.replace("pathh", "");
    assert!(
        ["`path`", "'path'", "\"path\""]
            .iter()
            .any(|quoted| suggestion.contains(quoted)),
        "does not suggest `path`: {line}"
    );
}

/// A value of the wrong type (`path = 42`) gives exit 2 and one line naming the config file.
#[test]
fn wrong_config_value_type_exits_2_with_one_line() {
    let sb = Sandbox::new();
    let config = sb
        .default_config()
        .replace(&format!("path = {}", toml_str(&sb.source())), "path = 42");
    assert!(config.contains("path = 42"), "{config}");
    sb.write_config(&config);
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    let line = usage_error(&out, "config with wrong type");
    let file = sb.config_path();
    assert!(
        line.contains(file.to_str().expect("utf-8")),
        "does not name the config file: {line}"
    );
}

/// Unparsable TOML gives exit 2 and one line naming the config file (also for `config check`).
#[test]
fn unparsable_config_exits_2_with_one_line() {
    let sb = Sandbox::new();
    sb.write_config("[repository\npath = \n");
    let file = sb.config_path();
    let file = file.to_str().expect("utf-8");
    for args in [&["snapshots"][..], &["config", "check"][..]] {
        let out = sb.cmd(args).output().expect("spawn");
        let line = usage_error(&out, &format!("{} with unparsable config", args.join(" ")));
        assert!(line.contains(file), "does not name {file}: {line}");
    }
}

/// `--config` naming a missing file gives exit 2 and one line naming it.
#[test]
fn missing_config_file_exits_2_naming_it() {
    let sb = Sandbox::new();
    let missing = sb.root().join("nope.toml");
    let missing = missing.to_str().expect("utf-8");
    let out = sb
        .cmd(&["--config", missing, "snapshots"])
        .output()
        .expect("spawn");
    let line = usage_error(&out, "missing config file");
    assert!(line.contains(missing), "does not name {missing}: {line}");
}

/// A password file readable by group/other (0644) gives exit 2 naming the file and the
/// fix `chmod 600`.
#[test]
fn group_readable_password_file_exits_2_suggesting_chmod_600() {
    let sb = Sandbox::new();
    sb.init();
    support::chmod(&sb.password_file(), 0o644);
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    let line = usage_error(&out, "password file with mode 0644");
    let file = sb.password_file();
    assert!(
        line.contains(file.to_str().expect("utf-8")),
        "does not name the password file: {line}"
    );
    assert!(
        line.contains("chmod 600"),
        "does not suggest `chmod 600`: {line}"
    );
}

/// An in-place restore without a terminal and without `--yes` refuses with exit 2 and
/// leaves the source alone.
#[test]
fn in_place_restore_without_yes_and_terminal_exits_2() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 1024);
    sb.init();
    sb.backup(&[]);
    support::write_file(&sb.source().join("etc/main.conf"), b"changed\n");
    let out = sb.cmd(&["restore", "latest"]).output().expect("spawn");
    usage_error(&out, "in-place restore without --yes");
    assert_eq!(
        fs::read(sb.source().join("etc/main.conf")).expect("read"),
        b"changed\n"
    );
    assert!(sb.restart_calls().is_empty(), "restart ran");
}

/// `config show` (text and `--json`) never prints the `AKBACKUP_PASSWORD` value nor the
/// password file's contents, but does show the effective repository path.
#[test]
fn config_show_never_prints_the_password() {
    let sb = Sandbox::new();
    let secret = "Zq9-env-secret-7731";
    for json in [false, true] {
        let mut args = vec!["config", "show"];
        if json {
            args.insert(0, "--json");
        }
        let out = sb
            .cmd(&args)
            .env("AKBACKUP_PASSWORD", secret)
            .output()
            .expect("spawn");
        assert_exit(&out, 0, &args.join(" "));
        let text = all_output(&out);
        assert!(
            !text.contains(secret),
            "{}: printed the env password:\n{text}",
            args.join(" ")
        );
        assert!(
            !text.contains(PASSWORD),
            "{}: printed the file password:\n{text}",
            args.join(" ")
        );
        assert!(
            text.contains(sb.repo().to_str().expect("utf-8")),
            "{}: does not show the repository path:\n{text}",
            args.join(" ")
        );
        if json {
            parse_json(&out);
        }
    }
}

/// `config check` exits 0 for a good config with an initialised repository.
#[test]
fn config_check_passes_for_a_good_config() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 1024);
    sb.init();
    sb.ok(&["config", "check"]);
}

/// `config check` exits 1 and lists the problem, naming the source path, when the source
/// dir is missing.
#[test]
fn config_check_lists_a_missing_source_path() {
    let sb = Sandbox::new();
    sb.init();
    fs::remove_dir_all(sb.source()).expect("remove source");
    let out = sb.cmd(&["config", "check"]).output().expect("spawn");
    assert_exit(&out, 1, "config check with a missing source");
    let text = all_output(&out);
    let source = sb.source();
    assert!(
        text.contains(source.to_str().expect("utf-8")),
        "the problem list does not name {}:\n{text}",
        source.display()
    );
}

/// A child process that is killed when the guard drops.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `<repo>/akbackup.lock` claiming `pid` on `host`.
fn write_lock(sb: &Sandbox, pid: u32, host: &str) {
    let lock = serde_json::json!({
        "pid": pid,
        "host": host,
        "command": "backup",
        "time": "2026-01-01T00:00:00Z",
    });
    fs::write(sb.lock_file(), lock.to_string()).expect("write lock");
}

/// The pid of a process that has already exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait true");
    pid
}

/// A lock held by a live akbackup on this host makes `backup` exit 2 naming the pid; the
/// lock stays and no set is made. (The holder is `sleep` under a name with `akbackup` in it:
/// a live process of another program holds a reused pid, see the next test.)
#[test]
fn lock_held_by_live_process_blocks_backup_naming_pid() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 1024);
    sb.init();
    let holder = Reaped(spawn_lock_holder(sb.root(), 300));
    let pid = holder.0.id();
    write_lock(&sb, pid, &hostname());

    let out = sb.cmd(&["backup"]).output().expect("spawn");
    let line = usage_error(&out, "backup while locked");
    assert!(
        line.contains(&pid.to_string()),
        "does not name pid {pid}: {line}"
    );
    assert!(
        sb.lock_file().exists(),
        "the live holder's lock was removed"
    );
    drop(holder);
    fs::remove_file(sb.lock_file()).expect("remove lock");
    assert!(sb.sets().is_empty(), "a set was made despite the lock");
}

/// A lock file naming a live process that is not akbackup (the crashed holder's pid was
/// reused) is stale too: `backup` takes it over instead of waiting forever.
#[test]
fn lock_naming_a_reused_pid_is_stale() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 1024);
    sb.init();
    let holder = Reaped(
        std::process::Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep"),
    );
    write_lock(&sb, holder.0.id(), &hostname());
    // --wait=30: were the lock respected, this fails after 30 s instead of hanging.
    let out = sb.cmd(&["backup", "--wait=30"]).output().expect("spawn");
    assert_exit(&out, 0, "backup over a lock naming a reused pid");
    assert_eq!(sb.sets().len(), 1, "no set was made");
    drop(holder);
}

/// A lock left by a dead process on this host is stale: it is removed with a warning and
/// `backup` succeeds.
#[test]
fn stale_lock_of_dead_process_is_removed_and_backup_proceeds() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 1024);
    sb.init();
    write_lock(&sb, dead_pid(), &hostname());

    let out = sb.ok(&["backup"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.to_lowercase().contains("lock"),
        "no warning about the stale lock on stderr:\n{stderr}"
    );
    assert!(
        !sb.lock_file().exists(),
        "lock left behind after the backup"
    );
    assert_eq!(sb.sets().len(), 1);
}

/// A lock from another host cannot be judged stale from here: `backup` exits 2 naming it.
#[test]
fn lock_from_another_host_is_not_treated_as_stale() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 1024);
    sb.init();
    let other = "backup-peer.invalid";
    write_lock(&sb, dead_pid(), other);

    let out = sb.cmd(&["backup"]).output().expect("spawn");
    let line = usage_error(&out, "backup locked from another host");
    assert!(line.contains(other), "does not name host {other}: {line}");
    assert!(sb.lock_file().exists(), "another host's lock was removed");
}

/// `--only` naming a component that is not configured gives exit 2 and one line naming it;
/// `--only files.control` makes a set of just that component.
#[test]
fn backup_only_selects_a_configured_component() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 1024);
    sb.init();
    let out = sb
        .cmd(&["backup", "--only", "files.nope"])
        .output()
        .expect("spawn");
    let line = usage_error(&out, "backup --only files.nope");
    assert!(
        line.contains("files.nope"),
        "does not name files.nope: {line}"
    );
    assert!(
        sb.sets().is_empty(),
        "a set was made for an unknown component"
    );

    let summary = sb.backup(&["--only", "files.control"]);
    support::component(&summary, support::COMPONENT);
}

/// A reader that closes stdout early (`akbackup ... | head`) is not an error: exit 0 and
/// nothing on stderr, for text and `--json` output alike.
#[test]
fn closed_stdout_pipe_is_not_an_error() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 1024);
    sb.init();
    // With a set to list there is real output to write (an empty list may not hit the pipe).
    sb.backup(&[]);
    for args in [&["snapshots"][..], &["--json", "snapshots"][..]] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_akbackup"))
            .args(args)
            .env("AKBACKUP_CONFIG", sb.config_path())
            .env_remove("AKBACKUP_PASSWORD")
            .env("XDG_CACHE_HOME", sb.root().join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn akbackup");
        // Close the read end before akbackup has opened the repository, let alone printed.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait akbackup");
        assert_exit(&out, 0, &format!("{} into a closed pipe", args.join(" ")));
        assert!(
            out.stderr.is_empty(),
            "{}: stderr is not empty:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A hook `timeout` of `i64::MAX` seconds (which overflowed the deadline arithmetic: a panic,
/// exit 101, in `backup`) is refused by `config check` and by `backup` with exit 2 and one
/// line naming the key and the range; so is an absurd `keep-within`.
#[test]
fn huge_timeouts_are_refused_when_the_config_is_read() {
    let sb = Sandbox::new();
    sb.init();
    for (extra, names) in [
        (
            "[[hooks]]\non = \"before\"\ncommand = [\"true\"]\ntimeout = 9223372036854775807\n",
            "timeout = 9223372036854775807",
        ),
        (
            "[retention]\nkeep-within = \"9223372036854775807y\"\n",
            "keep-within",
        ),
        (
            "[monitoring]\nwebhook = \"http://127.0.0.1:9/x\"\nwebhook-timeout = 9223372036854775807\n",
            "webhook-timeout",
        ),
    ] {
        sb.write_config(&format!("{extra}\n{}", sb.default_config()));
        for args in [&["config", "check"][..], &["backup"][..]] {
            let out = sb.cmd(args).output().expect("spawn");
            let line = usage_error(&out, &format!("{} with {names}", args.join(" ")));
            assert!(line.contains(names), "{line}");
        }
    }
    sb.write_config(&sb.default_config());
    assert!(sb.sets().is_empty(), "a refused config made a set");
}

/// A relative path in any path key (SSDB path, repository path, password-file, work-dir) is
/// refused with exit 2 and one line naming the key: the meaning of the config must not
/// depend on the directory a timer starts akbackup in.
#[test]
fn relative_paths_are_refused() {
    let sb = Sandbox::new();
    let files = format!(
        "[files.control]\npath = {}\nrestart = []\n",
        toml_str(&sb.source())
    );
    let pw = toml_str(&sb.password_file());
    let repo = toml_str(&sb.repo());
    for (config, key) in [
        (
            format!("[repository]\npath = \"repo\"\npassword-file = {pw}\n\n{files}"),
            "[repository] path \"repo\"",
        ),
        (
            format!("[repository]\npath = {repo}\npassword-file = \"password\"\n\n{files}"),
            "[repository] password-file \"password\"",
        ),
        (
            format!(
                "[repository]\npath = {repo}\npassword-file = {pw}\n\n{files}\n[ssdb.stat]\npath = \"var/lib/ssdb/stat\"\n"
            ),
            "[ssdb.stat] path \"var/lib/ssdb/stat\"",
        ),
        (
            format!(
                "[repository]\npath = {repo}\npassword-file = {pw}\n\n[repositories.off]\nurl = \"s3://b/p\"\nwork-dir = \"work\"\n\n{files}"
            ),
            "[repositories.off] work-dir \"work\"",
        ),
    ] {
        sb.write_config(&config);
        let out = sb.cmd(&["config", "check"]).output().expect("spawn");
        let line = usage_error(&out, key);
        assert!(
            line.contains(key) && line.contains("relative"),
            "{key}: {line}"
        );
    }
}

/// A config holding `secret-access-key` that group or others can read (0644) is refused like
/// a 0644 password file: exit 2, one line naming the file, the secret's key and `chmod 600`;
/// at 0600 it loads.
#[test]
fn group_readable_config_with_a_secret_exits_2_suggesting_chmod_600() {
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "[repositories.off]\nurl = \"s3://b/p\"\nwork-dir = {}\naccess-key-id = \"AKIAEXAMPLE\"\n\
         secret-access-key = \"ConfigFileSecret0123456789\"\n\n{}",
        toml_str(&sb.root().join("work")),
        sb.default_config()
    ));
    sb.ok(&["config", "show"]);
    support::chmod(&sb.config_path(), 0o644);
    let out = sb.cmd(&["config", "show"]).output().expect("spawn");
    let line = usage_error(&out, "config with a secret at mode 0644");
    let file = sb.config_path();
    assert!(
        line.contains(file.to_str().expect("utf-8"))
            && line.contains("secret-access-key in [repositories.off]")
            && line.contains("chmod 600"),
        "{line}"
    );
    assert!(!all_output(&out).contains("ConfigFileSecret0123456789"));
    // A config without secrets may stay world-readable.
    sb.write_config(&sb.default_config());
    support::chmod(&sb.config_path(), 0o644);
    sb.ok(&["config", "show"]);
}

/// A repository inside a component (the control module at `<root>/opt/altcraft`, the
/// repository at `<root>/opt/altcraft/repo`, also spelled with `..`), one containing it, and a
/// `[repositories.X]` work dir inside it are each refused by `config check` and by `backup`
/// with exit 2 and one line naming both paths; nothing is written.
#[test]
fn repository_inside_or_around_a_component_is_refused() {
    let sb = Sandbox::new();
    let src = sb.source();
    let pw = toml_str(&sb.password_file());
    let files = format!("[files.control]\npath = {}\nrestart = []\n", toml_str(&src));
    let inside = src.join("repo");
    let dotted = sb.root().join("opt/x/../altcraft/repo");
    let around = sb.root().join("opt");
    let work = src.join("work");
    for (config, dir) in [
        (
            format!(
                "[repository]\npath = {}\npassword-file = {pw}\n\n{files}",
                toml_str(&inside)
            ),
            inside.clone(),
        ),
        (
            format!(
                "[repository]\npath = {}\npassword-file = {pw}\n\n{files}",
                toml_str(&dotted)
            ),
            inside.clone(),
        ),
        (
            format!(
                "[repository]\npath = {}\npassword-file = {pw}\n\n{files}",
                toml_str(&around)
            ),
            around.clone(),
        ),
        (
            format!(
                "[repository]\npath = {}\npassword-file = {pw}\n\n[repositories.off]\nurl = \"s3://b/p\"\nwork-dir = {}\n\n{files}",
                toml_str(&sb.repo()),
                toml_str(&work)
            ),
            work.clone(),
        ),
    ] {
        sb.write_config(&config);
        for args in [&["config", "check"][..], &["backup"][..], &["init"][..]] {
            let out = sb.cmd(args).output().expect("spawn");
            let line = usage_error(&out, &format!("{} with {}", args.join(" "), dir.display()));
            assert!(
                line.contains(&dir.display().to_string())
                    && line.contains(&src.display().to_string())
                    && line.contains("files.control"),
                "{line}"
            );
        }
        assert!(!inside.exists() && !work.exists(), "something was written");
    }
}
