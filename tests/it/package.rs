//! The Debian package: `scripts/package` builds a .deb around the binary under test, and the
//! .deb holds exactly the binary, one man page per command, the completions where Debian's
//! shells look, the example config and the docs, with the right metadata; the binary and
//! config taken out of it work.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::support::{assert_exit, find_on_path};

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert_exit(&out, 0, what);
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one .deb in `dir`.
fn the_deb(dir: &Path) -> PathBuf {
    let debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("output dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "expected one .deb: {debs:?}");
    debs[0].clone()
}

#[test]
/// The .deb built from the dev-profile binary lists exactly the expected files with the
/// expected modes and control fields, installs no conffile, and what it holds runs.
fn deb_holds_exactly_what_it_should() {
    for tool in ["cargo-deb", "dpkg-deb"] {
        assert!(
            find_on_path(tool).is_some(),
            "{tool} is not installed: scripts/test installs it"
        );
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let out_dir = tmp.path().join("out");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(
        Command::new(root.join("scripts/package"))
            .args(["--binary", env!("CARGO_BIN_EXE_akbackup"), "--fast"])
            .arg("--out")
            .arg(&out_dir)
            .arg("--stage")
            .arg(tmp.path().join("stage")),
        "scripts/package",
    );
    let deb = the_deb(&out_dir);

    // One page per visible command, generated the same way.
    let pages_dir = tmp.path().join("pages");
    run(
        Command::new(env!("CARGO_BIN_EXE_akbackup"))
            .arg("man")
            .arg(&pages_dir),
        "akbackup man",
    );
    let pages: BTreeSet<String> = std::fs::read_dir(&pages_dir)
        .expect("pages")
        .map(|e| e.expect("page").file_name().to_string_lossy().into_owned())
        .collect();
    for page in [
        "akbackup.1",
        "akbackup-restore.1",
        "akbackup-backup.1",
        "akbackup-schedule-install.1",
    ] {
        assert!(pages.contains(page), "{page} missing from {pages:?}");
    }
    assert!(
        !pages
            .iter()
            .any(|p| p.contains("-man") || p.contains("-help")),
        "hidden or help pages generated: {pages:?}"
    );

    let mut expected: BTreeSet<String> = [
        "usr/bin/akbackup",
        "usr/share/bash-completion/completions/akbackup",
        "usr/share/zsh/vendor-completions/_akbackup",
        "usr/share/fish/vendor_completions.d/akbackup.fish",
        "usr/share/doc/akbackup/examples/akbackup.toml",
        "usr/share/doc/akbackup/README.md",
        "usr/share/doc/akbackup/CHANGELOG.md",
        "usr/share/doc/akbackup/copyright",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    expected.extend(pages.iter().map(|p| format!("usr/share/man/man1/{p}.gz")));

    // `dpkg-deb -c`: mode owner size date time path; files only.
    let listing = text(&run(
        Command::new("dpkg-deb").arg("-c").arg(&deb),
        "dpkg-deb -c",
    ));
    let mut files = BTreeSet::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, path) = (fields[0], fields[1], fields[5]);
        assert!(
            owner == "0/0" || owner == "root/root",
            "owned by root: {line}"
        );
        if mode.starts_with('d') {
            continue;
        }
        let path = path.trim_start_matches("./").to_string();
        let want = if path == "usr/bin/akbackup" {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(mode, want, "{line}");
        files.insert(path);
    }
    assert_eq!(files, expected, "package contents:\n{listing}");
    assert!(
        !listing.contains(" ./etc/"),
        "nothing under /etc:\n{listing}"
    );

    // `dpkg-deb -I`: the control fields.
    let field = |name: &str| {
        let out = run(
            Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name),
            &format!("dpkg-deb -f {name}"),
        );
        text(&out).trim().to_string()
    };
    assert_eq!(field("Package"), "akbackup");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    let arch = text(&run(
        Command::new("dpkg").arg("--print-architecture"),
        "dpkg --print-architecture",
    ));
    assert_eq!(field("Architecture"), arch.trim());
    let depends = field("Depends");
    assert!(depends.contains("libc6"), "Depends: {depends}");
    assert_eq!(field("Section"), "admin");
    assert!(field("Description").starts_with("Consistent, incremental"));
    let info = text(&run(
        Command::new("dpkg-deb").arg("-I").arg(&deb),
        "dpkg-deb -I",
    ));
    assert!(
        !info.contains("conffiles"),
        "no conffiles expected:\n{info}"
    );

    // What the package holds works: the binary runs, the example config loads, the pages
    // are gzipped roff, the completions are for akbackup.
    let x = tmp.path().join("x");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x),
        "dpkg-deb -x",
    );
    let bin = x.join("usr/bin/akbackup");
    let version = text(&run(
        Command::new(&bin).arg("--version"),
        "akbackup --version",
    ));
    assert_eq!(
        version.trim(),
        format!("akbackup {}", env!("CARGO_PKG_VERSION"))
    );
    let example = x.join("usr/share/doc/akbackup/examples/akbackup.toml");
    let shown = text(&run(
        Command::new(&bin)
            .arg("--config")
            .arg(&example)
            .args(["config", "show"]),
        "config show of the example config",
    ));
    for section in [
        "[files.control]",
        "[mongodb.account]",
        "[ssdb.stat]",
        "[retention]",
    ] {
        assert!(shown.contains(section), "{section} missing:\n{shown}");
    }
    let page = text(&run(
        Command::new("gzip")
            .arg("-dc")
            .arg(x.join("usr/share/man/man1/akbackup-restore.1.gz")),
        "gzip -dc akbackup-restore.1.gz",
    ));
    assert!(page.contains(".TH akbackup-restore"), "{page}");
    let bash = std::fs::read_to_string(x.join("usr/share/bash-completion/completions/akbackup"))
        .expect("bash completion");
    assert!(
        bash.contains("complete") && bash.contains("akbackup"),
        "{bash}"
    );
}
