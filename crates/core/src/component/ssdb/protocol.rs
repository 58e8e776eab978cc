//! The SSDB network protocol, just enough for health checks (`auth`, `ping`, `dbsize`).
//!
//! A request is a list of blocks `<len>\n<bytes>\n` ended by an empty line; a reply has the
//! same shape, its first block the status (`ok`, `not_found`, `error`, ...).

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    time::Duration,
};

/// How long one health check waits for the server.
pub const TIMEOUT: Duration = Duration::from_secs(5);
pub use crate::component::staged::START_TIMEOUT;

fn request(stream: &mut TcpStream, args: &[&str]) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for a in args {
        out.extend_from_slice(format!("{}\n{a}\n", a.len()).as_bytes());
    }
    out.push(b'\n');
    stream.write_all(&out)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut blocks = Vec::new();
    loop {
        let mut len = String::new();
        if reader.read_line(&mut len)? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        let len = len.trim_end_matches(['\r', '\n']);
        if len.is_empty() {
            return Ok(blocks);
        }
        let n: usize = len
            .parse()
            .map_err(|_| std::io::Error::other(format!("bad reply length {len:?}")))?;
        let mut buf = vec![0u8; n + 1];
        std::io::Read::read_exact(&mut reader, &mut buf)?;
        buf.pop();
        blocks.push(String::from_utf8_lossy(&buf).into_owned());
    }
}

/// Why an SSDB server did not pass a health check. Each variant prints its cause: the line
/// goes into restore reports, where no chain walker reads.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The host name does not resolve.
    #[error("cannot resolve {addr}: {error}")]
    Resolve {
        /// `host:port`.
        addr: String,
        /// Cause (printed in the message).
        error: std::io::Error,
    },
    /// The host name resolves to no address.
    #[error("cannot resolve {addr}")]
    NoAddress {
        /// `host:port`.
        addr: String,
    },
    /// Nothing accepts connections there.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Cause (printed in the message).
        error: std::io::Error,
    },
    /// The connection's timeouts cannot be set.
    #[error("{error}")]
    Socket {
        /// Cause (printed in the message).
        error: std::io::Error,
    },
    /// A request or its reply failed on the wire.
    #[error("{addr} {command}: {error}")]
    Request {
        /// `host:port`.
        addr: String,
        /// `auth`, `ping`, `dbsize`.
        command: &'static str,
        /// Cause (printed in the message).
        error: std::io::Error,
    },
    /// The server refused the password.
    #[error("{addr} auth answered {status:?}")]
    AuthRefused {
        /// `host:port`.
        addr: String,
        /// The reply's status block (`nothing` for an empty reply).
        status: String,
    },
    /// The server answered a command with a status other than `ok`.
    #[error("{addr} {command} answered {status:?}")]
    Status {
        /// `host:port`.
        addr: String,
        /// `ping`, `dbsize`.
        command: &'static str,
        /// The reply's status block (`nothing` for an empty reply).
        status: String,
    },
}

/// Connects, authenticates when `auth` is given, and runs `ping` and `dbsize`.
/// Returns the dbsize reply.
///
/// # Errors
/// [`ProtocolError`]: the address, the connection, a refused password, a non-ok status.
pub fn health_check(host: &str, port: u16, auth: Option<&str>) -> Result<String, ProtocolError> {
    let addr = format!("{host}:{port}");
    let sock = std::net::ToSocketAddrs::to_socket_addrs(&addr)
        .map_err(|error| ProtocolError::Resolve {
            addr: addr.clone(),
            error,
        })?
        .next()
        .ok_or_else(|| ProtocolError::NoAddress { addr: addr.clone() })?;
    let mut s =
        TcpStream::connect_timeout(&sock, TIMEOUT).map_err(|error| ProtocolError::Connect {
            addr: addr.clone(),
            error,
        })?;
    s.set_read_timeout(Some(TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(TIMEOUT)))
        .map_err(|error| ProtocolError::Socket { error })?;
    // The command's arguments (the password) never reach an error.
    let mut call = |command: &'static str, arg: Option<&str>| {
        let args: Vec<&str> = std::iter::once(command).chain(arg).collect();
        let reply = request(&mut s, &args).map_err(|error| ProtocolError::Request {
            addr: addr.clone(),
            command,
            error,
        })?;
        match reply.first().map(String::as_str) {
            Some("ok") => Ok(reply),
            other => {
                let status = other.unwrap_or("nothing").to_string();
                let addr = addr.clone();
                Err(if command == "auth" {
                    ProtocolError::AuthRefused { addr, status }
                } else {
                    ProtocolError::Status {
                        addr,
                        command,
                        status,
                    }
                })
            }
        }
    };
    if let Some(pw) = auth {
        call("auth", Some(pw))?;
    }
    call("ping", None)?;
    let size = call("dbsize", None)?;
    Ok(size.get(1).cloned().unwrap_or_default())
}

/// `ip` and `port` from the `server:` section of an `ssdb.conf` (TAB-indented).
#[must_use]
pub fn endpoint_from_conf(text: &str) -> Option<(String, u16)> {
    let mut in_server = false;
    let (mut ip, mut port) = (None, None);
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(['\t', ' ']) {
            in_server = line.trim_end().trim_end_matches(':') == "server";
            continue;
        }
        if in_server {
            if let Some(v) = line.trim().strip_prefix("ip:") {
                ip = Some(v.trim().to_string());
            } else if let Some(v) = line.trim().strip_prefix("port:") {
                port = v.trim().parse().ok();
            }
        }
    }
    Some((ip.unwrap_or_else(|| "127.0.0.1".to_string()), port?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// ssdb.conf's server section gives the endpoint.
    fn reads_server_section() {
        let conf = "# ssdb-server config\nwork_dir = ./var\nserver:\n\tip: 127.0.0.1\n\tport: 8888\nleveldb:\n\tcache_size: 500\n";
        assert_eq!(
            endpoint_from_conf(conf),
            Some(("127.0.0.1".to_string(), 8888))
        );
        assert_eq!(endpoint_from_conf("server:\n\tip: 1.2.3.4\n"), None);
    }

    #[test]
    /// A tiny SSDB-speaking peer answers ping and dbsize; a refused port is an error.
    fn ping_against_a_peer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut r = BufReader::new(c.try_clone().unwrap());
            for _ in 0..2 {
                let mut cmd = Vec::new();
                loop {
                    let mut l = String::new();
                    r.read_line(&mut l).unwrap();
                    if l.trim().is_empty() {
                        break;
                    }
                    let mut v = String::new();
                    r.read_line(&mut v).unwrap();
                    cmd.push(v.trim().to_string());
                }
                let reply = if cmd[0] == "ping" {
                    "2\nok\n\n".to_string()
                } else {
                    "2\nok\n4\n1234\n\n".to_string()
                };
                c.write_all(reply.as_bytes()).unwrap();
            }
        });
        assert_eq!(health_check("127.0.0.1", port, None).unwrap(), "1234");
        server.join().unwrap();
        let refused = health_check("127.0.0.1", port, None).unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
            "{refused}"
        );
    }
}
