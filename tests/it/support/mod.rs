//! Shared scaffolding for the integration tests: a [`Sandbox`] (temp dir with a config, a
//! 0600 password file, a repository path and a recording stand-in for the `akd` service),
//! builders for source trees, and [`assert_trees_equal`], a recursive comparison of type,
//! contents, permission bits, mtime and symlink targets.
//!
//! It deliberately knows nothing of the repository format beyond what the spec promises
//! (restic layout, `<repo>/akbackup.lock`); the standard `restic` client is reached through
//! [`Sandbox::restic`] so interop is checked by an independent implementation. The MongoDB
//! test server and its tooling live in [`mongo`].

pub mod btrfs;
pub mod leveldb;
pub mod mongo;
pub mod s3;
pub mod sshd;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use filetime::FileTime;
use serde_json::Value;
use tempfile::TempDir;

/// The password written to the sandbox's password file.
pub const PASSWORD: &str = "correct horse battery staple";

/// The default exclude patterns of a files component.
pub const DEFAULT_EXCLUDES: &[&str] = &["*.pid", "*.log"];

/// The name of the files component configured by [`Sandbox::new`].
pub const COMPONENT: &str = "files.control";

/// Upper bound for one `akbackup` invocation, so a hang fails the test instead of the suite.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(240);

/// A throwaway installation: everything lives under one temp dir that is removed on drop.
pub struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    /// Creates the temp dir, a 0600 password file, an empty source dir, the `akd` recording
    /// stand-in and the default config. The repository is not initialised.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("akbackup-it-")
            .tempdir()
            .expect("create sandbox temp dir");
        let sandbox = Sandbox { dir };
        write_file(&sandbox.password_file(), format!("{PASSWORD}\n").as_bytes());
        chmod(&sandbox.password_file(), 0o600);
        fs::create_dir_all(sandbox.source()).expect("create source dir");
        let akd = sandbox.akd();
        fs::create_dir_all(akd.parent().expect("akd has a parent")).expect("create bin dir");
        let script = format!(
            "#!/bin/sh\n# Stand-in for the akd service: records argv and cwd, one call a line.\n\
             printf '%s\\t%s\\n' \"$*\" \"$(pwd)\" >> '{}'\n",
            sandbox.restart_log().display()
        );
        write_file(&akd, script.as_bytes());
        chmod(&akd, 0o755);
        sandbox.write_config(&sandbox.default_config());
        sandbox
    }

    /// The sandbox's top directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The repository path named in the default config.
    pub fn repo(&self) -> PathBuf {
        self.root().join("repo")
    }

    /// The password file named in the default config.
    pub fn password_file(&self) -> PathBuf {
        self.root().join("password")
    }

    /// The source dir of the `files.control` component (`<root>/opt/altcraft`).
    pub fn source(&self) -> PathBuf {
        self.root().join("opt").join("altcraft")
    }

    /// The config file that `AKBACKUP_CONFIG` points at.
    pub fn config_path(&self) -> PathBuf {
        self.root().join("akbackup.toml")
    }

    /// The recording stand-in used as the component's restart command.
    pub fn akd(&self) -> PathBuf {
        self.root().join("bin").join("akd")
    }

    /// Where the stand-in appends `<args>\t<cwd>` for every call.
    pub fn restart_log(&self) -> PathBuf {
        self.root().join("akd.calls")
    }

    /// The argument strings of every recorded restart call, in order.
    pub fn restart_calls(&self) -> Vec<String> {
        match fs::read_to_string(self.restart_log()) {
            Ok(text) => text
                .lines()
                .map(|line| line.split('\t').next().unwrap_or_default().to_string())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The lock file a writing command holds.
    pub fn lock_file(&self) -> PathBuf {
        self.repo().join("akbackup.lock")
    }

    /// The config written by [`Sandbox::new`]: repository, password file, `files.control`
    /// with the default excludes spelled out and the `akd restart` stand-in.
    pub fn default_config(&self) -> String {
        format!(
            "[repository]\npath = {repo}\npassword-file = {pw}\n\n\
             [files.control]\npath = {src}\nexclude = [\"*.pid\", \"*.log\"]\n\
             restart = [{akd}, \"restart\"]\n",
            repo = toml_str(&self.repo()),
            pw = toml_str(&self.password_file()),
            src = toml_str(&self.source()),
            akd = toml_str(&self.akd()),
        )
    }

    /// Replaces the config file's text.
    /// Mode 0600, as a config holding a secret (an S3 key, a webhook) must be.
    pub fn write_config(&self, text: &str) {
        write_file(&self.config_path(), text.as_bytes());
        chmod(&self.config_path(), 0o600);
    }

    /// `akbackup ARGS` with `AKBACKUP_CONFIG` set, no `AKBACKUP_PASSWORD`, cwd in the
    /// sandbox, a private cache dir and no terminal on stdin.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_akbackup"));
        cmd.args(args)
            .env("AKBACKUP_CONFIG", self.config_path())
            .env_remove("AKBACKUP_PASSWORD")
            .env("XDG_CACHE_HOME", self.root().join("cache"))
            // ssh's control sockets (SFTP repositories) stay in the sandbox.
            .env("XDG_STATE_HOME", self.root().join("state"))
            .env("NO_COLOR", "1")
            .current_dir(self.root())
            .timeout(COMMAND_TIMEOUT);
        cmd
    }

    /// Runs `akbackup ARGS`, asserts exit 0 and returns the output.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().expect("spawn akbackup");
        assert_exit(&out, 0, &format!("akbackup {}", args.join(" ")));
        out
    }

    /// Runs `akbackup --json ARGS`, asserts exit 0 and returns stdout parsed as one document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = self.ok(&full);
        parse_json(&out)
    }

    /// Initialises the repository (asserts success).
    pub fn init(&self) {
        self.ok(&["init"]);
    }

    /// Makes one backup set with `--json` and returns the summary.
    pub fn backup(&self, extra: &[&str]) -> Value {
        let mut args = vec!["backup"];
        args.extend_from_slice(extra);
        let summary = self.json(&args);
        assert_eq!(
            summary["status"], "complete",
            "backup summary status: {summary:#}"
        );
        summary
    }

    /// The id of the set a backup summary describes.
    pub fn set_id(summary: &Value) -> String {
        summary["set"]
            .as_str()
            .unwrap_or_else(|| panic!("backup summary has no string `set`: {summary:#}"))
            .to_string()
    }

    /// `snapshots --json` as an array.
    pub fn sets(&self) -> Vec<Value> {
        match self.json(&["snapshots"]) {
            Value::Array(sets) => sets,
            other => panic!("snapshots --json is not an array: {other:#}"),
        }
    }

    /// A `restic -r <repo>` command using the sandbox's password file and no cache.
    /// Fails the test (not skips it) when `restic` is missing.
    pub fn restic(&self) -> std::process::Command {
        let restic = find_on_path("restic").unwrap_or_else(|| {
            panic!(
                "the standard `restic` client is not on PATH; run scripts/test, which installs \
                 it (apt-get install -y restic)"
            )
        });
        let mut cmd = std::process::Command::new(restic);
        cmd.arg("-r")
            .arg(self.repo())
            .arg("--no-cache")
            .env("RESTIC_PASSWORD_FILE", self.password_file())
            .env_remove("RESTIC_PASSWORD")
            .env_remove("RESTIC_PASSWORD_COMMAND")
            .env_remove("RESTIC_REPOSITORY")
            .env_remove("RESTIC_REPOSITORY_FILE")
            .current_dir(self.root());
        cmd
    }
}

/// `path` as a TOML basic string.
pub fn toml_str(path: &Path) -> String {
    let s = path.to_str().expect("sandbox paths are UTF-8");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Parses stdout as exactly one JSON document (trailing text fails).
pub fn parse_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Asserts the exit code, showing both streams when it differs.
pub fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit {code}, got {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts exit 2 and exactly one stderr line starting with `akbackup: `; returns that line.
pub fn usage_error(out: &Output, what: &str) -> String {
    assert_exit(out, 2, what);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.trim_end_matches('\n').lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected exactly one stderr line, got {}:\n{stderr}",
        lines.len()
    );
    assert!(
        lines[0].starts_with("akbackup: "),
        "{what}: the error line must start with `akbackup: `: {:?}",
        lines[0]
    );
    lines[0].to_string()
}

/// Both output streams as one string, for "never printed" checks.
pub fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Starts `sleep SECONDS` under a name with `akbackup` in it (a symlink in `dir`), to stand in
/// for a live akbackup holding the lock: a lock naming a live process of another program is
/// stale (its pid was reused).
pub fn spawn_lock_holder(dir: &Path, seconds: u32) -> std::process::Child {
    let sleep = find_on_path("sleep").expect("sleep on PATH");
    let named = dir.join("akbackup-holder");
    if !named.exists() {
        std::os::unix::fs::symlink(&sleep, &named).expect("symlink sleep");
    }
    std::process::Command::new(&named)
        .arg(seconds.to_string())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn the lock holder")
}

/// The first executable named `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// This host's name as the kernel reports it (what `gethostname(2)` returns).
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read /proc/sys/kernel/hostname")
        .trim()
        .to_string()
}

/// Sum of the sizes of all regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let entry = entry.expect("dir entry");
        let meta = fs::symlink_metadata(entry.path()).expect("stat");
        if meta.is_dir() {
            total += dir_size(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        let meta = fs::symlink_metadata(&path).expect("stat");
        if meta.is_dir() {
            out.extend(files_under(&path));
        } else if meta.is_file() {
            out.push(path);
        }
    }
    out
}

/// Writes `bytes` to `path`, creating parent dirs.
pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Sets the permission bits of `path`.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, path.display()));
}

/// Creates a symlink at `link` whose target text is `target`.
pub fn symlink(target: impl AsRef<Path>, link: &Path) {
    if let Some(parent) = link.parent() {
        fs::create_dir_all(parent).expect("mkdir for symlink");
    }
    std::os::unix::fs::symlink(target.as_ref(), link)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
}

/// `len` deterministic, incompressible bytes (xorshift64*), different for each `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Gives every file, dir and symlink under `root` (and `root` itself) a distinct, whole-second
/// mtime in 2017, children before parents so later steps cannot disturb a dir's mtime.
pub fn set_old_mtimes(root: &Path) {
    fn visit(path: &Path, next: &mut i64) {
        let meta = fs::symlink_metadata(path).expect("stat");
        if meta.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(path)
                .expect("read dir")
                .map(|e| e.expect("dir entry").path())
                .collect();
            children.sort();
            for child in children {
                visit(&child, next);
            }
        }
        *next += 3_607;
        let time = FileTime::from_unix_time(*next, 0);
        if meta.file_type().is_symlink() {
            filetime::set_symlink_file_times(path, time, time).expect("set symlink mtime");
        } else {
            filetime::set_file_times(path, time, time).expect("set mtime");
        }
    }
    let mut next = 1_500_000_000;
    visit(root, &mut next);
}

/// What [`build_rich_tree`] made, relative to its root.
pub struct RichTree {
    /// Files matching the default excludes (present in the source, never in a restore).
    pub excluded: Vec<PathBuf>,
}

/// Fills `root` with every kind of entry a backup must keep: modes 0640/0600/0755 files,
/// a 0700 dir, a 0750 root, an empty file, empty and nested dirs, relative / absolute /
/// dangling / directory symlinks, odd names, a `blob_len`-byte random file, 300 small
/// files, and `*.pid` / `*.log` files that the default excludes drop. All mtimes are old.
pub fn build_rich_tree(root: &Path, blob_len: usize) -> RichTree {
    fs::create_dir_all(root).expect("mkdir root");
    write_file(
        &root.join("etc/main.conf"),
        b"listen = 127.0.0.1:8080\nworkers = 4\n",
    );
    chmod(&root.join("etc/main.conf"), 0o640);
    write_file(&root.join("etc/empty.conf"), b"");
    write_file(
        &root.join("bin/akd-worker"),
        b"#!/bin/sh\nexec sleep infinity\n",
    );
    chmod(&root.join("bin/akd-worker"), 0o755);
    write_file(&root.join("private/secret.key"), &random_bytes(7, 64));
    chmod(&root.join("private/secret.key"), 0o600);
    chmod(&root.join("private"), 0o700);
    write_file(&root.join("a/b/c/d/deep.txt"), b"deep inside\n");
    fs::create_dir_all(root.join("var/empty")).expect("mkdir empty");
    fs::create_dir_all(root.join("var/spool/queue")).expect("mkdir nested empty");
    chmod(&root.join("var/spool"), 0o770);
    write_file(&root.join("names/with space.txt"), b"space\n");
    write_file(
        &root.join("names/\u{fc}n\u{ef}code-\u{540d}\u{524d}.txt"),
        b"utf8\n",
    );
    write_file(&root.join("names/.hidden"), b"hidden\n");
    symlink("../etc/main.conf", &root.join("links/relative"));
    symlink(root.join("etc/main.conf"), &root.join("links/absolute"));
    symlink("../nowhere/missing.txt", &root.join("links/dangling"));
    symlink(
        "/nonexistent/akbackup/target",
        &root.join("links/dangling-absolute"),
    );
    symlink("../a/b", &root.join("links/to-dir"));
    write_file(&root.join("data/blob.bin"), &random_bytes(42, blob_len));
    for d in 0..5u64 {
        for f in 0..60u64 {
            let n = d * 60 + f;
            let len = usize::try_from((n * 37) % 2_000).expect("small");
            let mut body = format!("file {d}/{f}\n").into_bytes();
            body.extend(random_bytes(1_000 + n, len));
            write_file(&root.join(format!("many/d{d}/f{f:03}.txt")), &body);
        }
    }
    let excluded: Vec<PathBuf> = [
        "akd.pid",
        "run/akd.pid",
        "logs/app.log",
        "logs/old/rotated.log",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    for path in &excluded {
        write_file(&root.join(path), b"must not be backed up\n");
    }
    chmod(root, 0o750);
    set_old_mtimes(root);
    RichTree { excluded }
}

/// Fills `root` with `count` random files of `each` bytes (incompressible) plus a few small
/// files; returns the total bytes written.
pub fn build_random_tree(root: &Path, count: u64, each: usize) -> u64 {
    let mut total = 0;
    for i in 0..count {
        let body = random_bytes(10_000 + i, each);
        write_file(&root.join(format!("blobs/{}/blob-{i}.bin", i % 3)), &body);
        total += body.len() as u64;
    }
    for i in 0..20u64 {
        let body = format!("small {i}\n");
        write_file(&root.join(format!("conf/{i}.conf")), body.as_bytes());
        total += body.len() as u64;
    }
    set_old_mtimes(root);
    total
}

/// Copies a tree keeping modes, times and symlinks (`cp -a`).
pub fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("spawn cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Count and total size of the regular files under `root`, skipping excluded names.
pub fn file_stats(root: &Path, excludes: &[&str]) -> (u64, u64) {
    snapshot_tree(root, excludes)
        .values()
        .filter(|e| e.kind == Kind::File)
        .fold((0, 0), |(n, b), e| (n + 1, b + e.len))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink(PathBuf),
    Other,
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    mode: u32,
    mtime: i64,
    len: u64,
    owner: (u32, u32),
}

fn excluded(name: &str, excludes: &[&str]) -> bool {
    excludes
        .iter()
        .any(|pattern| match pattern.strip_prefix('*') {
            Some(suffix) => name.ends_with(suffix),
            None => name == *pattern,
        })
}

/// Every entry under `root` keyed by relative path (`""` is the root), not following links.
fn snapshot_tree(root: &Path, excludes: &[&str]) -> BTreeMap<PathBuf, Entry> {
    fn visit(root: &Path, rel: &Path, excludes: &[&str], out: &mut BTreeMap<PathBuf, Entry>) {
        let path = root.join(rel);
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        let ft = meta.file_type();
        let kind = if ft.is_symlink() {
            Kind::Symlink(fs::read_link(&path).expect("readlink"))
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Other
        };
        let is_link = matches!(kind, Kind::Symlink(_));
        out.insert(
            rel.to_path_buf(),
            Entry {
                mode: if is_link { 0 } else { meta.mode() & 0o7777 },
                mtime: if is_link { 0 } else { meta.mtime() },
                len: if ft.is_file() { meta.len() } else { 0 },
                owner: (meta.uid(), meta.gid()),
                kind,
            },
        );
        if ft.is_dir() {
            for child in fs::read_dir(&path).expect("read dir") {
                let name = child.expect("dir entry").file_name();
                if excluded(&name.to_string_lossy(), excludes) {
                    continue;
                }
                visit(root, &rel.join(name), excludes, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(root, Path::new(""), excludes, &mut out);
    out
}

/// Asserts `actual` mirrors `expected`: same entries, types, file contents, permission bits
/// of files and dirs (root included), mtimes to the second, symlink targets, and owner
/// uid:gid of everything (links included).
pub fn assert_trees_equal(expected: &Path, actual: &Path) {
    assert_trees_equal_excluding(expected, actual, &[]);
}

/// [`assert_trees_equal`], ignoring entries whose name matches one of `excludes`
/// (`*.ext` or an exact name) on both sides.
pub fn assert_trees_equal_excluding(expected: &Path, actual: &Path, excludes: &[&str]) {
    assert!(actual.is_dir(), "{} is not a directory", actual.display());
    let want = snapshot_tree(expected, excludes);
    let got = snapshot_tree(actual, excludes);
    let mut diffs = Vec::new();
    for (rel, w) in &want {
        let shown = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let Some(g) = got.get(rel) else {
            diffs.push(format!("missing: {}", shown.display()));
            continue;
        };
        if w.kind != g.kind {
            diffs.push(format!("{}: {:?} vs {:?}", shown.display(), w.kind, g.kind));
            continue;
        }
        if w.mode != g.mode {
            diffs.push(format!(
                "{}: mode {:o} vs {:o}",
                shown.display(),
                w.mode,
                g.mode
            ));
        }
        if w.owner != g.owner {
            diffs.push(format!(
                "{}: owner uid:gid {:?} vs {:?}",
                shown.display(),
                w.owner,
                g.owner
            ));
        }
        if w.mtime != g.mtime {
            diffs.push(format!(
                "{}: mtime {} vs {}",
                shown.display(),
                w.mtime,
                g.mtime
            ));
        }
        if w.kind == Kind::File {
            let a = fs::read(expected.join(rel)).expect("read expected file");
            let b = fs::read(actual.join(rel)).expect("read actual file");
            if a != b {
                diffs.push(format!(
                    "{}: contents differ ({} vs {} bytes)",
                    shown.display(),
                    a.len(),
                    b.len()
                ));
            }
        }
    }
    for rel in got.keys().filter(|rel| !want.contains_key(*rel)) {
        diffs.push(format!("unexpected: {}", rel.display()));
    }
    assert!(
        diffs.is_empty(),
        "trees differ (expected {} vs actual {}), {} difference(s):\n  {}",
        expected.display(),
        actual.display(),
        diffs.len(),
        diffs
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// The component object named `name` in a `--json` summary's `components` array.
pub fn component<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["components"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no component {name:?} in {summary:#}"))
}

/// True when two set ids name the same set (one may be the short form of the other).
pub fn same_id(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a))
}

/// The first line a test server prints on `stdout` (its "ready" line), or "" when it prints
/// none within `timeout`: read on a thread, so a server that hangs cannot hang the test.
pub fn first_line_within(stdout: std::process::ChildStdout, timeout: Duration) -> String {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(timeout).unwrap_or_default()
}

/// Held by the tests that open thousands of S3 connections at once (several hosts on one
/// bucket) and by the tests that time a kill by watching the connection table for akbackup's
/// first connection: beside the former, the table holds thousands of TIME-WAIT sockets, the
/// machine is busy, and the watch missed a short connection (the kill then landed in a later
/// phase than the test is about).
pub fn network_heavy_guard() -> std::sync::MutexGuard<'static, ()> {
    static GUARD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GUARD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
