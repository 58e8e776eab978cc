//! Repositories in S3 (`url = "s3://bucket/prefix"`), against a local moto server started per
//! test (`support::s3`): backup, `restore --target` and `verify --read-data` through the
//! bucket; `copy` between a local repository, an S3 one and back, and `copy-to` after a backup;
//! a backup killed mid-upload and run again; the environment errors (wrong credentials, a
//! missing bucket, a closed port) and the secret in them; `verify --read-data-subset`.
//!
//! The bucket is inspected with boto3, which knows nothing of akbackup; only the restic layout
//! (`<prefix>/data/` holds the packs) is assumed.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::mongo::free_port;
use crate::support::s3::{S3Server, files_section, repo_keys, s3_config};
use crate::support::{
    self, COMPONENT, DEFAULT_EXCLUDES, Sandbox, all_output, assert_exit,
    assert_trees_equal_excluding, build_random_tree, build_rich_tree, parse_json, toml_str,
    usage_error,
};

/// The prefix every test's repository uses inside its bucket.
const PREFIX: &str = "prod";

/// `path` as a `&str` argument.
fn arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Restores `set` of the default (or `--repo`) repository into `<root>/<dir>` and returns the
/// restored `files.control` tree.
fn restore_target(sb: &Sandbox, repo: Option<&str>, set: &str, dir: &str) -> std::path::PathBuf {
    let target = sb.root().join(dir);
    let mut args = Vec::new();
    if let Some(name) = repo {
        args.extend(["--repo", name]);
    }
    args.extend(["restore", set, "--target", arg(&target)]);
    sb.ok(&args);
    target.join("files").join("control")
}

/// `snapshots --json` of the repository `--repo NAME` (the default one for `None`).
fn sets_of(sb: &Sandbox, repo: Option<&str>) -> Vec<Value> {
    let mut args = vec!["--json"];
    if let Some(name) = repo {
        args.extend(["--repo", name]);
    }
    args.push("snapshots");
    match parse_json(&sb.ok(&args)) {
        Value::Array(sets) => sets,
        other => panic!("snapshots --json is not an array: {other:#}"),
    }
}

/// The fields of a listed set that a copy must keep: time, host, components, status, bytes.
/// (Not the id: like restic's, a copied snapshot is a new file with a new id.)
fn identity(set: &Value) -> Value {
    serde_json::json!({
        "time": set["time"], "host": set["host"], "bytes": set["bytes"],
        "components": set["components"], "status": set["status"],
    })
}

/// Init, backup, `snapshots --json`, `restore --target` and `verify --read-data` all work on a
/// repository in a bucket: the restored tree equals the source (modes, mtimes, links), the
/// bucket holds the packs and the local work dir holds no copy of the data.
#[test]
fn s3_backup_restore_verify_round_trip() {
    let bucket = "akb-roundtrip";
    let server = S3Server::start(&[bucket]);
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 300_000);
    sb.write_config(&s3_config(&sb, &server, bucket, PREFIX, ""));
    let init = sb.ok(&["init"]);
    assert!(
        String::from_utf8_lossy(&init.stdout).contains("s3://akb-roundtrip/prod"),
        "init names the repository: {}",
        all_output(&init)
    );

    let summary = sb.backup(&[]);
    let set = Sandbox::set_id(&summary);
    assert_eq!(
        summary["repository"], "s3://akb-roundtrip/prod",
        "{summary:#}"
    );
    let sets = sb.sets();
    assert_eq!(sets.len(), 1, "{sets:#?}");
    assert_eq!(sets[0]["id"], set.as_str());
    assert_eq!(sets[0]["status"], "complete");
    assert_eq!(sets[0]["components"], serde_json::json!([COMPONENT]));

    let (packs, bytes) = server.data_objects(bucket, PREFIX);
    assert!(
        packs >= 1 && bytes >= 300_000,
        "the bucket holds the 300 kB random blob in packs: {packs} object(s), {bytes} bytes"
    );
    let work = support::dir_size(&sb.root().join(format!("work-{bucket}")));
    assert!(
        work < 100_000,
        "the work dir keeps no copy of the data after the upload: {work} bytes"
    );

    let restored = restore_target(&sb, None, &set, "restored");
    assert_trees_equal_excluding(&sb.source(), &restored, DEFAULT_EXCLUDES);
    let verify = sb.ok(&["verify", "--read-data"]);
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("ok"),
        "{}",
        all_output(&verify)
    );
}

/// A config with a local `[repository]`, `[repositories.offsite]` in the bucket and
/// `[repositories.back]` local again; `top` goes before the tables.
fn three_repo_config(sb: &Sandbox, server: &S3Server, bucket: &str, top: &str) -> String {
    format!(
        "{top}[repository]\npath = {repo}\npassword-file = {pw}\n\n\
         [repositories.offsite]\n{offsite}\n\
         [repositories.back]\npath = {back}\npassword-file = {pw}\n\n{files}",
        repo = toml_str(&sb.repo()),
        pw = toml_str(&sb.password_file()),
        offsite = server.repo_keys(sb, bucket, PREFIX),
        back = toml_str(&sb.root().join("back")),
        files = files_section(sb),
    )
}

/// `copy --to offsite` sends a local set into the bucket, a second copy sends nothing and says
/// the set is already there, and `copy --from offsite --to back` brings it to a third
/// repository whose `restore latest` equals the source; id, time, host and components are the
/// same in all three listings.
#[test]
fn copy_local_to_s3_and_back() {
    let bucket = "akb-copy";
    let server = S3Server::start(&[bucket]);
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 200_000);
    sb.write_config(&three_repo_config(&sb, &server, bucket, ""));
    sb.init();
    sb.ok(&["--repo", "offsite", "init"]);
    sb.ok(&["--repo", "back", "init"]);
    let set = Sandbox::set_id(&sb.backup(&[]));

    let first = sb.json(&["copy", "--to", "offsite"]);
    let copied: Vec<&str> = first["copied"]
        .as_array()
        .unwrap_or_else(|| panic!("copy --json has no `copied` array: {first:#}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(copied.len(), 1, "{first:#}");
    assert!(support::same_id(copied[0], &set), "{first:#}");
    assert_eq!(first["already_there"], 0, "{first:#}");
    let (_, sent) = server.data_objects(bucket, PREFIX);
    assert!(
        sent >= 200_000,
        "the packs reached the bucket: {sent} bytes"
    );

    let second = sb.json(&["copy", "--to", "offsite"]);
    assert_eq!(second["copied"], serde_json::json!([]), "{second:#}");
    assert_eq!(second["already_there"], 1, "{second:#}");
    assert_eq!(
        server.data_objects(bucket, PREFIX).1,
        sent,
        "a second copy uploads no data"
    );

    let third = sb.json(&["copy", "--from", "offsite", "--to", "back"]);
    assert_eq!(
        third["copied"].as_array().map(Vec::len),
        Some(1),
        "{third:#}"
    );
    let restored = restore_target(&sb, Some("back"), "latest", "restored-back");
    assert_trees_equal_excluding(&sb.source(), &restored, DEFAULT_EXCLUDES);

    let local = sets_of(&sb, None);
    let offsite = sets_of(&sb, Some("offsite"));
    let back = sets_of(&sb, Some("back"));
    assert_eq!(local.len(), 1, "{local:#?}");
    assert_eq!(
        identity(&offsite[0]),
        identity(&local[0]),
        "offsite vs local"
    );
    assert_eq!(identity(&back[0]), identity(&local[0]), "back vs local");
    assert_eq!((offsite.len(), back.len()), (1, 1));
    sb.ok(&["--repo", "offsite", "verify", "--read-data"]);
}

/// `copy-to = ["offsite"]` makes `backup` copy its new set: both repositories list the same set
/// and the offsite one restores it.
#[test]
fn copy_to_after_backup() {
    let bucket = "akb-copyto";
    let server = S3Server::start(&[bucket]);
    let sb = Sandbox::new();
    build_rich_tree(&sb.source(), 50_000);
    sb.write_config(&three_repo_config(
        &sb,
        &server,
        bucket,
        "copy-to = [\"offsite\"]\n\n",
    ));
    sb.init();
    sb.ok(&["--repo", "offsite", "init"]);
    let set = Sandbox::set_id(&sb.backup(&[]));

    let local = sets_of(&sb, None);
    let offsite = sets_of(&sb, Some("offsite"));
    assert_eq!(local.len(), 1, "{local:#?}");
    assert_eq!(offsite.len(), 1, "the set was copied offsite: {offsite:#?}");
    assert!(support::same_id(
        local[0]["id"].as_str().unwrap_or(""),
        &set
    ));
    assert_eq!(identity(&offsite[0]), identity(&local[0]));
    // By `latest`: the copy in the offsite repository has an id of its own.
    let restored = restore_target(&sb, Some("offsite"), "latest", "restored-offsite");
    assert_trees_equal_excluding(&sb.source(), &restored, DEFAULT_EXCLUDES);
}

/// A backup SIGKILLed while its packs are being uploaded leaves no set; the next backup
/// completes, `verify --read-data` passes, and it sends less than the whole source again
/// (the packs of the killed run are reused).
#[test]
fn killed_upload_resumes() {
    let bucket = "akb-resume";
    let server = S3Server::start(&[bucket]);
    let sb = Sandbox::new();
    // 96 MiB of incompressible data: three 32 MiB data packs, so packs land before the end.
    // (A `bandwidth` limit would widen the window, but any limit below the pack size makes
    // every upload fail.)
    let source_bytes = build_random_tree(&sb.source(), 24, 4 << 20);
    sb.write_config(&s3_config(&sb, &server, bucket, PREFIX, ""));
    sb.init();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_akbackup"))
        .arg("backup")
        .env("AKBACKUP_CONFIG", sb.config_path())
        .env_remove("AKBACKUP_PASSWORD")
        .env("XDG_CACHE_HOME", sb.root().join("cache"))
        .current_dir(sb.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(sb.root().join("killed.stderr")).expect("stderr file"))
        .spawn()
        .expect("spawn akbackup backup");
    // Kill as soon as moto has logged the first data pack (a PUT of `data/xx/<id>`; the
    // empty `data/xx/` markers of init do not count): the other packs are still on their way.
    let put = format!("\"PUT /{bucket}/{PREFIX}/data/");
    let packs_logged = || {
        server
            .requests()
            .lines()
            .filter_map(|l| l.split_once(put.as_str()))
            .any(|(_, rest)| rest.split(' ').next().is_some_and(|p| p.len() > 3))
    };
    let start = Instant::now();
    while !packs_logged() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no pack was uploaded within 120 s"
        );
        assert!(
            child.try_wait().expect("poll backup").is_none(),
            "the backup ended before any pack was logged"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let before_kill = start.elapsed();
    child.kill().expect("SIGKILL the backup");
    let status = child.wait().expect("reap backup");
    assert!(
        status.code().is_none(),
        "the backup was killed, not ended: {status:?}, stderr:\n{}",
        std::fs::read_to_string(sb.root().join("killed.stderr")).unwrap_or_default()
    );
    let (_, first) = server.data_objects(bucket, PREFIX);
    assert!(
        first > 0 && first < source_bytes,
        "killed mid-way: {first} of {source_bytes} bytes uploaded"
    );
    assert!(
        sb.sets().iter().all(|s| s["status"] != "complete"),
        "a killed backup recorded no complete set"
    );

    let summary = sb.backup(&[]);
    let (_, second) = server.data_objects(bucket, PREFIX);
    let resent = second - first;
    eprintln!(
        "killed_upload_resumes: source {source_bytes} B, in bucket after kill {first} B \
         (killed {before_kill:?} after the start), after rerun {second} B, re-sent {resent} B, \
         added_bytes {}, {} PUT request(s) in all",
        summary["added_bytes"],
        server.requests().matches("\"PUT ").count()
    );
    sb.ok(&["verify", "--read-data"]);
    // What the killed run uploaded is re-indexed and reused: the rerun sends only the rest
    // (plus index, tree and snapshot files).
    assert!(
        resent < source_bytes - first + (1 << 20),
        "the rerun re-sent {resent} bytes; only {} were missing (source {source_bytes})",
        source_bytes - first
    );
}

/// Wrong credentials, a missing bucket and a closed port each fail with exit 2 and one line
/// naming `s3://bucket/prefix`; the secret is never printed, and `config show` masks it.
#[test]
fn environment_errors_name_the_repository() {
    let bucket = "akb-errors";
    let server = S3Server::start_with_auth(&[bucket]);
    let sb = Sandbox::new();
    let wrong = "WrongSecretXyz0123456789abcdefWrongSecret";
    let config = |endpoint: &str, bucket: &str, secret: &str, extra: &str| {
        format!(
            "[repository]\n{keys}{extra}\n{files}",
            keys = repo_keys(&sb, bucket, PREFIX, endpoint, &server.key_id, secret),
            files = files_section(&sb),
        )
    };

    // The right key pair works, so the failure below is the secret's.
    sb.write_config(&config(&server.endpoint, bucket, &server.secret, ""));
    sb.init();
    sb.write_config(&config(&server.endpoint, bucket, wrong, ""));
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    let line = usage_error(&out, "snapshots with a wrong secret");
    assert!(
        line.contains("s3://akb-errors/prod") && line.contains("access denied"),
        "{line}"
    );
    assert!(!all_output(&out).contains(wrong), "the secret was printed");
    let show = sb.ok(&["config", "show"]);
    let shown = all_output(&show);
    assert!(
        shown.contains("secret-access-key = \"***\"") && !shown.contains(wrong),
        "config show masks the secret:\n{shown}"
    );

    sb.write_config(&config(&server.endpoint, "nosuch", &server.secret, ""));
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    let line = usage_error(&out, "snapshots of a missing bucket");
    assert!(
        line.contains("s3://nosuch/prod") && line.contains("bucket"),
        "{line}"
    );
    let out = sb.cmd(&["init"]).output().expect("spawn");
    let line = usage_error(&out, "init into a missing bucket");
    assert!(
        line.contains("s3://nosuch/prod") && line.contains("does not exist"),
        "{line}"
    );
    assert!(!all_output(&out).contains(&server.secret));

    let closed = format!("http://127.0.0.1:{}", free_port());
    sb.write_config(&config(&closed, bucket, wrong, "retry = 0\n"));
    let started = Instant::now();
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    let line = usage_error(&out, "snapshots against a closed port");
    assert!(
        line.contains("s3://akb-errors/prod") && line.contains("cannot reach"),
        "{line}"
    );
    assert!(!all_output(&out).contains(wrong), "the secret was printed");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "retry = 0 fails fast: {:?}",
        started.elapsed()
    );
}

/// A server that accepts the connection and never answers (a listener nobody reads, so the
/// kernel completes the handshake) no longer hangs a command: `snapshots` gives up after
/// `timeout` and `retry`, within a bound, with exit 2 and one line naming the endpoint and the
/// timeout. (Before, it waited forever and a hung nightly run kept its lock.)
#[test]
fn silent_server_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a silent listener");
    let endpoint = format!(
        "http://{}",
        listener.local_addr().expect("listener address")
    );
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "[repository]\n{keys}timeout = 2\nretry = 1\n\n{files}",
        keys = repo_keys(
            &sb,
            "akb-silent",
            PREFIX,
            &endpoint,
            "AKIASILENTTEST",
            "SilentSecret0123456789abcdefSilentSecret"
        ),
        files = files_section(&sb),
    ));
    let started = Instant::now();
    let out = sb
        .cmd(&["snapshots"])
        .timeout(Duration::from_secs(60))
        .output()
        .expect("spawn");
    let took = started.elapsed();
    let line = usage_error(&out, "snapshots against a server that never answers");
    assert!(
        line.contains(&endpoint)
            && line.contains("timeout of 2 s")
            && line.contains("s3://akb-silent/prod"),
        "{line}"
    );
    assert!(
        took < Duration::from_secs(30),
        "timeout = 2 with one retry gives up within seconds, took {took:?}"
    );
    drop(listener);
}

/// With the secret key written in the config, no verbosity prints it (nor the repository
/// password): `-v`, `-vv`, `AKBACKUP_LOG=trace` and `-v --log-format json`, on stdout and
/// stderr, while the debug output is really on (the signing library used to print its
/// credential provider, `secret_access_key` in clear, at `-v`).
#[test]
fn verbose_output_never_shows_the_secret() {
    let bucket = "akb-verbose";
    let server = S3Server::start_with_auth(&[bucket]);
    let sb = Sandbox::new();
    std::fs::write(sb.source().join("a.conf"), b"listen 8080\n").expect("source");
    sb.write_config(&s3_config(&sb, &server, bucket, PREFIX, ""));
    sb.init();
    let runs: [(&str, &[&str], Option<&str>); 4] = [
        ("-v backup", &["-v", "backup"], None),
        ("-vv snapshots", &["-vv", "snapshots"], None),
        (
            "AKBACKUP_LOG=trace snapshots",
            &["snapshots"],
            Some("trace"),
        ),
        (
            "-v --log-format json verify",
            &["-v", "--log-format", "json", "verify"],
            None,
        ),
    ];
    for (what, args, log) in runs {
        let mut cmd = sb.cmd(args);
        if let Some(level) = log {
            cmd.env("AKBACKUP_LOG", level);
        }
        let out = cmd.output().expect("spawn");
        assert_exit(&out, 0, what);
        let all = all_output(&out);
        assert!(
            out.stderr.len() > 200,
            "{what}: the debug output is on, so stderr has the engine's lines:\n{all}"
        );
        assert!(
            !all.contains(&server.secret),
            "{what}: the secret key was printed:\n{all}"
        );
        assert!(
            !all.contains(support::PASSWORD),
            "{what}: the repository password was printed"
        );
    }
}

/// `verify --read-data-subset 50%` and `1/2` pass and say a subset was read; `abc` is refused
/// with exit 2 and one line.
#[test]
fn verify_read_data_subset() {
    let bucket = "akb-subset";
    let server = S3Server::start(&[bucket]);
    let sb = Sandbox::new();
    build_random_tree(&sb.source(), 6, 100_000);
    sb.write_config(&s3_config(&sb, &server, bucket, PREFIX, ""));
    sb.init();
    sb.backup(&[]);
    for subset in ["50%", "1/2"] {
        let out = sb.ok(&["verify", "--read-data-subset", subset]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("with a {subset} subset of the packs read")),
            "verify --read-data-subset {subset}:\n{}",
            all_output(&out)
        );
        let json = sb.json(&["verify", "--read-data-subset", subset]);
        assert_eq!(json["read_data_subset"], subset, "{json:#}");
    }
    let out = sb
        .cmd(&["verify", "--read-data-subset", "abc"])
        .output()
        .expect("spawn");
    assert_exit(&out, 2, "verify --read-data-subset abc");
    let line = usage_error(&out, "verify --read-data-subset abc");
    assert!(line.contains("abc"), "{line}");
}
