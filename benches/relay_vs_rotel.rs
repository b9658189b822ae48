//! The relay against rotel-agent as an OTLP receiver, side by side in one run (the machine is
//! noisy, so only ratios in one run mean anything). Prints figures; asserts nothing.
//!
//!   source ~/.cache/claude-telemetry-tests/env.sh && cargo bench --bench relay_vs_rotel
//!   RELAY_BENCH_REQUESTS=2000 RELAY_BENCH_ROUNDS=5 cargo bench --bench relay_vs_rotel
//!   RELAY_BENCH_BASELINE=/path/to/older/claude-telemetry cargo bench --bench relay_vs_rotel
//!
//! Each round starts one peer fresh, sends the same load to its OTLP/gRPC port on 127.0.0.1
//! and stops it: the relay is the real launcher holding a stand-in claude session open, with
//! an upstream (a rotel-agent with the blackhole exporter, the sink, not measured); the peer
//! rotel-agent (`$CLAUDE_TELEMETRY_TEST_ROTEL`) does the relay's job, receiving and exporting
//! over OTLP/gRPC (uncompressed, as the relay sends) to the same sink. A rotel-agent that
//! exports to its own blackhole (receives and drops) is measured too, for reference only.
//! Rounds alternate relay, rotel, rotel→blackhole.
//! Measured per round: items/s (wall time of the whole load, acknowledged by the peer) and the
//! peer process's CPU time (user + system from /proc, all threads, including 2 s after the
//! last acknowledgement for work done behind it) per 1,000 items.
//! The load: `REQUESTS` log export requests of 100 records shaped like claude's
//! `api_request` events, from 4 concurrent connections; bounded to 120 s per round.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use support::{FakeAnthropic, Sandbox, wait_until};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");
const RECORDS_PER_REQUEST: usize = 100;
const CONNECTIONS: usize = 4;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// CPU seconds in user and in system mode (every thread) a process has used.
fn cpu_split(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) / hz, ticks(12) / hz)
}

fn s(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// One request of `RECORDS_PER_REQUEST` records shaped like claude's `api_request` events.
fn request(n: usize) -> ExportLogsServiceRequest {
    let records = (0..RECORDS_PER_REQUEST)
        .map(|i| LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000 + (n * RECORDS_PER_REQUEST + i) as u64,
            observed_time_unix_nano: 1_700_000_000_000_000_000,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(
                    "claude_code.api_request".into(),
                )),
            }),
            attributes: vec![
                s("event.name", "api_request"),
                s("event.timestamp", "2026-12-07T10:00:00.000Z"),
                s("event.sequence", &(n * RECORDS_PER_REQUEST + i).to_string()),
                s("session.id", "2b9d7c1e-4f4a-4a57-9d39-0e1f0c7d1a11"),
                s("terminal.type", "tmux"),
                s("model", "claude-sonnet-4-6"),
                s("input_tokens", "1234"),
                s("output_tokens", "567"),
                s("cache_read_tokens", "8910"),
                s("cache_creation_tokens", "0"),
                s("cost_usd", "0.0123"),
                s("duration_ms", "2345"),
                s("request_id", &format!("req_{n}_{i}")),
            ],
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "claude-code"),
                    s("service.version", "2.1.197"),
                    s("os.type", "linux"),
                    s("host.arch", "amd64"),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "com.anthropic.claude_code.events".into(),
                    version: "2.1.197".into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends `requests` export requests over `CONNECTIONS` connections; the wall time, or None
/// when the round ran out of time.
fn load(grpc: SocketAddr, requests: usize) -> Option<Duration> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let prepared: Vec<ExportLogsServiceRequest> = (0..requests).map(request).collect();
        let mut per_connection: Vec<Vec<ExportLogsServiceRequest>> =
            (0..CONNECTIONS).map(|_| Vec::new()).collect();
        for (i, r) in prepared.into_iter().enumerate() {
            per_connection[i % CONNECTIONS].push(r);
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for batch in per_connection {
            tasks.push(tokio::spawn(async move {
                let mut client = LogsServiceClient::connect(format!("http://{grpc}"))
                    .await
                    .expect("connect to the peer")
                    .max_decoding_message_size(64 * 1024 * 1024);
                for r in batch {
                    client.export(r).await.expect("export acknowledged");
                }
            }));
        }
        let all = async {
            for t in tasks {
                t.await.expect("load task");
            }
        };
        tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .ok()
            .map(|_| started.elapsed())
    })
}

/// rotel-agent receiving on a free port, exporting over OTLP/gRPC to `upstream`
/// (`http://127.0.0.1:port`), or to its blackhole when there is none.
fn start_rotel(dir: &Path, upstream: Option<&str>) -> (Child, SocketAddr) {
    let bin = support::rotel_bin();
    let exporter: Vec<&str> = match upstream {
        Some(endpoint) => vec![
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            endpoint,
            "--otlp-exporter-protocol",
            "grpc",
            "--otlp-exporter-compression",
            "none",
        ],
        None => vec!["--exporter", "blackhole"],
    };
    for _ in 0..3 {
        let (grpc, http) = (free_port(), free_port());
        let mut child = Command::new(&bin)
            .arg("start")
            .args(["--otlp-grpc-endpoint", &grpc.to_string()])
            .args(["--otlp-http-endpoint", &http.to_string()])
            .args(&exporter)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rotel-agent");
        if wait_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_))) || TcpStream::connect(grpc).is_ok()
        }) && matches!(child.try_wait(), Ok(None))
        {
            return (child, grpc);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("rotel-agent did not start");
}

struct Round {
    items_per_s: f64,
    cpu_ms_per_1k: f64,
    /// The part of `cpu_ms_per_1k` spent in the kernel (syscalls, page faults).
    sys_ms_per_1k: f64,
}

fn measure(pid: u32, grpc: SocketAddr, requests: usize) -> Round {
    let (user0, sys0) = cpu_split(pid);
    let wall = load(grpc, requests).expect("round finished within 120 s");
    // Work after the acknowledgement (batching, store, export upstream) belongs to the round:
    // let it settle for both peers alike.
    std::thread::sleep(Duration::from_secs(2));
    let (user1, sys1) = cpu_split(pid);
    let cpu = (user1 - user0) + (sys1 - sys0);
    let items = (requests * RECORDS_PER_REQUEST) as f64;
    Round {
        items_per_s: items / wall.as_secs_f64(),
        cpu_ms_per_1k: cpu * 1000.0 / (items / 1000.0),
        sys_ms_per_1k: (sys1 - sys0) * 1000.0 / (items / 1000.0),
    }
}

fn relay_round(api: &FakeAnthropic, upstream: &str, launcher: &str, requests: usize) -> Round {
    let mut sandbox = Sandbox::for_launcher(api, upstream);
    let scratch = sandbox.scratch();
    let claude = scratch.join("holding-claude");
    std::fs::write(
        &claude,
        format!(
            "#!/bin/bash\n\
             for a in \"$@\"; do case \"$a\" in --help|--version) exit 0;; esac; done\n\
             echo \"$OTEL_EXPORTER_OTLP_ENDPOINT\" > {p}.tmp; mv {p}.tmp {p}\n\
             for _ in $(seq 3000); do [ -e {r} ] && exit 0; sleep 0.1; done\n",
            p = scratch.join("ports").display(),
            r = scratch.join("release").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    sandbox.set_env(
        "CLAUDE_TELEMETRY_CLAUDE__PATH",
        claude.display().to_string(),
    );
    let mut launcher = sandbox
        .command(launcher)
        .args(["-p", "bench"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the launcher");
    let ports = scratch.join("ports");
    assert!(
        wait_until(Duration::from_secs(30), || ports.exists()),
        "stand-in claude did not start"
    );
    let endpoint = std::fs::read_to_string(&ports).unwrap();
    let grpc: SocketAddr = endpoint
        .trim()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let round = measure(launcher.id(), grpc, requests);
    std::fs::write(scratch.join("release"), "").unwrap();
    let _ = launcher.wait();
    round
}

fn rotel_round(upstream: Option<&str>, requests: usize) -> Round {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, grpc) = start_rotel(dir.path(), upstream);
    let round = measure(child.id(), grpc, requests);
    let _ = child.kill();
    let _ = child.wait();
    round
}

fn main() {
    let requests = env_usize("RELAY_BENCH_REQUESTS", 1000);
    let rounds = env_usize("RELAY_BENCH_ROUNDS", 3).max(1);
    let api = FakeAnthropic::start();
    let upstream_dir = tempfile::tempdir().unwrap();
    let (mut upstream_rotel, upstream_grpc) = start_rotel(upstream_dir.path(), None);
    let upstream = format!("http://{upstream_grpc}");
    println!(
        "relay vs rotel-agent: {rounds} alternating rounds of {requests} requests × \
         {RECORDS_PER_REQUEST} log records over {CONNECTIONS} gRPC connections"
    );
    // Another build of the launcher (say, the last commit's) as a third peer, for before/after
    // figures from the same run.
    let baseline_bin = std::env::var("RELAY_BENCH_BASELINE").ok();
    let (mut relay, mut rotel, mut blackhole, mut baseline) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let a = relay_round(&api, &upstream, LAUNCHER, requests);
        let b = rotel_round(Some(&upstream), requests);
        let h = rotel_round(None, requests);
        let mut line = format!(
            "round {round}: relay {:>9.0} items/s {:>7.2} CPU ms/1k ({:.2} sys) | rotel {:>9.0} items/s \
             {:>7.2} CPU ms/1k ({:.2} sys) | rotel→blackhole {:>9.0} items/s {:>7.2} CPU ms/1k",
            a.items_per_s,
            a.cpu_ms_per_1k,
            a.sys_ms_per_1k,
            b.items_per_s,
            b.cpu_ms_per_1k,
            b.sys_ms_per_1k,
            h.items_per_s,
            h.cpu_ms_per_1k
        );
        if let Some(bin) = &baseline_bin {
            let c = relay_round(&api, &upstream, bin, requests);
            line.push_str(&format!(
                " | baseline {:>9.0} items/s {:>7.2} CPU ms/1k ({:.2} sys)",
                c.items_per_s, c.cpu_ms_per_1k, c.sys_ms_per_1k
            ));
            baseline.push(c);
        }
        println!("{line}");
        relay.push(a);
        rotel.push(b);
        blackhole.push(h);
    }
    let med = |v: &[Round], f: fn(&Round) -> f64| median(v.iter().map(f).collect());
    let (ra, rc) = (
        med(&relay, |r| r.items_per_s),
        med(&relay, |r| r.cpu_ms_per_1k),
    );
    let (oa, oc) = (
        med(&rotel, |r| r.items_per_s),
        med(&rotel, |r| r.cpu_ms_per_1k),
    );
    println!(
        "median: relay {ra:.0} items/s, {rc:.2} CPU ms per 1k items ({:.2} in the kernel)",
        med(&relay, |r| r.sys_ms_per_1k)
    );
    println!(
        "median: rotel {oa:.0} items/s, {oc:.2} CPU ms per 1k items ({:.2} in the kernel)",
        med(&rotel, |r| r.sys_ms_per_1k)
    );
    println!(
        "median: rotel→blackhole (reference: forwards nothing) {:.0} items/s, {:.2} CPU ms per 1k items",
        med(&blackhole, |r| r.items_per_s),
        med(&blackhole, |r| r.cpu_ms_per_1k)
    );
    if !baseline.is_empty() {
        let (ba, bc) = (
            med(&baseline, |r| r.items_per_s),
            med(&baseline, |r| r.cpu_ms_per_1k),
        );
        println!("median: baseline relay {ba:.0} items/s, {bc:.2} CPU ms per 1k items");
        println!(
            "relay/baseline: throughput {:.2}×, CPU per item {:.2}×",
            ra / ba,
            rc / bc
        );
    }
    println!(
        "relay/rotel: throughput {:.2}× (target ≥ 1.0), CPU per item {:.2}× (target ≤ 1.0)",
        ra / oa,
        rc / oc
    );
    let _ = upstream_rotel.kill();
    let _ = upstream_rotel.wait();
}
