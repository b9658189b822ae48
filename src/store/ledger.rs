//! The request ledger: one compact row per API request Claude Code made, whichever source saw
//! it — the relay (`api_request` events, keyed by their `request_id`) or a transcript
//! (`requestId`, else the message id). A request seen by both is one row whose `sources` says
//! so; the report adds what only transcripts saw to the telemetry figures, so every request is
//! counted once.
//!
//! Rows are small on purpose (a million of them are expected): they are appended in arrival
//! order and found by a stable 64-bit hash of the request id ([`key_id`], schema version 8) in
//! a unique integer index; session, model, project and branch are integer ids into `labels`,
//! tokens are integers. `request_hourly` sums them per (UTC hour, session,
//! model, project, branch, context tier) and is kept exact at every write: a change to a row
//! takes the row's old contribution out and puts its new one in, in the same transaction.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};
use rustc_hash::FxHashMap;

/// Bit of `requests.sources`: seen by the relay (an `api_request` event).
pub const TELEMETRY: i64 = 1;
/// Bit of `requests.sources`: read from a transcript.
pub const TRANSCRIPT: i64 = 2;

/// Requests whose prompt (input + cache read + cache write) exceeds this are billed at a
/// model's long-context rates, where it has them.
pub const LONG_CONTEXT_TOKENS: u64 = 200_000;

/// Which source a record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An `api_request` event received by the relay.
    Telemetry,
    /// A line of a Claude Code transcript.
    Transcript,
}

impl Source {
    fn bit(self) -> i64 {
        match self {
            Source::Telemetry => TELEMETRY,
            Source::Transcript => TRANSCRIPT,
        }
    }
}

/// Token counts of one request, as the Messages API reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    /// `input_tokens`
    pub input: u64,
    /// `output_tokens`
    pub output: u64,
    /// `cache_read_input_tokens`
    pub cache_read: u64,
    /// `cache_creation_input_tokens` (the total of the 5m and 1h writes)
    pub cache_creation: u64,
    /// `cache_creation.ephemeral_5m_input_tokens`, where reported consistently
    pub cache_5m: Option<u64>,
    /// `cache_creation.ephemeral_1h_input_tokens`, where reported consistently
    pub cache_1h: Option<u64>,
}

impl Tokens {
    /// Every token of the request, the four kinds (the split is inside `cache_creation`).
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_creation
    }

    /// The 1-hour part of the cache write; 0 where unknown (writes default to 5 minutes).
    fn one_hour(&self) -> u64 {
        match (self.cache_5m, self.cache_1h) {
            (Some(m5), Some(h1)) if m5 + h1 == self.cache_creation => h1,
            (None, Some(h1)) if h1 <= self.cache_creation => h1,
            _ => 0,
        }
    }

    /// Whether the prompt is in the long-context tier.
    pub fn long_context(&self) -> bool {
        self.input + self.cache_read + self.cache_creation > LONG_CONTEXT_TOKENS
    }
}

/// One request as a source reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The request id (`req_…`), else `msg:<message id>`, else a key stable for that line.
    pub key: String,
    /// When the response was recorded (Unix nanoseconds).
    pub time_ns: i64,
    /// Claude Code session id ('' when unknown).
    pub session: String,
    /// Model id ('' when unknown).
    pub model: String,
    /// Project name ('' when unknown).
    pub project: String,
    /// Git branch, where the source records it.
    pub branch: Option<String>,
    /// Token counts.
    pub tokens: Tokens,
    /// Claude's own cost for the request (telemetry only).
    pub cost_usd: Option<f64>,
    /// Who reported it.
    pub source: Source,
}

/// What an `api_request` event says besides the ledger's figures: kept in the request's
/// ledger row (schema version 7) instead of a second, 160-byte row in `api_requests`, so a
/// relayed request is stored once. The `api_requests` view reads both back as one. Its texts
/// are borrowed from the decoded event: the writer copies nothing to store them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ApiDetail<'a> {
    /// The event's time, to the nanosecond (the ledger keeps seconds).
    pub time_ns: i64,
    /// `prompt.id`.
    pub prompt_id: Option<&'a str>,
    /// `duration_ms`.
    pub duration_ms: Option<f64>,
    /// `query_source`.
    pub query_source: Option<&'a str>,
    /// Row id in `resources`.
    pub resource_id: Option<i64>,
    /// Token fields the event did not carry (the ledger stores 0 for them): bit 0 input,
    /// 1 output, 2 cache read, 3 cache creation. 0 when it carried all four.
    pub absent: i64,
}

/// A [`Record`] borrowing its texts, so the relay's writer hands its decoded events' strings
/// to the ledger without copying them (six allocations per relayed request otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordRef<'a> {
    /// [`Record::key`].
    pub key: &'a str,
    /// [`Record::time_ns`].
    pub time_ns: i64,
    /// [`Record::session`].
    pub session: &'a str,
    /// [`Record::model`].
    pub model: &'a str,
    /// [`Record::project`].
    pub project: &'a str,
    /// [`Record::branch`].
    pub branch: Option<&'a str>,
    /// [`Record::tokens`].
    pub tokens: Tokens,
    /// [`Record::cost_usd`].
    pub cost_usd: Option<f64>,
    /// [`Record::source`].
    pub source: Source,
}

impl Record {
    /// The record's borrowed form, as [`LedgerTx::apply_with_detail`] takes it.
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            key: &self.key,
            time_ns: self.time_ns,
            session: &self.session,
            model: &self.model,
            project: &self.project,
            branch: self.branch.as_deref(),
            tokens: self.tokens,
            cost_usd: self.cost_usd,
            source: self.source,
        }
    }
}

/// The slot of a request key's ledger row (schema version 8): the 64-bit FNV-1a hash of its
/// bytes. Written here, not taken from std's hasher (randomly keyed per process) or a crate's
/// (free to change between releases): a slot must mean the same row to every build that opens
/// the store. An integer is one cheap index seek per write where the key text cost text
/// comparisons at every tree level. Two keys with one hash: the later takes the next free slot
/// (`slot + 1`, ...); since no ledger row is ever deleted, a lookup that probes from the hash
/// until it meets its key or a free slot is sound.
pub fn key_id(key: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// What writing a record did to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A request not seen before.
    Added,
    /// A request already known from the other source (now `both`), or a larger copy of one
    /// already read from a transcript.
    Merged,
    /// Nothing new (the same copy again, or a smaller one).
    Unchanged,
}

/// Kinds of `labels` rows.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Session = 0,
    Model = 1,
    Project = 2,
    Branch = 3,
}

/// A row of `requests`, with label ids.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stored {
    time_s: i64,
    session: i64,
    model: i64,
    project: i64,
    branch: i64,
    tokens: Tokens,
    cost_usd: Option<f64>,
    sources: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RollKey {
    hour: i64,
    session: i64,
    model: i64,
    project: i64,
    branch: i64,
    long: i64,
}

/// Columns of `request_hourly` after the key, in this order in every statement.
pub(crate) const ROLL_COLUMNS: [&str; 15] = [
    "requests",
    "telemetry_only",
    "transcript_only",
    "both",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cache_1h_tokens",
    "est_input_tokens",
    "est_output_tokens",
    "est_cache_read_tokens",
    "est_cache_5m_tokens",
    "est_cache_1h_tokens",
    "cost_usd_micros",
];

type Sums = [i64; 15];

fn contribution(s: &Stored) -> (RollKey, Sums) {
    let t = &s.tokens;
    let h1 = t.one_hour() as i64;
    let mut v: Sums = [0; 15];
    v[0] = 1;
    match s.sources {
        TELEMETRY => v[1] = 1,
        TRANSCRIPT => v[2] = 1,
        _ => v[3] = 1,
    }
    v[4] = t.input as i64;
    v[5] = t.output as i64;
    v[6] = t.cache_read as i64;
    v[7] = t.cache_creation as i64;
    v[8] = h1;
    if s.sources == TRANSCRIPT {
        // Seen only in a transcript: no cost from claude; the report estimates it from
        // these, per model, and adds them to the telemetry figures.
        v[9] = t.input as i64;
        v[10] = t.output as i64;
        v[11] = t.cache_read as i64;
        v[12] = t.cache_creation as i64 - h1;
        v[13] = h1;
    }
    v[14] = s
        .cost_usd
        .filter(|_| s.sources != TRANSCRIPT)
        .map_or(0, |c| (c * 1e6).round() as i64);
    (
        RollKey {
            hour: s.time_s.div_euclid(3600) * 3600,
            session: s.session,
            model: s.model,
            project: s.project,
            branch: s.branch,
            long: i64::from(t.long_context()),
        },
        v,
    )
}

/// Writes records inside one transaction; [`LedgerTx::finish`] folds the rollup changes in.
pub struct LedgerTx<'a, 't> {
    tx: &'a Transaction<'t>,
    labels: &'a mut Labels,
    rollup: FxHashMap<RollKey, Sums>,
    /// The insert of a new row and the lookup of a stored one, prepared on first use and held
    /// for the transaction: taking them from the statement cache per record (hashing their SQL
    /// text, resetting and returning them) cost about a sixth of writing a record.
    insert: Option<rusqlite::CachedStatement<'a>>,
    select: Option<rusqlite::CachedStatement<'a>>,
}

/// Label ids already looked up, per kind (kept across the transactions of one writer). Keyed
/// with rustc-hash's hasher: the names are ours (session ids, models, projects, branches), not
/// adversarial, and SipHash cost as much as the lookup itself.
pub type Labels = [FxHashMap<String, i64>; 4];

/// The insert of a new ledger row; a row already holding the slot leaves the statement with
/// no change (`DO NOTHING`), so a new key, the relay's case, takes this one statement.
const INSERT_SQL: &str = "INSERT INTO requests(slot, key, time_s, session, model, project, branch,
         input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
         cache_5m_tokens, cache_1h_tokens, cost_usd, sources,
         event_ns, prompt_id, duration_ms, query_source, resource_id, absent)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
             ?16, ?17, ?18, ?19, ?20, ?21)
     ON CONFLICT(slot) DO NOTHING";

impl<'a, 't> LedgerTx<'a, 't> {
    /// Starts writing in `tx`; `labels` caches label ids across transactions of one writer.
    pub fn new(tx: &'a Transaction<'t>, labels: &'a mut Labels) -> Self {
        LedgerTx {
            tx,
            labels,
            rollup: FxHashMap::default(),
            insert: None,
            select: None,
        }
    }

    fn label(&mut self, kind: Kind, name: &str) -> rusqlite::Result<i64> {
        if name.is_empty() {
            return Ok(0);
        }
        if let Some(id) = self.labels[kind as usize].get(name) {
            return Ok(*id);
        }
        // Looked up first: after a session's first request its labels exist, and the writer
        // starts each request with an empty cache.
        let mut sel = self
            .tx
            .prepare_cached("SELECT id FROM labels WHERE kind = ?1 AND name = ?2")?;
        let found: Option<i64> = sel
            .query_row(params![kind as u8, name], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                self.tx
                    .prepare_cached("INSERT OR IGNORE INTO labels(kind, name) VALUES (?1, ?2)")?
                    .execute(params![kind as u8, name])?;
                sel.query_row(params![kind as u8, name], |r| r.get(0))?
            }
        };
        self.labels[kind as usize].insert(name.to_owned(), id);
        Ok(id)
    }

    fn account(&mut self, s: &Stored, sign: i64) {
        let (key, v) = contribution(s);
        let sums = self.rollup.entry(key).or_insert([0; 15]);
        for (a, b) in sums.iter_mut().zip(v) {
            *a += sign * b;
        }
    }

    /// Adds one record, merging it with what the ledger already holds for its key.
    pub fn apply(&mut self, r: &Record) -> rusqlite::Result<Change> {
        self.apply_with_detail(&r.as_ref(), None)
    }

    /// [`Self::apply`], keeping the `api_request` event's own fields with the row when this
    /// record is the one whose figures the row takes (the first telemetry copy).
    pub fn apply_with_detail(
        &mut self,
        r: &RecordRef<'_>,
        detail: Option<&ApiDetail<'_>>,
    ) -> rusqlite::Result<Change> {
        let incoming = Stored {
            time_s: r.time_ns.div_euclid(1_000_000_000),
            session: self.label(Kind::Session, r.session)?,
            model: self.label(Kind::Model, r.model)?,
            project: self.label(Kind::Project, r.project)?,
            branch: match r.branch {
                Some(b) => self.label(Kind::Branch, b)?,
                None => 0,
            },
            tokens: r.tokens,
            cost_usd: r.cost_usd,
            sources: r.source.bit(),
        };
        // The event's own fields go with the copy whose figures the row takes: a telemetry
        // record (the ledger keeps only the first). A transcript merged into a telemetry row
        // leaves them as they are.
        let detail = detail.filter(|_| r.source == Source::Telemetry);
        let mut slot = key_id(r.key);
        loop {
            if self.insert_new(slot, r.key, &incoming, detail)? {
                self.account(&incoming, 1);
                return Ok(Change::Added);
            }
            match self.stored(slot, r.key)? {
                Probe::Same(id, old) => return self.merge_into(id, &old, &incoming, detail),
                Probe::Other => slot = slot.wrapping_add(1),
            }
        }
    }

    /// Inserts the row for a new key at `slot`; `false` when a row already holds `slot`.
    fn insert_new(
        &mut self,
        slot: i64,
        key: &str,
        new: &Stored,
        detail: Option<&ApiDetail<'_>>,
    ) -> rusqlite::Result<bool> {
        let tx: &'a Transaction<'t> = self.tx;
        let stmt = match &mut self.insert {
            Some(stmt) => stmt,
            empty => empty.insert(tx.prepare_cached(INSERT_SQL)?),
        };
        // Bound one by one with their concrete types: the same values through a `&dyn ToSql`
        // slice cost a sixth of writing a record.
        let t = &new.tokens;
        stmt.raw_bind_parameter(1, slot)?;
        stmt.raw_bind_parameter(2, key)?;
        stmt.raw_bind_parameter(3, new.time_s)?;
        stmt.raw_bind_parameter(4, new.session)?;
        stmt.raw_bind_parameter(5, new.model)?;
        stmt.raw_bind_parameter(6, new.project)?;
        stmt.raw_bind_parameter(7, new.branch)?;
        stmt.raw_bind_parameter(8, t.input as i64)?;
        stmt.raw_bind_parameter(9, t.output as i64)?;
        stmt.raw_bind_parameter(10, t.cache_read as i64)?;
        stmt.raw_bind_parameter(11, t.cache_creation as i64)?;
        stmt.raw_bind_parameter(12, t.cache_5m.map(|v| v as i64))?;
        stmt.raw_bind_parameter(13, t.cache_1h.map(|v| v as i64))?;
        stmt.raw_bind_parameter(14, new.cost_usd)?;
        stmt.raw_bind_parameter(15, new.sources)?;
        bind_detail(stmt, 16, detail)?;
        Ok(stmt.raw_execute()? == 1)
    }

    /// The row at `slot`: this key's (`Same`, with its row id), or another key's that took
    /// the slot first.
    fn stored(&mut self, slot: i64, key: &str) -> rusqlite::Result<Probe> {
        let tx: &'a Transaction<'t> = self.tx;
        let select = match &mut self.select {
            Some(stmt) => stmt,
            empty => empty.insert(tx.prepare_cached(
                "SELECT key, time_s, session, model, project, branch, input_tokens,
                        output_tokens, cache_read_tokens, cache_creation_tokens,
                        cache_5m_tokens, cache_1h_tokens, cost_usd, sources, id
                 FROM requests WHERE slot = ?1",
            )?),
        };
        // The insert found the slot taken in this transaction: the row is there.
        select.query_row([slot], |row| {
            if row.get_ref(0)?.as_str()? != key {
                return Ok(Probe::Other);
            }
            Ok(Probe::Same(
                row.get(14)?,
                Stored {
                    time_s: row.get(1)?,
                    session: row.get(2)?,
                    model: row.get(3)?,
                    project: row.get(4)?,
                    branch: row.get(5)?,
                    tokens: Tokens {
                        input: row.get::<_, i64>(6)? as u64,
                        output: row.get::<_, i64>(7)? as u64,
                        cache_read: row.get::<_, i64>(8)? as u64,
                        cache_creation: row.get::<_, i64>(9)? as u64,
                        cache_5m: row.get::<_, Option<i64>>(10)?.map(|v| v as u64),
                        cache_1h: row.get::<_, Option<i64>>(11)?.map(|v| v as u64),
                    },
                    cost_usd: row.get(12)?,
                    sources: row.get(13)?,
                },
            ))
        })
    }

    /// Merges `incoming` into the row `id` (its row id) that holds `old`.
    fn merge_into(
        &mut self,
        id: i64,
        old: &Stored,
        incoming: &Stored,
        detail: Option<&ApiDetail<'_>>,
    ) -> rusqlite::Result<Change> {
        let Some(new) = merge(old, incoming) else {
            return Ok(Change::Unchanged);
        };
        self.account(old, -1);
        self.account(&new, 1);
        let t = &new.tokens;
        self.tx
            .prepare_cached(
                "UPDATE requests SET time_s = ?2, session = ?3, model = ?4, project = ?5,
                     branch = ?6, input_tokens = ?7, output_tokens = ?8,
                     cache_read_tokens = ?9, cache_creation_tokens = ?10,
                     cache_5m_tokens = ?11, cache_1h_tokens = ?12, cost_usd = ?13,
                     sources = ?14
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                new.time_s,
                new.session,
                new.model,
                new.project,
                new.branch,
                t.input as i64,
                t.output as i64,
                t.cache_read as i64,
                t.cache_creation as i64,
                t.cache_5m.map(|v| v as i64),
                t.cache_1h.map(|v| v as i64),
                new.cost_usd,
                new.sources
            ])?;
        if detail.is_some() {
            let mut stmt = self.tx.prepare_cached(
                "UPDATE requests SET event_ns = ?2, prompt_id = ?3, duration_ms = ?4,
                     query_source = ?5, resource_id = ?6, absent = ?7
                 WHERE id = ?1",
            )?;
            stmt.raw_bind_parameter(1, id)?;
            bind_detail(&mut stmt, 2, detail)?;
            stmt.raw_execute()?;
        }
        Ok(Change::Merged)
    }

    /// Writes the rollup changes of every record applied.
    pub fn finish(self) -> rusqlite::Result<()> {
        if self.rollup.is_empty() {
            return Ok(());
        }
        let mut stmt = self.tx.prepare_cached(rollup_upsert_sql())?;
        for (k, v) in &self.rollup {
            if v.iter().all(|x| *x == 0) {
                continue;
            }
            let mut values: Vec<&dyn rusqlite::ToSql> = vec![
                &k.hour, &k.session, &k.model, &k.project, &k.branch, &k.long,
            ];
            values.extend(v.iter().map(|x| x as &dyn rusqlite::ToSql));
            stmt.execute(values.as_slice())?;
        }
        Ok(())
    }
}

/// What a ledger row at a probed id holds.
enum Probe {
    /// The row of the key looked up: its row id and figures.
    Same(i64, Stored),
    /// Another key's row, which took the slot first.
    Other,
}

/// Binds the six detail columns from parameter `first` on (all NULL without a detail;
/// `absent` NULL when 0, so a complete event costs no byte for it).
fn bind_detail(
    stmt: &mut rusqlite::Statement<'_>,
    first: usize,
    detail: Option<&ApiDetail<'_>>,
) -> rusqlite::Result<()> {
    let d = detail.copied().unwrap_or_default();
    let on = detail.is_some();
    stmt.raw_bind_parameter(first, on.then_some(d.time_ns))?;
    stmt.raw_bind_parameter(first + 1, d.prompt_id)?;
    stmt.raw_bind_parameter(first + 2, d.duration_ms)?;
    stmt.raw_bind_parameter(first + 3, d.query_source)?;
    stmt.raw_bind_parameter(first + 4, d.resource_id)?;
    stmt.raw_bind_parameter(first + 5, (d.absent != 0).then_some(d.absent))?;
    Ok(())
}

/// The row after `incoming` meets `old`; `None` when nothing changes.
///
/// Telemetry's figures win (they carry claude's cost); a transcript adds its branch and its
/// provenance. Between two transcript copies the larger token total wins (claude writes a
/// response's usage once per content block, and early copies can be partial).
fn merge(old: &Stored, incoming: &Stored) -> Option<Stored> {
    let from_telemetry = incoming.sources == TELEMETRY;
    if from_telemetry {
        if old.sources & TELEMETRY != 0 {
            return None;
        }
        return Some(Stored {
            branch: if incoming.branch != 0 {
                incoming.branch
            } else {
                old.branch
            },
            sources: old.sources | TELEMETRY,
            ..*incoming
        });
    }
    if old.sources & TELEMETRY != 0 {
        let branch = if old.branch != 0 {
            old.branch
        } else {
            incoming.branch
        };
        if old.sources & TRANSCRIPT != 0 && branch == old.branch {
            return None;
        }
        return Some(Stored {
            branch,
            sources: old.sources | TRANSCRIPT,
            ..*old
        });
    }
    (incoming.tokens.total() > old.tokens.total()).then_some(*incoming)
}

fn rollup_upsert_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let cols = ROLL_COLUMNS.join(", ");
        let placeholders: Vec<String> = (1..=ROLL_COLUMNS.len() + 6)
            .map(|i| format!("?{i}"))
            .collect();
        let updates: Vec<String> = ROLL_COLUMNS
            .iter()
            .map(|c| format!("{c} = {c} + excluded.{c}"))
            .collect();
        format!(
            "INSERT INTO request_hourly(hour, session, model, project, branch, long, {cols})
             VALUES ({}) ON CONFLICT(hour, session, model, project, branch, long)
             DO UPDATE SET {}",
            placeholders.join(", "),
            updates.join(", ")
        )
    })
}

/// How far one transcript file has been read, so an unchanged file costs one `stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// Size when last read.
    pub size: u64,
    /// Modification time when last read (Unix nanoseconds).
    pub mtime_ns: i64,
    /// Inode when last read: another inode at the same path is another file.
    pub inode: u64,
    /// Bytes consumed (whole lines only).
    pub offset: u64,
    /// Lines consumed, for error messages that name a line.
    pub lines: u64,
    /// Up to 64 bytes ending at `offset`: differing bytes there mean the file was rewritten.
    pub tail: Vec<u8>,
}

/// Every file's read state, keyed by path.
pub fn file_states(conn: &rusqlite::Connection) -> rusqlite::Result<HashMap<String, FileState>> {
    let mut stmt = conn
        .prepare("SELECT path, size, mtime_ns, inode, offset, lines, tail FROM transcript_files")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            FileState {
                size: r.get::<_, i64>(1)? as u64,
                mtime_ns: r.get(2)?,
                inode: r.get::<_, i64>(3)? as u64,
                offset: r.get::<_, i64>(4)? as u64,
                lines: r.get::<_, i64>(5)? as u64,
                tail: r.get(6)?,
            },
        ))
    })?;
    rows.collect()
}

/// Records how far `path` has been read, in the transaction that wrote its rows.
pub fn save_file_state(tx: &Transaction<'_>, path: &str, s: &FileState) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO transcript_files(path, size, mtime_ns, inode, offset, lines, tail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        path,
        s.size as i64,
        s.mtime_ns,
        s.inode as i64,
        s.offset as i64,
        s.lines as i64,
        s.tail
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> rusqlite::Connection {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn
    }

    fn rec(key: &str, source: Source, input: u64) -> Record {
        Record {
            key: key.to_owned(),
            time_ns: 1_800_000_000_000_000_000,
            session: "s".into(),
            model: "claude-sonnet-4-6".into(),
            project: "p".into(),
            branch: (source == Source::Transcript).then(|| "main".to_owned()),
            tokens: Tokens {
                input,
                output: 10,
                ..Tokens::default()
            },
            cost_usd: (source == Source::Telemetry).then_some(0.5),
            source,
        }
    }

    fn apply(conn: &mut rusqlite::Connection, recs: &[Record]) -> Vec<Change> {
        let mut labels = Labels::default();
        let tx = conn.transaction().unwrap();
        let mut l = LedgerTx::new(&tx, &mut labels);
        let out = recs.iter().map(|r| l.apply(r).unwrap()).collect();
        l.finish().unwrap();
        tx.commit().unwrap();
        out
    }

    fn sums(conn: &rusqlite::Connection) -> Vec<i64> {
        let list: Vec<String> = ROLL_COLUMNS.iter().map(|c| format!("sum({c})")).collect();
        conn.query_row(
            &format!("SELECT {} FROM request_hourly", list.join(", ")),
            [],
            |r| (0..ROLL_COLUMNS.len()).map(|i| r.get(i)).collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_request_seen_by_both_sources_is_one_row_either_order() {
        for order in [
            [Source::Telemetry, Source::Transcript],
            [Source::Transcript, Source::Telemetry],
        ] {
            let mut conn = store();
            let changes = apply(
                &mut conn,
                &[rec("req_1", order[0], 100), rec("req_1", order[1], 100)],
            );
            assert_eq!(changes, [Change::Added, Change::Merged]);
            let s = sums(&conn);
            assert_eq!(&s[..4], &[1, 0, 0, 1], "one request, both sources");
            assert_eq!(s[4], 100, "tokens counted once");
            assert_eq!(s[9], 0, "nothing left to estimate: claude's cost is known");
            assert_eq!(s[14], 500_000);
            let branch: String = conn
                .query_row(
                    "SELECT l.name FROM requests r JOIN labels l ON l.id = r.branch",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(branch, "main", "the transcript's branch is kept");
        }
    }

    #[test]
    fn key_ids_are_fnv_1a_so_every_build_finds_the_same_rows() {
        // Published FNV-1a 64-bit test vectors.
        assert_eq!(key_id("") as u64, 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_id("a") as u64, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_id("foobar") as u64, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_key_whose_slot_another_key_holds_takes_the_next_one_and_is_found_there() {
        let mut conn = store();
        let slot = key_id("req_1");
        // Another key's row at req_1's slot (a hash collision), and one at the slot after it.
        for (at, key) in [(slot, "req_other"), (slot.wrapping_add(1), "req_next")] {
            conn.execute(
                "INSERT INTO requests(slot, key, time_s, session, model, project, branch,
                     input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
                     sources) VALUES (?1, ?2, 0, 0, 0, 0, 0, 7, 7, 7, 7, 1)",
                rusqlite::params![at, key],
            )
            .unwrap();
        }
        let changes = apply(
            &mut conn,
            &[
                rec("req_1", Source::Telemetry, 100),
                rec("req_1", Source::Telemetry, 100),
                rec("req_1", Source::Transcript, 100),
            ],
        );
        assert_eq!(changes, [Change::Added, Change::Unchanged, Change::Merged]);
        let at: (i64, i64) = conn
            .query_row(
                "SELECT slot, sources FROM requests WHERE key = 'req_1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            at,
            (slot.wrapping_add(2), 3),
            "placed after both, then merged there"
        );
        let others: i64 = conn
            .query_row(
                "SELECT count(*) FROM requests WHERE key IN ('req_other', 'req_next')
                     AND input_tokens = 7 AND sources = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(others, 2, "the other keys' rows are untouched");
        assert_eq!(&sums(&conn)[..4], &[1, 0, 0, 1]);
    }

    #[test]
    fn transcript_copies_keep_the_largest_and_repeats_change_nothing() {
        let mut conn = store();
        let changes = apply(
            &mut conn,
            &[
                rec("req_1", Source::Transcript, 5),
                rec("req_1", Source::Transcript, 100),
                rec("req_1", Source::Transcript, 50),
            ],
        );
        assert_eq!(changes, [Change::Added, Change::Merged, Change::Unchanged]);
        let s = sums(&conn);
        assert_eq!(&s[..4], &[1, 0, 1, 0]);
        assert_eq!((s[4], s[9]), (100, 100));
        apply(&mut conn, &[rec("req_1", Source::Transcript, 100)]);
        assert_eq!(sums(&conn), s);
    }
}

/// Sums over ledger rollup rows of one bucket, with the estimated cost already priced.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct LedgerSums {
    /// Requests in the ledger.
    pub requests: f64,
    /// Seen only by telemetry.
    pub telemetry_only: f64,
    /// Seen only in transcripts.
    pub transcript_only: f64,
    /// Seen by both.
    pub both: f64,
    /// Tokens of every request: input, output, cache read, cache creation.
    pub tokens: [f64; 4],
    /// Claude's own cost of the requests telemetry saw (USD).
    pub known_cost_usd: f64,
    /// Tokens of the requests seen only in transcripts: input, output, cache read, cache
    /// creation (5m + 1h).
    pub transcript_tokens: [f64; 4],
    /// Their cost from the price table (USD).
    pub estimated_cost_usd: f64,
    /// Transcript-only requests whose model the price table does not know (cost 0).
    pub unpriced_requests: f64,
    /// Distinct sessions with ledger rows.
    pub sessions: f64,
    /// Distinct sessions with transcript-only requests that telemetry never saw at all.
    pub sessions_only_in_transcripts: f64,
}

/// One bucket of a ledger breakdown.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerGroup {
    /// Bucket key (same forms as `queries::breakdown`'s).
    pub key: String,
    /// Start of the earliest hour in the bucket (Unix seconds).
    pub first_hour: i64,
    /// Its sums.
    pub sums: LedgerSums,
}

/// The key expression of a ledger bucket; `None` for the whole range.
fn ledger_key(by: Option<super::queries::GroupBy>, zone: super::queries::Zone) -> String {
    use super::queries::{GroupBy, Zone};
    let local = if zone == Zone::Local {
        ", 'localtime'"
    } else {
        ""
    };
    match by {
        None => "''".to_owned(),
        Some(GroupBy::Day) => format!("strftime('%Y-%m-%d', r.hour, 'unixepoch'{local})"),
        Some(GroupBy::Week) => {
            format!("date(r.hour, 'unixepoch'{local}, 'weekday 0', '-6 days')")
        }
        Some(GroupBy::Month) => format!("strftime('%Y-%m', r.hour, 'unixepoch'{local})"),
        Some(GroupBy::Session) => "coalesce(s.name, '')".to_owned(),
        Some(GroupBy::Model) => "coalesce(m.name, '')".to_owned(),
        Some(GroupBy::Project) => "coalesce(p.name, '')".to_owned(),
        Some(GroupBy::Branch) => "coalesce(b.name, '')".to_owned(),
    }
}

fn ledger_where(filter: &super::queries::Filter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut conds = Vec::new();
    let mut params = Vec::new();
    if let Some(since) = filter.since {
        params.push(Value::Integer(since.div_euclid(3600) * 3600));
        conds.push(format!("r.hour >= ?{}", params.len()));
    }
    if let Some(until) = filter.until {
        params.push(Value::Integer(until));
        conds.push(format!("r.hour < ?{}", params.len()));
    }
    if let Some(project) = &filter.project {
        params.push(Value::Text(project.clone()));
        conds.push(format!("coalesce(p.name, '') = ?{}", params.len()));
    }
    if conds.is_empty() {
        (String::new(), params)
    } else {
        (format!("WHERE {}", conds.join(" AND ")), params)
    }
}

/// `FROM request_hourly r` with only the label joins the statement names (each join is a
/// lookup per rollup row): `s` session, `m` model, `p` project, `b` branch.
fn ledger_from(sql_using: &str) -> String {
    let mut from = "FROM request_hourly r".to_owned();
    for (alias, column) in [
        ("s", "session"),
        ("m", "model"),
        ("p", "project"),
        ("b", "branch"),
    ] {
        if sql_using.contains(&format!("{alias}.name")) {
            from.push_str(&format!(
                " LEFT JOIN labels {alias} ON {alias}.id = r.{column}"
            ));
        }
    }
    from
}

/// Prices transcript-only token sums (input, output, cache read, 5m and 1h writes) of one
/// model and context tier; `None` for a model without a price. The report passes the table.
pub type PriceFn = dyn Fn(&str, bool, [f64; 5]) -> Option<f64>;

/// Ledger sums per bucket (one bucket when `by` is `None`), in no particular order. The
/// transcript-only tokens are priced per (model, context tier) with `price`.
pub fn ledger_groups(
    conn: &rusqlite::Connection,
    filter: &super::queries::Filter,
    by: Option<super::queries::GroupBy>,
    zone: super::queries::Zone,
    price: &PriceFn,
) -> Result<Vec<LedgerGroup>, super::StoreError> {
    let key = ledger_key(by, zone);
    let (where_sql, params) = ledger_where(filter);
    // Pre-aggregated on integer columns first (the filter applied), so the key's label
    // lookups and calendar arithmetic run once per (hour, model, tier[, dimension]), not per
    // rollup row.
    let dimension = match by {
        Some(super::queries::GroupBy::Session) => ", r.session AS session",
        Some(super::queries::GroupBy::Project) => ", r.project AS project",
        Some(super::queries::GroupBy::Branch) => ", r.branch AS branch",
        _ => "",
    };
    let sums: Vec<String> = ROLL_COLUMNS
        .iter()
        .map(|c| format!("sum(r.{c}) AS {c}"))
        .collect();
    let inner_from = ledger_from(&where_sql);
    let grouped = dimension.split(" AS ").next().unwrap_or("");
    let inner = format!(
        "SELECT r.hour AS hour, r.model AS model, r.long AS long{dimension}, {}
         {inner_from} {where_sql} GROUP BY r.hour, r.model, r.long{grouped}",
        sums.join(", ")
    );
    let sql = format!(
        "SELECT {key} AS k, min(r.hour), coalesce(m.name, ''), r.long,
                sum(requests), sum(telemetry_only), sum(transcript_only), sum(both),
                sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),
                sum(cache_creation_tokens), sum(cost_usd_micros),
                sum(est_input_tokens), sum(est_output_tokens), sum(est_cache_read_tokens),
                sum(est_cache_5m_tokens), sum(est_cache_1h_tokens)
         {{FROM}} GROUP BY k, r.model, r.long"
    );
    let sql = sql.replace(
        "{FROM}",
        &ledger_from(&sql).replace("FROM request_hourly r", &format!("FROM ({inner}) r")),
    );
    // Without calendar buckets the hour plays no part: one pass over the rollup, grouped on
    // the integer ids (the dimension's column, if any), each group's names looked up once.
    let flat = match by {
        None | Some(super::queries::GroupBy::Model) => Some(""),
        Some(super::queries::GroupBy::Session) => Some("r.session"),
        Some(super::queries::GroupBy::Project) => Some("r.project"),
        Some(super::queries::GroupBy::Branch) => Some("r.branch"),
        _ => None,
    };
    let mut groups: HashMap<String, LedgerGroup> = HashMap::new();
    // (key, first hour, model name, tier, the 14 sums) in the order they are added up.
    let mut absorbed: Vec<(String, i64, String, i64, [f64; 14])> = Vec::new();
    if let Some(dim) = flat {
        // Summed here, not by SQLite's GROUP BY: that sorts whole rows (14 sums each) through
        // a temporary B-tree, a quarter of a second for 56,000 rollup rows. Integer sums are
        // exact in any order; the groups are then taken in (model, tier, dimension) order.
        let dim = if dim.is_empty() { "0" } else { dim };
        let sql = format!(
            "SELECT {dim}, r.model, r.long, r.hour, r.requests, r.telemetry_only,
                    r.transcript_only, r.both, r.input_tokens, r.output_tokens,
                    r.cache_read_tokens, r.cache_creation_tokens, r.cost_usd_micros,
                    r.est_input_tokens, r.est_output_tokens, r.est_cache_read_tokens,
                    r.est_cache_5m_tokens, r.est_cache_1h_tokens
             {inner_from} {where_sql}"
        );
        let mut acc: HashMap<(i64, i64, i64), (i64, [i64; 14])> = HashMap::new();
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        while let Some(row) = rows.next()? {
            let key = (
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(0)?,
            );
            let hour: i64 = row.get(3)?;
            let e = acc.entry(key).or_insert((hour, [0; 14]));
            e.0 = e.0.min(hour);
            for (i, v) in e.1.iter_mut().enumerate() {
                *v += row.get::<_, i64>(4 + i)?;
            }
        }
        drop(rows);
        let mut names: HashMap<i64, String> = HashMap::new();
        let mut name_of = |id: i64| -> rusqlite::Result<String> {
            if id == 0 {
                return Ok(String::new());
            }
            if let Some(n) = names.get(&id) {
                return Ok(n.clone());
            }
            let n: Option<String> = conn
                .prepare_cached("SELECT name FROM labels WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            let n = n.unwrap_or_default();
            names.insert(id, n.clone());
            Ok(n)
        };
        let mut sorted: Vec<_> = acc.into_iter().collect();
        sorted.sort_unstable_by_key(|(k, _)| *k);
        for ((model, long, dim_id), (first, v)) in sorted {
            let model_name = name_of(model)?;
            let k = match by {
                None => String::new(),
                Some(super::queries::GroupBy::Model) => model_name.clone(),
                _ => name_of(dim_id)?,
            };
            absorbed.push((k, first, model_name, long, v.map(|x| x as f64)));
        }
    } else {
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        while let Some(row) = rows.next()? {
            let mut v = [0.0; 14];
            for (i, x) in v.iter_mut().enumerate() {
                *x = row.get::<_, Option<f64>>(4 + i)?.unwrap_or(0.0);
            }
            absorbed.push((
                row.get::<_, Option<String>>(0)?.unwrap_or_default(),
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                v,
            ));
        }
    }
    for (k, first, model, long, v) in absorbed {
        let g = groups.entry(k.clone()).or_insert_with(|| LedgerGroup {
            key: k,
            first_hour: first,
            sums: LedgerSums::default(),
        });
        g.first_hour = g.first_hour.min(first);
        let s = &mut g.sums;
        s.requests += v[0];
        s.telemetry_only += v[1];
        s.transcript_only += v[2];
        s.both += v[3];
        for i in 0..4 {
            s.tokens[i] += v[4 + i];
        }
        s.known_cost_usd += v[8] / 1e6;
        let est = [v[9], v[10], v[11], v[12], v[13]];
        s.transcript_tokens[0] += est[0];
        s.transcript_tokens[1] += est[1];
        s.transcript_tokens[2] += est[2];
        s.transcript_tokens[3] += est[3] + est[4];
        if est.iter().any(|x| *x > 0.0) {
            match price(&model, long != 0, est) {
                Some(c) => s.estimated_cost_usd += c,
                None => s.unpriced_requests += v[2],
            }
        }
    }
    let sql = format!(
        "SELECT {key} AS k, count(DISTINCT nullif(r.session, 0)),
                count(DISTINCT CASE WHEN r.transcript_only > 0 AND r.session != 0
                    AND s.name NOT IN (SELECT session_id FROM usage_hourly)
                    THEN r.session END)
         {{FROM}} {where_sql} GROUP BY k"
    );
    let sql = sql.replace("{FROM}", &ledger_from(&sql));
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    while let Some(row) = rows.next()? {
        let k: String = row.get::<_, Option<String>>(0)?.unwrap_or_default();
        if let Some(g) = groups.get_mut(&k) {
            g.sums.sessions = row.get(1)?;
            g.sums.sessions_only_in_transcripts = row.get(2)?;
        }
    }
    Ok(groups.into_values().collect())
}

/// The estimated cost of the requests only transcripts saw in `filter`'s range, priced per
/// (model, context tier) with `price` exactly as [`ledger_groups`] prices them: the one ledger
/// figure a budget or the status line needs, read from the `hour` range of `request_hourly`'s
/// key without the session counts (which look at every `usage_hourly` row).
pub fn transcript_only_cost(
    conn: &rusqlite::Connection,
    filter: &super::queries::Filter,
    price: &PriceFn,
) -> Result<f64, super::StoreError> {
    let (where_sql, params) = ledger_where(filter);
    let select = format!(
        "SELECT coalesce(m.name, ''), r.long, sum(r.est_input_tokens), sum(r.est_output_tokens),
                sum(r.est_cache_read_tokens), sum(r.est_cache_5m_tokens),
                sum(r.est_cache_1h_tokens)
         {{FROM}} {where_sql} GROUP BY r.model, r.long"
    );
    let sql = select.replace("{FROM}", &ledger_from(&select));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    let mut total = 0.0;
    while let Some(row) = rows.next()? {
        let model: String = row.get(0)?;
        let long: i64 = row.get(1)?;
        let mut est = [0.0; 5];
        for (i, e) in est.iter_mut().enumerate() {
            *e = row.get::<_, Option<f64>>(2 + i)?.unwrap_or(0.0);
        }
        if est.iter().any(|x| *x > 0.0) {
            total += price(&model, long != 0, est).unwrap_or(0.0);
        }
    }
    Ok(total)
}

/// Requests per (day, session) by provenance, for `report --check`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckRow {
    /// Calendar day (`YYYY-MM-DD`) in the report's zone.
    pub day: String,
    /// Session id ('' when unknown).
    pub session: String,
    /// Requests seen only by telemetry.
    pub telemetry_only: u64,
    /// Requests seen only in transcripts.
    pub transcript_only: u64,
    /// Requests seen by both.
    pub both: u64,
}

/// Provenance per (day, session), in day then session order.
pub fn check_rows(
    conn: &rusqlite::Connection,
    filter: &super::queries::Filter,
    zone: super::queries::Zone,
) -> Result<Vec<CheckRow>, super::StoreError> {
    let day = ledger_key(Some(super::queries::GroupBy::Day), zone);
    let (where_sql, params) = ledger_where(filter);
    let sql = format!(
        "SELECT {day} AS d, coalesce(s.name, ''), sum(telemetry_only), sum(transcript_only),
                sum(both)
         {{FROM}} {where_sql} GROUP BY d, r.session ORDER BY d, min(r.hour), 2"
    );
    let sql = sql.replace("{FROM}", &ledger_from(&sql));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
        Ok(CheckRow {
            day: r.get(0)?,
            session: r.get(1)?,
            telemetry_only: r.get::<_, i64>(2)?.max(0) as u64,
            transcript_only: r.get::<_, i64>(3)?.max(0) as u64,
            both: r.get::<_, i64>(4)?.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
