//! Store benchmark: a synthetic year of heavy Claude Code use through `Store::append`, then
//! the report queries over it. Prints figures; asserts nothing (run: `cargo bench --bench store`).
//!
//! Shape of the year: 365 days × 28 sessions × 14 turns. Each turn is one logs request with
//! 7 events (user_prompt, 2 api_request, 2 tool_decision, 2 tool_result) and one metrics
//! request with the matching delta points (cost, 4 token types, active time, lines), as
//! claude's 5 s log / 60 s metric flushes batch them. Requests are generated in chunks of
//! 8,000 (not timed), appended from 4 threads sharing one handle (several sessions through
//! one relay), then a forwarder claims and deletes them, so the file ends at its steady-state size.
//! `STORE_BENCH_EVENTS` scales the year (default 1,000,000 events).
#![allow(dead_code)]
// The bench reaches the modules by path because the crate has no library target. Under
// `cargo clippy --all-targets` it is compiled with `--cfg test` but without the test harness,
// which pulls in the modules' test code with nothing using its imports.
#![cfg_attr(test, allow(unused_imports, clippy::duplicate_mod))]

#[path = "../src/definitions.rs"]
mod definitions;
#[path = "../src/store/fixtures.rs"]
mod fixtures;
#[path = "../src/history/mod.rs"]
mod history;
#[path = "../src/otlp/mod.rs"]
mod otlp;
#[path = "../src/report/mod.rs"]
mod report;
#[path = "../src/store/mod.rs"]
mod store;

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use fixtures::{Usage, kv, point, sum};
use store::{Store, StoreBounds};

const EVENTS_PER_TURN: u64 = 7;
const TURNS_PER_SESSION: u64 = 14;
const SESSIONS_PER_DAY: u64 = 28;
/// 2026-01-01T08:00:00Z
const YEAR_START_NS: u64 = 1_767_254_400_000_000_000;
/// Requests generated before each timed ingest round (generation is not timed).
const CHUNK_REQUESTS: usize = 8_000;
/// Concurrent producers, like several claude sessions exporting through one relay.
const PRODUCERS: usize = 4;
const MIN_NS: u64 = 60_000_000_000;
const DAY_NS: u64 = 86_400_000_000_000;

const MODELS: [&str; 3] = ["claude-opus-4-8", "claude-sonnet-4-6", "claude-haiku-4-5"];
const PROJECTS: [&str; 12] = [
    "api", "web", "infra", "mobile", "data", "ml", "docs", "billing", "auth", "search", "cli",
    "sdk",
];

/// xorshift64*: deterministic figures without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Parser)]
struct ReportCli {
    #[command(flatten)]
    args: report::ReportArgs,
}

/// The damage checks on the year's file: the full cost of `quick_check` and `integrity_check`,
/// and what `open_checked` (bounded by its budget) costs at a launch.
fn health_figures(db: &Path) -> String {
    let size = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();
    let quick = store::health::quick_check(db, Duration::from_secs(3600));
    let quick_time = started.elapsed();
    let started = Instant::now();
    let full = store::health::integrity_check(db);
    let full_time = started.elapsed();
    let started = Instant::now();
    let (opened, notices) = Store::open_checked(db, StoreBounds::default()).expect("open");
    let open_time = started.elapsed();
    opened.close_blocking().expect("close");
    let started = Instant::now();
    let plain = Store::open(db, StoreBounds::default()).expect("open");
    let plain_time = started.elapsed();
    plain.close_blocking().expect("close");
    format!(
        "damage checks on the {:.1} MB file: quick_check {:.0} ms ({quick:?}), integrity_check \
         {:.0} ms ({full:?}); open_checked at a launch {:.1} ms (budget {} ms, {} notice(s)) \
         vs open without the check {:.1} ms",
        size as f64 / 1e6,
        quick_time.as_secs_f64() * 1e3,
        full_time.as_secs_f64() * 1e3,
        open_time.as_secs_f64() * 1e3,
        store::OPEN_CHECK_BUDGET.as_millis(),
        notices.len(),
        plain_time.as_secs_f64() * 1e3
    )
}

fn main() {
    let target_events: u64 = std::env::var("STORE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let sessions = target_events.div_ceil(EVENTS_PER_TURN * TURNS_PER_SESSION);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    let store = Store::open(&db, StoreBounds::default()).expect("open store");

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut events, mut points, mut outbox_bytes, mut outbox_stored) = (0u64, 0u64, 0u64, 0u64);
    let mut requests = 0usize;
    let mut append_time = Duration::ZERO;
    let mut append_cpu = Duration::ZERO;
    let mut writer_cpu = Duration::ZERO;
    let mut deliver_time = Duration::ZERO;
    let mut chunk = Vec::with_capacity(CHUNK_REQUESTS + 64);
    let wall = Instant::now();
    for s in 0..sessions {
        let day = s / SESSIONS_PER_DAY;
        let start = YEAR_START_NS + day % 365 * DAY_NS + (s % SESSIONS_PER_DAY) * 20 * MIN_NS;
        let session = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            s,
            rng.next() & 0xffff_ffff_ffff
        );
        let project = PROJECTS[rng.below(PROJECTS.len() as u64) as usize];
        let model = MODELS[[0, 0, 0, 0, 0, 0, 0, 1, 1, 2][rng.below(10) as usize]];
        let resource = fixtures::resource(Some(project));
        for turn in 0..TURNS_PER_SESSION {
            let t = start + turn * MIN_NS;
            let calls: Vec<Usage> = (0..2)
                .map(|_| Usage {
                    input: 200 + rng.below(5_000),
                    output: 50 + rng.below(3_000),
                    cache_read: rng.below(80_000),
                    cache_creation: rng.below(8_000),
                    cost_usd: (1 + rng.below(90_000)) as f64 / 1e6,
                })
                .collect();
            let mut records = vec![fixtures::event(
                "user_prompt",
                &session,
                t,
                vec![kv("prompt_length", "120")],
            )];
            for (i, c) in calls.iter().enumerate() {
                records.push(fixtures::api_request(
                    &session,
                    t + i as u64 * 1_000_000_000,
                    model,
                    *c,
                ));
                records.push(fixtures::event(
                    "tool_decision",
                    &session,
                    t + 2_000_000_000,
                    vec![
                        kv("tool_name", "Edit"),
                        kv(
                            "decision",
                            if rng.below(20) == 0 {
                                "reject"
                            } else {
                                "accept"
                            },
                        ),
                        kv("source", "config"),
                    ],
                ));
                records.push(fixtures::event(
                    "tool_result",
                    &session,
                    t + 3_000_000_000,
                    vec![
                        kv("tool_name", "Edit"),
                        kv("success", "true"),
                        kv("duration_ms", "35"),
                    ],
                ));
            }
            let total = calls.iter().fold(
                Usage {
                    input: 0,
                    output: 0,
                    cache_read: 0,
                    cache_creation: 0,
                    cost_usd: 0.0,
                },
                |a, c| Usage {
                    input: a.input + c.input,
                    output: a.output + c.output,
                    cache_read: a.cache_read + c.cache_read,
                    cache_creation: a.cache_creation + c.cache_creation,
                    cost_usd: a.cost_usd + c.cost_usd,
                },
            );
            let tm = t + MIN_NS - 1;
            let mut metrics = fixtures::usage_points(&session, tm, model, total);
            let mfull = format!("{model}[1m]");
            metrics.push(sum(
                "claude_code.active_time.total",
                vec![
                    point(&session, tm, 20.0, vec![kv("type", "user")]),
                    point(&session, tm, 35.0, vec![kv("type", "cli")]),
                ],
            ));
            metrics.push(sum(
                "claude_code.lines_of_code.count",
                vec![
                    point(
                        &session,
                        tm,
                        rng.below(80) as f64,
                        vec![kv("type", "added"), kv("model", &mfull)],
                    ),
                    point(
                        &session,
                        tm,
                        rng.below(30) as f64,
                        vec![kv("type", "removed"), kv("model", &mfull)],
                    ),
                ],
            ));
            if turn == 0 {
                metrics.push(sum(
                    "claude_code.session.count",
                    vec![point(&session, tm, 1.0, vec![kv("start_type", "fresh")])],
                ));
            }
            if turn == TURNS_PER_SESSION - 1 && rng.below(4) == 0 {
                metrics.push(sum(
                    "claude_code.commit.count",
                    vec![point(&session, tm, 1.0, vec![])],
                ));
            }
            let logs = fixtures::logs(resource.clone(), records);
            let metrics = fixtures::metrics(resource.clone(), metrics);
            events += logs.item_count() as u64;
            points += metrics.item_count() as u64;
            outbox_bytes += (logs.encode_to_vec().len() + metrics.encode_to_vec().len()) as u64;
            chunk.push(logs);
            chunk.push(metrics);
            requests += 2;
        }
        if chunk.len() >= CHUNK_REQUESTS || s + 1 == sessions {
            let (started, cpu, wcpu) = (Instant::now(), cpu_time(), thread_cpu("store-writer"));
            ingest(&store, std::mem::take(&mut chunk));
            append_time += started.elapsed();
            append_cpu += cpu_time().saturating_sub(cpu);
            writer_cpu += thread_cpu("store-writer").saturating_sub(wcpu);
            outbox_stored += store.outbox_stats_blocking().expect("stats").pending_bytes;
            let started = Instant::now();
            deliver_all(&store);
            deliver_time += started.elapsed();
        }
    }
    let wall = wall.elapsed();
    store.close_blocking().expect("close store");
    let health = health_figures(&db);

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cores, load average {} (other work competes for the same cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("{health}");
    println!(
        "store bench: {sessions} sessions, {requests} requests, {events} events, {points} metric points"
    );
    println!(
        "ingest: {:.2} s in append ({:.0} events/s, {:.0} events+points/s, {:.0} requests/s); wall incl. generation {:.1} s",
        append_time.as_secs_f64(),
        events as f64 / append_time.as_secs_f64(),
        (events + points) as f64 / append_time.as_secs_f64(),
        requests as f64 / append_time.as_secs_f64(),
        wall.as_secs_f64()
    );
    println!(
        "ingest CPU time (all threads, the load-independent figure on a shared machine): {:.2} s \
         ({:.0} events/CPU-s, {:.0} events+points/CPU-s)",
        append_cpu.as_secs_f64(),
        events as f64 / append_cpu.as_secs_f64(),
        (events + points) as f64 / append_cpu.as_secs_f64()
    );
    println!(
        "of which the single writer thread: {:.2} s CPU = {:.1} us per event, a ceiling of \
         {:.0} events/s when it has a core to itself",
        writer_cpu.as_secs_f64(),
        writer_cpu.as_secs_f64() * 1e6 / events as f64,
        events as f64 / writer_cpu.as_secs_f64()
    );
    println!(
        "delivery (claim + delete, batches of 1000): {:.2} s ({:.0} requests/s)",
        deliver_time.as_secs_f64(),
        requests as f64 / deliver_time.as_secs_f64()
    );
    checkpoint(&db);
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    println!(
        "store size after delivery: {:.1} MiB ({:.1} MiB per million events incl. their metric points); \
         outbox while undelivered: {:.1} MiB stored per million events ({:.1} MiB of protobuf)",
        size as f64 / 1048576.0,
        size as f64 / 1048576.0 / (events as f64 / 1e6),
        outbox_stored as f64 / 1048576.0 / (events as f64 / 1e6),
        outbox_bytes as f64 / 1048576.0 / (events as f64 / 1e6)
    );
    for argv in [
        vec![],
        vec!["--by", "day"],
        vec!["--by", "week"],
        vec!["--by", "month"],
        vec!["--by", "model"],
        vec!["--by", "project"],
        vec!["--by", "session"],
        vec!["--by", "day", "--json"],
        vec![
            "--since",
            "2026-06-01",
            "--until",
            "2026-06-30",
            "--by",
            "day",
        ],
    ] {
        time_report(&db, &argv);
    }
}

/// Appends `chunk` from [`PRODUCERS`] threads sharing one store handle.
fn ingest(store: &Store, chunk: Vec<otlp::ExportRequest>) {
    let mut parts: Vec<Vec<otlp::ExportRequest>> = (0..PRODUCERS).map(|_| Vec::new()).collect();
    for (i, r) in chunk.into_iter().enumerate() {
        parts[i % PRODUCERS].push(r);
    }
    std::thread::scope(|scope| {
        for part in parts {
            let store = store.clone();
            scope.spawn(move || {
                for r in part {
                    store.append_blocking(r).expect("append");
                }
            });
        }
    });
}

/// CPU time of this process's threads named `name` (Linux `/proc`; zero elsewhere), in
/// clock ticks converted to seconds. Tells the serial writer's share from the parallel rest.
fn thread_cpu(name: &str) -> Duration {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut total = 0.0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        total += (get(11) + get(12)) / ticks;
    }
    Duration::from_secs_f64(total)
}

/// CPU time of this process, all threads (user + system).
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn deliver_all(store: &Store) {
    loop {
        let batch = store
            .claim_pending_blocking("bench", 1000, Duration::from_secs(60))
            .expect("claim");
        if batch.is_empty() {
            return;
        }
        for (id, _) in batch {
            store.mark_delivered_blocking(id).expect("deliver");
        }
    }
}

fn checkpoint(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}

/// Runs the report 5 times (fresh process state each time: it opens its own connection)
/// and prints the first (cold cache) and median times.
fn time_report(db: &Path, argv: &[&str]) {
    let cli = ReportCli::try_parse_from(std::iter::once("report").chain(argv.iter().copied()))
        .expect("report arguments");
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let mut out = Vec::new();
        let started = Instant::now();
        report::run(&cli.args, db, &mut out).expect("report");
        times.push(started.elapsed());
        bytes = out.len();
    }
    let first = times[0];
    times.sort();
    println!(
        "report {:<48} first {:>7.1} ms, median {:>7.1} ms ({} bytes of output)",
        if argv.is_empty() {
            "(summary)".to_owned()
        } else {
            argv.join(" ")
        },
        first.as_secs_f64() * 1e3,
        times[2].as_secs_f64() * 1e3,
        bytes
    );
}
