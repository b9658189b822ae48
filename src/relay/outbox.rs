//! Requests accepted from claude and not yet delivered upstream, oldest first.
//!
//! The forwarder takes the oldest entry, and puts it back at the front when delivery fails, so
//! order is kept across retries. A bound keeps memory finite: past it, the oldest entries go and
//! are counted, so a dead upstream can never grow the launcher without limit.

use crate::otlp::ExportRequest;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Notify;

/// One queued request.
#[derive(Debug, Clone)]
pub struct Entry {
    pub request: ExportRequest,
    pub items: u64,
}

/// A bounded FIFO of requests awaiting delivery.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<Entry>>,
    /// An entry taken by the forwarder and not yet settled; counted as undelivered at shutdown.
    in_flight: Mutex<Option<u64>>,
    ready: Notify,
    closed: AtomicBool,
    capacity: usize,
    dropped: AtomicU64,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` requests (at least one).
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            in_flight: Mutex::new(None),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues a request; drops the oldest when full.
    pub fn push(&self, request: ExportRequest) {
        let items = request.item_count() as u64;
        if let Ok(mut q) = self.queue.lock() {
            while q.len() >= self.capacity {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(Entry { request, items });
        }
        self.ready.notify_one();
    }

    /// Waits for the oldest entry. `None` once the outbox is closed and empty.
    pub async fn take(&self) -> Option<Entry> {
        loop {
            let notified = self.ready.notified();
            if let Ok(mut q) = self.queue.lock()
                && let Some(entry) = q.pop_front()
            {
                self.set_in_flight(Some(entry.items));
                return Some(entry);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }

    /// The entry was delivered (or permanently rejected).
    pub fn settle(&self) {
        self.set_in_flight(None);
    }

    /// Delivery failed: the entry goes back to the front, to be retried first.
    pub fn retry_later(&self, entry: Entry) {
        self.set_in_flight(None);
        if let Ok(mut q) = self.queue.lock() {
            q.push_front(entry);
        }
    }

    /// No more pushes will come; `take` returns `None` once the queue is empty.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    /// Requests and items not delivered: queued plus the one in flight.
    pub fn remaining(&self) -> (u64, u64) {
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

    /// Requests dropped because the bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn set_in_flight(&self, items: Option<u64>) {
        if let Ok(mut f) = self.in_flight.lock() {
            *f = items;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;

    fn req() -> ExportRequest {
        ExportRequest::Logs(ExportLogsServiceRequest::default())
    }

    #[tokio::test]
    async fn keeps_order_across_retries_and_ends_when_closed() {
        let outbox = Outbox::new(10);
        outbox.push(req());
        outbox.push(req());
        let first = outbox.take().await.unwrap();
        assert_eq!(outbox.remaining().0, 2, "in-flight entry still counts");
        outbox.retry_later(first);
        assert_eq!(outbox.remaining().0, 2);
        outbox.take().await.unwrap();
        outbox.settle();
        outbox.close();
        outbox.take().await.unwrap();
        outbox.settle();
        assert!(outbox.take().await.is_none());
        assert_eq!(outbox.remaining(), (0, 0));
    }

    #[test]
    fn full_outbox_drops_the_oldest_and_counts_it() {
        let outbox = Outbox::new(2);
        for _ in 0..5 {
            outbox.push(req());
        }
        assert_eq!(outbox.remaining().0, 2);
        assert_eq!(outbox.dropped(), 3);
    }
}
