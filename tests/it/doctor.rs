//! `doctor`: the checklist before a restore, against a real set.

use std::fs;

use crate::support::Sandbox;

fn doctor(sb: &Sandbox) -> (Option<i32>, String) {
    let out = sb.cmd(&["doctor"]).output().expect("spawn akbackup");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn ready_then_missing_users_and_target() {
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.conf"), b"x").expect("source");
    sb.init();
    sb.backup(&[]);
    let (code, text) = doctor(&sb);
    assert_eq!(code, Some(0), "{text}");
    for line in [
        "ok   repository",
        "ok   files.control: space",
        "ok   files.control: owners",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains("ready to restore"), "{text}");

    // A file owned by an id with no user here (as after a fresh install without the service
    // users) makes the owners check fail, naming the id.
    let owned = sb.source().join("owned-by-4242");
    fs::write(&owned, b"y").expect("write");
    nix::unistd::chown(
        &owned,
        Some(nix::unistd::Uid::from_raw(4242)),
        Some(nix::unistd::Gid::from_raw(4243)),
    )
    .expect("chown (the suite runs as root)");
    sb.backup(&[]);
    let (code, text) = doctor(&sb);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("FAIL files.control: owners")
            && text.contains("4242")
            && text.contains("4243"),
        "{text}"
    );
    assert!(text.contains("NOT READY"), "{text}");

    // The restore target's parent does not exist on this server.
    let text = sb.default_config().replace(
        &format!("path = \"{}\"", sb.source().display()),
        "path = \"/nonexistent-akbackup-parent/control\"",
    );
    sb.write_config(&text);
    let (code, text) = doctor(&sb);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("FAIL files.control: target")
            && text.contains("/nonexistent-akbackup-parent"),
        "{text}"
    );
}
