//! HAProxy's Runtime API: the stats socket, over a Unix socket or TCP.
//!
//! dbfleet uses it to move a cluster's writer in HAProxy at once, when a failover or a
//! switchover moves the primary ([`fence_writer`], [`open_writer`]), instead of waiting for
//! HAProxy's next health check (the pull path, `GET /api/v1/route/…`).
//!
//! The protocol is one line of text per connection: the client sends a command and a
//! newline, HAProxy answers and closes the connection (non-interactive mode). No crate of
//! the field speaks it, and it is this small, so it is written here (docs/ROUTING.md).
//!
//! Names in a command are checked first ([`check_name`]): a name with a space or a newline
//! would let one command become two.
//!
//! The names dbfleet gives its backends and servers, which `dbfleet haproxy config` writes
//! and the push uses: [`writer_backend`], [`reader_backend`], [`server_name`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use model::InstanceAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest answer read (`show servers state` of a large backend fits many times).
const MAX_ANSWER: u64 = 4 << 20;

/// Where HAProxy's Runtime API listens: `stats socket` in haproxy.cfg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Socket {
    /// A Unix socket: a path beginning with `/`.
    Unix(PathBuf),
    /// A TCP address, `HOST:PORT`.
    Tcp(String),
}

impl fmt::Display for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Socket::Unix(p) => write!(f, "unix:{}", p.display()),
            Socket::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

impl FromStr for Socket {
    type Err = String;

    /// `/run/haproxy/admin.sock` (or `unix:/…`) is a Unix socket; `127.0.0.1:9999` (or
    /// `tcp:…`) is TCP.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("unix:") {
            return Self::from_str(p).and_then(|sock| match sock {
                Socket::Unix(_) => Ok(sock),
                Socket::Tcp(_) => Err(format!("{s:?}: a Unix socket is an absolute path")),
            });
        }
        if s.starts_with('/') {
            return Ok(Socket::Unix(PathBuf::from(s)));
        }
        let a = s.strip_prefix("tcp:").unwrap_or(s);
        match a.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(Socket::Tcp(a.to_string()))
            }
            _ => Err(format!(
                "{s:?} is neither an absolute path to a Unix socket nor HOST:PORT"
            )),
        }
    }
}

/// What went wrong talking to HAProxy.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// Nothing listens there, or the connection was refused.
    #[error("connect to HAProxy's runtime API at {socket}: {source}")]
    Connect {
        socket: Socket,
        source: std::io::Error,
    },
    /// The connection broke while talking.
    #[error("HAProxy's runtime API at {socket}, `{command}`: {source}")]
    Io {
        socket: Socket,
        command: String,
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("HAProxy's runtime API at {socket} did not answer `{command}` within {timeout:?}")]
    Timeout {
        socket: Socket,
        command: String,
        timeout: Duration,
    },
    /// HAProxy answered with an error (an unknown backend or server, a command this
    /// version lacks, too few permissions on the socket: `level admin` is needed).
    #[error("HAProxy refused `{command}`: {answer}")]
    Refused { command: String, answer: String },
    /// The answer is not what the command returns.
    #[error("HAProxy's answer to `{command}` is not understood: {detail}")]
    Reply { command: String, detail: String },
    /// A backend or server name that cannot be put in a command.
    #[error("{0}")]
    InvalidName(String),
}

/// A server's administrative state, as `set server … state` sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminState {
    /// Takes traffic when its health check says it is up.
    Ready,
    /// Takes no new sessions; its sessions stay.
    Drain,
    /// Maintenance: takes nothing.
    Maint,
}

impl AdminState {
    fn word(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

/// One server of `show servers state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStatus {
    /// The backend.
    pub backend: String,
    /// The server's name in it.
    pub name: String,
    /// Its address.
    pub addr: String,
    /// `srv_op_state`: 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op_state: u8,
    /// `srv_admin_state`, bits: 0x01 forced maintenance (`state maint`), 0x02 inherited
    /// from a tracked server, 0x04 from the config (`disabled`: `state ready` does not lift
    /// it, so dbfleet's config never writes it), 0x08 forced drain, 0x40 and 0x80 from DNS
    /// resolution.
    pub admin_state: u8,
}

impl ServerStatus {
    /// Up and not in maintenance or drain: takes new sessions.
    pub fn takes_traffic(&self) -> bool {
        self.op_state == 2 && self.admin_state == 0
    }

    /// In maintenance, for any reason.
    pub fn in_maint(&self) -> bool {
        self.admin_state & (0x01 | 0x02 | 0x04 | 0x40 | 0x80) != 0
    }
}

/// HAProxy's Runtime API at one socket.
#[derive(Clone, Debug)]
pub struct RuntimeApi {
    socket: Socket,
    timeout: Duration,
}

impl RuntimeApi {
    /// The default time one command may take, connect included.
    pub const TIMEOUT: Duration = Duration::from_secs(1);

    /// The API at `socket`, each command within `timeout`.
    pub fn new(socket: Socket, timeout: Duration) -> Self {
        Self { socket, timeout }
    }

    /// Where it listens.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Send one command and return HAProxy's answer, trimmed.
    pub async fn command(&self, command: &str) -> Result<String, HaproxyError> {
        if command.contains(['\n', '\r', ';']) {
            return Err(HaproxyError::InvalidName(format!(
                "a command for HAProxy holds a newline or `;`: {command:?}"
            )));
        }
        let work = async {
            match &self.socket {
                Socket::Unix(p) => {
                    let s = tokio::net::UnixStream::connect(p).await.map_err(|e| {
                        HaproxyError::Connect {
                            socket: self.socket.clone(),
                            source: e,
                        }
                    })?;
                    self.talk(s, command).await
                }
                Socket::Tcp(a) => {
                    let s = tokio::net::TcpStream::connect(a.as_str())
                        .await
                        .map_err(|e| HaproxyError::Connect {
                            socket: self.socket.clone(),
                            source: e,
                        })?;
                    self.talk(s, command).await
                }
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| HaproxyError::Timeout {
                socket: self.socket.clone(),
                command: command.to_string(),
                timeout: self.timeout,
            })?
    }

    async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut s: S,
        command: &str,
    ) -> Result<String, HaproxyError> {
        let io = |e| HaproxyError::Io {
            socket: self.socket.clone(),
            command: command.to_string(),
            source: e,
        };
        s.write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(io)?;
        s.flush().await.map_err(io)?;
        let mut answer = Vec::new();
        (&mut s)
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .map_err(io)?;
        Ok(String::from_utf8_lossy(&answer).trim().to_string())
    }

    /// A command that answers nothing when it succeeds; anything else is HAProxy's error.
    async fn silent(&self, command: &str) -> Result<(), HaproxyError> {
        let answer = self.command(command).await?;
        if answer.is_empty() {
            Ok(())
        } else {
            Err(HaproxyError::Refused {
                command: command.to_string(),
                answer,
            })
        }
    }

    /// `set server BACKEND/SERVER state ready|drain|maint`.
    pub async fn set_state(
        &self,
        backend: &str,
        server: &str,
        state: AdminState,
    ) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        self.silent(&format!("set server {target} state {}", state.word()))
            .await
    }

    /// `set server BACKEND/SERVER health up`: up at once, without waiting for a check
    /// (the next check may take it down again).
    pub async fn force_up(&self, backend: &str, server: &str) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        self.silent(&format!("set server {target} health up")).await
    }

    /// `shutdown sessions server BACKEND/SERVER`: cut every session to it.
    pub async fn shutdown_sessions(&self, backend: &str, server: &str) -> Result<(), HaproxyError> {
        let target = target(backend, server)?;
        self.silent(&format!("shutdown sessions server {target}"))
            .await
    }

    /// `show servers state BACKEND`.
    pub async fn servers(&self, backend: &str) -> Result<Vec<ServerStatus>, HaproxyError> {
        check_name(backend)?;
        let command = format!("show servers state {backend}");
        let answer = self.command(&command).await?;
        parse_servers_state(&answer).map_err(|detail| {
            if answer.lines().count() <= 1 && !answer.starts_with('1') {
                HaproxyError::Refused {
                    command: command.clone(),
                    answer: answer.clone(),
                }
            } else {
                HaproxyError::Reply {
                    command: command.clone(),
                    detail,
                }
            }
        })
    }
}

fn target(backend: &str, server: &str) -> Result<String, HaproxyError> {
    check_name(backend)?;
    check_name(server)?;
    Ok(format!("{backend}/{server}"))
}

/// A name HAProxy accepts for a backend or a server: letters, digits, `-`, `_`, `.` and
/// `:`, at most 100 characters.
pub fn check_name(name: &str) -> Result<(), HaproxyError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(HaproxyError::InvalidName(format!(
            "{:?} is not a HAProxy name (letters, digits, `-`, `_`, `.`, `:`)",
            name.chars().take(100).collect::<String>()
        )))
    }
}

/// The backend of `cluster`'s writer: `CLUSTER_writer`.
pub fn writer_backend(cluster: &str) -> String {
    format!("{cluster}_writer")
}

/// The backend of `cluster`'s readers: `CLUSTER_reader`.
pub fn reader_backend(cluster: &str) -> String {
    format!("{cluster}_reader")
}

/// The name of `addr`'s server in a backend: its address, `HOST:PORT` (an IPv6 host
/// without brackets).
pub fn server_name(addr: &InstanceAddr) -> String {
    format!("{}:{}", addr.host.trim_matches(['[', ']']), addr.port)
}

/// Parse `show servers state`: a version line (`1`), a `#` header naming the columns, then
/// one line per server.
pub fn parse_servers_state(text: &str) -> Result<Vec<ServerStatus>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some("1") => {}
        other => return Err(format!("expected format version 1, got {other:?}")),
    }
    let header: Vec<&str> = match lines.next() {
        Some(h) if h.starts_with('#') => h.trim_start_matches('#').split_whitespace().collect(),
        None => return Ok(Vec::new()),
        Some(h) => return Err(format!("expected a `#` header, got {h:?}")),
    };
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("no column {name} in the header"))
    };
    let (be, name, addr, op, admin) = (
        col("be_name")?,
        col("srv_name")?,
        col("srv_addr")?,
        col("srv_op_state")?,
        col("srv_admin_state")?,
    );
    let mut out = Vec::new();
    for line in lines {
        if line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| format!("short line {line:?}"))
        };
        let num = |i: usize| -> Result<u8, String> {
            get(i)?
                .parse()
                .map_err(|_| format!("not a number in column {i} of {line:?}"))
        };
        out.push(ServerStatus {
            backend: get(be)?.to_string(),
            name: get(name)?.to_string(),
            addr: get(addr)?.to_string(),
            op_state: num(op)?,
            admin_state: num(admin)?,
        });
    }
    Ok(out)
}

/// What a push did, for the operation's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// The commands that succeeded, in order.
    pub done: Vec<String>,
}

/// Take `old`, a cluster's replaced primary, out of its writer backend: maintenance, then
/// every session to it cut. The first failure ends the push: the caller records it as a
/// warning and pages, and the pull path's health checks still converge.
pub async fn fence_writer(
    api: &RuntimeApi,
    cluster: &str,
    old: &InstanceAddr,
) -> Result<PushReport, HaproxyError> {
    let (backend, server) = (writer_backend(cluster), server_name(old));
    let mut report = PushReport::default();
    api.set_state(&backend, &server, AdminState::Maint).await?;
    report
        .done
        .push(format!("set server {backend}/{server} state maint"));
    api.shutdown_sessions(&backend, &server).await?;
    report
        .done
        .push(format!("shutdown sessions server {backend}/{server}"));
    Ok(report)
}

/// Put `new`, a cluster's new primary, in its writer backend at once: ready, and up without
/// waiting for a health check.
pub async fn open_writer(
    api: &RuntimeApi,
    cluster: &str,
    new: &InstanceAddr,
) -> Result<PushReport, HaproxyError> {
    let (backend, server) = (writer_backend(cluster), server_name(new));
    let mut report = PushReport::default();
    api.set_state(&backend, &server, AdminState::Ready).await?;
    report
        .done
        .push(format!("set server {backend}/{server} state ready"));
    api.force_up(&backend, &server).await?;
    report
        .done
        .push(format!("set server {backend}/{server} health up"));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_parse() {
        assert_eq!(
            "/run/haproxy/admin.sock".parse::<Socket>().unwrap(),
            Socket::Unix("/run/haproxy/admin.sock".into())
        );
        assert_eq!(
            "unix:/tmp/a.sock".parse::<Socket>().unwrap(),
            Socket::Unix("/tmp/a.sock".into())
        );
        assert_eq!(
            "127.0.0.1:9999".parse::<Socket>().unwrap(),
            Socket::Tcp("127.0.0.1:9999".into())
        );
        for bad in [
            "",
            "haproxy.sock",
            "127.0.0.1",
            "host:0",
            ":80",
            "unix:rel.sock",
        ] {
            assert!(bad.parse::<Socket>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_that_could_smuggle_a_command_are_refused() {
        for bad in ["", "a b", "a\nshow info", "a;b", "a/b", &"x".repeat(101)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("c1_writer").unwrap();
        check_name("127.0.0.1:3306").unwrap();
        let addr: InstanceAddr = "127.0.0.1:3306".parse().unwrap();
        assert_eq!(server_name(&addr), "127.0.0.1:3306");
        check_name(&server_name(&addr)).unwrap();
    }

    #[test]
    fn servers_state_parses_by_column_name() {
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n\
                    3 c1_writer 1 127.0.0.1:3306 127.0.0.1 2 0 1\n\
                    3 c1_writer 2 127.0.0.1:3307 127.0.0.1 0 1 1\n";
        let s = parse_servers_state(text).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0].takes_traffic() && !s[0].in_maint());
        assert!(!s[1].takes_traffic() && s[1].in_maint());
        assert_eq!(s[1].name, "127.0.0.1:3307");
        assert!(parse_servers_state("No such backend.").is_err());
        assert!(parse_servers_state("1\n# be_name\nx\n").is_err());
        assert!(parse_servers_state("1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n3 b 1 s a x 0\n").is_err());
    }
}
