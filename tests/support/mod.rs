//! Test-only harness shared by the whole-program tests in `tests/`.
//!
//! Every test file that needs it says `mod support;`. The pieces:
//! - [`FakeAnthropic`]: a deterministic Anthropic Messages API on 127.0.0.1 that records what
//!   it was asked and which token usage it answered with, so tests can check claude's figures.
//! - [`OtlpSink`]: a real OTLP receiver (gRPC + HTTP protobuf/JSON) that records raw and decoded
//!   requests, can fail or stall on demand and can be stopped and restarted on the same ports.
//! - [`Sandbox`]: an isolated HOME and project directory prepared so the real claude runs
//!   without login, onboarding or trust dialogs, and a clean environment to run it with.
//! - [`Tmux`]: a real terminal (tmux) to drive interactive sessions: type, read the screen,
//!   collect the exit status.
//! - [`Rotel`]: the real rotel-agent as a third-party OTLP peer; [`python::send_metric`]: the
//!   OpenTelemetry Python SDK as a third-party sender (gzip included).
//! - [`claude_bin`] / [`rotel_bin`]: tools located through the environment that `tests/run.sh`
//!   prepares; a missing tool is a test failure, never a silent skip.
//!
//! Tests are plain `#[test]` functions: each server runs on its own thread and runtime, so no
//! test needs to be async and dropping a server always releases its port.
//!
//! A whole-program test, in short:
//! ```text
//! let api = FakeAnthropic::start();                 // claude's model API
//! let sink = OtlpSink::start();                     // the upstream collector
//! let mut sandbox = Sandbox::new(&api);             // HOME, project, clean env
//! sandbox.export_telemetry_to(&sink.grpc_endpoint(), "grpc");
//! let out = sandbox.command(claude_bin())           // or launcher_bin()
//!     .args(["-p", "RUN_BASH: echo hi", "--allowedTools", "Bash"]).output().unwrap();
//! assert!(out.status.success());
//! checks::assert_telemetry_matches_api(&api, &sink, 1);   // tokens, cost, events
//! // interactive: let term = sandbox.tmux(claude_bin(), &[]);
//! // term.wait_for_text("? for shortcuts", t); term.submit("hi"); term.exit_claude();
//! ```
#![allow(dead_code, unused_imports)]

pub mod anthropic;
mod background;
pub mod checks;
pub mod python;
pub mod releases;
pub mod rotel;
pub mod sandbox;
pub mod sink;
pub mod tmux;

pub use anthropic::{ApiCall, FakeAnthropic, Pricing, QueryKind, Reply, Usage};
pub use python::{PyProtocol, python_bin};
pub use releases::{LATEST, OLDEST, RELEASES, Release, current as current_release};
pub use rotel::Rotel;
pub use sandbox::Sandbox;
pub use sink::{Behaviour, Event, OtlpSink, Point, Received, Signal, Transport};
pub use tmux::{PaneExit, Tmux};

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The oldest Claude Code release of the matrix ([`OLDEST`]): what single-release tests (the
/// harness, the catalogue) run; `tests/install-tools.sh` installs it and every other release.
pub const CLAUDE_VERSION: &str = "2.1.197";

/// Environment variable naming the real claude binary for tests.
pub const CLAUDE_ENV: &str = "CLAUDE_TELEMETRY_TEST_CLAUDE";
/// Environment variable naming the rotel-agent binary for tests.
pub const ROTEL_ENV: &str = "CLAUDE_TELEMETRY_TEST_ROTEL";

/// Path of the real Claude Code binary of the test's release ([`current_release`]: the oldest
/// unless the test runs under `on_each_release!`).
///
/// Panics when it is not configured: a test that needs claude must never pass without it,
/// in CI (`CI=true`) or on a developer machine alike.
pub fn claude_bin() -> PathBuf {
    current_release().bin()
}

/// Path of our own binary, built by cargo for integration tests.
pub fn launcher_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_claude-telemetry"))
}

/// Path of the rotel-agent binary (PyPI package `rotel`), a real OTLP receiver from a third party.
pub fn rotel_bin() -> PathBuf {
    tool_from_env(ROTEL_ENV, "rotel-agent (PyPI package rotel)")
}

/// Resolves an executable named by an environment variable or panics saying how to get it.
pub fn tool_from_env(var: &str, what: &str) -> PathBuf {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let hint = "run the suite with `bash tests/run.sh` (it installs every tool the tests need and \
                sets the variables), or `eval \"$(bash tests/install-tools.sh --print-env)\"` \
                before `cargo test`";
    let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
        panic!(
            "{var} is not set: this test needs {what}{}; {hint}",
            if ci {
                " (CI=true: tests never skip)"
            } else {
                ""
            }
        );
    };
    let path = PathBuf::from(value);
    let executable = std::fs::metadata(&path)
        .map(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
        .unwrap_or(false);
    assert!(
        executable,
        "{var}={} is not an executable file: this test needs {what}; {hint}",
        path.display()
    );
    path
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; true when it held.
///
/// Claude exports on timers, so most assertions about telemetry wait for data rather than
/// checking once.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
