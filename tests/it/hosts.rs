//! Several servers, one repository: the lock in the repository (restic's format, honoured by
//! akbackup on other hosts and by the standard `restic` client), prune's two phases, and sets
//! scoped by host (`latest`, retention and the cleanup of unfinished runs act on this host's
//! sets; `--host` and `--all-hosts` pick others).
//!
//! A second host is a process with its own host name (`unshare --uts`, as root) and its own
//! config and work directory; the shared repository is a moto bucket, or a local directory
//! where only the scope is under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::s3::{S3Server, files_section};
use crate::support::{
    Sandbox, all_output, assert_exit, assert_trees_equal_excluding, build_random_tree,
    build_rich_tree, parse_json, toml_str,
};

/// A host sharing the sandbox's repository: its name, config and source directory.
pub struct Host {
    pub name: String,
    pub config: PathBuf,
    pub source: PathBuf,
}

impl Host {
    /// Host `name` on `server`'s bucket, with its own source and work dir under the sandbox,
    /// and a before hook that waits for `<root>/go-<name>` once `<root>/ready-<name>` is made
    /// when `gated` (so a test can hold the host's backup under its lock).
    pub fn s3(sb: &Sandbox, server: &S3Server, bucket: &str, name: &str, gated: bool) -> Self {
        let source = sb.root().join(format!("source-{name}"));
        std::fs::create_dir_all(&source).expect("mkdir source");
        let files = files_section(sb).replace(&toml_str(&sb.source()), &toml_str(&source));
        let keys = server
            .repo_keys(sb, bucket, "shared")
            .replace(&format!("work-{bucket}"), &format!("work-{bucket}-{name}"));
        let hook = if gated {
            gate_hook(sb, name)
        } else {
            String::new()
        };
        let config = sb.root().join(format!("config-{name}.toml"));
        std::fs::write(&config, format!("{hook}[repository]\n{keys}\n{files}")).expect("config");
        // It holds the S3 secret: akbackup refuses it readable by others.
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod config");
        Self {
            name: name.to_string(),
            config,
            source,
        }
    }

    /// `akbackup ARGS` as this host: its own UTS namespace and host name.
    pub fn cmd(&self, sb: &Sandbox, args: &[&str]) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["--uts", "--", "sh", "-c", "hostname \"$0\" && exec \"$@\""])
            .arg(&self.name)
            .arg(env!("CARGO_BIN_EXE_akbackup"))
            .args(args)
            .env("AKBACKUP_CONFIG", &self.config)
            .env_remove("AKBACKUP_PASSWORD")
            .env("NO_COLOR", "1")
            .current_dir(sb.root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `akbackup ARGS` as this host to the end.
    pub fn run(&self, sb: &Sandbox, args: &[&str]) -> Output {
        self.cmd(sb, args).output().expect("spawn unshare")
    }

    /// Runs `akbackup ARGS` as this host and asserts exit 0.
    pub fn ok(&self, sb: &Sandbox, args: &[&str]) -> Output {
        let out = self.run(sb, args);
        assert_exit(
            &out,
            0,
            &format!("{}: akbackup {}", self.name, args.join(" ")),
        );
        out
    }

    /// `--json snapshots` as this host (every host's sets).
    pub fn sets(&self, sb: &Sandbox) -> Vec<Value> {
        match parse_json(&self.ok(sb, &["--json", "snapshots"])) {
            Value::Array(a) => a,
            other => panic!("not an array: {other}"),
        }
    }

    /// Starts a backup that stops in its before hook, under the repository lock; returns
    /// once the hook runs.
    pub fn start_gated_backup(&self, sb: &Sandbox) -> Child {
        start_gated(sb, &self.name, self.cmd(sb, &["backup"]))
    }
}

/// A `[[hooks]]` before hook that makes `<root>/ready-<gate>` and waits for `<root>/go-<gate>`
/// (see [`start_gated`], [`release`]): a test holds a backup under its lock as long as it
/// needs.
fn gate_hook(sb: &Sandbox, gate: &str) -> String {
    format!(
        "[[hooks]]\non = \"before\"\ncommand = [\"sh\", \"-c\", \"touch {ready}; while [ ! -e {go} ]; do sleep 0.05; done\"]\ntimeout = 120\n\n",
        ready = sb.root().join(format!("ready-{gate}")).display(),
        go = sb.root().join(format!("go-{gate}")).display(),
    )
}

/// Spawns `backup` (configured with [`gate_hook`] for `gate`) and returns once it waits in
/// its before hook.
fn start_gated(sb: &Sandbox, gate: &str, mut backup: Command) -> Child {
    let ready = sb.root().join(format!("ready-{gate}"));
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(sb.root().join(format!("go-{gate}")));
    let child = backup.spawn().expect("spawn backup");
    let t = Instant::now();
    while !ready.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the backup never reached its before hook ({gate})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Lets the backup waiting at `gate` go on.
fn release(sb: &Sandbox, gate: &str) {
    std::fs::write(sb.root().join(format!("go-{gate}")), b"").expect("go");
}

/// A moto bucket shared by `host-a` and `host-b` (host-b's backups wait at its gate when
/// `gate_b`), each with its own source: a rich tree of `a_blob`-byte files for A, `b_files`
/// random files of `b_each` bytes for B. The repository is initialised.
pub fn two_hosts(
    bucket: &str,
    gate_b: bool,
    a_blob: usize,
    (b_files, b_each): (u64, usize),
) -> (S3Server, Sandbox, Host, Host) {
    assert!(
        can_unshare_uts(),
        "unshare --uts needs root: run the tests as root (CI does)"
    );
    let server = S3Server::start(&[bucket]);
    let sb = Sandbox::new();
    let a = Host::s3(&sb, &server, bucket, "host-a", false);
    let b = Host::s3(&sb, &server, bucket, "host-b", gate_b);
    build_rich_tree(&a.source, a_blob);
    build_random_tree(&b.source, b_files, b_each);
    a.ok(&sb, &["init"]);
    (server, sb, a, b)
}

/// Whether this machine can give a process its own host name (root and `unshare`).
pub fn can_unshare_uts() -> bool {
    Command::new("unshare")
        .args(["--uts", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

fn set_hosts(sets: &[Value]) -> Vec<String> {
    sets.iter()
        .map(|s| s["host"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_output(child: Child) -> Output {
    child.wait_with_output().expect("wait")
}

/// Regression (review finding 2): host A's `forget --prune` while host B's backup runs on the
/// same bucket. Before the repository lock, both exited 0 and B's set lost packs. Now A is
/// refused with one line naming B's pid, host and command (exit 2); with `--wait` it runs
/// once B is done; B's set and every kept set read back whole.
#[test]
fn prune_on_one_host_waits_for_a_backup_on_another() {
    let _heavy = crate::support::network_heavy_guard();
    let (_server, sb, a, b) = two_hosts("akb-hosts-prune", true, 50_000, (6, 200_000));
    a.ok(&sb, &["backup"]);
    a.ok(&sb, &["backup"]);

    let held = b.start_gated_backup(&sb);
    let refused = a.run(
        &sb,
        &[
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--delete-after",
            "0h",
        ],
    );
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert_exit(&refused, 2, "forget --prune while another host backs up");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!("pid {}", held.id()))
            && err.contains("on host-b")
            && err.contains("`backup`"),
        "the refusal names B's backup: {err}"
    );

    let waiter = a
        .cmd(
            &sb,
            &[
                "forget",
                "--wait",
                "--keep-last",
                "1",
                "--prune",
                "--delete-after",
                "0h",
            ],
        )
        .spawn()
        .expect("spawn forget --wait");
    std::thread::sleep(Duration::from_secs(2));
    release(&sb, "host-b");
    let b_out = wait_output(held);
    assert_exit(&b_out, 0, "host-b backup");
    let f_out = wait_output(waiter);
    assert_exit(&f_out, 0, "host-a forget --wait");
    assert!(
        String::from_utf8_lossy(&f_out.stderr).contains("waiting for the lock"),
        "forget said it waited: {}",
        all_output(&f_out)
    );

    let verify = a.run(&sb, &["verify", "--read-data"]);
    assert_exit(&verify, 0, "verify --read-data after both");
    let hosts = set_hosts(&a.sets(&sb));
    assert_eq!(
        hosts,
        vec!["host-a".to_string(), "host-b".to_string()],
        "A kept its newest set and B's set is untouched"
    );
    let target = sb.root().join("restored-b");
    b.ok(
        &sb,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf-8"),
        ],
    );
    assert_trees_equal_excluding(&b.source, &target.join("files/control"), &[]);
}

/// Review finding 3: sets are scoped by host. `forget --keep-last 1` on A leaves B's sets,
/// `restore latest` on A restores A's data, `--host host-b` picks B's, `--all-hosts` thins
/// every host's sets on their own, and `snapshots` shows each set's host.
#[test]
fn latest_and_retention_act_on_this_hosts_sets() {
    let _heavy = crate::support::network_heavy_guard();
    let bucket = "akb-hosts-scope";
    let (server, sb, a, b) = two_hosts(bucket, false, 20_000, (3, 50_000));
    for _ in 0..2 {
        a.ok(&sb, &["backup"]);
        b.ok(&sb, &["backup"]);
    }
    let text = String::from_utf8_lossy(&a.ok(&sb, &["snapshots"]).stdout).to_string();
    assert!(
        text.contains("host") && text.contains("host-a") && text.contains("host-b"),
        "snapshots shows the hosts: {text}"
    );

    a.ok(&sb, &["forget", "--keep-last", "1"]);
    let hosts = set_hosts(&a.sets(&sb));
    assert_eq!(
        hosts.iter().filter(|h| *h == "host-a").count(),
        1,
        "A's forget thinned A's sets: {hosts:?}"
    );
    assert_eq!(
        hosts.iter().filter(|h| *h == "host-b").count(),
        2,
        "A's forget left B's sets alone: {hosts:?}"
    );

    let mine = sb.root().join("latest-a");
    a.ok(
        &sb,
        &[
            "restore",
            "latest",
            "--target",
            mine.to_str().expect("utf-8"),
        ],
    );
    assert_trees_equal_excluding(&a.source, &mine.join("files/control"), &["*.pid", "*.log"]);
    // The server replacing host-b runs host-b's config under another name.
    let replacement = Host {
        name: "host-a".to_string(),
        config: b.config.clone(),
        source: b.source.clone(),
    };
    let theirs = sb.root().join("latest-b");
    replacement.ok(
        &sb,
        &[
            "--host",
            "host-b",
            "restore",
            "latest",
            "--target",
            theirs.to_str().expect("utf-8"),
        ],
    );
    assert_trees_equal_excluding(&b.source, &theirs.join("files/control"), &[]);

    a.ok(&sb, &["--all-hosts", "forget", "--keep-last", "1"]);
    let mut hosts = set_hosts(&a.sets(&sb));
    hosts.sort();
    assert_eq!(hosts, vec!["host-a", "host-b"], "one set per host is left");

    let c = Host::s3(&sb, &server, bucket, "host-c", false);
    let none = c.run(&sb, &["restore", "latest", "--target", "/nonexistent-akb"]);
    assert_exit(&none, 2, "restore latest on a host without sets");
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        err.contains("no complete backup set of host host-c") && err.contains("--host"),
        "says whose sets exist and how to pick them: {err}"
    );
}

/// Review finding 3: a backup drops the partial snapshots of its own host's crashed runs,
/// never another host's (that run may still be going on there). The other host's partial
/// snapshot is written with the standard restic client, tagged as akbackup tags them.
#[test]
fn cleanup_of_unfinished_runs_leaves_other_hosts_alone() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 10_000);
    sb.init();
    let partial_file = sb.root().join("partial.txt");
    std::fs::write(&partial_file, b"half a run").expect("write");
    for host in ["elsewhere", crate::support::hostname().as_str()] {
        let out = sb
            .restic()
            .args(["backup", "--tag", "akbackup-partial", "--host", host])
            .arg(&partial_file)
            .output()
            .expect("restic backup");
        assert!(out.status.success(), "restic backup: {}", all_output(&out));
    }
    sb.backup(&[]);
    let out = sb
        .restic()
        .args(["snapshots", "--json", "--tag", "akbackup-partial"])
        .output()
        .expect("restic snapshots");
    let left: Value = serde_json::from_slice(&out.stdout).expect("json");
    let hosts: Vec<&str> = left
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["hostname"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        hosts,
        vec!["elsewhere"],
        "only this host's partial snapshot was dropped"
    );
}

/// Review finding 2, next to restic: while a restic 0.14 backup holds its (shared) lock, an
/// akbackup backup runs beside it but `forget --prune` is refused naming restic's lock; while
/// an akbackup backup holds its lock, `restic prune` is refused and names akbackup's pid
/// (restic decrypted our lock file). A lock left by a killed restic (this host, dead pid) is
/// stale by restic's rules and no longer blocks.
#[test]
fn akbackup_and_restic_exclude_each_other() {
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 10_000);
    sb.init();
    sb.backup(&[]);

    let mut restic = sb
        .restic()
        .args(["backup", "--stdin", "--stdin-filename", "slow.txt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("restic backup --stdin");
    wait_for_locks(&sb.repo(), 1);
    sb.backup(&[]);
    let refused = sb
        .cmd(&["forget", "--keep-last", "1", "--prune"])
        .output()
        .expect("spawn");
    assert_exit(&refused, 2, "forget --prune under restic's lock");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&format!("pid {}", restic.id())) && err.contains("restic (shared lock"),
        "names restic's lock: {err}"
    );
    let _ = restic.kill();
    let _ = restic.wait();
    // Killed: its lock file stays, naming a dead pid on this host.
    assert_eq!(lock_files(&sb.repo()).len(), 1, "restic's lock outlived it");
    sb.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert!(
        lock_files(&sb.repo()).is_empty(),
        "the stale lock was removed and ours released"
    );

    sb.write_config(&format!(
        "{}{}",
        gate_hook(&sb, "local"),
        sb.default_config()
    ));
    let held = start_gated(&sb, "local", crate::faults::command(&sb, &["backup"]));
    let prune = sb.restic().arg("prune").output().expect("restic prune");
    assert!(
        !prune.status.success(),
        "restic prune must be refused: {}",
        all_output(&prune)
    );
    let text = all_output(&prune);
    assert!(
        text.contains("already locked") && text.contains(&format!("PID {}", held.id())),
        "restic names akbackup's lock: {text}"
    );
    release(&sb, "local");
    let out = held.wait_with_output().expect("wait");
    assert_exit(&out, 0, "the held backup");
    assert!(
        lock_files(&sb.repo()).is_empty(),
        "akbackup released its lock"
    );
    let check = sb.restic().arg("check").output().expect("restic check");
    assert!(
        check.status.success(),
        "restic check: {}",
        all_output(&check)
    );
}

/// Review finding 10 and the two phases of prune: the first `forget --prune` marks what the
/// dropped set alone used and deletes nothing (its summary says so); `--delete-after 0h`
/// deletes, and the summary's packs and bytes are what really left the repository.
#[test]
fn prune_marks_first_and_reports_what_it_deleted() {
    let sb = Sandbox::new();
    build_random_tree(&sb.source(), 8, 300_000);
    sb.init();
    sb.backup(&[]);
    std::fs::remove_dir_all(sb.source()).expect("rm");
    build_random_tree(&sb.source(), 2, 100_000);
    sb.backup(&[]);
    let data = sb.repo().join("data");
    let before = data_files(&data);

    let first = sb.json(&["forget", "--keep-last", "1", "--prune"]);
    let p = &first["prune"];
    assert_eq!(
        p["packs_removed"], 0,
        "the first prune only marks: {first:#}"
    );
    assert!(
        p["packs_marked"].as_u64().unwrap_or(0) > 0,
        "it marked packs: {first:#}"
    );
    assert_eq!(p["delete_after_seconds"], 23 * 3600, "{first:#}");
    let kept = data_files(&data);
    assert!(
        before.keys().all(|p| kept.contains_key(p)),
        "no pack file left the repository: {before:?} -> {kept:?}"
    );
    let out = sb.cmd(&["verify", "--read-data"]).output().expect("spawn");
    assert_exit(&out, 0, "verify after marking");

    let before = kept;
    let second = sb.json(&[
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--delete-after",
        "0h",
    ]);
    let p = &second["prune"];
    let after = data_files(&data);
    let gone: Vec<u64> = before
        .iter()
        .filter(|(path, _)| !after.contains_key(*path))
        .map(|(_, size)| *size)
        .collect();
    assert!(!gone.is_empty(), "packs were deleted");
    assert_eq!(
        p["packs_removed"],
        gone.len(),
        "the summary counts what left: {second:#}"
    );
    assert_eq!(p["bytes_freed"], gone.iter().sum::<u64>(), "{second:#}");
    assert!(
        gone.iter().sum::<u64>() > 2_000_000,
        "the dropped set's ~2.4 MB of packs went: {second:#}"
    );
    let text = String::from_utf8_lossy(
        &sb.ok(&[
            "forget",
            "--keep-last",
            "1",
            "--prune",
            "--delete-after",
            "0h",
        ])
        .stdout,
    )
    .to_string();
    assert!(text.contains("pack(s) removed from the storage"), "{text}");
    let out = sb.cmd(&["verify", "--read-data"]).output().expect("spawn");
    assert_exit(&out, 0, "verify after deleting");
}

/// The files below `dir` with their sizes.
fn data_files(dir: &Path) -> std::collections::BTreeMap<PathBuf, u64> {
    walk(dir)
        .into_iter()
        .map(|p| {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, size)
        })
        .collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The lock files in a local repository.
fn lock_files(repo: &Path) -> Vec<PathBuf> {
    walk(&repo.join("locks"))
}

/// Waits until the repository holds `n` lock files.
fn wait_for_locks(repo: &Path, n: usize) {
    let t = Instant::now();
    while lock_files(repo).len() < n {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no lock appeared in {}",
            repo.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
