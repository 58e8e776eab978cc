//! A real OpenSSH server for one test (Debian `openssh-server`, which `scripts/test`
//! installs): `/usr/sbin/sshd` on a free loopback port, with its own host key, a client key in
//! its `authorized_keys`, a known_hosts file holding its key, and `internal-sftp`. Killed on
//! drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running sshd.
pub struct Sshd {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new ed25519 key pair at `path` (and `path.pub`), mode 0600.
pub fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "akbackup-test", "-f"])
        .arg(path));
}

impl Sshd {
    /// Starts sshd with its files under `dir` (created): `host_key`, `client_key` (authorized),
    /// `known_hosts` (the host key for `[127.0.0.1]:PORT`).
    pub fn start(dir: &Path) -> Self {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd is missing: run scripts/test, which installs openssh-server"
        );
        std::fs::create_dir_all(dir).expect("create sshd dir");
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))
            .expect("authorized_keys");
        let port = super::mongo::free_port();
        let mut server = Self {
            child: None,
            dir: dir.to_path_buf(),
            port,
        };
        server.spawn();
        server.trust_host_key();
        server
    }

    fn spawn(&mut self) {
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
             AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n",
            port = self.port,
            dir = self.dir.display()
        );
        let path = self.dir.join("sshd_config");
        std::fs::write(&path, config).expect("write sshd_config");
        let log = std::fs::File::create(self.dir.join("sshd.log")).expect("sshd log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen within 20 s:\n{}",
                std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes `known_hosts` with the server's current host key.
    pub fn trust_host_key(&self) {
        let key = std::fs::read_to_string(self.dir.join("host_key.pub")).expect("host key");
        let mut f = key.split_whitespace();
        let line = format!(
            "[127.0.0.1]:{} {} {}\n",
            self.port,
            f.next().expect("type"),
            f.next().expect("key")
        );
        std::fs::write(self.known_hosts(), line).expect("write known_hosts");
    }

    /// Restarts the server with a new host key (a reinstalled server, or someone in between).
    pub fn change_host_key(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.dir.join("host_key"));
        let _ = std::fs::remove_file(self.dir.join("host_key.pub"));
        keygen(&self.dir.join("host_key"));
        self.spawn();
    }

    /// `SHA256:...` of the server's host key.
    pub fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .args(["-l", "-f"])
            .arg(self.dir.join("host_key.pub"))
            .output()
            .expect("ssh-keygen -l");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .expect("fingerprint")
            .to_string()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client's private key (authorized).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    /// The known_hosts file with the server's key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// `ssh ... -s sftp` for `restic -o sftp.command=...`, with the same key and known_hosts.
    pub fn sftp_command(&self) -> String {
        format!(
            "ssh -p {} -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile={} \
             -o StrictHostKeyChecking=yes root@127.0.0.1 -s sftp",
            self.port,
            self.client_key().display(),
            self.known_hosts().display()
        )
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
