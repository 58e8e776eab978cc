//! The error rule of `crates/core/src/error.rs`, checked on the sources: no error variant may
//! both print its cause in its message and return it from `source()`, or the binary's error
//! line would repeat it.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The variants (`file: Name`) whose `#[error("...")]` prints a field that is also marked
/// `#[source]` or `#[from]`.
fn offenders(text: &str, file: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[error(") {
        rest = &rest[at + "#[error(".len()..];
        let Some(end) = rest.find(")]") else { break };
        let message = &rest[..end];
        if message.trim_start().starts_with("transparent") {
            continue;
        }
        // The variant: its name, then its fields up to the closing brace or parenthesis.
        let after = &rest[end + 2..];
        let body_end = [after.find("\n    },"), after.find("),\n").map(|i| i + 1)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(after.len());
        let body = &after[..body_end];
        let name = body
            .split_whitespace()
            .find(|w| !w.starts_with("///") && w.chars().next().is_some_and(char::is_uppercase))
            .and_then(|w| w.split(['(', '{']).next())
            .unwrap_or("?");
        let marked: Vec<&str> = body
            .lines()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0].contains("#[source]") || w[0].contains("#[from]"))
            .filter_map(|w| w[1].trim().split(':').next())
            .collect();
        let inline_from = body.contains("(#[from]") || body.contains("(#[source]");
        let prints = |field: &str| message.contains(&format!("{{{field}}}"));
        // thiserror makes a field named `source` the source even without an attribute.
        let named_source = body.lines().any(|l| l.trim_start().starts_with("source:"));
        if marked.iter().any(|f| prints(f))
            || (inline_from && prints("0"))
            || (named_source && prints("source"))
        {
            out.push(format!("{file}: {name}"));
        }
    }
    out
}

/// No variant prints its cause and returns it from `source()` too.
#[test]
fn no_error_prints_its_source_twice() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("../../src"), &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut bad = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        bad.extend(offenders(&text, &f.display().to_string()));
    }
    assert!(
        bad.is_empty(),
        "variants printing their source twice: {bad:#?}"
    );
}

/// The check finds both forms of the mistake, and passes the two allowed ones.
#[test]
fn the_check_catches_both_forms() {
    let named = "#[error(\"cannot read {path}: {source}\")]\n    Read {\n        path: PathBuf,\n        #[source]\n        source: std::io::Error,\n    },\n";
    assert_eq!(offenders(named, "x"), vec!["x: Read"]);
    let tuple = "#[error(\"lock: {0}\")]\n    Lock(#[from] LockError),\n";
    assert_eq!(offenders(tuple, "x"), vec!["x: Lock"]);
    let printed = "#[error(\"cannot read {path}: {error}\")]\n    Read {\n        path: PathBuf,\n        error: std::io::Error,\n    },\n";
    assert!(offenders(printed, "x").is_empty());
    let chained = "#[error(\"backup failed\")]\n    Backup(#[source] BackupError),\n";
    assert!(offenders(chained, "x").is_empty());
    let implicit = "#[error(\"cannot run {command}: {source}\")]\n    Spawn {\n        command: String,\n        source: std::io::Error,\n    },\n";
    assert_eq!(offenders(implicit, "x"), vec!["x: Spawn"]);
    let transparent = "#[error(transparent)]\n    Repo(#[from] RepoError),\n";
    assert!(offenders(transparent, "x").is_empty());
}
