//! Tests of loading, validation, secrets and the sandbox config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use model::{InstanceAddr, PromotionRule};

use crate::*;

const EXAMPLE: &str = include_str!("../../../docs/dbfleet.example.toml");

/// The smallest valid config, with `extra` appended.
fn minimal(extra: &str) -> String {
    format!(
        r#"
[store]
data_dir = "state"

[credentials.admin]
user = "dbfleet"
password_env = "DBFLEET_TEST_UNUSED"

[[cluster]]
name = "main"
credentials = "admin"
[[cluster.instance]]
addr = "127.0.0.1:23306"
{extra}"#
    )
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_str_at(text, Path::new("/etc/dbfleet"))
}

/// The single `Invalid` problem of an error, as `(field, message)`.
fn invalid(e: &ConfigError) -> (String, String) {
    match e {
        ConfigError::Invalid { field, message, .. } => (field.clone(), message.clone()),
        other => panic!("expected one Invalid error, got {other:?} ({other})"),
    }
}

#[test]
fn example_parses() {
    let c = parse(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.store.data_dir, PathBuf::from("/var/lib/dbfleet"));
    assert_eq!(
        c.api.tokens_file.as_deref(),
        Some(Path::new("/etc/dbfleet/tokens.txt"))
    );
    assert_eq!(c.clusters.len(), 2);
    assert_eq!(c.credentials.len(), 3);
    let specs = c.cluster_specs();
    assert_eq!(specs[0].name, "main");
    assert_eq!(specs[0].instances.len(), 3);
    assert_eq!(specs[0].expected_replicas, 2);
    assert_eq!(
        specs[0].instances[2].promotion,
        PromotionRule::MustNot,
        "{specs:?}"
    );
    assert_eq!(specs[1].name, "billing");
    assert_eq!(specs[1].expected_replicas, 0);
    assert_eq!(specs[1].max_lag, Duration::from_secs(10));
}

#[test]
fn example_is_fully_commented() {
    let mut previous = "";
    for (n, line) in EXAMPLE.lines().enumerate() {
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') {
            assert!(
                previous.starts_with('#'),
                "line {} of the example has no comment above it: {t}",
                n + 1
            );
        }
        previous = t;
    }
}

#[test]
fn example_shows_every_key() {
    fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    out.push(k.clone());
                    keys(v, out);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let c = parse(EXAMPLE).unwrap();
    let mut found = Vec::new();
    keys(&c.redacted_summary(), &mut found);
    for k in found {
        if c.credentials.contains_key(&k) || ["cluster", "instance"].contains(&k.as_str()) {
            continue;
        }
        assert!(
            EXAMPLE.contains(&format!("\n{k} = "))
                || EXAMPLE.contains(&format!("\n[{k}]"))
                || EXAMPLE.contains(&format!("\n[{k}.")),
            "the example does not set {k}"
        );
    }
    for k in ["password_env", "credentials_file", "[[cluster.instance]]"] {
        assert!(EXAMPLE.contains(k), "{k}");
    }
}

#[test]
fn failover_safety_policies_parse_and_default() {
    let c = parse(&minimal("")).unwrap();
    let f = &c.clusters[0].failover;
    assert_eq!(f.fence, FencePolicy::BestEffort);
    assert_eq!(f.on_possible_loss, PossibleLossPolicy::Page);
    assert_eq!(f.semi_sync_shortfall, SemiSyncShortfallPolicy::Page);
    assert_eq!(f.min_semi_sync_replicas, 1);
    assert_eq!(f.statement_timeout, Duration::from_millis(250));
    assert_eq!(f.fence_command, None);
    let c = parse(&minimal(
        "[cluster.failover]\nfence = \"required\"\nfence_command = \"/bin/true\"\n\
         on_possible_loss = \"promote\"\nsemi_sync_shortfall = \"relax\"\n\
         min_semi_sync_replicas = 2\nstatement_timeout = \"100ms\"",
    ))
    .unwrap();
    let f = &c.clusters[0].failover;
    assert_eq!(f.fence, FencePolicy::Required);
    assert_eq!(f.on_possible_loss, PossibleLossPolicy::Promote);
    assert_eq!(f.semi_sync_shortfall, SemiSyncShortfallPolicy::Relax);
    assert_eq!(f.min_semi_sync_replicas, 2);
    assert_eq!(f.statement_timeout, Duration::from_millis(100));
    let e = parse(&minimal("[cluster.failover]\nfence = \"always\"")).unwrap_err();
    assert!(e.to_string().contains("always"), "{e}");
}

#[test]
fn defaults_apply() {
    let c = parse(&minimal("")).unwrap();
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:7070");
    assert_eq!(c.api.tokens_file, None);
    assert!(!c.api.require_token_for_reads);
    assert_eq!(c.api.max_connections, 256);
    assert_eq!(c.api.header_timeout, Duration::from_secs(10));
    assert_eq!(c.probe, ProbeConfig::default());
    assert_eq!(c.probe.interval, Duration::from_secs(1));
    assert_eq!(c.probe.connect_timeout, Duration::from_millis(500));
    assert_eq!(c.probe.query_timeout, Duration::from_millis(500));
    assert_eq!(c.probe.concurrency, 256);
    assert_eq!(c.probe.discovery_interval, Duration::from_secs(10));
    let cl = &c.clusters[0];
    assert_eq!(cl.expected_replicas, 0);
    assert!(!cl.semi_sync);
    assert!(!cl.drt_allowed);
    assert_eq!(cl.max_lag, Duration::from_secs(10));
    assert_eq!(cl.instances[0].promotion, PromotionRule::Neutral);
    assert_eq!(
        c.cluster_specs(),
        vec![model::ClusterSpec {
            name: "main".into(),
            instances: vec![model::InstanceSpec {
                addr: InstanceAddr::new("127.0.0.1", 23306),
                promotion: PromotionRule::Neutral,
                site: None,
            }],
            expected_replicas: 0,
            semi_sync: false,
            max_lag: Duration::from_secs(10),
            stall_confirm: model::DEFAULT_STALL_CONFIRM,
            storage: Default::default(),
        }]
    );
    assert!(c.cluster("main").is_some());
    assert!(c.cluster("other").is_none());
}

#[test]
fn values_override_defaults() {
    let c = parse(&minimal(
        r#"
[[cluster.instance]]
addr = "[::1]:23307"
promotion = "must_not"
[probe]
interval = "250ms"
connect_timeout = "2s"
query_timeout = "1m 30s"
concurrency = 8
discovery_interval = "1m"
[api]
listen = "[::1]:9000"
tokens_file = "/abs/tokens"
require_token_for_reads = true
"#,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.probe.interval, Duration::from_millis(250));
    assert_eq!(c.probe.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.probe.query_timeout, Duration::from_secs(90));
    assert_eq!(c.probe.concurrency, 8);
    assert_eq!(c.probe.discovery_interval, Duration::from_secs(60));
    assert_eq!(c.api.listen.to_string(), "[::1]:9000");
    assert_eq!(c.api.tokens_file.as_deref(), Some(Path::new("/abs/tokens")));
    assert!(c.api.require_token_for_reads);
    let cl = &c.clusters[0];
    assert_eq!(cl.expected_replicas, 1, "defaults to instances - 1");
    assert_eq!(cl.instances[1].addr, InstanceAddr::new("::1", 23307));
    assert_eq!(cl.instances[1].promotion, PromotionRule::MustNot);
}

#[test]
fn invalid_values_name_their_field() {
    let two_clusters = |second_addr: &str| {
        minimal(&format!(
            r#"
[[cluster]]
name = "second"
credentials = "admin"
[[cluster.instance]]
addr = "{second_addr}"
"#
        ))
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            two_clusters("127.0.0.1"),
            "cluster[1].instance[0].addr",
            "\"127.0.0.1\" has no port",
        ),
        (
            two_clusters("127.0.0.1:0"),
            "cluster[1].instance[0].addr",
            "bad port",
        ),
        (
            two_clusters("127.0.0.1:23306"),
            "cluster[1].instance[0].addr",
            "127.0.0.1:23306 is already declared at cluster[0].instance[0]",
        ),
        (
            minimal("[[cluster.instance]]\naddr = \"127.0.0.1:23306\""),
            "cluster[0].instance[1].addr",
            "already declared at cluster[0].instance[0]",
        ),
        (
            minimal("[cluster.failover]\nfence = \"required\""),
            "cluster[0].failover.fence",
            "needs a fence_command",
        ),
        (
            minimal("[cluster.failover]\nstatement_timeout = \"5ms\""),
            "cluster[0].failover.statement_timeout",
            "must be at least 10ms",
        ),
        (
            minimal("[cluster.failover]\nfence_command = \" \""),
            "cluster[0].failover.fence_command",
            "empty command",
        ),
        (
            minimal("[cluster.detection]\nstall_confirm = \"900ms\""),
            "cluster[0].detection.stall_confirm",
            "must be 0s (off) or between 1s and 1h",
        ),
        (
            minimal("[cluster.detection]\nstall_confirm = \"2h\""),
            "cluster[0].detection.stall_confirm",
            "must be 0s (off) or between 1s and 1h",
        ),
        (
            minimal("[cluster.failover]\nwrite_stall_failover_after = \"500ms\""),
            "cluster[0].failover.write_stall_failover_after",
            "must be between 1s and 1h",
        ),
        (
            minimal("[cluster.detection]\ndisk_free_warning_percent = 5\ndisk_free_error_percent = 8"),
            "cluster[0].detection.disk_free_error_percent",
            "at most disk_free_warning_percent",
        ),
        (
            minimal("[monitor]\nwrite_timeout = \"2s\""),
            "monitor.write_timeout",
            "between 50ms and 1s",
        ),
        (
            minimal("[probe]\ninterval = \"49ms\""),
            "probe.interval",
            "must be at least 50ms",
        ),
        (
            minimal("[probe]\nconnect_timeout = \"0s\""),
            "probe.connect_timeout",
            "must be more than 0s",
        ),
        (
            minimal("[probe]\nquery_timeout = \"0s\""),
            "probe.query_timeout",
            "must be more than 0s",
        ),
        (
            minimal("[probe]\nconcurrency = 0"),
            "probe.concurrency",
            "at least 1",
        ),
        (
            minimal("[probe]\ninterval = \"5s\"\ndiscovery_interval = \"1s\""),
            "probe.discovery_interval",
            "at least probe.interval (5s)",
        ),
        (
            minimal("[api]\nrequire_token_for_reads = true"),
            "api.require_token_for_reads",
            "needs api.tokens_file",
        ),
        (
            minimal("[api]\ntokens_file = \"\""),
            "api.tokens_file",
            "must not be empty",
        ),
        (
            minimal("[api]\nmax_connections = 0"),
            "api.max_connections",
            "at least 1",
        ),
        (
            minimal("[api]\nheader_timeout = \"0s\""),
            "api.header_timeout",
            "above zero",
        ),
        (
            minimal("").replace("credentials = \"admin\"", "credentials = \"x\""),
            "cluster[0].credentials",
            "cluster \"main\": credentials \"x\" is not defined in [credentials]",
        ),
        (
            minimal("").replace("name = \"main\"", "name = \"has space\""),
            "cluster[0].name",
            "not a valid cluster name",
        ),
        (
            minimal("").replace("name = \"main\"", "name = \"\""),
            "cluster[0].name",
            "not a valid cluster name",
        ),
        (
            minimal("[[cluster]]\nname = \"main\"\ncredentials = \"admin\"\n[[cluster.instance]]\naddr = \"h:1\""),
            "cluster[1].name",
            "cluster \"main\" is already declared at cluster[0]",
        ),
        (
            minimal("[[cluster]]\nname = \"empty\"\ncredentials = \"admin\""),
            "cluster[1].instance",
            "cluster \"empty\" has no instances",
        ),
        (
            minimal("").replace("data_dir = \"state\"", "data_dir = \"\""),
            "store.data_dir",
            "must not be empty",
        ),
        (
            minimal("[credentials.both]\ncredentials_file = \"a.toml\"\nuser = \"u\""),
            "credentials.both",
            "either credentials_file, or user",
        ),
        (
            minimal("[credentials.none]"),
            "credentials.none",
            "needs credentials_file, or user",
        ),
        (
            minimal("[credentials.nopw]\nuser = \"u\""),
            "credentials.nopw",
            "user \"u\" needs password_file or password_env",
        ),
        (
            minimal("[credentials.twopw]\nuser = \"u\"\npassword_file = \"p\"\npassword_env = \"E\""),
            "credentials.twopw",
            "only one of password_file and password_env",
        ),
        (
            minimal("[credentials.nouser]\npassword_file = \"p\""),
            "credentials.nouser",
            "needs credentials_file, or user",
        ),
        (
            minimal("[credentials.badenv]\nuser = \"u\"\npassword_env = \"\""),
            "credentials.badenv",
            "password_env must be the name of an environment variable",
        ),
        (
            minimal("[cluster.failover]\nretry_backoff = \"50ms\""),
            "cluster[0].failover.retry_backoff",
            "must be at least 100ms",
        ),
        (
            minimal("[cluster.failover]\nretry_backoff = \"5s\"\nretry_backoff_max = \"2s\""),
            "cluster[0].failover.retry_backoff_max",
            "must be at least retry_backoff",
        ),
        (
            minimal("[cluster.failover]\nretry_backoff_max = \"2h\""),
            "cluster[0].failover.retry_backoff_max",
            "must be at most 1h",
        ),
        (
            minimal("[credentials.\"odd name\"]\nuser = \"\"\npassword_env = \"E\""),
            "credentials.\"odd name\"",
            "user must not be empty",
        ),
    ];
    for (text, field, fragment) in cases {
        let e = parse(&text).expect_err(&format!("should fail for {field}:\n{text}"));
        let (f, m) = invalid(&e);
        assert_eq!(f, field, "{e}");
        assert!(m.contains(fragment), "{field}: {m:?} lacks {fragment:?}");
        // Located: the line it names holds the field, or the table the field is missing
        // from.
        let ConfigError::Invalid { at: Some(at), .. } = &e else {
            panic!("{field}: no location: {e:?}");
        };
        let prefix = format!("dbfleet.toml:{}:{}: {field}: ", at.line, at.column);
        assert!(e.to_string().starts_with(&prefix), "{e}");
        let line = text.lines().nth(at.line - 1).unwrap().trim();
        let last = field.rsplit('.').next().unwrap();
        let last = last.split('[').next().unwrap().trim_matches('"');
        assert!(
            line.contains(last) || line.starts_with('['),
            "{field}: line {} is {line:?}",
            at.line
        );
    }
}

#[test]
fn invalid_but_declared_credentials_are_reported_once() {
    let text = minimal("").replace("password_env = \"DBFLEET_TEST_UNUSED\"", "");
    let e = parse(&text).unwrap_err();
    assert_eq!(invalid(&e).0, "credentials.admin");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = minimal(
        r#"
[[cluster.instance]]
addr = "nope"
[probe]
interval = "1ms"
concurrency = 0
"#,
    )
    .replace("credentials = \"admin\"", "credentials = \"x\"");
    let e = parse(&text).unwrap_err();
    let fields: Vec<String> = e.problems().into_iter().map(|p| invalid(p).0).collect();
    assert_eq!(
        fields,
        [
            "probe.interval",
            "probe.concurrency",
            "cluster[0].credentials",
            "cluster[0].instance[1].addr"
        ]
    );
    let shown = e.to_string();
    assert!(shown.starts_with("4 problems:"), "{shown}");
    assert!(
        shown.contains("\n  dbfleet.toml:18:12: probe.interval: must be at least 50ms"),
        "{shown}"
    );
}

#[test]
fn parse_errors_name_the_line_but_do_not_echo_it() {
    let text = minimal("").replace(
        "password_env = \"DBFLEET_TEST_UNUSED\"",
        "passwrd = \"s3cr3t-XYZ\"",
    );
    let line = text
        .lines()
        .position(|l| l.contains("passwrd"))
        .map(|i| i + 1);
    let e = parse(&text).unwrap_err();
    match &e {
        ConfigError::Parse {
            path,
            line: l,
            message,
        } => {
            assert_eq!(path, Path::new("dbfleet.toml"));
            assert_eq!(*l, line);
            assert!(message.contains("unknown field `passwrd`"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let shown = format!("{e} {e:?}");
    assert!(
        shown.contains(&format!("dbfleet.toml:{}:", line.unwrap())),
        "{shown}"
    );
    assert!(!shown.contains("s3cr3t-XYZ"), "{shown}");

    // Other parse errors name their line too.
    for (bad, needle) in [
        ("[probe]\ninterval = \"1 fortnight\"", "invalid duration"),
        ("[probe]\ninterval = 1", "a duration needs a unit"),
        (
            "[api]\nlisten = \"localhost:7070\"",
            "invalid listen address",
        ),
        (
            "[api]\nlisten = \"127.0.0.1:7070\"\nlisten = \"x\"",
            "duplicate key",
        ),
        (
            "[[cluster.instance]]\naddr = \"h:1\"\npromotion = \"preferred\"",
            "unknown variant `preferred`",
        ),
        (
            "[probe]\nconcurrency = \"s3cr3t-XYZ\"",
            "invalid type: string, expected",
        ),
    ] {
        let text = minimal(bad);
        let e = parse(&text).unwrap_err();
        let ConfigError::Parse { line, message, .. } = &e else {
            panic!("{bad}: {e:?}");
        };
        assert!(message.contains(needle), "{bad}: {message}");
        assert!(!message.contains('\n'), "{message}");
        assert!(!message.contains("s3cr3t-XYZ"), "{message}");
        let last = text.lines().count();
        assert_eq!(*line, Some(last), "{bad}: {e}");
    }

    let e = parse("[api]\n").unwrap_err();
    assert!(e.to_string().contains("missing field `store`"), "{e}");
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(dir.path().join("secrets/admin.password"), "pw-1\n").unwrap();
    std::fs::write(
        dir.path().join("admin.toml"),
        "user = \"root\"\npassword = \"pw-2\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("tokens.txt"), "# ops\n\n  tok-a  \ntok-b\n").unwrap();
    let path = dir.path().join("dbfleet.toml");
    std::fs::write(
        &path,
        r#"
[store]
data_dir = "state"
[api]
tokens_file = "tokens.txt"
[credentials.admin]
user = "dbfleet"
password_file = "secrets/admin.password"
[credentials.sandbox]
credentials_file = "admin.toml"
[credentials.abs]
credentials_file = "/nowhere/admin.toml"
[[cluster]]
name = "main"
credentials = "sandbox"
[[cluster.instance]]
addr = "127.0.0.1:23306"
"#,
    )
    .unwrap();
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let base = std::path::absolute(dir.path()).unwrap();
    assert_eq!(c.store.data_dir, base.join("state"));
    assert_eq!(c.api.tokens_file, Some(base.join("tokens.txt")));
    assert_eq!(
        c.credentials["admin"],
        CredentialsConfig::User {
            user: "dbfleet".into(),
            password: PasswordSource::PasswordFile(base.join("secrets/admin.password")),
        }
    );
    assert_eq!(
        c.credentials["sandbox"],
        CredentialsConfig::File {
            credentials_file: base.join("admin.toml")
        }
    );
    assert_eq!(
        c.credentials["abs"],
        CredentialsConfig::File {
            credentials_file: PathBuf::from("/nowhere/admin.toml")
        }
    );

    let admin = c.resolve_credentials("admin").unwrap();
    assert_eq!((admin.user.as_str(), admin.password()), ("dbfleet", "pw-1"));
    let sandbox = c.resolve_credentials("sandbox").unwrap();
    assert_eq!(
        sandbox.into_parts(),
        ("root".to_string(), "pw-2".to_string())
    );

    let tokens = c.api.load_tokens().unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.accepts("tok-a") && tokens.accepts("tok-b"));
    assert!(!tokens.accepts("# ops") && !tokens.accepts("") && !tokens.accepts("tok-"));
    assert_eq!(format!("{tokens:?}"), "ApiTokens { count: 2 }");

    // "abs" cannot be read: check_secrets reports it, and only it.
    let e = c.check_secrets().unwrap_err();
    assert!(
        matches!(&e, ConfigError::Io { path, .. } if path == Path::new("/nowhere/admin.toml")),
        "{e:?}"
    );

    let e = c.resolve_credentials("missing").unwrap_err();
    assert_eq!(invalid(&e).0, "credentials");

    let e = Config::load(&dir.path().join("absent.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("absent.toml"), "{e}");
}

#[test]
fn passwords_come_from_the_environment() {
    let var = "DBFLEET_CONFIG_TEST_PASSWORD_ENV";
    let text = minimal("").replace("DBFLEET_TEST_UNUSED", var);
    let c = parse(&text).unwrap();
    std::env::remove_var(var);
    let e = c.resolve_credentials("admin").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("credentials.admin.password_env: environment variable {var} is not set")
    );
    std::env::set_var(var, "from-env");
    let r = c.resolve_credentials("admin").unwrap();
    assert_eq!(r.password(), "from-env");
    std::env::remove_var(var);
}

/// A password in a password file, an environment variable or a credentials file, malformed
/// in every way we can think of, never shows up in any error, `Debug`, `Display` or summary.
#[test]
fn secrets_are_never_printed() {
    const SECRET: &str = "s3cr3t-XYZ";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
    write("good.password", &format!("{SECRET}\n"));
    write("empty.password", "\n");
    write(
        "good.toml",
        &format!("user = \"u\"\npassword = \"{SECRET}\"\n"),
    );
    write("raw.toml", SECRET);
    write("kv.toml", &format!("{SECRET} = 1\n"));
    write(
        "unterminated.toml",
        &format!("user = \"u\"\npassword = \"{SECRET}\n"),
    );
    write("bare.toml", &format!("user = \"u\"\npassword = {SECRET}\n"));
    write(
        "array.toml",
        &format!("user = \"u\"\npassword = [\"{SECRET}\"]\n"),
    );
    write("number.toml", "user = \"u\"\npassword = 987654321\n");
    write(
        "extra.toml",
        &format!("user = \"u\"\npassword = \"x\"\npasswd = \"{SECRET}\"\n"),
    );
    write("nouser.toml", &format!("password = \"{SECRET}\"\n"));
    std::fs::write(d.join("binary.password"), [0xff, 0xfe, b's', b'3']).unwrap();

    let env_ok = "DBFLEET_CONFIG_TEST_SECRET_OK";
    std::env::set_var(env_ok, SECRET);
    let env_bad = "DBFLEET_CONFIG_TEST_SECRET_NOT_UTF8";
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut bytes = SECRET.as_bytes().to_vec();
        bytes.push(0xff);
        std::env::set_var(env_bad, std::ffi::OsStr::from_bytes(&bytes));
    }

    let mut text = String::from("[store]\ndata_dir = \"state\"\n");
    let entries = [
        ("pwfile", "user = \"u\"\npassword_file = \"good.password\""),
        (
            "pwempty",
            "user = \"u\"\npassword_file = \"empty.password\"",
        ),
        (
            "pwbinary",
            "user = \"u\"\npassword_file = \"binary.password\"",
        ),
        (
            "pwmissing",
            "user = \"u\"\npassword_file = \"missing.password\"",
        ),
        (
            "envok",
            &format!("user = \"u\"\npassword_env = \"{env_ok}\""),
        ),
        (
            "envbad",
            &format!("user = \"u\"\npassword_env = \"{env_bad}\""),
        ),
        ("file", "credentials_file = \"good.toml\""),
        ("raw", "credentials_file = \"raw.toml\""),
        ("kv", "credentials_file = \"kv.toml\""),
        ("unterminated", "credentials_file = \"unterminated.toml\""),
        ("bare", "credentials_file = \"bare.toml\""),
        ("array", "credentials_file = \"array.toml\""),
        ("number", "credentials_file = \"number.toml\""),
        ("extra", "credentials_file = \"extra.toml\""),
        ("nouser", "credentials_file = \"nouser.toml\""),
    ];
    for (name, body) in &entries {
        text.push_str(&format!("[credentials.{name}]\n{body}\n"));
    }
    text.push_str(
        "[[cluster]]\nname = \"main\"\ncredentials = \"pwfile\"\n[[cluster.instance]]\naddr = \"h:1\"\n",
    );
    let c = Config::from_str_at(&text, d).unwrap_or_else(|e| panic!("{e}"));

    let mut shown = vec![
        format!("{c:?}"),
        c.redacted_summary().to_string(),
        format!("{:?}", c.check_secrets()),
    ];
    if let Err(e) = c.check_secrets() {
        shown.push(e.to_string());
    }
    let mut resolved = 0;
    for (name, _) in &entries {
        match c.resolve_credentials(name) {
            Ok(r) => {
                resolved += 1;
                assert_eq!(r.password(), SECRET, "{name}");
                shown.push(format!("{r:?} {r:#?}"));
            }
            Err(e) => {
                let mut s = format!("{e} | {e:?} | {e:#?}");
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    s.push_str(&format!(" | {c} | {c:?}"));
                    cause = c.source();
                }
                shown.push(s);
            }
        }
    }
    assert_eq!(resolved, 3, "pwfile, envok and file resolve");

    // A secret typed into the main config by mistake is not echoed either.
    for bad in [
        format!("password = \"{SECRET}\""),
        format!("[probe]\nconcurrency = \"{SECRET}\""),
        format!("[api]\nrequire_token_for_reads = \"{SECRET}\""),
        format!("[store]\ndata_dir = [\"{SECRET}\"]"),
    ] {
        let e = parse(&format!("{bad}\n{}", minimal(""))).unwrap_err();
        shown.push(format!("{e} | {e:?}"));
    }

    for s in &shown {
        assert!(!s.contains(SECRET), "a secret leaked: {s}");
        assert!(!s.contains("987654321"), "a secret leaked: {s}");
    }
    // The errors still say what is wrong and where.
    let all = shown.join("\n");
    for needle in [
        "credentials.pwempty.password_file:",
        "empty.password is empty",
        "environment variable DBFLEET_CONFIG_TEST_SECRET_NOT_UTF8 is not valid UTF-8",
        "raw.toml:1: not valid TOML",
        "unterminated.toml:2: not valid TOML",
        "password must be a string",
        "holds only the keys user and password",
        "user is missing",
        "missing.password",
    ] {
        assert!(all.contains(needle), "{needle} missing from:\n{all}");
    }
    std::env::remove_var(env_ok);
    std::env::remove_var(env_bad);
}

#[test]
fn summary_shows_where_secrets_are_but_not_their_values() {
    let c = parse(EXAMPLE).unwrap();
    let s = c.redacted_summary();
    assert_eq!(s["store"]["data_dir"], "/var/lib/dbfleet");
    assert_eq!(s["probe"]["interval"], "1s");
    assert_eq!(s["probe"]["connect_timeout"], "500ms");
    assert_eq!(s["api"]["listen"], "127.0.0.1:7070");
    assert_eq!(
        s["credentials"]["admin"],
        serde_json::json!({"user": "dbfleet", "password_file": "/etc/dbfleet/secrets/admin.password"})
    );
    assert_eq!(
        s["credentials"]["reporting"]["password_env"],
        "DBFLEET_REPORTING_PASSWORD"
    );
    assert_eq!(
        s["credentials"]["sandbox"],
        serde_json::json!({"credentials_file": "/tmp/dbfleet-sandbox/demo/admin.toml"})
    );
    assert_eq!(s["cluster"][0]["instance"][0]["addr"], "10.0.0.11:3306");
    assert_eq!(s["cluster"][0]["instance"][0]["promotion"], "prefer");
    assert_eq!(s["cluster"][1]["expected_replicas"], 0);
}

#[test]
fn the_summary_is_itself_a_valid_config() {
    let c = parse(EXAMPLE).unwrap();
    let text = toml::to_string(&c).unwrap();
    let again = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again, c);
}

#[test]
fn sandbox_config_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("my \"sandbox\"").join("admin.toml");
    std::fs::create_dir_all(creds.parent().unwrap()).unwrap();
    std::fs::write(&creds, "user = \"root\"\npassword = \"pw\"\n").unwrap();
    let data_dir = dir.path().join("state");
    let instances = [
        (InstanceAddr::new("127.0.0.1", 23306), true),
        (InstanceAddr::new("127.0.0.1", 23307), false),
        (InstanceAddr::new("::1", 23308), false),
    ];
    for semi_sync in [false, true] {
        let text = sandbox_config(
            "demo-1", &data_dir, &creds, &creds, &instances, semi_sync, None,
        );
        assert!(text.starts_with("# "), "{text}");
        let c = Config::from_str_at(&text, Path::new("/elsewhere"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(c.store.data_dir, data_dir);
        let specs = c.cluster_specs();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "demo-1");
        assert_eq!(specs[0].expected_replicas, 2);
        assert_eq!(specs[0].semi_sync, semi_sync);
        let addrs: Vec<_> = specs[0].instances.iter().map(|i| i.addr.clone()).collect();
        let want: Vec<_> = instances.iter().map(|(a, _)| a.clone()).collect();
        assert_eq!(addrs, want);
        let r = c.resolve_credentials(&c.clusters[0].credentials).unwrap();
        assert_eq!((r.user.as_str(), r.password()), ("root", "pw"));
        assert_eq!(
            c.clusters[0].replication_credentials.as_deref(),
            Some("repl")
        );
        assert_eq!(c.clusters[0].failover.mode, crate::FailoverMode::Auto);
        c.check_secrets().unwrap();
    }
}

#[test]
fn drt_schedule_needs_a_cluster_that_allows_drts() {
    let base = r#"
[store]
data_dir = "/tmp/x"
[credentials.a]
user = "u"
password_env = "P"
[[cluster]]
name = "c1"
credentials = "a"
drt_allowed = DRT
[[cluster.instance]]
addr = "127.0.0.1:3306"
[[drt.schedule]]
scenario = "kill-primary"
cluster = "CLUSTER"
every = "EVERY"
sandbox = "c1"
"#;
    let text = |drt: &str, cluster: &str, every: &str| {
        base.replace("DRT", drt)
            .replace("CLUSTER", cluster)
            .replace("EVERY", every)
    };
    let c = parse(&text("true", "c1", "168h")).unwrap();
    assert_eq!(c.drt.schedule.len(), 1);
    assert_eq!(
        c.drt.schedule[0].every,
        std::time::Duration::from_secs(168 * 3600)
    );
    assert_eq!(c.drt.schedule[0].first_after, None);
    let e = parse(&text("false", "c1", "1h")).unwrap_err().to_string();
    assert!(
        e.contains("drt.schedule[0].cluster") && e.contains("does not allow DRTs"),
        "{e}"
    );
    let e = parse(&text("true", "nope", "1h")).unwrap_err().to_string();
    assert!(e.contains("no [[cluster]] is named \"nope\""), "{e}");
    let e = parse(&text("true", "c1", "10ms")).unwrap_err().to_string();
    assert!(e.contains("drt.schedule[0].every"), "{e}");
}

#[test]
fn detection_stall_confirm_reaches_the_spec() {
    let c = parse(&minimal("")).unwrap();
    assert_eq!(
        c.clusters[0].spec().stall_confirm,
        model::DEFAULT_STALL_CONFIRM
    );
    let c = parse(&minimal("[cluster.detection]\nstall_confirm = \"2500ms\"")).unwrap();
    assert_eq!(
        c.clusters[0].spec().stall_confirm,
        Duration::from_millis(2500)
    );
    let c = parse(&minimal("[cluster.detection]\nstall_confirm = \"0s\"")).unwrap();
    assert!(c.clusters[0].spec().stall_confirm.is_zero(), "0s: off");
    let err = parse(&minimal("[cluster.detection]\nstall = \"2s\"")).unwrap_err();
    assert!(err.to_string().contains("stall"), "{err}");
}

/// Write `text` to `path` with permission bits `mode`.
fn write_mode(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn secret_files_open_to_others_warn_or_with_strict_permissions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("admin.password");
    let tokens = dir.path().join("tokens.txt");
    write_mode(&pw, "pw-1\n", 0o644);
    write_mode(&tokens, "tok-a\n", 0o644);
    let text = |strict: bool| {
        format!(
            "strict_permissions = {strict}\n{}",
            minimal("[api]\ntokens_file = \"tokens.txt\"\n").replace(
                "password_env = \"DBFLEET_TEST_UNUSED\"",
                "password_file = \"admin.password\""
            )
        )
    };
    let path = dir.path().join("dbfleet.toml");
    std::fs::write(&path, text(false)).unwrap();
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.strict_permissions);
    let shown: Vec<String> = c
        .permission_warnings()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        [
            format!(
                "credentials.admin.password_file: {} is readable by others (mode 0644): \
                 chmod 600 it (or 640 for a group of readers)",
                pw.display()
            ),
            format!(
                "api.tokens_file: {} is readable by others (mode 0644): chmod 600 it (or 640 \
                 for a group of readers)",
                tokens.display()
            ),
        ]
    );
    c.check_secrets()
        .expect("only a warning without strict_permissions");

    std::fs::write(&path, text(true)).unwrap();
    let c = Config::load(&path).unwrap();
    assert!(c.strict_permissions);
    let e = c.check_secrets().unwrap_err();
    let fields: Vec<String> = e.problems().into_iter().map(|p| invalid(p).0).collect();
    assert_eq!(
        fields,
        ["credentials.admin.password_file", "api.tokens_file"]
    );
    let shown = e.to_string();
    assert!(
        shown.contains(&format!(
            "{} is readable by others (mode 0644)",
            pw.display()
        )) && shown.contains("strict_permissions = true"),
        "{shown}"
    );

    // Owner only, or read by a group, passes; group write or any bit for others does not.
    for (mode, ok) in [
        (0o600, true),
        (0o400, true),
        (0o640, true),
        (0o660, false),
        (0o602, false),
        (0o601, false),
    ] {
        write_mode(&pw, "pw-1\n", mode);
        write_mode(&tokens, "tok-a\n", 0o600);
        assert_eq!(c.permission_warnings().is_empty(), ok, "{mode:o}");
        assert_eq!(c.check_secrets().is_ok(), ok, "{mode:o}");
    }
}

#[test]
fn validation_errors_name_line_and_column() {
    let text = minimal("[cluster.failover]\nmode = \"auto\"\n  block_window = \"0s\"\n");
    let e = parse(&text).unwrap_err();
    let line = text
        .lines()
        .position(|l| l.contains("block_window"))
        .unwrap()
        + 1;
    assert_eq!(
        e.to_string(),
        format!(
            "dbfleet.toml:{line}:18: cluster[0].failover.block_window: must be more than 0 \
             with mode = \"auto\": a zero window lets failovers flap"
        )
    );
    // A field left out (a default) is located at the table it is missing from.
    let text = minimal("[probe]\ninterval = \"20s\"\n");
    let e = parse(&text).unwrap_err();
    let line = text.lines().position(|l| l == "[probe]").unwrap() + 1;
    assert!(
        e.to_string().starts_with(&format!(
            "dbfleet.toml:{line}:1: probe.discovery_interval: "
        )),
        "{e}"
    );
    // Errors found after loading (a secret that cannot be read) have no line.
    let e = ConfigError::invalid("credentials.admin.password_env", "not set");
    assert_eq!(e.to_string(), "credentials.admin.password_env: not set");
}

#[test]
fn echoed_values_are_cut_short() {
    let long = "x".repeat(5_000_000);
    let text = minimal("").replace("name = \"main\"", &format!("name = \"{long}\""));
    let e = parse(&text).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.len() < 400,
        "{} bytes: {}",
        shown.len(),
        &shown[..400]
    );
    assert!(
        shown.contains(&format!(
            "\"{}\"… (5000000 bytes) is not a valid cluster name",
            "x".repeat(80)
        )),
        "{shown}"
    );
    // The same for a credentials name in a field path, an address and a toml message.
    let text = minimal(&format!(
        "[credentials.{long}]\nuser = \"\"\npassword_env = \"E\"\n"
    ));
    let shown = parse(&text).unwrap_err().to_string();
    assert!(
        shown.len() < 400 && shown.contains("… (5000000 bytes)"),
        "{}",
        &shown[..400.min(shown.len())]
    );
    let text = minimal("").replace("127.0.0.1:23306", &long);
    let shown = parse(&text).unwrap_err().to_string();
    assert!(
        shown.len() < 400 && shown.contains("… (5000000 bytes) has no port"),
        "{}",
        &shown[..400.min(shown.len())]
    );
    let text = minimal(&format!("[probe]\n{long} = 1\n"));
    let shown = parse(&text).unwrap_err().to_string();
    assert!(shown.len() < 1000, "{}", &shown[..1000.min(shown.len())]);
}

#[test]
fn cluster_tls_files_are_resolved_checked_and_paired() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "client.pem", "client-key.pem"] {
        std::fs::write(dir.path().join(f), "pem").unwrap();
    }
    let text = |tls: &str| {
        format!(
            "[store]\ndata_dir = \"state\"\n[credentials.admin]\nuser = \"dbfleet\"\n\
             password_env = \"DBFLEET_TEST_UNUSED\"\n[[cluster]]\nname = \"main\"\n\
             credentials = \"admin\"\n{tls}\n[[cluster.instance]]\naddr = \"127.0.0.1:23306\"\n"
        )
    };
    let at = |t: &str| Config::from_str_at(&text(t), dir.path());

    let c = at("tls = \"verify_identity\"\ntls_ca_file = \"ca.pem\"\n\
                tls_cert_file = \"client.pem\"\ntls_key_file = \"client-key.pem\"")
    .unwrap();
    let tls = &c.clusters[0].tls;
    assert_eq!(tls.mode, model::TlsMode::VerifyIdentity);
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(dir.path().join("ca.pem").as_path())
    );
    assert_eq!(
        tls.key_file.as_deref(),
        Some(dir.path().join("client-key.pem").as_path())
    );
    // The key is a secret file: its permissions are checked like the others'.
    assert!(c
        .secret_files()
        .iter()
        .any(|(field, _)| field == "cluster[0].tls_key_file"));
    // The default is off, with no file.
    assert_eq!(
        at("").unwrap().clusters[0].tls,
        model::TlsSettings::default()
    );

    for (t, field, says) in [
        ("tls = \"secure\"", "verify_identity", "unknown variant"),
        (
            "tls_ca_file = \"ca.pem\"",
            "cluster[0].tls_ca_file",
            "tls = \"off\"",
        ),
        (
            "tls = \"verify_ca\"\ntls_ca_file = \"missing.pem\"",
            "cluster[0].tls_ca_file",
            "cannot read",
        ),
        (
            "tls = \"required\"\ntls_cert_file = \"client.pem\"",
            "cluster[0].tls_key_file",
            "go together",
        ),
    ] {
        let e = at(t).unwrap_err().to_string();
        assert!(e.contains(field) && e.contains(says), "{t}: {e}");
    }
}
