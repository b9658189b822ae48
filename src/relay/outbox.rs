//! Requests accepted from claude and not yet delivered upstream, oldest first.
//!
//! Two backends behind one type. **Durable** (the default): each request is committed to the
//! SQLite store, together with its usage rows, before claude is acknowledged; delivery claims
//! rows under a lease, so several launchers sharing the store never send the same row, and rows
//! left by an earlier (or killed) launcher are delivered by the next one. A row whose delivery
//! failed waits in its own back-off (recorded in the store) while the rows behind it go on.
//! Should the store fail during the run, requests go on to the upstream from a bounded memory
//! queue instead and the failure is recorded once for the exit line; when nothing can take a
//! request then (local-only, no upstream connected, or that queue full) it is refused with an
//! [`OutboxError`], which the receivers answer with the protocol's retryable error, so claude
//! is never told that data which is gone was kept. **Memory** (store disabled or unavailable
//! at start): a bounded FIFO that drops the oldest, counted, when full.

use crate::otlp::{ExportRequest, Signal};
use crate::store::{OutboxId, Store};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How many rows one delivery round claims from the store.
const CLAIM_BATCH: usize = 8;
/// How often an idle durable forwarder looks for rows other launchers left behind.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// One request taken for delivery: its protobuf encoding, made once at accept (policy
/// applied) and sent as it is.
#[derive(Debug, Clone)]
pub struct Entry {
    pub signal: Signal,
    pub body: Bytes,
    pub items: u64,
    /// Failed delivery attempts so far: the entry's own back-off.
    pub attempts: u32,
    row: Option<OutboxId>,
    received_ns: i64,
}

/// Where undelivered requests wait.
pub struct Outbox {
    backend: Backend,
    ready: Notify,
    closed: AtomicBool,
    /// The earliest time a deferred row becomes deliverable again (so `take` wakes for it).
    next_due: Mutex<Option<Instant>>,
    /// No forwarder takes from this outbox (the upstream could not be set up): the memory
    /// fallback would only hold requests until they are lost at exit.
    no_forwarder: AtomicBool,
}

enum Backend {
    Memory(MemoryQueue),
    Durable {
        store: Store,
        owner: String,
        lease: Duration,
        /// Only usage rows are wanted (no upstream): outbox rows are removed once written.
        local_only: bool,
        /// Requests the store could not take while the upstream could: they go on from here.
        fallback: MemoryQueue,
        /// The first store failure of the run, said once at exit.
        failure: Box<Mutex<Option<StoreFailure>>>,
    },
}

struct MemoryQueue {
    queue: Mutex<VecDeque<Entry>>,
    in_flight: Mutex<Option<u64>>,
    capacity: usize,
    dropped: AtomicU64,
}

/// The store stopped taking requests during the run; what happened to them instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFailure {
    /// The first error, as the store said it.
    pub error: String,
    /// Seconds since the Unix epoch when it first happened.
    pub at_unix_secs: u64,
    /// Requests that went on to the upstream from memory instead of the store.
    pub to_memory: u64,
    /// Requests nothing could keep, refused with a retryable error (claude sends them again).
    pub refused: u64,
    /// Why the last of them could not go on from memory.
    pub refused_because: Option<&'static str>,
}

/// The store refused a request and nothing else could take it: the request was not kept, and
/// the sender must be told to retry, never that it succeeded.
#[derive(Debug, thiserror::Error)]
#[error("the local store cannot take telemetry ({source}) and nothing else can ({reason})")]
pub struct OutboxError {
    /// What the store said: safe to print (no payload content).
    #[source]
    pub source: crate::store::StoreError,
    /// Why the request could not go on from memory instead.
    pub reason: &'static str,
}

/// Why a request the store refused could not go on from memory.
const LOCAL_ONLY: &str = "local-only mode: no upstream to send them to";
const NO_FORWARDER: &str = "the upstream could not be set up";
const FALLBACK_FULL: &str = "the memory queue of relay.max_queued_requests is full";

/// What is left when the relay stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remaining {
    pub requests: u64,
    pub items: u64,
    /// The requests are safe in the store (delivered by a later launch), not lost.
    pub kept: bool,
    /// Of `requests`, those held in memory only (lost with the process).
    pub in_memory: u64,
}

impl Outbox {
    /// An in-memory outbox holding at most `capacity` requests.
    pub fn memory(capacity: usize) -> Outbox {
        Outbox::with(Backend::Memory(MemoryQueue::new(capacity)))
    }

    /// An outbox in the store. `owner` must be unique per process; `local_only` keeps usage
    /// rows but no outbox rows (nothing will ever deliver them). Should the store fail during
    /// the run, requests go on from a memory queue of `fallback_capacity`.
    pub fn durable(
        store: Store,
        owner: String,
        lease: Duration,
        local_only: bool,
        fallback_capacity: usize,
    ) -> Outbox {
        Outbox::with(Backend::Durable {
            store,
            owner,
            lease,
            local_only,
            fallback: MemoryQueue::new(fallback_capacity),
            failure: Box::new(Mutex::new(None)),
        })
    }

    fn with(backend: Backend) -> Outbox {
        Outbox {
            backend,
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            next_due: Mutex::new(None),
            no_forwarder: AtomicBool::new(false),
        }
    }

    /// Nothing will deliver from this outbox during the run (the upstream could not be set
    /// up): should the store fail, requests are refused rather than held in memory to be lost.
    pub fn without_forwarder(&self) {
        self.no_forwarder.store(true, Ordering::Release);
    }

    /// Queues a request. Durable: returns once it is committed, or once it is in the memory
    /// fallback when the store fails and a forwarder can still send it on. Errors only when the
    /// request is kept nowhere: the caller must answer with a retryable error.
    pub async fn push(&self, request: ExportRequest) -> Result<(), OutboxError> {
        // Encoded once: the store keeps this, and the forwarder sends it as it is.
        let body = Bytes::from(request.encode_to_vec());
        match &self.backend {
            Backend::Memory(q) => q.push(&request, body),
            Backend::Durable {
                store,
                local_only,
                fallback,
                failure,
                ..
            } => match store
                .append_encoded(&request, body.clone(), !*local_only)
                .await
            {
                Ok(id) => {
                    // The request and its usage rows are committed: kept, even should the
                    // delete of its (never delivered) outbox row fail; answering an error
                    // here would make claude send it again and count its usage twice.
                    if *local_only {
                        let _ = store.mark_delivered(id).await;
                    }
                }
                Err(e) => {
                    let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                    let f = f.get_or_insert_with(|| StoreFailure {
                        error: e.to_string(),
                        at_unix_secs: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs()),
                        to_memory: 0,
                        refused: 0,
                        refused_because: None,
                    });
                    let refused = if *local_only {
                        Some(LOCAL_ONLY)
                    } else if self.no_forwarder.load(Ordering::Acquire) {
                        Some(NO_FORWARDER)
                    } else if !fallback.try_push(&request, body) {
                        Some(FALLBACK_FULL)
                    } else {
                        None
                    };
                    if let Some(reason) = refused {
                        f.refused += 1;
                        f.refused_because = Some(reason);
                        return Err(OutboxError { source: e, reason });
                    }
                    f.to_memory += 1;
                }
            },
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Waits for requests to deliver, oldest first. `None` once closed and nothing is left.
    /// Rows in back-off are not returned until it ends; the rows behind them are.
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
                    fallback,
                    ..
                } => {
                    if let Some(entry) = fallback.pop() {
                        return Some(vec![entry]);
                    }
                    match store.claim(owner, CLAIM_BATCH, *lease).await {
                        Ok(rows) if !rows.is_empty() => {
                            return Some(
                                rows.into_iter()
                                    .map(|c| Entry {
                                        signal: c.signal,
                                        body: c.body,
                                        items: c.items,
                                        attempts: c.attempts,
                                        row: Some(c.id),
                                        received_ns: c.received_ns,
                                    })
                                    .collect(),
                            );
                        }
                        Ok(_) => {}
                        Err(_) if self.closed.load(Ordering::Acquire) => return None,
                        Err(_) => {}
                    }
                }
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            let wait = self
                .next_due
                .lock()
                .ok()
                .and_then(|d| *d)
                .map_or(IDLE_POLL, |due| {
                    due.saturating_duration_since(Instant::now()).min(IDLE_POLL)
                });
            let _ = tokio::time::timeout(wait.max(Duration::from_millis(10)), notified).await;
            if let Ok(mut due) = self.next_due.lock()
                && due.is_some_and(|d| d <= Instant::now())
            {
                *due = None;
            }
        }
    }

    /// The entry was accepted upstream (or dropped for a named reason): forget it.
    pub async fn settle(&self, entry: &Entry) {
        match (&self.backend, entry.row) {
            (Backend::Memory(q), _) => q.set_in_flight(None),
            // Not waited for: the delete shares the writer's next transaction, and every
            // later store call of this process is run after it.
            (Backend::Durable { store, .. }, Some(id)) => store.mark_delivered_later(id),
            (Backend::Durable { fallback, .. }, None) => fallback.set_in_flight(None),
        }
    }

    /// Not sent (the drain ran out of time, or the entry was claimed and never tried): given
    /// back at once, first in line, for this run or the next launch.
    pub async fn release(&self, entry: Entry) {
        match (&self.backend, entry.row) {
            (Backend::Memory(q), _) => q.push_front(entry),
            (Backend::Durable { store, owner, .. }, Some(id)) => {
                let _ = store.release(id, owner).await;
            }
            (Backend::Durable { fallback, .. }, None) => fallback.push_front(entry),
        }
    }

    /// The forwarder stopped while waiting in [`Outbox::take`], which it cancelled: rows the
    /// store claimed for that take, whose answer was never read, are given back at once, so
    /// the next launch sends them without waiting for their lease. Nothing is in flight then.
    pub async fn release_unread_claims(&self) {
        if let Backend::Durable { store, owner, .. } = &self.backend {
            let _ = store.release_owner(owner).await;
        }
    }

    /// Delivery failed in a way that may pass: the entry waits `delay` (its own back-off)
    /// while the entries behind it go on.
    pub async fn defer(&self, mut entry: Entry, delay: Duration, error: &str) {
        if let Ok(mut due) = self.next_due.lock() {
            let at = Instant::now() + delay;
            *due = Some(due.map_or(at, |d| d.min(at)));
        }
        entry.attempts = entry.attempts.saturating_add(1);
        match (&self.backend, entry.row) {
            (Backend::Memory(q), _) => q.push_back(entry),
            (Backend::Durable { store, owner, .. }, Some(id)) => {
                let _ = store.defer(id, owner, delay, error).await;
            }
            (Backend::Durable { fallback, .. }, None) => fallback.push_back(entry),
        }
    }

    /// Part of a split entry was delivered: only `parts` (not yet delivered) stay queued, in
    /// place of the whole entry, so no part is sent twice.
    pub async fn requeue_parts(&self, entry: Entry, parts: Vec<ExportRequest>) {
        match (&self.backend, entry.row) {
            (Backend::Durable { store, owner, .. }, Some(id)) => {
                if !matches!(
                    store.replace(id, owner, &parts, entry.received_ns).await,
                    Ok(true)
                ) {
                    let _ = store.release(id, owner).await;
                }
            }
            (Backend::Memory(q), _) | (Backend::Durable { fallback: q, .. }, None) => {
                q.set_in_flight(None);
                for request in parts.into_iter().rev() {
                    q.push_front(Entry {
                        signal: request.signal(),
                        body: Bytes::from(request.encode_to_vec()),
                        items: request.item_count() as u64,
                        attempts: entry.attempts,
                        row: None,
                        received_ns: entry.received_ns,
                    });
                }
            }
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
        self.closed.load(Ordering::Acquire)
            && matches!(&self.backend, Backend::Durable { fallback, .. } if fallback.is_empty())
    }

    /// What was not delivered. Durable: every pending row in the store meant for this run's
    /// upstream (this launcher's and any left by others), kept for a later launch, plus what
    /// the memory fallback still holds.
    pub async fn remaining(&self) -> Remaining {
        match &self.backend {
            Backend::Memory(q) => {
                let (requests, items) = q.remaining();
                Remaining {
                    requests,
                    items,
                    kept: false,
                    in_memory: requests,
                }
            }
            Backend::Durable {
                store, fallback, ..
            } => {
                let pending = match store.pending_for_target().await {
                    Ok(n) => n,
                    Err(_) => store.outbox_stats().await.unwrap_or_default().pending_rows,
                };
                let (in_memory, items) = fallback.remaining();
                Remaining {
                    requests: pending + in_memory,
                    items,
                    kept: true,
                    in_memory,
                }
            }
        }
    }

    /// Requests dropped because a bound was reached (memory: during this run).
    pub async fn dropped(&self) -> u64 {
        match &self.backend {
            Backend::Memory(q) => q.dropped.load(Ordering::Relaxed),
            Backend::Durable { fallback, .. } => fallback.dropped.load(Ordering::Relaxed),
        }
    }

    /// Requests are committed to the store (until it fails), not only held in memory.
    pub fn is_durable(&self) -> bool {
        matches!(self.backend, Backend::Durable { .. })
    }

    /// The store's failure during this run, if it failed.
    pub fn store_failure(&self) -> Option<StoreFailure> {
        match &self.backend {
            Backend::Durable { failure, .. } => failure.lock().ok().and_then(|f| f.clone()),
            Backend::Memory(_) => None,
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
    fn new(capacity: usize) -> MemoryQueue {
        MemoryQueue {
            queue: Mutex::new(VecDeque::new()),
            in_flight: Mutex::new(None),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// A request just accepted, as the queue holds it.
    fn entry(request: &ExportRequest, body: Bytes) -> Entry {
        Entry {
            signal: request.signal(),
            body,
            items: request.item_count() as u64,
            attempts: 0,
            row: None,
            received_ns: crate::store::now_ns(),
        }
    }

    fn push(&self, request: &ExportRequest, body: Bytes) {
        self.push_back(Self::entry(request, body));
    }

    /// Queues a request unless the queue is full: what is already queued was acknowledged
    /// and is never dropped to make room. `false`: not queued.
    fn try_push(&self, request: &ExportRequest, body: Bytes) -> bool {
        let Ok(mut q) = self.queue.lock() else {
            return false;
        };
        if q.len() >= self.capacity {
            return false;
        }
        q.push_back(Self::entry(request, body));
        true
    }

    fn push_back(&self, entry: Entry) {
        self.set_in_flight(None);
        if let Ok(mut q) = self.queue.lock() {
            while q.len() >= self.capacity {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(entry);
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.lock().map_or(true, |q| q.is_empty())
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
        outbox.release(first).await;
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
    async fn claims_whose_answer_was_never_read_are_given_back_to_the_next_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path, StoreBounds::default()).unwrap();
        let first = Outbox::durable(
            store.clone(),
            "a".into(),
            Duration::from_secs(30),
            false,
            10,
        );
        first.push(req()).await.unwrap();
        first.push(req()).await.unwrap();
        // As a take cut off by the drain deadline leaves them: claimed in the store, the
        // entries never handed to anyone.
        drop(first.take().await.unwrap());
        let second = Outbox::durable(store, "b".into(), Duration::from_secs(30), false, 10);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), second.take())
                .await
                .is_err(),
            "still leased to the first owner"
        );
        first.release_unread_claims().await;
        let rows = tokio::time::timeout(Duration::from_secs(5), second.take())
            .await
            .expect("given back now, not when the 30 s lease ends")
            .unwrap();
        assert_eq!(rows.len(), 2, "given back without waiting for the lease");
    }

    #[tokio::test]
    async fn durable_rows_survive_the_outbox_and_are_claimed_by_the_next_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = Store::open(&path, StoreBounds::default()).unwrap();
        let first = Outbox::durable(
            store.clone(),
            "a".into(),
            Duration::from_secs(30),
            false,
            10,
        );
        first.push(req()).await.unwrap();
        first.push(req()).await.unwrap();
        let claimed = first.take().await.unwrap();
        assert_eq!(claimed.len(), 2);
        for e in claimed {
            first.release(e).await;
        }
        first.close();
        let second = Outbox::durable(store, "b".into(), Duration::from_secs(30), false, 10);
        let rows = second.take().await.unwrap();
        assert_eq!(rows.len(), 2, "released rows go to the next owner");
        for e in &rows {
            second.settle(e).await;
        }
        assert_eq!(second.remaining().await.requests, 0);
    }

    #[tokio::test]
    async fn a_row_in_back_off_does_not_hold_back_the_rows_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), StoreBounds::default()).unwrap();
        let outbox = Outbox::durable(store, "a".into(), Duration::from_secs(30), false, 10);
        outbox.push(req()).await.unwrap();
        outbox.push(req()).await.unwrap();
        let mut rows = outbox.take().await.unwrap();
        assert_eq!(rows.len(), 2);
        let second = rows.pop().unwrap();
        let first = rows.pop().unwrap();
        outbox
            .defer(first, Duration::from_secs(60), "gRPC Unavailable")
            .await;
        outbox.release(second).await;
        let again = outbox.take().await.unwrap();
        assert_eq!(again.len(), 1, "only the row behind the one in back-off");
        assert_eq!(again[0].attempts, 0);
        outbox.settle(&again[0]).await;
        assert_eq!(
            outbox.remaining().await.requests,
            1,
            "the deferred row still waits"
        );
    }

    #[tokio::test]
    async fn a_store_that_fails_mid_run_sends_requests_on_from_memory_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), StoreBounds::default()).unwrap();
        let outbox = Outbox::durable(
            store.clone(),
            "a".into(),
            Duration::from_secs(30),
            false,
            10,
        );
        store.close().await.unwrap();
        outbox.push(req()).await.unwrap();
        outbox.push(req()).await.unwrap();
        let failure = outbox.store_failure().expect("the failure is recorded");
        assert_eq!((failure.to_memory, failure.refused), (2, 0));
        let entry = outbox.take().await.unwrap().remove(0);
        outbox.settle(&entry).await;
        assert_eq!(outbox.remaining().await.in_memory, 1);
        let local_only = {
            let store = Store::open(&dir.path().join("t.db"), StoreBounds::default()).unwrap();
            store.close().await.unwrap();
            Outbox::durable(store, "b".into(), Duration::from_secs(30), true, 10)
        };
        let refused = local_only.push(req()).await.expect_err("kept nowhere");
        assert_eq!(refused.reason, LOCAL_ONLY);
        let failure = local_only.store_failure().expect("recorded");
        assert_eq!((failure.to_memory, failure.refused), (0, 1));
    }

    /// A durable outbox whose store has failed, delivering upstream from memory of `capacity`.
    async fn failed_store(dir: &std::path::Path, capacity: usize) -> Outbox {
        let store = Store::open(&dir.join("s.db"), StoreBounds::default()).unwrap();
        store.close().await.unwrap();
        Outbox::durable(store, "a".into(), Duration::from_secs(30), false, capacity)
    }

    #[tokio::test]
    async fn a_failed_store_with_a_full_memory_queue_refuses_instead_of_dropping_what_was_kept() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = failed_store(dir.path(), 2).await;
        outbox.push(req()).await.unwrap();
        outbox.push(req()).await.unwrap();
        let refused = outbox.push(req()).await.expect_err("no room: refused");
        assert_eq!(refused.reason, FALLBACK_FULL);
        assert_eq!(
            outbox.dropped().await,
            0,
            "nothing acknowledged was dropped"
        );
        assert_eq!(outbox.remaining().await.in_memory, 2);
        let failure = outbox.store_failure().unwrap();
        assert_eq!((failure.to_memory, failure.refused), (2, 1));
        // Room again once one is delivered.
        let entry = outbox.take().await.unwrap().remove(0);
        outbox.settle(&entry).await;
        outbox.push(req()).await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_store_without_a_forwarder_refuses_instead_of_holding_requests_to_lose() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = failed_store(dir.path(), 10).await;
        outbox.without_forwarder();
        let refused = outbox.push(req()).await.expect_err("nothing would send it");
        assert_eq!(refused.reason, NO_FORWARDER);
        assert_eq!(outbox.remaining().await.in_memory, 0);
    }

    #[tokio::test]
    async fn local_only_keeps_no_outbox_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), StoreBounds::default()).unwrap();
        let outbox = Outbox::durable(store, "a".into(), Duration::from_secs(30), true, 10);
        outbox.push(req()).await.unwrap();
        assert_eq!(outbox.remaining().await.requests, 0);
    }
}
