//! Launcher overhead, measured as ratios against a peer in the same run (these machines are
//! noisy): medians of alternating runs. Prints figures; asserts nothing.
//!
//!   cargo bench --bench launcher            (needs CLAUDE_TELEMETRY_TEST_CLAUDE, see tests/run.sh)
//!   BENCH_RUNS=20 BENCH_ONLY=a,c cargo bench --bench launcher
//!
//! (a) `claude-telemetry --version` vs `claude --version`               target ≤ 1.05×
//! (b) one `-p` turn through the launcher (live upstream) vs plain claude exporting straight to
//!     the same upstream; and the launcher's own peak RSS              target ≤ 1.10×, ≤ 30 MiB
//! (c) PTY throughput of a child writing 200 MB: launcher vs `script -qfc`   target ≥ 1.0×
//! (d) launcher start → claude exec on the session path, warm grammar cache  target ≤ 10 ms median
//! (e) the same for a claude binary never seen before (first run of a new version), and what the
//!     background learning of each tested release costs

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{FakeAnthropic, OtlpSink, Sandbox, claude_bin};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");
const MODEL: &str = "claude-sonnet-4-6";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11)
        .max(10)
}

fn timed(mut cmd: Command) -> f64 {
    let t = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert!(status.success(), "benchmark command failed: {cmd:?}");
    t.elapsed().as_secs_f64()
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn sandbox(api: &FakeAnthropic, upstream: &str) -> Sandbox {
    Sandbox::for_launcher(api, upstream)
}

fn bench_version(n: usize) {
    let api = FakeAnthropic::start();
    let s = sandbox(&api, "");
    let (mut plain, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let mut c = s.command(claude_bin());
        c.arg("--version");
        plain.push(timed(c));
        let mut c = s.command(LAUNCHER);
        c.arg("--version");
        ours.push(timed(c));
    }
    let (p, o) = (median(plain), median(ours));
    println!(
        "(a) --version: claude {:.1} ms, claude-telemetry {:.1} ms, ratio {:.3} (target ≤ 1.05)",
        p * 1e3,
        o * 1e3,
        o / p
    );
}

/// Peak RSS (VmHWM) of `pid`, polled until it exits; the last reading before exit.
fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
            if status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        peak
    })
}

fn bench_turn(n: usize) {
    let sink = OtlpSink::start();
    let api = FakeAnthropic::start();
    let mut direct = sandbox(&api, &sink.grpc_endpoint());
    direct.export_telemetry_to(&sink.grpc_endpoint(), "grpc");
    let through = sandbox(&api, &sink.grpc_endpoint());
    let (mut plain, mut ours, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let mut c = direct.command(claude_bin());
        c.args(["-p", "hello bench", "--model", MODEL]);
        plain.push(timed(c));
        let t = Instant::now();
        let mut child = through
            .command(LAUNCHER)
            .args(["-p", "hello bench", "--model", MODEL])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let watcher = watch_peak_rss(child.id());
        assert!(child.wait().unwrap().success());
        ours.push(t.elapsed().as_secs_f64());
        rss.push(watcher.join().unwrap() as f64 / 1024.0);
    }
    let (p, o) = (median(plain), median(ours));
    println!(
        "(b) -p turn: claude→upstream {:.0} ms, claude→launcher→upstream {:.0} ms, ratio {:.3} (target ≤ 1.10)",
        p * 1e3,
        o * 1e3,
        o / p
    );
    println!(
        "    launcher peak RSS (VmHWM, polled every 5 ms): median {:.1} MiB, max {:.1} MiB (target ≤ 30)",
        median(rss.clone()),
        rss.iter().cloned().fold(0.0, f64::max)
    );
    assert!(
        sink.request_count(support::Signal::Metrics) > 0,
        "upstream got nothing"
    );
}

/// Runs `program args` on the slave side of a fresh PTY and reads the master until EOF.
fn pty_drain(program: &str, args: &[&str], env: &[(&str, &str)]) -> (f64, u64) {
    let pty = portable_pty::native_pty_system();
    let pair = pty
        .openpty(portable_pty::PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = portable_pty::CommandBuilder::new(program);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    child.wait().unwrap();
    (t.elapsed().as_secs_f64(), total)
}

fn bench_pty(n: usize) {
    const BYTES: u64 = 200_000_000;
    let dir = tempfile::tempdir().unwrap();
    // `--version` answers at once: the launcher asks for it when a session sent no telemetry.
    let writer = script(
        dir.path(),
        "writer",
        &format!("[ \"$1\" = --version ] && exec echo 0.0.0\nexec head -c {BYTES} /dev/zero"),
    );
    let writer_s = writer.display().to_string();
    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    let env = [
        ("CLAUDE_TELEMETRY_CLAUDE__PATH", writer_s.as_str()),
        ("CLAUDE_TELEMETRY_UPSTREAM__ENABLED", "false"),
        ("CLAUDE_TELEMETRY_DATA_DIR", data_s.as_str()),
    ];
    let (mut script_mbs, mut ours_mbs) = (Vec::new(), Vec::new());
    for _ in 0..n.min(10) {
        let (t, bytes) = pty_drain("script", &["-qfc", &writer_s, "/dev/null"], &[]);
        assert!(bytes >= BYTES, "script passed {bytes} bytes");
        script_mbs.push(bytes as f64 / t / 1e6);
        let (t, bytes) = pty_drain(LAUNCHER, &[], &env);
        assert!(bytes >= BYTES, "launcher passed {bytes} bytes");
        ours_mbs.push(bytes as f64 / t / 1e6);
    }
    let (s, o) = (median(script_mbs), median(ours_mbs));
    println!(
        "(c) PTY throughput, 200 MB: script -qfc {s:.0} MB/s, claude-telemetry {o:.0} MB/s, ratio {:.2} (target ≥ 1.0)",
        o / s
    );
}

/// A child that prints the wall clock (ns) the moment it runs: the gap between starting the
/// launcher and that clock, minus the same gap for starting the child directly. The child is a
/// wrapper that answers the launcher's grammar questions (`--help`, `<word> --help`) with the
/// newest release's real binary, so the warm cache holds that release's real grammar.
fn bench_exec_latency(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real-claude");
    std::os::unix::fs::symlink(support::LATEST.bin(), &real).unwrap();
    // Padded past 1 MiB after its last command, so the launcher treats it as a claude build (a
    // small file is taken for a wrapper, whose unknown words are probed on every launch).
    let clock = script(
        dir.path(),
        "clock",
        &format!(
            "if [ \"$1\" = --help ] || [ \"$2\" = --help ]; then exec {} \"$@\"; fi\nexec date +%s%N\n#{}",
            real.display(),
            "x".repeat(1 << 21)
        ),
    );
    let sink = OtlpSink::start();
    let upstream = sink.grpc_endpoint();
    let now_ns = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as f64
    };
    let stamp = |cmd: &mut Command| -> f64 {
        let start = now_ns();
        let out = cmd.stderr(Stdio::null()).output().unwrap();
        let at: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        (at - start) / 1e6
    };
    let cache = dir.path().join("cache");
    let launcher = |args: &[&str], cache: &Path| {
        let mut c = Command::new(LAUNCHER);
        c.args(args)
            .current_dir(dir.path())
            .env("CLAUDE_TELEMETRY_CLAUDE__PATH", &clock)
            // A live upstream of our own: the default (the local stack) would start Docker.
            .env("CLAUDE_TELEMETRY_UPSTREAM__ENDPOINT", &upstream)
            .env("CLAUDE_TELEMETRY_DATA_DIR", dir.path().join("data"))
            .env("CLAUDE_TELEMETRY_CONFIG_DIR", dir.path().join("config"))
            .env("CLAUDE_TELEMETRY_CACHE_DIR", cache);
        c
    };
    // Warm the cache: the first run starts the background learner; wait for it to finish.
    stamp(&mut launcher(&["-p", "x"], &cache));
    let grammar_dir = cache.join("claude-grammar");
    let learned = support::wait_until(Duration::from_secs(300), || {
        std::fs::read_dir(&grammar_dir).is_ok_and(|entries| {
            let names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            !names.is_empty()
                && names
                    .iter()
                    .all(|p| p.extension().is_some_and(|e| e == "json"))
        })
    });
    assert!(learned, "the background learner did not finish");

    let (mut direct, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..n {
        direct.push(stamp(&mut Command::new(&clock)));
        ours.push(stamp(&mut launcher(&["-p", "x"], &cache)));
    }
    let (d, o) = (median(direct), median(ours));
    println!(
        "(d) start → claude exec, session path, warm grammar cache: direct {d:.2} ms, through the launcher {o:.2} ms, launcher's share {:.2} ms (target ≤ 10)",
        o - d
    );

    // A claude binary the launcher has not seen: each run with an empty cache.
    let (mut cold, mut cold_word) = (Vec::new(), Vec::new());
    for i in 0..n.min(10) {
        let fresh = dir.path().join(format!("cold-{i}"));
        cold.push(stamp(&mut launcher(&["-p", "fix the bug"], &fresh)) - d);
        let fresh = dir.path().join(format!("cold-word-{i}"));
        cold_word.push(stamp(&mut launcher(&["-p", "x"], &fresh)) - d);
    }
    println!(
        "(e) first run of a new claude, launcher's share: `-p \"fix the bug\"` {:.2} ms (the built-in table decides; learning runs later in the background), `-p x` {:.0} ms (a bare word the table does not know: reads the new binary's --help and probes the word)",
        median(cold),
        median(cold_word)
    );
    // The background learner (what it costs the machine, once per binary; niced when the
    // launcher starts it, not here).
    for release in support::RELEASES {
        let out = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let status = Command::new(LAUNCHER)
            .env("CLAUDE_TELEMETRY_LEARN_CLAUDE", release.bin())
            .env("CLAUDE_TELEMETRY_LEARN_CACHE_DIR", out.path())
            .status()
            .unwrap();
        assert!(status.success());
        println!(
            "(e) background learning of claude {} (help, strings scan, every candidate probed): {:.1} s wall",
            release.version,
            t.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    let n = runs();
    // BENCH_ONLY=a,c runs a subset.
    let only = std::env::var("BENCH_ONLY").unwrap_or_else(|_| "a,b,c,d".into());
    let wanted = |k: &str| only.split(',').any(|w| w.trim() == k);
    println!("launcher benchmarks, {n} alternating runs each, medians");
    if wanted("a") {
        bench_version(n);
    }
    if wanted("d") {
        bench_exec_latency(n);
    }
    if wanted("b") {
        bench_turn(n);
    }
    if wanted("c") {
        bench_pty(n);
    }
}
