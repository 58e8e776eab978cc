//! Crafted repositories: snapshots whose trees hold entries no backup writes (`../../x`, an
//! absolute name, a name with an escaped `/`, `.`, `..`, an empty name, a NUL, a symlink
//! followed by an entry under it). Every command that writes a set to disk (`restore
//! --target`, in-place restore, `export`) and `verify --deep` must refuse the set as damaged,
//! name the entry, exit 1 and write nothing outside its destination.
//!
//! The repository is made by the real binary (init, one backup); the test then writes tree
//! blobs of its own into a new pack, an index for it and a snapshot that copies the real
//! set's tags, description and paths but points at the crafted tree, all sealed with the
//! repository's master key in restic's format (pack: encrypted blobs, encrypted header, its
//! length; index and snapshot: encrypted JSON, uncompressed as repository v2 allows).

use std::path::{Path, PathBuf};

use aes256ctr_poly1305aes::{Aes256CtrPoly1305Aes, aead::Aead};
use serde_json::{Value, json};
use sha2::Digest as _;

use super::{Campaign, command, one_line, wait_or_kill};
use crate::support::{self, Sandbox};

/// Writes files of a restic repository, sealed with its master key.
struct Crafter {
    repo: PathBuf,
    key: Aes256CtrPoly1305Aes,
    nonces: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Crafter {
    fn new(repo: &Path) -> Self {
        Self {
            repo: repo.to_path_buf(),
            key: super::master_key(repo),
            nonces: u64::from(std::process::id()) << 20,
        }
    }

    /// `nonce || AES-256-CTR(plain) || Poly1305-AES MAC`, restic's sealed form.
    fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        self.nonces += 1;
        let nonce = support::random_bytes(self.nonces, 16);
        let sealed = self
            .key
            .encrypt(
                aes256ctr_poly1305aes::aead::Nonce::<Aes256CtrPoly1305Aes>::from_slice(&nonce),
                plain,
            )
            .expect("encrypt");
        let mut out = nonce;
        out.extend(sealed);
        out
    }

    /// The plaintext of a sealed repository file (decompressed when it is stored compressed).
    fn open(&self, data: &[u8]) -> Vec<u8> {
        let plain = self
            .key
            .decrypt(
                aes256ctr_poly1305aes::aead::Nonce::<Aes256CtrPoly1305Aes>::from_slice(&data[..16]),
                &data[16..],
            )
            .expect("the master key opens the file");
        match plain.first() {
            Some(2) => zstd::decode_all(&plain[1..]).expect("zstd"),
            _ => plain,
        }
    }

    /// Stores a file of `dir` (index, snapshots) under the id restic gives it: the SHA-256 of
    /// its stored bytes.
    fn store(&mut self, dir: &str, plain: &[u8]) -> String {
        let sealed = self.seal(plain);
        let id = hex(&sha2::Sha256::digest(&sealed));
        std::fs::write(self.repo.join(dir).join(&id), &sealed).expect("write repository file");
        id
    }

    /// Stores `trees` (restic tree JSON) as uncompressed tree blobs of one new pack, and an
    /// index naming them; returns each tree's id.
    fn store_trees(&mut self, trees: &[Vec<u8>]) -> Vec<String> {
        let mut pack = Vec::new();
        let mut header = Vec::new();
        let mut blobs = Vec::new();
        let mut ids = Vec::new();
        for plain in trees {
            let id = sha2::Sha256::digest(plain);
            let sealed = self.seal(plain);
            header.push(1u8); // tree, uncompressed
            header.extend(u32::try_from(sealed.len()).expect("u32").to_le_bytes());
            header.extend(id.as_slice());
            blobs.push(json!({"id": hex(&id), "type": "tree", "offset": pack.len(), "length": sealed.len()}));
            ids.push(hex(&id));
            pack.extend(sealed);
        }
        let header = self.seal(&header);
        pack.extend(&header);
        pack.extend(u32::try_from(header.len()).expect("u32").to_le_bytes());
        let pack_id = hex(&sha2::Sha256::digest(&pack));
        let dir = self.repo.join("data").join(&pack_id[..2]);
        std::fs::create_dir_all(&dir).expect("mkdir data");
        std::fs::write(dir.join(&pack_id), &pack).expect("write pack");
        let index = json!({"packs": [{"id": pack_id, "blobs": blobs}]});
        self.store("index", index.to_string().as_bytes());
        ids
    }

    /// The one snapshot the real backup left, as JSON.
    fn real_snapshot(&self) -> Value {
        let entry = std::fs::read_dir(self.repo.join("snapshots"))
            .expect("read snapshots")
            .next()
            .expect("a snapshot")
            .expect("snapshot entry");
        let plain = self.open(&std::fs::read(entry.path()).expect("read snapshot"));
        serde_json::from_slice(&plain).expect("snapshot json")
    }

    /// A set like `real` whose component directory (`real`'s first path) holds `nodes`
    /// (restic tree nodes; a `"subtree"` given as a node list becomes a tree of its own).
    /// Returns the new set's id.
    fn crafted_set(&mut self, real: &Value, nodes: Vec<Value>, n: u64) -> String {
        let mut trees = Vec::new();
        let component = PathBuf::from(real["paths"][0].as_str().expect("a path"));
        // Tree blobs are content-addressed: the innermost go first, each parent names them.
        let inner = self.tree_of(nodes, &mut trees);
        let mut tree = inner;
        for name in component
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .filter(|c| *c != "/")
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            tree = self.tree_of(vec![dir(name, Some(json!(tree)))], &mut trees);
        }
        let ids = self.store_trees(&trees);
        assert_eq!(ids.last(), Some(&tree), "the root tree is stored last");
        let mut snap = real.clone();
        snap["tree"] = json!(tree);
        snap["time"] = json!(format!("2026-01-01T00:00:{n:02}Z"));
        if let Some(o) = snap.as_object_mut() {
            o.remove("original");
            o.remove("summary");
        }
        self.store("snapshots", snap.to_string().as_bytes())
    }

    /// Serialises a tree (turning node-list subtrees into trees of their own first) into
    /// `trees` and returns its id.
    fn tree_of(&mut self, nodes: Vec<Value>, trees: &mut Vec<Vec<u8>>) -> String {
        let nodes: Vec<Value> = nodes
            .into_iter()
            .map(|mut node| {
                if let Some(Value::Array(children)) = node.get("subtree").cloned() {
                    node["subtree"] = json!(self.tree_of(children, trees));
                }
                node
            })
            .collect();
        let bytes = json!({ "nodes": nodes }).to_string().into_bytes();
        let id = hex(&sha2::Sha256::digest(&bytes));
        trees.push(bytes);
        id
    }
}

const TIME: &str = "2024-01-02T03:04:05Z";

fn file(name: &str) -> Value {
    json!({"name": name, "type": "file", "mode": 0o644, "mtime": TIME, "atime": TIME,
           "ctime": TIME, "uid": 0, "gid": 0, "size": 0, "links": 1, "content": []})
}

fn dir(name: &str, subtree: Option<Value>) -> Value {
    let mut v = json!({"name": name, "type": "dir", "mode": 0x8000_0000u32 | 0o755,
                       "mtime": TIME, "atime": TIME, "ctime": TIME, "uid": 0, "gid": 0});
    if let Some(sub) = subtree {
        v["subtree"] = sub;
    }
    v
}

fn symlink(name: &str, target: &Path) -> Value {
    json!({"name": name, "type": "symlink", "linktarget": target.to_str().expect("utf-8"),
           "mode": 0x0800_0000u32 | 0o777, "mtime": TIME, "atime": TIME, "ctime": TIME,
           "uid": 0, "gid": 0})
}

/// Paths under `root` (not following symlinks) whose names start with `pwned`: every
/// crafted entry is named so, and the refused commands may write none of them anywhere.
fn pwned_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for entry in rd.filter_map(Result::ok) {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with("pwned") {
            out.push(path.clone());
        }
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            out.extend(pwned_under(&path));
        }
    }
    out
}

/// A repository holding sets with crafted tree entries: `restore --target`, in-place restore,
/// `export` and `verify --deep` each refuse every one of them as damaged (exit 1), name the
/// entry, and write nothing outside their destination (no `pwned*` file anywhere in the
/// sandbox, the symlink's target directory stays empty, the live directory is untouched).
#[test]
fn crafted_tree_entries_are_refused_and_nothing_is_written_outside() {
    let mut c = Campaign::new("crafted");
    let sb = Sandbox::new();
    support::write_file(&sb.source().join("conf/main.conf"), b"listen = 80\n");
    super::init(&sb, None);
    sb.backup(&[]);
    let outside = sb.root().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir outside");
    let tmp = sb.root().join("tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir tmp");
    let live_copy = sb.root().join("live-copy");
    support::copy_tree(&sb.source(), &live_copy);

    let mut crafter = Crafter::new(&sb.repo());
    let real = crafter.real_snapshot();
    let abs = outside.join("pwned-abs");
    // (what, nodes of the component directory, text the refusal must contain)
    let cases: Vec<(&str, Vec<Value>, String)> = vec![
        (
            "name ../../x",
            vec![file("../../pwned-dotdot")],
            "\"../../pwned-dotdot\"".into(),
        ),
        (
            "absolute name",
            vec![file(abs.to_str().expect("utf-8"))],
            format!("{:?}", abs.as_os_str()),
        ),
        (
            "escaped '/' in a name",
            vec![file("..\\x2f..\\x2fpwned-escaped")],
            "\"../../pwned-escaped\"".into(),
        ),
        (
            "name .",
            vec![dir(".", Some(json!([file("pwned-dot")])))],
            "\".\"".into(),
        ),
        (
            "name ..",
            vec![dir("..", Some(json!([file("pwned-dotdot-dir")])))],
            "\"..\"".into(),
        ),
        ("empty name", vec![file("")], "\"\" in".into()),
        (
            "NUL in a name",
            vec![file("pwned\u{0}nul")],
            "pwned\\0nul".into(),
        ),
        (
            "escaped NUL in a name",
            vec![file("pwned\\x00esc")],
            "pwned\\0esc".into(),
        ),
        (
            "symlink lnk -> outside, then lnk\\x2ffile",
            vec![symlink("lnk", &outside), file("lnk\\x2fpwned-via-link")],
            "\"lnk/pwned-via-link\"".into(),
        ),
        (
            "symlink lnk -> outside, then dir lnk holding a file",
            vec![
                symlink("lnk", &outside),
                dir("lnk", Some(json!([file("pwned-under-link")]))),
            ],
            "\"lnk\"".into(),
        ),
        (
            "deeper: sub/../../../x",
            vec![dir(
                "sub",
                Some(json!([file("..\\x2f..\\x2f..\\x2fpwned-deep")])),
            )],
            "\"../../../pwned-deep\"".into(),
        ),
    ];
    let sets: Vec<(String, &str, String)> = cases
        .into_iter()
        .enumerate()
        .map(|(i, (what, nodes, expect))| {
            (crafter.crafted_set(&real, nodes, i as u64), what, expect)
        })
        .collect();

    let run = |args: &[&str]| {
        let mut cmd = command(&sb, args);
        cmd.env("TMPDIR", &tmp);
        wait_or_kill(
            cmd.spawn().expect("spawn akbackup"),
            std::time::Duration::from_secs(240),
        )
    };
    let check = |out: &std::process::Output, expect: &str| -> Result<String, String> {
        let said = one_line(support::all_output(out).as_bytes());
        let escaped = pwned_under(sb.root());
        let outside_now: Vec<_> = std::fs::read_dir(&outside)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        if !escaped.is_empty() || !outside_now.is_empty() {
            Err(format!(
                "written outside the destination: {escaped:?} {outside_now:?} (exit {:?}: {said})",
                out.status.code()
            ))
        } else if out.status.code() != Some(1) {
            Err(format!("exit {:?}, want 1: {said}", out.status.code()))
        } else if !said.contains("damaged") || !said.contains(expect) {
            Err(format!(
                "the refusal does not name the entry {expect} as damaged: {said}"
            ))
        } else {
            Ok(said)
        }
    };
    for (i, (id, what, expect)) in sets.iter().enumerate() {
        let target = sb.root().join(format!("t{i}/target"));
        let out = run(&["restore", id, "--target", target.to_str().expect("utf-8")]);
        c.record(&format!("restore --target, {what}"), check(&out, expect));

        let out = run(&["restore", id, "--yes", "--no-restart"]);
        let mut outcome = check(&out, expect);
        if outcome.is_ok() {
            outcome = super::same_tree(&live_copy, &sb.source())
                .map_err(|e| format!("the live directory changed: {e}"))
                .and(outcome);
        }
        c.record(&format!("in-place restore, {what}"), outcome);

        let to = sb.root().join(format!("e{i}/export"));
        let out = run(&["export", id, "--to", to.to_str().expect("utf-8")]);
        c.record(&format!("export, {what}"), check(&out, expect));

        let out = run(&["verify", id, "--deep"]);
        c.record(&format!("verify --deep, {what}"), check(&out, expect));
    }
    // The real set is untouched by all this: it still restores.
    let target = sb.root().join("real-target");
    let out = run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    c.record(
        "the real set still restores",
        if out.status.success() {
            super::same_tree(&live_copy, &target.join("files/control"))
                .map(|()| "restored, same tree".to_string())
        } else {
            Err(one_line(support::all_output(&out).as_bytes()))
        },
    );
    c.finish();
}
