//! The built-in scenarios: TOML files in `crates/drt/scenarios/`, embedded at build time.

use super::{Scenario, ScenarioError};

/// Each built-in's name and text, in the order `dbfleet drt list` shows them.
const BUILTINS: &[(&str, &str)] = &[
    (
        "kill-primary",
        include_str!("../../scenarios/kill-primary.toml"),
    ),
    (
        "pause-primary",
        include_str!("../../scenarios/pause-primary.toml"),
    ),
    (
        "partition-primary",
        include_str!("../../scenarios/partition-primary.toml"),
    ),
    (
        "partition-control-plane",
        include_str!("../../scenarios/partition-control-plane.toml"),
    ),
    (
        "kill-replica",
        include_str!("../../scenarios/kill-replica.toml"),
    ),
    (
        "stop-replica-sql",
        include_str!("../../scenarios/stop-replica-sql.toml"),
    ),
    (
        "slow-replica",
        include_str!("../../scenarios/slow-replica.toml"),
    ),
    (
        "switchover-under-load",
        include_str!("../../scenarios/switchover-under-load.toml"),
    ),
    (
        "kill-primary-via-proxy",
        include_str!("../../scenarios/kill-primary-via-proxy.toml"),
    ),
    (
        "switchover-via-proxy",
        include_str!("../../scenarios/switchover-via-proxy.toml"),
    ),
    (
        "kill-primary-twice",
        include_str!("../../scenarios/kill-primary-twice.toml"),
    ),
    (
        "pause-primary-8s",
        include_str!("../../scenarios/pause-primary-8s.toml"),
    ),
    (
        "pause-primary-20s",
        include_str!("../../scenarios/pause-primary-20s.toml"),
    ),
    (
        "blackhole-primary",
        include_str!("../../scenarios/blackhole-primary.toml"),
    ),
    (
        "kill-primary-with-delayed-replica",
        include_str!("../../scenarios/kill-primary-with-delayed-replica.toml"),
    ),
    (
        "kill-primary-with-broken-replica",
        include_str!("../../scenarios/kill-primary-with-broken-replica.toml"),
    ),
    (
        "lose-primary-and-best-replica",
        include_str!("../../scenarios/lose-primary-and-best-replica.toml"),
    ),
    (
        "stall-primary-disk",
        include_str!("../../scenarios/stall-primary-disk.toml"),
    ),
    (
        "fill-primary-disk",
        include_str!("../../scenarios/fill-primary-disk.toml"),
    ),
    (
        "stall-replica-disk",
        include_str!("../../scenarios/stall-replica-disk.toml"),
    ),
];

/// The built-ins' names, in listing order.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTINS.iter().map(|(name, _)| *name).collect()
}

/// Every built-in scenario, parsed, in listing order. The test suite proves each one
/// parses and validates, so a failure here is a bug in a file of this crate.
pub fn builtins() -> Vec<Scenario> {
    BUILTINS
        .iter()
        .map(|(name, _)| get(name).unwrap_or_else(|e| panic!("built-in scenario {name}: {e}")))
        .collect()
}

/// One built-in by name.
pub(super) fn get(name: &str) -> Result<Scenario, ScenarioError> {
    let (_, text) =
        BUILTINS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ScenarioError::UnknownBuiltin {
                name: name.to_string(),
                known: builtin_names(),
            })?;
    Scenario::from_toml(text, &format!("builtin:{name}"))
}
