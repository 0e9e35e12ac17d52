//! The topology view of one cluster: which instance is the primary, the role of each, and
//! the order they are listed in (the primary's tree depth-first, then the orphans).

use std::collections::{BTreeMap, BTreeSet};

use model::analysis::{find_primary, replication_tree};
use model::{InstanceAddr, Observation};
use store::{InstanceRecord, Origin};

use api::wire::{Node, Role, Topology};

/// What is known of one address.
#[derive(Default)]
struct Known<'a> {
    origin: Option<Origin>,
    observation: Option<&'a Observation>,
}

/// The topology of `cluster` from its instances and the last observations filed under it.
///
/// The primary is [`find_primary`]'s. Every address the store lists, observed, or named as
/// the primary is a node. Nodes come in this order:
///
/// 1. the primary's tree ([`replication_tree`]), depth-first, children sorted by address;
/// 2. the other nodes (`orphan: true`): each orphan root (no source, or a source that is not
///    itself an orphan) with its own subtree, roots by address;
/// 3. any node left, which only a replication cycle leaves, by address.
pub fn build(
    cluster: &str,
    instances: &[InstanceRecord],
    observations: &[Observation],
) -> Topology {
    let guess = find_primary(observations);
    let primary = guess.addr();

    let mut known: BTreeMap<&InstanceAddr, Known> = BTreeMap::new();
    for i in instances.iter().filter(|i| i.cluster == cluster) {
        known.entry(&i.addr).or_default().origin = Some(i.origin);
    }
    for o in observations {
        let k = known.entry(&o.addr).or_default();
        // The latest observation wins, as in analysis.
        if k.observation
            .is_none_or(|prev| prev.at_unix_ms <= o.at_unix_ms)
        {
            k.observation = Some(o);
        }
    }
    if let Some(p) = primary {
        known.entry(p).or_default();
    }

    let source_of = |addr: &InstanceAddr| -> Option<&InstanceAddr> {
        let state = known.get(addr)?.observation?.state()?;
        state.replication.as_ref().map(|r| &r.source)
    };
    // Children by source, each list sorted by address (the map iterates in address order).
    let mut children: BTreeMap<&InstanceAddr, Vec<&InstanceAddr>> = BTreeMap::new();
    for &addr in known.keys() {
        if let Some(source) = source_of(addr) {
            children.entry(source).or_default().push(addr);
        }
    }

    let mut walk = Walk {
        known: &known,
        children: &children,
        primary,
        visited: BTreeSet::new(),
        nodes: Vec::new(),
    };
    if let Some(p) = primary {
        let tree: BTreeSet<&InstanceAddr> = replication_tree(observations, p)
            .into_iter()
            .map(|o| &o.addr)
            .chain([p])
            .collect();
        walk.dfs(p, 0, false, Some(&tree));
    }
    let rest: Vec<&InstanceAddr> = known
        .keys()
        .copied()
        .filter(|a| !walk.visited.contains(a))
        .collect();
    let orphan_roots: Vec<&InstanceAddr> = rest
        .iter()
        .copied()
        .filter(|&a| source_of(a).is_none_or(|s| !rest.contains(&s)))
        .collect();
    for root in orphan_roots {
        walk.dfs(root, 0, true, None);
    }
    for addr in rest {
        walk.dfs(addr, 0, true, None);
    }

    Topology {
        cluster: cluster.to_string(),
        primary: primary.map(ToString::to_string),
        nodes: walk.nodes,
    }
}

/// A depth-first walk that lists each node once.
struct Walk<'k, 'a> {
    known: &'k BTreeMap<&'a InstanceAddr, Known<'a>>,
    children: &'k BTreeMap<&'a InstanceAddr, Vec<&'a InstanceAddr>>,
    primary: Option<&'a InstanceAddr>,
    visited: BTreeSet<&'a InstanceAddr>,
    nodes: Vec<Node>,
}

impl<'a> Walk<'_, 'a> {
    /// Lists `addr` and its unlisted descendants (only those in `within`, when given).
    fn dfs(
        &mut self,
        addr: &'a InstanceAddr,
        depth: usize,
        orphan: bool,
        within: Option<&BTreeSet<&'a InstanceAddr>>,
    ) {
        if !self.visited.insert(addr) {
            return;
        }
        let known = self.known.get(addr);
        let observation = known.and_then(|k| k.observation);
        let role = if Some(addr) == self.primary {
            Role::Primary
        } else {
            match observation.map(|o| o.state()) {
                Some(None) => Role::Unreachable,
                Some(Some(state)) if state.replication.is_some() => Role::Replica,
                _ => Role::Unknown,
            }
        };
        let mut node = Node::new(
            addr,
            role,
            known.and_then(|k| k.origin).map(|o| o.as_str()),
            observation,
        );
        node.depth = depth;
        node.orphan = orphan;
        self.nodes.push(node);
        let children = self.children.get(addr).cloned().unwrap_or_default();
        for child in children {
            if within.is_none_or(|w| w.contains(child)) {
                self.dfs(child, depth + 1, orphan, within);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use model::gtid::MariadbGtidList;
    use model::{
        Flavor, GtidState, IoThreadState, ProbeFailure, ProbeFailureKind, Reachability,
        ReplicationStatus, SemiSyncState, ServerState,
    };

    use super::*;

    fn addr(port: u16) -> InstanceAddr {
        InstanceAddr::new("10.0.0.1", port)
    }

    fn up(port: u16, source: Option<u16>, read_only: bool) -> Observation {
        Observation {
            addr: addr(port),
            at_unix_ms: 1_000,
            duration_us: 500,
            write: None,
            reachability: Reachability::Reachable(Box::new(ServerState {
                flavor: Flavor::Mariadb,
                version: "10.11.6-MariaDB".into(),
                server_id: u32::from(port),
                read_only,
                log_bin: true,
                log_replica_updates: true,
                replication: source.map(|s| ReplicationStatus {
                    source: addr(s),
                    io_thread: IoThreadState::Yes,
                    sql_running: true,
                    last_io_errno: 0,
                    last_io_error: String::new(),
                    last_sql_errno: 0,
                    last_sql_error: String::new(),
                    seconds_behind_source: Some(0),
                    sql_delay_s: 0,
                    using_gtid: true,
                    received_gtid: String::new(),
                    stream: Default::default(),
                }),
                gtid: GtidState::Mariadb {
                    current_pos: "0-1-5".parse::<MariadbGtidList>().unwrap(),
                    binlog_pos: MariadbGtidList::new(),
                    slave_pos: MariadbGtidList::new(),
                    binlog_state: Default::default(),
                    strict_mode: true,
                },
                semi_sync: SemiSyncState::default(),
                uptime_s: 1,
                threads_connected: 1,
                threads_running: 1,
                disk: None,
                metrics: None,
            })),
        }
    }

    fn down(port: u16) -> Observation {
        Observation {
            addr: addr(port),
            at_unix_ms: 1_000,
            duration_us: 500,
            write: None,
            reachability: Reachability::Unreachable(ProbeFailure::new(
                ProbeFailureKind::Refused,
                "connection refused",
            )),
        }
    }

    fn declared(port: u16) -> InstanceRecord {
        InstanceRecord {
            cluster: "c".into(),
            addr: addr(port),
            origin: Origin::Config,
            first_seen_ms: 1,
            last_seen_ms: 1,
        }
    }

    /// `port role depth [orphan]` per node.
    fn render(t: &Topology) -> String {
        t.nodes
            .iter()
            .map(|n| {
                let port = n.addr.rsplit(':').next().unwrap();
                let orphan = if n.orphan { " orphan" } else { "" };
                format!("{port} {:?} {}{orphan}\n", n.role, n.depth)
            })
            .collect()
    }

    #[test]
    fn tree_depth_first_with_children_by_address_then_orphans() {
        let obs = [
            up(1, None, false),
            up(4, Some(1), true),
            up(2, Some(1), true),
            up(3, Some(2), true),
            down(7),
            up(8, Some(7), true),
            up(9, None, true),
        ];
        let instances = [declared(1), declared(2), declared(6)];
        let t = build("c", &instances, &obs);
        assert_eq!(t.primary.as_deref(), Some("10.0.0.1:1"));
        assert_eq!(
            render(&t),
            "1 Primary 0\n2 Replica 1\n3 Replica 2\n4 Replica 1\n\
             6 Unknown 0 orphan\n7 Unreachable 0 orphan\n8 Replica 1 orphan\n\
             9 Unknown 0 orphan\n"
        );
        assert_eq!(t.nodes[0].origin.as_deref(), Some("config"));
        assert_eq!(t.nodes[3].origin, None);
        assert_eq!(t.nodes[4].observed_at_ms, None);
    }

    #[test]
    fn unreachable_primary_known_only_from_replicas_is_listed_first() {
        let obs = [up(2, Some(1), true), up(3, Some(1), true)];
        let t = build("c", &[], &obs);
        assert_eq!(render(&t), "1 Primary 0\n2 Replica 1\n3 Replica 1\n");
        assert!(!t.nodes[0].reachable);
        assert_eq!(t.nodes[0].observed_at_ms, None);
    }

    #[test]
    fn a_cycle_has_no_primary_and_lists_every_node_once() {
        let obs = [
            up(1, Some(2), true),
            up(2, Some(1), true),
            up(3, Some(2), true),
        ];
        let t = build("c", &[], &obs);
        assert_eq!(t.primary, None);
        assert_eq!(
            render(&t),
            "1 Replica 0 orphan\n2 Replica 1 orphan\n3 Replica 2 orphan\n"
        );
    }
}
