//! The MongoDB test peer: [`MongoServer`], a mongoeco wire-protocol server on a free loopback
//! port (started through `tests/support/mongo_tool.py serve`, which runs the vendored launcher
//! `tests/support/mongoeco_server.py` unmodified), the `mongo_tool.py` wrappers that seed it with
//! the mongodump fixture dataset and describe its state, and sandbox configs with a
//! `[mongodb.NAME]` section plus a recording `systemctl` stand-in.
//!
//! Both scripts run under Python >= 3.13 with mongoeco and pymongo: `$AKBACKUP_TEST_PYTHON313`
//! when set, else `python3` with `PYENV_VERSION=3.13.0` (the pyenv interpreter of the machine
//! image); `scripts/test` installs the packages. The fixtures live in `tests/fixtures/mongodump/`.
//! Nothing here knows akbackup's dump format: servers are compared through `state`.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::{Sandbox, all_output, assert_exit, parse_json, toml_str, write_file};

/// How long a server may take to print its URI.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The interpreter override (a Python >= 3.13 with mongoeco and pymongo).
const PYTHON_ENV: &str = "AKBACKUP_TEST_PYTHON313";

/// `tests/support/<name>`.
fn support_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(name)
}

/// The mongodump fixtures: `dump.archive`, `dump.archive.gz`, `dump-dir/`, `dump-dir-gzip/`,
/// `dataset.json`.
pub fn fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mongodump");
    assert!(
        dir.join("dataset.json").is_file(),
        "the mongodump fixtures are missing: {} has no dataset.json",
        dir.display()
    );
    dir
}

/// The fixture dataset, every document in canonical Extended JSON.
pub fn dataset() -> PathBuf {
    fixtures().join("dataset.json")
}

/// The Python 3.13 that runs the MongoDB peers, ready for arguments.
pub fn python313() -> Command {
    match std::env::var_os(PYTHON_ENV) {
        Some(python) if !python.is_empty() => Command::new(python),
        _ => {
            let mut cmd = Command::new("python3");
            cmd.env("PYENV_VERSION", "3.13.0");
            cmd
        }
    }
}

/// `mongo_tool.py ARGS` under [`python313`], stdin closed.
pub fn tool_cmd(args: &[&str]) -> Command {
    let mut cmd = python313();
    cmd.arg(support_script("mongo_tool.py"))
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs `mongo_tool.py ARGS` to completion, asserting exit 0; a missing interpreter or package
/// is named in the message with the fix.
pub fn tool_ok(args: &[&str]) -> Output {
    let out = tool_cmd(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run the Python 3.13 of the MongoDB tests ({e}); set {PYTHON_ENV} or run \
             scripts/test"
        )
    });
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success()
        && (text.contains("No module named") || text.contains("version `3.13.0' not installed"))
    {
        panic!(
            "the MongoDB test peers need Python >= 3.13 with mongoeco and pymongo; run \
             scripts/test, which installs them, or set {PYTHON_ENV}:\n{text}"
        );
    }
    assert_exit(&out, 0, &format!("mongo_tool.py {}", args.join(" ")));
    out
}

/// The state `dataset.json` describes (optionally only the namespaces `ns`), in the shape of
/// [`MongoServer::state`].
pub fn expected(ns: &[&str]) -> Value {
    let dataset = dataset();
    let mut args = vec!["expected", arg(&dataset)];
    for n in ns {
        args.extend(["--ns", n]);
    }
    parse_json(&tool_ok(&args))
}

/// `path` as a `&str` argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local addr").port()
}

/// A running mongoeco server; killed (and reaped) on drop, including when the test panics.
/// Its stdin is a pipe: if the test process dies, the server exits by itself.
pub struct MongoServer {
    child: Option<Child>,
    port: u16,
    /// The URI the tool uses: with the credentials of an auth server.
    admin_uri: String,
    /// Holds the server's stderr log.
    logs: TempDir,
}

impl MongoServer {
    /// Starts a server without authentication.
    pub fn start() -> Self {
        Self::spawn(None, &[])
    }

    /// Starts a server without authentication, with `env` set for the launcher (its
    /// `AKBACKUP_TEST_*` shims: a dbPath, an fsync lock, a version).
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        Self::spawn(None, env)
    }

    /// Starts a server that requires the SCRAM user `user`/`password` (source `admin`) for
    /// every command. Clients must ask for `authMechanism=SCRAM-SHA-256` (see mongo_tool.py).
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::spawn(Some((user, password)), &[])
    }

    fn spawn(auth: Option<(&str, &str)>, env: &[(&str, &str)]) -> Self {
        let logs = tempfile::Builder::new()
            .prefix("akbackup-mongoeco-")
            .tempdir()
            .expect("create server log dir");
        let mut last = String::new();
        // A port picked free can be taken before the server binds it: try a few.
        for _ in 0..3 {
            let port = free_port();
            let log = logs.path().join(format!("server-{port}.log"));
            let launcher = support_script("mongoeco_server.py");
            let port_text = port.to_string();
            let mut args = vec!["serve", arg(&launcher), &port_text];
            if let Some((user, password)) = auth {
                args.extend(["--user", user, "--password", password]);
            }
            let mut child = tool_cmd(&args)
                .envs(env.iter().copied())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(File::create(&log).expect("create server log"))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start the Python 3.13 of the MongoDB tests ({e}); set {PYTHON_ENV}"
                    )
                });
            let stdout = child.stdout.take().expect("server stdout");
            let line = super::first_line_within(stdout, START_TIMEOUT);
            if line.trim_start().starts_with("mongodb://") {
                let admin_uri = match auth {
                    Some((user, password)) => format!(
                        "mongodb://{user}:{password}@127.0.0.1:{port}/?authMechanism=SCRAM-SHA-256"
                    ),
                    None => format!("mongodb://127.0.0.1:{port}"),
                };
                return MongoServer {
                    child: Some(child),
                    port,
                    admin_uri,
                    logs,
                };
            }
            let _ = child.kill();
            let status = child.wait().ok();
            last = format!(
                "port {port}: printed {line:?}, exit {status:?}, stderr:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!(
            "the mongoeco server did not print its URI within {} s (run scripts/test, which \
             installs mongoeco and pymongo for Python 3.13, or set {PYTHON_ENV}); last attempt: {last}",
            START_TIMEOUT.as_secs()
        );
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mongodb://127.0.0.1:PORT`, without credentials.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// What the server wrote on stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.logs.path().join(format!("server-{}.log", self.port)))
            .unwrap_or_default()
    }

    /// The server process's pid, while it runs (a stand-in kills it mid-restore).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// SIGKILLs the server now and reaps it (the server-dies-mid-backup tests).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `mongo_tool.py SUBCOMMAND <uri> REST` (the URI with the credentials of an auth server),
    /// asserting exit 0; a failure shows the server's stderr too.
    pub fn tool(&self, subcommand: &str, rest: &[&str]) -> Output {
        let mut args = vec![subcommand, self.admin_uri.as_str()];
        args.extend_from_slice(rest);
        let out = tool_cmd(&args).output().expect("spawn mongo_tool.py");
        if !out.status.success() {
            panic!(
                "mongo_tool.py {}: exit {:?}\n{}\nserver stderr:\n{}",
                args.join(" "),
                out.status.code(),
                all_output(&out),
                self.log()
            );
        }
        out
    }

    /// Every non-system namespace of every database but admin/local/config: type, count,
    /// sha256 of the sorted raw BSON documents, capped options and index specs (views:
    /// `viewOn` and the pipeline). See `tests/support/mongo_tool.py`.
    pub fn state(&self) -> Value {
        parse_json(&self.tool("state", &[]))
    }

    /// Seeds the whole fixture dataset (or only the namespaces `ns`); returns the tool's
    /// summary (`namespaces`, `documents`, `seconds`).
    pub fn seed(&self, ns: &[&str]) -> Value {
        let dataset = dataset();
        let mut rest = vec![arg(&dataset)];
        for n in ns {
            rest.extend(["--ns", n]);
        }
        parse_json(&self.tool("seed", &rest))
    }

    /// Seeds the whole fixture dataset (510 documents in 5 collections, 1 view); returns the
    /// tool's summary. `harness_seeded_server_equals_dataset` proves the result equals the
    /// dataset, so the other tests do not pay for that check again.
    pub fn seed_fixture(&self) -> Value {
        let summary = self.seed(&[]);
        assert_eq!(summary["documents"], 510, "seed summary: {summary}");
        assert_eq!(summary["namespaces"], 6, "seed summary: {summary}");
        summary
    }

    /// Inserts `n` small documents with `_id`s from `start` into `ns` (`db.coll`).
    pub fn insert(&self, ns: &str, n: u32, start: u32) {
        self.tool(
            "insert",
            &[ns, &n.to_string(), "--start", &start.to_string()],
        );
    }

    /// Drops a collection (`db.coll`) or a database (`db`).
    pub fn drop_ns(&self, ns: &str) {
        self.tool("drop", &[ns]);
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asserts two states are equal, naming every namespace that differs and how.
pub fn assert_state_eq(actual: &Value, expected: &Value, what: &str) {
    if actual == expected {
        return;
    }
    let empty = serde_json::Map::new();
    let a = actual.as_object().unwrap_or(&empty);
    let e = expected.as_object().unwrap_or(&empty);
    let mut diffs = Vec::new();
    for (ns, want) in e {
        match a.get(ns) {
            None => diffs.push(format!("missing {ns}")),
            Some(got) if got != want => {
                let fields = want
                    .as_object()
                    .map(|w| {
                        w.iter()
                            .filter(|(k, v)| got.get(k.as_str()) != Some(*v))
                            .map(|(k, v)| format!("{k}: want {v}, got {}", got[k.as_str()]))
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default();
                diffs.push(format!("{ns} differs: {fields}"));
            }
            Some(_) => {}
        }
    }
    for ns in a.keys().filter(|ns| !e.contains_key(*ns)) {
        diffs.push(format!("unexpected {ns}: {}", a[ns.as_str()]));
    }
    panic!(
        "{what}: server state differs from the expected one:\n  {}",
        diffs.join("\n  ")
    );
}

/// A config with the sandbox's repository and one `[mongodb.NAME]` section at `uri`
/// (service `mongod-NAME`) plus `extra` lines in that section.
pub fn mongo_config(sb: &Sandbox, name: &str, uri: &str, extra: &str) -> String {
    format!(
        "[repository]\npath = {repo}\npassword-file = {pw}\n\n{section}",
        repo = toml_str(&sb.repo()),
        pw = toml_str(&sb.password_file()),
        section = mongo_section(name, uri, extra),
    )
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `[mongodb.NAME]` with `uri`, `service = "mongod-NAME"` and `extra` lines.
pub fn mongo_section(name: &str, uri: &str, extra: &str) -> String {
    format!(
        "[mongodb.{name}]\nuri = {uri}\nservice = \"mongod-{name}\"\n{extra}",
        uri = toml_string(uri),
    )
}

/// A sandbox whose config has only `[mongodb.NAME]` (plus `extra`), repository initialised,
/// with the recording `systemctl` stand-in installed.
pub fn mongo_sandbox(name: &str, uri: &str, extra: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write_config(&mongo_config(&sb, name, uri, extra));
    install_systemctl(&sb);
    sb.init();
    sb
}

/// A sandbox with the default `files.control` config plus `[mongodb.NAME]` at `uri`,
/// repository initialised, with the recording `systemctl` stand-in installed.
pub fn files_and_mongo_sandbox(name: &str, uri: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "{}\n{}",
        sb.default_config(),
        mongo_section(name, uri, "")
    ));
    install_systemctl(&sb);
    sb.init();
    sb
}

/// Writes `<root>/bin/systemctl`: records each call's arguments, one line each, and succeeds.
pub fn install_systemctl(sb: &Sandbox) {
    let script = format!(
        "#!/bin/sh\n# Stand-in for systemctl: records each call.\nprintf '%s\\n' \"$*\" >> '{}'\nexit 0\n",
        systemctl_log(sb).display()
    );
    let path = sb.root().join("bin/systemctl");
    write_file(&path, script.as_bytes());
    super::chmod(&path, 0o755);
}

/// Where the stand-in records its calls.
pub fn systemctl_log(sb: &Sandbox) -> PathBuf {
    sb.root().join("systemctl.calls")
}

/// The recorded `systemctl` calls, one argument string each.
pub fn systemctl_calls(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(systemctl_log(sb))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// `akbackup ARGS` with the `systemctl` stand-in first on `PATH`; never fails by itself.
pub fn run(sb: &Sandbox, args: &[&str]) -> Output {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![sb.root().join("bin")];
    dirs.extend(std::env::split_paths(&path));
    sb.cmd(args)
        .env("PATH", std::env::join_paths(dirs).expect("join PATH"))
        .output()
        .expect("spawn akbackup")
}

/// [`run`] asserting exit 0.
pub fn run_ok(sb: &Sandbox, args: &[&str]) -> Output {
    let out = run(sb, args);
    assert_exit(&out, 0, &format!("akbackup {}", args.join(" ")));
    out
}

/// [`run`] with `--json` first, asserting exit 0; stdout as one JSON document.
pub fn run_json(sb: &Sandbox, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    parse_json(&run_ok(sb, &full))
}

/// Asserts a failed run: exit 1 or 2 and exactly one non-empty stderr line, starting with
/// `akbackup: ` and naming `name`; returns the line.
pub fn one_line_failure(out: &Output, name: &str, what: &str) -> String {
    let code = out.status.code();
    assert!(
        code == Some(1) || code == Some(2),
        "{what}: expected exit 1 or 2, got {code:?}\n{}",
        all_output(out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one stderr line, got {}:\n{stderr}",
        lines.len()
    );
    assert!(
        lines[0].starts_with("akbackup: ") && lines[0].contains(name),
        "{what}: the error line must start with `akbackup: ` and name {name}: {:?}",
        lines[0]
    );
    lines[0].to_string()
}

/// Waits until some process holds an established TCP connection to `port` on loopback (the
/// client side of a connection to the server); false when `deadline` passes or `alive` says
/// the client is gone.
pub fn wait_for_client(port: u16, deadline: Duration, mut alive: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if client_connected(port) {
            return true;
        }
        if !alive() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// True when `/proc/net/tcp{,6}` lists an established connection whose remote port is `port`.
fn client_connected(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        fs::read_to_string(table).is_ok_and(|text| {
            // Cheap test first: after heavy S3 tests the table holds thousands of TIME-WAIT
            // lines, and a slow scan misses a short connection.
            text.lines()
                .skip(1)
                .filter(|line| line.contains(&want))
                .any(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    cols.len() > 3 && cols[2].ends_with(&want) && cols[3] == "01"
                })
        })
    })
}
