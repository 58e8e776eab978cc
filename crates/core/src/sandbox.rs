//! A generated sandbox platform: a control-module tree that looks like `/opt/altcraft`
//! (configs, mail templates, binaries, assets, pid and log files, symlinks, empty
//! directories), deterministic for a seed, and a "next day" change of about 1% of it.
//! Used by `akbackup demo`, the tests and the benchmarks; never touches anything outside the
//! directory it is given.

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// What was generated.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Generated {
    /// Regular files written.
    pub files: u64,
    /// Bytes written (all files, excluded ones included).
    pub bytes: u64,
    /// Bytes in `*.pid` and `*.log` files, which backups leave out.
    pub excluded_bytes: u64,
}

/// Deterministic xorshift generator: the sandbox must be the same for a seed on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
    fn text(&mut self, len: usize) -> String {
        const WORDS: &[&str] = &[
            "campaign",
            "subscriber",
            "segment",
            "trigger",
            "template",
            "account",
            "message",
            "delivery",
            "bounce",
            "click",
            "open",
            "unsubscribe",
            "event",
            "profile",
            "channel",
            "email",
            "sms",
            "push",
            "queue",
            "worker",
            "timeout",
            "retry",
            "limit",
            "true",
            "false",
            "{{ name }}",
            "<td>",
            "</td>",
        ];
        let mut s = String::with_capacity(len + 16);
        while s.len() < len {
            let w = WORDS[usize::try_from(self.below(WORDS.len() as u64)).unwrap_or(0)];
            s.push_str(w);
            s.push(if self.below(9) == 0 { '\n' } else { ' ' });
        }
        s.truncate(len);
        s
    }
}

fn write(path: &Path, data: &[u8], stats: &mut Generated) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::File::create(path)?.write_all(data)?;
    stats.files += 1;
    stats.bytes += data.len() as u64;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".pid") || name.ends_with(".log") {
        stats.excluded_bytes += data.len() as u64;
    }
    Ok(())
}

/// Generates a control-module tree of about `size` bytes under `root` (created).
///
/// # Errors
/// I/O errors.
pub fn generate_control_module(root: &Path, size: u64, seed: u64) -> std::io::Result<Generated> {
    let mut rng = Rng(seed | 1);
    let mut st = Generated::default();
    fs::create_dir_all(root)?;
    // The restart command: records its calls next to the tree, so a demo can show it ran.
    let akd = root.join("akd");
    write(&akd, b"#!/bin/sh\n# sandbox stand-in for the Altcraft control daemon\necho \"akd $*\" >> \"$(dirname \"$0\")/../akd.calls\"\n", &mut st)?;
    fs::set_permissions(&akd, fs::Permissions::from_mode(0o755))?;
    let text_budget = size / 4;
    let log_budget = size / 10;
    let bin_budget = size.saturating_sub(text_budget + log_budget);
    let mut used = 0;
    let mut i = 0;
    while used < text_budget {
        let len = 1024 + usize::try_from(rng.below(16 * 1024)).unwrap_or(0);
        let path = if i % 3 == 0 {
            root.join(format!("conf/module{:02}/settings{i:04}.conf", i % 20))
        } else {
            root.join(format!(
                "templates/mail/lang{:02}/template{i:04}.html",
                i % 12
            ))
        };
        let body = rng.text(len);
        write(&path, body.as_bytes(), &mut st)?;
        used += len as u64;
        i += 1;
    }
    used = 0;
    i = 0;
    while used < bin_budget {
        let len = 64 * 1024 + usize::try_from(rng.below(2 * 1024 * 1024)).unwrap_or(0);
        let len = len
            .min(usize::try_from(bin_budget - used).unwrap_or(len))
            .max(1);
        let path = if i % 4 == 0 {
            root.join(format!("bin/tool{i:03}"))
        } else {
            root.join(format!("static/assets/img{:02}/asset{i:04}.png", i % 10))
        };
        let data = rng.bytes(len);
        write(&path, &data, &mut st)?;
        if i % 4 == 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o750))?;
        }
        used += len as u64;
        i += 1;
    }
    for name in ["akd", "akworker", "aksender"] {
        write(
            &root.join(format!("var/run/{name}.pid")),
            format!("{}\n", 1000 + rng.below(30000)).as_bytes(),
            &mut st,
        )?;
    }
    let per_log = usize::try_from(log_budget / 4).unwrap_or(0).max(1);
    for name in ["akd", "sender", "worker", "api"] {
        let body = rng.text(per_log);
        write(
            &root.join(format!("logs/{name}.log")),
            body.as_bytes(),
            &mut st,
        )?;
    }
    write(&root.join("conf/secret.key"), &rng.bytes(64), &mut st)?;
    fs::set_permissions(
        root.join("conf/secret.key"),
        fs::Permissions::from_mode(0o600),
    )?;
    fs::create_dir_all(root.join("releases/2024.1"))?;
    write(&root.join("releases/2024.1/VERSION"), b"2024.1\n", &mut st)?;
    std::os::unix::fs::symlink("releases/2024.1", root.join("current"))?;
    std::os::unix::fs::symlink(
        "/nonexistent/altcraft/socket",
        root.join("var/run/dangling.sock"),
    )?;
    fs::create_dir_all(root.join("var/spool/empty"))?;
    fs::create_dir_all(root.join("data/tmp"))?;
    fs::set_permissions(root.join("data/tmp"), fs::Permissions::from_mode(0o1777))?;
    Ok(st)
}

/// The next day: edits some configs, adds an asset, removes a template, grows the logs;
/// about `percent`% of the tree's bytes. Returns the bytes written (logs excluded).
///
/// # Errors
/// I/O errors.
pub fn change_some_files(root: &Path, percent: f64, seed: u64) -> std::io::Result<u64> {
    let mut rng = Rng(seed.wrapping_mul(31) | 1);
    let total = crate::fsutil::tree_size(root);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let budget = ((total as f64) * percent / 100.0) as usize;
    let mut written = 0u64;
    let confs: Vec<PathBuf> = walkdir::WalkDir::new(root.join("conf"))
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "conf"))
        .map(|e| e.path().to_path_buf())
        .take(5)
        .collect();
    for c in &confs {
        let extra = rng.text(512);
        fs::OpenOptions::new()
            .append(true)
            .open(c)?
            .write_all(extra.as_bytes())?;
        written += 512;
    }
    let asset = rng.bytes(
        budget
            .saturating_sub(usize::try_from(written).unwrap_or(0))
            .max(1),
    );
    let mut st = Generated::default();
    write(
        &root.join("static/assets/new/asset-next-day.png"),
        &asset,
        &mut st,
    )?;
    written += asset.len() as u64;
    if let Some(t) = walkdir::WalkDir::new(root.join("templates"))
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_file())
    {
        fs::remove_file(t.path())?;
    }
    let log = root.join("logs/akd.log");
    if log.exists() {
        fs::OpenOptions::new()
            .append(true)
            .open(&log)?
            .write_all(rng.text(64 * 1024).as_bytes())?;
    }
    Ok(written)
}

/// Writes an SSDB-shaped store (`data/` and `meta/` LevelDB databases) of about `size` bytes
/// of values under `store`: key-value, hash, sorted-set, queue and binlog keys with SSDB's key
/// prefixes, through a real LevelDB implementation. `first_key` lets a later call add new keys
/// (the next day). Returns the number of data keys written.
///
/// # Errors
/// LevelDB errors as text.
pub fn write_ssdb_store(store: &Path, size: u64, first_key: u64, seed: u64) -> Result<u64, String> {
    let mut rng = Rng(seed | 1);
    let opts = rusty_leveldb::Options {
        write_buffer_size: 1 << 20,
        ..Default::default()
    };
    let mut db = rusty_leveldb::DB::open(store.join("data"), opts).map_err(|e| e.to_string())?;
    let mut written = 0u64;
    let mut n = first_key;
    while written < size {
        let mut batch = rusty_leveldb::WriteBatch::default();
        for _ in 0..256 {
            let len = 64 + usize::try_from(rng.below(400)).unwrap_or(0);
            let value = rng.text(len);
            let key: Vec<u8> = match n % 5 {
                0 => format!("kevent:{n:010}").into_bytes(),
                1 => {
                    let mut k = vec![b'h', 8];
                    k.extend_from_slice(format!("profile{}", n % 997).as_bytes());
                    k.push(b'=');
                    k.extend_from_slice(format!("field{n}").as_bytes());
                    k
                }
                2 => format!("zstat:day:{n:010}").into_bytes(),
                3 => format!("qqueue:{n:010}").into_bytes(),
                _ => {
                    let mut k = vec![1u8];
                    k.extend_from_slice(&n.to_be_bytes());
                    k
                }
            };
            batch.put(&key, value.as_bytes());
            written += value.len() as u64;
            n += 1;
        }
        db.write(batch, false).map_err(|e| e.to_string())?;
    }
    db.close().map_err(|e| e.to_string())?;
    let mut meta = rusty_leveldb::DB::open(store.join("meta"), rusty_leveldb::Options::default())
        .map_err(|e| e.to_string())?;
    meta.put(b"replication.last_seq", n.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    meta.close().map_err(|e| e.to_string())?;
    Ok(n - first_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// The same seed gives the same tree; the size is close to what was asked.
    fn deterministic_and_sized() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ga = generate_control_module(&a.path().join("t"), 4 << 20, 7).unwrap();
        let gb = generate_control_module(&b.path().join("t"), 4 << 20, 7).unwrap();
        assert_eq!(ga.bytes, gb.bytes);
        assert!(ga.bytes > 3 << 20 && ga.bytes < 6 << 20, "{}", ga.bytes);
        assert!(ga.excluded_bytes > 0);
        assert_eq!(ga.files, gb.files);
    }
}
