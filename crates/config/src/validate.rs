//! From text to a validated `Config`: parse, check every rule (collecting all problems, not
//! only the first), and resolve relative paths.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use model::InstanceAddr;

use crate::file::{FileCluster, FileConfig, FileCredentials, FileDrt};
use crate::schema::{
    ClusterConfig, Config, CredentialsConfig, DrtConfig, DrtSchedule, InstanceConfig,
    PasswordSource, MIN_PROBE_INTERVAL,
};
use crate::{ConfigError, Location};

/// Parse and validate `text`, read from `origin` (named in parse errors), resolving relative
/// paths against `base_dir`.
pub(crate) fn parse(text: &str, origin: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| parse_error(text, origin, &e))?;
    validate(file, base_dir).map_err(|e| locate(e, text, origin))
}

/// `e` with each `Invalid` problem given the place of its field in `text`: the field's
/// value, or the nearest table holding it when the field is not written (a default).
fn locate(e: ConfigError, text: &str, origin: &Path) -> ConfigError {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return e;
    };
    let problems = match e {
        ConfigError::Several(list) => list,
        other => vec![other],
    };
    let located = problems
        .into_iter()
        .map(|p| match p {
            ConfigError::Invalid {
                field,
                message,
                at: None,
            } => {
                let at = field_offset(doc.as_item(), &field).map(|offset| Location {
                    path: origin.to_path_buf(),
                    line: line_of(text, offset),
                    column: column_of(text, offset),
                });
                ConfigError::Invalid { field, message, at }
            }
            other => other,
        })
        .collect();
    ConfigError::from_list(located).expect("an error holds at least one problem")
}

/// One step of a field path: a key, or an index into an array (of tables).
#[derive(Debug, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The steps of a field path as validation writes it: keys joined by `.`, bare or quoted
/// as [`key`] writes them, each followed by any `[N]`. `None` when it is not one.
fn steps(field: &str) -> Option<Vec<Step>> {
    let mut out = Vec::new();
    let mut chars = field.chars().peekable();
    loop {
        let mut k = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => k.push(chars.next()?),
                    c => k.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' || c == '[' {
                    break;
                }
                k.push(c);
                chars.next();
            }
            if k.is_empty() {
                return None;
            }
        }
        out.push(Step::Key(k));
        while chars.peek() == Some(&'[') {
            chars.next();
            let mut n = String::new();
            loop {
                match chars.next()? {
                    ']' => break,
                    c => n.push(c),
                }
            }
            out.push(Step::Index(n.parse().ok()?));
        }
        match chars.next() {
            None => return Some(out),
            Some('.') => {}
            Some(_) => return None,
        }
    }
}

/// The byte offset in the file of the deepest part of `field` that is written there.
fn field_offset(root: &toml_edit::Item, field: &str) -> Option<usize> {
    let mut item = root;
    let mut best = None;
    for step in steps(field)? {
        let next = match &step {
            Step::Key(k) => item.get(k.as_str()),
            Step::Index(i) => item.get(*i),
        };
        let Some(next) = next else { break };
        item = next;
        if let Some(span) = item.span() {
            best = Some(span.start);
        }
    }
    best
}

/// The 1-based column, in characters, of byte `offset` of `text`.
fn column_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    let start = text[..end].rfind('\n').map_or(0, |i| i + 1);
    text[start..end].chars().count() + 1
}

/// How many characters of a value an error message echoes.
const ECHO_MAX: usize = 80;

/// A value as an error message echoes it: quoted, and when longer than [`ECHO_MAX`]
/// characters, cut there and followed by its length (`"aaaa…"… (52428800 bytes)`).
pub(crate) fn quote(value: &str) -> String {
    if value.chars().count() <= ECHO_MAX {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(ECHO_MAX).collect();
    format!("{head:?}… ({} bytes)", value.len())
}

/// A TOML error as a `Parse` error: toml's message and the line of its span, never the
/// source text of the line, which could hold a secret.
pub(crate) fn parse_error(text: &str, origin: &Path, e: &toml::de::Error) -> ConfigError {
    ConfigError::Parse {
        path: origin.to_path_buf(),
        line: e.span().map(|span| line_of(text, span.start)),
        message: crate::error::cap(scrub(e.message())),
    }
}

/// The 1-based line that byte `offset` of `text` is on.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Make a toml/serde message one line, and drop the string serde quotes when a string
/// lands where another type is expected (`invalid type: string "…", expected …`): that
/// string could be a password typed into the wrong place.
fn scrub(message: &str) -> String {
    let mut out = message.trim().replace('\n', "; ");
    for prefix in ["invalid type: string \"", "invalid value: string \""] {
        if let Some(start) = out.find(prefix) {
            let quoted_from = start + prefix.len() - 1;
            if let Some(rest) = out[quoted_from + 1..].rfind("\", expected") {
                let end = quoted_from + 1 + rest + 1;
                out.replace_range(quoted_from - 1..end, "");
            }
        }
    }
    out
}

/// A cluster's TLS: the files resolved against `base` and readable, a client certificate
/// with its key, and files only where TLS is on.
fn validate_tls(
    at: &str,
    base: &Path,
    mode: model::TlsMode,
    [ca, cert, key]: [Option<PathBuf>; 3],
    errs: &mut Vec<ConfigError>,
) -> model::TlsSettings {
    let mut file = |name: &str, p: Option<PathBuf>| {
        let p = resolve(base, &p?);
        let field = format!("{at}.{name}");
        if mode == model::TlsMode::Off {
            errs.push(ConfigError::invalid(
                field,
                "is set but tls = \"off\": set tls (e.g. \"verify_identity\") or remove it",
            ));
        } else {
            check_readable(field, &p, errs);
        }
        Some(p)
    };
    let tls = model::TlsSettings {
        mode,
        ca_file: file("tls_ca_file", ca),
        cert_file: file("tls_cert_file", cert),
        key_file: file("tls_key_file", key),
    };
    check_cert_and_key(
        &format!("{at}.tls_key_file"),
        &tls.cert_file,
        &tls.key_file,
        errs,
    );
    tls
}

/// A TLS file named by `field` must be readable now.
fn check_readable(field: String, path: &Path, errs: &mut Vec<ConfigError>) {
    if let Err(e) = std::fs::File::open(path) {
        errs.push(ConfigError::invalid(
            field,
            format!("cannot read {}: {e}", path.display()),
        ));
    }
}

/// A certificate comes with its key: both set or neither (reported on `key_field`).
fn check_cert_and_key(
    key_field: &str,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    errs: &mut Vec<ConfigError>,
) {
    if cert.is_some() != key.is_some() {
        errs.push(ConfigError::invalid(
            key_field,
            "tls_cert_file and tls_key_file go together: set both or neither",
        ));
    }
}

/// Resolve `p` against `base` unless it is absolute.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A TOML key as it appears in a field path: bare when it can be, quoted otherwise.
pub(crate) fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare && name.len() <= ECHO_MAX {
        name.to_string()
    } else {
        quote(name)
    }
}

/// Whether a cluster name is allowed.
fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Check every rule on a parsed file, collecting all problems, and resolve its paths.
fn validate(file: FileConfig, base: &Path) -> Result<Config, ConfigError> {
    let mut errs = Vec::new();
    let FileConfig {
        strict_permissions,
        mut store,
        mut api,
        probe,
        credentials,
        node,
        cluster,
        drt,
        monitor,
        mut alert,
    } = file;

    if store.data_dir.as_os_str().is_empty() {
        errs.push(ConfigError::invalid("store.data_dir", "must not be empty"));
    }
    store.data_dir = resolve(base, &store.data_dir);
    if store.backend == crate::StoreBackend::Etcd && store.etcd_endpoints.is_empty() {
        errs.push(ConfigError::invalid(
            "store.etcd_endpoints",
            "needs at least one endpoint with backend = \"etcd\"",
        ));
    }
    if node.lease_ttl < std::time::Duration::from_secs(1) {
        errs.push(ConfigError::invalid(
            "node.lease_ttl",
            "must be at least 1s",
        ));
    }

    match &api.tokens_file {
        Some(p) if p.as_os_str().is_empty() => {
            errs.push(ConfigError::invalid(
                "api.tokens_file",
                "must not be empty: leave it out to have no tokens",
            ));
        }
        Some(_) => {}
        None if api.require_token_for_reads => errs.push(ConfigError::invalid(
            "api.require_token_for_reads",
            "needs api.tokens_file: without tokens no call could be made",
        )),
        None => {}
    }
    api.tokens_file = api.tokens_file.map(|p| resolve(base, &p));
    if api.max_connections == 0 {
        errs.push(ConfigError::invalid(
            "api.max_connections",
            "must be at least 1",
        ));
    }
    if api.header_timeout.is_zero() {
        errs.push(ConfigError::invalid(
            "api.header_timeout",
            "must be above zero",
        ));
    }
    api.tls_cert_file = api.tls_cert_file.map(|p| resolve(base, &p));
    api.tls_key_file = api.tls_key_file.map(|p| resolve(base, &p));
    for (field, p) in [
        ("api.tls_cert_file", &api.tls_cert_file),
        ("api.tls_key_file", &api.tls_key_file),
    ] {
        if let Some(p) = p {
            check_readable(field.to_string(), p, &mut errs);
        }
    }
    check_cert_and_key(
        "api.tls_key_file",
        &api.tls_cert_file,
        &api.tls_key_file,
        &mut errs,
    );
    if !api.tls() && !api.listen.ip().is_loopback() && !api.allow_plaintext {
        errs.push(ConfigError::invalid(
            "api.listen",
            format!(
                "{} is not a loopback address, and the API would serve plain HTTP there: \
                 tokens would cross the network in clear. Set tls_cert_file and \
                 tls_key_file, or allow_plaintext = true to accept that",
                api.listen
            ),
        ));
    }

    if probe.interval < MIN_PROBE_INTERVAL {
        errs.push(ConfigError::invalid(
            "probe.interval",
            format!(
                "must be at least {}",
                humantime::format_duration(MIN_PROBE_INTERVAL)
            ),
        ));
    }
    for (field, d) in [
        ("probe.connect_timeout", probe.connect_timeout),
        ("probe.query_timeout", probe.query_timeout),
    ] {
        if d.is_zero() {
            errs.push(ConfigError::invalid(field, "must be more than 0s"));
        }
    }
    if probe.concurrency == 0 {
        errs.push(ConfigError::invalid(
            "probe.concurrency",
            "must be at least 1",
        ));
    }
    if probe.discovery_interval < probe.interval {
        errs.push(ConfigError::invalid(
            "probe.discovery_interval",
            format!(
                "must be at least probe.interval ({})",
                humantime::format_duration(probe.interval)
            ),
        ));
    }

    let declared: Vec<String> = credentials.keys().cloned().collect();
    let mut creds = BTreeMap::new();
    for (name, c) in credentials {
        let field = format!("credentials.{}", key(&name));
        match validate_credentials(&field, c, base) {
            Ok(c) => {
                creds.insert(name, c);
            }
            Err(e) => errs.push(e),
        }
    }

    let mut clusters = Vec::with_capacity(cluster.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut addrs: HashMap<InstanceAddr, (usize, usize)> = HashMap::new();
    for (ci, c) in cluster.into_iter().enumerate() {
        let FileCluster {
            name,
            credentials,
            expected_replicas,
            semi_sync,
            max_lag,
            drt_allowed,
            replication_credentials,
            tls,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            failover,
            detection,
            mut haproxy,
            instance,
        } = c;
        let at = format!("cluster[{ci}]");
        let tls = validate_tls(
            &at,
            base,
            tls,
            [tls_ca_file, tls_cert_file, tls_key_file],
            &mut errs,
        );
        if !valid_cluster_name(&name) {
            errs.push(ConfigError::invalid(
                format!("{at}.name"),
                format!(
                    "{} is not a valid cluster name: use 1 to 64 letters, digits, '-', '_' or \
                     '.'",
                    quote(&name)
                ),
            ));
        } else if let Some(first) = names.get(&name) {
            errs.push(ConfigError::invalid(
                format!("{at}.name"),
                format!(
                    "cluster {} is already declared at cluster[{first}]",
                    quote(&name)
                ),
            ));
        } else {
            names.insert(name.clone(), ci);
        }
        // An entry that is declared but invalid is reported on the entry, not here.
        if !declared.contains(&credentials) {
            errs.push(ConfigError::invalid(
                format!("{at}.credentials"),
                format!(
                    "cluster {}: credentials {} is not defined in [credentials]",
                    quote(&name),
                    quote(&credentials)
                ),
            ));
        }
        if let Some(rc) = &replication_credentials {
            if !declared.contains(rc) {
                errs.push(ConfigError::invalid(
                    format!("{at}.replication_credentials"),
                    format!(
                        "cluster {}: credentials {} is not defined in [credentials]",
                        quote(&name),
                        quote(rc)
                    ),
                ));
            }
        }
        if failover.block_window.is_zero() && failover.mode == crate::FailoverMode::Auto {
            errs.push(ConfigError::invalid(
                format!("{at}.failover.block_window"),
                "must be more than 0 with mode = \"auto\": a zero window lets failovers flap",
            ));
        }
        if let Some(api) = haproxy.runtime_api.take() {
            // A relative path is a Unix socket beside the config file.
            let relative = !api.starts_with('/')
                && !api.starts_with("unix:")
                && !api.starts_with("tcp:")
                && api.contains('/');
            let api = if relative {
                resolve(base, Path::new(&api)).display().to_string()
            } else {
                api
            };
            match api.parse::<::haproxy::Socket>() {
                Ok(::haproxy::Socket::Unix(p)) => {
                    haproxy.runtime_api = Some(resolve(base, &p).display().to_string());
                }
                Ok(::haproxy::Socket::Tcp(a)) => haproxy.runtime_api = Some(a),
                Err(e) => errs.push(ConfigError::invalid(format!("{at}.haproxy.runtime_api"), e)),
            }
        }
        if haproxy.timeout.is_zero() || haproxy.timeout > std::time::Duration::from_secs(10) {
            errs.push(ConfigError::invalid(
                format!("{at}.haproxy.timeout"),
                "must be between 1ms and 10s: a failover waits for it",
            ));
        }
        let stall = detection.stall_confirm;
        if !stall.is_zero()
            && (stall < std::time::Duration::from_secs(1)
                || stall > std::time::Duration::from_secs(3600))
        {
            errs.push(ConfigError::invalid(
                format!("{at}.detection.stall_confirm"),
                "must be 0s (off) or between 1s and 1h: shorter, a hiccup of the primary \
                 could fail it over",
            ));
        }
        if detection.disk_free_warning_percent > 100
            || detection.disk_free_error_percent > detection.disk_free_warning_percent
        {
            errs.push(ConfigError::invalid(
                format!("{at}.detection.disk_free_error_percent"),
                "must be at most disk_free_warning_percent, which is at most 100",
            ));
        }
        let after = failover.write_stall_failover_after;
        if after < std::time::Duration::from_secs(1) || after > std::time::Duration::from_secs(3600)
        {
            errs.push(ConfigError::invalid(
                format!("{at}.failover.write_stall_failover_after"),
                "must be between 1s and 1h: shorter, a slow write could fail the primary over",
            ));
        }
        if failover.rejoin_attempts == 0 {
            errs.push(ConfigError::invalid(
                format!("{at}.failover.rejoin_attempts"),
                "must be at least 1 (use rejoin = \"manual\" for none)",
            ));
        }
        if failover.rejoin_retry.is_zero() {
            errs.push(ConfigError::invalid(
                format!("{at}.failover.rejoin_retry"),
                "must be more than 0: a failing rejoin would be retried every round",
            ));
        }
        if failover.statement_timeout < std::time::Duration::from_millis(10) {
            errs.push(ConfigError::invalid(
                format!("{at}.failover.statement_timeout"),
                "must be at least 10ms",
            ));
        }
        if failover.fence == crate::FencePolicy::Required
            && failover
                .fence_command
                .as_deref()
                .is_none_or(|c| c.trim().is_empty())
        {
            errs.push(ConfigError::invalid(
                format!("{at}.failover.fence"),
                "fence = \"required\" needs a fence_command: without one no failover could open writes",
            ));
        }
        if failover
            .fence_command
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            errs.push(ConfigError::invalid(
                format!("{at}.failover.fence_command"),
                "is an empty command",
            ));
        }
        if failover.retry_backoff < std::time::Duration::from_millis(100) {
            errs.push(ConfigError::invalid(
                format!("{at}.failover.retry_backoff"),
                "must be at least 100ms: a refused failover would be retried in a busy loop",
            ));
        }
        if failover.retry_backoff_max < failover.retry_backoff {
            errs.push(ConfigError::invalid(
                format!("{at}.failover.retry_backoff_max"),
                "must be at least retry_backoff",
            ));
        }
        if failover.retry_backoff_max > std::time::Duration::from_secs(3600) {
            errs.push(ConfigError::invalid(
                format!("{at}.failover.retry_backoff_max"),
                "must be at most 1h: a dead primary must not wait longer for its next failover attempt",
            ));
        }
        for (hi, h) in failover
            .pre_failover
            .iter()
            .chain(&failover.post_failover)
            .enumerate()
        {
            if h.trim().is_empty() {
                errs.push(ConfigError::invalid(
                    format!("{at}.failover"),
                    format!("hook {hi} is an empty command"),
                ));
            }
        }
        if instance.is_empty() {
            errs.push(ConfigError::invalid(
                format!("{at}.instance"),
                format!(
                    "cluster {} has no instances: declare at least one [[cluster.instance]] \
                     with an addr",
                    quote(&name)
                ),
            ));
        }
        let mut instances = Vec::with_capacity(instance.len());
        for (ii, i) in instance.into_iter().enumerate() {
            let field = format!("{at}.instance[{ii}].addr");
            let addr: InstanceAddr = match i.addr.parse() {
                Ok(a) => a,
                Err(e) => {
                    let why = match e {
                        model::AddrError::MissingPort(_) => "has no port: write it as host:port",
                        model::AddrError::BadPort(_) => {
                            "has a bad port: it must be a number from 1 to 65535"
                        }
                        model::AddrError::BadHost(_) => "has a bad host",
                    };
                    errs.push(ConfigError::invalid(
                        field,
                        format!("address {} {why}", quote(&i.addr)),
                    ));
                    continue;
                }
            };
            if let Some((c0, i0)) = addrs.get(&addr) {
                errs.push(ConfigError::invalid(
                    field,
                    format!("{addr} is already declared at cluster[{c0}].instance[{i0}]"),
                ));
                continue;
            }
            addrs.insert(addr.clone(), (ci, ii));
            instances.push(InstanceConfig {
                addr,
                promotion: i.promotion,
                site: i.site,
            });
        }
        clusters.push(ClusterConfig {
            expected_replicas: expected_replicas
                .unwrap_or_else(|| instances.len().saturating_sub(1)),
            name,
            credentials,
            semi_sync,
            max_lag,
            drt_allowed,
            replication_credentials,
            tls,
            failover,
            detection,
            haproxy,
            instances,
        });
    }

    let drt = validate_drt(drt, &clusters, base, &mut errs);
    if monitor.write_timeout < std::time::Duration::from_millis(50)
        || monitor.write_timeout > std::time::Duration::from_secs(1)
    {
        errs.push(ConfigError::invalid(
            "monitor.write_timeout",
            "must be between 50ms and 1s: a stalled primary must be named within 2 s",
        ));
    }
    if !monitor.forget_unreachable_after.is_zero()
        && monitor.forget_unreachable_after < probe.interval
    {
        errs.push(ConfigError::invalid(
            "monitor.forget_unreachable_after",
            format!(
                "must be 0s (never) or at least probe.interval ({})",
                humantime::format_duration(probe.interval)
            ),
        ));
    }
    if monitor.history < probe.interval {
        errs.push(ConfigError::invalid(
            "monitor.history",
            format!(
                "must be at least probe.interval ({})",
                humantime::format_duration(probe.interval)
            ),
        ));
    }

    validate_alert(&mut alert, base, &mut errs);

    if let Some(e) = ConfigError::from_list(errs) {
        return Err(e);
    }
    Ok(Config {
        strict_permissions,
        store,
        api,
        probe,
        credentials: creds,
        node,
        clusters,
        drt,
        monitor,
        alert,
    })
}

/// Check `[alert]` (every error under an `alert.` path) and resolve its secret files
/// against the config's directory. The files are not read here.
fn validate_alert(alert: &mut alert::AlertConfig, base: &Path, errs: &mut Vec<ConfigError>) {
    if let Err(es) = alert.validate() {
        errs.extend(
            es.into_iter()
                .map(|e| ConfigError::invalid(e.field, e.message)),
        );
    }
    for n in &mut alert.notifier {
        match n {
            alert::NotifierSpec::Webhook(w) => {
                if let Some(f) = &w.headers_file {
                    w.headers_file = Some(resolve(base, f));
                }
            }
            alert::NotifierSpec::Pagerduty(p) => {
                if !p.routing_key_file.as_os_str().is_empty() {
                    p.routing_key_file = resolve(base, &p.routing_key_file);
                }
            }
        }
    }
}

/// Check `[[drt.schedule]]`: a known cluster that allows DRTs, a sane period, a sandbox.
fn validate_drt(
    drt: FileDrt,
    clusters: &[ClusterConfig],
    base: &Path,
    errs: &mut Vec<ConfigError>,
) -> DrtConfig {
    let mut schedule = Vec::new();
    for (i, s) in drt.schedule.into_iter().enumerate() {
        let field = |f: &str| format!("drt.schedule[{i}].{f}");
        if s.scenario.trim().is_empty() {
            errs.push(ConfigError::invalid(
                field("scenario"),
                "must name a built-in scenario or a scenario file",
            ));
        }
        match clusters.iter().find(|c| c.name == s.cluster) {
            None => errs.push(ConfigError::invalid(
                field("cluster"),
                format!("no [[cluster]] is named {}", quote(&s.cluster)),
            )),
            Some(c) if !c.drt_allowed => errs.push(ConfigError::invalid(
                field("cluster"),
                format!(
                    "the cluster {} does not allow DRTs: set drt_allowed = true in its \
                     [[cluster]] section",
                    quote(&s.cluster)
                ),
            )),
            Some(_) => {}
        }
        if s.every < std::time::Duration::from_secs(1) {
            errs.push(ConfigError::invalid(field("every"), "must be at least 1s"));
        }
        if s.sandbox.trim().is_empty() {
            errs.push(ConfigError::invalid(
                field("sandbox"),
                "must name the local sandbox that holds the cluster",
            ));
        }
        let scenario_path = Path::new(&s.scenario);
        let scenario = if s.scenario.ends_with(".toml") && scenario_path.is_relative() {
            resolve(base, scenario_path).to_string_lossy().into_owned()
        } else {
            s.scenario
        };
        schedule.push(DrtSchedule {
            scenario,
            cluster: s.cluster,
            every: s.every,
            first_after: s.first_after,
            sandbox: s.sandbox,
            sandbox_dir: s.sandbox_dir.map(|d| resolve(base, &d)),
            duration: s.duration,
        });
    }
    DrtConfig { schedule }
}

/// Check one `[credentials.NAME]` entry (`field` is its path) and resolve its paths.
fn validate_credentials(
    field: &str,
    c: FileCredentials,
    base: &Path,
) -> Result<CredentialsConfig, ConfigError> {
    let bad = |m: &str| ConfigError::invalid(field, m);
    let FileCredentials {
        user,
        password_file,
        password_env,
        credentials_file,
    } = c;
    if let Some(p) = credentials_file {
        if user.is_some() || password_file.is_some() || password_env.is_some() {
            return Err(bad(
                "give either credentials_file, or user with password_file or \
                 password_env, not both",
            ));
        }
        if p.as_os_str().is_empty() {
            return Err(bad("credentials_file must not be empty"));
        }
        return Ok(CredentialsConfig::File {
            credentials_file: resolve(base, &p),
        });
    }
    let Some(user) = user else {
        return Err(bad(
            "needs credentials_file, or user with password_file or password_env",
        ));
    };
    if user.is_empty() {
        return Err(bad("user must not be empty"));
    }
    let password = match (password_file, password_env) {
        (Some(_), Some(_)) => {
            return Err(bad("give only one of password_file and password_env"));
        }
        (None, None) => {
            return Err(bad(&format!(
                "user {} needs password_file or password_env",
                quote(&user)
            )));
        }
        (Some(p), None) if p.as_os_str().is_empty() => {
            return Err(bad("password_file must not be empty"));
        }
        (Some(p), None) => PasswordSource::PasswordFile(resolve(base, &p)),
        (None, Some(v)) if v.is_empty() || v.contains('=') || v.contains('\0') => {
            return Err(bad(
                "password_env must be the name of an environment variable",
            ));
        }
        (None, Some(v)) => PasswordSource::PasswordEnv(v),
    };
    Ok(CredentialsConfig::User { user, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_drops_quoted_strings_in_type_errors() {
        assert_eq!(
            scrub("invalid type: string \"s3cr3t\", expected u32"),
            "invalid type: string, expected u32"
        );
        assert_eq!(
            scrub("invalid string\nexpected `\"`, `'`"),
            "invalid string; expected `\"`, `'`"
        );
        assert_eq!(scrub("unknown field `x`"), "unknown field `x`");
    }

    #[test]
    fn lines_count_from_one() {
        let t = "a\nb\nc";
        assert_eq!(line_of(t, 0), 1);
        assert_eq!(line_of(t, 2), 2);
        assert_eq!(line_of(t, 4), 3);
        assert_eq!(line_of(t, 100), 3);
    }
}
