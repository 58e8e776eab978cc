//! Bad input beyond the config checks of `cli.rs`: truncated and corrupted import archives
//! (seeded trials: refused with one line and nothing recorded, or imported exactly), and a
//! source path that does not exist (one line naming it, per `on-read-error`).

use super::{Campaign, Rng, one_line, run};
use crate::support::{self, Sandbox, build_rich_tree};

/// Seeded truncations and byte damage of a documented `altcraft-DATE.tar.gz`.
#[test]
fn damaged_import_archives_are_refused() {
    let sb = Sandbox::new();
    super::init(&sb, None);
    // The documented `tar -czf ... /opt/altcraft`: entries under the configured path.
    build_rich_tree(&sb.source(), 64 * 1024);
    let good = sb.root().join("good.tar.gz");
    let inside = sb
        .source()
        .strip_prefix("/")
        .expect("absolute")
        .to_path_buf();
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&good)
        .arg("-C")
        .arg("/")
        .arg(&inside)
        .status()
        .expect("spawn tar");
    assert!(st.success());
    let bytes = std::fs::read(&good).expect("read archive");
    let archive = sb.root().join("altcraft-2019-06-01.tar.gz");
    let original = sb.root().join("original");
    crate::support::copy_tree(&sb.source(), &original);

    let mut c = Campaign::new("bad-import-archives");
    // Control: the undamaged archive imports to exactly the tree.
    std::fs::write(&archive, &bytes).expect("write archive");
    let out = run(&sb, &["import", archive.to_str().expect("utf-8")]);
    c.record(
        "control: the undamaged archive",
        super::expect_exit(&out, 0, "import").and_then(|()| {
            let target = sb.root().join("check");
            let r = run(
                &sb,
                &[
                    "restore",
                    "latest",
                    "--target",
                    target.to_str().expect("utf-8"),
                ],
            );
            super::expect_exit(&r, 0, "restore of the import")?;
            super::same_tree(&original, &target.join("files/control"))?;
            std::fs::remove_dir_all(&target).map_err(|e| e.to_string())?;
            Ok("imported, identical".to_string())
        }),
    );
    let mut count = super::sets(&sb, None).map(|s| s.len()).unwrap_or(0);

    for seed in Campaign::seeds(24) {
        let mut rng = Rng::new(9000 + seed);
        let mut damaged = bytes.clone();
        let len = damaged.len() as u64;
        let what = match seed % 3 {
            0 => {
                let to = rng.below(len);
                damaged.truncate(usize::try_from(to).expect("small"));
                format!("truncated to {to}/{len}")
            }
            1 => {
                let at = rng.below(len);
                damaged[usize::try_from(at).expect("small")] ^= 1 << rng.below(8);
                format!("bit flipped at {at}/{len}")
            }
            _ => {
                let at = rng.below(len.saturating_sub(32));
                for i in 0..32 {
                    damaged[usize::try_from(at + i).expect("small")] = 0;
                }
                format!("32 bytes zeroed at {at}/{len}")
            }
        };
        std::fs::write(&archive, &damaged).expect("write archive");
        let before = count;
        let out = run(&sb, &["--json", "import", archive.to_str().expect("utf-8")]);
        let outcome = (|| {
            let after = super::sets(&sb, None)?.len();
            count = after;
            match out.status.code() {
                Some(0) => {
                    // Accepted: only when what it recorded is exactly the original tree.
                    let target = sb.root().join("check");
                    let _ = std::fs::remove_dir_all(&target);
                    let text = String::from_utf8_lossy(&out.stdout).to_string();
                    let id = text
                        .split('"')
                        .skip_while(|t| *t != "set")
                        .nth(2)
                        .ok_or_else(|| format!("no set id in {text}"))?
                        .to_string();
                    let r = run(
                        &sb,
                        &["restore", &id, "--target", target.to_str().expect("utf-8")],
                    );
                    super::expect_exit(&r, 0, "restore of the import")?;
                    super::same_tree(&original, &target.join("files/control")).map_err(|e| {
                        format!("a damaged archive was imported with wrong content: {e}")
                    })?;
                    Ok("accepted, content identical (damage outside the data)".to_string())
                }
                Some(1 | 2) => {
                    let err = String::from_utf8_lossy(&out.stderr);
                    let lines: Vec<&str> = err
                        .lines()
                        .filter(|l| !l.contains(": unpacking "))
                        .collect();
                    if after != before {
                        return Err("refused but a set was recorded".to_string());
                    }
                    if lines.len() != 1 || !lines[0].contains("altcraft-2019-06-01.tar.gz") {
                        return Err(format!("not one line naming the archive: {err}"));
                    }
                    Ok(format!("refused: {}", lines[0]))
                }
                other => Err(format!("exit {other:?}: {}", one_line(&out.stderr))),
            }
        })();
        c.record(&format!("seed {seed} {what}"), outcome);
    }
    // No staging left behind by the refused imports.
    let left: Vec<_> = std::fs::read_dir(sb.repo())
        .expect("read repo")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".akbackup-"))
        .map(|e| e.path())
        .collect();
    c.record(
        "no staging left by refused imports",
        if left.is_empty() {
            Ok("none".to_string())
        } else {
            Err(format!("{left:?}"))
        },
    );
    c.finish();
}

/// A source path that does not exist: one line naming it, with either `on-read-error`, and
/// no set recorded.
#[test]
fn missing_source_path_is_named() {
    let mut c = Campaign::new("missing-source");
    for mode in ["fail", "skip"] {
        let sb = Sandbox::new();
        let missing = sb.root().join("opt/not-there");
        sb.write_config(&format!(
            "{}on-read-error = \"{mode}\"\n",
            sb.default_config().replace(
                &support::toml_str(&sb.source()),
                &support::toml_str(&missing)
            )
        ));
        super::init(&sb, None);
        let out = run(&sb, &["backup"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let outcome = (|| {
            let code = out.status.code();
            if !matches!(code, Some(1 | 2)) {
                return Err(format!("exit {code:?}: {err}"));
            }
            let lines: Vec<&str> = err.lines().collect();
            if lines.len() != 1 || !lines[0].contains(&missing.display().to_string()) {
                return Err(format!("not one line naming the path: {err}"));
            }
            if !super::sets(&sb, None)?.is_empty() {
                return Err("a set was recorded".to_string());
            }
            Ok(format!("exit {}: {}", code.unwrap_or(-1), lines[0]))
        })();
        c.record(&format!("on-read-error = {mode}"), outcome);
    }
    c.finish();
}
