//! Typed access to the store's key-value part ([`Store::kv_get`] and friends): every key the
//! control plane writes is spelled here once, with the type of its value. Callers use
//! [`Settings`], never a key string.
//!
//! | key | value | written by |
//! |---|---|---|
//! | `recoveries/disabled` | `bool` | `dbfleet recoveries disable/enable` |
//! | `recoveries/ack/CLUSTER` | ms of the last `recoveries ack` | `dbfleet recoveries ack` |
//! | `fenced/CLUSTER/ADDR` | [`FencedMark`] | a failover's `fence_old` step; a rejoin removes it |
//! | `alert/state` | the alert evaluator's state | the daemon's alerting |
//! | `drt/runs/ID` | a stored DRT run | the DRT API and scheduler |
//!
//! The values stay JSON in both backends, so a store written before this module reads the
//! same.

use std::future::Future;

use model::InstanceAddr;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::Store;

const RECOVERIES_DISABLED: &str = "recoveries/disabled";
const ALERT_STATE: &str = "alert/state";
const DRT_RUNS: &str = "drt/runs/";

fn recoveries_ack(cluster: &str) -> String {
    format!("recoveries/ack/{cluster}")
}

fn fenced_prefix(cluster: &str) -> String {
    format!("fenced/{cluster}/")
}

fn fenced_key(cluster: &str, addr: &InstanceAddr) -> String {
    format!("{}{addr}", fenced_prefix(cluster))
}

fn drt_run(id: &str) -> String {
    format!("{DRT_RUNS}{id}")
}

/// Why an instance is kept out of its cluster: a failover replaced and fenced it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencedMark {
    /// The failover that fenced it.
    #[serde(default)]
    pub operation_id: Option<i64>,
    /// When it was marked, ms since the Unix epoch.
    #[serde(default)]
    pub at_ms: u64,
    /// The primary that replaced it.
    #[serde(default)]
    pub new_primary: Option<String>,
    /// Its `@@gtid_binlog_pos` as last seen, the errant-GTID baseline.
    #[serde(default)]
    pub last_binlog_pos: Option<String>,
    /// It was failed over because its writes stalled while it answered: semi-sync stays on
    /// on it through every later fence, so that nothing it still commits is acknowledged.
    #[serde(default)]
    pub keep_semi_sync: bool,
}

fn decode<T: DeserializeOwned>(key: &str, v: serde_json::Value) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
        what: format!("value of key {key}"),
        detail: e.to_string(),
    })
}

fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(v).map_err(|cause| StoreError::Encode { what, cause })
}

/// The typed keys of [`Store`]'s key-value part, for every store (see the module docs).
pub trait Settings {
    /// Whether automatic recoveries are switched off fleet-wide; `false` when never set.
    fn recoveries_disabled(&self) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Switch automatic recoveries off (`true`) or on fleet-wide.
    fn set_recoveries_disabled(
        &self,
        disabled: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// When `cluster`'s recoveries were last acknowledged, if ever.
    fn recoveries_acked(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
    /// Acknowledge `cluster`'s recoveries at `at_ms`.
    fn ack_recoveries(
        &self,
        cluster: &str,
        at_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The fenced instances of `cluster`, in address order. A mark that does not parse is
    /// an error naming its key.
    fn fenced(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<(InstanceAddr, FencedMark)>, StoreError>> + Send;
    /// Mark `addr` fenced in `cluster`.
    fn mark_fenced(
        &self,
        cluster: &str,
        addr: &InstanceAddr,
        mark: &FencedMark,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Remove `addr`'s fenced mark; whether there was one.
    fn unmark_fenced(
        &self,
        cluster: &str,
        addr: &InstanceAddr,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The alert evaluator's persisted state, if any.
    fn alert_state<T: DeserializeOwned>(
        &self,
    ) -> impl Future<Output = Result<Option<T>, StoreError>> + Send;
    /// Persist the alert evaluator's state.
    fn put_alert_state<T: Serialize + Sync>(
        &self,
        state: &T,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The stored DRT run `id`, if any.
    fn drt_run<T: DeserializeOwned>(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<T>, StoreError>> + Send;
    /// Whether a DRT run `id` is stored.
    fn has_drt_run(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Store the DRT run `id`, replacing any.
    fn put_drt_run<T: Serialize + Sync>(
        &self,
        id: &str,
        run: &T,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every stored DRT run that parses as `T`, in id order; the others are left out.
    fn drt_runs<T: DeserializeOwned>(
        &self,
    ) -> impl Future<Output = Result<Vec<T>, StoreError>> + Send;
}

impl<S: Store + ?Sized> Settings for S {
    async fn recoveries_disabled(&self) -> Result<bool, StoreError> {
        Ok(self
            .kv_get(RECOVERIES_DISABLED)
            .await?
            .and_then(|v| v.as_bool())
            == Some(true))
    }

    async fn set_recoveries_disabled(&self, disabled: bool) -> Result<(), StoreError> {
        self.kv_put(RECOVERIES_DISABLED, &serde_json::Value::Bool(disabled))
            .await
    }

    async fn recoveries_acked(&self, cluster: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .kv_get(&recoveries_ack(cluster))
            .await?
            .and_then(|v| v.as_u64()))
    }

    async fn ack_recoveries(&self, cluster: &str, at_ms: u64) -> Result<(), StoreError> {
        self.kv_put(&recoveries_ack(cluster), &serde_json::Value::from(at_ms))
            .await
    }

    async fn fenced(&self, cluster: &str) -> Result<Vec<(InstanceAddr, FencedMark)>, StoreError> {
        let prefix = fenced_prefix(cluster);
        let mut out = Vec::new();
        for (key, v) in self.kv_list(&prefix).await? {
            let addr: InstanceAddr =
                key[prefix.len()..]
                    .parse()
                    .map_err(|e: model::AddrError| StoreError::Corrupt {
                        what: format!("key {key}"),
                        detail: e.to_string(),
                    })?;
            out.push((addr, decode(&key, v)?));
        }
        Ok(out)
    }

    async fn mark_fenced(
        &self,
        cluster: &str,
        addr: &InstanceAddr,
        mark: &FencedMark,
    ) -> Result<(), StoreError> {
        let key = fenced_key(cluster, addr);
        let v = encode("a fenced mark", mark)?;
        self.kv_put(&key, &v).await
    }

    async fn unmark_fenced(&self, cluster: &str, addr: &InstanceAddr) -> Result<bool, StoreError> {
        self.kv_delete(&fenced_key(cluster, addr)).await
    }

    async fn alert_state<T: DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        match self.kv_get(ALERT_STATE).await? {
            Some(v) => decode(ALERT_STATE, v).map(Some),
            None => Ok(None),
        }
    }

    async fn put_alert_state<T: Serialize + Sync>(&self, state: &T) -> Result<(), StoreError> {
        let v = encode("the alert state", state)?;
        self.kv_put(ALERT_STATE, &v).await
    }

    async fn drt_run<T: DeserializeOwned>(&self, id: &str) -> Result<Option<T>, StoreError> {
        let key = drt_run(id);
        match self.kv_get(&key).await? {
            Some(v) => decode(&key, v).map(Some),
            None => Ok(None),
        }
    }

    async fn has_drt_run(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.kv_get(&drt_run(id)).await?.is_some())
    }

    async fn put_drt_run<T: Serialize + Sync>(&self, id: &str, run: &T) -> Result<(), StoreError> {
        let key = drt_run(id);
        let v = encode("a DRT run", run)?;
        self.kv_put(&key, &v).await
    }

    async fn drt_runs<T: DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        Ok(self
            .kv_list(DRT_RUNS)
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_value(v).ok())
            .collect())
    }
}
