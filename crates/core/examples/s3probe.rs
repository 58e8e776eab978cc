//! Probe: a restic-format repository on S3 through `rustic_backend` 0.7 + OpenDAL, against the
//! local moto server of `tests/support/s3_server.py` (started and stopped here).
//!
//! It proves the option map that opens an S3 repository, the full cycle (init, open, backup,
//! snapshots, read back, check with a read-data subset, keys, copy local -> S3), and shows the
//! first line and the time of each failure an operator will meet: wrong secret, unknown key id,
//! missing bucket, closed port, no credentials, wrong region. It is a probe, not product code:
//! it prints and panics freely.
//!
//! Run from the workspace root: `cargo run -p akbackup-core --example s3probe [PORT]`.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Instant,
};

use rustic_backend::BackendOptions;
use rustic_core::{
    BackupOptions, CheckOptions, ConfigOptions, Credentials, FileType, KeyOptions, LsOptions,
    PathList, ReadBackend, ReadSubsetOption, Repository, RepositoryBackends, RepositoryOptions,
    RusticError, SnapshotOptions,
    repofile::{KeyFile, KeyId},
};

/// What the harness needs to talk to the server.
struct Server {
    endpoint: String,
    key_id: String,
    secret: String,
}

/// The options map for an S3 repository. Every key below was needed or useful; see the report.
fn s3_options(srv: &Server, bucket: &str, root: &str, extra: &[(&str, &str)]) -> BackendOptions {
    let mut o = BTreeMap::new();
    for (k, v) in [
        ("bucket", bucket),
        ("root", root),
        ("endpoint", srv.endpoint.as_str()),
        ("region", "us-east-1"),
        ("access_key_id", srv.key_id.as_str()),
        ("secret_access_key", srv.secret.as_str()),
        // Path style is OpenDAL's default; virtual host style is opt-in.
        ("enable_virtual_host_style", "false"),
        // Do not read AWS_* variables or ~/.aws: the test decides every credential.
        ("disable_config_load", "true"),
        // Never ask 169.254.169.254 for credentials (hangs outside EC2).
        ("disable_ec2_metadata", "true"),
        // rustic_backend's own keys (not OpenDAL's): retry count, parallel requests.
        ("retry", "3"),
        ("connections", "8"),
    ] {
        o.insert(k.to_string(), v.to_string());
    }
    for (k, v) in extra {
        if v.is_empty() {
            o.remove(*k);
        } else {
            o.insert((*k).to_string(), (*v).to_string());
        }
    }
    // "opendal:s3": `opendal` picks the backend, the part after the colon is the OpenDAL scheme.
    BackendOptions::default()
        .repository("opendal:s3")
        .options(o)
}

fn first_line(err: &RusticError) -> String {
    err.to_string()
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// The innermost source's message: where OpenDAL says what the server answered.
fn root_cause(err: &RusticError) -> String {
    let mut cur: &dyn std::error::Error = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string().replace('\n', " ")
}

/// OpenDAL's error kind, found by walking the source chain and downcasting: the one reliable
/// way to tell "access denied" from "connection refused" (rustic's own text is generic).
fn opendal_kind(err: &RusticError) -> Option<(opendal::ErrorKind, String)> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(o) = e.downcast_ref::<opendal::Error>() {
            return Some((o.kind(), o.message().to_string()));
        }
        cur = e.source();
    }
    None
}

fn no_cache() -> RepositoryOptions {
    RepositoryOptions::default().no_cache(true)
}

fn backends(opts: &BackendOptions) -> Result<RepositoryBackends, Box<RusticError>> {
    opts.to_backends()
}

/// Tries to open the repository with `opts` and prints what happened and how long it took.
fn try_open(label: &str, opts: &BackendOptions, pw: &str) {
    let t = Instant::now();
    let res = backends(opts)
        .and_then(|be| Repository::new(&no_cache(), &be)?.open(&Credentials::password(pw)));
    let secs = t.elapsed().as_secs_f64();
    match res {
        Ok(_) => println!("[{label}] open OK in {secs:.2}s"),
        Err(e) => {
            println!(
                "[{label}] open FAILED in {secs:.2}s incorrect_password={}",
                e.is_incorrect_password()
            );
            println!("    first line: {}", first_line(&e));
            println!("    root cause: {}", root_cause(&e));
            println!("    opendal kind: {:?}", opendal_kind(&e));
        }
    }
}

fn try_init(label: &str, opts: &BackendOptions, pw: &str) {
    let t = Instant::now();
    let res = backends(opts).and_then(|be| {
        Repository::new(&no_cache(), &be)?.init(
            &Credentials::password(pw),
            &KeyOptions::default(),
            &ConfigOptions::default(),
        )
    });
    let secs = t.elapsed().as_secs_f64();
    match res {
        Ok(_) => println!("[{label}] init OK in {secs:.2}s"),
        Err(e) => {
            println!("[{label}] init FAILED in {secs:.2}s",);
            println!("    first line: {}", first_line(&e));
            println!("    root cause: {}", root_cause(&e));
        }
    }
}

fn start_server(port: u16) -> (std::process::Child, Server) {
    let t = Instant::now();
    let mut child = Command::new("python3")
        .args(["tests/support/s3_server.py", "--port", &port.to_string()])
        .args([
            "--bucket",
            "akb",
            "--bucket",
            "akb2",
            "--auth",
            "--stdin-lifetime",
        ])
        .args(
            std::env::var("S3PROBE_LOG")
                .map(|l| vec!["--log".to_string(), l])
                .unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    println!(
        "server ready in {:.2}s (script says {}s): {}",
        t.elapsed().as_secs_f64(),
        v["startup_seconds"],
        v["endpoint"]
    );
    let srv = Server {
        endpoint: v["endpoint"].as_str().unwrap().to_string(),
        key_id: v["access_key_id"].as_str().unwrap().to_string(),
        secret: v["secret_access_key"].as_str().unwrap().to_string(),
    };
    (child, srv)
}

/// Child mode: `s3probe env-open ENDPOINT` opens the main repository with credentials from
/// the environment / credentials file only (the parent sets them; edition 2024 forbids
/// `set_var` without `unsafe`, and the workspace forbids `unsafe`).
fn env_open(endpoint: &str) {
    let srv = Server {
        endpoint: endpoint.to_string(),
        key_id: String::new(),
        secret: String::new(),
    };
    let opts = s3_options(
        &srv,
        "akb",
        "/repos/main",
        &[
            ("access_key_id", ""),
            ("secret_access_key", ""),
            ("disable_config_load", "false"),
        ],
    );
    try_open("credentials from environment", &opts, "second-password");
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("env-open") {
        env_open(&std::env::args().nth(2).unwrap());
        return;
    }
    let port: u16 = std::env::args().nth(1).map_or(9923, |p| p.parse().unwrap());
    let (mut child, srv) = start_server(port);
    let pw = "probe-password";

    // --- the happy path -----------------------------------------------------------------
    let opts = s3_options(&srv, "akb", "/repos/main", &[]);
    try_init("s3 init", &opts, pw);
    try_init("s3 init again (config exists)", &opts, pw);

    let t = Instant::now();
    let repo = Repository::new(&no_cache(), &backends(&opts).unwrap())
        .unwrap()
        .open(&Credentials::password(pw))
        .unwrap();
    println!(
        "open OK in {:.2}s, key {:?}",
        t.elapsed().as_secs_f64(),
        repo.key_id()
    );

    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("sub")).unwrap();
    std::fs::write(src.path().join("a.txt"), b"hello s3\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(src.path().join("sub/big.bin"), &big).unwrap();

    let t = Instant::now();
    let repo = repo.to_indexed_ids().unwrap();
    let snap = SnapshotOptions::default()
        .add_tags("akbackup")
        .unwrap()
        .to_snapshot()
        .unwrap();
    let paths = PathList::from_string(src.path().to_str().unwrap())
        .unwrap()
        .sanitize()
        .unwrap();
    let snap = repo
        .backup(&BackupOptions::default(), &paths, snap)
        .unwrap();
    println!(
        "backup OK in {:.2}s: snapshot {} ({} files, {} bytes added)",
        t.elapsed().as_secs_f64(),
        snap.id,
        snap.summary.as_ref().map_or(0, |s| s.files_new),
        snap.summary.as_ref().map_or(0, |s| s.data_added)
    );

    let snaps = repo.get_all_snapshots().unwrap();
    println!(
        "snapshots: {:?}",
        snaps.iter().map(|s| s.id.to_string()).collect::<Vec<_>>()
    );

    let repo = repo.to_indexed().unwrap();
    let node = repo
        .node_from_snapshot_path(
            &format!("latest:{}/sub/big.bin", src.path().display()),
            |_| true,
        )
        .unwrap();
    let mut back = Vec::new();
    repo.dump(&node, &mut back).unwrap();
    println!(
        "read back big.bin: {} bytes, equal = {}",
        back.len(),
        back == big
    );
    let root = repo.node_from_snapshot_path("latest", |_| true).unwrap();
    let ls_opts = LsOptions::default();
    let n = repo.ls(&root, &ls_opts).unwrap().count();
    println!("ls latest: {n} entries");

    // --- check with a subset -------------------------------------------------------------
    for (label, subset) in [
        ("all", ReadSubsetOption::All),
        ("50%", "50%".parse::<ReadSubsetOption>().unwrap()),
        ("1/7", "1/7".parse::<ReadSubsetOption>().unwrap()),
        (
            "daily/week",
            "daily/week".parse::<ReadSubsetOption>().unwrap(),
        ),
        ("Percentage(5.0)", ReadSubsetOption::Percentage(5.0)),
        ("IdSubSet((1,2))", ReadSubsetOption::IdSubSet((1, 2))),
    ] {
        let t = Instant::now();
        let res = repo
            .check(
                CheckOptions::default()
                    .read_data(true)
                    .read_data_subset(subset),
            )
            .unwrap();
        println!(
            "check read-data-subset {label} -> {subset:?}: {:.2}s, findings: {:?}",
            t.elapsed().as_secs_f64(),
            res.is_ok()
        );
    }

    // --- keys ----------------------------------------------------------------------------
    let new_id = repo
        .add_key(
            "second-password",
            &KeyOptions::default().hostname(Some("probe".to_string())),
        )
        .unwrap();
    let keys: Vec<KeyId> = repo.list::<KeyId>().unwrap().collect();
    println!("keys after add: {}", keys.len());
    for k in &keys {
        // Key files are plain JSON (not encrypted); `cat_file` would try to decrypt them, so
        // read them from the raw backend.
        let raw = backends(&opts)
            .unwrap()
            .repository()
            .read_full(FileType::Key, k)
            .unwrap();
        let kf: KeyFile = serde_json::from_slice(&raw).unwrap();
        println!(
            "  key {} host={:?} user={:?} created={:?} current={}",
            k,
            kf.hostname,
            kf.username,
            kf.created,
            Some(*k) == *repo.key_id()
        );
    }
    match repo.delete_key(&repo.key_id().unwrap()) {
        Ok(()) => println!("deleting the current key: allowed?!"),
        Err(e) => println!("deleting the current key: {}", first_line(&e)),
    }
    // passwd = add new key, reopen with it, delete the old one.
    let old_id = repo.key_id().unwrap();
    let repo2 = Repository::new(&no_cache(), &backends(&opts).unwrap())
        .unwrap()
        .open(&Credentials::password("second-password"))
        .unwrap();
    assert_eq!(repo2.key_id().unwrap(), new_id);
    repo2.delete_key(&old_id).unwrap();
    println!(
        "passwd: old key {old_id} removed, keys now {}",
        repo2.list::<KeyId>().unwrap().count()
    );
    try_open("old password after passwd", &opts, pw);
    drop(repo);

    // --- copy local -> S3 ----------------------------------------------------------------
    let local = tempfile::tempdir().unwrap();
    let local_be = BackendOptions::default()
        .repository(local.path().display().to_string())
        .to_backends()
        .unwrap();
    let lrepo = Repository::new(&no_cache(), &local_be)
        .unwrap()
        .init(
            &Credentials::password(pw),
            &KeyOptions::default(),
            &ConfigOptions::default(),
        )
        .unwrap()
        .to_indexed_ids()
        .unwrap();
    let snap = SnapshotOptions::default().to_snapshot().unwrap();
    lrepo
        .backup(&BackupOptions::default(), &paths, snap)
        .unwrap();
    let snap = SnapshotOptions::default().to_snapshot().unwrap();
    std::fs::write(src.path().join("c.txt"), b"second run\n").unwrap();
    lrepo
        .backup(&BackupOptions::default(), &paths, snap)
        .unwrap();
    let lrepo = lrepo.to_indexed().unwrap();
    let lsnaps = lrepo.get_all_snapshots().unwrap();

    // The destination of a copy must have the same chunker polynomial, or dedup across the
    // two is lost (blobs are copied as they are). Init with the source's config options.
    let copy_opts = s3_options(&srv, "akb", "/repos/copy", &[]);
    let dest = Repository::new(&no_cache(), &backends(&copy_opts).unwrap())
        .unwrap()
        .init_with_config(
            &Credentials::password(pw),
            &KeyOptions::default(),
            lrepo.config().clone(),
        )
        .unwrap()
        .to_indexed_ids()
        .unwrap();
    let rel = dest.relevant_copy_snapshots(|_| true, &lsnaps).unwrap();
    println!(
        "copy: relevant {:?}",
        rel.iter().map(|c| c.relevant).collect::<Vec<_>>()
    );
    let t = Instant::now();
    lrepo
        .copy(&dest, rel.iter().filter(|c| c.relevant).map(|c| &c.sn))
        .unwrap();
    println!(
        "copy local -> s3 of {} snapshots: {:.2}s",
        lsnaps.len(),
        t.elapsed().as_secs_f64()
    );
    let dest = Repository::new(&no_cache(), &backends(&copy_opts).unwrap())
        .unwrap()
        .open(&Credentials::password(pw))
        .unwrap()
        .to_indexed_ids()
        .unwrap();
    let rel = dest.relevant_copy_snapshots(|_| true, &lsnaps).unwrap();
    println!(
        "copy again: relevant {:?} (false = already there)",
        rel.iter().map(|c| c.relevant).collect::<Vec<_>>()
    );
    let dsn = dest.get_all_snapshots().unwrap();
    println!(
        "dest snapshots {} (original field set: {:?})",
        dsn.len(),
        dsn.iter().map(|s| s.original.is_some()).collect::<Vec<_>>()
    );

    // --- failures ------------------------------------------------------------------------
    for retry in ["3", "0"] {
        let r = &[("retry", retry)];
        let wrong_secret = Server {
            endpoint: srv.endpoint.clone(),
            key_id: srv.key_id.clone(),
            secret: "wrong".into(),
        };
        try_open(
            &format!("wrong secret, retry={retry}"),
            &s3_options(&wrong_secret, "akb", "/repos/main", r),
            "second-password",
        );
        let wrong_id = Server {
            endpoint: srv.endpoint.clone(),
            key_id: "AKIANOTAKEY".into(),
            secret: "x".into(),
        };
        try_open(
            &format!("unknown key id, retry={retry}"),
            &s3_options(&wrong_id, "akb", "/repos/main", r),
            "second-password",
        );
        try_open(
            &format!("missing bucket, retry={retry}"),
            &s3_options(&srv, "nosuchbucket", "/repos/main", r),
            pw,
        );
        try_init(
            &format!("init in missing bucket, retry={retry}"),
            &s3_options(&srv, "nosuchbucket", "/repos/main", r),
            pw,
        );
        try_open(
            &format!("no repository at root, retry={retry}"),
            &s3_options(&srv, "akb", "/repos/none", r),
            pw,
        );
        let closed = Server {
            endpoint: "http://127.0.0.1:9".into(),
            key_id: srv.key_id.clone(),
            secret: srv.secret.clone(),
        };
        try_open(
            &format!("closed port, retry={retry}"),
            &s3_options(&closed, "akb", "/repos/main", r),
            pw,
        );
        try_open(
            &format!("no credentials at all, retry={retry}"),
            &s3_options(
                &srv,
                "akb",
                "/repos/main",
                &[r[0], ("access_key_id", ""), ("secret_access_key", "")],
            ),
            pw,
        );
    }
    // Slow (about 2 minutes): only with S3PROBE_SLOW=1.
    if std::env::var_os("S3PROBE_SLOW").is_some() {
        try_open(
            "closed port, retry default (5)",
            &s3_options(
                &Server {
                    endpoint: "http://127.0.0.1:9".into(),
                    key_id: "a".into(),
                    secret: "b".into(),
                },
                "akb",
                "/repos/main",
                &[("retry", "")],
            ),
            pw,
        );
        // A peer that accepts the connection and never answers: reqwest has no timeout by default.
        let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let hole_ep = format!("http://{}", hole.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let hole_opts = s3_options(
            &Server {
                endpoint: hole_ep,
                key_id: "a".into(),
                secret: "b".into(),
            },
            "akb",
            "/repos/main",
            &[("retry", "0")],
        );
        std::thread::spawn(move || {
            try_open("silent peer, retry=0", &hole_opts, "x");
            let _ = tx.send(());
        });
        if rx.recv_timeout(std::time::Duration::from_secs(60)).is_err() {
            println!("[silent peer, retry=0] still waiting after 60s: no request timeout");
        }
        drop(hole);
    }

    // Credentials from the standard variables, then from a credentials file + profile.
    let exe = std::env::current_exe().unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(&exe)
        .args(["env-open", &srv.endpoint])
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_ACCESS_KEY_ID", &srv.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &srv.secret)
        .output()
        .unwrap();
    print!("env vars: {}", String::from_utf8_lossy(&out.stdout));
    let cred_file = home.path().join("creds");
    std::fs::write(
        &cred_file,
        format!(
            "[offsite]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            srv.key_id, srv.secret
        ),
    )
    .unwrap();
    let out = Command::new(&exe)
        .args(["env-open", &srv.endpoint])
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_SHARED_CREDENTIALS_FILE", &cred_file)
        .env("AWS_PROFILE", "offsite")
        .output()
        .unwrap();
    print!(
        "credentials file + AWS_PROFILE: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    std::fs::copy(&cred_file, home.path().join(".aws/credentials")).unwrap();
    let out = Command::new(&exe)
        .args(["env-open", &srv.endpoint])
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_PROFILE", "offsite")
        .output()
        .unwrap();
    print!(
        "~/.aws/credentials + AWS_PROFILE: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Listing errors are swallowed by rustic_backend (logged, then an empty list).
    let be = backends(&s3_options(&srv, "nosuchbucket", "/repos/main", &[]))
        .unwrap()
        .repository();
    println!(
        "list keys in missing bucket: {:?}",
        be.list(FileType::Key)
            .map(|v| v.len())
            .map_err(|e| first_line(&e))
    );

    // The whole Display of one backend error, to see its shape.
    let closed = Server {
        endpoint: "http://127.0.0.1:9".into(),
        key_id: "a".into(),
        secret: "b".into(),
    };
    if let Err(e) = backends(&s3_options(&closed, "akb", "/r", &[("retry", "0")]))
        .and_then(|be| Repository::new(&no_cache(), &be)?.open(&Credentials::password("x")))
    {
        println!("---- full Display of the closed-port error ----\n{e}\n---- end ----");
    }

    try_open("wrong password", &opts, "nope");
    try_open(
        "no region",
        &s3_options(&srv, "akb", "/repos/main", &[("region", "")]),
        "second-password",
    );
    try_open(
        "unknown option key",
        &s3_options(&srv, "akb", "/repos/main", &[("no_such_option", "1")]),
        "second-password",
    );
    try_open(
        "bad retry value",
        &s3_options(&srv, "akb", "/repos/main", &[("retry", "lots")]),
        "second-password",
    );
    try_open(
        "timeout option",
        &s3_options(&srv, "akb", "/repos/main", &[("timeout", "1s")]),
        "second-password",
    );

    drop(child.stdin.take()); // --stdin-lifetime: the server stops when our end closes
    let _ = child.wait();
}
