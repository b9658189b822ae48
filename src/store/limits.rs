//! Plan usage-limit samples (the `limit_samples` table): the status line's SQL for them lives
//! here, beside the rest of the store's SQL (its "today" is `budget::spent_today`, counted as
//! budgets and `report` count it).
//!
//! The status line runs on every refresh of Claude Code's prompt, so every query here reads
//! an index range (`limit_samples_window`, or the first rows of the rowid order) and never
//! scans a table.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, open_connection, schema};

/// One reading of one window, as the status line got it from Claude Code.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When it was read (Unix nanoseconds).
    pub time_ns: i64,
    /// Window name (`five_hour`, `seven_day`, `weekly_all`, …).
    pub window: String,
    /// Share of the window used, 0–100.
    pub used_pct: f64,
    /// When the window resets (Unix seconds), when Claude Code said.
    pub resets_at: Option<i64>,
    /// Claude Code session that read it.
    pub session_id: Option<String>,
}

/// Opens (creating and migrating when needed) the store for the status line: one connection,
/// no writer thread, so a short-lived process pays only for what it reads and writes.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = open_connection(path)?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// Samples are kept this long (90 days: a quarter of weekly windows for `limits`), then
/// pruned as new ones are recorded.
pub const RETENTION_NS: i64 = 90 * 86_400 * 1_000_000_000;

/// At most this many expired rows go per recording, so the first refresh after a long break
/// (or after retention came in, on a store with a year of samples) stays as fast as any other;
/// a refresh records a few samples, so a backlog drains within a few hundred refreshes.
pub const PRUNE_BATCH: i64 = 500;

/// Appends `samples` and prunes up to [`PRUNE_BATCH`] samples older than [`RETENTION_NS`]
/// before the newest of them, in one transaction (one commit per refresh). The oldest rows
/// are found in rowid order (rows are appended as they are read, so oldest first): the first
/// rows of the table, never a scan.
pub fn record(conn: &mut Connection, samples: &[Sample]) -> Result<(), StoreError> {
    let Some(newest) = samples.iter().map(|s| s.time_ns).max() else {
        return Ok(());
    };
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO limit_samples(time_ns, window, used_pct, resets_at, session_id)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for s in samples {
            stmt.execute(params![
                s.time_ns,
                s.window,
                s.used_pct,
                s.resets_at,
                s.session_id
            ])?;
        }
        let cutoff = newest - RETENTION_NS;
        // Usually nothing has expired: one seek to the oldest row says so.
        let oldest: Option<i64> = tx
            .prepare_cached("SELECT time_ns FROM limit_samples ORDER BY id LIMIT 1")?
            .query_row([], |r| r.get(0))
            .optional()?;
        if oldest.is_some_and(|t| t < cutoff) {
            tx.prepare_cached(
                "DELETE FROM limit_samples
                 WHERE id IN (SELECT id FROM limit_samples ORDER BY id LIMIT ?2)
                   AND time_ns < ?1",
            )?
            .execute(params![cutoff, PRUNE_BATCH])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The earliest sample of `window` at or after `since_ns` in the same period (same
/// `resets_at`), the base of the pace forecast.
pub fn period_start(
    conn: &Connection,
    window: &str,
    resets_at: Option<i64>,
    since_ns: i64,
) -> Result<Option<(i64, f64)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT time_ns, used_pct FROM limit_samples
         WHERE window = ?1 AND time_ns >= ?2 AND resets_at IS ?3
         ORDER BY time_ns LIMIT 1",
    )?;
    let mut rows = stmt.query(params![window, since_ns, resets_at])?;
    Ok(match rows.next()? {
        Some(r) => Some((r.get(0)?, r.get(1)?)),
        None => None,
    })
}

/// One window's history, for `claude-telemetry limits`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WindowHistory {
    /// Window name.
    pub window: String,
    /// Samples recorded.
    pub samples: i64,
    /// Distinct periods (reset times) seen.
    pub periods: i64,
    /// Periods whose highest reading reached 100 %.
    pub periods_full: i64,
    /// Periods whose highest reading reached 90 %.
    pub periods_high: i64,
    /// Highest reading ever.
    pub max_pct: f64,
    /// Latest reading and when (Unix seconds).
    pub last_pct: f64,
    /// Time of the latest reading (Unix seconds).
    pub last_at: i64,
    /// Each time a period first reached 100 % (Unix seconds).
    pub hit_at: Vec<i64>,
}

/// Every window's history, busiest first.
pub fn history(conn: &Connection) -> Result<Vec<WindowHistory>, StoreError> {
    let mut stmt = conn.prepare(
        "WITH p AS (
             SELECT window, resets_at, max(used_pct) AS top, count(*) AS n,
                    min(CASE WHEN used_pct >= 100 THEN time_ns END) AS hit
             FROM limit_samples GROUP BY window, resets_at)
         SELECT p.window, sum(n), count(*), sum(top >= 100), sum(top >= 90), max(top),
                (SELECT used_pct FROM limit_samples l WHERE l.window = p.window
                 ORDER BY time_ns DESC LIMIT 1),
                (SELECT max(time_ns) FROM limit_samples l WHERE l.window = p.window),
                group_concat(hit / 1000000000)
         FROM p GROUP BY p.window ORDER BY sum(n) DESC, p.window",
    )?;
    let rows = stmt.query_map([], |r| {
        let hits: Option<String> = r.get(8)?;
        Ok(WindowHistory {
            window: r.get(0)?,
            samples: r.get(1)?,
            periods: r.get(2)?,
            periods_full: r.get(3)?,
            periods_high: r.get(4)?,
            max_pct: r.get(5)?,
            last_pct: r.get(6)?,
            last_at: r.get::<_, i64>(7)? / 1_000_000_000,
            hit_at: hits
                .unwrap_or_default()
                .split(',')
                .filter_map(|s| s.parse().ok())
                .collect(),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: i64, w: &str, pct: f64, reset: i64) -> Sample {
        Sample {
            time_ns: t * 1_000_000_000,
            window: w.into(),
            used_pct: pct,
            resets_at: Some(reset),
            session_id: Some("s".into()),
        }
    }

    #[test]
    fn samples_are_recorded_and_history_counts_full_periods() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("s.db")).unwrap();
        record(
            &mut conn,
            &[
                sample(100, "five_hour", 50.0, 1000),
                sample(200, "five_hour", 100.0, 1000),
                sample(300, "five_hour", 100.0, 1000),
                sample(1100, "five_hour", 95.0, 2000),
                sample(1100, "seven_day", 10.0, 9000),
            ],
        )
        .unwrap();
        let h = history(&conn).unwrap();
        assert_eq!(h[0].window, "five_hour");
        assert_eq!(
            (
                h[0].samples,
                h[0].periods,
                h[0].periods_full,
                h[0].periods_high
            ),
            (4, 2, 1, 2)
        );
        assert_eq!(h[0].hit_at, vec![200]);
        assert_eq!((h[0].last_pct, h[0].last_at), (95.0, 1100));
        assert_eq!(
            period_start(&conn, "five_hour", Some(1000), 150 * 1_000_000_000).unwrap(),
            Some((200 * 1_000_000_000, 100.0))
        );
    }

    #[test]
    fn samples_older_than_ninety_days_are_pruned_a_batch_per_recording() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("s.db")).unwrap();
        let day = 86_400;
        let now = 400 * day;
        // A year of samples every 5 minutes (older than the retention first), then one kept
        // at the edge: 89 days old.
        let year: Vec<Sample> = (0..365 * 288)
            .map(|i| sample(now - 365 * day + i * 300, "five_hour", 10.0, now))
            .collect();
        let expired = year
            .iter()
            .filter(|s| s.time_ns < (now * 1_000_000_000 - RETENTION_NS))
            .count() as i64;
        assert!(expired > 2 * PRUNE_BATCH);
        for chunk in year.chunks(10_000) {
            // Written directly, as a store from before retention holds them.
            let tx = conn.transaction().unwrap();
            for s in chunk {
                tx.execute(
                    "INSERT INTO limit_samples(time_ns, window, used_pct, resets_at, session_id)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![s.time_ns, s.window, s.used_pct, s.resets_at, s.session_id],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let count = |conn: &Connection| -> i64 {
            conn.query_row("SELECT count(*) FROM limit_samples", [], |r| r.get(0))
                .unwrap()
        };
        let total = count(&conn);
        // One refresh now: its sample in, the oldest batch out, nothing younger touched.
        record(&mut conn, &[sample(now, "five_hour", 20.0, now)]).unwrap();
        assert_eq!(count(&conn), total + 1 - PRUNE_BATCH);
        // Refreshes drain the backlog and stop at the retention edge.
        let mut refreshes = 1;
        while count(&conn) > total - expired + refreshes {
            refreshes += 1;
            record(&mut conn, &[sample(now, "seven_day", 5.0, now)]).unwrap();
            assert!(refreshes < 1000, "the backlog does not drain");
        }
        assert_eq!(refreshes, (expired + PRUNE_BATCH - 1) / PRUNE_BATCH);
        let oldest: i64 = conn
            .query_row("SELECT min(time_ns) FROM limit_samples", [], |r| r.get(0))
            .unwrap();
        assert!(oldest >= now * 1_000_000_000 - RETENTION_NS, "{oldest}");
        assert!(oldest < (now - 89 * day) * 1_000_000_000, "young rows kept");
        record(&mut conn, &[sample(now, "seven_day", 5.0, now)]).unwrap();
        assert_eq!(count(&conn), total - expired + refreshes + 1);
    }
}
