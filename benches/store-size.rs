//! Store size benchmark: a million API requests as Claude Code 2.1.332 sends them (each an
//! `api_request` event plus its `cost.usage` and four `token.usage` points) through the store
//! writer (`Store::append`, what the relay calls after policy), delivered as they come, then
//! the file's size on disk and bytes per request. Prints figures, asserts nothing; run it with
//! `bash benches/store-size.sh`, which also times `claude-telemetry report` on the file.
//!
//! Shape: sessions of 40 requests, one every 20 s, 140 sessions a day over as many days as the
//! count needs, 12 projects; the main model is opus (70 %) or sonnet, and one request in ten is
//! an auxiliary haiku call. Claude flushes logs every 5 s and metrics every 60 s; at one request
//! per 20 s that is one logs request per `api_request` and (`STORE_SIZE_METRIC_EVERY`, default
//! 1: the worst case, every request's points in its own interval) one metrics request per
//! request. `STORE_SIZE_REQUESTS` sets the count (default 1,000,000); `STORE_SIZE_DIR` keeps the
//! file there (else a temporary directory, removed at the end).
#![allow(dead_code)]
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

use fixtures::{kv, kv_f64, kv_int};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use store::{Store, StoreBounds};

const REQUESTS_PER_SESSION: u64 = 40;
const SESSIONS_PER_DAY: u64 = 140;
const REQUEST_GAP_NS: u64 = 20_000_000_000;
/// 2026-01-01T08:00:00Z
const START_NS: u64 = 1_767_254_400_000_000_000;
const DAY_NS: u64 = 86_400_000_000_000;
const CHUNK_REQUESTS: usize = 20_000;
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
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
    /// `req_011C…`: the shape of an Anthropic request id (base58 tail).
    fn request_id(&mut self) -> String {
        const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
        let tail: String = (0..18)
            .map(|_| B58[self.below(58) as usize] as char)
            .collect();
        format!("req_011C{tail}")
    }
}

fn kv_bool(key: &str, value: bool) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(value)),
        }),
        ..Default::default()
    }
}

/// The keys claude 2.1.332 puts on every point and record.
fn common(session: &str) -> Vec<KeyValue> {
    vec![
        kv("user.id", fixtures::USER_ID),
        kv("session.id", session),
        kv("terminal.type", "tmux"),
        kv("anthropic.provider", "firstParty"),
        kv_bool("anthropic.custom_base_url", false),
    ]
}

fn resource(project: &str) -> Vec<KeyValue> {
    vec![
        kv("service.name", "claude-code"),
        kv("service.version", "2.1.332"),
        kv("os.type", "linux"),
        kv("os.version", "6.12.48+deb13-amd64"),
        kv("host.arch", "amd64"),
        kv(store::PROJECT_ATTRIBUTE, project),
    ]
}

/// ISO-8601 UTC with milliseconds, as claude writes `event.timestamp`.
fn iso(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days (Howard Hinnant)
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
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ns / 1_000_000 % 1000
    )
}

struct Call {
    model: &'static str,
    query_source: &'static str,
    input: u64,
    output: u64,
    cache_read: u64,
    cache_5m: u64,
    cache_1h: u64,
    cost: f64,
}

fn call(rng: &mut Rng, main: &'static str) -> Call {
    let aux = rng.below(10) == 0;
    let (model, query_source) = if aux {
        ("claude-haiku-4-5", "generate_session_title")
    } else {
        (main, "repl_main_thread")
    };
    let c = Call {
        model,
        query_source,
        input: 1 + rng.below(400),
        output: 20 + rng.below(2_500),
        cache_read: rng.below(120_000),
        cache_5m: rng.below(6_000),
        cache_1h: if rng.below(4) == 0 {
            rng.below(3_000)
        } else {
            0
        },
        cost: 0.0,
    };
    let (i, o) = if model.contains("opus") {
        (5.0, 25.0)
    } else if model.contains("sonnet") {
        (3.0, 15.0)
    } else {
        (1.0, 5.0)
    };
    let cost = (c.input as f64 * i
        + c.output as f64 * o
        + c.cache_read as f64 * i * 0.1
        + c.cache_5m as f64 * i * 1.25
        + c.cache_1h as f64 * i * 2.0)
        / 1e6;
    Call { cost, ..c }
}

/// The `api_request` record claude 2.1.332 exports (content switches off).
fn api_request(
    session: &str,
    prompt: &str,
    seq: i64,
    t: u64,
    c: &Call,
    rng: &mut Rng,
) -> otlp::ExportRequest {
    let mut attrs = common(session);
    attrs.extend([
        kv("event.name", "api_request"),
        kv("event.timestamp", &iso(t)),
        kv_int("event.sequence", seq),
        kv("prompt.id", prompt),
        kv("model", c.model),
        kv_f64("cost_usd", c.cost),
        kv_int("cost_usd_micros", (c.cost * 1e6).round() as i64),
        kv_int("input_tokens", c.input as i64),
        kv_int("output_tokens", c.output as i64),
        kv_int("cache_read_tokens", c.cache_read as i64),
        kv_int("cache_creation_tokens", (c.cache_5m + c.cache_1h) as i64),
        kv_int("cache_creation_5m_tokens", c.cache_5m as i64),
        kv_int("cache_creation_1h_tokens", c.cache_1h as i64),
        kv_int("duration_ms", 2_000 + rng.below(30_000) as i64),
        kv_int("ttft_ms", 400 + rng.below(3_000) as i64),
        kv("request_id", &rng.request_id()),
        kv("speed", "standard"),
        kv("query_source", c.query_source),
        kv("effort", "high"),
    ]);
    let record = opentelemetry_proto::tonic::logs::v1::LogRecord {
        time_unix_nano: t,
        observed_time_unix_nano: t,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(
                "claude_code.api_request".to_owned(),
            )),
        }),
        attributes: attrs,
        ..Default::default()
    };
    fixtures::logs(resource_of(session), vec![record])
}

/// Project of a session: the generator stores it in the session id's first group.
fn resource_of(session: &str) -> Vec<KeyValue> {
    let i = usize::from_str_radix(&session[..8], 16).unwrap_or(0) % PROJECTS.len();
    resource(PROJECTS[i])
}

/// Cost and token points for the calls of one metric interval, summed per (model, source).
fn usage_metrics(session: &str, t: u64, calls: &[Call]) -> otlp::ExportRequest {
    let mut cost = Vec::new();
    let mut tokens = Vec::new();
    let mut keys: Vec<(&str, &str)> = calls.iter().map(|c| (c.model, c.query_source)).collect();
    keys.sort();
    keys.dedup();
    for (model, source) in keys {
        let of = |f: &dyn Fn(&Call) -> f64| -> f64 {
            calls
                .iter()
                .filter(|c| c.model == model && c.query_source == source)
                .map(f)
                .sum()
        };
        let attrs = |kind: Option<&str>| {
            let mut a = common(session);
            a.push(kv("model", model));
            a.push(kv("query_source", source));
            a.push(kv("effort", "high"));
            if let Some(k) = kind {
                a.push(kv("type", k));
            }
            a
        };
        let p =
            |v: f64, a: Vec<KeyValue>| opentelemetry_proto::tonic::metrics::v1::NumberDataPoint {
                attributes: a,
                start_time_unix_nano: t.saturating_sub(60_000_000_000),
                time_unix_nano: t,
                value: Some(
                    opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(v),
                ),
                ..Default::default()
            };
        cost.push(p(of(&|c| c.cost), attrs(None)));
        tokens.push(p(of(&|c| c.input as f64), attrs(Some("input"))));
        tokens.push(p(of(&|c| c.output as f64), attrs(Some("output"))));
        tokens.push(p(of(&|c| c.cache_read as f64), attrs(Some("cacheRead"))));
        tokens.push(p(
            of(&|c| (c.cache_5m + c.cache_1h) as f64),
            attrs(Some("cacheCreation")),
        ));
    }
    fixtures::metrics(
        resource_of(session),
        vec![
            fixtures::sum("claude_code.cost.usage", cost),
            fixtures::sum("claude_code.token.usage", tokens),
        ],
    )
}

fn main() {
    let requests: u64 = std::env::var("STORE_SIZE_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let metric_every: usize = std::env::var("STORE_SIZE_METRIC_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var_os("STORE_SIZE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("store dir");
    let db = dir.join("store.db");
    let _ = std::fs::remove_file(&db);
    let store = Store::open(&db, StoreBounds::default()).expect("open store");

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let sessions = requests.div_ceil(REQUESTS_PER_SESSION);
    let mut sent = 0u64;
    let mut otlp_requests = 0u64;
    let mut chunk = Vec::with_capacity(CHUNK_REQUESTS * 2);
    let mut append_time = Duration::ZERO;
    let wall = Instant::now();
    for s in 0..sessions {
        let day = s / SESSIONS_PER_DAY;
        let start = START_NS + day * DAY_NS + (s % SESSIONS_PER_DAY) * 5 * 60_000_000_000;
        let session = format!(
            "{:08x}-{}",
            (s * 7 + rng.below(12)) as u32,
            &rng.uuid()[9..]
        );
        let main = if rng.below(10) < 7 {
            "claude-opus-4-8"
        } else {
            "claude-sonnet-4-6"
        };
        let mut prompt = rng.uuid();
        let mut pending: Vec<Call> = Vec::new();
        for r in 0..REQUESTS_PER_SESSION {
            if sent == requests {
                break;
            }
            if r % 5 == 0 {
                prompt = rng.uuid();
            }
            let t = start + r * REQUEST_GAP_NS;
            let c = call(&mut rng, main);
            chunk.push(api_request(
                &session,
                &prompt,
                r as i64 * 3,
                t,
                &c,
                &mut rng,
            ));
            pending.push(c);
            if pending.len() == metric_every
                || r + 1 == REQUESTS_PER_SESSION
                || sent + 1 == requests
            {
                chunk.push(usage_metrics(&session, t + 1_000_000_000, &pending));
                pending.clear();
            }
            sent += 1;
        }
        if chunk.len() >= CHUNK_REQUESTS || sent == requests {
            otlp_requests += chunk.len() as u64;
            let started = Instant::now();
            ingest(&store, std::mem::take(&mut chunk));
            deliver_all(&store);
            append_time += started.elapsed();
        }
        if sent == requests {
            break;
        }
    }
    store.close_blocking().expect("close store");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    let (pages, free, page_size): (i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT page_count FROM pragma_page_count),
                    (SELECT freelist_count FROM pragma_freelist_count),
                    (SELECT page_size FROM pragma_page_size)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("pages");
    drop(conn);
    let size = disk_size(&db);
    println!(
        "store-size: {sent} API requests in {otlp_requests} OTLP requests (metrics every \
         {metric_every} request(s)), ingest + delivery {:.1} s (wall incl. generation {:.1} s)",
        append_time.as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
    println!(
        "store-size: file {:.1} MB on disk ({:.0} bytes per request); {} pages of {page_size} B, \
         {} free",
        size as f64 / 1e6,
        size as f64 / sent as f64,
        pages,
        free
    );
    println!("store-size: file {}", db.display());
    if std::env::var_os("STORE_SIZE_DIR").is_none() {
        drop(temp);
    }
}

/// The database file plus its WAL and shared-memory files, as `du` would count them.
fn disk_size(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| {
            let mut p = db.as_os_str().to_owned();
            p.push(s);
            std::fs::metadata(p).ok().map(|m| m.len())
        })
        .sum()
}

/// Appends `chunk` from two threads sharing one handle (sessions through one relay).
fn ingest(store: &Store, chunk: Vec<otlp::ExportRequest>) {
    let mut parts: Vec<Vec<otlp::ExportRequest>> = vec![Vec::new(), Vec::new()];
    for (i, r) in chunk.into_iter().enumerate() {
        parts[i % 2].push(r);
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

/// Claims and deletes everything, as the forwarder does when upstream accepts.
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
