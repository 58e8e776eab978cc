//! `[monitoring] webhook`: the `--json` summary POSTed after a backup (to a recording
//! Python `http.server` on loopback), on failure only by default; an unreachable receiver is
//! a warning, never a failed backup; the URL's token is never printed.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use serde_json::Value;

use crate::support::{Sandbox, all_output, assert_exit};

/// Records each POST body to `<dir>/post-<n>.json` and answers 200; prints its port.
const RECEIVER: &str = r#"
import http.server, os, sys
out = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        n = len(os.listdir(out))
        with open(os.path.join(out, "post-%d.json" % n), "wb") as f:
            f.write(body)
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// The receiver process; killed on drop.
struct Receiver {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Receiver {
    fn start(dir: &Path) -> Self {
        fs::create_dir_all(dir).expect("posts dir");
        let mut child = Command::new("python3")
            .args(["-c", RECEIVER])
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 http.server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port line");
        let port = line.trim().parse().expect("a port");
        Receiver {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    fn posts(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = fs::read_dir(&self.dir)
            .expect("posts")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&fs::read(p).expect("post")).expect("JSON body"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_webhook(sb: &Sandbox, url: &str, extra: &str) {
    sb.write_config(&format!(
        "{}\n[monitoring]\nwebhook = \"{url}\"\n{extra}",
        sb.default_config()
    ));
}

#[test]
/// `webhook-on = "always"` POSTs the summary `--json` prints (plus `command` and `exit_code`)
/// after backup and verify; the default (failure) stays quiet after a good run and POSTs `status: failed` and the error
/// after a failed one. The token in the URL appears in no output.
fn webhook_posts_the_summary() {
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.conf"), b"x").expect("source");
    let rx = Receiver::start(&sb.root().join("posts"));
    let url = format!("http://127.0.0.1:{}/hooks/s3cr3t?token=t0k", rx.port);
    with_webhook(&sb, &url, "webhook-on = \"always\"\n");
    sb.init();
    let summary = sb.backup(&[]);
    let posts = rx.posts();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    let mut expected = summary.clone();
    expected["command"] = "backup".into();
    expected["exit_code"] = 0.into();
    assert_eq!(posts[0], expected);
    assert_eq!(posts[0]["status"], "complete");

    // verify reports the same way.
    sb.ok(&["verify"]);
    let posts = rx.posts();
    assert_eq!(posts.len(), 2, "{posts:#?}");
    assert_eq!(posts[1]["command"], "verify", "{:#}", posts[1]);
    assert_eq!(posts[1]["ok"], true, "{:#}", posts[1]);

    with_webhook(&sb, &url, "");
    sb.backup(&[]);
    let n = rx.posts().len();
    assert_eq!(n, 2, "a good run with webhook-on = failure posted");

    fs::remove_dir_all(sb.source()).expect("remove source");
    let out = sb.cmd(&["backup"]).output().expect("spawn");
    assert_exit(&out, 2, "backup of a missing source");
    let posts = rx.posts();
    assert_eq!(posts.len(), 3, "{posts:#?}");
    assert_eq!(posts[2]["status"], "failed", "{:#}", posts[2]);
    assert_eq!(posts[2]["exit_code"], 2, "{:#}", posts[2]);
    assert!(posts[2]["error"].as_str().is_some_and(|e| !e.is_empty()));
    let text = all_output(&out);
    assert!(!text.contains("s3cr3t") && !text.contains("t0k"), "{text}");

    let shown = all_output(&sb.ok(&["config", "show"]));
    assert!(
        !shown.contains("s3cr3t") && !shown.contains("t0k"),
        "{shown}"
    );
}

#[test]
/// A webhook nobody listens on is one warning naming the redacted URL; the backup still
/// exits 0 and its set is recorded.
fn unreachable_webhook_is_a_warning() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let sb = Sandbox::new();
    fs::write(sb.source().join("a.conf"), b"x").expect("source");
    with_webhook(
        &sb,
        &format!("http://user:pw@127.0.0.1:{port}/hook?token=t0k"),
        "webhook-on = \"always\"\nwebhook-timeout = 5\n",
    );
    sb.init();
    let out = sb.cmd(&["backup"]).output().expect("spawn");
    assert_exit(&out, 0, "backup with a dead webhook");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.contains("webhook"))
        .unwrap_or_else(|| panic!("no webhook warning: {stderr}"));
    assert!(
        warning.starts_with("akbackup: warning: webhook ")
            && warning.contains(&format!("http://127.0.0.1:{port}/...")),
        "{warning}"
    );
    let text = all_output(&out);
    assert!(
        !text.contains("t0k") && !text.contains(":pw@") && !text.contains("/hook"),
        "{text}"
    );
    assert_eq!(sb.sets().len(), 1);
}
