//! Requests accepted from claude and not yet delivered upstream, oldest first.
//!
//! Two backends behind one type. **Durable** (the default): each request is committed to the
//! SQLite store, together with its usage rows, before claude is acknowledged; delivery claims
//! rows under a lease, so several launchers sharing the store never send the same row, and rows
//! left by an earlier (or killed) launcher are delivered by the next one. **Memory** (store
//! disabled or unavailable): a bounded FIFO that keeps order across retries and drops the
//! oldest, counted, when full.

use crate::otlp::ExportRequest;
use crate::store::{OutboxId, Store};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How many rows one delivery round claims from the store.
const CLAIM_BATCH: usize = 8;
/// How often an idle durable forwarder looks for rows other launchers left behind.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// One request taken for delivery.
#[derive(Debug, Clone)]
pub struct Entry {
    pub request: ExportRequest,
    pub items: u64,
    row: Option<OutboxId>,
}

/// Where undelivered requests wait.
pub struct Outbox {
    backend: Backend,
    ready: Notify,
    closed: AtomicBool,
}

enum Backend {
    Memory(MemoryQueue),
    Durable {
        store: Store,
        owner: String,
        lease: Duration,
        /// Only usage rows are wanted (no upstream): outbox rows are removed once written.
        local_only: bool,
    },
}

struct MemoryQueue {
    queue: Mutex<VecDeque<Entry>>,
    in_flight: Mutex<Option<u64>>,
    capacity: usize,
    dropped: AtomicU64,
}

/// The store refused a request; claude is still acknowledged by the caller's choice.
#[derive(Debug, thiserror::Error)]
#[error("local store: {0}")]
pub struct OutboxError(#[from] crate::store::StoreError);

/// What is left when the relay stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remaining {
    pub requests: u64,
    pub items: u64,
    /// The requests are safe in the store (delivered by a later launch), not lost.
    pub kept: bool,
}

impl Outbox {
    /// An in-memory outbox holding at most `capacity` requests.
    pub fn memory(capacity: usize) -> Outbox {
        Outbox::with(Backend::Memory(MemoryQueue {
            queue: Mutex::new(VecDeque::new()),
            in_flight: Mutex::new(None),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }))
    }

    /// An outbox in the store. `owner` must be unique per process; `local_only` keeps usage
    /// rows but no outbox rows (nothing will ever deliver them).
    pub fn durable(store: Store, owner: String, lease: Duration, local_only: bool) -> Outbox {
        Outbox::with(Backend::Durable {
            store,
            owner,
            lease,
            local_only,
        })
    }

    fn with(backend: Backend) -> Outbox {
        Outbox {
            backend,
            ready: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues a request. Durable: returns once it is committed.
    pub async fn push(&self, request: ExportRequest) -> Result<(), OutboxError> {
        match &self.backend {
            Backend::Memory(q) => q.push(request),
            Backend::Durable {
                store, local_only, ..
            } => {
                let id = store.append(request).await?;
                if *local_only {
                    store.mark_delivered(id).await?;
                }
            }
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Waits for requests to deliver, oldest first. `None` once closed and nothing is left.
    pub async fn take(&self) -> Option<Vec<Entry>> {
        loop {
            let notified = self.ready.notified();
            match &self.backend {
                Backend::Memory(q) => {
                    if let Some(entry) = q.pop() {
                        return Some(vec![entry]);
                    }
                }
                Backend::Durable {
                    store,
                    owner,
                    lease,
                    ..
                } => match store.claim_pending(owner, CLAIM_BATCH, *lease).await {
                    Ok(rows) if !rows.is_empty() => {
                        return Some(
                            rows.into_iter()
                                .map(|(id, request)| Entry {
                                    items: request.item_count() as u64,
                                    request,
                                    row: Some(id),
                                })
                                .collect(),
                        );
                    }
                    Ok(_) => {}
                    Err(_) if self.closed.load(Ordering::Acquire) => return None,
                    Err(_) => {}
                },
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            let _ = tokio::time::timeout(IDLE_POLL, notified).await;
        }
    }

    /// The entry was accepted upstream (or permanently rejected): forget it.
    pub async fn settle(&self, entry: &Entry) {
        match (&self.backend, entry.row) {
            (Backend::Memory(q), _) => q.set_in_flight(None),
            (Backend::Durable { store, .. }, Some(id)) => {
                let _ = store.mark_delivered(id).await;
            }
            (Backend::Durable { .. }, None) => {}
        }
    }

    /// Delivery failed: the entry is given back, to be retried first.
    pub async fn retry_later(&self, entry: Entry) {
        match (&self.backend, entry.row) {
            (Backend::Memory(q), _) => q.push_front(entry),
            (Backend::Durable { store, owner, .. }, Some(id)) => {
                let _ = store.release(id, owner).await;
            }
            (Backend::Durable { .. }, None) => {}
        }
    }

    /// No more pushes will come; `take` returns `None` once nothing is left.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    /// Closed, and what is left survives this process: no reason to keep retrying now.
    pub fn is_closing_and_durable(&self) -> bool {
        self.closed.load(Ordering::Acquire) && matches!(self.backend, Backend::Durable { .. })
    }

    /// What was not delivered. Durable: every pending row in the store (this launcher's and
    /// any left by others), kept for a later launch.
    pub async fn remaining(&self) -> Remaining {
        match &self.backend {
            Backend::Memory(q) => {
                let (requests, items) = q.remaining();
                Remaining {
                    requests,
                    items,
                    kept: false,
                }
            }
            Backend::Durable { store, .. } => {
                let stats = store.outbox_stats().await.unwrap_or_default();
                Remaining {
                    requests: stats.pending_rows,
                    items: 0,
                    kept: true,
                }
            }
        }
    }

    /// Requests dropped because a bound was reached (memory: during this run).
    pub async fn dropped(&self) -> u64 {
        match &self.backend {
            Backend::Memory(q) => q.dropped.load(Ordering::Relaxed),
            Backend::Durable { .. } => 0,
        }
    }

    /// Finishes the store's queued work and closes it (durable); nothing for memory.
    pub async fn shut(&self) {
        if let Backend::Durable { store, .. } = &self.backend {
            let _ = store.close().await;
        }
    }
}

impl MemoryQueue {
    fn push(&self, request: ExportRequest) {
        let items = request.item_count() as u64;
        if let Ok(mut q) = self.queue.lock() {
            while q.len() >= self.capacity {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(Entry {
                request,
                items,
                row: None,
            });
        }
    }

    fn pop(&self) -> Option<Entry> {
        let entry = self.queue.lock().ok()?.pop_front()?;
        self.set_in_flight(Some(entry.items));
        Some(entry)
    }

    fn push_front(&self, entry: Entry) {
        self.set_in_flight(None);
        if let Ok(mut q) = self.queue.lock() {
            q.push_front(entry);
        }
    }

    fn set_in_flight(&self, items: Option<u64>) {
        if let Ok(mut f) = self.in_flight.lock() {
            *f = items;
        }
    }

    fn remaining(&self) -> (u64, u64) {
        let (mut requests, mut items) = self
            .queue
            .lock()
            .map(|q| (q.len() as u64, q.iter().map(|e| e.items).sum()))
            .unwrap_or((0, 0));
        if let Ok(Some(n)) = self.in_flight.lock().map(|f| *f) {
            requests += 1;
            items += n;
        }
        (requests, items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreBounds;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

    fn req() -> ExportRequest {
        ExportRequest::Logs(ExportLogsServiceRequest::default())
    }

    #[tokio::test]
    async fn memory_keeps_order_across_retries_and_ends_when_closed() {
        let outbox = Outbox::memory(10);
        outbox.push(req()).await.unwrap();
        outbox.push(req()).await.unwrap();
        let first = outbox.take().await.unwrap().remove(0);
        assert_eq!(
            outbox.remaining().await.requests,
            2,
            "in-flight entry still counts"
        );
        outbox.retry_later(first).await;
        let again = outbox.take().await.unwrap().remove(0);
        outbox.settle(&again).await;
        outbox.close();
        let last = outbox.take().await.unwrap().remove(0);
        outbox.settle(&last).await;
        assert!(outbox.take().await.is_none());
        assert_eq!(outbox.remaining().await.requests, 0);
    }

    #[tokio::test]
    async fn full_memory_outbox_drops_the_oldest_and_counts_it() {
        let outbox = Outbox::memory(2);
        for _ in 0..5 {
            outbox.push(req()).await.unwrap();
        }
        assert_eq!(outbox.remaining().await.requests, 2);
        assert_eq!(outbox.dropped().await, 3);
    }

    #[tokio::test]
    async fn durable_rows_survive_the_outbox_and_are_claimed_by_the_next_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path, StoreBounds::default()).unwrap();
        let first = Outbox::durable(store.clone(), "a".into(), Duration::from_secs(30), false);
        first.push(req()).await.unwrap();
        first.push(req()).await.unwrap();
        let claimed = first.take().await.unwrap();
        assert_eq!(claimed.len(), 2);
        for e in claimed {
            first.retry_later(e).await;
        }
        first.close();
        let second = Outbox::durable(store, "b".into(), Duration::from_secs(30), false);
        let rows = second.take().await.unwrap();
        assert_eq!(rows.len(), 2, "released rows go to the next owner");
        for e in &rows {
            second.settle(e).await;
        }
        assert_eq!(second.remaining().await.requests, 0);
    }

    #[tokio::test]
    async fn local_only_keeps_no_outbox_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), StoreBounds::default()).unwrap();
        let outbox = Outbox::durable(store, "a".into(), Duration::from_secs(30), true);
        outbox.push(req()).await.unwrap();
        assert_eq!(outbox.remaining().await.requests, 0);
    }
}
