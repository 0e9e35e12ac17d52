//! Rules and the `[alert]` section: parsing from TOML, validation errors that name the field,
//! and the default rules.

use std::time::Duration;

use alert::{
    default_rule_specs, default_rules, validate_rules, AlertConfig, Condition, NotifierSpec, Op,
    ProblemMatch, RuleSpec, Severity,
};
use model::ProblemKind;

/// The `[alert]` section as the config crate will embed it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    alert: AlertConfig,
}

fn parse(text: &str) -> AlertConfig {
    toml::from_str::<File>(text).expect("parses").alert
}

/// The fields of every validation error, in order.
fn error_fields(text: &str) -> Vec<String> {
    match parse(text).validate() {
        Ok(_) => panic!("expected validation errors"),
        Err(es) => es.into_iter().map(|e| e.field).collect(),
    }
}

#[test]
fn metric_and_problem_rules_parse() {
    let c = parse(
        r#"
        [alert]
        default_rules = false

        [[alert.rule]]
        name = "lag"
        metric = "heartbeat_lag_seconds"
        op = ">="
        threshold = 10
        rising = true
        for = "30s"
        severity = "critical"
        labels = { team = "dba" }
        summary = "{instance} lag {value}s (limit {threshold})"

        [[alert.rule]]
        name = "stopped"
        problem = "ReplicaNotReplicating"
        severity = "error"

        [[alert.rule]]
        name = "pages"
        problem = "page"
        for = "0s"
        severity = "critical"
        "#,
    );
    let rules = c.validate().expect("valid");
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0].name, "lag");
    assert_eq!(
        rules[0].condition,
        Condition::Metric {
            metric: "heartbeat_lag_seconds".into(),
            op: Op::Ge,
            threshold: 10.0,
            rising: true
        }
    );
    assert_eq!(rules[0].for_duration, Duration::from_secs(30));
    assert_eq!(rules[0].severity, Severity::Critical);
    assert_eq!(rules[0].labels["team"], "dba");
    assert_eq!(
        rules[1].condition,
        Condition::Problem(ProblemMatch::Kind(ProblemKind::ReplicaNotReplicating))
    );
    assert_eq!(rules[1].for_duration, Duration::ZERO);
    assert_eq!(
        rules[2].condition,
        Condition::Problem(ProblemMatch::PageWorthy)
    );
}

#[test]
fn every_operator_parses() {
    for (text, op) in [
        (">", Op::Gt),
        (">=", Op::Ge),
        ("<", Op::Lt),
        ("<=", Op::Le),
        ("==", Op::Eq),
        ("!=", Op::Ne),
    ] {
        let c = parse(&format!(
            "[alert]\n[[alert.rule]]\nname = \"r\"\nmetric = \"up\"\nop = \"{text}\"\nthreshold = 1\nseverity = \"info\"\n"
        ));
        assert_eq!(c.rule[0].op, Some(op), "{text}");
    }
}

#[test]
fn unknown_keys_and_bad_values_fail_to_parse() {
    for (text, needle) in [
        (
            "[alert]\n[[alert.rule]]\nname = \"r\"\nmetrc = \"up\"\n",
            "unknown field `metrc`",
        ),
        (
            "[alert]\n[[alert.rule]]\nname = \"r\"\nop = \"=>\"\n",
            "unknown variant `=>`",
        ),
        (
            "[alert]\n[[alert.rule]]\nname = \"r\"\nseverity = \"page\"\n",
            "unknown variant `page`",
        ),
        (
            "[alert]\n[[alert.rule]]\nname = \"r\"\nfor = \"soon\"\n",
            "for",
        ),
        ("[alert]\nrules = []\n", "unknown field `rules`"),
        (
            "[alert]\n[[alert.notifier]]\nkind = \"email\"\n",
            "unknown variant `email`",
        ),
        (
            "[alert]\n[[alert.notifier]]\nkind = \"pagerduty\"\nrouting_key = \"abc\"\n",
            "unknown field `routing_key`",
        ),
    ] {
        let err = toml::from_str::<File>(text).err().expect(text).to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn validation_errors_name_the_field() {
    let rule = |body: &str| format!("[alert]\ndefault_rules = false\n[[alert.rule]]\n{body}\n");
    for (body, fields) in [
        (
            "name = \"no condition\"\nseverity = \"info\"",
            vec!["alert.rule[0].name", "alert.rule[0].metric"],
        ),
        (
            "name = \"r\"\nmetric = \"up\"\nseverity = \"info\"",
            vec!["alert.rule[0].op", "alert.rule[0].threshold"],
        ),
        (
            "name = \"r\"\nmetric = \"up\"\nop = \"<\"\nthreshold = 1",
            vec!["alert.rule[0].severity"],
        ),
        (
            "name = \"r\"\nmetric = \"up\"\nproblem = \"page\"\nop = \"<\"\nthreshold = 1\nseverity = \"info\"",
            vec!["alert.rule[0].problem"],
        ),
        (
            "name = \"r\"\nproblem = \"ReplicationStopped\"\nseverity = \"info\"",
            vec!["alert.rule[0].problem"],
        ),
        (
            "name = \"r\"\nproblem = \"page\"\nthreshold = 3\nseverity = \"info\"",
            vec!["alert.rule[0].threshold"],
        ),
        (
            "name = \"r\"\nmetric = \"Heartbeat Lag\"\nop = \">\"\nthreshold = 1\nseverity = \"info\"",
            vec!["alert.rule[0].metric"],
        ),
        (
            "name = \"r\"\nmetric = \"lag\"\nop = \">\"\nthreshold = 1\nrising = true\nseverity = \"info\"",
            vec!["alert.rule[0].rising"],
        ),
        (
            "name = \"r\"\nmetric = \"lag\"\nop = \"<\"\nthreshold = 1\nrising = true\nfor = \"1m\"\nseverity = \"info\"",
            vec!["alert.rule[0].rising"],
        ),
        (
            "name = \"r\"\nmetric = \"lag\"\nop = \">\"\nthreshold = nan\nseverity = \"info\"",
            vec!["alert.rule[0].threshold"],
        ),
        (
            "name = \"a/b\"\nproblem = \"page\"\nseverity = \"info\"",
            vec!["alert.rule[0].name"],
        ),
        (
            "name = \"r\"\nproblem = \"page\"\nseverity = \"info\"\nlabels = { \"bad label\" = \"x\" }",
            vec!["alert.rule[0].labels.bad label"],
        ),
        (
            "name = \"r\"\nproblem = \"page\"\nseverity = \"info\"\nsummary = \"{value} is high\"",
            vec!["alert.rule[0].summary"],
        ),
        (
            "name = \"r\"\nmetric = \"up\"\nop = \"<\"\nthreshold = 1\nseverity = \"info\"\nsummary = \"{instance\"",
            vec!["alert.rule[0].summary"],
        ),
    ] {
        assert_eq!(error_fields(&rule(body)), fields, "{body}");
    }

    // Duplicates name the second entry and point at the first.
    let c = parse(
        "[alert]\n[[alert.rule]]\nname = \"x\"\nproblem = \"page\"\nseverity = \"info\"\n\
         [[alert.rule]]\nname = \"x\"\nproblem = \"page\"\nseverity = \"info\"\n",
    );
    let errs = c.validate().unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "alert.rule[1].name");
    assert!(errs[0].message.contains("alert.rule[0]"), "{}", errs[0]);

    // An unknown problem lists what is allowed.
    let errs = parse(&rule(
        "name = \"r\"\nproblem = \"ReplicationStopped\"\nseverity = \"info\"",
    ))
    .validate()
    .unwrap_err();
    assert!(
        errs[0].message.contains("\"page\"") && errs[0].message.contains("ReplicaNotReplicating"),
        "{}",
        errs[0]
    );
}

#[test]
fn notifier_sections_parse_and_validate() {
    let c = parse(
        r#"
        [alert]
        queue_capacity = 64

        [[alert.notifier]]
        kind = "webhook"
        name = "ops"
        url = "http://127.0.0.1:9/hook"
        headers = { "X-Team" = "dba" }
        min_severity = "warning"
        timeout = "5s"
        retry = { max_attempts = 3, initial_backoff = "200ms", max_backoff = "2s", max_total = "10s" }

        [[alert.notifier]]
        kind = "pagerduty"
        url = "http://127.0.0.1:9/v2/enqueue"
        routing_key_file = "secrets/pagerduty.key"
        "#,
    );
    assert_eq!(c.queue_capacity, 64);
    c.validate().expect("valid");
    match &c.notifier[0] {
        NotifierSpec::Webhook(w) => {
            assert_eq!(w.min_severity, Severity::Warning);
            assert_eq!(w.retry.max_attempts, 3);
            assert_eq!(w.retry.initial_backoff, Duration::from_millis(200));
            assert_eq!(w.timeout, Duration::from_secs(5));
        }
        other => panic!("{other:?}"),
    }
    match &c.notifier[1] {
        NotifierSpec::Pagerduty(p) => {
            assert_eq!(p.min_severity, Severity::Error);
            assert_eq!(p.retry.max_attempts, 5);
            assert_eq!(c.notifier[1].name(), "pagerduty");
        }
        other => panic!("{other:?}"),
    }

    // The default PagerDuty URL is https, which is fine; other schemes are refused.
    let fields = error_fields(
        "[alert]\n[[alert.notifier]]\nkind = \"pagerduty\"\nrouting_key_file = \"k\"\n\
         [[alert.notifier]]\nkind = \"pagerduty\"\nurl = \"ftp://x\"\nrouting_key_file = \"k\"\n\
         retry = { max_attempts = 0 }\n\
         [[alert.notifier]]\nkind = \"webhook\"\nname = \"ops\"\nurl = \"http://h/\"\n\
         headers = { \"Bad Header\" = \"x\" }\ntimeout = \"0s\"\n",
    );
    assert_eq!(
        fields,
        vec![
            "alert.notifier[1].name",
            "alert.notifier[1].url",
            "alert.notifier[1].retry.max_attempts",
            "alert.notifier[2].timeout",
            "alert.notifier[2].headers.Bad Header",
        ]
    );
}

#[test]
fn notifier_secrets_are_read_on_build_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pd.key"), "R0UT1NGKEYSECRET\n").unwrap();
    std::fs::write(
        dir.path().join("hook.headers"),
        "# secret headers\nAuthorization: Bearer HEADERSECRET\n",
    )
    .unwrap();
    let c = parse(
        r#"
        [alert]
        [[alert.notifier]]
        kind = "pagerduty"
        url = "http://127.0.0.1:9/v2/enqueue"
        routing_key_file = "pd.key"
        [[alert.notifier]]
        kind = "webhook"
        url = "http://127.0.0.1:9/path-token-SECRETPATH"
        headers_file = "hook.headers"
        "#,
    );
    let notifiers = c.build_notifiers(dir.path()).expect("builds");
    let debug = format!("{notifiers:?}");
    for secret in ["R0UT1NGKEYSECRET", "HEADERSECRET", "SECRETPATH"] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(debug.contains("Authorization") || debug.contains("authorization"));

    // A missing file is named; a file with a malformed line names the line, not its text.
    std::fs::write(
        dir.path().join("bad.headers"),
        "Authorization Bearer LEAKME\n",
    )
    .unwrap();
    let c = parse(
        "[alert]\n[[alert.notifier]]\nkind = \"pagerduty\"\nurl = \"http://h/\"\nrouting_key_file = \"missing.key\"\n\
         [[alert.notifier]]\nkind = \"webhook\"\nurl = \"http://h/\"\nheaders_file = \"bad.headers\"\n",
    );
    let e = c.build_notifiers(dir.path()).unwrap_err();
    assert_eq!(e.field, "alert.notifier[0].routing_key_file");
    assert!(e.message.contains("missing.key"), "{e}");
    let e = c.notifier[1].build(dir.path()).unwrap_err();
    assert_eq!(e.field, "headers_file");
    assert!(
        e.message.contains("line 1") && !e.message.contains("LEAKME"),
        "{e}"
    );

    std::fs::write(dir.path().join("blank.key"), "  \n").unwrap();
    let c = parse(
        "[alert]\n[[alert.notifier]]\nkind = \"pagerduty\"\nurl = \"http://h/\"\nrouting_key_file = \"blank.key\"\n",
    );
    let e = c.build_notifiers(dir.path()).unwrap_err();
    assert_eq!(e.field, "alert.notifier[0].routing_key_file");
}

#[test]
fn defaults_are_valid_and_cover_the_issue() {
    let specs = default_rule_specs();
    let rules = default_rules();
    assert_eq!(specs.len(), rules.len());
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "instance_down",
            "replication_io_stopped",
            "replication_sql_stopped",
            "heartbeat_lag_high",
            "connections_near_max",
            "threads_running_saturated",
            "page_worthy_problem",
        ]
    );
    let lag = &rules[3];
    assert!(matches!(
        &lag.condition,
        Condition::Metric { metric, op: Op::Gt, rising: true, .. } if metric == "heartbeat_lag_seconds"
    ));
    assert_eq!(
        rules[6].condition,
        Condition::Problem(ProblemMatch::PageWorthy)
    );

    // The specs round-trip through TOML, so `config validate` can print them.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Rules {
        rule: Vec<RuleSpec>,
    }
    let text = toml::to_string(&Rules {
        rule: specs.clone(),
    })
    .unwrap();
    let back: Rules = toml::from_str(&text).unwrap();
    assert_eq!(back.rule, specs);
}

#[test]
fn user_rules_replace_or_disable_defaults() {
    let c = parse(
        r#"
        [alert]
        [[alert.rule]]
        name = "heartbeat_lag_high"
        metric = "heartbeat_lag_seconds"
        op = ">"
        threshold = 5
        rising = true
        for = "20s"
        severity = "critical"

        [[alert.rule]]
        name = "threads_running_saturated"
        enabled = false

        [[alert.rule]]
        name = "mine"
        metric = "queries_per_second"
        op = "<"
        threshold = 1
        severity = "info"
        "#,
    );
    let rules = c.validate().expect("valid");
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "instance_down",
            "replication_io_stopped",
            "replication_sql_stopped",
            "heartbeat_lag_high",
            "connections_near_max",
            "page_worthy_problem",
            "mine",
        ]
    );
    assert_eq!(rules[3].severity, Severity::Critical);
    assert_eq!(rules[3].for_duration, Duration::from_secs(20));

    // Without defaults, only the user's rules.
    let rules = validate_rules(&c.rule, false).unwrap();
    assert_eq!(rules.len(), 2);
}
