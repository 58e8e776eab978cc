//! Repositories on another server over SFTP (`url = "sftp://user@host:port/path"`), against a
//! real OpenSSH server started per test (`support::sshd`, Debian `openssh-server`) on a
//! loopback port with its own host key and `authorized_keys`: a round trip; `copy` from S3 to
//! SFTP to a local repository; the standard `restic` client reading the SFTP repository; an
//! unknown and a changed host key (exit 2 naming the key's fingerprint); a key the server does
//! not accept; a server that accepts TCP and never speaks SSH (bounded by `connect-timeout`); a
//! backup killed mid-upload and run again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::s3::{S3Server, files_section};
use crate::support::sshd::Sshd;
use crate::support::{
    self, DEFAULT_EXCLUDES, Sandbox, assert_exit, assert_trees_equal_excluding, build_random_tree,
    build_rich_tree, toml_str, usage_error,
};

/// The packs under `data/` (names without `-tmp-`) and their sizes; files renamed or removed
/// while listed are skipped.
fn packs(data: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dirs) = std::fs::read_dir(data) else {
        return out;
    };
    for dir in dirs.filter_map(Result::ok) {
        let Ok(files) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for f in files.filter_map(Result::ok) {
            let name = f.file_name().to_string_lossy().into_owned();
            if let (false, Ok(m)) = (name.contains("-tmp-"), f.metadata()) {
                out.insert(name, m.len());
            }
        }
    }
    out
}

/// The standard `restic` client on the SFTP repository of `sb`, through `ssh -s sftp` with
/// the test server's key and known_hosts.
fn restic_over_sftp(sb: &Sandbox, sshd: &Sshd, args: &[&str]) -> std::process::Output {
    let restic = support::find_on_path("restic").expect("restic (scripts/test installs it)");
    std::process::Command::new(restic)
        .args([
            "-r",
            &format!("sftp:root@127.0.0.1:{}", remote_dir(sb).display()),
        ])
        .args([
            "--no-cache",
            "-o",
            &format!("sftp.command={}", sshd.sftp_command()),
        ])
        .args(args)
        .env("RESTIC_PASSWORD_FILE", sb.password_file())
        .output()
        .expect("spawn restic")
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Where the repository lives on the server (the same machine: a directory in the sandbox).
fn remote_dir(sb: &Sandbox) -> PathBuf {
    sb.root().join("remote/repo")
}

/// The `[repository]` keys of the SFTP repository of `sb` on `sshd`; one connection, the
/// case where an operation holding a session while asking for another would hang.
fn sftp_keys(sb: &Sandbox, sshd: &Sshd) -> String {
    format!(
        "url = \"sftp://root@127.0.0.1:{port}{dir}\"\nidentity-file = {key}\nknown-hosts = {kh}\n\
         password-file = {pw}\ntimeout = 20\nconnect-timeout = 5\nwork-dir = {work}\n\
         connections = 1\n",
        port = sshd.port(),
        dir = remote_dir(sb).display(),
        key = toml_str(&sshd.client_key()),
        kh = toml_str(&sshd.known_hosts()),
        pw = toml_str(&sb.password_file()),
        work = toml_str(&sb.root().join("work")),
    )
}

/// A sandbox whose repository is on `sshd`, with the files component.
fn sftp_sandbox(sshd_dir: &str) -> (Sandbox, Sshd) {
    let sb = Sandbox::new();
    let sshd = Sshd::start(&sb.root().join(sshd_dir));
    sb.write_config(&format!(
        "[repository]\n{}\n{}",
        sftp_keys(&sb, &sshd),
        files_section(&sb)
    ));
    (sb, sshd)
}

/// Init, backup, `snapshots`, `verify --read-data`, `restore --target` and `doctor` through
/// SFTP; the restic layout is on the server; the standard restic client lists and checks it.
#[test]
fn sftp_round_trip_and_restic_reads_it() {
    let (sb, sshd) = sftp_sandbox("sshd");
    build_rich_tree(&sb.source(), 200_000);
    sb.init();
    assert!(
        remote_dir(&sb).join("config").is_file(),
        "no repository on the server"
    );
    let set = Sandbox::set_id(&sb.backup(&[]));
    assert!(
        std::fs::read_dir(remote_dir(&sb).join("snapshots"))
            .expect("snapshots/")
            .count()
            >= 1
    );
    sb.ok(&["verify", "--read-data"]);
    let target = sb.root().join("restored");
    sb.ok(&["restore", "latest", "--target", arg(&target), "--yes"]);
    assert_trees_equal_excluding(
        &sb.source(),
        &target.join("files/control"),
        DEFAULT_EXCLUDES,
    );

    let out = restic_over_sftp(&sb, &sshd, &["snapshots", "--json"]);
    let check = restic_over_sftp(&sb, &sshd, &["check", "--read-data"]);
    assert!(
        check.status.success(),
        "restic check --read-data over SFTP: {}",
        support::all_output(&check)
    );
    assert!(
        out.status.success(),
        "restic over SFTP: {}",
        support::all_output(&out)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&set[..8]),
        "restic does not list {set}: {listed}"
    );

    // Retention and prune on the server; doctor writes a test file there.
    std::fs::write(sb.source().join("new-file"), b"day two").expect("write");
    sb.backup(&[]);
    sb.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(sb.sets().len(), 1);
    sb.ok(&["verify", "--read-data"]);
    let out = sb.cmd(&["doctor"]).output().expect("spawn");
    let text = support::all_output(&out);
    assert!(
        text.contains("repository: writable") && text.contains("a file was written and removed"),
        "{text}"
    );
}

/// `copy` takes a set from an S3 bucket to the SFTP server, and from there to a local
/// repository, which restores the source.
#[test]
fn copy_s3_to_sftp_to_local() {
    let bucket = "akb-sftp";
    let server = S3Server::start(&[bucket]);
    let sb = Sandbox::new();
    let sshd = Sshd::start(&sb.root().join("sshd"));
    build_rich_tree(&sb.source(), 100_000);
    sb.write_config(&format!(
        "[repository]\n{s3}\n[repositories.server]\n{sftp}\n[repositories.local]\npath = {local}\n\
         password-file = {pw}\n\n{files}",
        s3 = server.repo_keys(&sb, bucket, "prod"),
        sftp = sftp_keys(&sb, &sshd),
        local = toml_str(&sb.root().join("local")),
        pw = toml_str(&sb.password_file()),
        files = files_section(&sb),
    ));
    sb.init();
    sb.ok(&["--repo", "server", "init"]);
    sb.ok(&["--repo", "local", "init"]);
    sb.backup(&[]);
    sb.ok(&["copy", "--to", "server"]);
    sb.ok(&["copy", "--from", "server", "--to", "local"]);
    let target = sb.root().join("restored");
    sb.ok(&[
        "--repo",
        "local",
        "restore",
        "latest",
        "--target",
        arg(&target),
    ]);
    assert_trees_equal_excluding(
        &sb.source(),
        &target.join("files/control"),
        DEFAULT_EXCLUDES,
    );
}

/// An unknown host key and a changed one are refused with exit 2 on one line that names the
/// server and the key's fingerprint; so is a client key the server does not accept.
#[test]
fn host_keys_are_checked_strictly_and_wrong_keys_refused() {
    let (sb, mut sshd) = sftp_sandbox("sshd");
    sb.init();

    std::fs::write(sshd.known_hosts(), "").expect("empty known_hosts");
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    let line = usage_error(&out, "an unknown host key");
    eprintln!("unknown host key: {line}");
    assert!(
        line.contains("is not in") && line.contains(&sshd.fingerprint()),
        "{line}"
    );

    sshd.trust_host_key();
    sshd.change_host_key();
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    let line = usage_error(&out, "a changed host key");
    eprintln!("changed host key: {line}");
    assert!(
        line.contains("CHANGED") && line.contains(&sshd.fingerprint()),
        "{line}"
    );

    sshd.trust_host_key();
    sb.ok(&["snapshots"]);
    let other = sb.root().join("other_key");
    crate::support::sshd::keygen(&other);
    let config = std::fs::read_to_string(sb.config_path())
        .expect("config")
        .replace(&toml_str(&sshd.client_key()), &toml_str(&other));
    sb.write_config(&config);
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    let line = usage_error(&out, "a key the server refuses");
    eprintln!("refused key: {line}");
    assert!(line.contains("refused the login of root"), "{line}");

    support::chmod(&other, 0o644);
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    let line = usage_error(&out, "an identity file others can read");
    assert!(line.contains("chmod 600"), "{line}");
}

/// A server that accepts the TCP connection and never speaks SSH: the command gives up
/// within the connect timeout and its retries, on one line, exit 2.
#[test]
fn silent_server_is_bounded_by_the_connect_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sb = Sandbox::new();
    let key = sb.root().join("key");
    crate::support::sshd::keygen(&key);
    let kh = sb.root().join("known_hosts");
    std::fs::write(&kh, "").expect("known_hosts");
    sb.write_config(&format!(
        "[repository]\nurl = \"sftp://root@127.0.0.1:{port}/srv/repo\"\nidentity-file = {key}\n\
         known-hosts = {kh}\npassword-file = {pw}\nconnect-timeout = 2\ntimeout = 5\nretry = 1\n\
         work-dir = {work}\n\n{files}",
        key = toml_str(&key),
        kh = toml_str(&kh),
        pw = toml_str(&sb.password_file()),
        work = toml_str(&sb.root().join("work")),
        files = files_section(&sb),
    ));
    let started = Instant::now();
    let out = sb
        .cmd(&["snapshots"])
        .timeout(Duration::from_secs(90))
        .output()
        .expect("spawn");
    let took = started.elapsed();
    let line = usage_error(&out, "a server that never speaks SSH");
    eprintln!("silent server after {took:?}: {line}");
    assert!(
        line.contains(&format!("[127.0.0.1]:{port}"))
            && line.contains("within connect-timeout (2 s"),
        "{line}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}: {line}");
    drop(listener);
}

/// A backup killed while its packs go to the server, then run again: the second run reuses
/// what arrived, and the repository verifies.
#[test]
fn sftp_killed_upload_resumes() {
    let (sb, _sshd) = sftp_sandbox("sshd");
    let source_bytes = build_random_tree(&sb.source(), 16, 4 << 20);
    sb.init();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_akbackup"))
        .arg("backup")
        .env("AKBACKUP_CONFIG", sb.config_path())
        .env("XDG_CACHE_HOME", sb.root().join("cache"))
        .current_dir(sb.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn akbackup backup");
    let data = remote_dir(&sb).join("data");
    let arrived = || packs(&data).values().sum::<u64>();
    let start = Instant::now();
    while arrived() < (8 << 20) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no pack within 120 s"
        );
        assert!(
            child.try_wait().expect("poll").is_none(),
            "the backup ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill");
    let _ = child.wait();
    let first = arrived();
    assert!(
        first < source_bytes,
        "killed mid-way: {first} of {source_bytes}"
    );
    let after_kill = packs(&data);
    sb.backup(&[]);
    let second = arrived();
    sb.ok(&["verify", "--read-data"]);
    // The packs that arrived are reused: the rerun adds what was missing (and its index and
    // tree packs), not the whole source again.
    let added = second - first;
    assert!(
        added < source_bytes - first + (2 << 20),
        "the rerun sent {added} bytes; {} were missing (source {source_bytes}, {first} had arrived)",
        source_bytes - first
    );
    // No pack that arrived before the kill was rewritten or is half there.
    let now = packs(&data);
    for (name, size) in &after_kill {
        assert_eq!(now.get(name), Some(size), "{name} changed after the rerun");
    }
    assert_exit(
        &sb.cmd(&["snapshots"]).output().expect("spawn"),
        0,
        "snapshots",
    );
}
