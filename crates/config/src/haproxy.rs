//! `haproxy_config`: a ready `haproxy.cfg` that routes a cluster's clients through HAProxy
//! with dbfleet's route checks (`docs/ROUTING.md`), which `dbfleet haproxy config` prints
//! and `dbfleet sandbox up --haproxy` runs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use model::InstanceAddr;

/// What the generated config routes, and where.
#[derive(Clone, Debug)]
pub struct HaproxyOptions {
    /// The cluster's name (a valid `[[cluster]] name`).
    pub cluster: String,
    /// The servers, writer and readers alike.
    pub members: Vec<InstanceAddr>,
    /// Where HAProxy reaches dbfleet's API for the checks: an IP address and port.
    pub api: SocketAddr,
    /// Where clients connect to write (the primary).
    pub writer_bind: SocketAddr,
    /// Where clients connect to read (the replicas within `max_lag`).
    pub reader_bind: SocketAddr,
    /// The Runtime API's unix socket (`stats socket`).
    pub stats_socket: PathBuf,
}

/// Why no config can be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HaproxyConfigError {
    /// The cluster has no servers.
    #[error("cluster {0:?} has no instances to route to")]
    NoMembers(String),
    /// A name HAProxy would not take (or that would break the check's path).
    #[error("{what} {value:?} cannot be used in an HAProxy config: {why}")]
    Unusable {
        what: &'static str,
        value: String,
        why: &'static str,
    },
}

/// How often HAProxy checks each server.
pub const CHECK_INTER: &str = "500ms";
/// How often HAProxy checks a server whose state is changing (one check failed or passed,
/// not yet `fall` or `rise` of them), and a server not yet checked.
pub const CHECK_FASTINTER: &str = "100ms";
/// Failed checks in a row that take a server down.
pub const CHECK_FALL: u32 = 2;
/// Passed checks that bring a server up.
pub const CHECK_RISE: u32 = 1;

/// A server's name in the config: its address, which the checks put in their path with
/// `%[srv_name]`. HAProxy's names take letters, digits, `-`, `_`, `.` and `:` only, so an
/// IPv6 address loses its brackets (the route checks take it so).
fn server_name(a: &InstanceAddr) -> Result<String, HaproxyConfigError> {
    let name = a.to_string().replace(['[', ']'], "");
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        Ok(name)
    } else {
        Err(HaproxyConfigError::Unusable {
            what: "instance",
            value: a.to_string(),
            why: "HAProxy server names take letters, digits, '-', '_', '.' and ':' only",
        })
    }
}

/// Render the config: `global` (the stats socket), `defaults` (TCP mode and timeouts), and
/// for the writer and the reader a frontend and a backend whose servers are checked against
/// `GET /api/v1/route/{cluster}/{server}/{writer|reader}` on dbfleet's API.
pub fn haproxy_config(o: &HaproxyOptions) -> Result<String, HaproxyConfigError> {
    if o.members.is_empty() {
        return Err(HaproxyConfigError::NoMembers(o.cluster.clone()));
    }
    let name_ok = !o.cluster.is_empty()
        && o.cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !name_ok {
        return Err(HaproxyConfigError::Unusable {
            what: "cluster",
            value: o.cluster.clone(),
            why: "use letters, digits, '-', '_' or '.'",
        });
    }
    let socket = o.stats_socket.to_string_lossy();
    if socket.is_empty()
        || socket
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#' || c == '"' || c == '\\')
    {
        return Err(HaproxyConfigError::Unusable {
            what: "stats socket path",
            value: socket.into_owned(),
            why: "it must not be empty or hold spaces, quotes, '#' or '\\'",
        });
    }
    let servers: Vec<String> = o
        .members
        .iter()
        .map(server_name)
        .collect::<Result<_, _>>()?;
    let c = &o.cluster;
    let mut out = String::new();
    // `write!` to a String cannot fail.
    let _ = write!(
        out,
        r#"# haproxy.cfg for the dbfleet cluster "{c}", written by `dbfleet haproxy config`.
# Writes go to {writer_bind}, reads to {reader_bind}. HAProxy asks dbfleet's API at
# {api} which server may take each: /api/v1/route/{c}/SERVER/writer answers 200 for the
# primary only, /api/v1/route/{c}/SERVER/reader for the replicas within max_lag
# (docs/ROUTING.md).
#
# Checks every {CHECK_INTER} ({CHECK_FASTINTER} while a server's state changes), down after {CHECK_FALL}
# failures, up after {CHECK_RISE} success: the new primary takes writes within one check of
# dbfleet naming it, a lost check alone takes no server down, and `on-marked-down
# shutdown-sessions` cuts every session to a server as it goes down, so no client stays on
# a fenced old primary.

global
    # The Runtime API, for `show servers state` and (later) dbfleet's push.
    stats socket {socket} mode 600 level admin
    stats timeout 30s

defaults
    mode tcp
    timeout connect 2s
    # MySQL sessions sit idle between queries; the server's wait_timeout ends them first.
    timeout client 8h
    timeout server 8h
    # A check that takes longer than this failed: dbfleet answers from memory.
    timeout check 1s
    # A connect that fails (a dead primary not yet marked down) is tried again, on another
    # server that is up.
    retries 3
    option redispatch
"#,
        writer_bind = o.writer_bind,
        reader_bind = o.reader_bind,
        api = o.api,
    );
    for (role, bind, balance) in [
        ("writer", o.writer_bind, "roundrobin"),
        ("reader", o.reader_bind, "leastconn"),
    ] {
        let guard = if role == "writer" {
            format!(
                "    # Clients are refused while more than one server passes the writer check:
    # HAProxy counts every server up until its first check, and two may overlap for a
    # check or two in a failover. A write goes to one server or to none.
    tcp-request connection reject if {{ nbsrv({c}_writer) gt 1 }}
"
            )
        } else {
            String::new()
        };
        let _ = write!(
            out,
            r#"
frontend {c}_{role}
    bind {bind}
{guard}    default_backend {c}_{role}

backend {c}_{role}
    balance {balance}
    option httpchk
    http-check send meth GET uri-lf /api/v1/route/{c}/%[srv_name]/{role} ver HTTP/1.1 hdr Host dbfleet
    http-check expect status 200
    default-server check port {port} addr {ip} inter {CHECK_INTER} fastinter {CHECK_FASTINTER} fall {CHECK_FALL} rise {CHECK_RISE} on-marked-down shutdown-sessions
"#,
            port = o.api.port(),
            ip = o.api.ip(),
        );
        for (name, addr) in servers.iter().zip(&o.members) {
            let _ = writeln!(out, "    server {name} {addr}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> HaproxyOptions {
        HaproxyOptions {
            cluster: "main".into(),
            members: vec![
                "127.0.0.1:3306".parse().unwrap(),
                "[::1]:3307".parse().unwrap(),
            ],
            api: "127.0.0.1:7070".parse().unwrap(),
            writer_bind: "127.0.0.1:6446".parse().unwrap(),
            reader_bind: "127.0.0.1:6447".parse().unwrap(),
            stats_socket: "/run/haproxy/dbfleet.sock".into(),
        }
    }

    #[test]
    fn the_config_checks_every_server_against_the_route_checks() {
        let text = haproxy_config(&opts()).unwrap();
        for line in [
            "    stats socket /run/haproxy/dbfleet.sock mode 600 level admin",
            "frontend main_writer",
            "    bind 127.0.0.1:6446",
            "backend main_reader",
            "    http-check send meth GET uri-lf /api/v1/route/main/%[srv_name]/writer ver HTTP/1.1 hdr Host dbfleet",
            "    http-check send meth GET uri-lf /api/v1/route/main/%[srv_name]/reader ver HTTP/1.1 hdr Host dbfleet",
            "    http-check expect status 200",
            "    default-server check port 7070 addr 127.0.0.1 inter 500ms fastinter 100ms fall 2 rise 1 on-marked-down shutdown-sessions",
            "    tcp-request connection reject if { nbsrv(main_writer) gt 1 }",
            "    server 127.0.0.1:3306 127.0.0.1:3306",
            "    server ::1:3307 [::1]:3307",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
    }

    #[test]
    fn unusable_input_is_an_error_that_names_it() {
        let mut o = opts();
        o.members.clear();
        assert_eq!(
            haproxy_config(&o).unwrap_err().to_string(),
            "cluster \"main\" has no instances to route to"
        );
        let mut o = opts();
        o.cluster = "a b".into();
        assert!(haproxy_config(&o)
            .unwrap_err()
            .to_string()
            .contains("\"a b\""));
        let mut o = opts();
        o.stats_socket = "/tmp/a b.sock".into();
        assert!(haproxy_config(&o).is_err());
    }
}
