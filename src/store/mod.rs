//! The durable local store: an SQLite file holding the outbox (requests waiting for upstream)
//! and the usage rows the `report` command reads.
//!
//! # Durability
//! The file runs in WAL mode with `synchronous=NORMAL`. A commit is appended to the WAL before
//! [`Store::append`] returns, so a process that crashes or is killed with `kill -9` right after
//! loses nothing: the WAL is in the OS page cache and the next open replays it. Only a power cut
//! or kernel crash can lose the last few commits (`NORMAL` skips the fsync per commit, WAL mode
//! still never corrupts the file); that trade buys the ingest rate the relay needs.
//!
//! # Concurrency
//! Each [`Store`] owns one writer thread with one connection, fed by a channel; async callers
//! await a tokio oneshot reply, so no SQLite call ever runs on a runtime thread. Several
//! launcher processes may open the same file: every write is a `BEGIN IMMEDIATE` transaction
//! (which waits on `busy_timeout` instead of failing with `database is locked` on a lock
//! upgrade) and delivery uses leased claims so two processes never send the same row.
//! Appends, deletes and a claim already queued when the writer starts a transaction share it
//! (group commit; in a burst a group waits up to [`GROUP_WAIT`] for the appends recent groups
//! had), and requests are encoded, compressed and decoded on the caller's thread, so the
//! writer only runs SQL. Checkpoints, the only fsyncs, run on a second thread with its own connection.

#[cfg(test)]
pub(crate) mod fixtures;
pub mod health;
pub mod ledger;
pub mod limits;
mod outbox;
pub mod queries;
mod schema;
mod usage;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::otlp::ExportRequest;

pub use health::StoreNotice;
pub use outbox::{Claimed, OutboxStats, Target};

/// How long the check at open may take when nothing waits in the outbox (`PRAGMA
/// quick_check`, cut short past it), so a normal launch stays inside its 10 ms start-up budget.
/// The check walks the tables in schema order, the outbox first; the rest of a large file is
/// checked fully by `doctor`. Measured (release, 46 MB file, loaded 2-core machine): 6–9 ms
/// for the whole open against 0.5 ms without the check; see README.
pub const OPEN_CHECK_BUDGET: Duration = Duration::from_millis(5);

/// The budget when batches were waiting at the last exit (after an outage): those batches are
/// what a damaged file would lose, so the check may take longer then.
pub const OPEN_CHECK_BUDGET_WAITING: Duration = Duration::from_millis(150);
#[cfg_attr(not(test), allow(unused_imports))]
pub use usage::PROJECT_ATTRIBUTE;
pub(crate) use usage::parse_rfc3339_utc;

/// How long a connection waits for another process's write transaction before giving up.
/// Writers hold the lock for milliseconds; this only matters under pathological contention.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the checkpointer folds the WAL back into the database file when idle.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The writer nudges the checkpointer after this many commits, so a burst cannot grow the
/// WAL without bound between timed checkpoints.
const COMMITS_PER_CHECKPOINT: u32 = 256;

/// At most this many queued appends share one transaction.
const MAX_GROUP_COMMIT: usize = 256;

/// ... and at most this many protobuf bytes, to keep each transaction short.
const MAX_GROUP_COMMIT_BYTES: usize = 4 * 1024 * 1024;

/// WAL length (in pages, 4 KiB each) beyond which the checkpointer forces a restart.
const WAL_RESTART_FRAMES: i64 = 16_384;

/// Errors of the store; every one names what failed so `doctor` can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation (I/O error, disk full, corrupt file, lock timeout).
    #[error("store database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The directory or file could not be created.
    #[error("cannot create store at {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was written by a newer claude-telemetry; refusing protects its data.
    #[error("store schema version {found} is newer than this build supports ({supported})")]
    NewerSchema { found: i64, supported: i64 },
    /// The writer thread is gone (it panicked or the store is shutting down).
    #[error("store writer thread has stopped")]
    Closed,
}

/// Row id of an outbox entry; ids are never reused, so a stale id can never hit a newer row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboxId(pub i64);

/// Limits that keep the outbox from growing without end while upstream is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreBounds {
    /// Total stored (compressed protobuf) bytes the outbox may hold; beyond it the oldest
    /// rows are dropped.
    pub max_bytes: u64,
    /// Age after which an undelivered row is dropped.
    pub max_age: Duration,
}

impl Default for StoreBounds {
    /// 256 MiB and 30 days: weeks of one heavy user's telemetry (about 3 MB a day) with a
    /// stopped collector, while still capping the disk used.
    fn default() -> Self {
        StoreBounds {
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Work for the writer thread; each carries the channel its answer goes back on.
enum Command {
    Append(Box<outbox::Prepared>, Reply<OutboxId>),
    Claim(outbox::ClaimRequest, Reply<Vec<outbox::RawClaim>>),
    DropUnreadable(Vec<outbox::Unreadable>, Reply<()>),
    Delivered(OutboxId, Reply<bool>),
    Release(OutboxId, String, Reply<bool>),
    ReleaseOwner(String, Reply<u64>),
    Defer {
        id: OutboxId,
        owner: String,
        not_before_ns: i64,
        error: String,
        reply: Reply<bool>,
    },
    Replace(OutboxId, String, Vec<outbox::Prepared>, Reply<bool>),
    PerUpstream(Reply<Vec<(Option<String>, u64)>>),
    Stats(Reply<OutboxStats>),
    Close(Reply<()>),
}

/// Handle to the store; cheap to clone and share between tasks and threads.
/// The writer thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct Store {
    commands: mpsc::Sender<Command>,
    path: PathBuf,
    /// The upstream new rows are accepted for (`None`: not said, e.g. tests and benches).
    upstream: Option<String>,
    /// Which rows this handle claims.
    target: Target,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating and migrating when needed) the store at `path` and starts its writer
    /// thread. Blocking: call it at start-up or from `spawn_blocking`.
    pub fn open(path: &Path, bounds: StoreBounds) -> Result<Store, StoreError> {
        let store_path = path.to_path_buf();
        let mut conn = open_connection(path)?;
        schema::migrate(&mut conn)?;
        // A new launch retries batches in back-off at once: the upstream may be back, and a
        // back-off left by an earlier launch must not make this one end without trying.
        conn.execute(
            "UPDATE outbox SET claim_until_ns = NULL
             WHERE attempts > 0 AND claim_owner IS NULL AND claim_until_ns IS NOT NULL",
            [],
        )?;
        // Checkpoints (the only fsyncs in WAL + synchronous=NORMAL) run on their own thread
        // and connection, so an append never waits for the disk to flush.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoint_conn = open_connection(path)?;
        let spawn_err = |source| StoreError::Create {
            path: path.to_path_buf(),
            source,
        };
        let (nudge, nudged) = mpsc::sync_channel(1);
        let checkpointer = thread::Builder::new()
            .name("store-checkpoint".to_owned())
            .spawn(move || checkpoint_loop(checkpoint_conn, nudged))
            .map_err(spawn_err)?;
        let (tx, rx) = mpsc::channel();
        thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || {
                let close_reply = writer_loop(conn, bounds, rx, nudge, &store_path);
                // The nudge sender is gone with writer_loop: the checkpointer ends.
                let _ = checkpointer.join();
                if let Some(reply) = close_reply {
                    let _ = reply.send(Ok(()));
                }
            })
            .map_err(spawn_err)?;
        Ok(Store {
            commands: tx,
            path: path.to_path_buf(),
            upstream: None,
            target: Target::Any,
        })
    }

    /// [`Store::open`] for a launch: checks the file first ([`OPEN_CHECK_BUDGET`]); a damaged
    /// file is set aside and its readable waiting rows copied into a fresh store; a file that
    /// vanished or was emptied while rows waited is reported. Each finding is returned once,
    /// for the launcher to say.
    pub fn open_checked(
        path: &Path,
        bounds: StoreBounds,
    ) -> Result<(Store, Vec<StoreNotice>), StoreError> {
        let mut notices = Vec::new();
        let waiting = health::read_marker(path);
        let size = std::fs::metadata(path).map(|m| m.len()).ok();
        let mut aside = None;
        match size {
            None | Some(0) if waiting > 0 => notices.push(StoreNotice::Vanished {
                waiting_rows: waiting,
                emptied: size == Some(0),
            }),
            Some(n) if n > 0 => {
                let budget = if waiting > 0 {
                    OPEN_CHECK_BUDGET_WAITING
                } else {
                    OPEN_CHECK_BUDGET
                };
                if let health::Health::Damaged(reason) = health::quick_check(path, budget) {
                    aside = Some((reason, health::set_aside(path)?));
                }
            }
            _ => {}
        }
        let store = match Store::open(path, bounds) {
            Ok(store) => store,
            Err(e) if aside.is_none() && health::is_damage(&e) => {
                aside = Some((e.to_string(), health::set_aside(path)?));
                Store::open(path, bounds)?
            }
            Err(e) => return Err(e),
        };
        if let Some((reason, set_aside)) = aside {
            let (salvaged_rows, lost_rows) = health::salvage(&set_aside, path);
            notices.push(StoreNotice::Damaged {
                reason,
                set_aside,
                salvaged_rows,
                lost_rows,
            });
        }
        if let Ok(stats) = store.outbox_stats_blocking() {
            health::write_marker(path, stats.pending_rows);
        }
        Ok((store, notices))
    }

    /// This handle records `upstream` on every row it appends and claims only rows meant for
    /// it, or (`follow`) every row whatever upstream it was accepted for.
    pub fn for_upstream(mut self, upstream: &str, follow: bool) -> Store {
        self.upstream = Some(upstream.to_owned());
        self.target = if follow {
            Target::Any
        } else {
            Target::Only(upstream.to_owned())
        };
        self
    }

    /// Commits `request` to the outbox together with its decoded usage rows, in one
    /// transaction, and returns once it is durable against a process crash. The relay
    /// acknowledges claude only after this returns `Ok`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub async fn append(&self, request: ExportRequest) -> Result<OutboxId, StoreError> {
        let encoded = Bytes::from(request.encode_to_vec());
        self.append_encoded(&request, encoded, false).await
    }

    /// [`Store::append`] of a request already encoded (`encoded` is `request`'s protobuf
    /// encoding). With `keep`, this process's next claim of the row takes `encoded` from
    /// memory instead of reading the row back (the forwarder's fast path).
    pub async fn append_encoded(
        &self,
        request: &ExportRequest,
        encoded: Bytes,
        keep: bool,
    ) -> Result<OutboxId, StoreError> {
        // Encoding, compressing and decoding usage happen on the caller's thread, so
        // concurrent requests do that work in parallel and the single writer only runs SQL.
        let prepared = Box::new(outbox::Prepared::new(
            request,
            encoded,
            now_ns(),
            self.upstream.clone(),
            keep,
        ));
        self.call(|reply| Command::Append(prepared, reply))?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Claims up to `limit` deliverable rows (never claimed, or whose lease has expired),
    /// oldest first, for `lease`. Rows claimed by a live owner are invisible to others, so
    /// several processes sharing the file never deliver the same row while leases hold.
    /// Rows are decompressed and decoded on the calling task (about 50 µs each): keep
    /// `limit` modest (tens) on a runtime thread. Undecodable rows are dropped and counted.
    #[cfg_attr(not(test), allow(dead_code))]
    pub async fn claim_pending(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(OutboxId, ExportRequest)>, StoreError> {
        Ok(decoded(self.claim(owner, limit, lease).await?))
    }

    /// A claim of up to `limit` rows for `owner`, of this handle's target.
    fn claim_request(&self, owner: &str, limit: usize, lease: Duration) -> outbox::ClaimRequest {
        outbox::ClaimRequest {
            owner: owner.to_owned(),
            limit,
            lease,
            target: self.target.clone(),
        }
    }

    /// [`Store::claim_pending`] with what the forwarder needs besides the request: the row's
    /// failed attempts (its back-off) and when it was accepted. Rows in back-off are skipped,
    /// so they never hold back the rows behind them.
    pub async fn claim(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let request = self.claim_request(owner, limit, lease);
        let raw = self
            .call(|reply| Command::Claim(request, reply))?
            .await
            .map_err(|_| StoreError::Closed)??;
        let (claimed, unreadable) = outbox::decode_claims(raw);
        if !unreadable.is_empty() {
            self.call(|reply| Command::DropUnreadable(unreadable, reply))?
                .await
                .map_err(|_| StoreError::Closed)??;
        }
        Ok(claimed)
    }

    /// A delivery of `owner`'s row failed and may succeed later: the claim ends, the attempt
    /// and `error` are recorded, and the row waits until `not_before` (its own back-off).
    pub async fn defer(
        &self,
        id: OutboxId,
        owner: &str,
        not_before: Duration,
        error: &str,
    ) -> Result<bool, StoreError> {
        let not_before_ns =
            now_ns().saturating_add(i64::try_from(not_before.as_nanos()).unwrap_or(i64::MAX));
        let (owner, error) = (owner.to_owned(), error.to_owned());
        self.call(|reply| Command::Defer {
            id,
            owner,
            not_before_ns,
            error,
            reply,
        })?
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Replaces `owner`'s row by the parts of it not yet delivered (a split request), keeping
    /// its accept time and upstream; usage rows are not written again.
    pub async fn replace(
        &self,
        id: OutboxId,
        owner: &str,
        parts: &[ExportRequest],
        received_ns: i64,
    ) -> Result<bool, StoreError> {
        let prepared = parts
            .iter()
            .map(|p| outbox::Prepared::part(p, received_ns, self.upstream.clone()))
            .collect();
        let owner = owner.to_owned();
        self.call(|reply| Command::Replace(id, owner, prepared, reply))?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Deletes a row upstream has accepted. Returns false when it was already gone
    /// (dropped by a bound, or delivered by another owner after our lease expired).
    pub async fn mark_delivered(&self, id: OutboxId) -> Result<bool, StoreError> {
        self.call(|reply| Command::Delivered(id, reply))?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// [`Store::mark_delivered`] without waiting: the delete is queued and shares the
    /// writer's next transaction. Commands are run in order, so every later call of this
    /// process (a claim, the close) sees the row gone; a crash before that transaction means
    /// the row is sent again by the next launch (at least once across crashes).
    pub fn mark_delivered_later(&self, id: OutboxId) {
        let (reply, _) = oneshot::channel();
        let _ = self.commands.send(Command::Delivered(id, reply));
    }

    /// Gives a claimed row back after a failed delivery so it is retried at once. Only the
    /// current owner's claim is released: a row re-claimed by someone else stays theirs.
    pub async fn release(&self, id: OutboxId, owner: &str) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        self.call(|reply| Command::Release(id, owner, reply))?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Gives back every row `owner` still holds. For a forwarder stopped while it waited for a
    /// claim: the claim may have been taken in the store with its answer never read, and those
    /// rows would otherwise wait for their lease to run out before anyone could send them.
    pub async fn release_owner(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.call(|reply| Command::ReleaseOwner(owner, reply))?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Pending rows this handle would deliver (meant for its upstream, or of unknown upstream,
    /// or every row when it follows): what a run leaves waiting for a later run with it.
    pub async fn pending_for_target(&self) -> Result<u64, StoreError> {
        let per_upstream = self
            .call(Command::PerUpstream)?
            .await
            .map_err(|_| StoreError::Closed)??;
        Ok(per_upstream
            .into_iter()
            .filter(|(upstream, _)| match (&self.target, upstream) {
                (Target::Any, _) | (_, None) => true,
                (Target::Only(mine), Some(theirs)) => mine == theirs,
            })
            .map(|(_, n)| n)
            .sum())
    }

    /// Pending rows, bytes, oldest age and dropped totals, for `status` and `doctor`.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.call(Command::Stats)?
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Finishes the work queued before this call, checkpoints and closes the file, and stops
    /// the threads. For an orderly shutdown: the final checkpoint happens now rather than at
    /// process exit. Calls made afterwards through any clone fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        self.call(Command::Close)?
            .await
            .map_err(|_| StoreError::Closed)?
    }
}

/// Blocking twins of the async calls, for code outside a tokio runtime: the store's tests and
/// `benches/store.rs` drive the store from plain threads. The launcher uses the async calls.
#[cfg_attr(not(test), allow(dead_code))]
impl Store {
    /// [`Store::close`] for code outside a tokio runtime.
    pub fn close_blocking(&self) -> Result<(), StoreError> {
        self.call(Command::Close)?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    /// [`Store::append`] for code outside a tokio runtime (tests, benches, CLI commands).
    /// Panics if called from inside a runtime, like every tokio `blocking_*` call.
    pub fn append_blocking(&self, request: ExportRequest) -> Result<OutboxId, StoreError> {
        let encoded = Bytes::from(request.encode_to_vec());
        let prepared = Box::new(outbox::Prepared::new(
            &request,
            encoded,
            now_ns(),
            self.upstream.clone(),
            false,
        ));
        self.call(|reply| Command::Append(prepared, reply))?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    /// [`Store::claim_pending`] for code outside a tokio runtime.
    pub fn claim_pending_blocking(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<(OutboxId, ExportRequest)>, StoreError> {
        let request = self.claim_request(owner, limit, lease);
        let raw = self
            .call(|reply| Command::Claim(request, reply))?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)??;
        let (claimed, unreadable) = outbox::decode_claims(raw);
        if !unreadable.is_empty() {
            self.call(|reply| Command::DropUnreadable(unreadable, reply))?
                .blocking_recv()
                .map_err(|_| StoreError::Closed)??;
        }
        Ok(decoded(claimed))
    }

    /// [`Store::mark_delivered`] for code outside a tokio runtime.
    pub fn mark_delivered_blocking(&self, id: OutboxId) -> Result<bool, StoreError> {
        self.call(|reply| Command::Delivered(id, reply))?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    /// [`Store::release`] for code outside a tokio runtime.
    pub fn release_blocking(&self, id: OutboxId, owner: &str) -> Result<bool, StoreError> {
        let owner = owner.to_owned();
        self.call(|reply| Command::Release(id, owner, reply))?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    /// Pending rows per upstream they were accepted for (`None`: queued before rows said), for
    /// code outside a tokio runtime (the launcher, before
    /// its runtime serves anything).
    pub fn pending_per_upstream_blocking(&self) -> Result<Vec<(Option<String>, u64)>, StoreError> {
        self.call(Command::PerUpstream)?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    /// [`Store::outbox_stats`] for code outside a tokio runtime.
    pub fn outbox_stats_blocking(&self) -> Result<OutboxStats, StoreError> {
        self.call(Command::Stats)?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(make(reply))
            .map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }
}

/// Claimed rows decoded, for callers that want the requests (tests, tools).
#[cfg_attr(not(test), allow(dead_code))]
fn decoded(claims: Vec<Claimed>) -> Vec<(OutboxId, ExportRequest)> {
    claims
        .into_iter()
        .filter_map(|c| {
            let request = ExportRequest::decode(c.signal, &c.body).ok()?;
            Some((c.id, request))
        })
        .collect()
}

/// Opens a read connection for queries (the report, `doctor`), migrating the file first so a
/// report run after an upgrade works. Returns `Ok(None)` when no store file exists yet.
pub fn open_reader(path: &Path) -> Result<Option<Connection>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let mut conn = open_connection(path)?;
    schema::migrate(&mut conn)?;
    Ok(Some(conn))
}

/// Opens (creating and migrating when needed) a connection for a writer that is not the
/// relay's writer thread: the history import. Its transactions are `BEGIN IMMEDIATE` and short,
/// so a running launcher's appends wait milliseconds at most.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Create {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let mut conn = open_connection(path)?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// Opens a connection with the settings every connection to the store must share.
fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    create_private_file(path)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // busy_timeout first: switching to WAL itself needs a lock another process may hold.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Keep the WAL from growing without end after a burst; it is truncated to this on checkpoint.
    // No journal_size_limit: a WAL that is reused from its start after each checkpoint writes
    // into blocks the file already has; truncating it makes every burst allocate them again
    // (measured: a third of the writer's CPU). The checkpointer bounds its size instead.
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // 16 MiB of page cache: the rollup and the tables' right edges stay in memory.
    conn.pragma_update(None, "cache_size", -16_384)?;
    conn.set_prepared_statement_cache_capacity(64);
    outbox::register_can_read(&conn)?;
    Ok(conn)
}

/// Creates the directory (0700) and, when missing, an empty file (0600) so telemetry is
/// private to the user whatever the umask; SQLite gives its WAL and shm files the database
/// file's mode.
///
/// An existing file is never opened here: closing any descriptor of a file drops every POSIX
/// lock this process holds on it, including the locks of SQLite connections other threads
/// have open, which lets another process write under them (seen as `disk I/O error`).
/// `create_new` only ever closes a descriptor of a file nobody had open.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(err)?;
    }
    if path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        // Another process created it between the check and here: that is fine.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Wall-clock nanoseconds since the Unix epoch; leases and ages are compared across processes.
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Folds the WAL into the database every [`CHECKPOINT_INTERVAL`] or when nudged; ends when
/// the writer thread (the only sender) ends. PASSIVE never waits for readers or writers, so
/// under sustained writing it may never finish and the WAL would keep growing: past
/// [`WAL_RESTART_FRAMES`] a RESTART checkpoint briefly holds writers back so the next
/// commit starts the WAL from its beginning again.
fn checkpoint_loop(conn: Connection, nudged: mpsc::Receiver<()>) {
    loop {
        match nudged.recv_timeout(CHECKPOINT_INTERVAL) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {
                // A failed checkpoint is retried next round; the WAL stays valid meanwhile.
                let frames: Option<i64> = conn
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                    .ok();
                if frames.is_some_and(|f| f > WAL_RESTART_FRAMES) {
                    let _ = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()));
                }
                // Pages an emptied outbox freed go back to the file system, a few MiB a round.
                let _ = outbox::reclaim_free_pages(&conn);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// A command arriving less than this after the last group commit ended means a burst.
const BURST_GAP: Duration = Duration::from_millis(2);

/// How long a group may wait in a burst for the appends that usually share it.
const GROUP_WAIT: Duration = Duration::from_micros(500);

/// How many recent groups tell how many appends a group usually gathers.
const RECENT_GROUPS: usize = 8;

/// The append counts of the last [`RECENT_GROUPS`] groups; their largest is about how many
/// requests are accepted at once. One sender at a time makes it 1, and no group ever waits.
#[derive(Default)]
struct RecentGroups {
    appends: [usize; RECENT_GROUPS],
    next: usize,
}

impl RecentGroups {
    fn push(&mut self, appends: usize) {
        self.appends[self.next] = appends;
        self.next = (self.next + 1) % RECENT_GROUPS;
    }

    fn usual(&self) -> usize {
        self.appends.iter().copied().max().unwrap_or(0)
    }
}

/// Writes gathered for one transaction, with where each answer goes.
#[derive(Default)]
struct Group {
    writes: Vec<outbox::Write>,
    replies: Vec<Answer>,
    /// A claim queued with the writes: it runs after all of them, so it also sees rows
    /// appended behind it (a claim takes the oldest deliverable rows, which those cannot
    /// precede) and never the rows deleted behind it (they are this process's, claimed).
    claim: Option<(outbox::ClaimRequest, Reply<Vec<outbox::RawClaim>>)>,
    /// Stored bytes of the appends.
    bytes: usize,
}

impl Group {
    /// Adds an append, a delivery or the group's one claim; any other command (a second
    /// claim too) is handed back (it runs after).
    fn add(&mut self, command: Command) -> Option<Command> {
        match command {
            Command::Append(prepared, reply) => {
                self.bytes += prepared.body_len();
                self.writes.push(outbox::Write::Append(prepared));
                self.replies.push(Answer::Appended(reply));
                None
            }
            Command::Delivered(id, reply) => {
                self.writes.push(outbox::Write::Delivered(id));
                self.replies.push(Answer::Delivered(reply));
                None
            }
            Command::Claim(request, reply) if self.claim.is_none() => {
                self.claim = Some((request, reply));
                None
            }
            other => Some(other),
        }
    }

    fn appends(&self) -> usize {
        self.replies
            .iter()
            .filter(|r| matches!(r, Answer::Appended(_)))
            .count()
    }

    /// Nothing more joins: a transaction is kept short.
    fn full(&self) -> bool {
        self.writes.len() >= MAX_GROUP_COMMIT || self.bytes >= MAX_GROUP_COMMIT_BYTES
    }
}

/// Where the result of one write of a group goes.
enum Answer {
    Appended(Reply<OutboxId>),
    Delivered(Reply<bool>),
}

impl Answer {
    /// A dropped receiver means the caller gave up waiting (or never waits); the work is done
    /// regardless. `result` is [`outbox::write_group`]'s: the new row id, or rows deleted.
    fn send(self, result: Result<i64, StoreError>) {
        match self {
            Answer::Appended(reply) => {
                let _ = reply.send(result.map(OutboxId));
            }
            Answer::Delivered(reply) => {
                let _ = reply.send(result.map(|n| n == 1));
            }
        }
    }
}

/// Runs commands until every handle is dropped (returns `None`) or one asks to close
/// (returns its reply, to be answered once everything is closed).
fn writer_loop(
    mut conn: Connection,
    bounds: StoreBounds,
    commands: mpsc::Receiver<Command>,
    nudge: mpsc::SyncSender<()>,
    path: &Path,
) -> Option<Reply<()>> {
    // Encoded requests committed by this process and not yet claimed: filled at commit,
    // emptied at claim, both on this thread.
    let mut hot = outbox::HotBodies::default();
    let mut commits = 0u32;
    let mut next = None;
    let mut last_commit: Option<Instant> = None;
    let mut recent = RecentGroups::default();
    loop {
        let command = match next.take() {
            Some(command) => command,
            None => match commands.recv() {
                Ok(command) => command,
                Err(_) => return None,
            },
        };
        commits += 1;
        if commits.is_multiple_of(COMMITS_PER_CHECKPOINT) {
            // Full means a checkpoint is already pending: nothing to add.
            let _ = nudge.try_send(());
        }
        // A dropped receiver means the caller gave up waiting; the work is done regardless.
        match command {
            first @ (Command::Append(..) | Command::Delivered(..) | Command::Claim(..)) => {
                // Group commit: appends and deletes already queued behind this one share its
                // transaction, so a burst of requests costs one commit instead of one each; a
                // claim queued among them runs last in it.
                let mut group = Group::default();
                group.add(first);
                // In a burst (the last transaction ended moments ago) a group smaller than the
                // recent ones waits a little for the requests being decoded behind it, so they
                // share its commit: fewer commits write the pages every commit dirties (page 1,
                // counters, sequence, rollups) fewer times.
                let now = Instant::now();
                let burst = last_commit.is_some_and(|t| now.duration_since(t) < BURST_GAP);
                let wait_until = burst.then(|| now + GROUP_WAIT);
                let usual = recent.usual();
                while !group.full() {
                    let received = match commands.try_recv() {
                        Ok(command) => Some(command),
                        Err(_) => match wait_until {
                            Some(until) if group.appends() < usual => {
                                let left = until.saturating_duration_since(Instant::now());
                                if left.is_zero() {
                                    None
                                } else {
                                    commands.recv_timeout(left).ok()
                                }
                            }
                            _ => None,
                        },
                    };
                    match received {
                        Some(command) => {
                            if let Some(other) = group.add(command) {
                                next = Some(other);
                                break;
                            }
                        }
                        None => break,
                    }
                }
                recent.push(group.appends());
                let Group {
                    writes,
                    replies,
                    claim,
                    ..
                } = group;
                let (claim_request, claim_reply) = claim.unzip();
                let done = outbox::write_group(
                    &mut conn,
                    &writes,
                    claim_request.as_ref(),
                    bounds,
                    now_ns(),
                    &mut hot,
                );
                for (reply, result) in replies.into_iter().zip(done.writes) {
                    reply.send(result);
                }
                if let (Some(reply), Some(result)) = (claim_reply, done.claim) {
                    let _ = reply.send(result);
                }
                last_commit = Some(Instant::now());
            }
            Command::Defer {
                id,
                owner,
                not_before_ns,
                error,
                reply,
            } => {
                let _ = reply.send(outbox::defer(&conn, id, &owner, not_before_ns, &error));
            }
            Command::Replace(id, owner, parts, reply) => {
                let _ = reply.send(outbox::replace(&mut conn, id, &owner, &parts));
            }
            Command::PerUpstream(reply) => {
                let _ = reply.send(outbox::per_upstream(&conn));
            }
            Command::DropUnreadable(rows, reply) => {
                let _ = reply.send(outbox::drop_unreadable(&mut conn, &rows));
            }
            Command::Release(id, owner, reply) => {
                let _ = reply.send(outbox::release(&conn, id, &owner));
            }
            Command::ReleaseOwner(owner, reply) => {
                let _ = reply.send(outbox::release_owner(&conn, &owner));
            }
            Command::Stats(reply) => {
                let _ = reply.send(outbox::stats(&conn, now_ns()));
            }
            Command::Close(reply) => {
                // Everything queued before the close has been answered (the channel is FIFO);
                // commands sent after it are dropped and their callers see `Closed`.
                // The marker lets the next launch notice a store that vanishes meanwhile.
                if let Ok(stats) = outbox::stats(&conn, now_ns()) {
                    health::write_marker(path, stats.pending_rows);
                }
                if let Err((_, err)) = conn.close() {
                    let _ = reply.send(Err(err.into()));
                    return None;
                }
                return Some(reply);
            }
        }
    }
}

#[cfg(test)]
mod tests;
