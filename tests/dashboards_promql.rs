//! Every PromQL expression of every dashboard is parsed by promtool and evaluated on a real
//! Prometheus loaded with a known scenario, and the stat panels show the scenario's totals.
//!
//! The scenario's series are named and labelled as the collector's prometheus exporter names
//! them (from `src/definitions.rs`), each per-session series starting with a zero sample at its
//! creation, as `--enable-feature=created-timestamp-zero-ingestion` ingests it. The blocks are
//! written by `promtool tsdb create-blocks-from openmetrics` and served by Prometheus on
//! 127.0.0.1 from a temporary storage directory.

mod common;

#[path = "../src/definitions.rs"]
mod definitions;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{free_port, http_get, repo_root, require_tool, urlencode};
use definitions::{label, metric, token_type};
use serde_json::Value;

const STEP: i64 = 15;
const RANGE: &str = "6h";
const RANGE_SECS: i64 = 6 * 3600;
const MODELS: [&str; 2] = ["claude-opus-4-8[1m]", "claude-haiku-4-5"];
const USERS: [&str; 3] = [
    "3f1c0a9b7e2d4c6f8a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e1f",
    "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b",
    "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
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
}

/// One counter series: labels, the times (s) and cumulative values of its samples.
struct Series {
    family: &'static str,
    labels: BTreeMap<&'static str, String>,
    samples: Vec<(i64, f64)>,
}

/// A series: its family and sorted labels.
type SeriesKey = (&'static str, Vec<(&'static str, String)>);

#[derive(Default)]
struct Totals {
    sessions: usize,
    users: BTreeSet<String>,
    cost: f64,
    cost_by_model: BTreeMap<String, f64>,
    tokens: BTreeMap<&'static str, f64>,
    tokens_by_model: BTreeMap<String, f64>,
    lines_added: f64,
    lines_removed: f64,
    commits: f64,
    prs: f64,
    accepts: f64,
    rejects: f64,
    cli: f64,
    user: f64,
    sessions_by_user: BTreeMap<String, usize>,
}

struct Scenario {
    series: Vec<Series>,
    totals: Totals,
    end: i64,
}

/// Builds the per-session increments, then turns them into exporter-style cumulative series
/// sampled every 15 s from their creation (zero sample) until `end`.
fn scenario(t0: i64) -> Scenario {
    let end = t0 + RANGE_SECS - 600;
    let mut rng = Lcg(42);
    let mut totals = Totals::default();
    // (family, labels) -> list of (time, delta)
    let mut deltas: BTreeMap<SeriesKey, Vec<(i64, f64)>> = BTreeMap::new();
    for i in 0..6i64 {
        let session_id = format!("0000000{i}-5e55-4a1d-9c0d-00000000000{i}");
        let user = USERS[(i % 3) as usize].to_string();
        let team = if i % 2 == 0 { "platform" } else { "web" };
        let base = |extra: &[(&'static str, String)]| {
            let mut l = vec![
                ("job", "claude-code".to_string()),
                ("instance", "otel-collector:8889".to_string()),
                ("otel_scope_name", "com.anthropic.claude_code".to_string()),
                ("otel_scope_version", "2.1.197".to_string()),
                ("service_name", "claude-code".to_string()),
                ("service_version", "2.1.197".to_string()),
                ("os_type", "linux".to_string()),
                ("host_arch", "amd64".to_string()),
                (label::SESSION_ID, session_id.clone()),
                (label::USER_ID, user.clone()),
                (label::TERMINAL_TYPE, "tmux".to_string()),
                (label::TEAM_ID, team.to_string()),
                (label::DEPARTMENT, "engineering".to_string()),
                (
                    label::PROJECT,
                    if i < 3 { "web-app" } else { "relay" }.to_string(),
                ),
            ];
            l.extend_from_slice(extra);
            l.sort();
            l
        };
        let start = t0 + 300 + i * 2400 + (i % 2) * 7; // not aligned on the scrape grid
        totals.sessions += 1;
        totals.users.insert(user.clone());
        *totals.sessions_by_user.entry(user.clone()).or_default() += 1;
        deltas
            .entry((
                metric::SESSION_COUNT,
                base(&[(label::START_TYPE, "fresh".to_string())]),
            ))
            .or_default()
            .push((start, 1.0));
        let models: Vec<&str> = if i % 3 == 0 {
            MODELS.to_vec()
        } else {
            vec![MODELS[(i % 2) as usize]]
        };
        for k in 0..(20 + rng.below(20) as i64) {
            let t = start + 30 + k * 60 + rng.below(40) as i64;
            let model = models[(k as usize) % models.len()];
            let ml = (label::MODEL, model.to_string());
            let qs = (label::QUERY_SOURCE, "main".to_string());
            let mut req_cost = 0.0;
            for (ty, scale, price) in [
                (token_type::INPUT, 400, 3e-6),
                (token_type::OUTPUT, 900, 15e-6),
                (token_type::CACHE_READ, 20_000, 0.3e-6),
                (token_type::CACHE_CREATION, 2_000, 3.75e-6),
            ] {
                let n = (1 + rng.below(scale)) as f64;
                req_cost += n * price;
                deltas
                    .entry((
                        metric::TOKEN_USAGE,
                        base(&[ml.clone(), qs.clone(), (label::TYPE, ty.to_string())]),
                    ))
                    .or_default()
                    .push((t, n));
                *totals.tokens.entry(ty).or_default() += n;
                *totals.tokens_by_model.entry(model.to_string()).or_default() += n;
            }
            deltas
                .entry((metric::COST_USAGE, base(&[ml.clone(), qs.clone()])))
                .or_default()
                .push((t, req_cost));
            totals.cost += req_cost;
            *totals.cost_by_model.entry(model.to_string()).or_default() += req_cost;
            if k % 3 == 0 {
                let added = (1 + rng.below(80)) as f64;
                let removed = rng.below(30) as f64;
                deltas
                    .entry((
                        metric::LINES_OF_CODE,
                        base(&[ml.clone(), (label::TYPE, "added".to_string())]),
                    ))
                    .or_default()
                    .push((t + 5, added));
                totals.lines_added += added;
                if removed > 0.0 {
                    deltas
                        .entry((
                            metric::LINES_OF_CODE,
                            base(&[ml.clone(), (label::TYPE, "removed".to_string())]),
                        ))
                        .or_default()
                        .push((t + 5, removed));
                    totals.lines_removed += removed;
                }
                let accept = rng.below(4) != 0;
                let tool = ["Edit", "Write", "MultiEdit"][rng.below(3) as usize];
                let language = ["Rust", "Python", "TypeScript"][rng.below(3) as usize];
                deltas
                    .entry((
                        metric::CODE_EDIT_TOOL_DECISION,
                        base(&[
                            (label::TOOL_NAME, tool.to_string()),
                            (
                                label::DECISION,
                                if accept { "accept" } else { "reject" }.to_string(),
                            ),
                            (label::SOURCE, "config".to_string()),
                            (label::LANGUAGE, language.to_string()),
                        ]),
                    ))
                    .or_default()
                    .push((t + 4, 1.0));
                if accept {
                    totals.accepts += 1.0;
                } else {
                    totals.rejects += 1.0;
                }
            }
            let cli = 2.0 + rng.below(50) as f64 / 2.0;
            let usr = 1.0 + rng.below(20) as f64 / 4.0;
            deltas
                .entry((
                    metric::ACTIVE_TIME,
                    base(&[(label::TYPE, "cli".to_string())]),
                ))
                .or_default()
                .push((t, cli));
            deltas
                .entry((
                    metric::ACTIVE_TIME,
                    base(&[(label::TYPE, "user".to_string())]),
                ))
                .or_default()
                .push((t, usr));
            totals.cli += cli;
            totals.user += usr;
        }
        let commits = 1 + rng.below(3);
        for c in 0..commits as i64 {
            deltas
                .entry((metric::COMMIT_COUNT, base(&[])))
                .or_default()
                .push((start + 600 + c * 120, 1.0));
        }
        totals.commits += commits as f64;
        if i == 1 || i == 4 {
            deltas
                .entry((metric::PULL_REQUEST_COUNT, base(&[])))
                .or_default()
                .push((start + 1500, 1.0));
            totals.prs += 1.0;
        }
    }
    // Exporter view: created at the first delta (zero sample there), then scraped every 15 s.
    let mut series = Vec::new();
    for ((family, labels), mut points) in deltas {
        points.sort_by_key(|p| p.0);
        let created = points[0].0;
        let mut samples = vec![(created, 0.0)];
        let mut value = 0.0;
        let mut next = 0;
        let mut t = created + STEP;
        while t <= end {
            while next < points.len() && points[next].0 < t {
                value += points[next].1;
                next += 1;
            }
            samples.push((t, value));
            t += STEP;
        }
        series.push(Series {
            family,
            labels: labels.into_iter().collect(),
            samples,
        });
    }
    Scenario {
        series,
        totals,
        end,
    }
}

fn openmetrics(s: &Scenario) -> String {
    let mut out = String::new();
    let families: BTreeSet<&str> = s.series.iter().map(|x| x.family).collect();
    for family in families {
        let base = family
            .strip_suffix("_total")
            .expect("counters end in _total");
        let _ = writeln!(out, "# TYPE {base} counter");
        for series in s.series.iter().filter(|x| x.family == family) {
            let labels: Vec<String> = series
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            for (t, v) in &series.samples {
                let _ = writeln!(out, "{family}{{{}}} {v} {t}", labels.join(","));
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Kills Prometheus when the test ends, whatever happens.
struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(prometheus: &Path, dir: &Path, data: &Path) -> (Running, u16) {
    let config = dir.join("prometheus-test.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").expect("write config");
    let port = free_port();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg("--storage.tsdb.retention.time=3650d")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--enable-feature=created-timestamp-zero-ingestion")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log file"))
        .spawn()
        .expect("start prometheus");
    let running = Running(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http_get(port, "/-/ready") {
            return (running, port);
        }
        assert!(
            Instant::now() < deadline,
            "prometheus not ready: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn query(port: u16, expr: &str, time: i64) -> Result<Value, String> {
    let path = format!("/api/v1/query?query={}&time={time}", urlencode(expr));
    let (status, body) = http_get(port, &path).map_err(|e| e.to_string())?;
    let v: Value =
        serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("HTTP {status}: {body}"));
    }
    Ok(v["data"].clone())
}

fn scalar_of(data: &Value) -> Option<f64> {
    let result = &data["result"];
    let value = match data["resultType"].as_str()? {
        "vector" => {
            let items = result.as_array()?;
            if items.len() != 1 {
                return None;
            }
            items[0]["value"][1].as_str()?
        }
        "scalar" => result[1].as_str()?,
        _ => return None,
    };
    value.parse().ok()
}

fn by_label(data: &Value, name: &str) -> BTreeMap<String, f64> {
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let key = r["metric"][name].as_str()?.to_string();
            let v: f64 = r["value"][1].as_str()?.parse().ok()?;
            Some((key, v))
        })
        .collect()
}

/// Replaces Grafana's macros and variables; `vars` gives `${name:regex}` values (default `.*`).
fn substitute(expr: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "5m")
        .replace("$__range", RANGE);
    for name in ["model", "team_id", "department", "project", "user"] {
        let value = vars.get(name).cloned().unwrap_or_else(|| ".*".to_string());
        out = out.replace(&format!("${{{name}:regex}}"), &value);
    }
    assert!(!out.contains('$'), "unsubstituted variable in {out}");
    out
}

struct Query {
    dashboard: String,
    panel: String,
    panel_type: String,
    ref_id: String,
    expr: String,
}

fn prometheus_queries() -> Vec<Query> {
    let dir = repo_root().join("config/grafana/dashboards");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dashboards dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let d: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("dashboard JSON");
        let uid = d["uid"].as_str().expect("uid").to_string();
        let mut stack = vec![d["panels"].clone()];
        while let Some(panels) = stack.pop() {
            for p in panels.as_array().into_iter().flatten() {
                stack.push(p["panels"].clone());
                for t in p["targets"].as_array().into_iter().flatten() {
                    let ds = t["datasource"]["uid"]
                        .as_str()
                        .or(p["datasource"]["uid"].as_str());
                    if ds != Some(definitions::datasource::PROMETHEUS_UID) {
                        continue;
                    }
                    out.push(Query {
                        dashboard: uid.clone(),
                        panel: p["title"].as_str().unwrap_or("").to_string(),
                        panel_type: p["type"].as_str().unwrap_or("").to_string(),
                        ref_id: t["refId"].as_str().unwrap_or("A").to_string(),
                        expr: t["expr"].as_str().expect("expr").to_string(),
                    });
                }
            }
        }
    }
    out
}

/// What each stat/gauge panel must show for the scenario.
fn expectations(t: &Totals) -> BTreeMap<(&'static str, &'static str, &'static str), f64> {
    let tok = |k: &str| t.tokens.get(k).copied().unwrap_or(0.0);
    let all_tokens: f64 = t.tokens.values().sum();
    let cache = definitions::cache_efficiency(tok("input"), tok("cacheRead"), tok("cacheCreation"))
        .expect("input");
    let per_1k = definitions::cost_per_1k_output_tokens(t.cost, tok("output")).expect("output");
    let ratio = definitions::productivity_ratio(t.cli, t.user).expect("user time");
    let n = t.sessions as f64;
    let mut e = BTreeMap::new();
    let ov = "claude-code-overview";
    e.insert((ov, "Sessions", "A"), n);
    e.insert((ov, "Total cost", "A"), t.cost);
    e.insert((ov, "Total tokens", "A"), all_tokens);
    e.insert((ov, "Lines changed", "A"), t.lines_added);
    e.insert((ov, "Lines changed", "B"), t.lines_removed);
    e.insert((ov, "Commits", "A"), t.commits);
    e.insert((ov, "Pull requests", "A"), t.prs);
    e.insert((ov, "Productivity ratio", "A"), ratio);
    e.insert((ov, "Active time", "A"), t.cli);
    e.insert((ov, "Active time", "B"), t.user);
    e.insert((ov, "Cost per session", "A"), t.cost / n);
    e.insert((ov, "Users", "A"), t.users.len() as f64);
    e.insert((ov, "Cache efficiency", "A"), cache);
    let ct = "claude-code-cost-tokens";
    e.insert((ct, "Total cost", "A"), t.cost);
    e.insert((ct, "Input tokens", "A"), tok("input"));
    e.insert((ct, "Output tokens", "A"), tok("output"));
    e.insert((ct, "Cache read tokens", "A"), tok("cacheRead"));
    e.insert((ct, "Cache creation tokens", "A"), tok("cacheCreation"));
    e.insert((ct, "Cost per 1K output tokens", "A"), per_1k);
    e.insert((ct, "Cache efficiency", "A"), cache);
    let ca = "claude-code-code-activity";
    e.insert((ca, "Lines added", "A"), t.lines_added);
    e.insert((ca, "Lines removed", "A"), t.lines_removed);
    e.insert((ca, "Commits", "A"), t.commits);
    e.insert((ca, "Pull requests", "A"), t.prs);
    e.insert((ca, "Edits accepted", "A"), t.accepts);
    e.insert((ca, "Edits rejected", "A"), t.rejects);
    e.insert(
        (ca, "Acceptance rate", "A"),
        t.accepts / (t.accepts + t.rejects),
    );
    let tp = "claude-code-time";
    e.insert((tp, "CLI active time", "A"), t.cli);
    e.insert((tp, "User active time", "A"), t.user);
    e.insert((tp, "Productivity ratio", "A"), ratio);
    e.insert(
        (tp, "Average active time per session", "A"),
        (t.cli + t.user) / n,
    );
    e
}

fn within_one_percent(got: f64, want: f64) -> bool {
    (got - want).abs() <= want.abs() * 0.01 + 1e-9
}

#[test]
fn dashboard_promql_parses_evaluates_and_stat_panels_match_the_scenario_totals() {
    let (Some(promtool), Some(prometheus)) = (require_tool("promtool"), require_tool("prometheus"))
    else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let t0 = (now - 8 * 3600) / STEP * STEP;
    let sc = scenario(t0);

    // 1. Load the scenario into TSDB blocks.
    let om = work.path().join("scenario.om.txt");
    std::fs::write(&om, openmetrics(&sc)).expect("write openmetrics");
    let data = work.path().join("data");
    let out = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&data)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "create-blocks failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 2. Parse every expression with promtool (as recording rules).
    let queries = prometheus_queries();
    assert!(
        queries.len() > 40,
        "expected the dashboards' queries, found {}",
        queries.len()
    );
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let expr = substitute(&q.expr, &BTreeMap::new());
        let _ = writeln!(
            rules,
            "      - record: dashboard_expr_{i}\n        expr: {}",
            serde_json::to_string(&expr).expect("json string")
        );
    }
    let rules_path = work.path().join("rules.yml");
    std::fs::write(&rules_path, rules).expect("write rules");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules_path)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool rejected a dashboard expression:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // 3. Evaluate every expression on a real Prometheus.
    let (_prom, port) = start_prometheus(&prometheus, work.path(), &data);
    let expected = expectations(&sc.totals);
    let mut checked = BTreeSet::new();
    let mut failures = Vec::new();
    for q in &queries {
        let expr = substitute(&q.expr, &BTreeMap::new());
        let result = match query(port, &expr, sc.end) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{} / {}: {e}", q.dashboard, q.panel));
                continue;
            }
        };
        if result["result"].as_array().is_none_or(Vec::is_empty) {
            failures.push(format!(
                "{} / {} [{}]: empty result for {expr}",
                q.dashboard, q.panel, q.ref_id
            ));
            continue;
        }
        if matches!(q.panel_type.as_str(), "stat" | "gauge") {
            let key = expected
                .keys()
                .find(|(d, p, r)| *d == q.dashboard && *p == q.panel && *r == q.ref_id)
                .copied();
            let Some(key) = key else {
                failures.push(format!(
                    "{} / {} [{}]: stat panel without an expected scenario figure",
                    q.dashboard, q.panel, q.ref_id
                ));
                continue;
            };
            let want = expected[&key];
            match scalar_of(&result) {
                Some(got) if within_one_percent(got, want) => {
                    checked.insert(key);
                }
                other => failures.push(format!(
                    "{} / {} [{}]: got {other:?}, scenario total {want}",
                    q.dashboard, q.panel, q.ref_id
                )),
            }
        }
    }
    for key in expected.keys() {
        if !checked.contains(key) && !failures.iter().any(|f| f.contains(key.1)) {
            failures.push(format!("{key:?}: expected figure has no panel"));
        }
    }

    // 4. Breakdowns: tokens by type and cost by model.
    let tokens_by_type = query(
        port,
        &format!("sum by (type) (increase({}[{RANGE}]))", metric::TOKEN_USAGE),
        sc.end,
    )
    .expect("query");
    for (ty, want) in &sc.totals.tokens {
        let got = by_label(&tokens_by_type, "type")
            .get(*ty)
            .copied()
            .unwrap_or(f64::NAN);
        if !within_one_percent(got, *want) {
            failures.push(format!("tokens of type {ty}: {got} vs {want}"));
        }
    }
    let cost_q = queries
        .iter()
        .find(|q| q.panel == "Cost by model")
        .expect("Cost by model panel");
    let cost_by_model = by_label(
        &query(port, &substitute(&cost_q.expr, &BTreeMap::new()), sc.end).expect("query"),
        "model",
    );
    for (model, want) in &sc.totals.cost_by_model {
        let got = cost_by_model.get(model).copied().unwrap_or(f64::NAN);
        if !within_one_percent(got, *want) {
            failures.push(format!("cost of {model}: {got} vs {want}"));
        }
    }

    // 5. The variables filter: one model's cost, one user's sessions.
    let total_cost = queries
        .iter()
        .find(|q| q.dashboard == "claude-code-overview" && q.panel == "Total cost")
        .expect("panel");
    let haiku = MODELS[1];
    let vars = BTreeMap::from([("model", regex_escape(haiku))]);
    let got = scalar_of(&query(port, &substitute(&total_cost.expr, &vars), sc.end).expect("query"));
    let want = sc.totals.cost_by_model[haiku];
    if !got.is_some_and(|g| within_one_percent(g, want)) {
        failures.push(format!("model variable: cost of {haiku} {got:?} vs {want}"));
    }
    let opus = MODELS[0];
    let vars = BTreeMap::from([("model", regex_escape(opus))]);
    let got = scalar_of(&query(port, &substitute(&total_cost.expr, &vars), sc.end).expect("query"));
    let want = sc.totals.cost_by_model[opus];
    if !got.is_some_and(|g| within_one_percent(g, want)) {
        failures.push(format!(
            "model variable with [1m] suffix: cost of {opus} {got:?} vs {want}"
        ));
    }
    let sessions = queries
        .iter()
        .find(|q| q.dashboard == "claude-code-overview" && q.panel == "Sessions")
        .expect("panel");
    let vars = BTreeMap::from([("user", USERS[0].to_string())]);
    let got = scalar_of(&query(port, &substitute(&sessions.expr, &vars), sc.end).expect("query"));
    let want = sc.totals.sessions_by_user[USERS[0]] as f64;
    if got != Some(want) {
        failures.push(format!("user variable: sessions {got:?} vs {want}"));
    }

    // 6. Variable queries: label_values(metric, label) has values for each variable.
    for (metric_name, label_name) in [
        (metric::TOKEN_USAGE, label::MODEL),
        (metric::SESSION_COUNT, label::TEAM_ID),
        (metric::SESSION_COUNT, label::DEPARTMENT),
        (metric::SESSION_COUNT, label::PROJECT),
        (metric::SESSION_COUNT, label::USER_ID),
    ] {
        let path = format!(
            "/api/v1/label/{label_name}/values?match[]={}&start={}&end={}",
            urlencode(metric_name),
            t0,
            sc.end
        );
        let (_, body) = http_get(port, &path).expect("labels");
        let v: Value = serde_json::from_str(&body).expect("json");
        if v["data"].as_array().is_none_or(Vec::is_empty) {
            failures.push(format!(
                "label_values({metric_name}, {label_name}) is empty"
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!(
        "evaluated {} PromQL expressions; {} stat figures equal the scenario within 1% (cost {:.4} USD, {} sessions)",
        queries.len(),
        checked.len(),
        sc.totals.cost,
        sc.totals.sessions
    );
}

/// Grafana's `:regex` format escapes regex metacharacters in a single value.
fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for ch in value.chars() {
        if "\\.+*?()|[]{}^$".contains(ch) {
            out.push_str("\\\\");
        }
        out.push(ch);
    }
    out
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let Some(promtool) = require_tool("promtool") else {
        return;
    };
    let out = Command::new(promtool)
        .args(["check", "config"])
        .arg(repo_root().join("config/prometheus.yml"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
