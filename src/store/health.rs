//! Is the store file sound, and what happens when it is not.
//!
//! At open, a launcher runs SQLite's `PRAGMA quick_check` under a time budget (the launch must
//! stay fast; a check cut short by the budget counts as "not verified", never as damaged).
//! `doctor` runs the full `PRAGMA integrity_check`. A damaged file is set aside under its name
//! plus `.damaged-<UTC time>` (with its WAL), whatever outbox rows can still be read are copied
//! into a fresh store, and the launcher says so. A marker file beside the store records how
//! many rows were waiting, so a store that vanished or was emptied while rows waited is
//! reported rather than silently recreated.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use super::StoreError;

/// What the check at open found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The check ran to its end and found nothing wrong.
    Sound,
    /// The time budget ran out first: nothing is known to be wrong.
    Unverified,
    /// SQLite says the file is damaged; the first problem it named.
    Damaged(String),
}

/// Something the user must be told about the store, said once by the launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreNotice {
    /// The file was damaged: set aside, readable waiting rows copied to a fresh store.
    Damaged {
        reason: String,
        set_aside: PathBuf,
        salvaged_rows: u64,
        lost_rows: Option<u64>,
    },
    /// The file is gone or empty although rows were waiting in it.
    Vanished { waiting_rows: u64, emptied: bool },
}

impl std::fmt::Display for StoreNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreNotice::Damaged {
                reason,
                set_aside,
                salvaged_rows,
                lost_rows,
            } => {
                write!(
                    f,
                    "the local store was damaged ({reason}); it was set aside as {} and a new one \
                     started; {salvaged_rows} waiting batch(es) were recovered",
                    set_aside.display()
                )?;
                if let Some(lost) = lost_rows.filter(|n| *n > 0) {
                    write!(f, ", {lost} could not be read and are lost")?;
                }
                write!(f, " (earlier `report` history stays in the set-aside file)")
            }
            StoreNotice::Vanished {
                waiting_rows,
                emptied,
            } => write!(
                f,
                "the local store was {} while {waiting_rows} batch(es) waited in it for the \
                 upstream; they are lost, a new store was started",
                if *emptied { "emptied" } else { "removed" }
            ),
        }
    }
}

/// `PRAGMA quick_check` on `path`, interrupted after `budget`. Opening a file that is not a
/// database at all (its header overwritten) counts as damaged.
pub fn quick_check(path: &Path, budget: Duration) -> Health {
    check(path, "PRAGMA quick_check(1)", Some(budget))
}

/// The full `PRAGMA integrity_check`, for `doctor`: every page, index and constraint.
pub fn integrity_check(path: &Path) -> Health {
    check(path, "PRAGMA integrity_check(1)", None)
}

fn check(path: &Path, sql: &str, budget: Option<Duration>) -> Health {
    // Read-write: a WAL left by a killed process must be replayed to check what it holds.
    let conn = match Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(e) => return classify(&e).unwrap_or(Health::Unverified),
    };
    let mut conn = conn;
    let _ = conn.busy_timeout(Duration::from_secs(2));
    if let Some(budget) = budget {
        // The check calls the progress handler every few pages, on this thread: no watchdog
        // thread whose wake-up a loaded machine would delay.
        let deadline = std::time::Instant::now() + budget;
        let _ = conn.progress_handler(16, Some(move || std::time::Instant::now() >= deadline));
    }
    let result: rusqlite::Result<String> = conn.query_row(sql, [], |r| r.get(0));
    match result {
        Ok(answer) if answer == "ok" => Health::Sound,
        Ok(answer) => Health::Damaged(one_line(&answer)),
        Err(e) => classify(&e).unwrap_or(Health::Unverified),
    }
}

/// SQLite's report on one line, without its "*** in database main ***" header.
fn one_line(answer: &str) -> String {
    answer
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("***"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// SQLite errors that mean the file itself is damaged (as opposed to busy or interrupted).
fn classify(e: &rusqlite::Error) -> Option<Health> {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt) | Some(rusqlite::ErrorCode::NotADatabase) => {
            Some(Health::Damaged(e.to_string()))
        }
        _ => None,
    }
}

/// True when `e` says the store file is damaged.
pub fn is_damage(e: &StoreError) -> bool {
    matches!(e, StoreError::Sqlite(inner) if classify(inner).is_some())
}

/// Moves the damaged file (and its WAL) aside as `<name>.damaged-<UTC time>`; its shared
/// memory index is rebuilt from the WAL and is removed.
pub fn set_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = utc_stamp();
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".damaged-{stamp}"));
    let aside = PathBuf::from(aside);
    let err = |source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    };
    std::fs::rename(path, &aside).map_err(err)?;
    for suffix in ["-wal", "-journal"] {
        let from = sibling(path, suffix);
        if from.exists() {
            std::fs::rename(&from, sibling(&aside, suffix)).map_err(err)?;
        }
    }
    let _ = std::fs::remove_file(sibling(path, "-shm"));
    Ok(aside)
}

/// Copies every outbox row of the set-aside file that SQLite can still read into the store
/// at `into` (already created). Reads forwards until the first unreadable page, then
/// backwards from the newest row, so rows on both sides of a damaged region are kept.
/// Returns (copied, rows the damaged file said it had but could not be read, when known).
pub fn salvage(from: &Path, into: &Path) -> (u64, Option<u64>) {
    let Ok(src) = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return (0, None);
    };
    let Ok(dst) = Connection::open(into) else {
        return (0, None);
    };
    let _ = dst.busy_timeout(Duration::from_secs(10));
    let said: Option<u64> = src
        .query_row(
            "SELECT value FROM counters WHERE name = 'outbox_rows'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .ok()
        .and_then(|n| u64::try_from(n).ok());
    let mut seen = std::collections::BTreeSet::new();
    let mut copied = 0u64;
    if dst.execute_batch("BEGIN IMMEDIATE").is_err() {
        return (0, said);
    }
    for order in ["ASC", "DESC"] {
        // A file from before schema version 2 has no upstream column.
        let prepared = ["upstream", "NULL"].iter().find_map(|upstream| {
            src.prepare(&format!(
                "SELECT id, signal, items, bytes, received_ns, encoding, body, {upstream}
                 FROM outbox ORDER BY id {order}"
            ))
            .ok()
        });
        let Some(mut stmt) = prepared else {
            continue;
        };
        let Ok(mut rows) = stmt.query([]) else {
            continue;
        };
        loop {
            let row = match rows.next() {
                Ok(Some(row)) => row,
                // Past the damaged region this direction reads nothing more.
                Ok(None) | Err(_) => break,
            };
            let read = (|| -> rusqlite::Result<_> {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, Vec<u8>>(6)?,
                    row.get::<_, Option<String>>(7)?,
                ))
            })();
            let Ok((id, signal, items, bytes, received_ns, encoding, body, upstream)) = read else {
                continue;
            };
            if !seen.insert(id) {
                break;
            }
            let inserted = dst.execute(
                "INSERT INTO outbox(signal, items, bytes, received_ns, encoding, body, upstream)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![signal, items, bytes, received_ns, encoding, body, upstream],
            );
            if inserted.is_ok() {
                copied += 1;
            }
        }
    }
    if dst.execute_batch("COMMIT").is_err() {
        return (0, said);
    }
    (copied, said.map(|n| n.saturating_sub(copied)))
}

/// `<store>.waiting`: how many rows waited at the last open or orderly close.
pub fn marker_path(path: &Path) -> PathBuf {
    sibling(path, ".waiting")
}

/// Records `rows` waiting (removes the marker when none wait).
pub fn write_marker(path: &Path, rows: u64) {
    let marker = marker_path(path);
    if rows == 0 {
        let _ = std::fs::remove_file(marker);
    } else {
        let _ = std::fs::write(marker, format!("{rows}\n"));
    }
}

/// Rows the marker says were waiting (0 without a marker).
pub fn read_marker(path: &Path) -> u64 {
    std::fs::read_to_string(marker_path(path))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `YYYYMMDDTHHMMSSZ` now, UTC (no time-zone database needed).
fn utc_stamp() -> String {
    let secs = super::now_ns() / 1_000_000_000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreBounds};

    #[test]
    fn utc_stamp_has_the_documented_shape() {
        let s = utc_stamp();
        assert_eq!(s.len(), 16, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z') && s.as_bytes()[8] == b'T');
    }

    #[test]
    fn a_sound_store_checks_sound_and_garbage_checks_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path, StoreBounds::default()).unwrap();
        store.close_blocking().unwrap();
        assert_eq!(quick_check(&path, Duration::from_secs(5)), Health::Sound);
        assert_eq!(integrity_check(&path), Health::Sound);
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![0x5a; 64 * 1024]).unwrap();
        assert!(matches!(
            quick_check(&junk, Duration::from_secs(5)),
            Health::Damaged(_)
        ));
    }

    #[test]
    fn a_damaged_store_is_set_aside_and_its_readable_rows_recovered() {
        use crate::otlp::ExportRequest;
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path, StoreBounds::default()).unwrap();
        for _ in 0..5 {
            store
                .append_blocking(ExportRequest::Logs(ExportLogsServiceRequest::default()))
                .unwrap();
        }
        store.close_blocking().unwrap();
        assert_eq!(
            read_marker(&path),
            5,
            "the orderly close records what waits"
        );
        // Overwrite the last page (a leaf of some table): structurally damaged.
        let len = std::fs::metadata(&path).unwrap().len();
        let mut bytes = std::fs::read(&path).unwrap();
        let page = 4096usize;
        let start = (len as usize).saturating_sub(page);
        for b in &mut bytes[start..] {
            *b = 0xa5;
        }
        std::fs::write(&path, &bytes).unwrap();
        let (store, notices) = Store::open_checked(&path, StoreBounds::default()).unwrap();
        let pending = store.outbox_stats_blocking().unwrap().pending_rows;
        store.close_blocking().unwrap();
        match notices.as_slice() {
            [
                StoreNotice::Damaged {
                    set_aside,
                    salvaged_rows,
                    ..
                },
            ] => {
                assert!(set_aside.exists());
                assert!(
                    set_aside
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("s.db.damaged-")
                );
                assert_eq!(*salvaged_rows, pending);
            }
            other => panic!("expected one damage notice, got {other:?}"),
        }
        assert_eq!(quick_check(&path, Duration::from_secs(5)), Health::Sound);
    }

    #[test]
    fn the_marker_counts_waiting_rows_and_goes_when_none_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        write_marker(&path, 7);
        assert_eq!(read_marker(&path), 7);
        write_marker(&path, 0);
        assert_eq!(read_marker(&path), 0);
        assert!(!marker_path(&path).exists());
    }
}
