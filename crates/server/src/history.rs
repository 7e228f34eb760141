//! Channel history in the embedded store (`history.persist = true`): written behind the hub,
//! read back at start-up.
//!
//! The hub assigns offsets and fans out in memory; every publication it keeps is also
//! queued here and written to the store in batches (one transaction per batch, trimmed to
//! the namespace's bounds in the same transaction). Publishing never waits for the disk.
//!
//! What that means after a restart:
//!
//! - **Clean shutdown** (the store's lifecycle flag says so): the queue is drained before the
//!   flag is set, so the store holds every kept publication. Each channel comes back with
//!   its epoch and offsets; clients recover across the restart as if it had not happened.
//! - **Crash** (`kill -9`, power loss): the last publications before the crash may never
//!   have reached the disk, and the next process would give their offsets to new
//!   publications. A client that saw the lost ones would then "recover" someone else's
//!   publications under the same numbers: a silent gap. So after an unclean shutdown every
//!   channel is restored under a **new epoch** (its kept publications stay readable through
//!   the history API, offsets continue after the stored top) and old positions get
//!   `recovered: false` (`epoch_changed`).
//! - A publication that could not be queued (the queue of 65,536 is full) or written (a
//!   store error, after three tries) may have been seen by clients while the store never
//!   got it: that run's shutdown is then not marked clean, so the next start changes the
//!   epochs as after a crash.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use tether_engine::Publication;
use tether_engine::history::{ChannelHistory, Entry};
use tether_proto::{ChannelName, Tags, Target};
use tether_store::{HistoryKeep, HistoryRecord};
use tokio::sync::mpsc;

use crate::state::AppState;

/// Publications queued for the store at most; beyond that they are not persisted (and
/// counted), rather than hold up publishers.
const QUEUE: usize = 65_536;
/// Publications written per store transaction at most.
const BATCH: usize = 4096;

/// The hub side of the write-behind queue.
#[derive(Debug)]
pub struct HistoryWriter {
    tx: mpsc::Sender<Arc<Publication>>,
    /// Taken by [`run`] when the server starts.
    rx: Mutex<Option<mpsc::Receiver<Arc<Publication>>>>,
    /// Publications not queued because the queue was full.
    pub dropped: std::sync::atomic::AtomicU64,
}

impl Default for HistoryWriter {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self { tx, rx: Mutex::new(Some(rx)), dropped: std::sync::atomic::AtomicU64::new(0) }
    }
}

impl HistoryWriter {
    /// Queues a kept publication (it carries its offset and epoch). `false` if the queue is
    /// full or closed: the publication is not persisted.
    pub fn queue(&self, kept: &Arc<Publication>) -> bool {
        if self.tx.try_send(Arc::clone(kept)).is_ok() {
            return true;
        }
        if self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
            tracing::warn!("the channel-history write queue is full: publications are not being persisted");
        }
        false
    }
}

/// A publication as stored: its payload, tags and targeting (offset, epoch and channel are
/// columns of their own).
fn encode(p: &Publication) -> Vec<u8> {
    let mut s = String::with_capacity(32 + p.data.as_deref().map_or(0, str::len));
    s.push_str(r#"{"data":"#);
    s.push_str(p.data.as_deref().unwrap_or("null"));
    s.push_str(r#","has_data":"#);
    s.push_str(if p.data.is_some() { "true" } else { "false" });
    if !p.tags.is_empty() {
        s.push_str(r#","tags":"#);
        s.push_str(&serde_json::to_string(&p.tags).unwrap_or_else(|_| "{}".to_owned()));
    }
    if let Some(t) = &p.target {
        s.push_str(r#","to":"#);
        s.push_str(&serde_json::to_string(t).unwrap_or_else(|_| "{}".to_owned()));
    }
    s.push('}');
    s.into_bytes()
}

#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    has_data: bool,
    #[serde(default)]
    tags: Option<Tags>,
    #[serde(default)]
    to: Option<Target>,
}

fn decode(channel: &ChannelName, epoch: &Arc<str>, r: &HistoryRecord) -> Option<Entry<Arc<Publication>>> {
    let s: Stored<'_> = serde_json::from_slice(&r.payload).ok()?;
    let mut p = Publication::new(
        channel.clone(),
        s.has_data.then(|| s.data.get().into()),
        s.tags.unwrap_or_default(),
    );
    p.target = s.to.and_then(|t| t.normalize().ok()).filter(|t| !t.is_empty());
    p.offset = Some(r.offset);
    p.epoch = Some(Arc::clone(epoch));
    Some(Entry { offset: r.offset, at_ms: r.at_ms, item: Arc::new(p) })
}

/// Restores every stored channel whose namespace still keeps history into the hub; a new
/// epoch for each if the previous process did not shut down cleanly (see the module docs).
/// Returns how many channels were restored.
pub async fn restore(state: &AppState) -> Result<usize, tether_store::StoreError> {
    let clean = state.store.mark_started().await?;
    let stored = state.store.load_histories().await?;
    let now = state.now_ms();
    let mut restored = 0;
    for h in stored {
        let Ok(channel) = ChannelName::parse(&h.channel) else { continue };
        let Some(limits) = state.history_limits(&channel) else { continue };
        let epoch: Arc<str> = if clean { h.epoch.as_str().into() } else { state.hub.new_epoch() };
        let entries = h.entries.iter().filter_map(|r| decode(&channel, &epoch, r)).collect();
        let mut history = ChannelHistory::restore(Arc::clone(&epoch), h.top, entries, limits);
        history.trim(now);
        state.hub.restore_history(&channel, history, now);
        restored += 1;
    }
    if !clean {
        tracing::warn!(
            channels = restored,
            "the previous run did not shut down cleanly: restored channel history under new epochs"
        );
    }
    Ok(restored)
}

/// Writes queued publications until `stop` is cancelled (after the server stopped
/// serving: nothing publishes any more), then what is still queued, then returns.
pub async fn run(state: AppState, stop: tokio_util::sync::CancellationToken) {
    let Some(mut rx) = state.history_writer.rx.lock().take() else { return };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { break },
            () = stop.cancelled() => {
                rx.close();
                while rx.recv_many(&mut batch, BATCH).await > 0 {
                    write(&state, &mut batch).await;
                }
                break;
            }
        }
        write(&state, &mut batch).await;
    }
}

async fn write(state: &AppState, batch: &mut Vec<Arc<Publication>>) {
    // Publishers queue after the hub numbered them, outside the channel lock, so two
    // publishers on one channel may queue offsets out of order; the store wants them in
    // order within a batch (across batches a row is upserted by offset).
    batch.sort_by(|a, b| (a.channel.as_str(), a.offset).cmp(&(b.channel.as_str(), b.offset)));
    let now = state.now_ms();
    let mut keep: Vec<HistoryKeep> = Vec::new();
    let records = batch
        .drain(..)
        .filter_map(|p| {
            let (offset, epoch) = (p.offset?, p.epoch.as_deref()?);
            if !keep.iter().any(|k| k.channel == p.channel.as_str())
                && let Some(l) = state.history_limits(&p.channel)
            {
                let min_at_ms = if l.max_age_ms == 0 { 0 } else { now.saturating_sub(l.max_age_ms) };
                keep.push(HistoryKeep {
                    channel: p.channel.as_str().to_owned(),
                    max_count: l.max_count.max(1) as u64,
                    min_at_ms,
                });
            }
            Some(HistoryRecord {
                channel: p.channel.as_str().to_owned(),
                epoch: epoch.to_owned(),
                offset,
                at_ms: now,
                payload: encode(&p),
            })
        })
        .collect::<Vec<_>>();
    let n = records.len();
    // A failed batch is retried a few times: a retry of a whole batch is harmless (rows are
    // upserted by offset), and the next batch must not land before it.
    for attempt in 0..3u32 {
        match state.store.append_history(records.clone(), keep.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, publications = n, attempt, "cannot persist channel history");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    tracing::error!(publications = n, "channel history not persisted; the next start will begin new epochs");
    // Counted like a full queue: the shutdown will not be marked clean.
    state.history_writer.dropped.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
}
