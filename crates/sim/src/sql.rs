//! The statements a simulated server understands, recognised from their text: what dbfleet's
//! probe, monitor and heartbeat send, and what mysql_async sends after connecting. Anything
//! else is [`Statement::Unknown`].

use std::time::Duration;

/// One recognised statement.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Statement {
    /// `SELECT @@a, @@global.b …`: the variables' names, lower case, without `@@`/scope.
    SelectVars(Vec<(String, String)>),
    /// `SELECT VERSION()`.
    SelectVersion,
    /// `SELECT 1` and other constant probes: one row, one column.
    SelectConst(String),
    /// `SHOW [GLOBAL|SESSION] VARIABLES|STATUS [WHERE Variable_name IN (…) | LIKE '…']`.
    Show { status: bool, filter: Filter },
    /// `SHOW SLAVE STATUS` / `SHOW REPLICA STATUS`.
    ReplicaStatus,
    /// `SHOW SLAVE HOSTS` / `SHOW REPLICA HOSTS` / `SHOW REPLICAS`.
    ReplicaHosts,
    /// `SELECT SLEEP(n)`.
    Sleep(Duration),
    /// A write to the heartbeat table: the `ts_us` it writes.
    HeartbeatWrite(u64),
    /// `SELECT <cols> FROM dbfleet.heartbeat …`: the columns asked for.
    HeartbeatRead(Vec<String>),
    /// `SELECT GROUP_CONCAT(VARIABLE_NAME, '=', VARIABLE_VALUE SEPARATOR ',') FROM
    /// information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN (…)`: the names, lower case.
    StatusConcat(Vec<String>),
    /// Statements answered with OK and no effect: `SET`, `CREATE … IF NOT EXISTS`, `BEGIN`,
    /// `COMMIT`, `ROLLBACK`, `DO`, `USE`.
    Ok,
    /// `SELECT CONNECTION_ID()`: this connection's id.
    ConnectionId,
    /// `SELECT … FROM information_schema.PROCESSLIST …`: no rows (the simulated server
    /// lists no client threads).
    EmptyProcesslist(Vec<String>),
    /// `KILL [CONNECTION|QUERY] n`: OK, no effect (a simulated connection ends on its own).
    Kill,
    /// `SELECT … FROM information_schema.DISKS`: error 1109, as a MariaDB without the
    /// `disks` plugin answers (the probe then has no free-space figure).
    NoDisksPlugin,
    /// Anything else.
    Unknown,
}

/// Which names a `SHOW` asks for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Filter {
    All,
    /// `WHERE Variable_name IN (…)`, lower case.
    In(Vec<String>),
    /// `LIKE 'pattern'`, lower case, with `%` and `_`.
    Like(String),
}

/// Split a multi-statement query on `;` outside quotes and comments, dropping empty parts.
pub(crate) fn split(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = sql.as_bytes();
    let (mut start, mut quote, mut i) = (0, None::<u8>, 0);
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(_) if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' || c == b'`' => quote = Some(c),
            None if c == b'/' && bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |e| i + 2 + e + 1);
            }
            None if c == b';' => {
                out.push(&sql[start..i]);
                start = i + 1;
            }
            None => {}
        }
        i += 1;
    }
    out.push(&sql[start..]);
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

/// The statement without `/* … */` comments, trimmed, with runs of whitespace made one space.
fn normalise(sql: &str) -> String {
    let mut s = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find("/*") {
        s.push_str(&rest[..i]);
        s.push(' ');
        rest = rest[i..].find("*/").map_or("", |e| &rest[i + e + 2..]);
    }
    s.push_str(rest);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Recognise one statement.
pub(crate) fn parse(sql: &str) -> Statement {
    let text = normalise(sql);
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> = lower.split(' ').collect();
    match words.as_slice() {
        ["show", "slave", "status"] | ["show", "replica", "status"] => Statement::ReplicaStatus,
        ["show", "slave", "hosts"] | ["show", "replica", "hosts"] | ["show", "replicas"] => {
            Statement::ReplicaHosts
        }
        ["show", rest @ ..] => show(rest, &lower),
        ["set", ..]
        | ["begin"]
        | ["commit"]
        | ["rollback"]
        | ["start", "transaction", ..]
        | ["do", ..]
        | ["use", ..]
        | ["create", "database", "if", "not", "exists", ..]
        | ["create", "schema", "if", "not", "exists", ..]
        | ["create", "table", "if", "not", "exists", ..] => Statement::Ok,
        ["replace" | "insert", "into", table, ..] if is_heartbeat(table) => heartbeat_write(&lower),
        ["select", ..] => select(&lower),
        ["kill", ..] => Statement::Kill,
        _ => Statement::Unknown,
    }
}

fn is_heartbeat(table: &str) -> bool {
    let t = table.replace('`', "");
    t == "dbfleet.heartbeat" || t.starts_with("dbfleet.heartbeat(")
}

fn show(rest: &[&str], lower: &str) -> Statement {
    let rest = match rest {
        ["global" | "session", r @ ..] => r,
        r => r,
    };
    let status = match rest.first() {
        Some(&"variables") => false,
        Some(&"status") => true,
        _ => return Statement::Unknown,
    };
    let filter = match &rest[1..] {
        [] => Filter::All,
        ["like", ..] => match quoted(lower.split_once(" like ").map_or("", |x| x.1)).first() {
            Some(p) => Filter::Like(p.clone()),
            None => return Statement::Unknown,
        },
        ["where", "variable_name", "in", ..] => {
            let list = lower.split_once(" in ").map_or("", |x| x.1);
            Filter::In(quoted(list))
        }
        ["where", "variable_name", "=", ..] => {
            Filter::In(quoted(lower.split_once('=').map_or("", |x| x.1)))
        }
        _ => return Statement::Unknown,
    };
    Statement::Show { status, filter }
}

/// The single-quoted (or double-quoted) strings in `s`, in order.
fn quoted(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' {
            let mut v = String::new();
            for d in chars.by_ref() {
                if d == c {
                    break;
                }
                v.push(d);
            }
            out.push(v);
        }
    }
    out
}

fn select(lower: &str) -> Statement {
    let body = lower["select".len()..].trim();
    if let Some(arg) = body
        .strip_prefix("sleep(")
        .and_then(|a| a.split(')').next())
    {
        return match arg.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s >= 0.0 => Statement::Sleep(Duration::from_secs_f64(s)),
            _ => Statement::Unknown,
        };
    }
    if body == "version()" {
        return Statement::SelectVersion;
    }
    if body == "connection_id()" {
        return Statement::ConnectionId;
    }
    if let Some((cols, from)) = body.split_once(" from ") {
        let table = from.split(' ').next().unwrap_or("");
        if is_heartbeat(table) {
            let cols = cols.split(',').map(|c| c.trim().to_string()).collect();
            return Statement::HeartbeatRead(cols);
        }
        if table == "information_schema.disks" {
            return Statement::NoDisksPlugin;
        }
        if table == "information_schema.processlist" {
            let cols = cols
                .split(',')
                .map(|c| c.rsplit(" as ").next().unwrap_or(c).trim().to_string())
                .collect();
            return Statement::EmptyProcesslist(cols);
        }
        if table == "information_schema.global_status" && cols.starts_with("group_concat(") {
            return match from.split_once(" where ") {
                Some((_, cond)) if cond.trim_start().starts_with("variable_name in") => {
                    Statement::StatusConcat(quoted(cond))
                }
                _ => Statement::Unknown,
            };
        }
        return Statement::Unknown;
    }
    if body.starts_with("@@") {
        let mut vars = Vec::new();
        for item in body.split(',') {
            let item = item.trim();
            let (expr, alias) = match item.split_once(" as ") {
                Some((e, a)) => (e.trim(), Some(a.trim())),
                None => (item, None),
            };
            let Some(name) = expr.strip_prefix("@@") else {
                return Statement::Unknown;
            };
            let name = name
                .strip_prefix("global.")
                .or_else(|| name.strip_prefix("session."))
                .unwrap_or(name);
            let label = alias.map_or_else(|| expr.to_string(), str::to_string);
            vars.push((name.to_string(), label));
        }
        return Statement::SelectVars(vars);
    }
    if !body.is_empty() && body.chars().all(|c| c.is_ascii_digit()) {
        return Statement::SelectConst(body.to_string());
    }
    Statement::Unknown
}

fn heartbeat_write(lower: &str) -> Statement {
    // `… VALUES (1, <ts_us>, @@server_id)` or `… SELECT 1, <ts_us>, @@server_id FROM DUAL
    // WHERE @@read_only = 0`: the second value is the timestamp.
    let values = lower
        .split_once(" values")
        .or_else(|| lower.split_once(" select "))
        .map(|(_, v)| v.trim().trim_start_matches('('))
        .unwrap_or("");
    match values.split(',').nth(1).map(|v| v.trim().parse::<u64>()) {
        Some(Ok(ts)) => Statement::HeartbeatWrite(ts),
        _ => Statement::Unknown,
    }
}

/// Whether `name` matches a SQL `LIKE` pattern (lower case both).
pub(crate) fn like(name: &str, pattern: &str) -> bool {
    fn go(n: &[u8], p: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'%', rest)) => (0..=n.len()).any(|i| go(&n[i..], rest)),
            Some((b'_', rest)) => !n.is_empty() && go(&n[1..], rest),
            Some((b'\\', [c, rest @ ..])) => n.first() == Some(c) && go(&n[1..], rest),
            Some((c, rest)) => n.first() == Some(c) && go(&n[1..], rest),
        }
    }
    go(name.as_bytes(), pattern.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_batch() {
        let sql = "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('version','server_id'); \
                   SHOW GLOBAL STATUS WHERE Variable_name IN ('uptime'); SHOW SLAVE STATUS";
        let parts = split(sql);
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parse(parts[0]),
            Statement::Show {
                status: false,
                filter: Filter::In(vec!["version".into(), "server_id".into()])
            }
        );
        assert_eq!(parse(parts[2]), Statement::ReplicaStatus);
    }

    #[test]
    fn connect_and_liveness() {
        assert_eq!(
            parse("SELECT @@max_allowed_packet,@@wait_timeout"),
            Statement::SelectVars(vec![
                ("max_allowed_packet".into(), "@@max_allowed_packet".into()),
                ("wait_timeout".into(), "@@wait_timeout".into())
            ])
        );
        assert_eq!(
            parse("SELECT /* dbfleet liveness */ SLEEP(3.000)"),
            Statement::Sleep(Duration::from_secs(3))
        );
        assert_eq!(parse("SET SESSION max_statement_time = 0"), Statement::Ok);
    }

    #[test]
    fn status_concat() {
        assert_eq!(
            parse("SELECT GROUP_CONCAT(VARIABLE_NAME, '=', VARIABLE_VALUE SEPARATOR ',') FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ('uptime','Threads_running')"),
            Statement::StatusConcat(vec!["uptime".into(), "threads_running".into()])
        );
    }

    #[test]
    fn heartbeat() {
        assert_eq!(
            parse("REPLACE INTO dbfleet.heartbeat (id, ts_us, server_id) VALUES (1, 1700000000123456, @@server_id)"),
            Statement::HeartbeatWrite(1_700_000_000_123_456)
        );
        assert_eq!(
            parse("REPLACE INTO dbfleet.heartbeat (id, ts_us, server_id) SELECT 1, 1700000000123456, @@server_id FROM DUAL WHERE @@read_only = 0"),
            Statement::HeartbeatWrite(1_700_000_000_123_456)
        );
        assert_eq!(
            parse("SELECT ts_us FROM dbfleet.heartbeat WHERE id = 1"),
            Statement::HeartbeatRead(vec!["ts_us".into()])
        );
        assert_eq!(
            parse("CREATE TABLE IF NOT EXISTS dbfleet.heartbeat (id INT PRIMARY KEY)"),
            Statement::Ok
        );
        assert_eq!(parse("DROP TABLE t"), Statement::Unknown);
    }

    #[test]
    fn quotes_and_like() {
        assert_eq!(split("SELECT ';'; SELECT 1").len(), 2);
        assert!(like("com_select", "com\\_%"));
        assert!(!like("comxselect", "com\\_%"));
        assert!(like("threads_running", "threads%"));
    }
}
