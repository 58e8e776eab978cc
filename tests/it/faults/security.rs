//! Cheap security checks: staging directories are 0700; a restore never follows a symlink
//! out of its target (planted in the target, or smuggled in through an imported archive);
//! the repository password never reaches a child's argv or environment, nor any output.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::{Campaign, command, kill9, one_line, run, wait_or_kill};
use crate::support::{self, PASSWORD, Sandbox, build_random_tree, build_rich_tree};

/// Entries of `dir` whose names start with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0)
}

/// Runs `args` while watching `dir` for a staging directory matching `prefix`; when one
/// appears, reads its mode, kills the run and returns the modes of the ones found. Up to 20
/// runs. Watching, not killing at seeded times: a staging directory lives a few milliseconds
/// in a small restore, and 40 blind kills once missed it every time.
fn staging_modes(sb: &Sandbox, args: &[&str], dir: &Path, prefix: &str) -> Vec<(PathBuf, u32)> {
    for _ in 0..20 {
        let mut child = command(sb, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn akbackup");
        loop {
            // Directories only: the owner file beside each stage is a 0600 lock file.
            let found: Vec<PathBuf> = named(dir, prefix)
                .into_iter()
                .filter(|p| p.is_dir())
                .collect();
            if !found.is_empty() {
                let out: Vec<_> = found.iter().map(|p| (p.clone(), mode(p))).collect();
                kill9(child.id());
                let _ = child.wait();
                for p in named(dir, prefix) {
                    let _ = std::fs::remove_dir_all(p);
                }
                return out;
            }
            if child.try_wait().expect("wait akbackup").is_some() {
                break;
            }
        }
    }
    Vec::new()
}

#[test]
fn security_checks() {
    let mut c = Campaign::new("security");
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 64 * 1024);
    build_random_tree(&sb.source().join("big"), 16, 256 * 1024);
    // Restart command and hook record their argv, their parent's argv and their environment.
    let spy = sb.root().join("spy.sh");
    let spy_log = sb.root().join("spy.log");
    support::write_file(
        &spy,
        format!(
            "#!/bin/sh\n{{ echo \"argv: $*\"; echo \"parent: $(tr '\\0' ' ' < /proc/$PPID/cmdline)\"; env; }} >> '{}'\n",
            spy_log.display()
        )
        .as_bytes(),
    );
    support::chmod(&spy, 0o755);
    sb.write_config(&format!(
        "{}\n[[hooks]]\non = \"after\"\ncommand = [{}, \"hook\"]\n",
        sb.default_config()
            .replace(&support::toml_str(&sb.akd()), &support::toml_str(&spy)),
        support::toml_str(&spy)
    ));
    super::init(&sb, None);
    sb.backup(&[]);

    // Staging directories: backup's in the repository, in-place restore's next to the source.
    let modes = staging_modes(&sb, &["backup"], &sb.repo(), ".akbackup-staging-");
    c.record(
        "backup staging is 0700",
        match modes.as_slice() {
            [] => Err("no staging directory was caught".to_string()),
            m if m.iter().all(|(_, mode)| *mode == 0o700) => Ok(format!("{m:?}")),
            m => Err(format!("modes {m:?}")),
        },
    );
    let parent = sb.source().parent().expect("parent").to_path_buf();
    let modes = staging_modes(
        &sb,
        &["restore", "latest", "--yes", "--no-restart"],
        &parent,
        ".altcraft.akbackup-restore-",
    );
    c.record(
        "in-place restore staging is 0700",
        match modes.as_slice() {
            [] => Err("no staging directory was caught".to_string()),
            m if m.iter().all(|(_, mode)| *mode == 0o700) => Ok(format!("{m:?}")),
            m => Err(format!("modes {m:?}")),
        },
    );
    for p in named(&parent, "altcraft.akbackup-prev-") {
        let _ = std::fs::remove_dir_all(p);
    }

    // The password through the environment: never in a child's argv or environment.
    let _ = std::fs::remove_file(&spy_log);
    let mut cmd = command(&sb, &["restore", "latest", "--yes"]);
    cmd.env("AKBACKUP_PASSWORD", PASSWORD);
    let out = wait_or_kill(cmd.spawn().expect("spawn"), Duration::from_secs(240));
    let mut cmd = command(&sb, &["--json", "backup"]);
    cmd.env("AKBACKUP_PASSWORD", PASSWORD);
    let out2 = wait_or_kill(cmd.spawn().expect("spawn"), Duration::from_secs(240));
    let spied = std::fs::read_to_string(&spy_log).unwrap_or_default();
    c.record(
        "password never in a child's argv or environment",
        if out.status.code() != Some(0) || out2.status.code() != Some(0) {
            Err(format!(
                "restore/backup failed: {} {}",
                one_line(&out.stderr),
                one_line(&out2.stderr)
            ))
        } else if spied.matches("argv: ").count() < 2 {
            Err(format!("the spy did not run twice: {spied}"))
        } else if spied.contains(PASSWORD) {
            Err("the password reached a restart command or hook".to_string())
        } else {
            Ok("restart command and hook saw neither argv nor env with it".to_string())
        },
    );
    let printed = format!(
        "{}{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out2.stdout),
        String::from_utf8_lossy(&out2.stderr)
    );
    c.record(
        "password never printed (text, --json)",
        if printed.contains(PASSWORD) {
            Err("printed".to_string())
        } else {
            Ok("not printed".to_string())
        },
    );

    // A symlink planted in the target: nothing may be written through it.
    let outside = sb.root().join("outside");
    for (what, link_at) in [
        ("target/files is a symlink out", "files"),
        ("target/files/control is a symlink out", "files/control"),
    ] {
        let target = sb.root().join("planted");
        let _ = std::fs::remove_dir_all(&target);
        let _ = std::fs::remove_dir_all(&outside);
        std::fs::create_dir_all(&outside).expect("mkdir outside");
        support::symlink(&outside, &target.join(link_at));
        let out = run(
            &sb,
            &[
                "restore",
                "latest",
                "--target",
                target.to_str().expect("utf-8"),
            ],
        );
        let written = support::files_under(&outside).len();
        c.record(
            what,
            if written > 0 {
                Err(format!(
                    "{written} files written outside the target through the link (exit {:?})",
                    out.status.code()
                ))
            } else if out.status.code() == Some(0) {
                Err("exit 0 although the target holds a symlink out".to_string())
            } else if !said(&out).contains("symlink") {
                Err(format!(
                    "refused, but the message does not say why: {}",
                    said(&out)
                ))
            } else {
                Ok(said(&out))
            },
        );
    }

    // A target another user can change: they could swap a directory in it for a symlink
    // while root writes. Refused, naming the directory and why (as root only: a non-root test
    // run cannot make a directory owned by someone else).
    if nix::unistd::geteuid().is_root() {
        let shared = sb.root().join("shared");
        let _ = std::fs::remove_dir_all(&shared);
        std::fs::create_dir_all(&shared).expect("mkdir shared");
        let nobody = nix::unistd::Uid::from_raw(65534);
        for (what, setup, expect) in [
            ("target owned by another user", 0, "belongs to uid 65534"),
            ("target under a world-writable dir", 1, "anyone can write"),
        ] {
            let target = shared.join(format!("t{setup}"));
            if setup == 0 {
                std::fs::create_dir_all(&target).expect("mkdir target");
                nix::unistd::chown(&target, Some(nobody), None).expect("chown target");
                support::chmod(&shared, 0o755);
            } else {
                support::chmod(&shared, 0o777);
            }
            let out = run(
                &sb,
                &[
                    "restore",
                    "latest",
                    "--target",
                    target.to_str().expect("utf-8"),
                ],
            );
            let line = said(&out);
            c.record(
                what,
                if out.status.code() == Some(0) {
                    Err("restored into it".to_string())
                } else if !line.contains(expect) || !line.contains("not safe") {
                    Err(format!("refused without naming why ({expect}): {line}"))
                } else if target.exists() && !support::files_under(&target).is_empty() {
                    Err("refused, but files were written".to_string())
                } else {
                    Ok(line)
                },
            );
        }
        support::chmod(&shared, 0o755);
    }

    // An archive with a symlinked directory and a file "under" it.
    let evil_src = sb.root().join("evil");
    std::fs::create_dir_all(evil_src.join("a/opt/altcraft")).expect("mkdir");
    support::symlink(&outside, &evil_src.join("a/opt/altcraft/escape"));
    support::write_file(&evil_src.join("b/opt/altcraft/escape/pwned"), b"pwned\n");
    let archive = sb.root().join("altcraft-2019-06-01.tar");
    let tar = |args: &[&str]| {
        let st = std::process::Command::new("tar")
            .args(args)
            .status()
            .expect("spawn tar");
        assert!(st.success(), "tar {args:?}");
    };
    let _ = std::fs::remove_dir_all(&outside);
    std::fs::create_dir_all(&outside).expect("mkdir outside");
    let a = evil_src.join("a");
    let b = evil_src.join("b");
    tar(&[
        "-cf",
        archive.to_str().expect("utf-8"),
        "-C",
        a.to_str().expect("utf-8"),
        "opt",
    ]);
    tar(&[
        "-rf",
        archive.to_str().expect("utf-8"),
        "-C",
        b.to_str().expect("utf-8"),
        "opt/altcraft/escape/pwned",
    ]);
    let st = std::process::Command::new("gzip")
        .arg("-f")
        .arg(&archive)
        .status()
        .expect("gzip");
    assert!(st.success());
    let gz = sb.root().join("altcraft-2019-06-01.tar.gz");
    let before = super::sets(&sb, None).map(|s| s.len()).unwrap_or(0);
    let out = run(&sb, &["import", gz.to_str().expect("utf-8")]);
    let after = super::sets(&sb, None).map(|s| s.len()).unwrap_or(0);
    let written = support::files_under(&outside).len();
    c.record(
        "import of an archive with a file under a symlinked dir",
        if written > 0 {
            Err(format!(
                "{written} files written outside through the archive's link"
            ))
        } else if out.status.code() == Some(0) {
            // Accepted: then a restore of it must not escape either.
            let target = sb.root().join("evil-target");
            let out = run(
                &sb,
                &[
                    "restore",
                    "latest",
                    "--target",
                    target.to_str().expect("utf-8"),
                ],
            );
            if support::files_under(&outside).is_empty() {
                Ok(format!(
                    "imported ({before} -> {after} sets), restore exit {:?}, nothing outside",
                    out.status.code()
                ))
            } else {
                Err("the restore of the imported set wrote outside its target".to_string())
            }
        } else if after != before {
            Err("refused but a set was recorded".to_string())
        } else {
            Ok(format!("refused: {}", one_line(&out.stderr)))
        },
    );
    c.finish();
}

/// What a refused restore told the operator: its report (stdout, where the failed component
/// and its error are listed) and its log (stderr), on one line.
fn said(out: &std::process::Output) -> String {
    one_line(support::all_output(out).as_bytes())
}
