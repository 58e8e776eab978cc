//! Fault-injection campaigns: crashes (`kill -9` at seeded random times), repository
//! corruption, concurrent writers, a full disk, cheap security checks and bad input.
//!
//! Each campaign is one test that runs many seeded trials, records every trial's outcome
//! (printed, and written to `<CARGO_TARGET_TMPDIR>/faults-<campaign>.log`), prints
//! `campaign <name>: N passed, N failed` and fails when any trial failed. The random
//! numbers come from a tiny xorshift generator seeded per trial, so a failing trial is
//! reproduced by its seed (`FAULTS_SEED=<seed>` runs only that trial).

mod bad_input;
mod concurrency;
mod corruption;
mod crafted;
mod crash;
mod disk_full;
mod hosts;
mod security;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::Sandbox;

/// xorshift64*: deterministic, good enough to pick kill times and byte offsets.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let v = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        v
    }
}

/// The trials of one campaign and their outcomes.
pub struct Campaign {
    name: String,
    passed: usize,
    known: usize,
    failed: Vec<String>,
    log: String,
    started: Instant,
    /// Kills sent, and how many of them hit a run still going (see [`Campaign::kill`]).
    kills: (usize, usize),
}

impl Campaign {
    /// Starts a campaign.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            passed: 0,
            known: 0,
            failed: Vec::new(),
            log: String::new(),
            started: Instant::now(),
            kills: (0, 0),
        }
    }

    /// The seeds to run: `0..n`, or only `$FAULTS_SEED` when set (to replay one trial).
    pub fn seeds(n: u64) -> Vec<u64> {
        match std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(seed) => vec![seed],
            None => (0..n).collect(),
        }
    }

    /// Records one trial: `Ok(note)` passed, `Err(why)` failed.
    pub fn record(&mut self, trial: &str, outcome: Result<String, String>) {
        let line = match &outcome {
            Ok(note) => {
                self.passed += 1;
                format!("pass {trial}: {note}")
            }
            Err(why) => {
                self.failed.push(format!("{trial}: {why}"));
                format!("FAIL {trial}: {why}")
            }
        };
        println!("[{}] {line}", self.name);
        let _ = writeln!(self.log, "{line}");
    }

    /// Records a trial whose fault the tool cannot detect by design (documented in the
    /// README); counted apart, never as passed.
    pub fn known_limitation(&mut self, trial: &str, why: &str) {
        self.known += 1;
        let line = format!("KNOWN LIMITATION {trial}: {why}");
        println!("[{}] {line}", self.name);
        let _ = writeln!(self.log, "{line}");
    }

    /// Counts a `kill -9` and whether it hit the run while it was still going. A crash
    /// campaign whose kills all came after the run had finished would test nothing, so
    /// [`Campaign::finish`] fails unless at least half of them landed mid-run.
    pub fn kill(&mut self, landed: bool) {
        self.kills.0 += 1;
        self.kills.1 += usize::from(landed);
    }

    /// Prints the tally, writes the log and fails the test when any trial failed.
    pub fn finish(self) {
        let secs = self.started.elapsed().as_secs_f64();
        let known = if self.known > 0 {
            format!(", {} known limitation", self.known)
        } else {
            String::new()
        };
        let tally = format!(
            "campaign {}: {} passed, {} failed{known} ({secs:.1}s)",
            self.name,
            self.passed,
            self.failed.len()
        );
        let (sent, landed) = self.kills;
        let tally = if sent > 0 {
            format!("{tally}; {landed} of {sent} kills landed mid-run")
        } else {
            tally
        };
        println!("{tally}");
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("faults-{}.log", self.name));
        let _ = std::fs::write(&path, format!("{}{tally}\n", self.log));
        assert!(
            self.failed.is_empty(),
            "{tally}\n{}",
            self.failed.join("\n")
        );
        assert!(
            landed * 2 >= sent,
            "{tally}: too few kills hit a running command to show anything"
        );
    }
}

/// `akbackup ARGS` as a plain [`Command`] (so it can be spawned and killed), with the same
/// environment as [`Sandbox::cmd`].
pub fn command(sb: &Sandbox, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_akbackup"));
    cmd.args(args)
        .env("AKBACKUP_CONFIG", sb.config_path())
        .env_remove("AKBACKUP_PASSWORD")
        .env("XDG_CACHE_HOME", sb.root().join("cache"))
        .env("NO_COLOR", "1")
        .current_dir(sb.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `akbackup ARGS` to the end (at most 4 minutes, then killed).
pub fn run(sb: &Sandbox, args: &[&str]) -> Output {
    let child = command(sb, args).spawn().expect("spawn akbackup");
    wait_or_kill(child, Duration::from_secs(240))
}

/// Waits for `child` up to `limit`, then kills it; returns what it printed.
pub fn wait_or_kill(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send(());
        out
    });
    if rx.recv_timeout(limit).is_err() {
        kill9(pid);
    }
    waiter
        .join()
        .expect("waiter thread")
        .expect("wait for akbackup")
}

/// `kill -9 pid`.
pub fn kill9(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

/// What a killed run did.
pub struct Killed {
    /// Whether the process was still running when the signal was sent.
    pub killed: bool,
    /// Its output until then.
    pub output: Output,
}

/// Spawns `akbackup ARGS`, sends `kill -9` after `after` and collects its output.
pub fn run_killed(sb: &Sandbox, args: &[&str], after: Duration) -> Killed {
    let mut child = command(sb, args).spawn().expect("spawn akbackup");
    let pid = child.id();
    let deadline = Instant::now() + after;
    let mut killed = false;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            kill9(pid);
            killed = true;
            break;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(2)));
    }
    let output = wait_or_kill(child, Duration::from_secs(60));
    Killed { killed, output }
}

/// The shortest of three runs of `akbackup ARGS`, each after `reset` put the state back. Why
/// not one run: on a busy machine one slow calibration run put most kill times after the end
/// of the command (12 of 30 landed mid-run once).
pub fn measure_from(sb: &Sandbox, reset: impl Fn(), args: &[&str]) -> Duration {
    (0..3)
        .map(|_| {
            reset();
            measure(sb, args)
        })
        .min()
        .unwrap_or_default()
}

/// How long `akbackup ARGS` takes (it must succeed).
pub fn measure(sb: &Sandbox, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = run(sb, args);
    expect_exit(&out, 0, &args.join(" ")).expect("calibration run");
    t.elapsed()
}

/// `Err` describing the run unless it exited with `code`.
pub fn expect_exit(out: &Output, code: i32, what: &str) -> Result<(), String> {
    if out.status.code() == Some(code) {
        return Ok(());
    }
    Err(format!(
        "{what}: exit {:?} (want {code}); stderr: {}; stdout: {}",
        out.status.code(),
        one_line(&out.stderr),
        one_line(&out.stdout)
    ))
}

/// A stream's text on one line, shortened.
pub fn one_line(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes).replace('\n', " | ");
    if s.len() > 600 {
        format!("{}...", &s[..s.floor_char_boundary(600)])
    } else {
        s
    }
}

/// Replaces `dst` by a copy of `src` (`cp -a`).
pub fn reset_dir(src: &Path, dst: &Path) {
    if dst.exists() {
        std::fs::remove_dir_all(dst).expect("remove dir");
    }
    crate::support::copy_tree(src, dst);
}

/// `Err` with the differences unless `a` and `b` hold the same names, types, contents and
/// symlink targets (`diff -r`, not following links; `*.pid`/`*.log` ignored).
pub fn same_tree(a: &Path, b: &Path) -> Result<(), String> {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference", "-x", "*.pid", "-x", "*.log"])
        .arg(a)
        .arg(b)
        .output()
        .expect("spawn diff");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} and {} differ: {}",
            a.display(),
            b.display(),
            one_line(&out.stdout)
        ))
    }
}

/// `snapshots --json` of the sandbox's repository (or `--repo NAME`), as a list.
pub fn sets(sb: &Sandbox, repo: Option<&str>) -> Result<Vec<serde_json::Value>, String> {
    let mut args = vec!["--json"];
    if let Some(r) = repo {
        args.extend(["--repo", r]);
    }
    args.push("snapshots");
    let out = run(sb, &args);
    expect_exit(&out, 0, "snapshots")?;
    match serde_json::from_slice(&out.stdout) {
        Ok(serde_json::Value::Array(a)) => Ok(a),
        other => Err(format!("snapshots --json is not a list: {other:?}")),
    }
}

/// A set's fields that never change for the life of the set (a copy gets a new id, so the
/// id is left out): start time, host, components and their counts and digests.
pub fn set_identity(set: &serde_json::Value) -> String {
    let m = set.get("manifest").unwrap_or(set);
    let mut v = m.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("id");
        o.remove("added_bytes");
    }
    v.to_string()
}

/// `akbackup init` for a campaign repository (the default one, or `--repo NAME` at `path`),
/// then [`cheap_key`]: each campaign runs the binary a thousand times or more.
pub fn init(sb: &Sandbox, repo: Option<(&str, &Path)>) {
    match repo {
        None => {
            sb.init();
            cheap_key(&sb.repo());
        }
        Some((name, path)) => {
            sb.ok(&["--repo", name, "init"]);
            cheap_key(path);
        }
    }
}

/// The cipher of the key derived from the sandbox password with scrypt (restic's key file
/// KDF: the 64 bytes are the AES-256 key, then Poly1305's k and r).
fn password_cipher(
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> aes256ctr_poly1305aes::Aes256CtrPoly1305Aes {
    use aes256ctr_poly1305aes::Aes256CtrPoly1305Aes;
    let params = scrypt::Params::new(log_n, r, p).expect("scrypt params");
    let mut k = [0u8; 64];
    scrypt::scrypt(crate::support::PASSWORD.as_bytes(), salt, &params, &mut k).expect("scrypt");
    Aes256CtrPoly1305Aes::new(aes256ctr_poly1305aes::Key::from_slice(&k))
}

/// The repository's master key (restic key format: `{"encrypt", "mac": {"k", "r"}}`, each
/// base64), opened with the sandbox password from the first key file, as a cipher ready to
/// seal and open repository files: what a test needs to write packs, indexes and snapshots
/// of its own.
pub fn master_key(repo: &Path) -> aes256ctr_poly1305aes::Aes256CtrPoly1305Aes {
    use aes256ctr_poly1305aes::{Aes256CtrPoly1305Aes, aead::Aead};
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let path = std::fs::read_dir(repo.join("keys"))
        .expect("read keys")
        .next()
        .expect("a key file")
        .expect("key entry")
        .path();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read key")).expect("key json");
    let field = |name: &str| u32::try_from(v[name].as_u64().expect("number")).expect("u32");
    let log_n = u8::try_from(field("N").trailing_zeros()).expect("log n");
    let salt = b64.decode(v["salt"].as_str().expect("salt")).expect("b64");
    let data = b64.decode(v["data"].as_str().expect("data")).expect("b64");
    let nonce = aes256ctr_poly1305aes::aead::Nonce::<Aes256CtrPoly1305Aes>::from_slice(&data[..16]);
    let master = password_cipher(&salt, log_n, field("r"), field("p"))
        .decrypt(nonce, &data[16..])
        .expect("the sandbox password opens the key");
    let m: serde_json::Value = serde_json::from_slice(&master).expect("master key json");
    let part = |v: &serde_json::Value| b64.decode(v.as_str().expect("key part")).expect("b64");
    let mut key = part(&m["encrypt"]);
    key.extend(part(&m["mac"]["k"]));
    key.extend(part(&m["mac"]["r"]));
    Aes256CtrPoly1305Aes::new(aes256ctr_poly1305aes::Key::from_slice(&key))
}

/// Re-encrypts the master key of every key file in `repo` under scrypt N=2^10 instead of the
/// engine's 2^17: opening the repository then takes milliseconds instead of ~0.6 s. The key
/// file format (restic's) is unchanged, so this only makes the tests cheaper, not different.
pub fn cheap_key(repo: &Path) {
    use aes256ctr_poly1305aes::{Aes256CtrPoly1305Aes, aead::Aead};
    use base64::Engine as _;
    use sha2::Digest as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let kdf = password_cipher;
    for (i, entry) in std::fs::read_dir(repo.join("keys"))
        .expect("read keys")
        .enumerate()
    {
        let path = entry.expect("key entry").path();
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read key")).expect("key json");
        let field = |name: &str| u32::try_from(v[name].as_u64().expect("number")).expect("u32");
        let (n, r, p) = (field("N"), field("r"), field("p"));
        let salt = b64.decode(v["salt"].as_str().expect("salt")).expect("b64");
        let data = b64.decode(v["data"].as_str().expect("data")).expect("b64");
        let log_n = u8::try_from(n.trailing_zeros()).expect("log n");
        let nonce =
            aes256ctr_poly1305aes::aead::Nonce::<Aes256CtrPoly1305Aes>::from_slice(&data[..16]);
        let master = kdf(&salt, log_n, r, p)
            .decrypt(nonce, &data[16..])
            .expect("the sandbox password opens the key");
        let new_salt = crate::support::random_bytes(77 + i as u64, 64);
        let new_nonce = crate::support::random_bytes(78 + i as u64, 16);
        let sealed = kdf(&new_salt, 10, 8, 1)
            .encrypt(
                aes256ctr_poly1305aes::aead::Nonce::<Aes256CtrPoly1305Aes>::from_slice(&new_nonce),
                master.as_slice(),
            )
            .expect("encrypt");
        let mut new_data = new_nonce;
        new_data.extend(sealed);
        v["N"] = 1024.into();
        v["r"] = 8.into();
        v["p"] = 1.into();
        v["salt"] = b64.encode(&new_salt).into();
        v["data"] = b64.encode(&new_data).into();
        let bytes = serde_json::to_vec(&v).expect("json");
        let id: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(repo.join("keys").join(id), &bytes).expect("write key");
        std::fs::remove_file(&path).expect("remove old key");
    }
}
