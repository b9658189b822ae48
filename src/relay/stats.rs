//! Counters of what the relay saw and did; they feed the exit summary, the "nothing arrived"
//! warning and `doctor`.

use crate::otlp::{ExportRequest, Signal};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Relay counters, shared by every stage. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub received_requests: AtomicU64,
    pub received_metric_points: AtomicU64,
    pub received_log_records: AtomicU64,
    pub received_spans: AtomicU64,
    pub delivered_requests: AtomicU64,
    pub rejected_requests: AtomicU64,
    /// Requests nothing could keep (the store failed, no memory fallback): answered with a
    /// retryable error, so claude sends them again; never acknowledged.
    pub refused_requests: AtomicU64,
    /// Requests delivered in parts because the upstream could not take them whole.
    pub split_requests: AtomicU64,
    /// Items dropped because even alone they were too large for the upstream.
    pub dropped_too_large_items: AtomicU64,
    /// Sends in flight when the drain ran out of time that got no answer within the grace:
    /// given back, so the next launch sends them again (the upstream may have them already).
    pub unanswered_sends: AtomicU64,
    /// The last delivery problem, without payload content (safe to print).
    pub last_error: Mutex<Option<String>>,
    /// Unknown attribute keys whose text the privacy policy withheld (key names, never values),
    /// sorted; at most [`MAX_WITHHELD_KEYS`].
    pub withheld_keys: Mutex<Vec<String>>,
}

/// Withheld key names remembered per session: enough to list, bounded against a sender that
/// invents a key per record.
pub const MAX_WITHHELD_KEYS: usize = 64;

impl RelayStats {
    /// Counts one accepted request and its items.
    pub fn record_received(&self, request: &ExportRequest) {
        self.received_requests.fetch_add(1, Ordering::Relaxed);
        let items = request.item_count() as u64;
        let counter = match request.signal() {
            Signal::Metrics => &self.received_metric_points,
            Signal::Logs => &self.received_log_records,
            Signal::Traces => &self.received_spans,
        };
        counter.fetch_add(items, Ordering::Relaxed);
    }

    /// Remembers a delivery problem for the exit summary.
    pub fn record_error(&self, message: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message);
        }
    }

    /// Remembers the unknown keys one request had withheld.
    pub fn record_withheld(&self, keys: Vec<String>) {
        let Ok(mut known) = self.withheld_keys.lock() else {
            return;
        };
        for key in keys {
            if let Err(at) = known.binary_search(&key)
                && known.len() < MAX_WITHHELD_KEYS
            {
                known.insert(at, key);
            }
        }
    }

    /// The withheld key names so far.
    pub fn withheld(&self) -> Vec<String> {
        self.withheld_keys
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default()
    }

    /// Whether claude sent any metric point or event at all.
    pub fn anything_arrived(&self) -> bool {
        self.received_metric_points.load(Ordering::Relaxed) > 0
            || self.received_log_records.load(Ordering::Relaxed) > 0
    }

    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withheld_keys_are_sorted_unique_and_bounded() {
        let stats = RelayStats::default();
        stats.record_withheld(vec!["b".into(), "a".into()]);
        stats.record_withheld(vec!["a".into(), "c".into()]);
        assert_eq!(stats.withheld(), vec!["a", "b", "c"]);
        stats.record_withheld((0..200).map(|i| format!("k{i:03}")).collect());
        assert_eq!(stats.withheld().len(), MAX_WITHHELD_KEYS);
    }
}
