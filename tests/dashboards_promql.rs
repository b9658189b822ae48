//! Every Prometheus figure of every dashboard equals the truth of a known scenario, on a real
//! Prometheus 3, for any range and variable choice, as Grafana would query it.
//!
//! - The scenario (launches, exports, models, projects, users) is stored the way the stack
//!   stores it: one gauge sample per delta export, with the export's timestamp and the labels
//!   the collector's `prometheusremotewrite` exporter produces (names from
//!   `src/definitions.rs`), pushed over Prometheus's remote-write receiver (`promtool push
//!   metrics`) into Prometheus 3.5.3 running with the repository's `config/prometheus.yml`. A
//!   launch replayed 2 h late is pushed after everything newer, so it counts only if the
//!   out-of-order window works.
//! - Queries are interpolated by `tests/dashboards/grafana.js` with Grafana's own code
//!   (escapeRegex, rangeUtil.calculateInterval) and parsed with Grafana's grammars.
//! - Stats (instant queries at the range's end) must be within 1 % of the truth, per group;
//!   time series (range queries with Grafana's step and aligned start/end) must add up to the
//!   range's total within 3 %. The usage-limit panels read gauges, not sums: the table's used %
//!   and reset time per window must equal the truth exactly (each session's last sample,
//!   dropped once its window has reset by the range's end), and its history bars must equal,
//!   point by point, the highest used % sampled in each bar. The scenario's accounts have
//!   5-hour and weekly windows resetting inside the ranges and long sessions spanning a reset.
//!   The table as Grafana shows it is checked too: its transformations (merge, organize) run
//!   by @grafana/data's `transformDataFrame` on the frames Grafana's Prometheus datasource
//!   makes of the two instant queries give one row per window: used % now, reset time.
//!   Ranges 15m, 1h, 6h, 24h, 7d, 30d, 90d; variables at All, one model
//!   (`claude-opus-4-8[1m]`) picked, one project (`next.js`) picked, two models and one user,
//!   the other project (`api+tools`) and its team.

mod common;

#[path = "../src/definitions.rs"]
mod definitions;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{http_get, in_ci, repo_root, urlencode};
use definitions::{label, metric};
use serde_json::{Value, json};

const MODELS: [&str; 3] = [
    "claude-opus-4-8[1m]",
    "claude-sonnet-4-6",
    "claude-haiku-4-5-20261001",
];
const PROJECTS: [&str; 2] = ["next.js", "api+tools"];
const USERS: [&str; 3] = [
    "3f1c0a9b7e2d4c6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e1f",
    "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b",
    "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
];
const RANGES: [(&str, i64); 7] = [
    ("15m", 900),
    ("1h", 3600),
    ("6h", 6 * 3600),
    ("24h", 86400),
    ("7d", 7 * 86400),
    ("30d", 30 * 86400),
    ("90d", 90 * 86400),
];

/// Deterministic numbers (no dependency on an RNG crate).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn amount(&mut self, max_cents: u64) -> f64 {
        (1 + self.below(max_cents)) as f64 / 100.0
    }
}

/// One stored sample: the increment of one export for one series.
#[derive(Clone)]
struct Sample {
    metric: &'static str,
    labels: BTreeMap<&'static str, String>,
    t: i64,
    v: f64,
}

struct Scenario {
    /// End of every tested range (s), 12 h-aligned, not after now.
    to: i64,
    samples: Vec<Sample>,
    /// Samples of the launch replayed 2 h late (pushed last).
    replayed: Vec<Sample>,
    launches: usize,
}

fn scenario() -> Scenario {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    // Aligned to 12 h, a multiple of every step Grafana picks for these ranges (15 s … 12 h):
    // a range query's start and end are then not moved by its alignment to the step.
    let to = now / 43200 * 43200;
    let mut rng = Lcg(0x5eed_2026);
    // (launches, earliest offset, latest offset) before `to`, seconds.
    let buckets: [(usize, i64, i64); 10] = [
        (4, 200, 900),
        (6, 900, 3600),
        (10, 3600, 6 * 3600),
        (20, 6 * 3600, 86400),
        (22, 86400, 2 * 86400),
        (10, 2 * 86400, 7 * 86400),
        (6, 7 * 86400, 8 * 86400),
        (3, 8 * 86400, 30 * 86400),
        (3, 30 * 86400, 90 * 86400),
        (2, 90 * 86400, 95 * 86400),
    ];
    let mut starts = Vec::new();
    for (n, lo, hi) in buckets {
        for _ in 0..n {
            starts.push(to - lo - rng.below((hi - lo - 180) as u64) as i64 - 180);
        }
    }
    // One single-export launch 1 s before each range starts: it belongs to no tested range,
    // and a bar whose window reaches back over the range start would count it.
    let edge_from = starts.len();
    for (_, secs) in RANGES {
        starts.push(to - secs - 1 - 5);
    }
    // The replayed launch: 2 h 10 min before `to`, pushed after data up to `to`.
    let replayed_index = starts.len();
    starts.push(to - 2 * 3600 - 600);
    let mut samples = Vec::new();
    let mut replayed = Vec::new();
    for (i, start) in starts.iter().enumerate() {
        let project = PROJECTS[rng.below(2) as usize];
        let base: BTreeMap<&'static str, String> = [
            ("job", "claude-code".to_string()),
            ("instance", format!("launch-{i:03}")),
            (
                label::SESSION_ID,
                format!("00000000-0000-4000-8000-{i:012}"),
            ),
            (label::USER_ID, USERS[i % 3].to_string()),
            (label::TERMINAL_TYPE, "tmux".to_string()),
            (label::PROJECT, project.to_string()),
            (
                label::TEAM_ID,
                if project == "next.js" {
                    "web"
                } else {
                    "platform"
                }
                .to_string(),
            ),
            (label::DEPARTMENT, "eng".to_string()),
        ]
        .into_iter()
        .collect();
        let main_model = MODELS[rng.below(3) as usize];
        let edge = (edge_from..edge_from + RANGES.len()).contains(&i);
        let exports = if edge { 1 } else { 1 + rng.below(3) as i64 };
        let out = if i == replayed_index {
            &mut replayed
        } else {
            &mut samples
        };
        let mut push = |metric: &'static str, extra: &[(&'static str, &str)], t: i64, v: f64| {
            let mut labels = base.clone();
            for (k, val) in extra {
                labels.insert(k, val.to_string());
            }
            out.push(Sample {
                metric,
                labels,
                t,
                v,
            });
        };
        let mut export_times = Vec::new();
        for k in 0..exports {
            let jitter = if edge { 0 } else { rng.below(30) as i64 };
            let t = start + 5 + k * 60 + jitter;
            export_times.push(t);
            if k == 0 {
                push(
                    metric::SESSION_COUNT,
                    &[(label::START_TYPE, "fresh")],
                    t,
                    1.0,
                );
            }
            let mut models = vec![main_model];
            if rng.below(3) == 0 && main_model != MODELS[2] {
                models.push(MODELS[2]);
            }
            for model in models {
                push(
                    metric::COST_USAGE,
                    &[(label::MODEL, model)],
                    t,
                    rng.amount(150),
                );
                for ty in definitions::token_type::ALL {
                    let v = (1 + rng.below(5000)) as f64;
                    push(
                        metric::TOKEN_USAGE,
                        &[(label::MODEL, model), ("type", ty)],
                        t,
                        v,
                    );
                }
                if rng.below(2) == 0 {
                    let added = (1 + rng.below(80)) as f64;
                    let removed = rng.below(30) as f64;
                    push(
                        metric::LINES_OF_CODE,
                        &[(label::MODEL, model), ("type", "added")],
                        t,
                        added,
                    );
                    if removed > 0.0 {
                        push(
                            metric::LINES_OF_CODE,
                            &[(label::MODEL, model), ("type", "removed")],
                            t,
                            removed,
                        );
                    }
                }
            }
            push(
                metric::ACTIVE_TIME,
                &[("type", "cli")],
                t,
                (5 + rng.below(120)) as f64,
            );
            if rng.below(3) > 0 {
                push(
                    metric::ACTIVE_TIME,
                    &[("type", "user")],
                    t,
                    (1 + rng.below(40)) as f64,
                );
            }
            if rng.below(4) == 0 {
                push(metric::COMMIT_COUNT, &[], t, 1.0);
            }
            if rng.below(9) == 0 {
                push(metric::PULL_REQUEST_COUNT, &[], t, 1.0);
            }
            if rng.below(2) == 0 {
                let tool = ["Edit", "Write"][rng.below(2) as usize];
                let decision = ["accept", "accept", "reject"][rng.below(3) as usize];
                let lang = ["Rust", "TypeScript"][rng.below(2) as usize];
                push(
                    metric::CODE_EDIT_TOOL_DECISION,
                    &[
                        (label::TOOL_NAME, tool),
                        (label::DECISION, decision),
                        (label::LANGUAGE, lang),
                        (label::SOURCE, "config"),
                    ],
                    t,
                    1.0,
                );
            }
        }
        // The status line refreshes with each export; user i % 3 is on account i % 3.
        for t in export_times {
            out.extend(limit_samples(&base, i % 3, t, to));
        }
    }
    // Long sessions of each account, seen only through the status line (their claude metrics
    // are not what these panels read): a sample every 5 min over the last 4 h, so each spans
    // its account's 5-hour reset and shows a high used % before it and a low one after.
    for account in 0..ACCOUNTS {
        let base: BTreeMap<&'static str, String> = [
            ("job", "claude-code".to_string()),
            ("instance", format!("status-{account}")),
            (
                label::SESSION_ID,
                format!("00000000-0000-4000-9000-{account:012}"),
            ),
            (label::USER_ID, USERS[account].to_string()),
            (label::PROJECT, PROJECTS[account % 2].to_string()),
            (
                label::TEAM_ID,
                if account % 2 == 0 { "web" } else { "platform" }.to_string(),
            ),
            (label::DEPARTMENT, "eng".to_string()),
        ]
        .into_iter()
        .collect();
        let mut t = to - 4 * 3600 + 37 * account as i64;
        while t < to - 100 {
            samples.extend(limit_samples(&base, account, t, to));
            t += 300;
        }
    }
    Scenario {
        to,
        samples,
        replayed,
        launches: starts.len(),
    }
}

/// Accounts (plans) whose usage-limit windows the status line samples.
const ACCOUNTS: usize = 3;
const FIVE_HOURS: i64 = 5 * 3600;
const WEEK: i64 = 7 * 86400;
/// A window of unknown reset time (2.1.332's `model_scoped[]` rows may have `resets_at: null`):
/// the status line sends its used % and no reset gauge.
const NO_RESET_WINDOW: &str = "model_scoped:Fable";

/// The status-line samples of one refresh at `t`, as the collector stores the gauges
/// `claude_code.rate_limit.used_percent{window}` and `claude_code.rate_limit.resets_at{window}`
/// the launcher's relay received: the session's resource labels (project, team, launch
/// instance; no `user.id`: the status line does not send one), the point's `window` and
/// `session.id`. Each account's windows reset at fixed times relative to `to`, chosen inside
/// the tested ranges: 5-hour resets at `to` - 10 min, - 40 min and + 2 h (so - 3 h); weekly at
/// `to` - 2 d, + 3 d and - 6 h. Used % grows through a window to a per-window peak (40–109 %,
/// capped at 100).
fn limit_samples(
    base: &BTreeMap<&'static str, String>,
    account: usize,
    t: i64,
    to: i64,
) -> Vec<Sample> {
    let five_hour_reset = [to - 600, to - 2400, to + 7200][account];
    let weekly_reset = [to - 2 * 86400, to + 3 * 86400, to - 6 * 3600][account];
    let mut labels = base.clone();
    labels.remove(label::USER_ID);
    labels.remove(label::TERMINAL_TYPE);
    let mut out = Vec::new();
    let mut windows = vec![
        ("five_hour", FIVE_HOURS, five_hour_reset),
        ("seven_day", WEEK, weekly_reset),
    ];
    if account == 2 {
        windows.push((NO_RESET_WINDOW, WEEK, to + 86400));
    }
    for (w, (window, len, a_reset)) in windows.into_iter().enumerate() {
        // The window holding t: (reset - len, reset], reset ≡ a_reset (mod len).
        let n = (t - a_reset).div_euclid(len);
        let reset = if (t - a_reset).rem_euclid(len) == 0 {
            a_reset + n * len
        } else {
            a_reset + (n + 1) * len
        };
        let peak = 40 + ((account as i64 * 7 + n * 13 + w as i64 * 5).rem_euclid(70));
        let used = ((t - (reset - len)) as f64 / len as f64 * peak as f64).min(100.0);
        let used = (used * 10.0).round() / 10.0;
        let mut l = labels.clone();
        l.insert(label::WINDOW, window.to_string());
        out.push(Sample {
            metric: metric::RATE_LIMIT_USED_PERCENT,
            labels: l.clone(),
            t,
            v: used,
        });
        if window != NO_RESET_WINDOW {
            out.push(Sample {
                metric: metric::RATE_LIMIT_RESETS_AT,
                labels: l,
                t,
                v: reset as f64,
            });
        }
    }
    out
}

/// The exposition text `promtool push metrics` reads: one family at a time, explicit
/// millisecond timestamps.
fn exposition(samples: &[Sample]) -> String {
    let mut by_family: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_family.entry(s.metric).or_default().push(s);
    }
    let mut out = String::new();
    for (family, list) in by_family {
        let _ = writeln!(out, "# TYPE {family} gauge");
        for s in list {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            let _ = writeln!(
                out,
                "{family}{{{}}} {} {}",
                labels.join(","),
                s.v,
                s.t * 1000
            );
        }
    }
    out
}

/// Prometheus 3 on 127.0.0.1 with an OS-chosen port, a temporary data dir and the
/// repository's config; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(bin: &Path) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("prometheus.log");
        let mut child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                repo_root().join("config/prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--web.enable-remote-write-receiver")
            .arg("--storage.tsdb.retention.time=400d")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start prometheus");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut port = None;
        while port.is_none() {
            assert!(Instant::now() < deadline, "prometheus did not start");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "prometheus exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            port = BufReader::new(text.as_bytes())
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.contains("Listening on"))
                .find_map(|l| {
                    l.split("address=127.0.0.1:")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|p| p.parse::<u16>().ok())
                });
            if port.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let port = port.expect("port");
        loop {
            assert!(Instant::now() < deadline, "prometheus never became ready");
            if http_get(port, "/-/ready").is_ok_and(|(s, _)| s == 200) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    fn api(&self, path: &str) -> Value {
        let (status, body) = http_get(self.port, path).expect("prometheus http");
        let v: Value = serde_json::from_str(&body).expect("prometheus json");
        assert_eq!(status, 200, "{path}: {body}");
        v
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn push(promtool: &Path, port: u16, text: &str, dir: &Path, name: &str) {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("write metrics");
    let out = Command::new(promtool)
        .args(["push", "metrics", "--label=job=claude-code"])
        .arg(format!("http://127.0.0.1:{port}/api/v1/write"))
        .arg(&file)
        .output()
        .expect("promtool push");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && all.contains("SUCCESS"), "{all}");
}

/// What a panel's query claims to show, for the truth side.
enum Truth {
    /// Sum of `metric` samples with `fixed` labels, grouped by `by`.
    Sum {
        metric: &'static str,
        fixed: &'static [(&'static str, &'static [&'static str])],
        by: &'static [&'static str],
    },
    /// Distinct sessions started (session count samples).
    Sessions,
    /// Distinct users with a session started.
    Users,
    /// Distinct sessions with active time, per bar.
    ActiveSessions,
    /// `num / den * scale`, per group.
    Ratio(Box<Truth>, Box<Truth>, f64),
    /// Per limit window, the used % NOW: each session's last sample in the range, dropped when
    /// that session's last known reset time for the window is not after the range's end; of
    /// those the highest. `reset_ms`: instead, the reset time (ms, as Grafana's date units
    /// take it) of the sessions at that highest value (the latest of theirs, if they differ).
    LimitNow { reset_ms: bool },
    /// Per limit window and bar, the highest used % sampled in the bar `(t, t + step]`.
    LimitBars,
}

fn sum(
    metric: &'static str,
    fixed: &'static [(&'static str, &'static [&'static str])],
    by: &'static [&'static str],
) -> Truth {
    Truth::Sum { metric, fixed, by }
}

fn ratio(num: Truth, den: Truth, scale: f64) -> Truth {
    Truth::Ratio(Box::new(num), Box::new(den), scale)
}

const INPUTS: &[&str] = &["cacheRead", "input", "cacheCreation"];

/// The overview's table of the usage-limit windows.
const LIMIT_TABLE: &str = "Usage limit windows";

/// The truth of each panel target, by title and refId; `None`: a per-bar ratio, which does
/// not add up over a range (its parts are checked by other panels).
fn truth_of(title: &str, ref_id: &str) -> Option<Truth> {
    use metric::*;
    let t = match (title, ref_id) {
        ("Lines added", _) => sum(LINES_OF_CODE, &[("type", &["added"])], &[]),
        ("Lines removed", _) => sum(LINES_OF_CODE, &[("type", &["removed"])], &[]),
        ("Lines changed", "A") => sum(LINES_OF_CODE, &[("type", &["added"])], &[]),
        ("Lines changed", "B") => sum(LINES_OF_CODE, &[("type", &["removed"])], &[]),
        ("Commits", _) => sum(COMMIT_COUNT, &[], &[]),
        ("Pull requests", _) => sum(PULL_REQUEST_COUNT, &[], &[]),
        ("Edits accepted", _) => sum(CODE_EDIT_TOOL_DECISION, &[("decision", &["accept"])], &[]),
        ("Edits rejected", _) => sum(CODE_EDIT_TOOL_DECISION, &[("decision", &["reject"])], &[]),
        ("Lines of code over time", _) => sum(LINES_OF_CODE, &[], &["type"]),
        ("Commits and pull requests over time", "A") => sum(COMMIT_COUNT, &[], &[]),
        ("Commits and pull requests over time", "B") => sum(PULL_REQUEST_COUNT, &[], &[]),
        ("Edit decisions by tool", _) => {
            sum(CODE_EDIT_TOOL_DECISION, &[], &["tool_name", "decision"])
        }
        ("Edit decisions by language", _) => {
            sum(CODE_EDIT_TOOL_DECISION, &[], &["language", "decision"])
        }
        ("Acceptance rate", _) => ratio(
            sum(CODE_EDIT_TOOL_DECISION, &[("decision", &["accept"])], &[]),
            sum(CODE_EDIT_TOOL_DECISION, &[], &[]),
            1.0,
        ),
        ("Total cost", _) => sum(COST_USAGE, &[], &[]),
        ("Input tokens", _) => sum(TOKEN_USAGE, &[("type", &["input"])], &[]),
        ("Output tokens", _) => sum(TOKEN_USAGE, &[("type", &["output"])], &[]),
        ("Cache read tokens", _) => sum(TOKEN_USAGE, &[("type", &["cacheRead"])], &[]),
        ("Cache creation tokens", _) => sum(TOKEN_USAGE, &[("type", &["cacheCreation"])], &[]),
        ("Total tokens", _) => sum(TOKEN_USAGE, &[], &[]),
        ("Cost per 1K output tokens", _) => ratio(
            sum(COST_USAGE, &[], &[]),
            sum(TOKEN_USAGE, &[("type", &["output"])], &[]),
            1000.0,
        ),
        ("Cache efficiency", _) => ratio(
            sum(TOKEN_USAGE, &[("type", &["cacheRead"])], &[]),
            sum(TOKEN_USAGE, &[("type", INPUTS)], &[]),
            1.0,
        ),
        ("Cost by model over time" | "Cost over time" | "Cost by model", _) => {
            sum(COST_USAGE, &[], &["model"])
        }
        ("Tokens by type over time" | "Tokens by type", _) => sum(TOKEN_USAGE, &[], &["type"]),
        ("Tokens by model over time" | "Tokens by model", _) => sum(TOKEN_USAGE, &[], &["model"]),
        ("Cost per 1K output tokens by model", _) => return None,
        ("Cost per session", "A") if true => {
            // Two panels share the title: the overview's stat and the table of sessions; the
            // caller tells them apart by panel type.
            sum(COST_USAGE, &[], &["session_id", "user_id"])
        }
        ("Sessions" | "Sessions started over time", _) => Truth::Sessions,
        ("Users", _) => Truth::Users,
        ("Productivity ratio", _) => ratio(
            sum(ACTIVE_TIME, &[("type", &["cli"])], &[]),
            sum(ACTIVE_TIME, &[("type", &["user"])], &[]),
            1.0,
        ),
        ("Active time", "A") | ("CLI active time", _) => {
            sum(ACTIVE_TIME, &[("type", &["cli"])], &[])
        }
        ("Active time", "B") | ("User active time", _) => {
            sum(ACTIVE_TIME, &[("type", &["user"])], &[])
        }
        ("Average active time per session", _) => {
            ratio(sum(ACTIVE_TIME, &[], &[]), Truth::Sessions, 1.0)
        }
        ("Cost by user", _) => sum(COST_USAGE, &[], &["user_id"]),
        ("Cost by team", _) => sum(COST_USAGE, &[], &["team_id", "department", "project_name"]),
        ("Active time over time", _) => sum(ACTIVE_TIME, &[], &["type"]),
        ("Active sessions", _) => Truth::ActiveSessions,
        ("Active time by user", _) => sum(ACTIVE_TIME, &[], &["user_id", "type"]),
        (LIMIT_TABLE, "A") => Truth::LimitNow { reset_ms: false },
        (LIMIT_TABLE, "B") => Truth::LimitNow { reset_ms: true },
        ("Usage limit windows over time", _) => Truth::LimitBars,
        ("Lines per active hour by user", _) => ratio(
            sum(LINES_OF_CODE, &[], &["user_id"]),
            sum(ACTIVE_TIME, &[], &["user_id"]),
            3600.0,
        ),
        _ => panic!("no truth for panel `{title}` target {ref_id}: add it to truth_of"),
    };
    Some(t)
}

/// A variable choice: label -> picked values (absent: All).
type Picks = BTreeMap<&'static str, Vec<&'static str>>;

/// Metrics carrying a `model` label (the others ignore the model variable in every query).
fn has_model(m: &str) -> bool {
    [
        metric::COST_USAGE,
        metric::TOKEN_USAGE,
        metric::LINES_OF_CODE,
    ]
    .contains(&m)
}

/// Whether the series of `m` carry label `l`: the model only on cost, tokens and lines; the
/// rate-limit gauges no user (the status line sends no `user.id`), so a user or model pick
/// does not narrow them.
fn carries(m: &str, l: &str) -> bool {
    match l {
        label::MODEL => has_model(m),
        label::USER_ID => !is_limit(m),
        _ => true,
    }
}

fn is_limit(m: &str) -> bool {
    [
        metric::RATE_LIMIT_USED_PERCENT,
        metric::RATE_LIMIT_RESETS_AT,
    ]
    .contains(&m)
}

fn selected<'a>(
    samples: &'a [Sample],
    m: &'a str,
    picks: &'a Picks,
    a: i64,
    b: i64,
) -> impl Iterator<Item = &'a Sample> + 'a {
    samples.iter().filter(move |s| {
        s.metric == m
            && s.t > a
            && s.t <= b
            && picks.iter().all(|(k, vs)| {
                !carries(m, k) || s.labels.get(k).is_some_and(|x| vs.contains(&x.as_str()))
            })
    })
}

type Groups = BTreeMap<Vec<(String, String)>, f64>;

/// The truth in (a, b], per group.
fn evaluate<'a>(truth: &Truth, samples: &'a [Sample], picks: &'a Picks, a: i64, b: i64) -> Groups {
    let mut g = Groups::new();
    match truth {
        Truth::Sum { metric, fixed, by } => {
            for s in selected(samples, metric, picks, a, b) {
                if !fixed
                    .iter()
                    .all(|(k, vs)| s.labels.get(k).is_some_and(|x| vs.contains(&x.as_str())))
                {
                    continue;
                }
                let key = by
                    .iter()
                    .map(|l| (l.to_string(), s.labels.get(l).cloned().unwrap_or_default()))
                    .collect();
                *g.entry(key).or_insert(0.0) += s.v;
            }
        }
        Truth::Sessions => {
            let n = selected(samples, metric::SESSION_COUNT, picks, a, b)
                .map(|s| s.v)
                .sum::<f64>();
            g.insert(vec![], n);
        }
        Truth::Users => {
            let users: BTreeSet<&String> = selected(samples, metric::SESSION_COUNT, picks, a, b)
                .filter_map(|s| s.labels.get(label::USER_ID))
                .collect();
            g.insert(vec![], users.len() as f64);
        }
        Truth::ActiveSessions => {
            let sessions: BTreeSet<&String> = selected(samples, metric::ACTIVE_TIME, picks, a, b)
                .filter_map(|s| s.labels.get(label::SESSION_ID))
                .collect();
            g.insert(vec![], sessions.len() as f64);
        }
        Truth::LimitNow { reset_ms } => {
            type Key<'s> = (&'s String, &'s String);
            let key = |s: &'a Sample| -> Option<Key<'a>> {
                Some((
                    s.labels.get(label::SESSION_ID)?,
                    s.labels.get(label::WINDOW)?,
                ))
            };
            let last = |m: &'a str| {
                let mut last: BTreeMap<Key<'a>, &'a Sample> = BTreeMap::new();
                for s in selected(samples, m, picks, a, b) {
                    if let Some(k) = key(s)
                        && last.get(&k).is_none_or(|l| l.t <= s.t)
                    {
                        last.insert(k, s);
                    }
                }
                last
            };
            let resets = last(metric::RATE_LIMIT_RESETS_AT);
            let current: Vec<(Key<'a>, f64)> = last(metric::RATE_LIMIT_USED_PERCENT)
                .into_iter()
                .filter(|(k, _)| resets.get(k).is_none_or(|r| r.v > b as f64))
                .map(|(k, s)| (k, s.v))
                .collect();
            let mut top: BTreeMap<&String, f64> = BTreeMap::new();
            for ((_, window), v) in &current {
                let e = top.entry(window).or_insert(f64::MIN);
                *e = e.max(*v);
            }
            for (window, max) in top {
                let value = if *reset_ms {
                    current
                        .iter()
                        .filter(|((_, w), v)| *w == window && *v == max)
                        .filter_map(|(k, _)| resets.get(k).map(|r| r.v * 1000.0))
                        .reduce(f64::max)
                } else {
                    Some(max)
                };
                if let Some(v) = value {
                    g.insert(vec![(label::WINDOW.to_string(), window.clone())], v);
                }
            }
        }
        Truth::LimitBars => unreachable!("bars are evaluated by limit_bars"),
        Truth::Ratio(num, den, scale) => {
            let n = evaluate(num, samples, picks, a, b);
            let d = evaluate(den, samples, picks, a, b);
            for (k, dv) in d {
                if dv > 0.0 {
                    g.insert(k.clone(), n.get(&k).copied().unwrap_or(0.0) / dv * scale);
                }
            }
        }
    }
    g
}

/// The truth of a bars panel of the limit windows: (window, bar time) -> highest used %
/// sampled in `(bar, bar + step]`, for the bars `start, start + step, …, end`.
fn limit_bars(
    samples: &[Sample],
    picks: &Picks,
    start: i64,
    end: i64,
    step: i64,
) -> BTreeMap<(String, i64), f64> {
    let mut bars = BTreeMap::new();
    for s in selected(
        samples,
        metric::RATE_LIMIT_USED_PERCENT,
        picks,
        start,
        end + step,
    ) {
        let bar = start + (s.t - start - 1).div_euclid(step) * step;
        let window = s.labels.get(label::WINDOW).cloned().unwrap_or_default();
        let e = bars.entry((window, bar)).or_insert(f64::MIN);
        *e = f64::max(*e, s.v);
    }
    bars
}

fn total(g: &Groups) -> f64 {
    g.values().sum()
}

fn close(got: f64, want: f64, tolerance: f64) -> bool {
    (got - want).abs() <= tolerance * want.abs().max(1e-9) || (got - want).abs() < 1e-9
}

/// One panel target of a dashboard.
struct Target {
    dashboard: String,
    title: String,
    ref_id: String,
    panel_type: String,
    expr: String,
    max_data_points: u64,
    min_interval: String,
    /// The panel's transformations (Grafana runs them on the query results).
    transformations: Value,
}

fn targets(dashboard: &Value, file: &str, out: &mut Vec<Target>) {
    fn walk(panels: &Value, file: &str, out: &mut Vec<Target>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], file, out);
            if p["datasource"]["uid"].as_str() != Some(definitions::datasource::PROMETHEUS_UID) {
                continue;
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                let Some(expr) = t["expr"].as_str() else {
                    continue;
                };
                out.push(Target {
                    dashboard: file.to_string(),
                    title: p["title"].as_str().unwrap_or("").to_string(),
                    ref_id: t["refId"].as_str().unwrap_or("A").to_string(),
                    panel_type: p["type"].as_str().unwrap_or("").to_string(),
                    expr: expr.to_string(),
                    max_data_points: p["maxDataPoints"].as_u64().unwrap_or(1000),
                    min_interval: p["interval"].as_str().unwrap_or("").to_string(),
                    transformations: p["transformations"].clone(),
                });
            }
        }
    }
    walk(&dashboard["panels"], file, out);
}

fn tool(var: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if found.is_none() {
        assert!(
            !in_ci(),
            "{var} is required by this test and missing (CI=true: failing, not skipping); run tests/install-tools.sh"
        );
        eprintln!("SKIPPED: {var} not set (source the env file of tests/install-tools.sh)");
    }
    found
}

fn key_of(metric: &Value, by: &[&str]) -> Vec<(String, String)> {
    by.iter()
        .map(|l| {
            (
                l.to_string(),
                metric[*l].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn group_labels(truth: &Truth) -> Vec<&'static str> {
    match truth {
        Truth::Sum { by, .. } => by.to_vec(),
        Truth::Ratio(n, _, _) => group_labels(n),
        Truth::LimitNow { .. } | Truth::LimitBars => vec![label::WINDOW],
        _ => vec![],
    }
}

#[test]
fn every_dashboard_figure_matches_the_scenario_on_a_real_prometheus_3() {
    let (Some(prometheus), Some(promtool), Some(npm)) = (
        tool("CLAUDE_TELEMETRY_TEST_PROMETHEUS3"),
        tool("CLAUDE_TELEMETRY_TEST_PROMTOOL3"),
        tool("CLAUDE_TELEMETRY_TEST_GRAFANA_NPM"),
    ) else {
        return;
    };
    let sc = scenario();
    assert!(sc.launches >= 50);
    // The limit scenario makes both halves of "used % now" matter (counted over windows x
    // ranges): a window's highest last sample is one whose window has since reset, and a kept
    // session's highest sample is higher than the highest last one.
    let mut with_samples = sc.samples.clone();
    with_samples.extend(sc.replayed.iter().cloned());
    let (mut reset_matters, mut last_matters) = (0, 0);
    for (_, secs) in RANGES {
        let (from, to) = (sc.to - secs, sc.to);
        let all_picks = Picks::new();
        // (session, window) -> (last sample, highest sample, last reset time).
        type Seen = (Option<(i64, f64)>, f64, Option<(i64, f64)>);
        let mut seen: BTreeMap<(&String, &String), Seen> = BTreeMap::new();
        for m in [
            metric::RATE_LIMIT_USED_PERCENT,
            metric::RATE_LIMIT_RESETS_AT,
        ] {
            for s in selected(&with_samples, m, &all_picks, from, to) {
                let key = (&s.labels[label::SESSION_ID], &s.labels[label::WINDOW]);
                let e = seen.entry(key).or_insert((None, f64::MIN, None));
                let slot = if m == metric::RATE_LIMIT_RESETS_AT {
                    &mut e.2
                } else {
                    e.1 = e.1.max(s.v);
                    &mut e.0
                };
                if slot.is_none_or(|(t, _)| t <= s.t) {
                    *slot = Some((s.t, s.v));
                }
            }
        }
        let windows: BTreeSet<&String> = seen.keys().map(|(_, w)| *w).collect();
        for w in windows {
            let of_window = || seen.iter().filter(move |((_, sw), _)| *sw == w);
            let kept = || of_window().filter(|(_, (_, _, r))| r.is_none_or(|(_, r)| r > to as f64));
            let top = |it: &mut dyn Iterator<Item = f64>| it.fold(f64::MIN, f64::max);
            let last_all = top(&mut of_window().filter_map(|(_, (l, _, _))| l.map(|l| l.1)));
            let last_kept = top(&mut kept().filter_map(|(_, (l, _, _))| l.map(|l| l.1)));
            let highest_kept = top(&mut kept().map(|(_, (_, h, _))| *h));
            if last_all > last_kept {
                reset_matters += 1;
            }
            if highest_kept > last_kept {
                last_matters += 1;
            }
        }
    }
    eprintln!(
        "limit scenario: the reset filter matters in {reset_matters}, the last sample in {last_matters} windows x ranges"
    );
    assert!(
        reset_matters >= 7 && last_matters >= 7,
        "the limit scenario no longer tells the reset filter ({reset_matters} windows x ranges) or the last sample ({last_matters}) apart"
    );
    // Sessions that started in the day before a range must not be counted in it.
    for (name, secs) in &RANGES[1..4] {
        let before = sc
            .samples
            .iter()
            .filter(|s| s.metric == metric::SESSION_COUNT)
            .filter(|s| s.t > sc.to - secs - 86400 && s.t <= sc.to - secs)
            .count();
        assert!(
            before >= 20,
            "only {before} launches in the day before the {name} range"
        );
    }
    let prom = Prometheus::start(&prometheus);
    let work = tempfile::tempdir().expect("tempdir");
    // In time order, a week per request, as a stack collecting for months would have
    // written them: Prometheus only takes samples up to its out-of-order window behind the
    // newest one.
    let mut ordered = sc.samples.clone();
    ordered.sort_by_key(|s| s.t);
    let mut chunk: Vec<Sample> = Vec::new();
    let mut pushes = 0;
    for s in ordered {
        if chunk.first().is_some_and(|f| s.t - f.t > 7 * 86400) {
            pushes += 1;
            let name = format!("{pushes}.prom");
            push(
                &promtool,
                prom.port,
                &exposition(&chunk),
                work.path(),
                &name,
            );
            chunk.clear();
        }
        chunk.push(s);
    }
    push(
        &promtool,
        prom.port,
        &exposition(&chunk),
        work.path(),
        "last.prom",
    );
    // The replayed launch arrives after data 2 h newer than it.
    push(
        &promtool,
        prom.port,
        &exposition(&sc.replayed),
        work.path(),
        "replayed.prom",
    );
    let mut all = sc.samples.clone();
    all.extend(sc.replayed.iter().cloned());

    // Prometheus stored every sample, the replayed ones included.
    let mut stored = 0.0;
    for m in metric::ALL {
        let r = prom.api(&format!(
            "/api/v1/query?query={}&time={}",
            urlencode(&format!("sum(count_over_time({m}[100d]))")),
            sc.to
        ));
        stored += r["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    assert_eq!(stored as usize, all.len(), "samples stored vs pushed");

    let dir = repo_root().join("config/grafana/dashboards");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dashboards")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut all_targets = Vec::new();
    let mut variables: BTreeMap<String, Value> = BTreeMap::new();
    for f in &files {
        let d: Value = serde_json::from_slice(&std::fs::read(f).expect("read")).expect("json");
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        targets(&d, &name, &mut all_targets);
        variables.insert(name, d["templating"]["list"].clone());
    }
    assert!(all_targets.len() >= 40, "{}", all_targets.len());

    let choices: [(&str, Picks); 5] = [
        ("All", Picks::new()),
        (
            "model",
            [(label::MODEL, vec![MODELS[0]])].into_iter().collect(),
        ),
        (
            "project",
            [(label::PROJECT, vec![PROJECTS[0]])].into_iter().collect(),
        ),
        (
            "two models, one user",
            [
                (label::MODEL, vec![MODELS[0], MODELS[2]]),
                (label::USER_ID, vec![USERS[1]]),
            ]
            .into_iter()
            .collect(),
        ),
        (
            "other project, one team",
            [
                (label::PROJECT, vec![PROJECTS[1]]),
                (label::TEAM_ID, vec!["platform"]),
            ]
            .into_iter()
            .collect(),
        ),
    ];
    // The Prometheus datasource's timeInterval: Grafana's floor for `$__interval`.
    let datasources = std::fs::read_to_string(
        repo_root().join("config/grafana/provisioning/datasources/datasources.yaml"),
    )
    .expect("datasources.yaml");
    let ds_interval = datasources
        .lines()
        .find_map(|l| l.trim().strip_prefix("timeInterval:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("timeInterval in datasources.yaml");
    // Grafana side: one node process for every (target, range, choice).
    let mut queries = Vec::new();
    let mut plan = Vec::new();
    for (ti, t) in all_targets.iter().enumerate() {
        for (ri, (_, secs)) in RANGES.iter().enumerate() {
            for (ci, (_, picks)) in choices.iter().enumerate() {
                let mut vars = serde_json::Map::new();
                for v in variables[&t.dashboard].as_array().into_iter().flatten() {
                    let name = v["name"].as_str().unwrap_or_default();
                    let label_name = match name {
                        "project" => label::PROJECT,
                        "user" => label::USER_ID,
                        "team_id" => label::TEAM_ID,
                        "department" => label::DEPARTMENT,
                        "model" => label::MODEL,
                        other => panic!("variable `{other}` not modelled"),
                    };
                    let value = match picks.get(label_name) {
                        Some(v) => json!(v),
                        None => json!("$__all"),
                    };
                    vars.insert(
                        name.to_string(),
                        json!({"value": value, "allValue": v["allValue"]}),
                    );
                }
                queries.push(json!({
                    "id": queries.len(),
                    "lang": "promql",
                    "expr": t.expr,
                    "vars": vars,
                    "fromMs": (sc.to - secs) * 1000,
                    "toMs": sc.to * 1000,
                    "maxDataPoints": t.max_data_points,
                    "minInterval": t.min_interval,
                    "dsInterval": ds_interval,
                }));
                plan.push((ti, ri, ci));
            }
        }
    }
    let interpolated = grafana(&npm, &json!({ "queries": queries }));

    let mut failures = Vec::new();
    let mut checked = 0;
    let mut limit_checked = 0;
    // The limit table's instant results per (range, choice), by refId, for its transformations.
    type ByRefId = Vec<(String, Vec<Value>)>;
    let mut limit_tables: BTreeMap<(usize, usize), ByRefId> = BTreeMap::new();
    let mut limit_table_transformations = Value::Null;
    for (q, (ti, ri, ci)) in interpolated.iter().zip(&plan) {
        let t = &all_targets[*ti];
        let (range_name, secs) = RANGES[*ri];
        let (choice_name, picks) = &choices[*ci];
        let what = format!(
            "{} / `{}` {} [{range_name}, {choice_name}]",
            t.dashboard, t.title, t.ref_id
        );
        let errors = q["errors"].as_array().cloned().unwrap_or_default();
        if !errors.is_empty() {
            failures.push(format!("{what}: {errors:?}"));
            continue;
        }
        let expr = q["expr"].as_str().unwrap_or_default();
        let from = sc.to - secs;
        let is_table_of_sessions = t.title == "Cost per session" && t.panel_type == "table";
        let truth = if t.title == "Cost per session" && !is_table_of_sessions {
            Some(ratio(
                sum(metric::COST_USAGE, &[], &[]),
                Truth::Sessions,
                1.0,
            ))
        } else {
            truth_of(&t.title, &t.ref_id)
        };
        let Some(truth) = truth else { continue };
        checked += 1;
        if matches!(truth, Truth::LimitNow { .. } | Truth::LimitBars) {
            limit_checked += 1;
        }
        if t.panel_type == "timeseries" {
            let step = q["intervalMs"].as_i64().unwrap_or(15000) / 1000;
            let start = from / step * step;
            let end = sc.to / step * step;
            let r = prom_query(
                &prom,
                &format!(
                    "/api/v1/query_range?query={}&start={start}&end={end}&step={step}",
                    urlencode(expr)
                ),
            );
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{what}: {e} in {expr}"));
                    continue;
                }
            };
            if matches!(truth, Truth::LimitBars) {
                let want = limit_bars(&all, picks, start, end, step);
                let mut got = BTreeMap::new();
                for s in &r {
                    let window = s["metric"][label::WINDOW].as_str().unwrap_or_default();
                    for p in s["values"].as_array().into_iter().flatten() {
                        let t = p[0].as_f64().unwrap_or_default() as i64;
                        let v = p[1].as_str().and_then(|v| v.parse::<f64>().ok());
                        got.insert((window.to_string(), t), v.unwrap_or(f64::NAN));
                    }
                }
                let wrong: Vec<String> = want
                    .keys()
                    .chain(got.keys())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .filter(|k| got.get(*k) != want.get(*k))
                    .map(|k| format!("{k:?}: {:?}, truth {:?}", got.get(k), want.get(k)))
                    .collect();
                if want.is_empty() || !wrong.is_empty() {
                    failures.push(format!(
                        "{what}: {} of {} bars wrong (step {step} s) in {expr}\n  {}",
                        wrong.len(),
                        want.len(),
                        wrong
                            .iter()
                            .take(5)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("\n  ")
                    ));
                }
                continue;
            }
            let got: f64 = r
                .iter()
                .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p[1].as_str().and_then(|v| v.parse::<f64>().ok()))
                .sum();
            let want = if matches!(truth, Truth::ActiveSessions) {
                // One count per bar: sessions active in [t, t + step).
                let mut n = 0.0;
                let mut at = start;
                while at <= end {
                    n += total(&evaluate(&truth, &all, picks, at, at + step));
                    at += step;
                }
                n
            } else {
                total(&evaluate(&truth, &all, picks, from, sc.to))
            };
            if !close(got, want, 0.03) {
                failures.push(format!(
                    "{what}: bars add up to {got}, truth {want} (step {step} s) in {expr}"
                ));
            }
        } else {
            let r = match prom_query(
                &prom,
                &format!("/api/v1/query?query={}&time={}", urlencode(expr), sc.to),
            ) {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{what}: {e} in {expr}"));
                    continue;
                }
            };
            if t.title == LIMIT_TABLE && t.panel_type == "table" {
                limit_tables
                    .entry((*ri, *ci))
                    .or_default()
                    .push((t.ref_id.clone(), r.clone()));
                limit_table_transformations = t.transformations.clone();
            }
            let want = evaluate(&truth, &all, picks, from, sc.to);
            let by = group_labels(&truth);
            let mut got = Groups::new();
            for s in &r {
                let v = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN);
                if v.is_finite() {
                    got.insert(key_of(&s["metric"], &by), v);
                }
            }
            let want: Groups = want.into_iter().filter(|(_, v)| *v != 0.0).collect();
            let got: Groups = got.into_iter().filter(|(_, v)| *v != 0.0).collect();
            let limit = if is_table_of_sessions { 20 } else { usize::MAX };
            // Used % and reset times are read, not summed: exact.
            let tolerance = if matches!(truth, Truth::LimitNow { .. }) {
                1e-9
            } else {
                0.01
            };
            if got.len() != want.len().min(limit) {
                failures.push(format!(
                    "{what}: {} groups shown, truth has {} in {expr}\n  got {got:?}\n  want {want:?}",
                    got.len(),
                    want.len()
                ));
                continue;
            }
            for (k, v) in &got {
                match want.get(k) {
                    Some(w) if close(*v, *w, tolerance) => {}
                    other => failures.push(format!(
                        "{what}: group {k:?} shows {v}, truth {other:?} in {expr}"
                    )),
                }
            }
        }
    }
    // The limit table as Grafana shows it: its transformations (merge, organize) run by
    // @grafana/data on the frames of queries A and B must give one row per window with the
    // used % now and its reset time.
    let mut tables = Vec::new();
    let mut table_plan = Vec::new();
    for ((ri, ci), results) in &limit_tables {
        let frames: Vec<Value> = results
            .iter()
            .map(|(ref_id, r)| table_frame(ref_id, r, results.len()))
            .collect();
        tables.push(json!({"id": tables.len(), "frames": frames,
            "transformations": limit_table_transformations}));
        table_plan.push((*ri, *ci));
    }
    assert_eq!(
        tables.len(),
        RANGES.len() * choices.len(),
        "limit tables run"
    );
    let shown = grafana(&npm, &json!({ "tables": tables }));
    for (table, (ri, ci)) in shown.iter().zip(&table_plan) {
        let (range_name, secs) = RANGES[*ri];
        let (choice_name, picks) = &choices[*ci];
        let what = format!("`{LIMIT_TABLE}` as shown [{range_name}, {choice_name}]");
        let columns: Vec<(&str, &Vec<Value>)> = table["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["name"].as_str()?, c["values"].as_array()?)))
            .collect();
        let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
        if names != ["Window", "Used", "Resets at"] {
            failures.push(format!("{what}: columns {names:?}"));
            continue;
        }
        let (from, to) = (sc.to - secs, sc.to);
        let used = evaluate(&Truth::LimitNow { reset_ms: false }, &all, picks, from, to);
        let resets = evaluate(&Truth::LimitNow { reset_ms: true }, &all, picks, from, to);
        let mut rows = Vec::new();
        for row in 0..columns[0].1.len() {
            let cell = |c: usize| columns[c].1.get(row).cloned().unwrap_or(Value::Null);
            rows.push((
                cell(0).as_str().unwrap_or_default().to_string(),
                cell(1).as_f64(),
                cell(2).as_f64(),
            ));
        }
        let want: Vec<(String, Option<f64>, Option<f64>)> = used
            .iter()
            .map(|(k, v)| (k[0].1.clone(), Some(*v), resets.get(k).copied()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        if rows != want {
            failures.push(format!("{what}: rows {rows:?}, truth {want:?}"));
        }
    }
    assert!(checked >= 1000, "only {checked} figures checked");
    // The limit table's two queries and the bars, for every range and variable choice.
    assert_eq!(limit_checked, 3 * RANGES.len() * choices.len());
    assert!(
        failures.is_empty(),
        "{} of {checked} figures wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{checked} dashboard figures match the scenario ({} launches), {limit_checked} of them limit-window panels",
        sc.launches
    );
}

/// The frame Grafana's Prometheus datasource makes of an instant query with format "table"
/// (grafana/grafana packages/grafana-prometheus/src/result_transformer.ts `transformDFToTable`):
/// `Time` (ms), one field per label sorted by name, then the value, named `Value #<refId>`
/// when the panel's response holds more than one query.
fn table_frame(ref_id: &str, result: &[Value], queries: usize) -> Value {
    let labels: BTreeSet<&str> = result
        .iter()
        .flat_map(|s| s["metric"].as_object().into_iter().flatten())
        .map(|(k, _)| k.as_str())
        .collect();
    let mut fields = vec![json!({"name": "Time", "type": "time",
        "values": result.iter().map(|s| s["value"][0].as_f64().unwrap_or_default() * 1000.0).collect::<Vec<_>>()})];
    for l in labels {
        fields.push(json!({"name": l, "type": "string",
            "values": result.iter().map(|s| s["metric"][l].as_str().unwrap_or_default()).collect::<Vec<_>>()}));
    }
    let value = if queries > 1 {
        format!("Value #{ref_id}")
    } else {
        "Value".to_string()
    };
    fields.push(json!({"name": value, "type": "number",
        "values": result.iter().map(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok())).collect::<Vec<_>>()}));
    json!({"refId": ref_id, "fields": fields})
}

fn prom_query(prom: &Prometheus, path: &str) -> Result<Vec<Value>, String> {
    let (status, body) = http_get(prom.port, path).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if status != 200 {
        return Err(format!("HTTP {status}: {}", v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Runs tests/dashboards/grafana.js on `input`.
fn grafana(node_modules: &Path, input: &Value) -> Vec<Value> {
    let script = repo_root().join("tests/dashboards/grafana.js");
    let mut child = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", node_modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (Node.js is required)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write to node");
    let out = child.wait_with_output().expect("node output");
    assert!(
        out.status.success(),
        "grafana.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("grafana.js json")
}

/// Every LogQL query of the dashboards, interpolated as Grafana does for All, one model and a
/// project with a dot, parses with Grafana's LogQL grammar, has only escapes Loki's Go
/// unquoting accepts, and selects streams only by labels Loki indexes under
/// `config/loki.yaml` (where the launch id is structured metadata, not a label).
#[test]
fn every_logql_query_parses_for_every_variable_choice_and_selects_only_index_labels() {
    let Some(npm) = tool("CLAUDE_TELEMETRY_TEST_GRAFANA_NPM") else {
        return;
    };
    let loki = std::fs::read_to_string(repo_root().join("config/loki.yaml")).expect("loki.yaml");
    assert!(
        loki.contains("ignore_defaults: true") && loki.contains("attributes: [service.name]"),
        "config/loki.yaml must index service.name only (Loki's defaults index service.instance.id)"
    );
    let index_labels = [definitions::loki::SERVICE_LABEL];
    let mut queries = Vec::new();
    let mut what = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("config/grafana/dashboards")).expect("dir") {
        let path = entry.expect("entry").path();
        let d: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let vars = d["templating"]["list"].clone();
        fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
            for p in panels.as_array().into_iter().flatten() {
                walk(&p["panels"], out);
                if p["datasource"]["uid"].as_str() != Some(definitions::datasource::LOKI_UID) {
                    continue;
                }
                for t in p["targets"].as_array().into_iter().flatten() {
                    if let Some(e) = t["expr"].as_str() {
                        out.push((p["title"].as_str().unwrap_or("").to_string(), e.to_string()));
                    }
                }
            }
        }
        let mut exprs = Vec::new();
        walk(&d["panels"], &mut exprs);
        for (title, expr) in exprs {
            // Events carry the bare model id (no `[1m]`); the variable's regex strips it.
            for (model, project) in [
                (None, None),
                (Some("claude-opus-4-8"), None),
                (None, Some("next.js")),
                (None, Some("api+tools")),
            ] {
                let mut v = serde_json::Map::new();
                for var in vars.as_array().into_iter().flatten() {
                    let name = var["name"].as_str().unwrap_or_default();
                    let pick = match name {
                        "model" => model,
                        "project" => project,
                        _ => None,
                    };
                    let value = pick.map_or(json!("$__all"), |p| json!([p]));
                    v.insert(
                        name.to_string(),
                        json!({"value": value, "allValue": var["allValue"]}),
                    );
                }
                queries.push(json!({
                    "id": queries.len(), "lang": "logql", "expr": expr, "vars": v,
                    "fromMs": 0, "toMs": 3_600_000, "maxDataPoints": 1000, "minInterval": "15s",
                }));
                what.push(format!(
                    "{} / `{title}` model={model:?} project={project:?}",
                    path.display()
                ));
            }
        }
    }
    assert!(queries.len() >= 40, "{}", queries.len());
    let out = grafana(&npm, &json!({ "queries": queries }));
    let selector = regex_lite_selector_labels;
    let mut failures = Vec::new();
    for (q, w) in out.iter().zip(&what) {
        let errors = q["errors"].as_array().cloned().unwrap_or_default();
        if !errors.is_empty() {
            failures.push(format!("{w}: {errors:?} in {}", q["expr"]));
        }
        let expr = q["expr"].as_str().unwrap_or_default();
        for l in selector(expr) {
            if !index_labels.contains(&l.as_str()) {
                failures.push(format!(
                    "{w}: stream selector uses `{l}`, not an index label"
                ));
            }
        }
        if expr.contains("${") || expr.contains("$__") {
            failures.push(format!("{w}: not interpolated: {expr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Label names inside the first `{…}` stream selector of a LogQL query.
fn regex_lite_selector_labels(expr: &str) -> Vec<String> {
    let Some(open) = expr.find('{') else {
        return vec![];
    };
    let Some(close) = expr[open..].find('}') else {
        return vec![];
    };
    expr[open + 1..open + close]
        .split(',')
        .filter_map(|m| {
            let name: String = m
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// The repository's Prometheus config is valid for Prometheus 3 (promtool 3.5.3).
#[test]
fn prometheus_config_passes_promtool_3() {
    let Some(promtool) = tool("CLAUDE_TELEMETRY_TEST_PROMTOOL3") else {
        return;
    };
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(repo_root().join("config/prometheus.yml"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
