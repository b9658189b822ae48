//! Launch delay of the budget check: `claude-telemetry -p x` (a stand-in claude that exits at
//! once, local-only) over a store holding a month of heavy use, with no budget vs daily +
//! weekly + monthly budgets (three rollup scans), alternating runs, medians. Prints figures;
//! asserts nothing (run: `cargo bench --bench budget`; `BUDGET_BENCH_RUNS` sets the runs).
//!
//! The month: 31 days x 28 sessions x 14 turns, each turn one metrics request with cost and
//! token points (3 models, 12 projects), written through `Store::append` as the relay does.
#![allow(dead_code)]
// The bench reaches the modules by path because the crate has no library target (as
// benches/store.rs does).
#![cfg_attr(test, allow(unused_imports, clippy::duplicate_mod))]

#[path = "../src/definitions.rs"]
mod definitions;
#[path = "../src/store/fixtures.rs"]
mod fixtures;
#[path = "../src/otlp/mod.rs"]
mod otlp;
#[path = "../src/store/mod.rs"]
mod store;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fixtures::Usage;
use store::{Store, StoreBounds};

const MODELS: [&str; 3] = ["claude-opus-4-8", "claude-sonnet-4-6", "claude-haiku-4-5"];
const PROJECTS: [&str; 12] = [
    "api", "web", "infra", "mobile", "data", "ml", "docs", "billing", "auth", "search", "cli",
    "sdk",
];

fn seed(db: &Path) -> usize {
    let store = Store::open(db, StoreBounds::default()).expect("open store");
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let day_ns = 86_400_000_000_000u64;
    let mut requests = 0;
    for day in 0..31u64 {
        for s in 0..28u64 {
            let session = format!("bench-{day}-{s}");
            let project = PROJECTS[(s % 12) as usize];
            let start = now_ns - (30 - day) * day_ns - day_ns / 2 + s * 600_000_000_000;
            for turn in 0..14u64 {
                let t = (start + turn * 60_000_000_000).min(now_ns);
                let model = MODELS[((s + turn) % 3) as usize];
                let u = Usage {
                    input: 1200,
                    output: 800,
                    cache_read: 30_000,
                    cache_creation: 2000,
                    cost_usd: 0.05,
                };
                store
                    .append_blocking(fixtures::metrics(
                        fixtures::resource(Some(project)),
                        fixtures::usage_points(&session, t, model, u),
                    ))
                    .expect("append");
                requests += 1;
            }
        }
    }
    store.close_blocking().expect("close");
    requests
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("BUDGET_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let requests = seed(&data.join("store.db"));
    let rows: i64 = rusqlite::Connection::open(data.join("store.db"))
        .and_then(|c| c.query_row("SELECT count(*) FROM usage_hourly", [], |r| r.get(0)))
        .expect("count rows");
    let claude = dir.path().join("claude");
    std::fs::write(
        &claude,
        "#!/bin/sh\n[ \"$1\" = --version ] && echo 0.0.0\nexit 0\n",
    )
    .expect("write claude");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let launch = |budgets: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_claude-telemetry"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("CLAUDE_TELEMETRY_CLAUDE__PATH", &claude)
            .env("CLAUDE_TELEMETRY_DATA_DIR", &data)
            .env("CLAUDE_TELEMETRY_CONFIG_DIR", dir.path().join("config"))
            .env("CLAUDE_TELEMETRY_CACHE_DIR", dir.path().join("cache"))
            .env("CLAUDE_TELEMETRY_POLICY_FILE", dir.path().join("no-policy"))
            .env("CLAUDE_TELEMETRY_UPSTREAM__ENDPOINT", "")
            .current_dir(dir.path())
            .args(["-p", "x"]);
        if budgets {
            cmd.env("CLAUDE_TELEMETRY_BUDGET__DAILY", "1")
                .env("CLAUDE_TELEMETRY_BUDGET__WEEKLY", "5")
                .env("CLAUDE_TELEMETRY_BUDGET__MONTHLY", "20");
        }
        let started = Instant::now();
        let out = cmd.output().expect("run the launcher");
        let took = started.elapsed();
        assert!(out.status.success(), "{out:?}");
        (took, String::from_utf8_lossy(&out.stderr).to_string())
    };
    // Warm-up: the grammar learner meets the stand-in once; the file cache is warm.
    let (_, stderr) = launch(true);
    assert!(stderr.contains("over budget"), "{stderr}");
    std::thread::sleep(Duration::from_secs(2));
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        without.push(launch(false).0);
        with.push(launch(true).0);
    }
    let (w, wo) = (median(with), median(without));
    println!(
        "budget check at launch: store of {requests} metric requests over 31 days \
         ({rows} usage_hourly rows); {runs} alternating runs, medians: without budgets \
         {:.1} ms, with daily+weekly+monthly {:.1} ms (+{:.1} ms, ratio {:.3})",
        wo.as_secs_f64() * 1e3,
        w.as_secs_f64() * 1e3,
        (w.as_secs_f64() - wo.as_secs_f64()) * 1e3,
        w.as_secs_f64() / wo.as_secs_f64()
    );
}
