//! Counters of what the relay saw and did; they feed the exit summary, the "nothing arrived"
//! warning and `doctor`.

use crate::otlp::{ExportRequest, Signal};
use crate::settings::RelaySettings;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// What the receivers' bounds turned away (shared with both receivers' `Bounds`).
    pub shed: Arc<ShedCounts>,
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

/// What the receivers' bounds turned away, by reason: each is a sign that claude (or another
/// sender) met a limit, worth saying at exit and in `doctor` with the setting that sets it.
#[derive(Debug, Default)]
pub struct ShedCounts {
    /// Connections refused because `relay.max_connections` were open.
    pub connections: AtomicU64,
    /// Requests answered "busy, retry" because `relay.max_buffered_bytes` were held.
    pub busy: AtomicU64,
    /// Request bodies not received within `relay.body_timeout_ms`.
    pub slow_bodies: AtomicU64,
    /// Connections closed for sending part of a request but no complete one within
    /// `relay.header_timeout_ms` (slowloris, or a client stalled mid-request).
    pub stalled_connections: AtomicU64,
    /// Connections closed at `relay.header_timeout_ms` without their client having sent a
    /// single byte: connection hygiene (a probe or pre-opened connection left unused), not a
    /// sender turned away, so counted apart and not warned about. A connection closed by its
    /// client before sending anything is not counted at all.
    pub unused_connections: AtomicU64,
    /// Requests over `relay.max_request_bytes` (on the wire or inflated): senders do not retry
    /// a "too large" answer, so these are lost.
    pub too_large: AtomicU64,
}

impl ShedCounts {
    /// The counts now.
    pub fn snapshot(&self) -> Shed {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Shed {
            connections: get(&self.connections),
            busy: get(&self.busy),
            slow_bodies: get(&self.slow_bodies),
            stalled_connections: get(&self.stalled_connections),
            unused_connections: get(&self.unused_connections),
            too_large: get(&self.too_large),
        }
    }

    /// Counts one more in `counter`.
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of [`ShedCounts`], kept in the last-run record for `doctor`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Shed {
    /// See [`ShedCounts::connections`].
    pub connections: u64,
    /// See [`ShedCounts::busy`].
    pub busy: u64,
    /// See [`ShedCounts::slow_bodies`].
    pub slow_bodies: u64,
    /// See [`ShedCounts::stalled_connections`].
    pub stalled_connections: u64,
    /// See [`ShedCounts::unused_connections`]; never part of [`Shed::sentence`].
    pub unused_connections: u64,
    /// See [`ShedCounts::too_large`].
    pub too_large: u64,
}

impl Shed {
    /// What was turned away and why, each reason with its setting and value, or `None`.
    /// Unused connections are not in it: closing them turned no sender away.
    pub fn sentence(&self, limits: &RelaySettings) -> Option<String> {
        let mut parts = Vec::new();
        if self.connections > 0 {
            parts.push(format!(
                "{} connection(s) refused with {} open (relay.max_connections)",
                self.connections, limits.max_connections
            ));
        }
        if self.busy > 0 {
            parts.push(format!(
                "{} request(s) told to retry while {} bytes were buffered (relay.max_buffered_bytes)",
                self.busy, limits.max_buffered_bytes
            ));
        }
        if self.slow_bodies > 0 {
            parts.push(format!(
                "{} request body(ies) not received within {} ms (relay.body_timeout_ms)",
                self.slow_bodies, limits.body_timeout_ms
            ));
        }
        if self.stalled_connections > 0 {
            parts.push(format!(
                "{} connection(s) closed for sending no complete request within {} ms \
                 (relay.header_timeout_ms)",
                self.stalled_connections, limits.header_timeout_ms
            ));
        }
        if self.too_large > 0 {
            parts.push(format!(
                "{} request(s) larger than {} bytes (relay.max_request_bytes), which senders \
                 do not retry: lost",
                self.too_large, limits.max_request_bytes
            ));
        }
        (!parts.is_empty()).then(|| format!("the relay's bounds turned away {}", parts.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_bounds_turned_away_is_said_with_each_reason_and_its_setting() {
        let limits = RelaySettings::default();
        assert_eq!(Shed::default().sentence(&limits), None);
        let unused = Shed {
            unused_connections: 3,
            ..Shed::default()
        };
        assert_eq!(
            unused.sentence(&limits),
            None,
            "an unused connection turned no sender away"
        );
        let counts = ShedCounts::default();
        ShedCounts::add(&counts.connections);
        ShedCounts::add(&counts.busy);
        ShedCounts::add(&counts.busy);
        ShedCounts::add(&counts.stalled_connections);
        ShedCounts::add(&counts.too_large);
        let shed = counts.snapshot();
        let text = shed.sentence(&limits).unwrap();
        assert!(
            text.contains(&format!(
                "1 connection(s) refused with {} open (relay.max_connections)",
                limits.max_connections
            )),
            "{text}"
        );
        assert!(text.contains("2 request(s) told to retry"), "{text}");
        assert!(text.contains("(relay.max_buffered_bytes)"), "{text}");
        assert!(
            text.contains("1 connection(s) closed for sending no complete request"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "1 request(s) larger than {} bytes (relay.max_request_bytes)",
                limits.max_request_bytes
            )),
            "{text}"
        );
        assert!(
            !text.contains("relay.body_timeout_ms"),
            "only what happened: {text}"
        );
    }

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
