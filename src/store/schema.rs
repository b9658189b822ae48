//! Schema and ordered migrations, versioned with `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema from version `i` to `i + 1` and runs once,
//! inside the same `BEGIN IMMEDIATE` transaction that bumps `user_version`, so a crash halfway
//! leaves the previous version intact and several processes opening a fresh file at once
//! serialise on the write lock instead of racing. Never edit a released migration: append one.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Version 1: outbox, persistent counters, usage rows and the hourly rollup the report reads.
const V1: &str = r#"
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters(name, value) VALUES
    ('outbox_bytes', 0), ('outbox_rows', 0),
    ('dropped_rows', 0), ('dropped_items', 0), ('dropped_bytes', 0);

-- One row per accepted export request, deleted once upstream accepted it.
-- AUTOINCREMENT: ids are never reused, so a stale claim can never touch a newer row.
CREATE TABLE outbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    signal         TEXT    NOT NULL,
    items          INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    received_ns    INTEGER NOT NULL,
    -- 'deflate' (zlib) or 'none': protobuf compresses ~5x, so the same size bound holds
    -- five times the outage and the WAL writes a fifth of the bytes.
    encoding       TEXT    NOT NULL,
    body           BLOB    NOT NULL,
    claim_owner    TEXT,
    claim_until_ns INTEGER
);
-- The counters follow the table in the same transaction whatever deletes a row.
CREATE TRIGGER outbox_count_insert AFTER INSERT ON outbox BEGIN
    UPDATE counters SET value = value + NEW.bytes WHERE name = 'outbox_bytes';
    UPDATE counters SET value = value + 1 WHERE name = 'outbox_rows';
END;
CREATE TRIGGER outbox_count_delete AFTER DELETE ON outbox BEGIN
    UPDATE counters SET value = value - OLD.bytes WHERE name = 'outbox_bytes';
    UPDATE counters SET value = value - 1 WHERE name = 'outbox_rows';
END;

-- Resource attribute sets (service.version, os.type, project, team.id, ...), deduplicated.
CREATE TABLE resources (
    id         INTEGER PRIMARY KEY,
    attrs_json TEXT NOT NULL UNIQUE
);

-- Raw rows refer to a session by this integer id: 8 bytes instead of a 36-byte UUID in
-- every one of millions of rows.
CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY,
    session_id    TEXT NOT NULL UNIQUE,
    user_id       TEXT,
    project       TEXT NOT NULL DEFAULT '',
    terminal_type TEXT,
    resource_id   INTEGER REFERENCES resources(id),
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns  INTEGER NOT NULL
);

-- Raw rows have no secondary indexes: they arrive in time order (rowid order) and every
-- index is one more B-tree page written per commit; the report reads usage_hourly.

-- Every number data point of every metric, as received (model keeps its context suffix).
CREATE TABLE metric_points (
    id          INTEGER PRIMARY KEY,
    time_ns     INTEGER NOT NULL,
    start_ns    INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    type        TEXT,
    model       TEXT,
    session     INTEGER REFERENCES sessions(id),
    project     TEXT    NOT NULL DEFAULT '',
    value       REAL    NOT NULL,
    temporality INTEGER NOT NULL,
    attrs_json  TEXT,
    resource_id INTEGER REFERENCES resources(id)
);

CREATE TABLE api_requests (
    id                    INTEGER PRIMARY KEY,
    time_ns               INTEGER NOT NULL,
    session               INTEGER REFERENCES sessions(id),
    prompt_id             TEXT,
    project               TEXT NOT NULL DEFAULT '',
    model                 TEXT,
    cost_usd              REAL,
    input_tokens          INTEGER,
    output_tokens         INTEGER,
    cache_read_tokens     INTEGER,
    cache_creation_tokens INTEGER,
    duration_ms           REAL,
    request_id            TEXT,
    query_source          TEXT,
    resource_id           INTEGER REFERENCES resources(id)
);

-- tool_decision and tool_result events (never their parameters or input).
CREATE TABLE tool_events (
    id          INTEGER PRIMARY KEY,
    time_ns     INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    session     INTEGER REFERENCES sessions(id),
    project     TEXT NOT NULL DEFAULT '',
    tool_name   TEXT,
    decision    TEXT,
    source      TEXT,
    success     INTEGER,
    duration_ms REAL
);

-- Every other event (user_prompt, api_error, ...) by name only: no free text is kept.
CREATE TABLE other_events (
    id          INTEGER PRIMARY KEY,
    time_ns     INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    session     INTEGER REFERENCES sessions(id),
    project     TEXT NOT NULL DEFAULT '',
    model       TEXT,
    status_code INTEGER
);

-- Sums per (UTC hour, session, model, project), maintained at ingest: the report reads only
-- this table, so its cost does not grow with the number of raw rows.
CREATE TABLE usage_hourly (
    hour                  INTEGER NOT NULL,
    session_id            TEXT    NOT NULL,
    model                 TEXT    NOT NULL,
    project               TEXT    NOT NULL,
    sessions_started      REAL NOT NULL DEFAULT 0,
    cost_usd              REAL NOT NULL DEFAULT 0,
    input_tokens          REAL NOT NULL DEFAULT 0,
    output_tokens         REAL NOT NULL DEFAULT 0,
    cache_read_tokens     REAL NOT NULL DEFAULT 0,
    cache_creation_tokens REAL NOT NULL DEFAULT 0,
    lines_added           REAL NOT NULL DEFAULT 0,
    lines_removed         REAL NOT NULL DEFAULT 0,
    commits               REAL NOT NULL DEFAULT 0,
    pull_requests         REAL NOT NULL DEFAULT 0,
    active_user_s         REAL NOT NULL DEFAULT 0,
    active_cli_s          REAL NOT NULL DEFAULT 0,
    edit_accepts          REAL NOT NULL DEFAULT 0,
    edit_rejects          REAL NOT NULL DEFAULT 0,
    api_requests          INTEGER NOT NULL DEFAULT 0,
    api_errors            INTEGER NOT NULL DEFAULT 0,
    api_duration_ms       REAL NOT NULL DEFAULT 0,
    api_cost_usd          REAL NOT NULL DEFAULT 0,
    api_input_tokens      REAL NOT NULL DEFAULT 0,
    api_output_tokens     REAL NOT NULL DEFAULT 0,
    api_cache_read_tokens REAL NOT NULL DEFAULT 0,
    api_cache_creation_tokens REAL NOT NULL DEFAULT 0,
    prompts               INTEGER NOT NULL DEFAULT 0,
    tool_accepts          INTEGER NOT NULL DEFAULT 0,
    tool_rejects          INTEGER NOT NULL DEFAULT 0,
    tool_runs             INTEGER NOT NULL DEFAULT 0,
    tool_failures         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, session_id, model, project)
) WITHOUT ROWID;
"#;

/// Version 2: each outbox row remembers the upstream it was accepted for (so a run with another
/// upstream leaves it alone unless `store.retarget = "follow"`), and how often its delivery
/// failed (per-row back-off, so one failing row never holds back the rows behind it; `doctor`
/// reads it to say delivery is stuck).
const V2: &str = r#"
-- NULL: queued before version 2, when rows did not say; any upstream may take them.
ALTER TABLE outbox ADD COLUMN upstream TEXT;
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
-- The last delivery error of the row (no payload content), for `doctor`.
ALTER TABLE outbox ADD COLUMN last_error TEXT;
-- Only failing rows are indexed: `doctor` and the stats find them without a scan.
CREATE INDEX outbox_failing ON outbox(attempts) WHERE attempts > 0;
"#;

/// Version 3: claude 2.1.332's split of `api_request.cache_creation_tokens` into the 5-minute
/// and 1-hour cache writes. Observed: `cache_creation_tokens` is the API's
/// `cache_creation_input_tokens` (the total) and the two new fields are the API's
/// `cache_creation.ephemeral_5m_input_tokens` / `…_1h_…` passed through, so they are parts of
/// the total: stored beside it, never added to it. NULL where a release does not send them.
const V3: &str = r#"
ALTER TABLE api_requests ADD COLUMN cache_creation_5m_tokens INTEGER;
ALTER TABLE api_requests ADD COLUMN cache_creation_1h_tokens INTEGER;
ALTER TABLE usage_hourly ADD COLUMN api_cache_creation_5m_tokens REAL NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN api_cache_creation_1h_tokens REAL NOT NULL DEFAULT 0;
-- api_request events that carried the split: the report shows the split only when > 0.
ALTER TABLE usage_hourly ADD COLUMN api_cache_split_requests REAL NOT NULL DEFAULT 0;
"#;

/// Version 4: the request ledger (see `ledger.rs`): one compact row per API request from
/// telemetry or a transcript, its hourly rollup, the labels its integer ids name, and how far
/// each transcript file has been read.
const V4: &str = r#"
-- kind: 0 session id, 1 model, 2 project, 3 git branch. Id 0 (never assigned) means none.
CREATE TABLE labels (
    id   INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    name TEXT    NOT NULL,
    UNIQUE (kind, name)
);
-- key: the request id, else 'msg:' + message id. sources: 1 telemetry, 2 transcript, 3 both.
-- cost_usd: claude's own (telemetry); NULL where only a transcript saw the request.
CREATE TABLE requests (
    key                   TEXT    PRIMARY KEY,
    time_s                INTEGER NOT NULL,
    session               INTEGER NOT NULL,
    model                 INTEGER NOT NULL,
    project               INTEGER NOT NULL,
    branch                INTEGER NOT NULL,
    input_tokens          INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    cache_read_tokens     INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    cache_5m_tokens       INTEGER,
    cache_1h_tokens       INTEGER,
    cost_usd              REAL,
    sources               INTEGER NOT NULL
) WITHOUT ROWID;
-- Sums of `requests` per (UTC hour, session, model, project, branch, long-context tier).
-- est_*: tokens of requests seen only in transcripts, priced by the report's price table.
CREATE TABLE request_hourly (
    hour    INTEGER NOT NULL,
    session INTEGER NOT NULL,
    model   INTEGER NOT NULL,
    project INTEGER NOT NULL,
    branch  INTEGER NOT NULL,
    long    INTEGER NOT NULL,
    requests              INTEGER NOT NULL DEFAULT 0,
    telemetry_only        INTEGER NOT NULL DEFAULT 0,
    transcript_only       INTEGER NOT NULL DEFAULT 0,
    both                  INTEGER NOT NULL DEFAULT 0,
    input_tokens          INTEGER NOT NULL DEFAULT 0,
    output_tokens         INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens     INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    cache_1h_tokens       INTEGER NOT NULL DEFAULT 0,
    est_input_tokens      INTEGER NOT NULL DEFAULT 0,
    est_output_tokens     INTEGER NOT NULL DEFAULT 0,
    est_cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    est_cache_5m_tokens   INTEGER NOT NULL DEFAULT 0,
    est_cache_1h_tokens   INTEGER NOT NULL DEFAULT 0,
    cost_usd_micros       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, session, model, project, branch, long)
) WITHOUT ROWID;
-- How far each transcript file has been read (see ledger::FileState).
CREATE TABLE transcript_files (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode    INTEGER NOT NULL,
    offset   INTEGER NOT NULL,
    lines    INTEGER NOT NULL,
    tail     BLOB    NOT NULL
) WITHOUT ROWID;
"#;

/// Version 5: compact metric points (issue 12: a million requests in <= 300 MB; they took
/// 920 MB, 85 % of it in `metric_points`). What a point says besides its time, session and
/// value (metric name, type, model, project, the attributes JSON, resource, temporality) is
/// stored once per distinct combination in `metric_series`, and points refer to it by id: about
/// 40 bytes a point instead of 170. From this version on, cost and token points that the
/// rollup sums are not stored one by one at all (see `usage.rs`); the rows already stored are
/// kept, converted. Absent texts become '' so the combination can be a UNIQUE key.
const V5: &str = r#"
CREATE TABLE metric_series (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    type        TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    project     TEXT    NOT NULL,
    attrs_json  TEXT    NOT NULL,
    resource_id INTEGER NOT NULL,
    temporality INTEGER NOT NULL,
    UNIQUE (name, type, model, project, attrs_json, resource_id, temporality)
);
INSERT INTO metric_series(name, type, model, project, attrs_json, resource_id, temporality)
    SELECT DISTINCT name, ifnull(type, ''), ifnull(model, ''), project, ifnull(attrs_json, ''),
                    ifnull(resource_id, 0), temporality
    FROM metric_points;
CREATE TABLE metric_points_v4 (
    id       INTEGER PRIMARY KEY,
    time_ns  INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    session  INTEGER REFERENCES sessions(id),
    series   INTEGER NOT NULL REFERENCES metric_series(id),
    value    REAL    NOT NULL
);
INSERT INTO metric_points_v4(id, time_ns, start_ns, session, series, value)
    SELECT p.id, p.time_ns, p.start_ns, p.session, s.id, p.value
    FROM metric_points p JOIN metric_series s
      ON s.name = p.name AND s.type = ifnull(p.type, '') AND s.model = ifnull(p.model, '')
     AND s.project = p.project AND s.attrs_json = ifnull(p.attrs_json, '')
     AND s.resource_id = ifnull(p.resource_id, 0) AND s.temporality = p.temporality
    ORDER BY p.id;
DROP TABLE metric_points;
ALTER TABLE metric_points_v4 RENAME TO metric_points;
"#;

/// Version 6: plan usage-limit samples the status-line command records (issue 13): one row per
/// window per refresh, so the status line can forecast when a window runs out and `limits`
/// can show how often windows were hit. `resets_at` (Unix seconds) tells one window period
/// from the next.
const V6: &str = r#"
CREATE TABLE limit_samples (
    id         INTEGER PRIMARY KEY,
    time_ns    INTEGER NOT NULL,
    window     TEXT    NOT NULL,
    used_pct   REAL    NOT NULL,
    resets_at  INTEGER,
    session_id TEXT
);
CREATE INDEX limit_samples_window ON limit_samples(window, time_ns);
"#;

/// Version 7: a relayed request is stored once (issue 12: a million requests in <= 300 MB).
/// An `api_request` event with a request id was a 160-byte `api_requests` row repeating what
/// its ledger row (`requests`, version 4) holds: time, session, model, project, tokens, cost,
/// the id itself. Its own fields (nanosecond time, prompt id, duration, query source, resource,
/// which token fields it lacked) now go into that ledger row; `api_requests` becomes a view
/// over both, so readers see every event as before. Events without a request id (older
/// releases) stay rows of `api_requests_unkeyed`. Rows stored before move: their fields into
/// the ledger row of their request, the duplicate row deleted (of repeated copies of one
/// event, as the ledger, one is kept). Events from before the ledger (no ledger row) stay.
const V7: &str = r#"
ALTER TABLE requests ADD COLUMN event_ns INTEGER;
ALTER TABLE requests ADD COLUMN prompt_id TEXT;
ALTER TABLE requests ADD COLUMN duration_ms REAL;
ALTER TABLE requests ADD COLUMN query_source TEXT;
ALTER TABLE requests ADD COLUMN resource_id INTEGER;
-- Bits of the token fields the event did not carry (1 input, 2 output, 4 cache read,
-- 8 cache creation; the ledger holds 0 for them); NULL when it carried all four.
ALTER TABLE requests ADD COLUMN absent INTEGER;
UPDATE requests SET event_ns = a.time_ns, prompt_id = a.prompt_id, duration_ms = a.duration_ms,
       query_source = a.query_source, resource_id = a.resource_id,
       absent = nullif((a.input_tokens IS NULL) | ((a.output_tokens IS NULL) << 1)
                       | ((a.cache_read_tokens IS NULL) << 2)
                       | ((a.cache_creation_tokens IS NULL) << 3), 0)
  FROM api_requests a
 WHERE a.request_id = requests.key AND requests.sources & 1;
DELETE FROM api_requests
 WHERE request_id IN (SELECT key FROM requests WHERE event_ns IS NOT NULL);
ALTER TABLE api_requests RENAME TO api_requests_unkeyed;
CREATE VIEW api_requests AS
SELECT id, time_ns, session, prompt_id, project, model, cost_usd, input_tokens, output_tokens,
       cache_read_tokens, cache_creation_tokens, duration_ms, request_id, query_source,
       resource_id, cache_creation_5m_tokens, cache_creation_1h_tokens
  FROM api_requests_unkeyed
UNION ALL
SELECT NULL, r.event_ns, (SELECT id FROM sessions WHERE session_id = s.name), r.prompt_id,
       coalesce(p.name, ''), m.name, r.cost_usd,
       CASE WHEN r.absent & 1 THEN NULL ELSE r.input_tokens END,
       CASE WHEN r.absent & 2 THEN NULL ELSE r.output_tokens END,
       CASE WHEN r.absent & 4 THEN NULL ELSE r.cache_read_tokens END,
       CASE WHEN r.absent & 8 THEN NULL ELSE r.cache_creation_tokens END,
       r.duration_ms, r.key, r.query_source, r.resource_id, r.cache_5m_tokens, r.cache_1h_tokens
  FROM requests r
  LEFT JOIN labels s ON s.id = r.session
  LEFT JOIN labels m ON m.id = r.model
  LEFT JOIN labels p ON p.id = r.project
 WHERE r.event_ns IS NOT NULL;
"#;

/// Version 8: a ledger row is found by `slot`, a stable 64-bit hash of the request key
/// (`ledger::key_id`, probed to the next free slot on a collision), in a unique integer index,
/// and rows are appended in arrival order (`id`), instead of the key text being the primary
/// key of a `WITHOUT ROWID` table (issue 11: the relay's CPU per item). Every write looked the
/// key up and inserted it with text comparisons at each level of the tree, and inserted the
/// whole row at a random place in it, splitting pages; now the row goes at the end of the
/// table and only a 20-byte index entry at a random place. The key stays a plain column (the
/// `api_requests` view's `request_id`, the collision check). [`finish_v8`] indexes the copied
/// rows (placing any whose hash another key took first) and drops the old table.
const V8: &str = r#"
DROP VIEW api_requests;
ALTER TABLE requests RENAME TO requests_v7;
CREATE TABLE requests (
    id                    INTEGER PRIMARY KEY,
    slot                  INTEGER NOT NULL,
    key                   TEXT    NOT NULL,
    time_s                INTEGER NOT NULL,
    session               INTEGER NOT NULL,
    model                 INTEGER NOT NULL,
    project               INTEGER NOT NULL,
    branch                INTEGER NOT NULL,
    input_tokens          INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    cache_read_tokens     INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    cache_5m_tokens       INTEGER,
    cache_1h_tokens       INTEGER,
    cost_usd              REAL,
    sources               INTEGER NOT NULL,
    event_ns              INTEGER,
    prompt_id             TEXT,
    duration_ms           REAL,
    query_source          TEXT,
    resource_id           INTEGER,
    absent                INTEGER
);
INSERT INTO requests(slot, key, time_s, session, model, project, branch, input_tokens,
       output_tokens, cache_read_tokens, cache_creation_tokens, cache_5m_tokens,
       cache_1h_tokens, cost_usd, sources, event_ns, prompt_id, duration_ms, query_source,
       resource_id, absent)
SELECT ledger_key_id(key), key, time_s, session, model, project, branch, input_tokens,
       output_tokens, cache_read_tokens, cache_creation_tokens, cache_5m_tokens,
       cache_1h_tokens, cost_usd, sources, event_ns, prompt_id, duration_ms, query_source,
       resource_id, absent
  FROM requests_v7;
DROP TABLE requests_v7;
CREATE VIEW api_requests AS
SELECT id, time_ns, session, prompt_id, project, model, cost_usd, input_tokens, output_tokens,
       cache_read_tokens, cache_creation_tokens, duration_ms, request_id, query_source,
       resource_id, cache_creation_5m_tokens, cache_creation_1h_tokens
  FROM api_requests_unkeyed
UNION ALL
SELECT NULL, r.event_ns, (SELECT id FROM sessions WHERE session_id = s.name), r.prompt_id,
       coalesce(p.name, ''), m.name, r.cost_usd,
       CASE WHEN r.absent & 1 THEN NULL ELSE r.input_tokens END,
       CASE WHEN r.absent & 2 THEN NULL ELSE r.output_tokens END,
       CASE WHEN r.absent & 4 THEN NULL ELSE r.cache_read_tokens END,
       CASE WHEN r.absent & 8 THEN NULL ELSE r.cache_creation_tokens END,
       r.duration_ms, r.key, r.query_source, r.resource_id, r.cache_5m_tokens, r.cache_1h_tokens
  FROM requests r
  LEFT JOIN labels s ON s.id = r.session
  LEFT JOIN labels m ON m.id = r.model
  LEFT JOIN labels p ON p.id = r.project
 WHERE r.event_ns IS NOT NULL;
-- Outbox bodies are LZ4 from version 8 on. A launcher of an older release still running on
-- this file would claim such a row, fail to inflate it and drop it as unreadable: claims go
-- through `outbox_can_read`, which only this release and later register on their
-- connections, so an older one's claim statement fails to prepare and takes nothing (its
-- rows wait for a current launcher); a row in an encoding this build does not know is left
-- for a build that does.
CREATE TRIGGER outbox_claims_only_what_the_claimer_reads
BEFORE UPDATE OF claim_owner ON outbox
WHEN NEW.claim_owner IS NOT NULL AND NOT outbox_can_read(NEW.encoding)
BEGIN SELECT RAISE(IGNORE); END;
"#;

/// The index that finds a ledger row by its key's slot (version 8).
const SLOT_INDEX: &str = "CREATE UNIQUE INDEX requests_slot ON requests(slot)";

/// The rest of version 8: the unique slot index over the copied rows. Should two keys share a
/// hash (astronomically rare with 64 bits, but a row is never lost to it), the index cannot be
/// built as they stand: every such row after the first moves to the next free slot, as
/// `ledger::LedgerTx` places a new key, and the index is built then.
fn finish_v8(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    match tx.execute_batch(SLOT_INDEX) {
        Ok(()) => return Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation => {}
        Err(e) => return Err(e.into()),
    }
    tx.execute_batch("CREATE INDEX requests_slot_v8 ON requests(slot)")?;
    let shared: Vec<(i64, i64)> = tx
        .prepare(
            "SELECT slot, id FROM requests
              WHERE slot IN (SELECT slot FROM requests GROUP BY slot HAVING count(*) > 1)
              ORDER BY slot, id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut taken = tx.prepare("SELECT count(*) FROM requests WHERE slot = ?1")?;
    let mut mv = tx.prepare("UPDATE requests SET slot = ?2 WHERE id = ?1")?;
    let mut previous = None;
    for (slot, id) in shared {
        if previous == Some(slot) {
            let mut free = slot.wrapping_add(1);
            while taken.query_row([free], |r| r.get::<_, i64>(0))? > 0 {
                free = free.wrapping_add(1);
            }
            mv.execute([id, free])?;
        }
        previous = Some(slot);
    }
    tx.execute_batch(&format!("DROP INDEX requests_slot_v8; {SLOT_INDEX}"))?;
    Ok(())
}

/// Registers the SQL functions migrations call (`ledger_key_id`, version 8) on `conn`.
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "ledger_key_id",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let key = ctx.get_raw(0).as_str()?;
            Ok(super::ledger::key_id(key))
        },
    )
}

/// Every migration in order; index `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8];

/// Rust work a migration does after its SQL (say, indexing rows it could not index in SQL).
type Finish = fn(&rusqlite::Transaction<'_>) -> Result<(), StoreError>;

/// The migrations with a [`Finish`] step, by the index of their [`MIGRATIONS`] entry.
const FINISH: &[(usize, Finish)] = &[(7, finish_v8)];

/// The schema version this build writes and reads.
pub(crate) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the file to [`CURRENT_VERSION`]; a no-op when it is already there.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // Cheap check first: re-opening an up-to-date store takes no write lock at all.
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == CURRENT_VERSION {
        return Ok(());
    }
    if version == 0 {
        incremental_auto_vacuum(conn);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read under the write lock: another process may have migrated meanwhile.
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > CURRENT_VERSION {
        return Err(StoreError::NewerSchema {
            found: version,
            supported: CURRENT_VERSION,
        });
    }
    register_functions(&tx)?;
    let first = usize::try_from(version).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(first) {
        tx.execute_batch(sql)?;
        if let Some((_, finish)) = FINISH.iter().find(|(at, _)| *at == i) {
            finish(&tx)?;
        }
    }
    tx.pragma_update(None, "user_version", CURRENT_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// A new file gets `auto_vacuum = INCREMENTAL`, so the pages an outbox frees after an outage
/// (up to its 256 MiB bound) can be given back to the file system (`outbox::reclaim_free_pages`)
/// instead of staying in the file for good. The mode can only be chosen while the file has no
/// table, and in WAL mode only a VACUUM applies it: instant on an empty file. Best effort: when
/// another process created the tables meanwhile, the file simply keeps the default mode.
/// Files created before this version keep theirs (switching needs a VACUUM of the whole file).
fn incremental_auto_vacuum(conn: &Connection) {
    let empty = conn
        .query_row("SELECT count(*) = 0 FROM sqlite_master", [], |r| {
            r.get::<_, bool>(0)
        })
        .unwrap_or(false);
    if empty {
        let _ = conn
            .pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .and_then(|()| conn.execute_batch("VACUUM"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One version-3 `metric_points` row, every column.
    type OldPoint = (
        i64,
        i64,
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<i64>,
        String,
        f64,
        i64,
        Option<String>,
        Option<i64>,
    );

    const OLD_POINTS: &str = "SELECT id, time_ns, start_ns, name, type, model, session, project,
                                     value, temporality, attrs_json, resource_id
                              FROM metric_points ORDER BY id";

    fn old_point(r: &rusqlite::Row<'_>) -> rusqlite::Result<OldPoint> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
            r.get(10)?,
            r.get(11)?,
        ))
    }

    #[test]
    fn a_version_3_store_keeps_every_metric_point_and_rollup_row_when_migrated() {
        let mut conn = Connection::open_in_memory().unwrap();
        // As every store connection (`open_connection`): rows may name sessions not stored.
        conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        // Rows as the version-3 writer stored them: absent texts NULL, two points per series.
        conn.execute_batch(
            r#"INSERT INTO resources(id, attrs_json) VALUES (1, '{"service.name":"claude-code"}');
            INSERT INTO metric_points(time_ns, start_ns, name, type, model, session, project,
                                      value, temporality, attrs_json, resource_id) VALUES
              (10, 5, 'claude_code.cost.usage', NULL, 'claude-opus-4-8[1m]', 1, 'api', 0.25, 1,
               '{"query_source":"main"}', 1),
              (11, 6, 'claude_code.token.usage', 'input', 'claude-opus-4-8[1m]', 1, 'api', 1200,
               1, '{"query_source":"main"}', 1),
              (12, 7, 'claude_code.cost.usage', NULL, 'claude-opus-4-8[1m]', 2, 'api', 0.5, 1,
               '{"query_source":"main"}', 1),
              (13, 8, 'claude_code.active_time.total', 'cli', NULL, NULL, '', 35, 1, NULL, NULL),
              (14, 9, 'claude_code.active_time.total', 'cli', NULL, 2, '', 20, 2, NULL, 1);
            INSERT INTO usage_hourly(hour, session_id, model, project, cost_usd, input_tokens)
              VALUES (3600, 's1', 'claude-opus-4-8', 'api', 0.75, 1200);"#,
        )
        .unwrap();
        let before: Vec<OldPoint> = conn
            .prepare(OLD_POINTS)
            .unwrap()
            .query_map([], old_point)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let rollup = |c: &Connection| -> (f64, f64) {
            c.query_row("SELECT cost_usd, input_tokens FROM usage_hourly", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        let rollup_before = rollup(&conn);

        migrate(&mut conn).unwrap();

        // The old rows, read back through their series, are what was stored ('' for NULL).
        let after: Vec<OldPoint> = conn
            .prepare(
                "SELECT p.id, p.time_ns, p.start_ns, s.name, nullif(s.type, ''),
                        nullif(s.model, ''), p.session, s.project, p.value, s.temporality,
                        nullif(s.attrs_json, ''), nullif(s.resource_id, 0)
                 FROM metric_points p JOIN metric_series s ON s.id = p.series ORDER BY p.id",
            )
            .unwrap()
            .query_map([], old_point)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(after, before);
        let series: i64 = conn
            .query_row("SELECT count(*) FROM metric_series", [], |r| r.get(0))
            .unwrap();
        assert_eq!(series, 4, "two cost points share one series");
        assert_eq!(rollup(&conn), rollup_before);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, CURRENT_VERSION);
    }

    #[test]
    fn a_version_6_store_keeps_every_api_request_when_keyed_ones_move_into_the_ledger() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
        for sql in &MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        // As the version-6 writer stored them: a keyed event (in both tables), one the ledger
        // never saw (stored before version 4), one without a request id.
        conn.execute_batch(
            r#"INSERT INTO sessions(id, session_id, first_seen_ns, last_seen_ns)
                 VALUES (5, 's1', 1, 2);
            INSERT INTO labels(id, kind, name) VALUES (1, 0, 's1'), (2, 1, 'claude-opus-4-8'),
                 (3, 2, 'api');
            INSERT INTO api_requests(time_ns, session, prompt_id, project, model, cost_usd,
                 input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
                 duration_ms, request_id, query_source, resource_id, cache_creation_5m_tokens,
                 cache_creation_1h_tokens) VALUES
              (3600000000123, 5, 'p-1', 'api', 'claude-opus-4-8', 0.25, 10, 20, NULL, 40,
               1500.0, 'req_a', 'main', 1, 15, 25),
              (3600000000456, 5, 'p-2', 'api', 'claude-opus-4-8', 0.5, 1, 2, 3, 4, 900.0,
               'req_old', 'main', 1, NULL, NULL),
              (3600000000789, 5, 'p-3', 'api', 'claude-opus-4-8', 0.75, 5, 6, 7, 8, 800.0,
               NULL, 'main', 1, NULL, NULL);
            INSERT INTO requests(key, time_s, session, model, project, branch, input_tokens,
                 output_tokens, cache_read_tokens, cache_creation_tokens, cache_5m_tokens,
                 cache_1h_tokens, cost_usd, sources) VALUES
              ('req_a', 3600, 1, 2, 3, 0, 10, 20, 0, 40, 15, 25, 0.25, 1);"#,
        )
        .unwrap();
        let all = "SELECT time_ns, session, prompt_id, project, model, cost_usd, input_tokens,
                          output_tokens, cache_read_tokens, cache_creation_tokens, duration_ms,
                          request_id, query_source, resource_id, cache_creation_5m_tokens,
                          cache_creation_1h_tokens FROM api_requests ORDER BY time_ns";
        let rows = |c: &Connection| -> Vec<Vec<rusqlite::types::Value>> {
            c.prepare(all)
                .unwrap()
                .query_map([], |r| (0..16).map(|i| r.get(i)).collect())
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let before = rows(&conn);

        migrate(&mut conn).unwrap();

        assert_eq!(rows(&conn), before, "every event reads back as it was");
        let kept: Vec<Option<String>> = conn
            .prepare("SELECT request_id FROM api_requests_unkeyed ORDER BY time_ns")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            kept,
            [Some("req_old".to_owned()), None],
            "req_a is stored once"
        );
    }

    /// A version-7 store as its writer left it: three ledger rows (a relayed event with its
    /// fields, a transcript-only request, one seen by both), their rollup, an unkeyed event.
    fn version_7_store() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..7] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 7).unwrap();
        tx.execute_batch(
            r#"INSERT INTO sessions(id, session_id, first_seen_ns, last_seen_ns)
                 VALUES (5, 's1', 1, 2);
            INSERT INTO labels(id, kind, name) VALUES (1, 0, 's1'), (2, 1, 'claude-opus-4-8'),
                 (3, 2, 'api'), (4, 3, 'main');
            INSERT INTO requests(key, time_s, session, model, project, branch, input_tokens,
                 output_tokens, cache_read_tokens, cache_creation_tokens, cache_5m_tokens,
                 cache_1h_tokens, cost_usd, sources, event_ns, prompt_id, duration_ms,
                 query_source, resource_id, absent) VALUES
              ('req_a', 3600, 1, 2, 3, 0, 10, 20, 0, 40, 15, 25, 0.25, 1, 3600000000123,
               'p-1', 1500.0, 'main', 1, 4),
              ('msg:m1', 3700, 1, 2, 3, 4, 1, 2, 3, 4, NULL, NULL, NULL, 2, NULL, NULL,
               NULL, NULL, NULL, NULL),
              ('req_b', 3800, 1, 2, 3, 4, 5, 6, 7, 8, NULL, NULL, 0.5, 3, 3800000000456,
               'p-2', 900.0, 'main', 1, NULL);
            INSERT INTO request_hourly(hour, session, model, project, branch, long, requests)
              VALUES (3600, 1, 2, 3, 0, 0, 1), (3600, 1, 2, 3, 4, 0, 2);
            INSERT INTO api_requests_unkeyed(time_ns, session, project, model, cost_usd,
                 input_tokens) VALUES (3600000000789, 5, 'api', 'claude-opus-4-8', 0.75, 5);"#,
        )
        .unwrap();
        tx.commit().unwrap();
        conn
    }

    const LEDGER_ROWS: &str = "SELECT key, time_s, session, model, project, branch,
        input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cache_5m_tokens,
        cache_1h_tokens, cost_usd, sources, event_ns, prompt_id, duration_ms, query_source,
        resource_id, absent FROM requests ORDER BY key";

    fn table(c: &Connection, sql: &str) -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = c.prepare(sql).unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    const EVENTS: &str = "SELECT * FROM api_requests ORDER BY time_ns";

    #[test]
    fn a_version_7_store_keeps_every_ledger_row_and_event_when_rows_take_hashed_ids() {
        let mut conn = version_7_store();
        let (rows, events) = (table(&conn, LEDGER_ROWS), table(&conn, EVENTS));
        let rollup = table(
            &conn,
            "SELECT * FROM request_hourly ORDER BY 1, 2, 3, 4, 5, 6",
        );
        assert_eq!(rows.len(), 3);
        assert_eq!(events.len(), 3);

        migrate(&mut conn).unwrap();

        assert_eq!(
            table(&conn, LEDGER_ROWS),
            rows,
            "every row and column as it was"
        );
        assert_eq!(
            table(&conn, EVENTS),
            events,
            "the view reads every event as before"
        );
        assert_eq!(
            table(
                &conn,
                "SELECT * FROM request_hourly ORDER BY 1, 2, 3, 4, 5, 6"
            ),
            rollup
        );
        for key in ["req_a", "msg:m1", "req_b"] {
            let id: i64 = conn
                .query_row("SELECT slot FROM requests WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(
                id,
                crate::store::ledger::key_id(key),
                "{key} sits at its hash"
            );
        }
        let old: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'requests_v7'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0, "the old table is gone");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, CURRENT_VERSION);
    }

    #[test]
    fn version_8_places_the_rows_whose_hash_another_key_took_instead_of_dropping_them() {
        let conn = version_7_store();
        let rows = table(&conn, LEDGER_ROWS);
        // Every key hashing alike: the unique index cannot be built over the copy as it is.
        conn.create_scalar_function(
            "ledger_key_id",
            1,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8,
            |_| Ok(42_i64),
        )
        .unwrap();
        conn.execute_batch(V8).unwrap();
        let mut conn = conn;
        let tx = conn.transaction().unwrap();
        finish_v8(&tx).unwrap();
        tx.commit().unwrap();
        assert_eq!(
            table(&conn, LEDGER_ROWS),
            rows,
            "no row lost to a collision"
        );
        let slots: Vec<i64> = conn
            .prepare("SELECT slot FROM requests ORDER BY slot")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            slots,
            [42, 43, 44],
            "the later two probed to the next free slots"
        );
        let unique: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'requests_slot'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(unique, 1);
    }

    #[test]
    fn a_version_1_store_migrates_and_keeps_its_rows_for_any_upstream() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO outbox(signal, items, bytes, received_ns, encoding, body)
             VALUES ('logs', 1, 1, 1, 'none', x'00')",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let (upstream, attempts): (Option<String>, i64) = conn
            .query_row("SELECT upstream, attempts FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((upstream, attempts), (None, 0));
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, CURRENT_VERSION);
    }
}
