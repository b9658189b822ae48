//! Store behaviour: transactions, claims, bounds, migrations, concurrency and crash safety.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::fixtures::{self, Usage};
use super::*;

/// 2026-11-02T09:00:00Z
const T0: u64 = 1_793_610_000_000_000_000;

fn usage(n: u64) -> Usage {
    Usage {
        input: 10 * n,
        output: 100 * n,
        cache_read: 1000 * n,
        cache_creation: 50 * n,
        cost_usd: 0.01 * n as f64,
    }
}

/// A logs request with `events` api_request events for `session`.
fn api_logs(session: &str, events: usize) -> ExportRequest {
    let records = (0..events)
        .map(|i| fixtures::api_request(session, T0 + i as u64, "claude-opus-4-8", usage(1)))
        .collect();
    fixtures::logs(fixtures::resource(Some("alpha")), records)
}

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sub").join("store.db");
    (dir, path)
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).expect("raw connection")
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

/// What the outbox stores for `request` (compressed protobuf), which the size bound counts.
fn stored_len(request: &ExportRequest) -> u64 {
    outbox::Prepared::part(request, 0, None).body_len() as u64
}

fn big_bounds() -> StoreBounds {
    StoreBounds::default()
}

#[test]
fn migrations_build_the_schema_from_an_empty_file_and_reopen_is_idempotent() {
    let (_dir, path) = temp_db();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, b"").expect("empty file");
    let store = Store::open(&path, big_bounds()).expect("open empty file");
    store.append_blocking(api_logs("s1", 2)).expect("append");
    drop(store);
    let store = Store::open(&path, big_bounds()).expect("re-open");
    store
        .append_blocking(api_logs("s1", 2))
        .expect("append again");
    drop(store);
    let conn = raw(&path);
    assert_eq!(count(&conn, "PRAGMA user_version"), schema::CURRENT_VERSION);
    assert_eq!(count(&conn, "SELECT count(*) FROM outbox"), 2);
    assert_eq!(count(&conn, "SELECT count(*) FROM api_requests"), 4);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
}

#[cfg(unix)]
#[test]
fn store_file_and_directory_are_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = temp_db();
    Store::open(&path, big_bounds()).expect("open");
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("parent")), 0o700);
}

#[test]
fn a_newer_schema_is_refused_not_overwritten() {
    let (_dir, path) = temp_db();
    Store::open(&path, big_bounds()).expect("open");
    raw(&path)
        .pragma_update(None, "user_version", schema::CURRENT_VERSION + 1)
        .expect("bump version");
    match Store::open(&path, big_bounds()) {
        Err(StoreError::NewerSchema { found, supported }) => {
            assert_eq!(
                (found, supported),
                (schema::CURRENT_VERSION + 1, schema::CURRENT_VERSION)
            );
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn append_commits_the_outbox_row_and_its_usage_rows_together() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let request = api_logs("s1", 3);
    let encoded_len = request.encode_to_vec().len() as i64;
    let stored = stored_len(&request) as i64;
    let id = store.append_blocking(request).expect("append");
    let conn = raw(&path);
    let (signal, items, bytes, encoding): (String, i64, i64, String) = conn
        .query_row(
            "SELECT signal, items, bytes, encoding FROM outbox WHERE id = ?1",
            [id.0],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("outbox row");
    assert_eq!((signal.as_str(), items, bytes), ("logs", 3, stored));
    assert_eq!(encoding, "lz4");
    assert!(
        stored * 2 < encoded_len,
        "compressed {stored} of {encoded_len} bytes"
    );
    // Numbers sent as strings are decoded like numbers.
    let (cost, input, cache_read, model, project): (f64, i64, i64, String, String) = conn
        .query_row(
            "SELECT sum(cost_usd), sum(input_tokens), sum(cache_read_tokens), min(model), min(project)
             FROM api_requests",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("api rows");
    assert!((cost - 0.03).abs() < 1e-12, "cost {cost}");
    assert_eq!((input, cache_read), (30, 3000));
    assert_eq!(
        (model.as_str(), project.as_str()),
        ("claude-opus-4-8", "alpha")
    );
    assert_eq!(
        count(&conn, "SELECT sum(api_requests) FROM usage_hourly"),
        3
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sessions WHERE session_id = 's1'"
        ),
        1
    );
}

#[test]
fn metric_model_suffix_and_bare_event_model_share_one_rollup_model() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let u = usage(2);
    store
        .append_blocking(fixtures::metrics(
            fixtures::resource(None),
            fixtures::usage_points("s1", T0, "claude-opus-4-8", u),
        ))
        .expect("metrics");
    store.append_blocking(api_logs("s1", 1)).expect("logs");
    let conn = raw(&path);
    let models: Vec<String> = conn
        .prepare("SELECT DISTINCT model FROM usage_hourly")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(models, vec!["claude-opus-4-8".to_owned()]);
    // The point's series keeps what claude sent.
    let raw_model: String = conn
        .query_row("SELECT model FROM metric_series LIMIT 1", [], |r| r.get(0))
        .expect("series");
    assert_eq!(raw_model, "claude-opus-4-8[1m]");
    let (cost, cache_read): (f64, f64) = conn
        .query_row(
            "SELECT sum(cost_usd), sum(cache_read_tokens) FROM usage_hourly",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("sums");
    assert!((cost - u.cost_usd).abs() < 1e-12);
    assert_eq!(cache_read, u.cache_read as f64);
}

#[test]
fn claimed_requests_come_back_oldest_first_and_unchanged() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let first = api_logs("s1", 2);
    let second = fixtures::metrics(
        fixtures::resource(None),
        fixtures::usage_points("s1", T0, "m", usage(1)),
    );
    let a = store.append_blocking(first.clone()).expect("append");
    let b = store.append_blocking(second.clone()).expect("append");
    let claimed = store
        .claim_pending_blocking("A", 10, Duration::from_secs(60))
        .expect("claim");
    assert_eq!(claimed, vec![(a, first), (b, second)]);
}

#[test]
fn two_owners_never_claim_the_same_row() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    for _ in 0..10 {
        store.append_blocking(api_logs("s1", 1)).expect("append");
    }
    let lease = Duration::from_secs(60);
    let a: Vec<OutboxId> = store
        .claim_pending_blocking("A", 4, lease)
        .expect("claim A")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let b: Vec<OutboxId> = store
        .claim_pending_blocking("B", 100, lease)
        .expect("claim B")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(a.len(), 4);
    assert_eq!(b.len(), 6);
    assert!(a.iter().all(|id| !b.contains(id)), "overlap: {a:?} {b:?}");
    assert!(a.iter().max() < b.iter().min(), "A got the oldest rows");
    assert!(
        store
            .claim_pending_blocking("C", 100, lease)
            .expect("claim C")
            .is_empty()
    );
}

#[test]
fn an_expired_lease_makes_rows_claimable_again() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let id = store.append_blocking(api_logs("s1", 1)).expect("append");
    let first = store
        .claim_pending_blocking("killed-launcher", 10, Duration::from_millis(50))
        .expect("claim");
    assert_eq!(first.len(), 1);
    assert!(
        store
            .claim_pending_blocking("B", 10, Duration::from_secs(60))
            .expect("claim")
            .is_empty()
    );
    thread::sleep(Duration::from_millis(80));
    let again = store
        .claim_pending_blocking("B", 10, Duration::from_secs(60))
        .expect("claim after expiry");
    assert_eq!(
        again.into_iter().map(|(i, _)| i).collect::<Vec<_>>(),
        vec![id]
    );
}

#[test]
fn release_gives_a_row_back_only_for_its_current_owner() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let id = store.append_blocking(api_logs("s1", 1)).expect("append");
    store
        .claim_pending_blocking("A", 10, Duration::from_secs(60))
        .expect("claim");
    assert!(!store.release_blocking(id, "B").expect("release by B"));
    assert!(
        store
            .claim_pending_blocking("B", 10, Duration::from_secs(60))
            .expect("claim")
            .is_empty()
    );
    assert!(store.release_blocking(id, "A").expect("release by A"));
    assert_eq!(
        store
            .claim_pending_blocking("B", 10, Duration::from_secs(60))
            .expect("claim")
            .len(),
        1
    );
}

#[test]
fn mark_delivered_deletes_the_row_once() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let id = store.append_blocking(api_logs("s1", 2)).expect("append");
    assert!(store.mark_delivered_blocking(id).expect("deliver"));
    assert!(!store.mark_delivered_blocking(id).expect("deliver twice"));
    let stats = store.outbox_stats_blocking().expect("stats");
    assert_eq!(
        (
            stats.pending_rows,
            stats.pending_bytes,
            stats.oldest_age_secs
        ),
        (0, 0, None)
    );
    // Usage rows stay: they are the local copy, not part of delivery.
    assert_eq!(count(&raw(&path), "SELECT count(*) FROM api_requests"), 2);
}

#[test]
fn a_tiny_size_bound_drops_the_oldest_rows_first_and_counts_them() {
    let (_dir, path) = temp_db();
    let row_bytes = stored_len(&api_logs("s1", 2));
    let bounds = StoreBounds {
        max_bytes: row_bytes * 3,
        max_age: Duration::from_secs(3600),
    };
    let store = Store::open(&path, bounds).expect("open");
    let ids: Vec<OutboxId> = (0..10)
        .map(|_| store.append_blocking(api_logs("s1", 2)).expect("append"))
        .collect();
    let left: Vec<OutboxId> = store
        .claim_pending_blocking("A", 100, Duration::from_secs(60))
        .expect("claim")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, ids[7..].to_vec(), "the newest three survive");
    let stats = store.outbox_stats_blocking().expect("stats");
    assert_eq!(stats.pending_rows, 3);
    assert_eq!(stats.pending_bytes, row_bytes * 3);
    assert_eq!((stats.dropped_rows, stats.dropped_items), (7, 14));
    assert_eq!(stats.dropped_bytes, row_bytes * 7);
    // The report's rows are kept even when the outbox copy is dropped.
    assert_eq!(count(&raw(&path), "SELECT count(*) FROM api_requests"), 20);
}

#[test]
fn rows_older_than_the_age_bound_are_dropped() {
    let (_dir, path) = temp_db();
    let bounds = StoreBounds {
        max_bytes: u64::MAX,
        max_age: Duration::from_millis(100),
    };
    let store = Store::open(&path, bounds).expect("open");
    let old = store.append_blocking(api_logs("s1", 1)).expect("append");
    thread::sleep(Duration::from_millis(150));
    let new = store.append_blocking(api_logs("s1", 1)).expect("append");
    let left: Vec<OutboxId> = store
        .claim_pending_blocking("A", 10, Duration::from_secs(60))
        .expect("claim")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, vec![new]);
    assert_ne!(old, new);
    assert_eq!(
        store.outbox_stats_blocking().expect("stats").dropped_rows,
        1
    );
}

#[test]
fn stats_show_pending_rows_bytes_and_the_oldest_age() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let a = api_logs("s1", 1);
    let b = api_logs("s1", 4);
    let bytes = stored_len(&a) + stored_len(&b);
    store.append_blocking(a).expect("append");
    thread::sleep(Duration::from_millis(20));
    store.append_blocking(b).expect("append");
    let stats = store.outbox_stats_blocking().expect("stats");
    assert_eq!((stats.pending_rows, stats.pending_bytes), (2, bytes));
    let age = stats.oldest_age_secs.expect("an oldest row");
    assert!((0.02..60.0).contains(&age), "age {age}");
    let reader = open_reader(&path).expect("reader").expect("file exists");
    assert_eq!(
        queries::outbox_stats(&reader).expect("stats").pending_rows,
        2
    );
}

#[test]
fn an_undecodable_outbox_row_is_dropped_and_counted_instead_of_blocking_delivery() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    raw(&path)
        .execute_batch(
            "INSERT INTO outbox(signal, items, bytes, received_ns, encoding, body)
                 VALUES ('logs', 5, 3, 1, 'none', x'ffffff');
             INSERT INTO outbox(signal, items, bytes, received_ns, encoding, body)
                 VALUES ('logs', 2, 3, 1, 'deflate', x'ffffff');",
        )
        .expect("garbage rows");
    let good = store.append_blocking(api_logs("s1", 1)).expect("append");
    let claimed = store
        .claim_pending_blocking("A", 10, Duration::from_secs(60))
        .expect("claim");
    assert_eq!(
        claimed.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        vec![good]
    );
    let stats = store.outbox_stats_blocking().expect("stats");
    assert_eq!(
        (stats.dropped_rows, stats.dropped_items, stats.pending_rows),
        (2, 7, 1)
    );
}

#[test]
fn async_callers_get_their_answer_from_the_writer_thread() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let id = store.append(api_logs("s1", 1)).await.expect("append");
        let claimed = store
            .claim_pending("A", 10, Duration::from_secs(5))
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        assert!(store.release(id, "A").await.expect("release"));
        assert!(store.mark_delivered(id).await.expect("deliver"));
        assert_eq!(store.outbox_stats().await.expect("stats").pending_rows, 0);
    });
}

#[test]
fn rfc3339_timestamps_parse_to_unix_nanoseconds() {
    assert_eq!(usage::parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        usage::parse_rfc3339_utc("2026-11-02T09:00:00.5Z"),
        Some(T0 as i64 + 500_000_000)
    );
    assert_eq!(
        usage::parse_rfc3339_utc("2024-02-29T23:59:59.123456789Z"),
        Some(1_709_251_199_123_456_789)
    );
    assert_eq!(usage::parse_rfc3339_utc("2026-11-02 09:00:00Z"), None);
    assert_eq!(usage::parse_rfc3339_utc("2026-13-02T09:00:00Z"), None);
    assert_eq!(usage::parse_rfc3339_utc("2026-11-02T09:00:00+01:00"), None);
}

#[test]
fn events_without_a_record_time_use_claudes_event_timestamp() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let mut record = fixtures::event(
        "user_prompt",
        "s1",
        0,
        vec![fixtures::kv("event.timestamp", "2026-11-02T09:00:00.000Z")],
    );
    record.observed_time_unix_nano = 0;
    store
        .append_blocking(fixtures::logs(fixtures::resource(None), vec![record]))
        .expect("append");
    let conn = raw(&path);
    let (time_ns, hour): (i64, i64) = conn
        .query_row(
            "SELECT o.time_ns, u.hour FROM other_events o, usage_hourly u",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!(time_ns, T0 as i64);
    assert_eq!(hour, (T0 / 1_000_000_000) as i64);
    assert_eq!(count(&conn, "SELECT sum(prompts) FROM usage_hourly"), 1);
}

#[test]
fn model_suffixes_are_stripped_only_when_bracketed() {
    assert_eq!(
        usage::normalize_model("claude-opus-4-8[1m]"),
        "claude-opus-4-8"
    );
    assert_eq!(usage::normalize_model("claude-opus-4-8"), "claude-opus-4-8");
    assert_eq!(usage::normalize_model("odd[name"), "odd[name");
}

// ---- several processes on one file -------------------------------------------------------

const CHILD_DB: &str = "CLAUDE_TELEMETRY_STORE_TEST_DB";
const CHILD_RUN_MS: &str = "CLAUDE_TELEMETRY_STORE_TEST_RUN_MS";
const EVENTS_PER_REQUEST: usize = 5;

/// Runs one helper "test" of this binary as a separate process writing to `db`.
fn spawn_child(helper: &str, db: &Path, run_ms: u64) -> std::process::Child {
    let exe = std::env::current_exe().expect("test binary path");
    Process::new(exe)
        .args([
            helper,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, db)
        .env(CHILD_RUN_MS, run_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process")
}

/// Child side: appends requests until told time is up (or until killed), printing
/// `committed <id>` after each append returns. Not a test on its own.
#[test]
#[ignore = "helper process for the multi-process store tests"]
fn child_appends_until_time_is_up() {
    let (Ok(db), Ok(run_ms)) = (std::env::var(CHILD_DB), std::env::var(CHILD_RUN_MS)) else {
        return; // only meaningful when spawned by spawn_child
    };
    let run = Duration::from_millis(run_ms.parse().expect("run ms"));
    let store = Store::open(Path::new(&db), big_bounds()).expect("child open");
    let session = format!("child-{}", std::process::id());
    let start = Instant::now();
    let mut appended = 0u64;
    while start.elapsed() < run {
        let id = store
            .append_blocking(api_logs(&session, EVENTS_PER_REQUEST))
            .expect("child append");
        appended += 1;
        println!("committed {}", id.0);
    }
    println!("appended {appended}");
}

/// The id in a child's `committed <id>` line; libtest may print its own `test … ... ` prefix
/// on the same line as the first one.
fn committed_id(line: &str) -> Option<i64> {
    line.split("committed ").nth(1)?.trim().parse().ok()
}

fn read_child_lines(child: &mut std::process::Child) -> Vec<String> {
    let stdout = child.stdout.take().expect("child stdout");
    BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .collect()
}

#[test]
fn four_processes_appending_at_once_lose_nothing_and_never_double_claim() {
    // 3 s by default; the 30 s run: CLAUDE_TELEMETRY_STORE_CONCURRENCY_MS=30000.
    let run_ms = std::env::var("CLAUDE_TELEMETRY_STORE_CONCURRENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let (_dir, path) = temp_db();
    Store::open(&path, big_bounds()).expect("create");
    let mut children: Vec<_> = (0..4)
        .map(|_| {
            spawn_child(
                "store::tests::child_appends_until_time_is_up",
                &path,
                run_ms,
            )
        })
        .collect();
    // Two forwarders deliver while the children write, as two launchers would.
    let delivered = Arc::new(Mutex::new(Vec::<OutboxId>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forwarders: Vec<_> = ["fwd-1", "fwd-2"]
        .into_iter()
        .map(|owner| {
            let (path, delivered, stop) = (path.clone(), delivered.clone(), stop.clone());
            thread::spawn(move || {
                let store = Store::open(&path, big_bounds()).expect("forwarder open");
                loop {
                    let done = stop.load(std::sync::atomic::Ordering::SeqCst);
                    let batch = store
                        .claim_pending_blocking(owner, 7, Duration::from_secs(60))
                        .expect("claim");
                    for (id, _) in &batch {
                        assert!(
                            store.mark_delivered_blocking(*id).expect("deliver"),
                            "{id:?} gone"
                        );
                    }
                    delivered
                        .lock()
                        .expect("lock")
                        .extend(batch.iter().map(|(id, _)| *id));
                    if done && batch.is_empty() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    let mut appended = 0u64;
    let mut committed = Vec::new();
    for child in &mut children {
        let lines = read_child_lines(child);
        assert!(
            child.wait().expect("wait").success(),
            "a child failed (see stderr)"
        );
        committed.extend(lines.iter().filter_map(|l| committed_id(l)));
        appended += lines
            .iter()
            .find_map(|l| l.strip_prefix("appended ")?.parse::<u64>().ok())
            .expect("child summary line");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for f in forwarders {
        f.join().expect("forwarder thread");
    }
    let delivered = delivered.lock().expect("lock").clone();
    let mut unique = delivered.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), delivered.len(), "a row was delivered twice");
    assert!(appended > 100, "children appended only {appended}");
    println!(
        "4 processes appended {appended} requests ({} events) in {run_ms} ms; \
         2 forwarders delivered {} rows, none twice",
        appended * EVENTS_PER_REQUEST as u64,
        delivered.len()
    );
    assert_eq!(committed.len() as u64, appended);
    assert_eq!(
        delivered.len() as u64,
        appended,
        "every committed row delivered once"
    );
    let conn = raw(&path);
    assert_eq!(count(&conn, "SELECT count(*) FROM outbox"), 0);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM api_requests") as u64,
        appended * EVENTS_PER_REQUEST as u64
    );
    assert_eq!(
        count(&conn, "SELECT sum(api_requests) FROM usage_hourly") as u64,
        appended * EVENTS_PER_REQUEST as u64
    );
}

#[test]
fn kill_9_mid_append_leaves_a_consistent_store_with_every_committed_row() {
    let (_dir, path) = temp_db();
    Store::open(&path, big_bounds()).expect("create");
    let mut child = spawn_child(
        "store::tests::child_appends_until_time_is_up",
        &path,
        60_000,
    );
    let stdout = child.stdout.take().expect("stdout");
    let mut committed = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child line");
        if let Some(id) = committed_id(&line) {
            committed.push(id);
            if committed.len() == 300 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL the child"); // std sends SIGKILL on Unix
    let status = child.wait().expect("reap");
    assert!(!status.success(), "the child was killed, not finished");

    let conn = raw(&path);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok");
    let rows = count(&conn, "SELECT count(*) FROM outbox");
    assert!(
        rows >= committed.len() as i64,
        "{rows} rows < {} committed",
        committed.len()
    );
    for id in &committed {
        assert_eq!(
            count(
                &conn,
                &format!("SELECT count(*) FROM outbox WHERE id = {id}")
            ),
            1
        );
    }
    // Outbox row and usage rows commit together: no half-written request.
    assert_eq!(
        count(&conn, "SELECT count(*) FROM api_requests"),
        rows * EVENTS_PER_REQUEST as i64
    );
    assert_eq!(
        count(
            &conn,
            "SELECT value FROM counters WHERE name = 'outbox_rows'"
        ),
        rows
    );
    // A later launch delivers the leftovers.
    let store = Store::open(&path, big_bounds()).expect("re-open after crash");
    let leftovers = store
        .claim_pending_blocking("next-launch", 100_000, Duration::from_secs(60))
        .expect("claim leftovers");
    assert_eq!(leftovers.len() as i64, rows);
}

#[test]
fn close_checkpoints_the_file_and_later_calls_fail_with_closed() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let other = store.clone();
    store.append_blocking(api_logs("s1", 2)).expect("append");
    store.close_blocking().expect("close");
    let wal = path.with_file_name("store.db-wal");
    assert!(
        !wal.exists(),
        "the last connection's close folds and removes the WAL"
    );
    assert!(matches!(
        other.append_blocking(api_logs("s1", 1)),
        Err(StoreError::Closed)
    ));
    assert_eq!(count(&raw(&path), "SELECT count(*) FROM outbox"), 1);
}

#[test]
fn appends_from_many_threads_through_one_handle_are_all_committed() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let ids: Vec<OutboxId> = thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                scope.spawn(move || {
                    (0..50)
                        .map(|_| {
                            store
                                .append_blocking(api_logs(&format!("s{t}"), 3))
                                .expect("append")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 400);
    let conn = raw(&path);
    assert_eq!(count(&conn, "SELECT count(*) FROM outbox"), 400);
    assert_eq!(count(&conn, "SELECT count(*) FROM api_requests"), 1200);
    assert_eq!(count(&conn, "SELECT count(*) FROM sessions"), 8);
}

#[test]
fn the_handle_can_be_shared_across_tasks_and_threads() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Store>();
    fn sendable<T: Send + Sync + 'static>() {}
    sendable::<StoreError>();
}

/// Child side of the lock test: tries to read the file once, without waiting for locks.
#[test]
#[ignore = "helper process for the multi-process store tests"]
fn child_tries_to_read_once() {
    let Ok(db) = std::env::var(CHILD_DB) else {
        return; // only meaningful when spawned by spawn_child
    };
    let conn = Connection::open(&db).expect("child open");
    conn.busy_timeout(Duration::ZERO).expect("no waiting");
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(n) => println!("read {n} schema rows"),
        Err(e) => println!("file locked: {e}"),
    }
}

#[test]
fn preparing_the_file_again_keeps_the_locks_this_process_holds() {
    let (_dir, path) = temp_db();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    // A connection of this process holding an exclusive lock, as a connection does while it
    // checkpoints or closes.
    let holder = raw(&path);
    holder
        .execute_batch("CREATE TABLE t(x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
        .expect("take the exclusive lock");
    // What every Store::open does first; closing a descriptor of the file here would drop
    // the holder's POSIX lock and let another process in.
    create_private_file(&path).expect("prepare existing file");
    let mut child = spawn_child("store::tests::child_tries_to_read_once", &path, 0);
    let lines = read_child_lines(&mut child);
    assert!(child.wait().expect("wait").success());
    assert!(
        lines.iter().any(|l| l.contains("file locked")),
        "another process read the file under our exclusive lock: {lines:?}"
    );
    holder.execute_batch("COMMIT").expect("commit");
}

#[test]
fn rows_stay_for_their_upstream_unless_the_handle_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let a = Store::open(&path, StoreBounds::default())
        .unwrap()
        .for_upstream("http://a", false);
    a.append_blocking(api_logs("s", 1)).unwrap();
    a.append_blocking(api_logs("s", 1)).unwrap();
    let b = Store::open(&path, StoreBounds::default())
        .unwrap()
        .for_upstream("http://b", false);
    b.append_blocking(api_logs("s", 1)).unwrap();
    let lease = Duration::from_secs(60);
    let mine = b.claim_pending_blocking("b", 10, lease).unwrap();
    assert_eq!(mine.len(), 1, "only b's own row");
    for (id, _) in &mine {
        b.release_blocking(*id, "b").unwrap();
    }
    let mut per = b.pending_per_upstream_blocking().unwrap();
    per.sort();
    assert_eq!(
        per,
        vec![(Some("http://a".into()), 2), (Some("http://b".into()), 1)]
    );
    let follow = Store::open(&path, StoreBounds::default())
        .unwrap()
        .for_upstream("http://b", true);
    assert_eq!(
        follow.claim_pending_blocking("f", 10, lease).unwrap().len(),
        3
    );
    for s in [a, b, follow] {
        s.close_blocking().unwrap();
    }
}

#[test]
fn a_version_1_store_is_migrated_keeping_its_rows() {
    let (_dir, path) = temp_db();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    {
        let conn = raw(&path);
        conn.execute_batch(schema::MIGRATIONS[0])
            .expect("v1 schema");
        conn.pragma_update(None, "user_version", 1)
            .expect("version 1");
        conn.execute(
            "INSERT INTO usage_hourly(hour, session_id, model, project, api_cache_creation_tokens)
             VALUES (0, 's0', 'm', '', 77)",
            [],
        )
        .expect("a v1 row");
    }
    let store = Store::open(&path, big_bounds()).expect("migrates");
    drop(store);
    let conn = raw(&path);
    assert_eq!(count(&conn, "PRAGMA user_version"), schema::CURRENT_VERSION);
    assert_eq!(
        count(
            &conn,
            "SELECT CAST(api_cache_creation_tokens + api_cache_creation_1h_tokens AS INTEGER) FROM usage_hourly"
        ),
        77,
        "old row kept, new columns zero"
    );
}

#[test]
fn cache_creation_split_is_stored_beside_the_total_never_added_to_it() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    // As claude 2.1.332 sends it: the API's total, and its 5m / 1h parts.
    let mut with_split = fixtures::api_request("s1", T0, "claude-opus-4-8", usage(1));
    with_split
        .attributes
        .push(fixtures::kv_int("cache_creation_5m_tokens", 20));
    with_split
        .attributes
        .push(fixtures::kv("cache_creation_1h_tokens", "30"));
    // As 2.1.197 sends it: no split.
    let without = fixtures::api_request("s1", T0 + 1, "claude-opus-4-8", usage(1));
    store
        .append_blocking(fixtures::logs(
            fixtures::resource(Some("alpha")),
            vec![with_split, without],
        ))
        .expect("append");
    drop(store);
    let conn = raw(&path);
    let rows: Vec<(i64, Option<i64>, Option<i64>)> = conn
        .prepare(
            "SELECT cache_creation_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens
             FROM api_requests ORDER BY time_ns",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows, vec![(50, Some(20), Some(30)), (50, None, None)]);
    let sums: (f64, f64, f64, f64) = conn
        .query_row(
            "SELECT sum(api_cache_creation_tokens), sum(api_cache_creation_5m_tokens),
                    sum(api_cache_creation_1h_tokens), sum(api_cache_split_requests)
             FROM usage_hourly",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("sums");
    assert_eq!(sums, (100.0, 20.0, 30.0, 1.0));
}

#[test]
fn cost_and_token_points_are_summed_into_the_rollup_not_stored_one_by_one() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let u = usage(3);
    let request = || {
        let mut metrics = fixtures::usage_points("s1", T0, "claude-opus-4-8", u);
        metrics.push(fixtures::sum(
            "claude_code.active_time.total",
            vec![fixtures::point(
                "s1",
                T0,
                35.0,
                vec![fixtures::kv("type", "cli")],
            )],
        ));
        fixtures::metrics(fixtures::resource(Some("alpha")), metrics)
    };
    store.append_blocking(request()).expect("metrics");
    store.append_blocking(request()).expect("the same again");
    drop(store);
    let conn = raw(&path);
    // Only the active-time points are rows; every point's series is known once.
    assert_eq!(count(&conn, "SELECT count(*) FROM metric_points"), 2);
    assert_eq!(count(&conn, "SELECT count(*) FROM metric_series"), 6);
    let (name, kind, value, session): (String, String, f64, String) = conn
        .query_row(
            "SELECT s.name, s.type, p.value, x.session_id FROM metric_points p
             JOIN metric_series s ON s.id = p.series JOIN sessions x ON x.id = p.session
             LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("point");
    assert_eq!(
        (name.as_str(), kind.as_str(), value, session.as_str()),
        ("claude_code.active_time.total", "cli", 35.0, "s1")
    );
    let sums: (f64, f64, f64, f64, f64, f64) = conn
        .query_row(
            "SELECT sum(cost_usd), sum(input_tokens), sum(output_tokens),
                    sum(cache_read_tokens), sum(cache_creation_tokens), sum(active_cli_s)
             FROM usage_hourly",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .expect("sums");
    assert!((sums.0 - 2.0 * u.cost_usd).abs() < 1e-12);
    assert_eq!(
        (sums.1, sums.2, sums.3, sums.4, sums.5),
        (
            2.0 * u.input as f64,
            2.0 * u.output as f64,
            2.0 * u.cache_read as f64,
            2.0 * u.cache_creation as f64,
            70.0
        )
    );
}

#[test]
fn pages_an_emptied_outbox_freed_go_back_to_the_file_system() {
    let (_dir, path) = temp_db();
    drop(Store::open(&path, big_bounds()).expect("open"));
    let conn = raw(&path);
    assert_eq!(
        count(&conn, "PRAGMA auto_vacuum"),
        2,
        "a new file is incremental"
    );
    // 40 MiB of outbox rows (random bytes: they do not compress), then delivered.
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut body = vec![0u8; 64 * 1024];
    for _ in 0..640 {
        for b in body.iter_mut() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *b = rng as u8;
        }
        conn.execute(
            "INSERT INTO outbox(signal, items, bytes, received_ns, encoding, body)
             VALUES ('logs', 1, ?1, 1, 'none', ?2)",
            rusqlite::params![body.len() as i64, body],
        )
        .expect("row");
    }
    conn.execute("DELETE FROM outbox", []).expect("delivered");
    let size = |c: &Connection| count(c, "PRAGMA page_count") * count(c, "PRAGMA page_size");
    let (before, free_before) = (size(&conn), count(&conn, "PRAGMA freelist_count"));
    assert!(free_before > 10_000, "{free_before} free pages");
    let mut rounds = 0;
    while outbox::reclaim_free_pages(&conn).expect("reclaim") > 0 {
        rounds += 1;
        assert!(rounds < 100, "reclaim never ends");
    }
    let free_after = count(&conn, "PRAGMA freelist_count");
    assert!(rounds > 1, "bounded per call: {rounds} round(s)");
    assert!(
        free_after <= 4096,
        "{free_after} free pages left of {free_before}"
    );
    // 40 MiB freed, 16 MiB of it kept for the next rows.
    assert!(size(&conn) < before - 20 * 1024 * 1024, "the file shrank");
}

#[test]
fn a_claim_sends_the_bytes_committed_from_memory_and_another_process_reads_the_same_from_the_file()
{
    let (_dir, path) = temp_db();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let request = api_logs("s1", 40);
    let encoded = Bytes::from(request.encode_to_vec());
    let first = Store::open(&path, big_bounds()).expect("open");
    let second = Store::open(&path, big_bounds()).expect("open again, as another launcher");
    rt.block_on(async {
        let kept = first
            .append_encoded(&request, encoded.clone(), true)
            .await
            .expect("append");
        let read = first
            .append_encoded(&request, encoded.clone(), true)
            .await
            .expect("append");
        let mine = first
            .claim("A", 1, Duration::from_secs(30))
            .await
            .expect("claim");
        assert_eq!(mine.len(), 1);
        assert_eq!((mine[0].id, mine[0].items), (kept, 40));
        assert_eq!(mine[0].body, encoded, "the committed encoding, from memory");
        // The other handle has nothing in memory: it reads, inflates and checks the row.
        let theirs = second
            .claim("B", 10, Duration::from_secs(30))
            .await
            .expect("claim");
        assert_eq!(theirs.len(), 1);
        assert_eq!(theirs[0].id, read);
        assert_eq!(theirs[0].body, encoded, "the same bytes, from the file");
        assert!(second.mark_delivered(read).await.expect("deliver"));
        first.mark_delivered_later(kept);
        assert_eq!(
            first.outbox_stats().await.expect("stats").pending_rows,
            0,
            "the delete not waited for is done before the next call"
        );
    });
}

/// Every column of `api_requests` (the view from schema version 7 on), in time order.
type ApiRowOut = (
    Option<i64>,
    Option<i64>,
    Option<String>,
    String,
    Option<String>,
    Option<f64>,
    [Option<i64>; 4],
    Option<f64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    [Option<i64>; 2],
);

fn api_rows(conn: &Connection) -> Vec<ApiRowOut> {
    conn.prepare(
        "SELECT time_ns, session, prompt_id, project, model, cost_usd, input_tokens,
                output_tokens, cache_read_tokens, cache_creation_tokens, duration_ms,
                request_id, query_source, resource_id, cache_creation_5m_tokens,
                cache_creation_1h_tokens
         FROM api_requests ORDER BY time_ns",
    )
    .expect("prepare")
    .query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            [r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?],
            r.get(10)?,
            r.get(11)?,
            r.get(12)?,
            r.get(13)?,
            [r.get(14)?, r.get(15)?],
        ))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

#[test]
fn a_relayed_request_is_stored_once_and_reads_back_whole() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    // As claude 2.1.332 sends it: a request id, the cache split.
    let mut keyed = fixtures::api_request("s1", T0 + 7, "claude-opus-4-8", usage(2));
    keyed.attributes.extend([
        fixtures::kv("request_id", "req_011CAbc"),
        fixtures::kv_int("cache_creation_5m_tokens", 40),
        fixtures::kv_int("cache_creation_1h_tokens", 60),
    ]);
    // A request id but no cache-read field, and no session.
    let mut sparse = fixtures::api_request("s2", T0 + 9, "claude-haiku-4-5", usage(1));
    sparse.attributes.retain(|kv| {
        !matches!(
            kv.key.as_str(),
            "cache_read_tokens" | "session.id" | "prompt.id"
        )
    });
    sparse
        .attributes
        .push(fixtures::kv("request_id", "req_011CDef"));
    // As older releases send it: no request id.
    let unkeyed = fixtures::api_request("s1", T0 + 8, "claude-opus-4-8", usage(3));
    store
        .append_blocking(fixtures::logs(
            fixtures::resource(Some("alpha")),
            vec![keyed, unkeyed, sparse],
        ))
        .expect("append");
    drop(store);
    let conn = raw(&path);
    let s1: i64 = conn
        .query_row("SELECT id FROM sessions WHERE session_id = 's1'", [], |r| {
            r.get(0)
        })
        .expect("session row");
    let resource: i64 = conn
        .query_row("SELECT min(id) FROM resources", [], |r| r.get(0))
        .expect("resource row");
    let row =
        |t: u64, session, prompt: Option<&str>, model: &str, cost, tok, id: Option<&str>, split| {
            (
                Some(t as i64),
                session,
                prompt.map(str::to_owned),
                "alpha".to_owned(),
                Some(model.to_owned()),
                Some(cost),
                tok,
                Some(1500.0),
                id.map(str::to_owned),
                Some("main".to_owned()),
                Some(resource),
                split,
            )
        };
    assert_eq!(
        api_rows(&conn),
        vec![
            row(
                T0 + 7,
                Some(s1),
                Some("p-1"),
                "claude-opus-4-8",
                usage(2).cost_usd,
                [Some(20), Some(200), Some(2000), Some(100)],
                Some("req_011CAbc"),
                [Some(40), Some(60)]
            ),
            row(
                T0 + 8,
                Some(s1),
                Some("p-1"),
                "claude-opus-4-8",
                usage(3).cost_usd,
                [Some(30), Some(300), Some(3000), Some(150)],
                None,
                [None, None]
            ),
            row(
                T0 + 9,
                None,
                None,
                "claude-haiku-4-5",
                usage(1).cost_usd,
                [Some(10), Some(100), None, Some(50)],
                Some("req_011CDef"),
                [None, None]
            ),
        ]
    );
    // Stored once: the keyed events are their ledger rows, only the other one is a row of its own.
    assert_eq!(count(&conn, "SELECT count(*) FROM api_requests_unkeyed"), 1);
    assert_eq!(count(&conn, "SELECT count(*) FROM requests"), 2);
}

#[test]
fn a_transcript_copy_merged_later_keeps_the_events_fields() {
    let (_dir, path) = temp_db();
    let store = Store::open(&path, big_bounds()).expect("open");
    let mut keyed = fixtures::api_request("s1", T0, "claude-opus-4-8", usage(1));
    keyed.attributes.push(fixtures::kv("request_id", "req_1"));
    store
        .append_blocking(fixtures::logs(
            fixtures::resource(Some("alpha")),
            vec![keyed],
        ))
        .expect("append");
    drop(store);
    let mut conn = raw(&path);
    let before = api_rows(&conn);
    let tx = conn.transaction().expect("tx");
    let mut labels = ledger::Labels::default();
    let mut l = ledger::LedgerTx::new(&tx, &mut labels);
    let change = l
        .apply(&ledger::Record {
            key: "req_1".into(),
            time_ns: T0 as i64,
            session: "s1".into(),
            model: "claude-opus-4-8".into(),
            project: "alpha".into(),
            branch: Some("main".into()),
            tokens: ledger::Tokens {
                input: 10,
                output: 100,
                cache_read: 1000,
                cache_creation: 50,
                ..Default::default()
            },
            cost_usd: None,
            source: ledger::Source::Transcript,
        })
        .expect("apply");
    l.finish().expect("finish");
    tx.commit().expect("commit");
    assert_eq!(change, ledger::Change::Merged);
    assert_eq!(api_rows(&conn), before);
    assert_eq!(
        count(&conn, "SELECT sources FROM requests WHERE key = 'req_1'"),
        3
    );
}

#[test]
fn a_group_waits_only_for_as_many_appends_as_the_recent_groups_gathered() {
    let mut recent = RecentGroups::default();
    assert_eq!(recent.usual(), 0, "the first group never waits");
    for _ in 0..RECENT_GROUPS {
        recent.push(1);
    }
    assert_eq!(recent.usual(), 1, "one sender at a time: no group waits");
    recent.push(4);
    assert_eq!(recent.usual(), 4);
    for _ in 0..RECENT_GROUPS {
        recent.push(2);
    }
    assert_eq!(
        recent.usual(),
        2,
        "groups older than the window stop counting"
    );
}
