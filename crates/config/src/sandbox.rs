//! `sandbox_config`: a ready-to-use, commented `dbfleet.toml` for a local sandbox, which
//! `dbfleet sandbox up` prints or writes.

use std::fmt::Write as _;
use std::path::Path;

use model::InstanceAddr;

/// Render a commented `dbfleet.toml` that manages the sandbox `name`: one cluster of that
/// name with `instances` (each with whether it is the sandbox's primary), logging in with
/// the sandbox's credentials file, keeping state in `data_dir`. Paths are written as given;
/// pass absolute ones so the file works wherever it is saved.
///
/// The result parses with `Config::from_str_at` as long as `name` is a valid cluster name
/// (sandbox names are) and `instances` is not empty.
pub fn sandbox_config(
    name: &str,
    data_dir: &Path,
    credentials_file: &Path,
    repl_credentials_file: &Path,
    instances: &[(InstanceAddr, bool)],
    semi_sync: bool,
    tls_ca_file: Option<&Path>,
) -> String {
    let replicas = instances.iter().filter(|(_, primary)| !primary).count();
    let mut out = String::new();
    // `write!` to a String cannot fail.
    let _ = write!(
        out,
        r#"# dbfleet.toml for the sandbox {name_q}, written by `dbfleet sandbox up`.
# Every key is described in docs/dbfleet.example.toml.

[store]
# The directory the daemon keeps its state in.
data_dir = {data_dir}

[api]
# The HTTP API, on loopback only. Mutating calls need a token from a tokens file; add
# tokens_file = "tokens.txt" (one token per line) to make changes through the API.
listen = "127.0.0.1:7070"

[probe]
# How often every member is probed; sandbox members are local and answer fast.
interval = "1s"
# How long a connect, and then each probe query, may take.
connect_timeout = "500ms"
query_timeout = "500ms"
# How many probes may run at once.
concurrency = 256
# How often the topology is crawled again to find new or moved replicas.
discovery_interval = "10s"

# The admin account the sandbox created on every member, in the file it wrote.
[credentials.admin]
credentials_file = {credentials_file}

# The replication account, for repointing replicas in failover and switchover.
[credentials.repl]
credentials_file = {repl_credentials_file}

# The sandbox's replication cluster.
[[cluster]]
# The cluster is named after the sandbox.
name = {name_q}
# Log in with [credentials.admin].
credentials = "admin"
# The sandbox made one primary and {replicas} {replica_word}.
expected_replicas = {replicas}
# Whether the sandbox turned on semi-sync replication.
semi_sync = {semi_sync}
# A replica further behind than this is lagging.
max_lag = "10s"
# A sandbox is made for disaster-recovery tests: `dbfleet drt run` may break it on purpose.
drt_allowed = true
# Replicas replicate with [credentials.repl].
replication_credentials = "repl"
{tls}
# The sandbox's datadirs share this host's disk, whose free space says nothing about the
# cluster: no DiskSpaceLow (a full disk is still PrimaryDiskFull). A real cluster keeps the
# defaults, 10 and 5 percent.
[cluster.detection]
disk_free_warning_percent = 0
disk_free_error_percent = 0

# What happens when the primary dies: "auto" fails over at once; "approve" proposes and
# waits for `dbfleet failover`; "off" only alerts.
[cluster.failover]
mode = "auto"
# No second automatic failover within this window, unless `dbfleet recoveries ack`.
block_window = "10m"
"#,
        name_q = quote(name),
        replica_word = if replicas == 1 { "replica" } else { "replicas" },
        data_dir = quote(&data_dir.to_string_lossy()),
        credentials_file = quote(&credentials_file.to_string_lossy()),
        repl_credentials_file = quote(&repl_credentials_file.to_string_lossy()),
        tls = match tls_ca_file {
            Some(ca) => format!(
                "# The sandbox takes TLS connections only (`sandbox up --tls`): check its \
                 certificates\n# against the CA it made, names included.\ntls = \"verify_identity\"\n\
                 tls_ca_file = {}\n",
                quote(&ca.to_string_lossy())
            ),
            None => String::new(),
        },
    );
    for (addr, primary) in instances {
        let role = if *primary {
            "The sandbox's initial primary."
        } else {
            "A replica."
        };
        let _ = write!(
            out,
            r#"
# {role} promotion may be "prefer", "neutral" or "must_not".
[[cluster.instance]]
addr = {addr}
promotion = "neutral"
"#,
            addr = quote(&addr.to_string()),
        );
    }
    out.push_str(
        r#"
# Alerting (docs/ALERTING.md): the default rules apply and nothing is sent. To page, add a
# notifier, for example a webhook to a local receiver:
#
# [[alert.notifier]]
# kind = "webhook"
# url = "http://127.0.0.1:9000/hooks/dbfleet"
"#,
    );
    out
}

/// A TOML string literal for `s`, escaped as needed.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
