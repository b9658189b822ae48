//! The outbox: accepted requests waiting for upstream, with leased claims and size/age bounds.
//!
//! Delivery protocol: a forwarder claims rows for a lease, sends them, then deletes them
//! ([`delivered`]) or gives them back ([`release`]). A forwarder killed mid-delivery leaves
//! its claims to expire, after which another process delivers them again: exactly once while
//! leases hold, at least once across a crash. A failed delivery [`defer`]s the row: its claim
//! ends and it is not deliverable again before its back-off ends, so it never holds back the
//! rows behind it. Each row records the upstream it was accepted for ([`Target`]).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{OutboxId, StoreBounds, StoreError, usage};
use crate::otlp::{ExportRequest, Signal};

/// What `status` and `doctor` show about the outbox.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct OutboxStats {
    /// Rows waiting for upstream (claimed or not).
    pub pending_rows: u64,
    /// Stored (compressed) bytes of those rows; the size bound counts these.
    pub pending_bytes: u64,
    /// Age of the oldest pending row, in seconds; `None` when the outbox is empty.
    pub oldest_age_secs: Option<f64>,
    /// Rows dropped by the size or age bound (or unreadable) since the store was created.
    pub dropped_rows: u64,
    /// Metric points, log records and spans in those dropped rows.
    pub dropped_items: u64,
    /// Stored bytes of those dropped rows.
    pub dropped_bytes: u64,
    /// Pending rows whose delivery has failed at least once (in back-off).
    pub failing_rows: u64,
    /// The most failed attempts of any pending row; `doctor` calls delivery stuck past a few.
    pub max_attempts: u64,
    /// The last error of the row with the most attempts (no payload content).
    pub last_error: Option<String>,
}

/// A request ready to be written: encoded for the outbox and decoded into usage rows.
/// Built on the caller's thread so the writer thread only runs SQL.
pub(super) struct Prepared {
    signal: Signal,
    items: i64,
    encoding: &'static str,
    body: Vec<u8>,
    received_ns: i64,
    upstream: Option<String>,
    usage: usage::Decoded,
    /// The uncompressed protobuf, kept in [`HotBodies`] once committed so the forwarder sends
    /// it as it is (`None`: nothing in this process will deliver the row).
    hot: Option<Bytes>,
}

impl Prepared {
    /// A request as accepted, `encoded` being its protobuf encoding; `keep` puts the encoding
    /// in the hot cache for this process's forwarder.
    pub(super) fn new(
        request: &ExportRequest,
        encoded: Bytes,
        received_ns: i64,
        upstream: Option<String>,
        keep: bool,
    ) -> Prepared {
        let mut prepared = Prepared::encoded(request, encoded, received_ns, upstream, keep);
        prepared.usage = usage::decode(request, received_ns);
        prepared
    }

    /// A part of a request already stored (split to fit the upstream): its usage rows were
    /// written with the whole request, so none are written again.
    pub(super) fn part(
        request: &ExportRequest,
        received_ns: i64,
        upstream: Option<String>,
    ) -> Prepared {
        Prepared::encoded(
            request,
            Bytes::from(request.encode_to_vec()),
            received_ns,
            upstream,
            false,
        )
    }

    fn encoded(
        request: &ExportRequest,
        encoded: Bytes,
        received_ns: i64,
        upstream: Option<String>,
        keep: bool,
    ) -> Prepared {
        let (encoding, body) = compress(&encoded);
        Prepared {
            signal: request.signal(),
            items: i64::try_from(request.item_count()).unwrap_or(i64::MAX),
            encoding,
            body,
            received_ns,
            upstream,
            usage: usage::Decoded::default(),
            hot: keep.then_some(encoded),
        }
    }

    pub(super) fn body_len(&self) -> usize {
        self.body.len()
    }
}

/// The encoded requests this process committed and its forwarder has not claimed yet, by row:
/// a claim takes a row's body from here instead of reading, inflating and checking it again.
/// Only a cache: a row missing here (evicted, or after a restart) is read from the file.
/// Bounded by bytes; the oldest rows go first.
#[derive(Debug, Default)]
pub(super) struct HotBodies {
    rows: BTreeMap<i64, Bytes>,
    bytes: usize,
}

/// How many encoded bytes [`HotBodies`] holds at most: a few hundred of claude's requests,
/// far more than a forwarder that keeps up ever has waiting.
const HOT_BYTES: usize = 16 * 1024 * 1024;

impl HotBodies {
    fn insert(&mut self, id: OutboxId, body: Bytes) {
        self.bytes += body.len();
        if let Some(old) = self.rows.insert(id.0, body) {
            self.bytes -= old.len();
        }
        while self.bytes > HOT_BYTES {
            match self.rows.pop_first() {
                Some((_, evicted)) => self.bytes -= evicted.len(),
                None => break,
            }
        }
    }

    fn take(&mut self, id: OutboxId) -> Option<Bytes> {
        let body = self.rows.remove(&id.0)?;
        self.bytes -= body.len();
        Some(body)
    }

    /// Forgets rows older than `id`: a claim returns the oldest deliverable rows, so older
    /// rows still here were claimed (or deleted) by another process.
    fn forget_before(&mut self, id: OutboxId) {
        let keep = self.rows.split_off(&id.0);
        let gone = std::mem::replace(&mut self.rows, keep);
        self.bytes -= gone.values().map(Bytes::len).sum::<usize>();
    }
}

/// One unit of a writer transaction: requests committed, rows delivered.
pub(super) enum Write {
    Append(Box<Prepared>),
    Delivered(OutboxId),
}

/// A claim's arguments: run alone or at the end of a group of writes
/// ([`write_group`]), sharing its transaction.
pub(super) struct ClaimRequest {
    pub(super) owner: String,
    pub(super) limit: usize,
    pub(super) lease: Duration,
    pub(super) target: Target,
}

/// What [`write_group`] did: one result per write, in order, and the claim's.
pub(super) struct GroupDone {
    /// The new row's id for an append, the rows deleted (0 when it was already gone, else 1)
    /// for a delivery.
    pub(super) writes: Vec<Result<i64, StoreError>>,
    /// The rows claimed, when the group ended with a claim.
    pub(super) claim: Option<Result<Vec<RawClaim>, StoreError>>,
}

/// Runs a group of writes, then the claim queued behind them if any, in one transaction
/// (group commit: a burst costs one commit, not one per request, and the forwarder's claim
/// shares it instead of writing the WAL's shared pages (page 1, counters, the outbox's right
/// edge) and taking the file locks once more), then applies the bounds; committed bodies go to
/// `hot`. Should the group fail, each write and the claim are retried alone so one bad request
/// cannot fail the others.
pub(super) fn write_group(
    conn: &mut Connection,
    group: &[Write],
    claim_request: Option<&ClaimRequest>,
    bounds: StoreBounds,
    now_ns: i64,
    hot: &mut HotBodies,
) -> GroupDone {
    let mut run =
        |conn: &mut Connection, writes: &[Write], claim_request: Option<&ClaimRequest>| {
            // Bodies enter the hot cache before the claim, so a claim in this transaction takes the
            // rows it appended from memory; they leave it again should the transaction fail (a
            // rolled-back id is given out again).
            let mut cached = Vec::new();
            let result = (|| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let done = writes
                    .iter()
                    .map(|w| match w {
                        Write::Append(p) => insert(&tx, p).map(|id| id.0),
                        Write::Delivered(id) => delivered(&tx, *id).map(i64::from),
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                if writes.iter().any(|w| matches!(w, Write::Append(_))) {
                    enforce_bounds(&tx, bounds, now_ns)?;
                }
                for (w, d) in writes.iter().zip(&done) {
                    if let Write::Append(p) = w
                        && let Some(body) = &p.hot
                    {
                        hot.insert(OutboxId(*d), body.clone());
                        cached.push(OutboxId(*d));
                    }
                }
                let claimed = claim_request
                    .map(|c| claim_in(&tx, c, now_ns, hot))
                    .transpose()?;
                tx.commit()?;
                Ok::<_, StoreError>((done, claimed))
            })();
            if result.is_err() {
                for id in cached {
                    hot.take(id);
                }
            }
            result
        };
    match run(conn, group, claim_request) {
        Ok((done, claimed)) => GroupDone {
            writes: done.into_iter().map(Ok).collect(),
            claim: claimed.map(Ok),
        },
        Err(err) if group.len() + usize::from(claim_request.is_some()) == 1 => {
            match claim_request {
                Some(_) => GroupDone {
                    writes: Vec::new(),
                    claim: Some(Err(err)),
                },
                None => GroupDone {
                    writes: vec![Err(err)],
                    claim: None,
                },
            }
        }
        Err(_) => GroupDone {
            writes: group
                .iter()
                .map(|w| {
                    run(conn, std::slice::from_ref(w), None)
                        .map(|(mut d, _)| d.pop().expect("one result per write"))
                })
                .collect(),
            claim: claim_request
                .map(|c| run(conn, &[], Some(c)).map(|(_, claimed)| claimed.unwrap_or_default())),
        },
    }
}

fn insert(tx: &rusqlite::Transaction<'_>, p: &Prepared) -> Result<OutboxId, StoreError> {
    tx.prepare_cached(
        "INSERT INTO outbox(signal, items, bytes, received_ns, encoding, body, upstream)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        p.signal.as_str(),
        p.items,
        p.body.len() as i64,
        p.received_ns,
        p.encoding,
        p.body,
        p.upstream
    ])?;
    let id = OutboxId(tx.last_insert_rowid());
    usage::insert(tx, &p.usage)?;
    Ok(id)
}

/// Bodies below this size are stored as they are: compressing them gains little.
const COMPRESS_MIN_BYTES: usize = 256;

/// LZ4 (block format) can expand at most this many times: a row claiming more uncompressed
/// bytes than that is corrupt, and is not given the memory it asks for.
const LZ4_MAX_RATIO: usize = 255;

/// Compresses a protobuf body with LZ4 (block format, the uncompressed length first as 4
/// little-endian bytes; encoding `lz4`) when that makes it smaller. LZ4, not deflate: on
/// requests of 100 `api_request` events (43.5 KB) deflate took 6.4 times the instructions
/// (its tables zeroed for every body, then a slower match search) for a body a fifth smaller
/// (1.55 KB against 1.93 KB). Bodies are deleted once delivered: the usage rows, not they,
/// make up the store's size.
fn compress(body: &[u8]) -> (&'static str, Vec<u8>) {
    if body.len() < COMPRESS_MIN_BYTES || u32::try_from(body.len()).is_err() {
        return ("none", body.to_vec());
    }
    let packed = lz4_flex::block::compress_prepend_size(body);
    if packed.len() < body.len() {
        ("lz4", packed)
    } else {
        ("none", body.to_vec())
    }
}

/// Reverses [`compress`], and inflates the `deflate` (zlib) rows older releases wrote;
/// `None` for an unknown encoding or a corrupt body.
fn decompress(encoding: &str, body: Vec<u8>) -> Option<Vec<u8>> {
    use std::io::Read as _;
    match encoding {
        "none" => Some(body),
        "lz4" => {
            let (size, packed) = lz4_flex::block::uncompressed_size(&body).ok()?;
            if size > packed.len().saturating_mul(LZ4_MAX_RATIO) {
                return None;
            }
            let mut out = vec![0; size];
            let written = lz4_flex::block::decompress_into(packed, &mut out).ok()?;
            (written == size).then_some(out)
        }
        "deflate" => {
            let mut out = Vec::with_capacity(body.len() * 5);
            flate2::read::ZlibDecoder::new(body.as_slice())
                .read_to_end(&mut out)
                .ok()?;
            Some(out)
        }
        _ => None,
    }
}

/// The body encodings [`decompress`] reads.
const READABLE_ENCODINGS: [&str; 3] = ["none", "lz4", "deflate"];

/// Registers `outbox_can_read(encoding)` on `conn`: the schema's claim trigger asks it, so a
/// claim takes only rows this build can inflate, and a release too old to have the function
/// (it cannot read LZ4 bodies either) claims nothing at all rather than dropping rows.
pub(super) fn register_can_read(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "outbox_can_read",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            Ok(ctx
                .get_raw(0)
                .as_str()
                .is_ok_and(|e| READABLE_ENCODINGS.contains(&e)))
        },
    )
}

/// Drops the oldest rows while the outbox is over its size bound (stored bytes) or they are over age.
fn enforce_bounds(conn: &Connection, bounds: StoreBounds, now_ns: i64) -> Result<(), StoreError> {
    let max_bytes = i64::try_from(bounds.max_bytes).unwrap_or(i64::MAX);
    let max_age_ns = i64::try_from(bounds.max_age.as_nanos()).unwrap_or(i64::MAX);
    let cutoff_ns = now_ns.saturating_sub(max_age_ns);
    let mut bytes = counter(conn, "outbox_bytes")?;
    let oldest: Option<i64> = conn
        .prepare_cached("SELECT received_ns FROM outbox ORDER BY id LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    let too_old = oldest.is_some_and(|t| t < cutoff_ns);
    if bytes <= max_bytes && !too_old {
        return Ok(());
    }
    let mut last_dropped = None;
    let (mut rows, mut items, mut dropped_bytes) = (0i64, 0i64, 0i64);
    {
        let mut stmt =
            conn.prepare_cached("SELECT id, items, bytes, received_ns FROM outbox ORDER BY id")?;
        let mut cursor = stmt.query([])?;
        while let Some(row) = cursor.next()? {
            let received_ns: i64 = row.get(3)?;
            if bytes <= max_bytes && received_ns >= cutoff_ns {
                break;
            }
            let row_bytes: i64 = row.get(2)?;
            last_dropped = Some(row.get::<_, i64>(0)?);
            rows += 1;
            items += row.get::<_, i64>(1)?;
            dropped_bytes += row_bytes;
            bytes -= row_bytes;
        }
    }
    if let Some(last) = last_dropped {
        conn.prepare_cached("DELETE FROM outbox WHERE id <= ?1")?
            .execute([last])?;
        add_dropped(conn, rows, items, dropped_bytes)?;
    }
    Ok(())
}

fn add_dropped(conn: &Connection, rows: i64, items: i64, bytes: i64) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached("UPDATE counters SET value = value + ?2 WHERE name = ?1")?;
    stmt.execute(params!["dropped_rows", rows])?;
    stmt.execute(params!["dropped_items", items])?;
    stmt.execute(params!["dropped_bytes", bytes])?;
    Ok(())
}

fn counter(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM counters WHERE name = ?1")?
        .query_row([name], |r| r.get(0))?)
}

/// A claimed row as stored, or its body from the hot cache; inflated and checked by
/// [`decode_claims`] on the caller's thread so a large claim never holds up the writer (and
/// the appends queued behind it).
pub(super) struct RawClaim {
    id: OutboxId,
    signal: String,
    items: i64,
    bytes: i64,
    body: RawBody,
    attempts: i64,
    received_ns: i64,
}

/// Where a claimed row's body came from.
enum RawBody {
    /// This process encoded it at accept: sent as it is.
    Hot(Bytes),
    /// Read from the file: inflated and decoded once to check it before it is sent.
    Stored { encoding: String, body: Vec<u8> },
}

/// A row that cannot be decoded, to be dropped and counted by [`drop_unreadable`].
#[derive(Debug)]
pub(super) struct Unreadable {
    id: OutboxId,
    items: i64,
    bytes: i64,
}

/// Which rows a launcher may deliver: those meant for its upstream (and rows that do not say,
/// queued before the store remembered it), or every row when it re-targets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Rows accepted for this upstream (plus rows of unknown upstream).
    Only(String),
    /// Every row, whatever upstream it was accepted for (`store.retarget = "follow"`).
    Any,
}

/// Claims up to `request.limit` deliverable rows (unclaimed, lease expired, back-off over)
/// for its target, oldest first, inside a transaction the caller commits ([`write_group`]).
fn claim_in(
    tx: &rusqlite::Transaction<'_>,
    request: &ClaimRequest,
    now_ns: i64,
    hot: &mut HotBodies,
) -> Result<Vec<RawClaim>, StoreError> {
    let ClaimRequest {
        owner,
        limit,
        lease,
        target,
    } = request;
    let (only, upstream) = match target {
        Target::Only(u) => (true, u.as_str()),
        Target::Any => (false, ""),
    };
    let until_ns = now_ns.saturating_add(i64::try_from(lease.as_nanos()).unwrap_or(i64::MAX));
    let limit = i64::try_from(*limit).unwrap_or(i64::MAX);
    let mut claimed = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE outbox SET claim_owner = ?1, claim_until_ns = ?2
             WHERE id IN (SELECT id FROM outbox
                          WHERE (claim_until_ns IS NULL OR claim_until_ns <= ?3)
                            AND (NOT ?5 OR upstream IS NULL OR upstream = ?6)
                          ORDER BY id LIMIT ?4)
             RETURNING id, signal, items, bytes, attempts, received_ns",
        )?;
        let mut rows = stmt.query(params![owner, until_ns, now_ns, limit, only, upstream])?;
        while let Some(row) = rows.next()? {
            claimed.push(RawClaim {
                id: OutboxId(row.get(0)?),
                signal: row.get(1)?,
                items: row.get(2)?,
                bytes: row.get(3)?,
                body: RawBody::Hot(Bytes::new()),
                attempts: row.get(4)?,
                received_ns: row.get(5)?,
            });
        }
    }
    claimed.sort_by_key(|c| c.id);
    {
        if let Some(first) = claimed.first() {
            hot.forget_before(first.id);
        }
        let mut read = tx.prepare_cached("SELECT encoding, body FROM outbox WHERE id = ?1")?;
        for c in &mut claimed {
            c.body = match hot.take(c.id) {
                Some(body) => RawBody::Hot(body),
                None => read.query_row([c.id.0], |r| {
                    Ok(RawBody::Stored {
                        encoding: r.get(0)?,
                        body: r.get(1)?,
                    })
                })?,
            };
        }
    }
    Ok(claimed)
}

/// Reads back the name [`Signal::as_str`] wrote.
fn signal_from_name(name: &str) -> Option<Signal> {
    [Signal::Metrics, Signal::Logs, Signal::Traces]
        .into_iter()
        .find(|s| s.as_str() == name)
}

/// A claimed row: what the forwarder sends.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The row.
    pub id: OutboxId,
    /// Which signal the request carries.
    pub signal: Signal,
    /// The request's protobuf encoding, as accepted from claude (policy applied).
    pub body: Bytes,
    /// Its metric points, log records or spans.
    pub items: u64,
    /// Failed delivery attempts so far (for the row's back-off).
    pub attempts: u32,
    /// When the relay accepted it (kept by the parts of a split request).
    pub received_ns: i64,
}

/// Inflates and checks claimed rows read from the file, oldest first; rows that fail are
/// returned apart. Bodies from the hot cache were encoded by this process and go as they are.
pub(super) fn decode_claims(claims: Vec<RawClaim>) -> (Vec<Claimed>, Vec<Unreadable>) {
    let mut ok = Vec::with_capacity(claims.len());
    let mut bad = Vec::new();
    for c in claims {
        let checked = signal_from_name(&c.signal).and_then(|signal| {
            let body = match c.body {
                RawBody::Hot(body) => body,
                RawBody::Stored { encoding, body } => {
                    let body = decompress(&encoding, body)?;
                    ExportRequest::decode(signal, &body).ok()?;
                    Bytes::from(body)
                }
            };
            Some((signal, body))
        });
        match checked {
            Some((signal, body)) => ok.push(Claimed {
                id: c.id,
                signal,
                body,
                items: u64::try_from(c.items).unwrap_or(0),
                attempts: u32::try_from(c.attempts).unwrap_or(u32::MAX),
                received_ns: c.received_ns,
            }),
            None => bad.push(Unreadable {
                id: c.id,
                items: c.items,
                bytes: c.bytes,
            }),
        }
    }
    (ok, bad)
}

/// A row that cannot be decoded can never be delivered: drop it and count it as dropped
/// rather than let it block the head of the queue forever.
pub(super) fn drop_unreadable(
    conn: &mut Connection,
    rows: &[Unreadable],
) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for row in rows {
        let deleted = tx
            .prepare_cached("DELETE FROM outbox WHERE id = ?1")?
            .execute([row.id.0])?;
        if deleted == 1 {
            add_dropped(&tx, 1, row.items, row.bytes)?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Deletes a delivered row; false when it was already gone.
pub(super) fn delivered(conn: &Connection, id: OutboxId) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM outbox WHERE id = ?1")?
        .execute([id.0])?;
    Ok(n == 1)
}

/// Free pages kept in the file for the next rows (16 MiB): reclaiming below it would only make
/// the next burst grow the file again.
const KEEP_FREE_PAGES: i64 = 4096;

/// Most pages given back per call (8 MiB), so the write lock it takes stays short.
const RECLAIM_PAGES_PER_CALL: i64 = 2048;

/// Gives free pages beyond [`KEEP_FREE_PAGES`] back to the file system, a bounded number per
/// call (the checkpointer calls it about once a second). After an outage the outbox frees up to
/// its size bound at once; without this the file would keep that size for good. A no-op on
/// files without `auto_vacuum = INCREMENTAL` (created before schema version 5). Returns the
/// pages given back.
pub(super) fn reclaim_free_pages(conn: &Connection) -> Result<i64, StoreError> {
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    if mode != 2 || free <= KEEP_FREE_PAGES {
        return Ok(0);
    }
    let pages = (free - KEEP_FREE_PAGES).min(RECLAIM_PAGES_PER_CALL);
    // The pragma frees one page per step: run it to completion.
    let mut stmt = conn.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    let left: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok(free - left)
}

/// Clears `owner`'s claim on a row so it is deliverable again at once.
pub(super) fn release(conn: &Connection, id: OutboxId, owner: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET claim_owner = NULL, claim_until_ns = NULL
             WHERE id = ?1 AND claim_owner = ?2",
        )?
        .execute(params![id.0, owner])?;
    Ok(n == 1)
}

/// Every claim `owner` holds ends; returns how many rows it held.
pub(super) fn release_owner(conn: &Connection, owner: &str) -> Result<u64, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET claim_owner = NULL, claim_until_ns = NULL WHERE claim_owner = ?1",
        )?
        .execute(params![owner])?;
    Ok(n as u64)
}

/// A failed delivery: `owner`'s claim ends, the row's attempts and error are recorded, and it
/// is not deliverable before `not_before_ns` (its back-off); rows behind it are.
pub(super) fn defer(
    conn: &Connection,
    id: OutboxId,
    owner: &str,
    not_before_ns: i64,
    error: &str,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE outbox SET claim_owner = NULL, claim_until_ns = ?3,
                               attempts = attempts + 1, last_error = ?4
             WHERE id = ?1 AND claim_owner = ?2",
        )?
        .execute(params![id.0, owner, not_before_ns, error])?;
    Ok(n == 1)
}

/// Replaces a claimed row by the parts of it still to deliver (a request split to fit the
/// upstream, some parts delivered): one transaction, so no part is both kept and delivered.
/// False (nothing changed) when the row is no longer `owner`'s.
pub(super) fn replace(
    conn: &mut Connection,
    id: OutboxId,
    owner: &str,
    parts: &[Prepared],
) -> Result<bool, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let deleted = tx
        .prepare_cached("DELETE FROM outbox WHERE id = ?1 AND claim_owner = ?2")?
        .execute(params![id.0, owner])?;
    if deleted == 1 {
        for part in parts {
            insert(&tx, part)?;
        }
    }
    tx.commit()?;
    Ok(deleted == 1)
}

/// Pending rows per upstream they were accepted for (`None`: not recorded), for the
/// launcher's re-target notice.
pub(super) fn per_upstream(conn: &Connection) -> Result<Vec<(Option<String>, u64)>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT upstream, count(*) FROM outbox GROUP BY upstream")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (upstream, n) = row?;
        out.push((upstream, u64::try_from(n).unwrap_or(0)));
    }
    Ok(out)
}

/// Reads the counters, the oldest row and the failing rows (an index of those alone), so its
/// cost does not grow with the outbox.
pub(super) fn stats(conn: &Connection, now_ns: i64) -> Result<OutboxStats, StoreError> {
    let get = |name| counter(conn, name).map(|v| u64::try_from(v).unwrap_or(0));
    let oldest: Option<i64> = conn
        .prepare_cached("SELECT received_ns FROM outbox ORDER BY id LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    let (failing, max_attempts): (i64, Option<i64>) = conn
        .prepare_cached("SELECT count(*), max(attempts) FROM outbox WHERE attempts > 0")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let last_error: Option<String> = conn
        .prepare_cached(
            "SELECT last_error FROM outbox WHERE attempts > 0 ORDER BY attempts DESC LIMIT 1",
        )?
        .query_row([], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(OutboxStats {
        pending_rows: get("outbox_rows")?,
        pending_bytes: get("outbox_bytes")?,
        oldest_age_secs: oldest.map(|t| (now_ns.saturating_sub(t)).max(0) as f64 / 1e9),
        dropped_rows: get("dropped_rows")?,
        dropped_items: get("dropped_items")?,
        dropped_bytes: get("dropped_bytes")?,
        failing_rows: u64::try_from(failing).unwrap_or(0),
        max_attempts: u64::try_from(max_attempts.unwrap_or(0)).unwrap_or(0),
        last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{self, Usage};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A migrated store file and a connection to it that counts its commits.
    fn counted_store() -> (tempfile::TempDir, Connection, Arc<AtomicUsize>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = super::super::open_connection(&dir.path().join("store.db")).expect("open");
        super::super::schema::migrate(&mut conn).expect("migrate");
        let commits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&commits);
        conn.commit_hook(Some(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            false
        }))
        .expect("commit hook");
        (dir, conn, commits)
    }

    /// A logs request of `events` api_request events of one session.
    fn api_requests(events: usize) -> ExportRequest {
        let usage = Usage {
            input: 10,
            output: 20,
            cache_read: 30,
            cache_creation: 0,
            cost_usd: 0.01,
        };
        let records = (0..events)
            .map(|i| fixtures::api_request("s-1", 1_793_610_000_000_000_000 + i as u64, "m", usage))
            .collect();
        fixtures::logs(fixtures::resource(Some("alpha")), records)
    }

    /// An append of a request of `events` api_request events, kept for this process's claim.
    fn kept_append(events: usize) -> (Write, Bytes) {
        let request = api_requests(events);
        let encoded = Bytes::from(request.encode_to_vec());
        let prepared = Prepared::new(
            &request,
            encoded.clone(),
            super::super::now_ns(),
            None,
            true,
        );
        (Write::Append(Box::new(prepared)), encoded)
    }

    fn claim_request(owner: &str) -> ClaimRequest {
        ClaimRequest {
            owner: owner.to_owned(),
            limit: 10,
            lease: Duration::from_secs(30),
            target: Target::Any,
        }
    }

    #[test]
    fn a_claim_queued_with_appends_shares_their_commit_and_sends_their_bodies_from_memory() {
        let (_dir, mut conn, commits) = counted_store();
        let mut hot = HotBodies::default();
        let (writes, encoded): (Vec<Write>, Vec<Bytes>) = (1..=3).map(kept_append).unzip();
        let now = super::super::now_ns();
        let claim = claim_request("me");
        let done = write_group(
            &mut conn,
            &writes,
            Some(&claim),
            StoreBounds::default(),
            now,
            &mut hot,
        );
        assert_eq!(commits.load(Ordering::Relaxed), 1, "one transaction");
        let ids: Vec<i64> = done
            .writes
            .into_iter()
            .map(|r| r.expect("appended"))
            .collect();
        let raw = done.claim.expect("the claim ran").expect("claimed");
        assert!(raw.iter().all(|c| matches!(c.body, RawBody::Hot(_))));
        assert!(hot.rows.is_empty(), "every kept body went to the claim");
        let (claimed, unreadable) = decode_claims(raw);
        assert!(unreadable.is_empty());
        assert_eq!(claimed.iter().map(|c| c.id.0).collect::<Vec<_>>(), ids);
        for (c, body) in claimed.iter().zip(&encoded) {
            assert_eq!(&c.body, body);
        }
        let owner: String = conn
            .query_row(
                "SELECT claim_owner FROM outbox WHERE id = ?1",
                [ids[0]],
                |r| r.get(0),
            )
            .expect("row");
        assert_eq!(owner, "me");
    }

    #[test]
    fn a_claim_that_fails_in_a_group_leaves_the_appends_committed_and_is_answered_alone() {
        let (_dir, mut conn, commits) = counted_store();
        conn.execute_batch(
            "CREATE TEMP TRIGGER refuse_claim BEFORE UPDATE OF claim_owner ON outbox
             WHEN NEW.claim_owner = 'refused' BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .expect("trigger");
        commits.store(0, Ordering::Relaxed);
        let mut hot = HotBodies::default();
        let (writes, encoded): (Vec<Write>, Vec<Bytes>) = (1..=2).map(kept_append).unzip();
        let claim = claim_request("refused");
        let done = write_group(
            &mut conn,
            &writes,
            Some(&claim),
            StoreBounds::default(),
            super::super::now_ns(),
            &mut hot,
        );
        let ids: Vec<i64> = done
            .writes
            .into_iter()
            .map(|r| r.expect("appended"))
            .collect();
        assert!(done.claim.expect("answered").is_err());
        assert_eq!(commits.load(Ordering::Relaxed), 2, "each append alone");
        let rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE claim_owner IS NULL",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(rows, 2);
        // The cache holds exactly the committed rows' bodies, none of the failed attempt's.
        assert_eq!(hot.rows.keys().copied().collect::<Vec<_>>(), ids);
        for (id, body) in ids.iter().zip(&encoded) {
            assert_eq!(hot.rows.get(id), Some(body));
        }
    }

    #[test]
    fn hot_bodies_keep_the_newest_within_their_budget_and_forget_rows_claimed_elsewhere() {
        let mut hot = HotBodies::default();
        let body = Bytes::from(vec![1u8; HOT_BYTES / 4]);
        for id in 1..=6 {
            hot.insert(OutboxId(id), body.clone());
        }
        assert!(hot.bytes <= HOT_BYTES);
        assert_eq!(hot.take(OutboxId(1)), None, "the oldest went first");
        assert_eq!(hot.take(OutboxId(6)).as_deref(), Some(&body[..]));
        hot.forget_before(OutboxId(5));
        assert_eq!(hot.take(OutboxId(4)), None);
        assert!(hot.take(OutboxId(5)).is_some());
        assert_eq!((hot.rows.len(), hot.bytes), (0, 0));
    }

    #[test]
    fn each_compressed_body_decompresses_to_itself_exactly() {
        let bodies: Vec<Vec<u8>> = vec![
            b"claude_code.api_request ".repeat(400),
            (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect(),
            b"short".to_vec(),
            b"session.id=2b9d7c1e ".repeat(3000),
        ];
        for _ in 0..2 {
            for body in &bodies {
                let (encoding, packed) = compress(body);
                assert_eq!(decompress(encoding, packed).as_deref(), Some(&body[..]));
            }
        }
        assert_eq!(compress(&bodies[0]).0, "lz4");
        assert_eq!(compress(&bodies[2]).0, "none");
    }

    #[test]
    fn a_corrupt_lz4_body_is_unreadable_without_taking_the_memory_it_claims() {
        let body = b"claude_code.api_request ".repeat(400);
        let (encoding, packed) = compress(&body);
        assert_eq!(encoding, "lz4");
        let mut huge = packed.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decompress("lz4", huge), None, "claims 4 GiB");
        let mut short = packed.clone();
        short[..4].copy_from_slice(&(body.len() as u32 - 1).to_le_bytes());
        assert_eq!(decompress("lz4", short), None, "longer than it says");
        let mut long = packed.clone();
        long[..4].copy_from_slice(&(body.len() as u32 + 1).to_le_bytes());
        assert_eq!(decompress("lz4", long), None, "shorter than it says");
        assert_eq!(
            decompress("lz4", packed[..packed.len() / 2].to_vec()),
            None,
            "truncated"
        );
        assert_eq!(decompress("lz4", vec![1, 0]), None, "no length");
        assert_eq!(decompress("zstd", packed), None, "unknown encoding");
    }

    #[test]
    fn a_deflate_row_written_by_an_older_release_is_claimed_and_sent_byte_for_byte() {
        use crate::store::{Store, StoreBounds};
        use std::io::Write as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.db");
        let store = Store::open(&path, StoreBounds::default()).expect("open");
        let request = api_requests(20);
        let encoded = request.encode_to_vec();
        // As releases before lz4 wrote it: zlib framing, fast level.
        let mut deflate = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        deflate.write_all(&encoded).expect("deflate");
        let deflated = deflate.finish().expect("deflate");
        assert!(deflated.len() < encoded.len());
        Connection::open(&path)
            .expect("raw connection")
            .execute(
                "INSERT INTO outbox(signal, items, bytes, received_ns, encoding, body)
                 VALUES ('logs', 20, ?1, 1, 'deflate', ?2)",
                params![deflated.len() as i64, deflated],
            )
            .expect("old row");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let claimed = rt
            .block_on(store.claim("A", 10, Duration::from_secs(30)))
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        assert_eq!((claimed[0].signal, claimed[0].items), (Signal::Logs, 20));
        assert_eq!(claimed[0].body, encoded, "the request as accepted");
        let stats = store.outbox_stats_blocking().expect("stats");
        assert_eq!((stats.dropped_rows, stats.pending_rows), (0, 1));
    }

    /// A store holding one LZ4 row (written by this build) and nothing else.
    fn store_with_an_lz4_row(path: &std::path::Path) -> crate::store::Store {
        use crate::store::{Store, StoreBounds};
        let store = Store::open(path, StoreBounds::default()).expect("open");
        let request = api_requests(20);
        store.append_blocking(request).expect("append");
        let encoding: String = Connection::open(path)
            .expect("raw connection")
            .query_row("SELECT encoding FROM outbox", [], |r| r.get(0))
            .expect("one row");
        assert_eq!(encoding, "lz4");
        store
    }

    #[test]
    fn a_launcher_too_old_to_read_lz4_claims_nothing_and_drops_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.db");
        let store = store_with_an_lz4_row(&path);
        // A release before LZ4 still running on the file: its connections lack the function,
        // and its claim (this statement, as it ran it) must take nothing.
        let old = Connection::open(&path).expect("an older release's connection");
        let claimed = old.query_row(
            "UPDATE outbox SET claim_owner = ?1, claim_until_ns = ?2
             WHERE id IN (SELECT id FROM outbox
                          WHERE (claim_until_ns IS NULL OR claim_until_ns <= ?3)
                          ORDER BY id LIMIT ?4)
             RETURNING id, signal, items, bytes, attempts, received_ns",
            params!["old", i64::MAX, 0_i64, 10_i64],
            |r| r.get::<_, i64>(0),
        );
        assert!(
            claimed.is_err(),
            "an old release claimed an LZ4 row: {claimed:?}"
        );
        let owner: Option<String> = old
            .query_row("SELECT claim_owner FROM outbox", [], |r| r.get(0))
            .expect("the row is still there");
        assert_eq!(owner, None);
        // This build still claims and reads it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let claimed = rt
            .block_on(store.claim("A", 10, Duration::from_secs(30)))
            .expect("claim");
        assert_eq!((claimed.len(), claimed[0].items), (1, 20));
        let stats = store.outbox_stats_blocking().expect("stats");
        assert_eq!(stats.dropped_rows, 0);
    }

    #[test]
    fn a_row_in_an_encoding_this_build_cannot_read_is_left_for_one_that_can() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.db");
        let store = store_with_an_lz4_row(&path);
        // As a later release with a new codec would write it.
        let conn = super::super::open_connection(&path).expect("connection");
        conn.execute("UPDATE outbox SET encoding = 'zstd'", [])
            .expect("a future encoding");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let claimed = rt
            .block_on(store.claim("A", 10, Duration::from_secs(30)))
            .expect("claim");
        assert!(claimed.is_empty(), "claimed a row it cannot read");
        let stats = store.outbox_stats_blocking().expect("stats");
        assert_eq!((stats.dropped_rows, stats.pending_rows), (0, 1));
    }

    #[test]
    fn every_encoding_the_claim_trigger_lets_through_is_one_decompress_reads() {
        let body = vec![7_u8; 600];
        let (encoding, packed) = compress(&body);
        assert!(READABLE_ENCODINGS.contains(&encoding));
        assert_eq!(decompress(encoding, packed), Some(body.clone()));
        assert_eq!(decompress("none", body.clone()), Some(body));
        assert!(READABLE_ENCODINGS.contains(&"deflate"));
    }
}
