//! `restore --all`: a whole platform (the control module, two SSDB stores written through
//! LevelDB, a MongoDB instance on a real wire-protocol server) restored in place, with
//! recording stand-ins for `systemctl` and `akd` on `PATH` that log every call to one file,
//! so the order of stops, restores, starts and health checks is checked exactly; then the
//! same with a failure in the stop phase and with the MongoDB server dying mid-restore.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;

use crate::support::leveldb::{count, fill};
use crate::support::mongo::{MongoServer, mongo_section, run};
use crate::support::{self, Sandbox, assert_exit, parse_json, toml_str};

const STORES: [&str; 2] = ["actions", "hb"];
const NS: &str = "control.campaigns";

/// A sandbox platform with its MongoDB server, and what its data looked like when the set
/// was taken.
struct Platform {
    sb: Sandbox,
    mongo: MongoServer,
    /// Key counts of each store at backup time.
    counts: Vec<Value>,
    /// The MongoDB state at backup time.
    state: Value,
}

impl Platform {
    fn store(&self, name: &str) -> PathBuf {
        self.sb.root().join("var/lib/ssdb").join(name)
    }

    fn calls_log(&self) -> PathBuf {
        self.sb.root().join("calls")
    }

    /// Every stand-in call so far, `systemctl stop ssdb-hb` / `akd stop` style.
    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.calls_log())
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Makes the stand-in call `call` (e.g. `systemctl stop ssdb-hb`) fail.
    fn fail(&self, call: &str) {
        support::write_file(&self.sb.root().join("fail"), call.as_bytes());
    }

    /// Changes every part after the backup, so a restore has something to undo.
    fn change(&self) {
        fs::remove_file(self.sb.source().join("conf/main.json")).expect("delete a config");
        for (i, s) in STORES.iter().enumerate() {
            fill(&self.store(s), 0.05, 50 + i as u32, true);
            assert_ne!(
                count(&self.store(s)),
                self.counts[i],
                "{s}: change added no keys"
            );
        }
        self.mongo.insert(NS, 7, 1000);
    }

    /// Whether the parts hold the backed-up data again.
    fn restored(&self) -> (bool, Vec<bool>, bool) {
        let files = self.sb.source().join("conf/main.json").exists();
        let stores = STORES
            .iter()
            .enumerate()
            .map(|(i, s)| count(&self.store(s)) == self.counts[i])
            .collect();
        (files, stores, self.mongo.state() == self.state)
    }
}

/// Builds the platform, backs it up (one set), and installs the stand-ins.
fn platform() -> Platform {
    let sb = Sandbox::new();
    let mongo = MongoServer::start();
    mongo.insert(NS, 40, 0);
    support::write_file(&sb.source().join("conf/main.json"), b"{\"ok\": true}\n");
    support::write_file(&sb.source().join("templates/a.html"), b"<p>a</p>\n");
    let mut config = format!(
        "{}health = [{akd}, \"status\"]\n",
        sb.default_config(),
        akd = toml_str(&sb.akd())
    );
    for s in STORES {
        let store = sb.root().join("var/lib/ssdb").join(s);
        fill(&store, 0.2, 1, false);
        config.push_str(&format!("\n[ssdb.{s}]\npath = {}\n", toml_str(&store)));
    }
    config.push('\n');
    config.push_str(&mongo_section("control", &mongo.uri(), "timeout = 3\n"));
    sb.write_config(&config);

    // One recording stand-in for both commands: `systemctl ARGS` and `akd ARGS` append
    // `NAME ARGS` to <root>/calls; the call written in <root>/fail exits 1; `akd stop` runs
    // <root>/on-akd-stop first when present.
    let root = sb.root().display().to_string();
    for (name, path) in [
        ("systemctl", sb.root().join("bin/systemctl")),
        ("akd", sb.akd()),
    ] {
        let script = format!(
            "#!/bin/sh\n\
             call=\"{name} $*\"\n\
             printf '%s\\n' \"$call\" >> '{root}/calls'\n\
             if [ \"$call\" = 'akd stop' ] && [ -f '{root}/on-akd-stop' ]; then . '{root}/on-akd-stop'; fi\n\
             if [ -f '{root}/fail' ] && [ \"$call\" = \"$(cat '{root}/fail')\" ]; then\n\
             echo \"$call: failed (test stand-in)\" >&2; exit 1\n\
             fi\n\
             exit 0\n"
        );
        support::write_file(&path, script.as_bytes());
        support::chmod(&path, 0o755);
    }
    sb.init();
    let out = run(&sb, &["--json", "backup"]);
    assert_exit(&out, 0, "backup of the whole platform");
    let summary = parse_json(&out);
    assert_eq!(summary["status"], "complete", "{summary:#}");
    let counts = STORES
        .iter()
        .map(|s| count(&sb.root().join("var/lib/ssdb").join(s)))
        .collect();
    let state = mongo.state();
    let p = Platform {
        sb,
        mongo,
        counts,
        state,
    };
    let _ = fs::remove_file(p.calls_log());
    p
}

/// The whole sequence when everything works.
const STOPS: [&str; 3] = [
    "akd stop",
    "systemctl stop ssdb-actions",
    "systemctl stop ssdb-hb",
];
const STARTS: [&str; 6] = [
    "systemctl restart mongod-control",
    "systemctl start ssdb-hb",
    "systemctl is-active ssdb-hb",
    "systemctl start ssdb-actions",
    "systemctl is-active ssdb-actions",
    "akd start",
];

/// `--dry-run` prints the numbered plan and touches nothing; the real run stops the control
/// module first, then the SSDB units, restores MongoDB, the stores and the files, starts
/// everything in reverse with a health check each, and ends with every row restored and up.
#[test]
fn restore_all_runs_the_whole_sequence_in_order() {
    let p = platform();
    p.change();

    let out = run(&p.sb, &["restore", "latest", "--all", "--dry-run"]);
    assert_exit(&out, 0, "restore --all --dry-run");
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{plan}");
    let order = [
        "check    mongodb.control",
        "stop     files.control",
        "stop     ssdb.actions     systemctl stop ssdb-actions",
        "stop     ssdb.hb          systemctl stop ssdb-hb",
        "restore  mongodb.control",
        "restore  ssdb.actions",
        "restore  ssdb.hb",
        "restore  files.control",
        "start    mongodb.control  systemctl restart mongod-control, then health check",
        "start    ssdb.hb          systemctl start ssdb-hb, then health check",
        "start    ssdb.actions",
        "start    files.control",
        "dry run: nothing was changed",
    ];
    let mut at = 0;
    for step in order {
        let found = plan[at..]
            .find(step)
            .unwrap_or_else(|| panic!("plan lacks {step:?} after byte {at}:\n{plan}"));
        at += found + step.len();
    }
    assert!(p.calls().is_empty(), "dry run called {:?}", p.calls());
    assert_eq!(p.restored(), (false, vec![false, false], false), "dry run");

    let out = run(&p.sb, &["--json", "restore", "latest", "--all", "--yes"]);
    assert_exit(&out, 0, "restore --all");
    let summary = parse_json(&out);
    let mut want: Vec<&str> = STOPS.to_vec();
    want.extend(STARTS);
    want.push("akd status");
    assert_eq!(p.calls(), want, "stand-in calls of restore --all");
    assert_eq!(
        p.restored(),
        (true, vec![true, true], true),
        "data after restore --all"
    );
    let rows = summary["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "mongodb.control",
            "ssdb.actions",
            "ssdb.hb",
            "files.control"
        ],
        "{summary:#}"
    );
    for r in rows {
        assert_eq!(r["data"], "restored", "{r:#}");
        assert_eq!(r["service"], "up", "{r:#}");
    }
    assert_eq!(summary["status"], "complete", "{summary:#}");
    let previous = rows[3]["data_detail"].as_str().unwrap_or_default();
    assert!(
        previous.contains("akbackup-prev-"),
        "the previous control module is not named: {previous}"
    );
}

/// A stop that fails midway: nothing is restored, what was stopped is started again (in
/// reverse, with health checks), and the run exits 1 naming the failing command.
#[test]
fn restore_all_failing_stop_restores_nothing_and_starts_what_it_stopped() {
    let p = platform();
    p.change();
    p.fail("systemctl stop ssdb-hb");
    let out = run(&p.sb, &["restore", "latest", "--all", "--yes"]);
    assert_exit(&out, 1, "restore --all with a failing stop");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{text}");
    assert_eq!(
        p.calls(),
        [
            "akd stop",
            "systemctl stop ssdb-actions",
            "systemctl stop ssdb-hb",
            "systemctl start ssdb-actions",
            "systemctl is-active ssdb-actions",
            "akd start",
            "akd status",
        ],
        "stand-in calls"
    );
    assert_eq!(
        p.restored(),
        (false, vec![false, false], false),
        "nothing may be restored"
    );
    let hb = text
        .lines()
        .find(|l| l.starts_with("ssdb.hb"))
        .unwrap_or_default();
    assert!(
        hb.contains("not restored") && hb.contains("unknown") && hb.contains("stop failed"),
        "{text}"
    );
    assert!(
        text.contains("restore --all FAILED: ssdb.hb: stopping failed")
            && text.contains("nothing was restored")
            && text.contains("next: "),
        "{text}"
    );
}

/// The MongoDB server dies after the check (the `akd stop` stand-in kills it): its load
/// fails, the stores and the control module are not touched, every stopped service starts
/// again, the table says which part is in which state, and the next step names the command
/// that restores what is missing.
#[test]
fn restore_all_failure_midway_keeps_the_rest_and_says_what_next() {
    let p = platform();
    p.change();
    let pid = p.mongo.pid().expect("server pid");
    support::write_file(
        &p.sb.root().join("on-akd-stop"),
        format!("kill -9 {pid}\nsleep 0.5\n").as_bytes(),
    );
    let out = run(&p.sb, &["restore", "latest", "--all", "--yes"]);
    assert_exit(&out, 1, "restore --all with the server gone");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{text}");
    let mut want: Vec<&str> = STOPS.to_vec();
    want.extend(STARTS);
    want.push("akd status");
    assert_eq!(p.calls(), want, "every stopped service is started again");
    let files = p.sb.source().join("conf/main.json").exists();
    let stores: Vec<bool> = STORES
        .iter()
        .enumerate()
        .map(|(i, s)| count(&p.store(s)) == p.counts[i])
        .collect();
    assert_eq!(
        (files, stores),
        (false, vec![false, false]),
        "the parts after the failure must be untouched"
    );
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{text}"))
            .to_string()
    };
    assert!(row("mongodb.control").contains("FAILED"), "{text}");
    assert!(row("mongodb.control").contains("failed"), "{text}");
    for name in ["ssdb.actions", "ssdb.hb", "files.control"] {
        let r = row(name);
        assert!(r.contains("not restored") && r.contains(" up "), "{r}");
    }
    assert!(
        text.contains(
            "--all --only mongodb.control --only ssdb.actions --only ssdb.hb --only files.control --yes"
        ),
        "the next step must name the command for what is missing:\n{text}"
    );
}

/// SIGTERM while `restore --all` waits on a stop (the `systemctl stop ssdb-hb` stand-in
/// hangs): the process exits 130 after starting what it had stopped or was stopping, newest
/// first.
#[test]
fn restore_all_interrupted_starts_what_it_stopped() {
    let p = platform();
    support::write_file(
        &p.sb.root().join("bin/systemctl.real"),
        &fs::read(p.sb.root().join("bin/systemctl")).expect("read stand-in"),
    );
    let hang = format!(
        "#!/bin/sh\nif [ \"$*\" = 'stop ssdb-hb' ]; then printf '%s\\n' 'systemctl stop ssdb-hb' >> '{root}/calls'; touch '{root}/hanging'; sleep 30; fi\nexec '{root}/bin/systemctl.real' \"$@\"\n",
        root = p.sb.root().display()
    );
    support::write_file(&p.sb.root().join("bin/systemctl"), hang.as_bytes());
    support::chmod(&p.sb.root().join("bin/systemctl.real"), 0o755);
    support::chmod(&p.sb.root().join("bin/systemctl"), 0o755);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![p.sb.root().join("bin")];
    dirs.extend(std::env::split_paths(&path));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_akbackup"))
        .args(["restore", "latest", "--all", "--yes"])
        .env("AKBACKUP_CONFIG", p.sb.config_path())
        .env_remove("AKBACKUP_PASSWORD")
        .env("PATH", std::env::join_paths(dirs).expect("join PATH"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn akbackup");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !p.sb.root().join("hanging").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stop of ssdb-hb never started; calls: {:?}",
            p.calls()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("send SIGTERM");
    let out = child.wait_with_output().expect("wait for akbackup");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        p.calls(),
        [
            "akd stop",
            "systemctl stop ssdb-actions",
            "systemctl stop ssdb-hb",
            // Its stop was under way (systemd finishes a stop job its client left): a start
            // is registered before each stop now, so it is started too.
            "systemctl start ssdb-hb",
            "systemctl start ssdb-actions",
            "akd start",
        ],
        "the stopped services must be started again, newest first"
    );
}
