//! The relay's receivers under hostile clients, through the real binary: half-sent large
//! bodies, slowloris and idle connections cannot grow the launcher's memory or hold its
//! connections, and valid requests keep succeeding while the attack runs.
//!
//! The timeouts are shortened through settings (`CLAUDE_TELEMETRY_RELAY__…`) so the test takes
//! seconds; the byte budget and connection cap are the defaults.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use support::{FakeAnthropic, OtlpSink, Sandbox, wait_until};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");
/// 7.5 MiB, under the default 8 MiB request limit.
const BIG_BODY: usize = 7 * 1024 * 1024 + 512 * 1024;
const BIG_CONNECTIONS: usize = 32;
const SLOWLORIS: usize = 50;
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(4);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A stand-in claude that tells the test where the relay listens, then keeps the session open
/// until the test lets it go.
fn holding_claude(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("holding-claude");
    let body = format!(
        "#!/bin/bash\n\
         for a in \"$@\"; do case \"$a\" in --help|--version) exit 0;; esac; done\n\
         echo \"$OTEL_EXPORTER_OTLP_ENDPOINT $CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT\" > {ports}.tmp\n\
         mv {ports}.tmp {ports}\n\
         for _ in $(seq 1200); do [ -e {release} ] && exit 0; sleep 0.1; done\n\
         exit 3\n",
        ports = dir.join("ports").display(),
        release = dir.join("release").display(),
    );
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn addr_of(endpoint: &str) -> SocketAddr {
    endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("relay endpoint {endpoint:?}: {e}"))
}

fn logs_request(text: &str) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(text.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Reads until the peer closes the connection (or an error); true when it closed before
/// `limit`.
fn closed_by_peer_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// One valid OTLP/HTTP request; retries what the relay sheds (503 + Retry-After), as OTLP
/// clients must. Returns the final status.
fn post_valid_http(addr: SocketAddr, text: &str) -> u16 {
    let body = logs_request(text).encode_to_vec();
    let deadline = Instant::now() + BODY_TIMEOUT * 3;
    loop {
        let status = (|| -> std::io::Result<(u16, u64)> {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(BODY_TIMEOUT * 2))?;
            write!(
                s,
                "POST /v1/logs HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-protobuf\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )?;
            s.write_all(&body)?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer)?;
            let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
            let code = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let retry_after = head
                .lines()
                .find_map(|l| l.strip_prefix("retry-after:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            Ok((code, retry_after))
        })();
        match status {
            Ok((503, retry_after)) if Instant::now() < deadline => {
                assert!(retry_after > 0, "503 without Retry-After");
                std::thread::sleep(Duration::from_secs(retry_after));
            }
            Ok((code, _)) => return code,
            Err(e) => panic!("valid OTLP/HTTP request failed: {e}"),
        }
    }
}

#[test]
fn half_sent_bodies_and_slowloris_neither_grow_memory_nor_hold_connections_and_valid_requests_succeed()
 {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut sandbox = Sandbox::for_launcher(&api, &sink.grpc_endpoint());
    let scratch = sandbox.scratch();
    let claude = holding_claude(&scratch);
    sandbox
        .set_env(
            "CLAUDE_TELEMETRY_CLAUDE__PATH",
            claude.display().to_string(),
        )
        // The valid requests are told apart by their free-text bodies, which the fail-closed
        // privacy rule would otherwise withhold.
        .set_env(
            "CLAUDE_TELEMETRY_PRIVACY__ALLOW_ATTRIBUTES",
            r#"["log.body"]"#,
        )
        .set_env(
            "CLAUDE_TELEMETRY_RELAY__HEADER_TIMEOUT_MS",
            HEADER_TIMEOUT.as_millis().to_string(),
        )
        .set_env(
            "CLAUDE_TELEMETRY_RELAY__BODY_TIMEOUT_MS",
            BODY_TIMEOUT.as_millis().to_string(),
        )
        .set_env(
            "CLAUDE_TELEMETRY_RELAY__IDLE_TIMEOUT_MS",
            IDLE_TIMEOUT.as_millis().to_string(),
        );
    let stderr_path = scratch.join("launcher.stderr");
    let mut launcher = sandbox
        .command(LAUNCHER)
        .args(["-p", "hold"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let pid = launcher.id();
    let ports_file = scratch.join("ports");
    assert!(
        wait_until(Duration::from_secs(30), || ports_file.exists()),
        "the stand-in claude never started"
    );
    let ports = std::fs::read_to_string(&ports_file).unwrap();
    let mut ports = ports.split_whitespace();
    let grpc = addr_of(ports.next().expect("gRPC endpoint"));
    let http = addr_of(ports.next().expect("HTTP endpoint"));
    let baseline = vm_hwm_kib(pid);

    let attack_over = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut attackers = Vec::new();

    // 32 connections each sending all but the last byte of a 7.5 MiB body, then waiting.
    for _ in 0..BIG_CONNECTIONS {
        attackers.push(std::thread::spawn(move || -> Option<Duration> {
            let t0 = Instant::now();
            let mut s = TcpStream::connect(http).ok()?;
            s.set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let head = format!(
                "POST /v1/logs HTTP/1.1\r\nhost: {http}\r\ncontent-type: application/x-protobuf\r\n\
                 content-length: {BIG_BODY}\r\n\r\n"
            );
            s.write_all(head.as_bytes()).ok()?;
            let chunk = vec![0x0au8; 64 * 1024];
            let mut sent = 0;
            while sent < BIG_BODY - 1 && t0.elapsed() < Duration::from_secs(60) {
                let n = (BIG_BODY - 1 - sent).min(chunk.len());
                match s.write(&chunk[..n]) {
                    Ok(0) => break,
                    Ok(n) => sent += n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue;
                    }
                    Err(_) => break, // closed by the relay
                }
            }
            closed_by_peer_within(&mut s, Duration::from_secs(60)).then(|| t0.elapsed())
        }));
    }
    // 50 slowloris connections, on both ports: a request head (or HTTP/2 preface) one byte at
    // a time, never finished.
    for i in 0..SLOWLORIS {
        let target = if i % 2 == 0 { http } else { grpc };
        attackers.push(std::thread::spawn(move || -> Option<Duration> {
            let t0 = Instant::now();
            let mut s = TcpStream::connect(target).ok()?;
            let trickle: &[u8] = if target == http {
                b"POST /v1/logs HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            } else {
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n"
            };
            for byte in trickle.iter().cycle().take(2000) {
                if s.write_all(std::slice::from_ref(byte)).is_err() {
                    return Some(t0.elapsed());
                }
                if closed_by_peer_within(&mut s, Duration::from_millis(250)) {
                    return Some(t0.elapsed());
                }
                if t0.elapsed() > Duration::from_secs(60) {
                    return None;
                }
            }
            None
        }));
    }
    // Valid requests throughout, over both protocols, each with a text to find upstream.
    let sent_ok = Arc::new(AtomicUsize::new(0));
    let http_sender = {
        let over = attack_over.clone();
        let sent_ok = sent_ok.clone();
        std::thread::spawn(move || {
            let mut texts = Vec::new();
            let mut i = 0;
            while !over.load(Ordering::SeqCst) || i < 3 {
                let text = format!("valid-http-{i}");
                assert_eq!(post_valid_http(http, &text), 200, "{text}");
                sent_ok.fetch_add(1, Ordering::SeqCst);
                texts.push(text);
                i += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            texts
        })
    };
    let grpc_sender = {
        let over = attack_over.clone();
        let sent_ok = sent_ok.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut texts = Vec::new();
                let mut i = 0;
                while !over.load(Ordering::SeqCst) || i < 3 {
                    let text = format!("valid-grpc-{i}");
                    let mut done = false;
                    for _attempt in 0..10 {
                        let result = async {
                            let mut client =
                                LogsServiceClient::connect(format!("http://{grpc}")).await?;
                            client.export(logs_request(&text)).await?;
                            Ok::<_, Box<dyn std::error::Error>>(())
                        }
                        .await;
                        match result {
                            Ok(()) => {
                                done = true;
                                break;
                            }
                            // UNAVAILABLE (shed or refused): retry after a second, as
                            // OTLP exporters do.
                            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                        }
                    }
                    assert!(done, "valid gRPC export {text} never succeeded");
                    sent_ok.fetch_add(1, Ordering::SeqCst);
                    texts.push(text);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                texts
            })
        })
    };
    // A connection that sends nothing, and one left idle after a request.
    let mut silent = TcpStream::connect(http).unwrap();
    let silent_closed = closed_by_peer_within(&mut silent, HEADER_TIMEOUT + Duration::from_secs(5));
    let mut kept_alive = TcpStream::connect(http).unwrap();
    let body = logs_request("valid-keepalive").encode_to_vec();
    write!(
        kept_alive,
        "POST /v1/logs HTTP/1.1\r\nhost: {http}\r\ncontent-type: application/x-protobuf\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    kept_alive.write_all(&body).unwrap();
    let mut first = [0u8; 12];
    kept_alive.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200", "keep-alive request answered");
    let idle_closed = closed_by_peer_within(&mut kept_alive, IDLE_TIMEOUT + Duration::from_secs(5));

    let closes: Vec<Option<Duration>> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
    attack_over.store(true, Ordering::SeqCst);
    let attack_took = started.elapsed();
    let mut texts = http_sender
        .join()
        .expect("valid HTTP requests all succeeded");
    texts.extend(
        grpc_sender
            .join()
            .expect("valid gRPC requests all succeeded"),
    );
    texts.push("valid-keepalive".into());
    let peak = vm_hwm_kib(pid);

    let (big, slow) = closes.split_at(BIG_CONNECTIONS);
    let open_big = big.iter().filter(|c| c.is_none()).count();
    let open_slow = slow.iter().filter(|c| c.is_none()).count();
    let slowest = closes.iter().flatten().max().copied().unwrap_or_default();
    eprintln!(
        "attack: {attack_took:?}; launcher VmHWM {baseline} KiB before, {peak} KiB after; \
         slowest close {slowest:?}; {} valid requests succeeded",
        sent_ok.load(Ordering::SeqCst)
    );
    assert_eq!(open_big, 0, "half-sent bodies still open after 60 s");
    assert_eq!(open_slow, 0, "slowloris connections still open after 60 s");
    assert!(
        slowest < BODY_TIMEOUT + HEADER_TIMEOUT + Duration::from_secs(10),
        "connections closed only after {slowest:?}"
    );
    assert!(silent_closed, "a silent connection was not closed");
    assert!(idle_closed, "an idle keep-alive connection was not closed");
    assert!(
        peak <= 150 * 1024,
        "launcher VmHWM {peak} KiB exceeds 150 MiB"
    );

    std::fs::write(scratch.join("release"), "").unwrap();
    let status = launcher.wait().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "launcher: {status:?}\n{stderr}");
    // What the bounds turned away is said, with the reason and its setting, and again in
    // `doctor`.
    assert!(
        stderr.contains("the relay's bounds turned away")
            && stderr.contains("connection(s) closed for sending no complete request within 2000 ms (relay.header_timeout_ms)"),
        "{stderr}"
    );
    let doctor = sandbox.command(LAUNCHER).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("[warn] relay bounds: in the last session the relay's bounds turned away"),
        "{text}"
    );
    // Every valid request reached the upstream.
    sink.wait_for(
        Duration::from_secs(20),
        "every valid request upstream",
        |sink| {
            let bodies: std::collections::BTreeSet<String> =
                sink.all_events().into_iter().map(|e| e.body).collect();
            texts.iter().all(|t| bodies.contains(t))
        },
    );
}

#[test]
fn port_probes_and_connections_that_send_nothing_leave_no_exit_warning_and_no_doctor_warning() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut sandbox = Sandbox::for_launcher(&api, &sink.grpc_endpoint());
    let scratch = sandbox.scratch();
    let claude = holding_claude(&scratch);
    let header_timeout = Duration::from_millis(500);
    sandbox
        .set_env(
            "CLAUDE_TELEMETRY_CLAUDE__PATH",
            claude.display().to_string(),
        )
        .set_env(
            "CLAUDE_TELEMETRY_RELAY__HEADER_TIMEOUT_MS",
            header_timeout.as_millis().to_string(),
        );
    let stderr_path = scratch.join("launcher.stderr");
    let mut launcher = sandbox
        .command(LAUNCHER)
        .args(["-p", "hold"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let ports_file = scratch.join("ports");
    assert!(
        wait_until(Duration::from_secs(30), || ports_file.exists()),
        "the stand-in claude never started"
    );
    let ports = std::fs::read_to_string(&ports_file).unwrap();
    let mut ports = ports.split_whitespace();
    let grpc = addr_of(ports.next().expect("gRPC endpoint"));
    let http = addr_of(ports.next().expect("HTTP endpoint"));
    for addr in [http, grpc] {
        // Port probes: connect, close at once or after a moment, never a byte.
        for pause in [0, 100, 300] {
            let probe = TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(pause));
            drop(probe);
        }
        // A connection opened and never used: still closed at the header timeout.
        let mut silent = TcpStream::connect(addr).unwrap();
        assert!(
            closed_by_peer_within(&mut silent, header_timeout + Duration::from_secs(5)),
            "{addr}: a connection that sends nothing is closed"
        );
    }
    assert_eq!(post_valid_http(http, "after-the-probes"), 200);

    std::fs::write(scratch.join("release"), "").unwrap();
    let status = launcher.wait().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "launcher: {status:?}\n{stderr}");
    assert!(
        !stderr.contains("bounds turned away"),
        "probes and unused connections are not senders turned away: {stderr}"
    );
    let doctor = sandbox.command(LAUNCHER).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(text.contains("last session"), "{text}");
    assert!(!text.contains("relay bounds"), "{text}");
}
