//! The etcd primitives the backend is built from: reads (single, several at one revision,
//! paged ranges, id windows), compare-and-swap transactions, counters, leases, and the
//! mapping of etcd errors to [`StoreError`].

use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, KvClient, LeaseClient, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::{id_key, prefix_end, Counter};
use super::EtcdStore;
use crate::error::StoreError;

/// Keys per range read: pages keep each reply well under gRPC's message limit.
const PAGE: i64 = 500;

/// Ids per window when reading newest-first (ids are dense, so a window holds at most this
/// many keys).
const WINDOW: i64 = 500;

/// The largest reply the client accepts (gRPC's default is 4 MiB; a page of large
/// observations could come close).
const MAX_REPLY_BYTES: usize = 64 << 20;

/// How many times a compare-and-swap is retried when another writer got there first. Each
/// try is a round trip; the call's timeout bounds the whole anyway.
pub(super) const MAX_ATTEMPTS: usize = 100;

/// What a compare-and-swap transaction did.
pub(super) enum Cas {
    /// The watched keys were as read, and the operations applied.
    Applied,
    /// A watched key had changed; nothing applied. Holds each watched key as it is now.
    Changed(Vec<Option<KeyValue>>),
}

impl EtcdStore {
    fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_REPLY_BYTES)
    }

    fn lease(&self) -> LeaseClient {
        self.client.lease_client()
    }

    /// One key, and the revision it was read at.
    pub(super) async fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64), StoreError> {
        let mut resp = self
            .kv()
            .get(key, None)
            .await
            .map_err(|e| backend("read", e))?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((resp.take_kvs().into_iter().next(), rev))
    }

    /// Several keys read at one revision (one transaction of reads).
    pub(super) async fn get_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let ops: Vec<TxnOp> = keys.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
        let resp = self.txn("read", Txn::new().and_then(ops)).await?;
        Ok(gets(&resp)
            .into_iter()
            .map(|kvs| kvs.into_iter().next())
            .collect())
    }

    /// Visit the keys in `[start, end)` in key order at revision `rev` (0: the newest), page
    /// by page, all pages at the revision of the first. `visit` returns `false` to stop.
    /// Returns the revision read at.
    pub(super) async fn scan(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        mut rev: i64,
        mut visit: impl FnMut(KeyValue) -> Result<bool, StoreError>,
    ) -> Result<i64, StoreError> {
        let mut kv = self.kv();
        let mut from = start;
        loop {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(rev);
            let mut resp = kv
                .get(from.clone(), Some(opts))
                .await
                .map_err(|e| backend("range read", e))?;
            if rev == 0 {
                rev = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else {
                return Ok(rev);
            };
            // The next page starts right after the last key: the key with a 0 byte added.
            from = last.key().to_vec();
            from.push(0);
            for item in kvs {
                if !visit(item)? {
                    return Ok(rev);
                }
            }
            if !more {
                return Ok(rev);
            }
        }
    }

    /// Every key starting with `prefix`, in key order, read at one revision.
    pub(super) async fn range_all(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        self.scan(prefix.as_bytes().to_vec(), prefix_end(prefix), 0, |kv| {
            out.push(kv);
            Ok(true)
        })
        .await?;
        Ok(out)
    }

    /// Visit the keys `prefix{id}` from id `max_id` down to 1 at revision `rev`, newest
    /// first, a window of ids at a time. `visit` returns `false` to stop.
    pub(super) async fn scan_ids_desc(
        &self,
        prefix: &str,
        max_id: i64,
        rev: i64,
        mut visit: impl FnMut(KeyValue) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut hi = max_id;
        while hi >= 1 {
            let lo = hi.saturating_sub(WINDOW - 1).max(1);
            let mut window = Vec::new();
            self.scan(
                id_key(prefix, lo).into_bytes(),
                id_key(prefix, hi.saturating_add(1)).into_bytes(),
                rev,
                |kv| {
                    window.push(kv);
                    Ok(true)
                },
            )
            .await?;
            for kv in window.into_iter().rev() {
                if !visit(kv)? {
                    return Ok(());
                }
            }
            hi = lo - 1;
        }
        Ok(())
    }

    /// Run a transaction.
    pub(super) async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.kv().txn(txn).await.map_err(|e| backend(what, e))
    }

    /// Apply `ops` if every watched key is still as read (`None`: absent); otherwise read
    /// them again, in the same round trip.
    pub(super) async fn cas(
        &self,
        what: &str,
        watched: &[(String, Option<KeyValue>)],
        ops: Vec<TxnOp>,
    ) -> Result<Cas, StoreError> {
        let compares: Vec<Compare> = watched
            .iter()
            .map(|(k, cur)| unchanged(k, cur.as_ref()))
            .collect();
        let reread: Vec<TxnOp> = watched
            .iter()
            .map(|(k, _)| TxnOp::get(k.as_str(), None))
            .collect();
        self.check_txn_size(what, ops.len())?;
        let resp = self
            .txn(
                what,
                Txn::new().when(compares).and_then(ops).or_else(reread),
            )
            .await?;
        if resp.succeeded() {
            return Ok(Cas::Applied);
        }
        Ok(Cas::Changed(
            gets(&resp)
                .into_iter()
                .map(|kvs| kvs.into_iter().next())
                .collect(),
        ))
    }

    /// Refuse, with the fix in the message, a transaction larger than etcd allows.
    pub(super) fn check_txn_size(&self, what: &str, ops: usize) -> Result<(), StoreError> {
        if ops > self.opts.max_txn_ops {
            return Err(StoreError::Backend(format!(
                "etcd {what}: needs {ops} operations in one transaction, more than the {} \
                 allowed (EtcdOptions::max_txn_ops); start etcd with --max-txn-ops {ops} or more \
                 and set max_txn_ops to match",
                self.opts.max_txn_ops
            )));
        }
        Ok(())
    }

    /// Give out the next id of `counter` and write `build(id)`'s operations in the same
    /// transaction, retrying when another writer took that id first. Ids grow strictly, with
    /// no gaps, across every client of the store.
    pub(super) async fn with_next_id<R>(
        &self,
        what: &str,
        counter: Counter,
        mut build: impl FnMut(i64) -> Result<(Vec<TxnOp>, R), StoreError>,
    ) -> Result<R, StoreError> {
        let key = self.keys.counter(counter);
        let (mut cur, _) = self.get(&key).await?;
        for _ in 0..MAX_ATTEMPTS {
            let id = counter_value(cur.as_ref())? + 1;
            let (mut ops, out) = build(id)?;
            ops.push(put_json(&key, &id)?);
            match self.cas(what, &[(key.clone(), cur)], ops).await? {
                Cas::Applied => return Ok(out),
                Cas::Changed(mut now) => cur = now.pop().flatten(),
            }
        }
        Err(contended(what))
    }

    /// A new lease of `ttl_s` seconds: its id and the TTL etcd granted (etcd raises a TTL
    /// below its minimum, 1.5 election timeouts rounded up to whole seconds).
    pub(super) async fn grant(&self, ttl_s: i64) -> Result<(i64, i64), StoreError> {
        let resp = self
            .lease()
            .grant(ttl_s, None)
            .await
            .map_err(|e| backend("lease grant", e))?;
        Ok((resp.id(), resp.ttl()))
    }

    /// Revoke a lease, deleting any key still on it; a lease already gone is no error. Used
    /// only to clean up, so a failure is ignored: the lease then lapses by itself.
    pub(super) async fn revoke_quietly(&self, id: i64) {
        if id != 0 {
            let _ = self.lease().revoke(id).await;
        }
    }

    /// Renew a lease once; `false` when it is gone (lapsed or revoked).
    pub(super) async fn keep_alive_once(&self, id: i64) -> Result<bool, StoreError> {
        match self.lease().keep_alive(id).await {
            // The client sent one keep-alive and read its answer; dropping the pair closes
            // the stream.
            Ok(_) => Ok(true),
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(false),
            Err(e) => Err(backend("lease keep-alive", e)),
        }
    }
}

/// The compare that holds when `key` is as read: same modification, or still absent.
pub(super) fn unchanged(key: &str, cur: Option<&KeyValue>) -> Compare {
    match cur {
        Some(kv) => Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision()),
        None => Compare::version(key, CompareOp::Equal, 0),
    }
}

/// The key-value lists of a transaction's reads, in order (empty for other operations).
pub(super) fn gets(resp: &TxnResponse) -> Vec<Vec<KeyValue>> {
    resp.op_responses()
        .into_iter()
        .map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs(),
            _ => Vec::new(),
        })
        .collect()
}

/// The value of a counter key (0 when absent).
pub(super) fn counter_value(kv: Option<&KeyValue>) -> Result<i64, StoreError> {
    kv.map_or(Ok(0), decode)
}

/// A put of `value` as JSON.
pub(super) fn put_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<TxnOp, StoreError> {
    Ok(TxnOp::put(key, encode(value)?, None))
}

/// A put of `value` as JSON, on a lease.
pub(super) fn put_json_leased<T: Serialize + ?Sized>(
    key: &str,
    value: &T,
    lease: i64,
) -> Result<TxnOp, StoreError> {
    Ok(TxnOp::put(
        key,
        encode(value)?,
        Some(PutOptions::new().with_lease(lease)),
    ))
}

/// A value as stored: JSON.
pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|cause| StoreError::Encode {
        what: "etcd value",
        cause,
    })
}

/// A stored JSON value back; [`StoreError::Corrupt`] naming the key when it does not decode.
pub(super) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, StoreError> {
    serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
        what: format!("etcd key {}", String::from_utf8_lossy(kv.key())),
        detail: e.to_string(),
    })
}

/// An etcd client error as a [`StoreError::Backend`], with the fix for the limits an
/// operator can raise.
pub(super) fn backend(what: &str, e: etcd_client::Error) -> StoreError {
    let mut text = match &e {
        etcd_client::Error::GRpcStatus(s) => format!("{} ({:?})", s.message(), s.code()),
        other => other.to_string(),
    };
    // A transport failure's message is only "transport error": its causes say which.
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    let hint = if text.contains("too many operations in txn request") {
        "; start etcd with a larger --max-txn-ops and set EtcdOptions::max_txn_ops to match"
    } else if text.contains("request is too large") {
        "; start etcd with a larger --max-request-bytes"
    } else {
        ""
    };
    StoreError::Backend(format!("etcd {what}: {text}{hint}"))
}

/// The error when a compare-and-swap lost to other writers [`MAX_ATTEMPTS`] times running.
pub(super) fn contended(what: &str) -> StoreError {
    StoreError::Backend(format!(
        "etcd {what}: other writers changed the same keys {MAX_ATTEMPTS} times running; gave up"
    ))
}
