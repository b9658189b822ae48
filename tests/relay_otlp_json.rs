//! OTLP/JSON through the real launcher: values that are valid proto3 JSON ("NaN", "Infinity",
//! 64-bit integers as strings) arrive upstream as sent; values out of range are answered 400
//! and never reach the upstream — nothing is dropped behind a 200.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use support::{FakeAnthropic, OtlpSink, Sandbox, wait_until};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");

fn gauge(name: &str, point: &str) -> String {
    format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"{name}","gauge":{{"dataPoints":[{point}]}}}}]}}]}}]}}"#
    )
}

/// POSTs a JSON body to `/v1/metrics`; the status code.
fn post_json(addr: SocketAddr, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/metrics HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn proto3_json_special_doubles_and_string_int64s_arrive_and_out_of_range_values_get_400() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let mut sandbox = Sandbox::for_launcher(&api, &sink.grpc_endpoint());
    let scratch = sandbox.scratch();
    let claude = scratch.join("holding-claude");
    std::fs::write(
        &claude,
        format!(
            "#!/bin/bash\nfor a in \"$@\"; do case \"$a\" in --help|--version) exit 0;; esac; done\necho \"$CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT\" > {p}.tmp; mv {p}.tmp {p}\n\
             for _ in $(seq 600); do [ -e {r} ] && exit 0; sleep 0.1; done\nexit 3\n",
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
        .command(LAUNCHER)
        .args(["-p", "hold"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ports = scratch.join("ports");
    assert!(wait_until(Duration::from_secs(30), || ports.exists()));
    let http: SocketAddr = std::fs::read_to_string(&ports)
        .unwrap()
        .trim()
        .trim_start_matches("http://")
        .parse()
        .unwrap();

    for (name, point) in [
        ("json.nan", r#"{"asDouble":"NaN"}"#),
        ("json.inf", r#"{"asDouble":"Infinity"}"#),
        ("json.neginf", r#"{"asDouble":"-Infinity"}"#),
        ("json.max", r#"{"asInt":"9223372036854775807"}"#),
        ("json.number", r#"{"asInt":-12}"#),
    ] {
        assert_eq!(post_json(http, &gauge(name, point)), 200, "{name} {point}");
    }
    for (name, point) in [
        ("json.bad.int", r#"{"asInt":"9223372036854775808"}"#),
        ("json.bad.fraction", r#"{"asInt":1.5}"#),
        ("json.bad.nan", r#"{"asDouble":"nan"}"#),
        ("json.bad.both", r#"{"asDouble":1,"asInt":1}"#),
        (
            "json.bad.time",
            r#"{"asInt":1,"timeUnixNano":"18446744073709551616"}"#,
        ),
    ] {
        assert_eq!(post_json(http, &gauge(name, point)), 400, "{name} {point}");
    }
    std::fs::write(scratch.join("release"), "").unwrap();
    assert!(launcher.wait().unwrap().success());

    sink.wait_for(Duration::from_secs(20), "the valid points upstream", |s| {
        [
            "json.nan",
            "json.inf",
            "json.neginf",
            "json.max",
            "json.number",
        ]
        .iter()
        .all(|n| !s.points(n).is_empty())
    });
    assert!(sink.points("json.nan")[0].value.is_nan());
    assert_eq!(sink.points("json.inf")[0].value, f64::INFINITY);
    assert_eq!(sink.points("json.neginf")[0].value, f64::NEG_INFINITY);
    assert_eq!(sink.points("json.max")[0].value, i64::MAX as f64);
    assert_eq!(sink.points("json.number")[0].value, -12.0);
    let names = sink.metric_names();
    assert!(
        !names.iter().any(|n| n.starts_with("json.bad")),
        "a rejected request reached the upstream: {names:?}"
    );
}
