//! Pages of long lists: the `next` path a full page carries, and the cursors the routes
//! take (`after_id` of the event log, `before_id` of problem history and operations,
//! `after` of instances). Each is a keyset cursor: the key of the last record of the page
//! before, so a page costs the store its own size wherever it starts.

use model::InstanceAddr;

use crate::error::ApiError;

/// The path `route` with `pairs` as its query, each value percent-encoded.
pub(crate) fn next_path(route: &str, pairs: &[(&str, &str)]) -> String {
    let mut path = route.to_string();
    for (i, (name, value)) in pairs.iter().enumerate() {
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str(name);
        path.push('=');
        path.push_str(&percent_encode(value));
    }
    path
}

/// `text` with every byte but the unreserved ones (RFC 3986) percent-encoded, for a query
/// value.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `after` cursor of `GET /api/v1/instances` for an instance: `CLUSTER/HOST:PORT`.
pub(crate) fn instance_cursor(cluster: &str, addr: &InstanceAddr) -> String {
    format!("{cluster}/{addr}")
}

/// The instance an `after` cursor names, or a 400 saying what it should look like.
pub(crate) fn parse_instance_cursor(text: &str) -> Result<(String, InstanceAddr), ApiError> {
    let bad = |why: String| {
        ApiError::BadRequest(format!(
            "query parameter `after` must be CLUSTER/HOST:PORT (the `next` of the page \
             before): {why}"
        ))
    };
    let (cluster, addr) = text
        .split_once('/')
        .ok_or_else(|| bad("there is no `/`".into()))?;
    if cluster.is_empty() {
        return Err(bad("the cluster is empty".into()));
    }
    let addr = addr
        .parse::<InstanceAddr>()
        .map_err(|e| bad(e.to_string()))?;
    Ok((cluster.to_string(), addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_junk_is_refused() {
        let a: InstanceAddr = "db-1.example:3306".parse().unwrap();
        let text = instance_cursor("main.eu", &a);
        assert_eq!(parse_instance_cursor(&text).unwrap(), ("main.eu".into(), a));
        for junk in [
            "main",
            "/db:1",
            "main/",
            "main/db",
            "main/db:99999",
            "main/db:x",
        ] {
            let e = parse_instance_cursor(junk).unwrap_err().to_string();
            assert!(e.contains("`after`"), "{junk}: {e}");
        }
        assert_eq!(
            next_path("/api/v1/x", &[("after", "a b/c:1"), ("limit", "5")]),
            "/api/v1/x?after=a%20b%2Fc%3A1&limit=5"
        );
    }
}
