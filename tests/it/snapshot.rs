//! `mode = "snapshot"`: backups read from a filesystem snapshot of the data's volume.
//!
//! btrfs is real: a loop-mounted filesystem made by each test (as root; a kernel that refuses
//! the mount skips the test and says `SKIPPED`), the store in a subvolume, written by the
//! LevelDB peer while akbackup snapshots and reads it. LVM cannot run here (the kernel has no
//! device-mapper), so its tests put recording stand-ins for `lvs`, `lvcreate`, `lvremove`,
//! `mount` and `umount` on `PATH` and check the exact commands, the cleanup and the refusals;
//! the stand-in `mount` copies the store into the mount point, so the rest of the backup runs
//! for real.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use crate::ssdb::{LOAD, Writer, check, failure};
use crate::support::btrfs::Btrfs;
use crate::support::leveldb::{arg, count, fill};
use crate::support::{self, Sandbox, assert_exit, component, parse_json, toml_str};

const NAME: &str = "ssdb.actions";

/// A sandbox whose `[ssdb.actions]` store is `store`, with `extra` lines in its section.
fn sandbox_with_store(sb: &Sandbox, store: &Path, extra: &str) {
    sb.write_config(&format!(
        "[repository]\npath = {repo}\npassword-file = {pw}\n\n[ssdb.actions]\npath = {store}\n{extra}",
        repo = toml_str(&sb.repo()),
        pw = toml_str(&sb.password_file()),
        store = toml_str(store),
    ));
    sb.init();
}

/// The btrfs filesystem of a test with the store at `<mnt>/ssdb/actions` in subvolume
/// `ssdb`, configured in snapshot mode; `None` when the kernel refused the mount.
fn btrfs_store(sb: &Sandbox) -> Option<(Btrfs, PathBuf)> {
    let fs = Btrfs::new(sb.root())?;
    let store = fs.subvolume("ssdb").join("actions");
    fs::create_dir_all(&store).expect("create store dir");
    sandbox_with_store(sb, &store, "mode = \"snapshot\"\nsnapshot = \"btrfs\"\n");
    Some((fs, store))
}

/// Subvolumes other than the store's: snapshots left behind.
fn leftover_snapshots(fs: &Btrfs) -> Vec<String> {
    fs.subvolumes()
        .into_iter()
        .filter(|s| s != "ssdb")
        .collect()
}

/// Backups in snapshot mode taken while the LevelDB peer keeps writing each restore to a copy
/// that opens with LevelDB and holds every write acknowledged before the backup began; each
/// snapshot is gone when the backup returns.
#[test]
fn btrfs_snapshot_backups_under_load_hold_every_acknowledged_write() {
    let _load = LOAD.lock().unwrap_or_else(PoisonError::into_inner);
    let sb = Sandbox::new();
    let Some((fs, store)) = btrfs_store(&sb) else {
        return;
    };
    let mut writer = Writer::start(
        sb.root(),
        &store,
        &["--preload-mb", "8", "--batch", "500", "--rate", "5000"],
    );
    writer.wait_until_busy();
    let mut failures = Vec::new();
    for round in 1..=5 {
        let acked = writer.acked();
        let out = sb
            .cmd(&["--json", "backup", "--only", NAME])
            .output()
            .expect("spawn akbackup");
        if out.status.code() != Some(0) {
            failures.push(failure(&format!("round {round}: backup"), &out));
            continue;
        }
        let summary = parse_json(&out);
        let details = &component(&summary, NAME)["details"];
        assert_eq!(details["mode"], "snapshot", "{details:#}");
        let taken = details["snapshot"].as_str().unwrap_or_default();
        assert!(
            taken.contains("btrfs snapshot of subvolume") && taken.contains("/mnt/ssdb"),
            "the record does not say which snapshot: {details:#}"
        );
        let left = leftover_snapshots(&fs);
        assert!(left.is_empty(), "round {round}: snapshots left: {left:?}");

        let target = sb.root().join(format!("restored-{round}"));
        let out = sb
            .cmd(&[
                "restore",
                "latest",
                "--only",
                NAME,
                "--target",
                arg(&target),
                "--yes",
            ])
            .output()
            .expect("spawn akbackup");
        if out.status.code() != Some(0) {
            failures.push(failure(&format!("round {round}: restore --target"), &out));
            continue;
        }
        let (code, text) = check(&target.join("ssdb/actions"), writer.ack(), acked);
        eprintln!("round {round}: {acked} writes acknowledged before the backup: {text}");
        if code != Some(0) {
            failures.push(format!(
                "round {round}: restored copy: exit {code:?}\n{text}"
            ));
        }
    }
    writer.stop();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A backup that fails after the snapshot was taken (a damaged table in the store) releases
/// the snapshot, and the error names the table.
#[test]
fn btrfs_snapshot_is_released_when_the_backup_fails() {
    let sb = Sandbox::new();
    let Some((fs, store)) = btrfs_store(&sb) else {
        return;
    };
    fill(&store, 1.0, 3, false);
    let victim = fs::read_dir(store.join("data"))
        .expect("read data/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "ldb"))
        .expect("a table file");
    let mut bytes = fs::read(&victim).expect("read table");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    fs::write(&victim, &bytes).expect("damage table");

    let out = sb.cmd(&["backup", "--only", NAME]).output().expect("spawn");
    assert_exit(&out, 1, "backup of a damaged store in snapshot mode");
    let text = support::all_output(&out);
    let table = victim.file_name().unwrap_or_default().to_string_lossy();
    assert!(text.contains(&*table), "the table is not named:\n{text}");
    assert_eq!(leftover_snapshots(&fs), Vec::<String>::new(), "{text}");
    assert!(sb.sets().is_empty(), "a failed backup left a set");
}

/// A `btrfs` wrapper on `PATH` that runs the real one and, after `subvolume snapshot`, writes
/// its pid to `<root>/snapshot.taken` and sleeps: the run can be killed holding a snapshot.
fn hanging_btrfs(sb: &Sandbox) -> std::ffi::OsString {
    let real = support::find_on_path("btrfs").expect("btrfs on PATH (btrfs-progs)");
    let bin = sb.root().join("hang-bin");
    fs::create_dir_all(&bin).expect("create bin");
    let script = format!(
        "#!/bin/sh\n'{real}' \"$@\" || exit $?\n\
         if [ \"$1 $2\" = 'subvolume snapshot' ]; then echo $$ > '{marker}.tmp'; \
         mv '{marker}.tmp' '{marker}'; sleep 60; fi\n",
        real = real.display(),
        marker = sb.root().join("snapshot.taken").display()
    );
    support::write_file(&bin.join("btrfs"), script.as_bytes());
    support::chmod(&bin.join("btrfs"), 0o755);
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("join PATH")
}

/// Starts a backup with the hanging wrapper and waits until it holds its snapshot; returns
/// the run and the wrapper's pid.
fn backup_holding_a_snapshot(sb: &Sandbox) -> (Child, String) {
    let mut child = spawn_backup(sb)
        .env("PATH", hanging_btrfs(sb))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn akbackup");
    let marker = sb.root().join("snapshot.taken");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        if let Some(status) = child.try_wait().expect("poll") {
            panic!("the backup ended ({status}) before it took its snapshot");
        }
        assert!(Instant::now() < deadline, "no snapshot within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let wrapper = fs::read_to_string(&marker)
        .expect("read marker")
        .trim()
        .to_string();
    (child, wrapper)
}

/// `akbackup backup --only NAME` as [`Sandbox::cmd`] runs it, to be spawned.
fn spawn_backup(sb: &Sandbox) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_akbackup"));
    cmd.args(["backup", "--only", NAME])
        .env("AKBACKUP_CONFIG", sb.config_path())
        .env_remove("AKBACKUP_PASSWORD")
        .env("XDG_CACHE_HOME", sb.root().join("cache"))
        .current_dir(sb.root());
    cmd
}

fn kill(signal: &str, pid: &str) {
    let _ = Command::new("kill").args([signal, pid]).status();
}

/// A run killed with `kill -9` while it holds its snapshot leaves it; the next backup of the
/// store releases it, says so, and succeeds.
#[test]
fn btrfs_snapshot_of_a_killed_run_is_released_by_the_next_run() {
    let sb = Sandbox::new();
    let Some((fs, store)) = btrfs_store(&sb) else {
        return;
    };
    fill(&store, 0.5, 4, false);
    let (mut child, wrapper) = backup_holding_a_snapshot(&sb);
    kill("-KILL", &child.id().to_string());
    let _ = child.wait();
    kill("-KILL", &wrapper);
    let left = leftover_snapshots(&fs);
    assert_eq!(left.len(), 1, "the killed run's snapshot: {left:?}");

    let out = sb.cmd(&["backup", "--only", NAME]).output().expect("spawn");
    assert_exit(&out, 0, "the next backup");
    let text = support::all_output(&out);
    assert!(
        text.contains("removed") && text.contains("which died"),
        "the next run does not say it released the leftover:\n{text}"
    );
    assert_eq!(leftover_snapshots(&fs), Vec::<String>::new());
    assert_eq!(sb.sets().len(), 1);
}

/// SIGTERM and Ctrl-C (SIGINT) while the snapshot is held: the run releases it and exits 130.
#[test]
fn btrfs_snapshot_is_released_on_sigterm_and_sigint() {
    let sb = Sandbox::new();
    let Some((fs, store)) = btrfs_store(&sb) else {
        return;
    };
    fill(&store, 0.5, 5, false);
    for signal in ["-TERM", "-INT"] {
        let _ = fs::remove_file(sb.root().join("snapshot.taken"));
        let (child, wrapper) = backup_holding_a_snapshot(&sb);
        kill(signal, &child.id().to_string());
        let out = child.wait_with_output().expect("wait");
        kill("-KILL", &wrapper);
        assert_eq!(out.status.code(), Some(130), "{signal}: {out:?}");
        assert_eq!(
            leftover_snapshots(&fs),
            Vec::<String>::new(),
            "after {signal}"
        );
    }
}

/// Where the data is not on btrfs, `--dry-run` and `doctor` say snapshot mode cannot work
/// and why, and the backup fails with the same reason before anything is stored.
#[test]
fn snapshot_mode_off_btrfs_is_refused_naming_the_filesystem() {
    let sb = Sandbox::new();
    let store = sb.root().join("var/lib/ssdb/actions");
    fill(&store, 0.2, 6, false);
    sandbox_with_store(&sb, &store, "mode = \"snapshot\"\nsnapshot = \"btrfs\"\n");
    let out = sb.cmd(&["backup", "--dry-run"]).output().expect("spawn");
    assert_exit(&out, 0, "dry run");
    let text = support::all_output(&out);
    assert!(
        text.contains("SNAPSHOT CANNOT WORK") && text.contains("not btrfs"),
        "{text}"
    );
    let out = sb.cmd(&["backup"]).output().expect("spawn");
    assert_exit(&out, 1, "backup off btrfs");
    let text = support::all_output(&out);
    assert!(text.contains(NAME) && text.contains("not btrfs"), "{text}");
    assert!(sb.sets().is_empty());
}

/// Config errors of the snapshot keys are one line naming the key.
#[test]
fn snapshot_keys_are_checked() {
    for (extra, want) in [
        ("mode = \"snapshot\"\n", "needs snapshot = \"btrfs\""),
        ("snapshot = \"btrfs\"\n", "mode is not \"snapshot\""),
        ("mode = \"snapshot\"\nsnapshot = \"zfs\"\n", "zfs"),
        (
            "mode = \"snapshot\"\nsnapshot = \"lvm\"\nsnapshot-size = \"lots\"\n",
            "snapshot-size",
        ),
        (
            "mode = \"snapshot\"\nsnapshot = \"btrfs\"\nsnapshot-size = \"1G\"\n",
            "snapshot-size and snapshot-volume apply to snapshot = \"lvm\" only",
        ),
    ] {
        let sb = Sandbox::new();
        let store = sb.root().join("store");
        fs::create_dir_all(&store).expect("mkdir");
        sb.write_config(&format!(
            "[repository]\npath = {}\npassword-file = {}\n\n[ssdb.actions]\npath = {}\n{extra}",
            toml_str(&sb.repo()),
            toml_str(&sb.password_file()),
            toml_str(&store)
        ));
        let out = sb.cmd(&["config", "check"]).output().expect("spawn");
        assert_exit(&out, 2, extra);
        let text = support::all_output(&out);
        assert!(text.contains(want), "{extra}: {text}");
    }
}

// ---- LVM, through recording stand-ins ----

/// The stand-ins' state under the sandbox: `lvm.calls` (one command a line), `lvm.lvs`
/// (`vg|lv` of each snapshot volume that exists), `lvm.free` and `lvm.pool` (what `lvs` says
/// of the origin), `mount.fail` and `mount.hang` (make `mount` fail, or hang after mounting).
fn lvm_sandbox(extra: &str) -> (Sandbox, PathBuf) {
    let sb = Sandbox::new();
    let store = sb.root().join("var/lib/ssdb/actions");
    fill(&store, 0.5, 7, false);
    sandbox_with_store(
        &sb,
        &store,
        &format!(
            "mode = \"snapshot\"\nsnapshot = \"lvm\"\nsnapshot-volume = \"vg0/data\"\n{extra}"
        ),
    );
    let root = sb.root().display().to_string();
    // The store's path below its mount point: where the mounted snapshot has it.
    let point = Command::new("stat")
        .args(["-c", "%m"])
        .arg(&store)
        .output()
        .expect("stat");
    let point = PathBuf::from(String::from_utf8_lossy(&point.stdout).trim());
    let rel = store
        .strip_prefix(&point)
        .expect("store below its mount point");
    fs::write(sb.root().join("lvm.free"), "107374182400").expect("write");
    fs::write(sb.root().join("lvm.pool"), "").expect("write");
    // The device numbers `lvs` reports for the origin: those of the store's filesystem, as
    // for the volume that really holds it.
    let dev = Command::new("stat")
        .args(["-c", "%Hd|%Ld"])
        .arg(&store)
        .output()
        .expect("stat");
    fs::write(
        sb.root().join("lvm.dev"),
        String::from_utf8_lossy(&dev.stdout).trim(),
    )
    .expect("write");
    fs::write(sb.root().join("lvm.lvs"), "").expect("write");
    let log = format!("echo \"$(basename \"$0\") $*\" >> '{root}/lvm.calls'");
    let scripts = [
        (
            "lvs",
            format!(
                "{log}\ncase \"$*\" in\n\
                 *lv_size*) echo \"  vg0|data|10737418240|$(cat '{root}/lvm.free')|$(cat '{root}/lvm.pool')|$(cat '{root}/lvm.dev')\";;\n\
                 *) cat '{root}/lvm.lvs';;\nesac\n"
            ),
        ),
        (
            "lvcreate",
            format!(
                "{log}\nwhile [ $# -gt 0 ]; do [ \"$1\" = --name ] && name=$2; shift; done\n\
                 echo \"  vg0|$name\" >> '{root}/lvm.lvs'\n"
            ),
        ),
        (
            "lvremove",
            format!(
                "{log}\nlv=${{2#vg0/}}\ngrep -v \"|$lv\\$\" '{root}/lvm.lvs' > '{root}/lvm.lvs.new'; \
                 mv '{root}/lvm.lvs.new' '{root}/lvm.lvs'\n"
            ),
        ),
        (
            "mount",
            format!(
                "{log}\n[ -f '{root}/mount.fail' ] && {{ echo 'mount: wrong fs type (stand-in)' >&2; exit 32; }}\n\
                 for last; do :; done\nmkdir -p \"$last/{rel}\" && cp -a '{store}/.' \"$last/{rel}/\"\n\
                 if [ -f '{root}/mount.hang' ]; then echo $$ > '{root}/mounted'; sleep 60; fi\n",
                rel = rel.display(),
                store = store.display()
            ),
        ),
        (
            "umount",
            format!("{log}\nfind \"$1\" -mindepth 1 -delete\n"),
        ),
    ];
    let bin = sb.root().join("lvm-bin");
    fs::create_dir_all(&bin).expect("mkdir");
    for (name, body) in scripts {
        support::write_file(&bin.join(name), format!("#!/bin/sh\n{body}").as_bytes());
        support::chmod(&bin.join(name), 0o755);
    }
    (sb, store)
}

fn lvm_path(sb: &Sandbox) -> std::ffi::OsString {
    let mut dirs = vec![sb.root().join("lvm-bin")];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("join PATH")
}

fn with_lvm(sb: &Sandbox, args: &[&str]) -> Output {
    sb.cmd(args)
        .env("PATH", lvm_path(sb))
        .env("AKBACKUP_RUN_DIR", run_dir(sb))
        .output()
        .expect("spawn akbackup")
}

/// Where the sandbox's snapshots are mounted (`AKBACKUP_RUN_DIR`): private to the test, so
/// tests running at once do not release each other's leftovers.
fn run_dir(sb: &Sandbox) -> PathBuf {
    sb.root().join("run")
}

fn lvm_calls(sb: &Sandbox) -> Vec<String> {
    let calls = fs::read_to_string(sb.root().join("lvm.calls")).unwrap_or_default();
    let _ = fs::remove_file(sb.root().join("lvm.calls"));
    calls.lines().map(str::to_string).collect()
}

const LVS_ORIGIN: &str = "lvs --noheadings --nosuffix --units b --separator | -o vg_name,lv_name,lv_size,vg_free,pool_lv,lv_kernel_major,lv_kernel_minor vg0/data";

/// The listing of every volume, for leftovers of dead runs.
const LVS_LIST: &str = "lvs --noheadings --separator | -o vg_name,lv_name";

/// The snapshot volume's name in an `lvcreate` line.
fn created_name(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let at = words.iter().position(|w| *w == "--name").expect("--name");
    words[at + 1].to_string()
}

/// A classic snapshot: the exact commands, in order, with the size from `snapshot-size`; a
/// thin one: no size and activation allowed; both released; the set restores to a store
/// that opens with the same keys.
#[test]
fn lvm_snapshot_runs_the_exact_commands_and_releases() {
    let (sb, store) = lvm_sandbox("snapshot-size = \"1G\"\n");
    let out = with_lvm(&sb, &["--json", "backup", "--only", NAME]);
    assert_exit(&out, 0, "backup from an LVM snapshot");
    let calls = lvm_calls(&sb);
    assert_eq!(calls.len(), 6, "{calls:#?}");
    let name = created_name(&calls[2]);
    assert!(name.starts_with("akbackup-snap-"), "{name}");
    let mount_dir = format!("{}/{name}", run_dir(&sb).display());
    assert_eq!(calls[0], LVS_ORIGIN);
    assert_eq!(calls[1], LVS_LIST);
    assert_eq!(
        calls[2],
        format!("lvcreate --snapshot --name {name} --size 1073741824b vg0/data")
    );
    assert!(
        calls[3] == format!("mount -o ro,nodev,nosuid,noexec /dev/vg0/{name} {mount_dir}")
            || calls[3]
                == format!("mount -o ro,nodev,nosuid,noexec,nouuid /dev/vg0/{name} {mount_dir}"),
        "{}",
        calls[3]
    );
    assert_eq!(calls[4], format!("umount {mount_dir}"));
    assert_eq!(calls[5], format!("lvremove -f vg0/{name}"));
    assert_eq!(
        fs::read_to_string(sb.root().join("lvm.lvs")).unwrap_or_default(),
        ""
    );
    assert!(!Path::new(&mount_dir).exists(), "the mount point is left");

    // doctor says where the snapshot would be taken, and with how much room.
    let out = with_lvm(&sb, &["doctor"]);
    let text = support::all_output(&out);
    assert!(
        text.contains("ssdb.actions: snapshot")
            && text.contains("lvm snapshot of LV vg0/data")
            && text.contains("classic snapshot with 1.0 GiB for changes"),
        "{text}"
    );
    assert_eq!(
        lvm_calls(&sb),
        vec![LVS_ORIGIN.to_string()],
        "doctor only asks lvs"
    );

    let target = sb.root().join("restored");
    let out = sb
        .cmd(&[
            "restore",
            "latest",
            "--only",
            NAME,
            "--target",
            arg(&target),
            "--yes",
        ])
        .output()
        .expect("spawn");
    assert_exit(&out, 0, "restore --target");
    assert_eq!(count(&target.join("ssdb/actions")), count(&store));

    fs::write(sb.root().join("lvm.pool"), "pool0").expect("write");
    let out = with_lvm(&sb, &["backup", "--only", NAME]);
    assert_exit(&out, 0, "backup from a thin snapshot");
    let calls = lvm_calls(&sb);
    let name = created_name(&calls[2]);
    assert_eq!(
        calls[2],
        format!("lvcreate --snapshot --name {name} --setactivationskip n vg0/data")
    );
    assert_eq!(calls[5], format!("lvremove -f vg0/{name}"));

    // A snapshot-volume that is not the volume holding the data is refused before anything
    // is made: its snapshot would be a backup of something else.
    fs::write(sb.root().join("lvm.dev"), "1|1").expect("write");
    let out = with_lvm(&sb, &["backup", "--only", NAME]);
    assert_exit(&out, 1, "backup with the wrong snapshot-volume");
    let text = support::all_output(&out);
    assert!(
        text.contains("`lvs` says LV vg0/data is device 1:1")
            && text.contains("set snapshot-volume to the volume holding the data"),
        "{text}"
    );
    assert_eq!(lvm_calls(&sb), vec![LVS_ORIGIN.to_string()]);
}

/// A volume group without room for the snapshot is refused before anything is created, in
/// the backup and in `--dry-run`; a mount that fails removes the snapshot volume it was for.
#[test]
fn lvm_refuses_without_room_and_cleans_up_a_failed_mount() {
    let (sb, _store) = lvm_sandbox("");
    fs::write(sb.root().join("lvm.free"), "104857600").expect("write");
    let out = with_lvm(&sb, &["backup", "--dry-run"]);
    assert_exit(&out, 0, "dry run");
    let text = support::all_output(&out);
    assert!(
        text.contains("SNAPSHOT CANNOT WORK")
            && text.contains("volume group vg0 has 100.0 MiB free")
            && text.contains("needs 1.0 GiB"),
        "{text}"
    );
    lvm_calls(&sb);
    let out = with_lvm(&sb, &["backup", "--only", NAME]);
    assert_exit(&out, 1, "backup without room");
    let text = support::all_output(&out);
    assert!(
        text.contains("volume group vg0 has 100.0 MiB free"),
        "{text}"
    );
    assert_eq!(lvm_calls(&sb), vec![LVS_ORIGIN.to_string()]);

    fs::write(sb.root().join("lvm.free"), "107374182400").expect("write");
    fs::write(sb.root().join("mount.fail"), "").expect("write");
    let out = with_lvm(&sb, &["backup", "--only", NAME]);
    assert_exit(&out, 1, "backup whose mount fails");
    let text = support::all_output(&out);
    assert!(text.contains("wrong fs type (stand-in)"), "{text}");
    let calls = lvm_calls(&sb);
    let name = created_name(&calls[2]);
    assert_eq!(calls.len(), 5, "{calls:#?}");
    assert!(calls[3].starts_with("mount "), "{calls:#?}");
    assert_eq!(calls[4], format!("lvremove -f vg0/{name}"));
    assert_eq!(
        fs::read_to_string(sb.root().join("lvm.lvs")).unwrap_or_default(),
        ""
    );
    assert!(sb.sets().is_empty());
}

/// A run killed with `kill -9` while its snapshot is mounted leaves the volume; the next
/// backup finds it by its stage, removes it, and succeeds.
#[test]
fn lvm_snapshot_of_a_killed_run_is_removed_by_the_next_run() {
    let (sb, _store) = lvm_sandbox("");
    fs::write(sb.root().join("mount.hang"), "").expect("write");
    let mut child = spawn_backup(&sb)
        .env("PATH", lvm_path(&sb))
        .env("AKBACKUP_RUN_DIR", run_dir(&sb))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let marker = sb.root().join("mounted");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            child.try_wait().expect("poll").is_none(),
            "the backup ended early"
        );
        assert!(Instant::now() < deadline, "no mount within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill("-KILL", &child.id().to_string());
    let _ = child.wait();
    kill("-KILL", fs::read_to_string(&marker).expect("marker").trim());
    fs::remove_file(sb.root().join("mount.hang")).expect("rm");
    let calls = lvm_calls(&sb);
    let old = created_name(&calls[2]);
    assert!(
        fs::read_to_string(sb.root().join("lvm.lvs"))
            .unwrap_or_default()
            .contains(&old),
        "the killed run's volume should still exist"
    );

    let out = with_lvm(&sb, &["backup", "--only", NAME]);
    assert_exit(&out, 0, "the next backup");
    let text = support::all_output(&out);
    assert!(text.contains("which died"), "{text}");
    let calls = lvm_calls(&sb);
    assert!(
        calls.contains(&format!("lvremove -f vg0/{old}")),
        "the leftover volume was not removed: {calls:#?}"
    );
    assert_eq!(
        fs::read_to_string(sb.root().join("lvm.lvs")).unwrap_or_default(),
        ""
    );
    assert!(!run_dir(&sb).join(&old).exists());

    // After a reboot `/run` is empty, and a snapshot volume a run left has no stage: the
    // next backup removes it by its name.
    let orphan = "akbackup-snap-4000001-Reb00t00";
    fs::write(sb.root().join("lvm.lvs"), format!("  vg0|{orphan}\n")).expect("write");
    let out = with_lvm(&sb, &["backup", "--only", NAME]);
    assert_exit(&out, 0, "the backup after a reboot");
    let text = support::all_output(&out);
    assert!(
        text.contains(&format!("removed snapshot volume vg0/{orphan}")),
        "{text}"
    );
    assert!(lvm_calls(&sb).contains(&format!("lvremove -f vg0/{orphan}")));
    assert_eq!(
        fs::read_to_string(sb.root().join("lvm.lvs")).unwrap_or_default(),
        ""
    );
}

// ---- MongoDB physical backups on btrfs ----

use crate::support::mongo::MongoServer;

const MONGO: &str = "mongodb.control";

/// The file a background writer appends to while the backup runs.
const APPENDED: &str = "collection-7-append.wt";

/// A dbpath shaped like WiredTiger's (what mongod reads first, collections, indexes, the
/// journal, diagnostics), with random contents: no mongod runs here, so its files are
/// compared byte for byte, not opened.
fn fake_dbpath(db: &Path) {
    let files: [(&str, usize); 10] = [
        ("WiredTiger", 50),
        ("WiredTiger.wt", 8 << 10),
        ("WiredTiger.turtle", 1 << 10),
        ("storage.bson", 100),
        ("_mdb_catalog.wt", 16 << 10),
        ("collection-0-123.wt", 1 << 20),
        ("index-1-123.wt", 256 << 10),
        ("journal/WiredTigerLog.0000000001", 100 << 10),
        (
            "diagnostic.data/metrics.2026-12-06T00-00-00Z-00000",
            10 << 10,
        ),
        ("mongod.lock", 6),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        support::write_file(&db.join(name), &support::random_bytes(i as u64 + 1, *len));
    }
    support::write_file(&db.join(APPENDED), &support::random_bytes(99, 64 << 10));
}

/// A process appending 4 KiB blocks to the dbpath's [`APPENDED`] file until killed, each
/// fsynced before its new length is written to `<dbpath>/../appended.acked`: writes landing
/// while the backup runs, and the ones a crash-consistent copy must hold (what was synced), as
/// a database's journal syncs what it acknowledges. Bytes not synced yet may be missing or
/// zeros in a snapshot, exactly as after a power cut.
struct Appender(Child);

impl Appender {
    fn start(db: &Path) -> Self {
        let script = format!(
            "import os\n\
             f = open({file:?}, 'ab')\n\
             while True:\n\
             \x20   f.write(os.urandom(4096)); f.flush(); os.fsync(f.fileno())\n\
             \x20   open({acked:?} + '.tmp', 'w').write(str(f.tell()))\n\
             \x20   os.replace({acked:?} + '.tmp', {acked:?})\n",
            file = db.join(APPENDED).display().to_string(),
            acked = acked_file(db).display().to_string(),
        );
        let child = Command::new("python3")
            .args(["-c", &script])
            .spawn()
            .expect("spawn appender");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !acked_file(db).exists() {
            assert!(Instant::now() < deadline, "the appender did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Appender(child)
    }

    /// The length of the file up to which every byte is synced.
    fn acked(db: &Path) -> u64 {
        fs::read_to_string(acked_file(db))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn acked_file(db: &Path) -> PathBuf {
    db.with_file_name("appended.acked")
}

impl Drop for Appender {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A recording `systemctl` stand-in in `<root>/sysbin`: one line a call in
/// `<root>/systemctl.calls`; sources `<root>/systemctl.on-VERB` first when present.
fn systemctl_stand_in(sb: &Sandbox) -> std::ffi::OsString {
    let root = sb.root().display().to_string();
    let bin = sb.root().join("sysbin");
    fs::create_dir_all(&bin).expect("mkdir");
    support::write_file(
        &bin.join("systemctl"),
        format!(
            "#!/bin/sh\n[ -f '{root}/systemctl.on-'\"$1\" ] && . '{root}/systemctl.on-'\"$1\"\n\
             echo \"$*\" >> '{root}/systemctl.calls'\n"
        )
        .as_bytes(),
    );
    support::chmod(&bin.join("systemctl"), 0o755);
    let mut dirs = vec![bin];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("join PATH")
}

fn systemctl_calls(sb: &Sandbox) -> Vec<String> {
    let path = sb.root().join("systemctl.calls");
    let calls = fs::read_to_string(&path).unwrap_or_default();
    let _ = fs::remove_file(&path);
    calls.lines().map(str::to_string).collect()
}

/// A btrfs filesystem with the dbpath `<mnt>/mongo/db` (subvolume `mongo`), a test server
/// that reports it, and a config in snapshot mode with `extra` lines.
fn mongo_snapshot_sandbox(sb: &Sandbox, extra: &str) -> Option<(Btrfs, PathBuf, MongoServer)> {
    let fs = Btrfs::new(sb.root())?;
    let db = fs.subvolume("mongo").join("db");
    fake_dbpath(&db);
    let log = sb.root().join("fsync.log");
    let server = MongoServer::start_with_env(&[
        ("AKBACKUP_TEST_DBPATH", &db.display().to_string()),
        ("AKBACKUP_TEST_FSYNC_LOG", &log.display().to_string()),
    ]);
    sb.write_config(&format!(
        "[repository]\npath = {repo}\npassword-file = {pw}\n\n[mongodb.control]\nuri = \"{uri}\"\n\
         mode = \"snapshot\"\nsnapshot = \"btrfs\"\n{extra}",
        repo = toml_str(&sb.repo()),
        pw = toml_str(&sb.password_file()),
        uri = server.uri(),
    ));
    sb.init();
    Some((fs, db, server))
}

fn fsync_log(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(sb.root().join("fsync.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts that `restored` holds the dbpath `db` file for file, and that the file appended
/// to during the backup holds every byte synced before the backup began (`synced`), as the
/// live file has them.
fn assert_same_dbpath(db: &Path, restored: &Path, synced: u64) {
    support::assert_trees_equal_excluding(db, restored, &[APPENDED]);
    let copy = fs::read(restored.join(APPENDED)).expect("the appended file is in the set");
    let live = fs::read(db.join(APPENDED)).expect("read live");
    let synced = usize::try_from(synced).expect("fits");
    assert!(
        copy.len() >= synced && copy[..synced] == live[..synced],
        "the appended file lost synced bytes: {} bytes stored, {synced} synced before the \
         backup, {} now; first difference at {:?}",
        copy.len(),
        live.len(),
        copy.iter().zip(&live).position(|(a, b)| a != b)
    );
}

/// A physical backup under fsyncLock while a process appends to a data file: locked once and
/// unlocked once, the snapshot released, the set records what a restore needs, and both a
/// `--target` restore and an in-place restore (unit stopped, directories swapped, unit
/// started and pinged, previous dbpath kept) give the dbpath back file for file.
#[test]
fn mongodb_snapshot_backup_and_restores_file_for_file() {
    let sb = Sandbox::new();
    let Some((fs, db, _server)) = mongo_snapshot_sandbox(&sb, "lock = true\n") else {
        return;
    };
    let appender = Appender::start(&db);
    std::thread::sleep(Duration::from_millis(200));
    let before = Appender::acked(&db);
    let out = sb.cmd(&["--json", "backup"]).output().expect("spawn");
    assert_exit(&out, 0, "physical backup");
    drop(appender);
    let summary = parse_json(&out);
    let physical = &component(&summary, MONGO)["details"]["physical"];
    assert_eq!(physical["dbpath"], db.display().to_string(), "{physical:#}");
    assert_eq!(physical["storage_engine"], "wiredTiger");
    assert_eq!(physical["server_version"], "7.0.0");
    assert_eq!(physical["locked"], true);
    assert_eq!(fsync_log(&sb), ["lock 1", "unlock 0"]);
    assert_eq!(leftover_mongo_snapshots(&fs), Vec::<String>::new());

    let out = sb.ok(&["snapshots", "latest"]);
    let text = support::all_output(&out);
    assert!(
        text.contains("physical copy of") && text.contains("fsyncLock held"),
        "{text}"
    );

    let target = sb.root().join("restored");
    sb.ok(&[
        "restore",
        "latest",
        "--only",
        MONGO,
        "--target",
        arg(&target),
        "--yes",
    ]);
    assert_same_dbpath(&db, &target.join("mongodb/control"), before);

    // In place: the live dbpath changed since; the set's comes back.
    let stored = target.join("mongodb/control");
    fs::remove_file(db.join("index-1-123.wt")).expect("rm");
    support::write_file(&db.join("collection-0-123.wt"), b"changed since the backup");
    let path = systemctl_stand_in(&sb);
    let out = sb
        .cmd(&["restore", "latest", "--only", MONGO, "--yes"])
        .env("PATH", &path)
        .output()
        .expect("spawn");
    assert_exit(&out, 0, "in-place physical restore");
    let text = support::all_output(&out);
    assert!(
        text.contains("set from MongoDB 7.0.0, this server runs 7.0.0"),
        "{text}"
    );
    assert_eq!(
        systemctl_calls(&sb),
        ["stop mongod-control", "start mongod-control"]
    );
    support::assert_trees_equal(&stored, &db);
    let kept: Vec<String> = fs::read_dir(db.parent().expect("parent"))
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("db.akbackup-prev-"))
        .collect();
    assert_eq!(kept.len(), 1, "the previous dbpath is kept beside it");
}

/// Snapshots other than the subvolume itself.
fn leftover_mongo_snapshots(fs: &Btrfs) -> Vec<String> {
    fs.subvolumes()
        .into_iter()
        .filter(|s| s != "mongo")
        .collect()
}

/// A physical set is not put where another MongoDB version would open it: refused before
/// anything is stopped, naming both versions.
#[test]
fn mongodb_physical_restore_refuses_another_server_version() {
    let sb = Sandbox::new();
    let Some((_fs, db, server)) = mongo_snapshot_sandbox(&sb, "") else {
        return;
    };
    sb.ok(&["backup"]);
    assert_eq!(
        fsync_log(&sb),
        Vec::<String>::new(),
        "no lock without lock = true"
    );
    let newer = MongoServer::start_with_env(&[
        ("AKBACKUP_TEST_DBPATH", &db.display().to_string()),
        ("AKBACKUP_TEST_VERSION", "8.0.3"),
    ]);
    let config = fs::read_to_string(sb.config_path())
        .expect("read config")
        .replace(&server.uri(), &newer.uri());
    sb.write_config(&config);
    let path = systemctl_stand_in(&sb);
    let out = sb
        .cmd(&["restore", "latest", "--only", MONGO, "--yes"])
        .env("PATH", &path)
        .output()
        .expect("spawn");
    assert_exit(&out, 1, "restore into another version");
    let text = support::all_output(&out);
    assert!(
        text.contains("the set holds the files of MongoDB 7.0.0, and this server runs 8.0.3"),
        "{text}"
    );
    assert_eq!(
        systemctl_calls(&sb),
        Vec::<String>::new(),
        "something was stopped"
    );
}

/// When the restored server does not answer, the previous dbpath is put back and started.
#[test]
fn mongodb_physical_restore_rolls_back_when_the_server_does_not_answer() {
    let sb = Sandbox::new();
    let Some((_fs, db, mut server)) = mongo_snapshot_sandbox(&sb, "") else {
        return;
    };
    sb.ok(&["backup"]);
    support::write_file(&db.join("collection-0-123.wt"), b"the live data");
    let live = sb.root().join("live-before");
    support::copy_tree(&db, &live);
    // The server goes away when the unit is started on the restored files.
    let pid = server.pid().expect("server pid");
    fs::write(
        sb.root().join("systemctl.on-start"),
        format!("kill -9 {pid} 2>/dev/null\n"),
    )
    .expect("write hook");
    let path = systemctl_stand_in(&sb);
    let out = sb
        .cmd(&["restore", "latest", "--only", MONGO, "--yes"])
        .env("PATH", &path)
        .env("AKBACKUP_START_TIMEOUT", "2")
        .output()
        .expect("spawn");
    server.kill();
    assert_exit(&out, 1, "restore whose server does not come up");
    let text = support::all_output(&out);
    assert!(
        text.contains("the restored dbpath failed")
            && text.contains("the previous dbpath was put back"),
        "{text}"
    );
    assert_eq!(
        systemctl_calls(&sb),
        [
            "stop mongod-control",
            "start mongod-control",
            "stop mongod-control",
            "start mongod-control"
        ]
    );
    support::assert_trees_equal(&live, &db);
}

/// SIGTERM while the snapshot is taken under fsyncLock: the server is unlocked and the
/// snapshot released before the run exits 130.
#[test]
fn mongodb_snapshot_under_lock_is_unlocked_and_released_on_sigterm() {
    let sb = Sandbox::new();
    let Some((fs, _db, _server)) = mongo_snapshot_sandbox(&sb, "lock = true\n") else {
        return;
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_akbackup"));
    cmd.args(["backup", "--only", MONGO])
        .env("AKBACKUP_CONFIG", sb.config_path())
        .env("XDG_CACHE_HOME", sb.root().join("cache"))
        .env("PATH", hanging_btrfs(&sb))
        .current_dir(sb.root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let marker = sb.root().join("snapshot.taken");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            child.try_wait().expect("poll").is_none(),
            "the backup ended early"
        );
        assert!(Instant::now() < deadline, "no snapshot within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        fsync_log(&sb),
        ["lock 1"],
        "locked while the snapshot is taken"
    );
    kill("-TERM", &child.id().to_string());
    let out = child.wait_with_output().expect("wait");
    kill("-KILL", fs::read_to_string(&marker).expect("marker").trim());
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    assert_eq!(fsync_log(&sb), ["lock 1", "unlock 0"]);
    assert_eq!(leftover_mongo_snapshots(&fs), Vec::<String>::new());
}

/// A journal on another volume cannot be in the same snapshot as the data files: refused,
/// naming it, before anything is locked or snapshotted.
#[test]
fn mongodb_snapshot_refuses_a_journal_on_another_volume() {
    let sb = Sandbox::new();
    let Some((fs, db, _server)) = mongo_snapshot_sandbox(&sb, "lock = true\n") else {
        return;
    };
    let elsewhere = sb.root().join("journal-elsewhere");
    fs::rename(db.join("journal"), &elsewhere).unwrap_or_else(|_| {
        support::copy_tree(&db.join("journal"), &elsewhere);
        fs::remove_dir_all(db.join("journal")).expect("rm journal");
    });
    support::symlink(&elsewhere, &db.join("journal"));
    let out = sb.cmd(&["backup"]).output().expect("spawn");
    assert_exit(&out, 1, "backup with the journal elsewhere");
    let text = support::all_output(&out);
    assert!(
        text.contains("journal is not on the same volume as"),
        "{text}"
    );
    assert_eq!(fsync_log(&sb), Vec::<String>::new(), "locked anyway");
    assert_eq!(leftover_mongo_snapshots(&fs), Vec::<String>::new());
}

/// A physical set in the whole-platform restore: the unit is stopped before, the dbpath
/// swapped, the unit started and pinged after; `verify --deep` finds a WiredTiger dbpath in
/// the set; `export` writes the dbpath's tar.gz and refuses the dump-directory form.
#[test]
fn mongodb_physical_set_in_restore_all_verify_and_export() {
    let sb = Sandbox::new();
    let Some((_fs, db, _server)) = mongo_snapshot_sandbox(&sb, "") else {
        return;
    };
    sb.ok(&["backup"]);
    let stored = sb.root().join("stored");
    support::copy_tree(&db, &stored);
    fs::remove_file(db.join("storage.bson")).expect("rm");

    let path = systemctl_stand_in(&sb);
    let out = sb
        .cmd(&["restore", "latest", "--all", "--yes"])
        .env("PATH", &path)
        .output()
        .expect("spawn");
    assert_exit(&out, 0, "restore --all of a physical set");
    assert_eq!(
        systemctl_calls(&sb),
        ["stop mongod-control", "start mongod-control"]
    );
    support::assert_trees_equal(&stored, &db);

    let out = sb.ok(&["verify", "--read-data", "--deep"]);
    let text = support::all_output(&out);
    assert!(!text.contains("problem"), "{text}");

    let exports = sb.root().join("exports");
    sb.ok(&["export", "latest", "--only", MONGO, "--to", arg(&exports)]);
    let tarball = fs::read_dir(&exports)
        .expect("ls exports")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("a tar.gz");
    let listed = Command::new("tar")
        .arg("tzf")
        .arg(&tarball)
        .output()
        .expect("tar");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("storage.bson") && listed.contains("journal/WiredTigerLog.0000000001"),
        "{listed}"
    );
    let out = sb
        .cmd(&[
            "export",
            "latest",
            "--only",
            MONGO,
            "--to",
            arg(&exports),
            "--format",
            "dir",
        ])
        .output()
        .expect("spawn");
    assert_exit(&out, 2, "export of a physical set as a dump directory");
    assert!(support::all_output(&out).contains("physical copy of the dbpath"));
}

/// A store that is a subvolume of its own (the top of its volume): its snapshots live inside
/// it and are never stored; an in-place restore, whose swap cannot cross volumes, is refused
/// before anything is written, and `--target` still works.
#[test]
fn a_store_that_is_its_own_subvolume() {
    let sb = Sandbox::new();
    let Some(fs) = Btrfs::new(sb.root()) else {
        return;
    };
    let store = fs.subvolume("actions");
    fill(&store, 0.5, 8, false);
    sandbox_with_store(&sb, &store, "mode = \"snapshot\"\nsnapshot = \"btrfs\"\n");
    sb.ok(&["backup"]);
    let target = sb.root().join("restored");
    sb.ok(&["restore", "latest", "--target", arg(&target), "--yes"]);
    let restored = target.join("ssdb/actions");
    assert!(
        !restored.join(".akbackup-snapshots").exists(),
        "the snapshots' directory was stored"
    );
    assert_eq!(count(&restored), count(&store));

    let out = sb
        .cmd(&["restore", "latest", "--yes"])
        .output()
        .expect("spawn");
    assert_exit(&out, 1, "in-place restore of a subvolume's top");
    let text = support::all_output(&out);
    assert!(
        text.contains("is the top of its own volume") && text.contains("nothing was changed"),
        "{text}"
    );
    let staged: Vec<_> = fs::read_dir(sb.root().join("mnt"))
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("akbackup"))
        .collect();
    assert!(
        staged.is_empty(),
        "something was written beside it: {staged:?}"
    );
}
