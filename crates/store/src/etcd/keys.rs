//! The etcd key layout: every key the etcd backend reads or writes is built here.
//!
//! The layout is described in the `etcd` module's documentation.

/// Keys under one namespace prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    root: String,
}

/// The counters that give out ids and terms.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Counter {
    Events,
    Problems,
    Operations,
    Term,
}

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Self::Events => "events",
            Self::Problems => "problems",
            Self::Operations => "operations",
            Self::Term => "term",
        }
    }
}

impl Keys {
    /// Keys under `prefix`, with a `/` added when it does not end with one.
    pub(crate) fn new(prefix: &str) -> Self {
        let mut root = prefix.to_owned();
        if !root.ends_with('/') {
            root.push('/');
        }
        Self { root }
    }

    /// The namespace prefix, ending with `/`.
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    pub(crate) fn cluster(&self, name: &str) -> String {
        format!("{}clusters/{}", self.root, seg(name))
    }

    pub(crate) fn clusters(&self) -> String {
        format!("{}clusters/", self.root)
    }

    pub(crate) fn instance(&self, cluster: &str, addr: &str) -> String {
        format!("{}instances/{}/{}", self.root, seg(cluster), seg(addr))
    }

    /// The prefix of one cluster's instances, or of every instance.
    pub(crate) fn instances(&self, cluster: Option<&str>) -> String {
        match cluster {
            Some(c) => format!("{}instances/{}/", self.root, seg(c)),
            None => format!("{}instances/", self.root),
        }
    }

    pub(crate) fn observation(&self, addr: &str) -> String {
        format!("{}observations/{}", self.root, seg(addr))
    }

    pub(crate) fn observations(&self) -> String {
        format!("{}observations/", self.root)
    }

    pub(crate) fn problem(&self, id: i64) -> String {
        id_key(&self.problems(), id)
    }

    pub(crate) fn problems(&self) -> String {
        format!("{}problems/all/", self.root)
    }

    pub(crate) fn open_problem(&self, cluster: &str, key: &str) -> String {
        format!("{}problems/open/{}/{}", self.root, seg(cluster), seg(key))
    }

    /// The prefix of one cluster's open problems, or of every open problem.
    pub(crate) fn open_problems(&self, cluster: Option<&str>) -> String {
        match cluster {
            Some(c) => format!("{}problems/open/{}/", self.root, seg(c)),
            None => format!("{}problems/open/", self.root),
        }
    }

    pub(crate) fn problem_sync(&self, cluster: &str) -> String {
        format!("{}problems/sync/{}", self.root, seg(cluster))
    }

    pub(crate) fn event(&self, id: i64) -> String {
        id_key(&self.events(), id)
    }

    pub(crate) fn events(&self) -> String {
        format!("{}events/", self.root)
    }

    pub(crate) fn operation(&self, id: i64) -> String {
        id_key(&self.operations(), id)
    }

    pub(crate) fn operations(&self) -> String {
        format!("{}operations/", self.root)
    }

    pub(crate) fn lock(&self, cluster: &str) -> String {
        format!("{}locks/{}", self.root, seg(cluster))
    }

    pub(crate) fn leader(&self) -> String {
        format!("{}leader", self.root)
    }

    pub(crate) fn counter(&self, c: Counter) -> String {
        format!("{}counters/{}", self.root, c.name())
    }

    /// The key of a setting, or the prefix of the settings whose keys start with `key`.
    pub(crate) fn setting(&self, key: &str) -> String {
        format!("{}settings/{}", self.root, key)
    }

    /// The settings key a full etcd key names.
    pub(crate) fn setting_name<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.root.as_str())?
            .strip_prefix("settings/")
    }
}

/// A name as one key segment: `%` and `/` are percent-escaped, nothing else changes.
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
    out
}

/// `prefix` followed by `id` zero-padded to 20 digits (ids are positive `i64`s, at most 19
/// digits), so that keys sort as their ids do. A negative id maps to id 0.
pub(crate) fn id_key(prefix: &str, id: i64) -> String {
    format!("{prefix}{:020}", id.max(0))
}

/// The end of the key range of every key starting with `prefix` (etcd's `range_end`): the
/// prefix with its last byte below 0xff incremented and what follows dropped.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix was empty): the range runs to the end of the
    // keyspace, which etcd spells as "\0".
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_reach_into_other_keys() {
        let k = Keys::new("/dbfleet");
        assert_eq!(k.root(), "/dbfleet/");
        assert_eq!(
            k.open_problem("c1", "ReplicaLagging/10.0.0.2:3306"),
            "/dbfleet/problems/open/c1/ReplicaLagging%2F10.0.0.2:3306"
        );
        assert!(!k
            .instance("c1/x", "a:1")
            .starts_with(&k.instances(Some("c1"))));
        assert_eq!(seg("50%/x"), "50%25%2Fx");
        assert_eq!(k.event(42), "/dbfleet/events/00000000000000000042");
        assert_eq!(k.event(i64::MAX).len(), k.events().len() + 20);
        assert_eq!(k.setting_name("/dbfleet/settings/a/b"), Some("a/b"));
    }

    #[test]
    fn prefix_end_is_the_next_key_range() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }
}
