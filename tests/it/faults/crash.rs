//! Crash campaigns: `kill -9` at seeded random times spread over each operation's measured
//! duration (`backup`, `forget --prune`, `copy` local to local, in-place `restore`), then the
//! promises checked: `verify` passes, every earlier set is intact (same manifest, data
//! authenticated by `verify --read-data`, and restored content compared every few trials), no
//! half set is listed, the next run succeeds over the stale lock, and an in-place restore
//! leaves the old or the new tree whole with the other kept under the name it printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    Campaign, Rng, expect_exit, measure_from, reset_dir, run, run_killed, same_tree, set_identity,
    sets,
};
use crate::support::{self, Sandbox, build_random_tree, build_rich_tree, copy_tree};

/// Trials per operation.
const TRIALS: u64 = 30;

/// A kill time in `[2%, 110%)` of `d`: from "barely started" to "probably finished".
fn kill_time(rng: &mut Rng, d: Duration) -> Duration {
    d.mul_f64(0.02 + 1.08 * rng.unit())
}

/// Restores set `id` of the sandbox's repository (or `--repo`) to a fresh target and
/// compares the files component with `expected`.
fn restored_equals(
    sb: &Sandbox,
    repo: Option<&str>,
    id: &str,
    expected: &Path,
) -> Result<(), String> {
    let target = sb.root().join("check-target");
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| e.to_string())?;
    }
    let mut args = Vec::new();
    if let Some(r) = repo {
        args.extend(["--repo", r]);
    }
    let t = target.to_str().expect("utf-8").to_string();
    args.extend(["restore", id, "--target", &t]);
    let out = run(sb, &args);
    expect_exit(&out, 0, &format!("restore {id} --target"))?;
    same_tree(expected, &target.join("files/control"))?;
    std::fs::remove_dir_all(&target).map_err(|e| e.to_string())
}

/// The ids and identities of the listed sets.
fn listed(sb: &Sandbox, repo: Option<&str>) -> Result<Vec<(String, String)>, String> {
    Ok(sets(sb, repo)?
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                set_identity(s),
            )
        })
        .collect())
}

/// Every listed set is complete, and the sets of `before` are all still listed unchanged
/// (`may_go` lists identities that the interrupted operation was allowed to remove).
fn earlier_sets_intact(
    now: &[(String, String)],
    before: &[(String, String)],
    may_go: &[String],
) -> Result<(), String> {
    for (id, ident) in now {
        if !ident.contains("\"status\":\"complete\"") {
            return Err(format!("set {id} is listed but not complete: {ident}"));
        }
    }
    for (id, ident) in before {
        if may_go.contains(ident) {
            continue;
        }
        if !now.iter().any(|(_, i)| i == ident) {
            return Err(format!("earlier set {id} is gone or changed"));
        }
    }
    Ok(())
}

/// The source trees of the campaigns: `v1` (a rich tree), `v2` (v1 plus ~2.4 MB of new
/// files and some edits), `v3` (v2 plus another ~1.2 MB and a deletion).
fn build_versions(root: &Path) -> [PathBuf; 3] {
    let v1 = root.join("v1");
    build_rich_tree(&v1, 512 * 1024);
    let v2 = root.join("v2");
    copy_tree(&v1, &v2);
    build_random_tree(&v2.join("extra"), 12, 200 * 1024);
    support::write_file(&v2.join("etc/main.conf"), b"changed in v2\n");
    let v3 = root.join("v3");
    copy_tree(&v2, &v3);
    build_random_tree(&v3.join("more"), 6, 200 * 1024);
    std::fs::remove_dir_all(v3.join("many/d1")).expect("remove dir");
    [v1, v2, v3]
}

/// Points the sandbox's source at a copy of `version`.
fn use_source(sb: &Sandbox, version: &Path) {
    reset_dir(version, &sb.source());
}

/// `kill -9` during `backup`: set A exists, the source has changed, a backup is killed.
#[test]
fn crash_during_backup() {
    let sb = Sandbox::new();
    let [v1, v2, _] = build_versions(&sb.root().join("versions"));
    use_source(&sb, &v1);
    super::init(&sb, None);
    sb.backup(&[]);
    let template = sb.root().join("repo-template");
    copy_tree(&sb.repo(), &template);
    let before = listed(&sb, None).expect("list sets");
    use_source(&sb, &v2);
    let d = measure_from(&sb, || reset_dir(&template, &sb.repo()), &["backup"]);

    let mut c = Campaign::new("crash-backup");
    for seed in Campaign::seeds(TRIALS) {
        let mut rng = Rng::new(seed);
        let at = kill_time(&mut rng, d);
        reset_dir(&template, &sb.repo());
        let k = run_killed(&sb, &["backup"], at);
        c.kill(k.killed);
        let outcome = (|| {
            let out = run(&sb, &["verify"]);
            expect_exit(&out, 0, "verify after the kill")?;
            let now = listed(&sb, None)?;
            earlier_sets_intact(&now, &before, &[])?;
            let out = run(&sb, &["--json", "backup"]);
            expect_exit(&out, 0, "next backup")?;
            let summary: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let newest = summary["set"].as_str().unwrap_or_default().to_string();
            // Reads every byte of every set: the earlier ones are still whole.
            let out = run(&sb, &["verify", "--read-data"]);
            expect_exit(&out, 0, "verify --read-data after the next backup")?;
            // The set made after the crash holds v2, and (every third trial) set A still v1.
            restored_equals(&sb, None, &newest, &v2)?;
            if seed % 3 == 0 {
                restored_equals(&sb, None, &before[0].0, &v1)?;
            }
            Ok(format!(
                "killed at {:.0}% ({} ms, {}), {} set(s) listed after the kill",
                100.0 * at.as_secs_f64() / d.as_secs_f64(),
                at.as_millis(),
                if k.killed { "running" } else { "already done" },
                now.len()
            ))
        })();
        c.record(&format!("seed {seed}"), outcome);
    }
    c.finish();
}

/// `kill -9` during `forget --keep-last 1 --prune` over three sets of different data.
#[test]
fn crash_during_forget_prune() {
    let sb = Sandbox::new();
    let [v1, v2, v3] = build_versions(&sb.root().join("versions"));
    super::init(&sb, None);
    for v in [&v1, &v2, &v3] {
        use_source(&sb, v);
        sb.backup(&[]);
    }
    let template = sb.root().join("repo-template");
    copy_tree(&sb.repo(), &template);
    let before = listed(&sb, None).expect("list sets");
    let forget = ["forget", "--keep-last", "1", "--prune"];
    let d = measure_from(&sb, || reset_dir(&template, &sb.repo()), &forget);
    let may_go: Vec<String> = before[..2].iter().map(|(_, i)| i.clone()).collect();

    let mut c = Campaign::new("crash-forget-prune");
    for seed in Campaign::seeds(TRIALS) {
        let mut rng = Rng::new(1000 + seed);
        let at = kill_time(&mut rng, d);
        reset_dir(&template, &sb.repo());
        let k = run_killed(&sb, &forget, at);
        c.kill(k.killed);
        let outcome = (|| {
            // Every set still listed must read back whole.
            let out = run(&sb, &["verify", "--read-data"]);
            expect_exit(&out, 0, "verify --read-data after the kill")?;
            let now = listed(&sb, None)?;
            earlier_sets_intact(&now, &before, &may_go)?;
            let out = run(&sb, &forget);
            expect_exit(&out, 0, "next forget --prune")?;
            let out = run(&sb, &["verify"]);
            expect_exit(&out, 0, "verify after the next forget")?;
            let after = listed(&sb, None)?;
            if after.len() != 1 || after[0].1 != before[2].1 {
                return Err(format!("after the next forget: {after:?}"));
            }
            if seed % 2 == 0 {
                restored_equals(&sb, None, &after[0].0, &v3)?;
            }
            Ok(format!(
                "killed at {:.0}% ({} ms, {}), {} set(s) listed after the kill",
                100.0 * at.as_secs_f64() / d.as_secs_f64(),
                at.as_millis(),
                if k.killed { "running" } else { "already done" },
                now.len()
            ))
        })();
        c.record(&format!("seed {seed}"), outcome);
    }
    c.finish();
}

/// `kill -9` during `copy --to dst` (local to local) of two sets into a repository that
/// already holds the first.
#[test]
fn crash_during_copy() {
    let sb = Sandbox::new();
    let [v1, v2, _] = build_versions(&sb.root().join("versions"));
    let dst = sb.root().join("dst");
    sb.write_config(&format!(
        "{}\n[repositories.dst]\npath = {}\npassword-file = {}\n",
        sb.default_config(),
        support::toml_str(&dst),
        support::toml_str(&sb.password_file())
    ));
    super::init(&sb, None);
    super::init(&sb, Some(("dst", &dst)));
    use_source(&sb, &v1);
    let a = Sandbox::set_id(&sb.backup(&[]));
    sb.ok(&["copy", "--to", "dst", &a]);
    use_source(&sb, &v2);
    let b = Sandbox::set_id(&sb.backup(&[]));
    let src_sets = listed(&sb, None).expect("list sets");
    let template = sb.root().join("dst-template");
    copy_tree(&dst, &template);
    let before = listed(&sb, Some("dst")).expect("list dst");
    let d = measure_from(&sb, || reset_dir(&template, &dst), &["copy", "--to", "dst"]);

    let mut c = Campaign::new("crash-copy");
    for seed in Campaign::seeds(TRIALS) {
        let mut rng = Rng::new(2000 + seed);
        let at = kill_time(&mut rng, d);
        reset_dir(&template, &dst);
        let k = run_killed(&sb, &["copy", "--to", "dst"], at);
        c.kill(k.killed);
        let outcome = (|| {
            // The source is only read (and locked): the destination is what can break.
            let out = run(&sb, &["--repo", "dst", "verify"]);
            expect_exit(&out, 0, "verify of dst after the kill")?;
            let now = listed(&sb, Some("dst"))?;
            earlier_sets_intact(&now, &before, &[])?;
            let out = run(&sb, &["copy", "--to", "dst"]);
            expect_exit(&out, 0, "next copy")?;
            let out = run(&sb, &["--repo", "dst", "verify", "--read-data"]);
            expect_exit(&out, 0, "verify --read-data of dst after the next copy")?;
            let after = listed(&sb, Some("dst"))?;
            let want: Vec<&String> = src_sets.iter().map(|(_, i)| i).collect();
            let got: Vec<&String> = after.iter().map(|(_, i)| i).collect();
            if want != got {
                return Err(format!("dst sets after the next copy: {got:?}"));
            }
            if seed % 3 == 0 {
                restored_equals(&sb, Some("dst"), &after[1].0, &v2)?;
            }
            Ok(format!(
                "killed at {:.0}% ({} ms, {}), {} set(s) in dst after the kill",
                100.0 * at.as_secs_f64() / d.as_secs_f64(),
                at.as_millis(),
                if k.killed { "running" } else { "already done" },
                now.len()
            ))
        })();
        c.record(&format!("seed {seed}"), outcome);
    }
    let _ = (a, b);
    c.finish();
}

/// The hidden and visible siblings akbackup leaves next to `live`.
fn leftovers(live: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let name = live
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let mut hidden = Vec::new();
    let mut kept = Vec::new();
    for e in std::fs::read_dir(live.parent().expect("parent")).expect("read parent") {
        let p = e.expect("entry").path();
        let n = p.file_name().expect("name").to_string_lossy().into_owned();
        if n.starts_with(&format!(".{name}.akbackup-")) {
            hidden.push(p);
        } else if n.starts_with(&format!("{name}.akbackup-prev-")) {
            kept.push(p);
        }
    }
    (hidden, kept)
}

/// The path the restore printed for the previous contents, if it got that far.
fn printed_keep(stderr_and_stdout: &str) -> Option<PathBuf> {
    for marker in ["will be kept at ", "previous contents kept at "] {
        if let Some(i) = stderr_and_stdout.find(marker) {
            let rest = &stderr_and_stdout[i + marker.len()..];
            let end = rest.find(['\n', ' ', ';']).unwrap_or(rest.len());
            return Some(PathBuf::from(&rest[..end]));
        }
    }
    None
}

/// `kill -9` during an in-place `restore` of set A (v1) over a changed live tree (v2).
#[test]
fn crash_during_in_place_restore() {
    let sb = Sandbox::new();
    let [v1, v2, _] = build_versions(&sb.root().join("versions"));
    use_source(&sb, &v1);
    super::init(&sb, None);
    let a = Sandbox::set_id(&sb.backup(&[]));
    let restore = ["restore", a.as_str(), "--yes", "--no-restart"];
    let parent = sb.source().parent().expect("parent").to_path_buf();
    // Fresh live tree (v2), no leftovers of an earlier run.
    let fresh_live = || {
        for e in std::fs::read_dir(&parent).expect("read parent") {
            let p = e.expect("entry").path();
            std::fs::remove_dir_all(&p).expect("clean parent");
        }
        use_source(&sb, &v2);
    };
    let d = measure_from(&sb, fresh_live, &restore);

    let mut c = Campaign::new("crash-restore");
    for seed in Campaign::seeds(TRIALS) {
        let mut rng = Rng::new(3000 + seed);
        let at = kill_time(&mut rng, d);
        fresh_live();
        let k = run_killed(&sb, &restore, at);
        c.kill(k.killed);
        let outcome = (|| {
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&k.output.stderr),
                String::from_utf8_lossy(&k.output.stdout)
            );
            let live = sb.source();
            let (hidden, kept) = leftovers(&live);
            let mut pending_keep = None;
            let state = if same_tree(&v2, &live).is_ok() {
                // Old data live: nothing was kept aside (a partial staging may remain).
                if !kept.is_empty() {
                    return Err(format!("live is the old tree but {kept:?} exist"));
                }
                "old tree live"
            } else if same_tree(&v1, &live).is_ok() {
                // New data live: the old tree must be whole under the printed name.
                let Some(name) = printed_keep(&printed) else {
                    return Err(format!(
                        "live is the new tree but no keep path was printed; hidden {hidden:?}, kept {kept:?}"
                    ));
                };
                if name.exists() {
                    same_tree(&v2, &name)?;
                    pending_keep = None;
                    "new tree live, old kept"
                } else {
                    // Killed between the exchange and the rename: the old tree is under
                    // the hidden swap name until the next run settles it.
                    let prefix = format!(".{}.", name.file_name().expect("name").to_string_lossy());
                    let Some(swapped) = hidden.iter().find(|h| {
                        h.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                    }) else {
                        return Err(format!(
                            "printed keep path {} does not exist and no swap leftover; hidden {hidden:?}, kept {kept:?}",
                            name.display()
                        ));
                    };
                    same_tree(&v2, swapped)?;
                    pending_keep = Some(name);
                    "new tree live, old at the swap name"
                }
            } else {
                return Err(format!(
                    "live tree is neither the old nor the new one; hidden {hidden:?}, kept {kept:?}"
                ));
            };
            // The next run takes over the stale lock, cleans up and completes.
            let out = run(&sb, &restore);
            expect_exit(&out, 0, "next restore")?;
            same_tree(&v1, &live)?;
            if let Some(name) = pending_keep {
                same_tree(&v2, &name)
                    .map_err(|e| format!("after the next run the printed keep path: {e}"))?;
            }
            let (hidden, _) = leftovers(&live);
            if !hidden.is_empty() {
                return Err(format!("staging left after the next restore: {hidden:?}"));
            }
            let out = run(&sb, &["verify"]);
            expect_exit(&out, 0, "verify")?;
            Ok(format!(
                "killed at {:.0}% ({} ms, {}): {state}",
                100.0 * at.as_secs_f64() / d.as_secs_f64(),
                at.as_millis(),
                if k.killed { "running" } else { "already done" },
            ))
        })();
        c.record(&format!("seed {seed}"), outcome);
    }
    c.finish();
}
