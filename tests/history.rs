//! History import through the whole program, with transcripts the real Claude Code wrote
//! against the fake Messages API: imported usage equals what the API answered, importing
//! again changes nothing, a request seen by telemetry and a transcript counts once, and a
//! session whose telemetry was lost is filled from its transcript and named by `--check`.
//!
//! What the releases write (checked by these tests, see also src/history/transcript.rs): one
//! `type: "assistant"` line per content block of each main-loop response, with `requestId`,
//! `message.id`, `message.model`, `message.usage` (incl. `cache_creation.ephemeral_5m/1h`),
//! `sessionId`, `cwd`, `gitBranch`, `timestamp`. Auxiliary calls (the session title) are not
//! written, so they are telemetry's alone.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use support::checks::MODEL;
use support::{FakeAnthropic, QueryKind, Sandbox, Usage};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{out:?}");
    out
}

fn json(out: Output) -> serde_json::Value {
    let out = ok(out);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A launcher sandbox whose project is a git work tree on `branch`.
fn sandbox(api: &FakeAnthropic, branch: &str) -> Sandbox {
    let s = Sandbox::for_launcher(api, "");
    let git = std::process::Command::new("git")
        .args(["init", "-q", "-b", branch])
        .current_dir(s.project())
        .output()
        .expect("git is installed");
    assert!(git.status.success(), "{git:?}");
    s
}

/// One `-p` turn of the real claude, through the launcher or directly.
fn turn(s: &Sandbox, program: impl AsRef<std::ffi::OsStr>, prompt: &str) {
    ok(s.command(program)
        .args(["-p", prompt, "--allowedTools", "Bash", "--model", MODEL])
        .output()
        .unwrap());
}

fn import(s: &Sandbox, extra: &[&str]) -> serde_json::Value {
    json(
        s.command(LAUNCHER)
            .args(["import", "--json"])
            .args(extra)
            .output()
            .unwrap(),
    )
}

fn report(s: &Sandbox, extra: &[&str]) -> serde_json::Value {
    json(
        s.command(LAUNCHER)
            .args(["report", "--json"])
            .args(extra)
            .output()
            .unwrap(),
    )
}

fn projects_dir(s: &Sandbox) -> PathBuf {
    s.home().join(".claude").join("projects")
}

fn transcripts(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in walk(dir) {
        if e.extension().is_some_and(|x| x == "jsonl") {
            out.push(e);
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn assert_tokens(summary: &serde_json::Value, u: Usage) {
    for (field, expected) in [
        ("input", u.input),
        ("output", u.output),
        ("cache_read", u.cache_read),
        ("cache_creation", u.cache_creation),
    ] {
        assert_eq!(
            summary["tokens"][field], expected,
            "tokens.{field}: {summary}"
        );
    }
}

/// USD per million tokens of claude-sonnet-4-6 (claude's own, see `Pricing`), with the 1-hour
/// cache write at twice the input rate.
fn sonnet_cost(u: Usage) -> f64 {
    let (m5, h1) = u.cache_creation_split.unwrap_or((u.cache_creation, 0));
    (u.input as f64 * 3.0
        + u.output as f64 * 15.0
        + u.cache_read as f64 * 0.3
        + m5 as f64 * 3.75
        + h1 as f64 * 6.0)
        / 1e6
}

/// Usage with the real API's 5m/1h split, distinct per call.
fn split_usage(i: usize, _: QueryKind) -> Usage {
    let i = i as u64;
    Usage {
        input: 1000 + 10 * i,
        output: 40 + i,
        cache_read: 300 + i,
        cache_creation: 50 + 3 * i + 20,
        cache_creation_split: Some((50 + 3 * i, 20)),
    }
}

fn imported_usage_equals_what_the_api_answered_and_importing_twice_changes_nothing() {
    let api = FakeAnthropic::with_usage(split_usage);
    let s = sandbox(&api, "feat/history");
    // claude itself, not the launcher: no telemetry at all, the transcript is all there is.
    turn(
        &s,
        support::current_release().bin(),
        "first: RUN_BASH: echo imported",
    );
    let main = api.total_usage(Some(QueryKind::Main));
    let main_calls = api
        .calls()
        .iter()
        .filter(|c| c.query == QueryKind::Main)
        .count();
    assert!(
        main_calls >= 2,
        "a tool turn makes two main calls: {:?}",
        api.calls()
    );

    let first = import(&s, &[]);
    assert_eq!(first["requests_added"], main_calls, "{first}");
    assert_eq!(first["malformed_lines"], 0, "{first}");
    let summary = report(&s, &[])["summary"].clone();
    assert_tokens(&summary, main);
    assert_eq!(summary["api"]["requests"], main_calls, "{summary}");
    assert_eq!(summary["sessions"], 1, "{summary}");
    assert_eq!(summary["requests_by_source"]["transcript"], main_calls);
    assert_eq!(summary["cost_basis"], "estimated", "{summary}");
    let cost = summary["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - sonnet_cost(main)).abs() < 1e-9,
        "the estimate prices the 5m and 1h writes apart: {cost} vs {}",
        sonnet_cost(main)
    );
    assert_eq!(summary["cost_estimated_usd"], summary["cost_usd"]);

    // Again: nothing read, nothing changed.
    let again = import(&s, &[]);
    assert_eq!(again["requests_added"], 0, "{again}");
    assert_eq!(
        again["bytes_read"], 0,
        "unchanged files are not read: {again}"
    );
    assert_eq!(again["files_unchanged"], again["files"], "{again}");
    assert_eq!(report(&s, &[])["summary"], summary);

    // The branch the transcript recorded, a Total row and CSV.
    let by_branch = report(&s, &["--by", "branch"]);
    let rows = by_branch["breakdown"]["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1, "{by_branch}");
    assert_eq!(rows[0]["key"], "feat/history", "{by_branch}");
    let csv = String::from_utf8(
        ok(s.command(LAUNCHER)
            .args(["report", "--csv", "--by", "branch"])
            .output()
            .unwrap())
        .stdout,
    )
    .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("branch,sessions,requests,cost_usd"),
        "{csv}"
    );
    assert!(
        lines[1].starts_with(&format!("feat/history,1,{main_calls},")),
        "{csv}"
    );
    assert!(
        lines[2].starts_with(&format!("Total,1,{main_calls},")),
        "{csv}"
    );

    // Damage after the import: a garbage line and a half-written one. The garbage is named
    // by file and line and skipped; the half line waits; nothing is counted twice.
    let file = transcripts(&projects_dir(&s))
        .pop()
        .expect("claude wrote a transcript");
    let lines_before = std::fs::read_to_string(&file).unwrap().lines().count();
    let mut text = std::fs::read(&file).unwrap();
    text.extend_from_slice(b"this is not json\n{\"type\":\"assistant\",\"usage\"");
    std::fs::write(&file, &text).unwrap();
    let damaged = import(&s, &[]);
    assert_eq!(damaged["malformed_lines"], 1, "{damaged}");
    assert_eq!(
        damaged["lines"], 1,
        "only the new complete line is read: {damaged}"
    );
    let problem = damaged["problems"][0].as_str().unwrap();
    assert!(
        problem.contains(&format!("{}:{}:", file.display(), lines_before + 1)),
        "{problem}"
    );
    assert_eq!(report(&s, &[])["summary"], summary);

    // A rewritten file (shorter: truncated) is read again from its start, still once.
    let original =
        &text[..text.len() - b"this is not json\n{\"type\":\"assistant\",\"usage\"".len()];
    std::fs::write(&file, &original[..original.len() / 2]).unwrap();
    std::fs::write(&file, original).unwrap();
    let rewritten = import(&s, &[]);
    assert_eq!(rewritten["requests_added"], 0, "{rewritten}");
    assert_eq!(report(&s, &[])["summary"], summary);

    // Imported history survives claude's cleanup of its transcripts.
    std::fs::remove_dir_all(projects_dir(&s)).unwrap();
    assert_eq!(report(&s, &[])["summary"], summary);
}

fn a_request_seen_by_telemetry_and_a_transcript_counts_once() {
    let api = FakeAnthropic::start();
    let s = sandbox(&api, "main");
    turn(&s, LAUNCHER, "first: RUN_BASH: echo both");
    let before = report(&s, &[])["summary"].clone();
    let imported = import(&s, &[]);
    let main_calls = api
        .calls()
        .iter()
        .filter(|c| c.query == QueryKind::Main)
        .count();
    let aux_calls = api.calls().len() - main_calls;
    assert_eq!(imported["requests_added"], 0, "{imported}");
    assert_eq!(imported["requests_merged"], main_calls, "{imported}");
    let summary = report(&s, &[])["summary"].clone();
    assert_tokens(&summary, api.total_usage(None));
    let cost = summary["cost_usd"].as_f64().unwrap();
    assert!((cost - api.expected_cost_usd(None)).abs() < 1e-9, "{cost}");
    assert_eq!(
        summary["cost_basis"], "telemetry",
        "claude's own cost: {summary}"
    );
    assert_eq!(summary["api"]["requests"], api.calls().len());
    assert_eq!(summary["sessions"], 1);
    assert_eq!(
        summary["requests_by_source"]["both"], main_calls,
        "{summary}"
    );
    assert_eq!(
        summary["requests_by_source"]["telemetry"], aux_calls,
        "{summary}"
    );
    assert_eq!(summary["requests_by_source"]["transcript"], 0, "{summary}");
    for field in ["tokens", "cost_usd", "api", "sessions"] {
        assert_eq!(
            summary[field], before[field],
            "{field} unchanged by the import"
        );
    }
    // The session appears once per breakdown.
    let by_session = report(&s, &["--by", "session"]);
    assert_eq!(by_session["breakdown"]["rows"].as_array().unwrap().len(), 1);
}

fn a_session_whose_telemetry_was_lost_is_filled_from_its_transcript_and_named_by_check() {
    let api = FakeAnthropic::start();
    let mut s = sandbox(&api, "main");
    turn(&s, LAUNCHER, "kept: RUN_BASH: echo kept");
    let kept_calls = api.calls().len();
    let kept_usage = api.total_usage(None);
    // Telemetry of the second session is lost: no upstream and no store.
    s.set_env("CLAUDE_TELEMETRY_STORE__ENABLED", "false");
    turn(&s, LAUNCHER, "lost: RUN_BASH: echo lost");
    s.remove_env("CLAUDE_TELEMETRY_STORE__ENABLED");
    let lost: Vec<_> = api.calls()[kept_calls..].to_vec();
    let lost_main: Vec<_> = lost.iter().filter(|c| c.query == QueryKind::Main).collect();
    let lost_usage = lost_main
        .iter()
        .fold(Usage::default(), |a, c| a.add(c.usage));
    let before = report(&s, &[])["summary"].clone();
    assert_eq!(
        before["sessions"], 1,
        "the lost session is not in the store: {before}"
    );

    import(&s, &[]);
    let summary = report(&s, &[])["summary"].clone();
    assert_tokens(&summary, kept_usage.add(lost_usage));
    assert_eq!(summary["sessions"], 2, "{summary}");
    assert_eq!(summary["api"]["requests"], kept_calls + lost_main.len());
    assert_eq!(summary["cost_basis"], "mixed", "{summary}");
    let estimated = summary["cost_estimated_usd"].as_f64().unwrap();
    assert!(
        (estimated - sonnet_cost(lost_usage)).abs() < 1e-9,
        "{estimated}"
    );

    let check = report(&s, &["--check"]);
    assert_eq!(check["transcript_only"], lost_main.len(), "{check}");
    let gaps: Vec<_> = check["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["seen_only_in"] == "transcript")
        .collect();
    assert_eq!(gaps.len(), 1, "{check}");
    assert_eq!(gaps[0]["sessions"], 1, "{check}");
    assert_eq!(gaps[0]["requests"], lost_main.len(), "{check}");
    let text = String::from_utf8(
        ok(s.command(LAUNCHER)
            .args(["report", "--check"])
            .output()
            .unwrap())
        .stdout,
    )
    .unwrap();
    let day = gaps[0]["day"].as_str().unwrap();
    let named = format!(
        "{day}, 1 session, {} requests seen only in transcripts",
        lost_main.len()
    );
    assert!(text.contains(&named), "{named:?} in:\n{text}");
    let doctor =
        String::from_utf8_lossy(&s.command(LAUNCHER).arg("doctor").output().unwrap().stdout)
            .into_owned();
    assert!(
        doctor.contains(&format!("{} only in transcripts", lost_main.len())),
        "{doctor}"
    );
}

crate::on_each_release!(
    imported_usage_equals_what_the_api_answered_and_importing_twice_changes_nothing,
    a_request_seen_by_telemetry_and_a_transcript_counts_once,
    a_session_whose_telemetry_was_lost_is_filled_from_its_transcript_and_named_by_check,
);

#[test]
fn the_launcher_imports_history_in_the_background_at_launch() {
    let api = FakeAnthropic::start();
    let mut s = sandbox(&api, "main");
    // A session run without the launcher: only its transcript knows it.
    turn(&s, support::current_release().bin(), "before the launcher");
    let main_calls = api
        .calls()
        .iter()
        .filter(|c| c.query == QueryKind::Main)
        .count();
    s.set_env("CLAUDE_TELEMETRY_AUTO_IMPORT", "1");
    turn(&s, LAUNCHER, "with the launcher");
    let data = PathBuf::from(&s.env()["CLAUDE_TELEMETRY_DATA_DIR"]);
    let lock = data.join("import.lock");
    let imported = support::wait_until(Duration::from_secs(30), || {
        !lock.exists()
            && report(&s, &[])["summary"]["requests_by_source"]["transcript"]
                .as_u64()
                .unwrap_or(0)
                >= main_calls as u64
    });
    assert!(imported, "{}", report(&s, &[]));
}
