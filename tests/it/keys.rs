//! `akbackup key`: several passwords on one repository, removal, and a password change that
//! leaves the old password useless and the data readable with the new one.

use std::fs;

use crate::support::{Sandbox, chmod};

/// Writes a 0600 file holding `password`, returns its path as a string.
fn password_file(sb: &Sandbox, name: &str, password: &str) -> String {
    let path = sb.root().join(name);
    fs::write(&path, format!("{password}\n")).expect("write password file");
    chmod(&path, 0o600);
    path.display().to_string()
}

fn keys(sb: &Sandbox, password: Option<&str>) -> Vec<(String, bool)> {
    let mut cmd = sb.cmd(&["--json", "key", "list"]);
    if let Some(p) = password {
        cmd.env("AKBACKUP_PASSWORD", p);
    }
    let out = cmd.output().expect("spawn akbackup");
    assert!(
        out.status.success(),
        "key list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|k| {
            (
                k["id"].as_str().expect("id").to_string(),
                k["in_use"].as_bool().expect("in_use"),
            )
        })
        .collect()
}

#[test]
fn add_remove_and_change_password() {
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.txt"), b"data under two keys\n").expect("write source");
    sb.init();
    sb.backup(&[]);
    let first = keys(&sb, None);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].1, "the only key is the one in use");

    // A second password opens the same repository.
    let second = password_file(&sb, "second.pw", "second secret");
    sb.ok(&["key", "add", "--new-password-file", &second]);
    let both = keys(&sb, Some("second secret"));
    assert_eq!(both.len(), 2, "{both:?}");
    let in_use: Vec<_> = both.iter().filter(|k| k.1).collect();
    assert_eq!(in_use.len(), 1);
    assert_ne!(
        in_use[0].0, first[0].0,
        "the second password opens the new key"
    );

    // The key in use cannot be removed; another one can.
    let out = sb
        .cmd(&["key", "remove", &first[0].0[..8]])
        .output()
        .expect("spawn");
    assert_eq!(
        out.status.code(),
        Some(2),
        "removing the key in use must fail"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is the one this password opens"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rm = sb.cmd(&["key", "remove", &first[0].0[..8]]);
    rm.env("AKBACKUP_PASSWORD", "second secret");
    assert!(rm.output().expect("spawn").status.success());
    let out = sb.cmd(&["snapshots"]).output().expect("spawn");
    assert_eq!(
        out.status.code(),
        Some(2),
        "the removed key's password must no longer open the repository"
    );

    // passwd: the new password works, the old one not, the data is intact.
    let third = password_file(&sb, "third.pw", "third secret");
    let mut passwd = sb.cmd(&["key", "passwd", "--new-password-file", &third]);
    passwd.env("AKBACKUP_PASSWORD", "second secret");
    let out = passwd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = keys(&sb, Some("third secret"));
    assert_eq!(after.len(), 1, "{after:?}");
    let mut old = sb.cmd(&["snapshots"]);
    old.env("AKBACKUP_PASSWORD", "second secret");
    assert_eq!(old.output().expect("spawn").status.code(), Some(2));
    let mut verify = sb.cmd(&["verify", "--read-data"]);
    verify.env("AKBACKUP_PASSWORD", "third secret");
    let out = verify.output().expect("spawn");
    assert!(
        out.status.success(),
        "verify with the new password: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
