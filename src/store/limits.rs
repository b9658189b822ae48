//! Plan usage-limit samples (the `limit_samples` table): the status line's SQL for them lives
//! here, beside the rest of the store's SQL (its "today" is `budget::spent_today`, counted as
//! budgets and `report` count it).
//!
//! The status line runs on every refresh of Claude Code's prompt, so every query here reads
//! an index range (`limit_samples_window`, or the first rows of the rowid order) and never
//! scans a table.

use std::path::Path;

use rusqlite::{Connection, params};

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

/// Appends `samples` in one transaction.
pub fn record(conn: &mut Connection, samples: &[Sample]) -> Result<(), StoreError> {
    if samples.is_empty() {
        return Ok(());
    }
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
}
