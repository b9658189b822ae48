//! Delivery through the whole program that no single request, store failure, damaged file or
//! drain deadline can stop or double: a stand-in claude sends numbered events through the
//! relay (OTLP/HTTP JSON, as a hook would) and the test sink counts each at the upstream.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use support::sink::Behaviour;
use support::{FakeAnthropic, OtlpSink, Sandbox};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");

/// A stand-in claude that follows a plan (JSON in `PLAN`): `{"send": [requests, events per
/// request, tag, padding bytes]}` posts numbered events (`tag`, `seq` counting from 0 per tag) to the relay;
/// `{"touch": path}` and `{"wait": path}` synchronise with the test. With `REFUSALS` set, an
/// HTTP error answer is written there (`status retry-after`) and the request given up, as an
/// exporter gives up after its retries; without it, an error ends the stand-in.
const STAND_IN: &str = r#"#!/usr/bin/env python3
import json, os, sys, time, urllib.error, urllib.request
if '--version' in sys.argv:
    print('0.0.0'); sys.exit(0)
if '--help' in sys.argv:
    sys.exit(0)  # the launcher learns a new binary's grammar from its help: nothing to learn
url = os.environ['CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT'] + '/v1/logs'
seqs = {}
for step in json.loads(os.environ['PLAN']):
    if 'touch' in step:
        open(step['touch'], 'w').close()
    elif 'wait' in step:
        while not os.path.exists(step['wait']):
            time.sleep(0.02)
    else:
        requests, per, tag, pad = step['send']
        seq = seqs.get(tag, 0)
        for _ in range(requests):
            records = []
            for _ in range(per):
                attrs = [
                    {'key': 'event.name', 'value': {'stringValue': 'numbered'}},
                    {'key': 'tag', 'value': {'stringValue': tag}},
                    {'key': 'seq', 'value': {'intValue': str(seq)}},
                ]
                if pad:
                    # Hex: incompressible enough that sizes mean what they say.
                    attrs.append({'key': 'padding', 'value': {'stringValue': os.urandom(pad // 2 + 1).hex()[:pad]}})
                records.append({'body': {'stringValue': 'claude_code.numbered'}, 'attributes': attrs})
                seq += 1
            body = {'resourceLogs': [{'resource': {'attributes': [
                {'key': 'service.name', 'value': {'stringValue': 'claude-code'}}]},
                'scopeLogs': [{'logRecords': records}]}]}
            req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                         headers={'content-type': 'application/json'})
            try:
                status = urllib.request.urlopen(req, timeout=60).status
            except urllib.error.HTTPError as e:
                if 'REFUSALS' not in os.environ:
                    raise
                with open(os.environ['REFUSALS'], 'a') as f:
                    f.write('%d %s\n' % (e.code, e.headers.get('retry-after')))
                continue
            if status != 200:
                print('relay answered', status, file=sys.stderr); sys.exit(3)
        seqs[tag] = seq
"#;

fn stand_in(s: &Sandbox) -> PathBuf {
    let path = s.scratch().join("stand-in-claude");
    if !path.exists() {
        std::fs::write(&path, STAND_IN).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    path
}

fn sandbox(api: &FakeAnthropic, upstream: &str, data: &Path) -> Sandbox {
    let mut s = Sandbox::for_launcher(api, upstream);
    s.set_env("CLAUDE_TELEMETRY_DATA_DIR", data.display().to_string());
    // The numbered events carry keys claude never sends: let their text through the
    // fail-closed privacy rule, or `tag` and `padding` would arrive as `<REDACTED>`.
    s.set_env(
        "CLAUDE_TELEMETRY_PRIVACY__ALLOW_ATTRIBUTES",
        r#"["tag", "padding"]"#,
    );
    let fake = stand_in(&s);
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", fake.display().to_string());
    s
}

fn launch(s: &Sandbox, plan: &serde_json::Value) -> Output {
    let out = s
        .command(LAUNCHER)
        .args(["-p", "x"])
        .env("PLAN", plan.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// How many times each `seq` of `tag` reached the sink (accepted requests only).
fn arrivals(sink: &OtlpSink, tag: &str) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    for e in sink.events("numbered") {
        if e.attributes.get("tag").map(String::as_str) == Some(tag) {
            let seq: i64 = e.attributes["seq"].parse().unwrap();
            *seen.entry(seq).or_insert(0) += 1;
        }
    }
    seen
}

fn assert_exactly_once(sink: &OtlpSink, tag: &str, expected: i64) {
    let seen = arrivals(sink, tag);
    let missing: Vec<_> = (0..expected).filter(|i| !seen.contains_key(i)).collect();
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty() && doubled.is_empty() && seen.len() as i64 == expected,
        "{tag}: {} missing (first {:?}), {} more than once (first {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        doubled.len(),
        doubled.iter().take(5).collect::<Vec<_>>()
    );
}

/// One 5 MB request, one record too large alone, then 1,000 events, behind a gRPC upstream
/// that refuses messages over `limit` bytes as grpc-go does.
fn oversized_then_small(limit: usize) {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    sink.set_grpc_limit(Some(limit));
    let data = tempfile::tempdir().unwrap();
    let mut s = sandbox(&api, &sink.grpc_endpoint(), data.path());
    // The drain ends as soon as everything is delivered; the long bound only keeps a debug
    // build on a loaded 2-core machine inside "the same launch".
    s.set_env("CLAUDE_TELEMETRY_RELAY__DRAIN_TIMEOUT_MS", "30000");
    let plan = serde_json::json!([
        // ~5 MB of protobuf in one request (4,800 records of ~1 KB).
        {"send": [1, 4800, "large", 1000]},
        // One record that is too large for the upstream even alone.
        {"send": [1, 1, "huge", limit + 200_000]},
        // Then 1,000 ordinary events.
        {"send": [100, 10, "small", 0]},
    ]);
    let out = launch(&s, &plan);
    let err = stderr(&out);
    eprintln!("launcher: {err}");
    assert_exactly_once(&sink, "small", 1000);
    assert_exactly_once(&sink, "large", 4800);
    assert!(arrivals(&sink, "huge").is_empty());
    let largest = sink
        .requests()
        .iter()
        .map(|r| r.raw.len())
        .max()
        .unwrap_or(0);
    assert!(
        largest <= limit,
        "nothing over the limit was accepted: {largest}"
    );
    assert!(
        err.contains("1 telemetry item(s) were dropped: too large for"),
        "the dropped record is named: {err}"
    );
    assert!(!err.contains("wait in the local store"), "{err}");
    let doctor = s.command(LAUNCHER).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("[warn] delivery: the last session dropped 1 item(s) too large"),
        "{text}"
    );
}

#[test]
fn an_oversized_request_is_split_and_the_events_behind_it_arrive_in_the_same_launch() {
    // grpc-go's (and the OpenTelemetry Collector's) default receive limit.
    oversized_then_small(4 * 1024 * 1024);
}

#[test]
fn an_upstream_that_refuses_a_size_makes_the_relay_split_further() {
    // Stricter than the relay's own 4 MiB split: the upstream's RESOURCE_EXHAUSTED answer
    // must make it halve again.
    oversized_then_small(1024 * 1024);
}

#[test]
fn batches_in_back_off_show_in_doctor_and_arrive_once_the_upstream_is_back() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let data = tempfile::tempdir().unwrap();
    let mut s = sandbox(&api, &sink.grpc_endpoint(), data.path());
    s.set_env("CLAUDE_TELEMETRY_RELAY__DRAIN_TIMEOUT_MS", "1500");
    // Overloaded: UNAVAILABLE is retried, with its own back-off per batch.
    sink.set_behaviour(Behaviour::unavailable());
    let out = launch(&s, &serde_json::json!([{"send": [20, 5, "first", 0]}]));
    assert!(stderr(&out).contains("wait in the local store"), "{out:?}");
    let doctor = s.command(LAUNCHER).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("waiting batch(es) failed to deliver"),
        "doctor names failing batches: {text}"
    );
    assert!(
        text.contains("[warn] delivery") || text.contains("[FAIL] delivery"),
        "{text}"
    );
    sink.set_behaviour(Behaviour::Accept);
    launch(&s, &serde_json::json!([{"send": [5, 5, "second", 0]}]));
    assert_exactly_once(&sink, "first", 100);
    assert_exactly_once(&sink, "second", 25);
}

/// Makes files immutable (root, ext4/xfs/btrfs) for the guard's life; undone on drop, also
/// when the test fails.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: Vec<PathBuf>) -> Immutable {
        for p in &paths {
            let status = std::process::Command::new("chattr")
                .arg("+i")
                .arg(p)
                .status()
                .expect("chattr (e2fsprogs) is needed to make the store unwritable");
            assert!(status.success(), "chattr +i {}", p.display());
        }
        Immutable(paths)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(p)
                .status();
        }
    }
}

/// Runs a `-p` session whose stand-in sends `batches` batches of 10 events tagged `tag`, makes
/// the store's files immutable once that first half is in (after `before_break`, which sees
/// the store still writable), then lets the stand-in send as many again; the launcher's output.
fn launch_breaking_the_store_midway(
    s: &Sandbox,
    data: &Path,
    (batches, tag): (u32, &str),
    before_break: impl FnOnce(),
) -> Output {
    let half = s.scratch().join("half-sent");
    let go = s.scratch().join("go");
    let plan = serde_json::json!([
        {"send": [batches, 10, tag, 0]},
        {"touch": half.display().to_string()},
        {"wait": go.display().to_string()},
        {"send": [batches, 10, tag, 0]},
    ]);
    let child = s
        .command(LAUNCHER)
        .args(["-p", "x"])
        .env("PLAN", plan.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        support::wait_until(Duration::from_secs(60), || half.exists()),
        "the stand-in sent its first half"
    );
    before_break();
    let mut files = vec![data.join("store.db")];
    let wal = data.join("store.db-wal");
    if wal.exists() {
        files.push(wal);
    }
    let guard = Immutable::set(files);
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    drop(guard);
    assert!(out.status.success(), "{out:?}");
    out
}

#[test]
fn a_store_that_cannot_be_written_loses_nothing_the_upstream_can_take_and_says_so() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let data = tempfile::tempdir().unwrap();
    let s = sandbox(&api, &sink.grpc_endpoint(), data.path());
    let out = launch_breaking_the_store_midway(&s, data.path(), (100, "unwritable"), || {});
    let err = stderr(&out);
    eprintln!("launcher: {err}");
    assert!(
        err.contains("could not be written") && err.contains("went on to the upstream from memory"),
        "the user is told, once: {err}"
    );
    assert_eq!(err.matches("could not be written").count(), 1, "{err}");
    // Everything accepted after the failure arrived in this launch. Batches committed just
    // before it and not yet delivered cannot be claimed in an unwritable file: they are still
    // in it, said at exit, and the next launch that can write it delivers them.
    let seen = arrivals(&sink, "unwritable");
    assert!((1000..2000).all(|i| seen.get(&i) == Some(&1)), "{err}");
    let waiting = 2000 - seen.len();
    if waiting > 0 {
        assert!(err.contains("wait in the local store"), "{err}");
    }
    launch(&s, &serde_json::json!([]));
    assert_exactly_once(&sink, "unwritable", 2000);
}

#[test]
fn a_store_that_cannot_be_written_in_local_only_mode_asks_claude_to_retry_and_says_so() {
    let api = FakeAnthropic::start();
    let data = tempfile::tempdir().unwrap();
    // No upstream: local-only, so a request the store refuses has nowhere else to go.
    let mut s = sandbox(&api, "", data.path());
    let refusals = s.scratch().join("refusals");
    s.set_env("REFUSALS", refusals.display().to_string());
    let out = launch_breaking_the_store_midway(&s, data.path(), (10, "local"), || {
        assert!(!refusals.exists(), "a writable store takes every request");
    });
    let err = stderr(&out);
    eprintln!("launcher: {err}");
    // Every request after the failure was answered "retry", never a success for data gone.
    let answers = std::fs::read_to_string(&refusals).unwrap_or_default();
    assert_eq!(
        answers.lines().collect::<Vec<_>>(),
        vec!["503 5"; 10],
        "each refused with 503 and Retry-After"
    );
    assert_eq!(
        err.matches("could not be written").count(),
        1,
        "said once: {err}"
    );
    assert!(
        err.contains("10 batch(es) were refused with a retryable error, not acknowledged")
            && err.contains("local-only"),
        "{err}"
    );
    let doctor = s.command(LAUNCHER).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("10 that nothing could keep were refused with a retryable error"),
        "{text}"
    );
}

#[test]
fn batches_held_in_memory_only_and_undelivered_at_exit_are_said_lost() {
    let api = FakeAnthropic::start();
    let data = tempfile::tempdir().unwrap();
    // An upstream where nothing listens, and no store: the memory outbox is all there is.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut s = sandbox(&api, &endpoint, data.path());
    s.set_env("CLAUDE_TELEMETRY_STORE__ENABLED", "false");
    s.set_env("CLAUDE_TELEMETRY_RELAY__DRAIN_TIMEOUT_MS", "500");
    let out = launch(&s, &serde_json::json!([{"send": [5, 2, "memory", 0]}]));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "5 telemetry batch(es) (10 item(s)) could not be delivered to {endpoint} and are lost"
        )),
        "{err}"
    );
}

#[test]
fn a_damaged_store_is_reported_set_aside_and_the_new_events_arrive() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let data = tempfile::tempdir().unwrap();
    let s = sandbox(&api, &sink.grpc_endpoint(), data.path());
    sink.stop();
    let out = launch(&s, &serde_json::json!([{"send": [200, 20, "old", 200]}]));
    assert!(stderr(&out).contains("wait in the local store"), "{out:?}");
    // A third of the file overwritten, from a third of the way in.
    let store = data.path().join("store.db");
    let len = std::fs::metadata(&store).unwrap().len();
    assert!(len > 1_000_000, "a store of some size: {len}");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&store)
            .unwrap();
        f.seek(SeekFrom::Start(len / 3)).unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let junk: Vec<u8> = (0..len / 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        f.write_all(&junk).unwrap();
    }
    let doctor = s.command(LAUNCHER).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(text.contains("[FAIL] store integrity"), "{text}");
    assert!(!doctor.status.success());
    sink.restart();
    let out = launch(&s, &serde_json::json!([{"send": [10, 10, "new", 0]}]));
    let err = stderr(&out);
    eprintln!("launcher: {err}");
    assert!(
        err.contains("the local store was damaged") && err.contains(".damaged-"),
        "{err}"
    );
    assert_exactly_once(&sink, "new", 100);
    let set_aside = std::fs::read_dir(data.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("store.db.damaged-")
        });
    assert!(set_aside, "the damaged file is kept aside");
    // What was salvaged arrives, each at most once.
    let old = arrivals(&sink, "old");
    assert!(old.values().all(|n| *n == 1), "{old:?}");
    let doctor = s.command(LAUNCHER).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(text.contains("[ ok ] store integrity"), "{text}");
}

#[test]
fn a_store_emptied_while_batches_waited_is_reported_not_silently_recreated() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let data = tempfile::tempdir().unwrap();
    let s = sandbox(&api, &sink.grpc_endpoint(), data.path());
    sink.stop();
    launch(&s, &serde_json::json!([{"send": [5, 5, "gone", 0]}]));
    std::fs::write(data.path().join("store.db"), b"").unwrap();
    sink.restart();
    let out = launch(&s, &serde_json::json!([{"send": [2, 5, "after", 0]}]));
    let err = stderr(&out);
    assert!(
        err.contains("the local store was emptied while 5 batch(es) waited"),
        "{err}"
    );
    assert_exactly_once(&sink, "after", 10);
}

#[test]
fn concurrent_and_back_to_back_launches_drain_a_backlog_exactly_once() {
    let api = FakeAnthropic::start();
    let sink = OtlpSink::start();
    let data = tempfile::tempdir().unwrap();
    let mut s = sandbox(&api, &sink.grpc_endpoint(), data.path());
    // Drains end with sends in flight: the upstream takes 30 ms a request, a drain 300 ms.
    s.set_env("CLAUDE_TELEMETRY_RELAY__DRAIN_TIMEOUT_MS", "300");
    sink.stop();
    launch(&s, &serde_json::json!([{"send": [300, 5, "backlog", 0]}]));
    sink.restart();
    sink.set_behaviour(Behaviour::Delay(Duration::from_millis(30)));
    for round in 0..2 {
        let children: Vec<_> = (0..8)
            .map(|i| {
                s.command(LAUNCHER)
                    .args(["-p", "x"])
                    .env(
                        "PLAN",
                        serde_json::json!([{"send": [3, 5, format!("own-{round}-{i}"), 0]}])
                            .to_string(),
                    )
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
    }
    // Back-to-back short launches until the backlog is gone.
    for _ in 0..60 {
        if arrivals(&sink, "backlog").len() >= 1500 {
            break;
        }
        launch(&s, &serde_json::json!([]));
    }
    assert_exactly_once(&sink, "backlog", 1500);
    for round in 0..2 {
        for i in 0..8 {
            assert_exactly_once(&sink, &format!("own-{round}-{i}"), 15);
        }
    }
}

#[test]
fn waiting_batches_stay_for_their_upstream_unless_retarget_follows() {
    let api = FakeAnthropic::start();
    let first = OtlpSink::start();
    let second = OtlpSink::start();
    let data = tempfile::tempdir().unwrap();
    first.stop();
    let a = sandbox(&api, &first.grpc_endpoint(), data.path());
    launch(&a, &serde_json::json!([{"send": [4, 5, "for-first", 0]}]));
    let b = sandbox(&api, &second.grpc_endpoint(), data.path());
    let out = launch(&b, &serde_json::json!([{"send": [2, 5, "for-second", 0]}]));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "4 waiting telemetry batch(es) are for {}, not this run's upstream {}",
            first.grpc_endpoint(),
            second.grpc_endpoint()
        )),
        "{err}"
    );
    assert_exactly_once(&second, "for-second", 10);
    assert!(
        arrivals(&second, "for-first").is_empty(),
        "kept for the first"
    );
    let mut follow = sandbox(&api, &second.grpc_endpoint(), data.path());
    follow.set_env("CLAUDE_TELEMETRY_STORE__RETARGET", "follow");
    let out = launch(&follow, &serde_json::json!([]));
    assert!(
        stderr(&out).contains("are re-targeted to"),
        "said plainly: {out:?}"
    );
    assert_exactly_once(&second, "for-first", 20);
    assert_exactly_once(&second, "for-second", 10);
}

/// A stand-in claude that writes the telemetry set-up it was given to `$TELEMETRY_SEEN`.
fn telemetry_reporting_claude(s: &Sandbox) -> PathBuf {
    let path = s.scratch().join("reporting-claude");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         for a in \"$@\"; do case \"$a\" in --help) exit 0;; --version) echo 0.0.0; exit 0;; esac; done\n\
         { echo \"enable=${CLAUDE_CODE_ENABLE_TELEMETRY-unset}\"\n\
           echo \"metrics=${OTEL_METRICS_EXPORTER-unset} logs=${OTEL_LOGS_EXPORTER-unset}\"\n\
           echo \"endpoint=${OTEL_EXPORTER_OTLP_ENDPOINT-unset}\"\n\
           echo \"relay=${CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT-unset}\"\n\
           echo \"args=$*\"; } > \"$TELEMETRY_SEEN\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Launches `s` with a stand-in claude that reports its telemetry set-up; asserts claude's
/// exporters were switched off, with no relay endpoint, and that one line before it started
/// said why, naming each of `said`. Returns what `doctor` printed next.
fn launch_expecting_telemetry_off(s: &mut Sandbox, said: &[String], case: &str) -> String {
    let seen = s.scratch().join("telemetry-seen");
    s.set_env("TELEMETRY_SEEN", seen.display().to_string());
    let fake = telemetry_reporting_claude(s);
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", fake.display().to_string());
    let out = launch(s, &serde_json::json!([]));
    let err = stderr(&out);
    eprintln!("{case}: {err}");
    let seen = std::fs::read_to_string(&seen).expect("the stand-in ran");
    // Claude's exporters are off: nothing is sent to be acknowledged into nothing.
    assert!(seen.contains("enable=0\n"), "{case}: {seen}");
    assert!(seen.contains("metrics=none logs=none"), "{case}: {seen}");
    assert!(seen.contains("endpoint=unset"), "{case}: {seen}");
    assert!(
        seen.contains("relay=unset"),
        "{case}: no relay for hooks: {seen}"
    );
    assert!(
        seen.contains(r#""CLAUDE_CODE_ENABLE_TELEMETRY":"0""#),
        "{case}: the injected --settings switch them off too: {seen}"
    );
    // One line, before claude starts, saying why.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("telemetry off for this session"))
        .collect();
    assert_eq!(lines.len(), 1, "{case}: said once: {err}");
    for part in said {
        assert!(
            lines[0].contains(part.as_str()),
            "{case}: {part:?} in {err}"
        );
    }
    assert!(!err.contains("kept in memory only"), "{case}: {err}");
    assert!(!err.contains("kept locally"), "{case}: {err}");
    assert!(!err.contains("sent no telemetry"), "{case}: {err}");
    assert!(!err.contains("were not kept"), "{case}: {err}");
    // `doctor` says the same about the last session.
    let doctor = s.command(LAUNCHER).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        text.contains("[warn] last session: telemetry was off (claude's exporters switched off)")
            && said.iter().all(|part| text.contains(part.as_str())),
        "{case}: {text}"
    );
    text
}

#[test]
fn with_no_store_and_no_upstream_claude_is_not_pointed_at_a_relay_that_keeps_nothing() {
    let api = FakeAnthropic::start();
    let data = tempfile::tempdir().unwrap();
    let local_only = "no upstream (local-only)".to_string();

    let mut s = sandbox(&api, "", data.path());
    s.set_env("CLAUDE_TELEMETRY_STORE__ENABLED", "false");
    let said = [
        "the local store is disabled (store.enabled = false)".to_string(),
        local_only.clone(),
    ];
    let doctor = launch_expecting_telemetry_off(&mut s, &said, "store disabled");
    assert!(
        doctor
            .contains("no upstream is enabled: sessions run with claude's telemetry switched off"),
        "{doctor}"
    );

    let not_a_dir = data.path().join("a-file");
    std::fs::write(&not_a_dir, "").unwrap();
    let unopenable = not_a_dir.join("store.db");
    let mut s = sandbox(&api, "", data.path());
    s.set_env(
        "CLAUDE_TELEMETRY_STORE__PATH",
        unopenable.display().to_string(),
    );
    let said = [
        format!("local store {} unavailable (", unopenable.display()),
        local_only,
    ];
    launch_expecting_telemetry_off(&mut s, &said, "store cannot be opened");
}

#[test]
fn with_no_store_and_an_upstream_that_cannot_be_set_up_claude_s_telemetry_is_off() {
    let api = FakeAnthropic::start();
    let data = tempfile::tempdir().unwrap();
    let mut s = sandbox(&api, "http://127.0.0.1:9", data.path());
    s.set_env("CLAUDE_TELEMETRY_STORE__ENABLED", "false");
    // A header name no gRPC metadata can carry: the upstream client cannot be built.
    std::fs::write(
        s.project().join(".claude-telemetry.toml"),
        "[upstream.headers]\n\"bad header\" = \"x\"\n",
    )
    .unwrap();
    let said = [
        "the local store is disabled (store.enabled = false)".to_string(),
        "the upstream could not be set up (".to_string(),
    ];
    launch_expecting_telemetry_off(&mut s, &said, "store disabled, upstream unusable");
}
