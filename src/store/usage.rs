//! Decoding OTLP requests into usage rows, and writing them.
//!
//! Claude Code's metrics are delta sums (one point per interval), its events are log records
//! whose attributes carry the figures (sometimes as strings). Both are kept as typed rows, and
//! both feed `usage_hourly`, a rollup keyed by (UTC hour, session, model, project) that the
//! report reads instead of the raw rows.
//!
//! Which source counts for which figure is decided here, once (see the README section the
//! report module documents): cost, tokens, lines, commits, PRs, active time, sessions and edit
//! decisions come from metric points — the numbers Grafana shows from Prometheus; request
//! counts, durations, prompts, errors and tool decisions/results come from events. The
//! `api_*` event sums are kept beside the metric ones only as a cross-check.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use opentelemetry_proto::tonic::resource::v1::Resource;
use rusqlite::{Transaction, params};
use rustc_hash::FxHashMap;

use crate::otlp::ExportRequest;

/// Resource (or point) attribute naming the project: the relay stamps `project.name` on every
/// resource (git remote's repository name, else the directory name); the collector turns it
/// into the Prometheus label `definitions::label::PROJECT` (`project_name`), so the report and
/// the dashboards group by the same value.
pub const PROJECT_ATTRIBUTE: &str = "project.name";

/// Attributes that describe the session, not the point: kept once in `sessions` (the ids)
/// or not at all (e-mail, account and organisation ids), never repeated per row.
const SESSION_ATTRIBUTES: [&str; 6] = [
    "session.id",
    "user.id",
    "terminal.type",
    "user.email",
    "user.account_uuid",
    "organization.id",
];

/// OTLP `AGGREGATION_TEMPORALITY_DELTA`: the only sums that can be added up as they come.
const DELTA: i32 = 1;

/// Columns of `usage_hourly` after the key, in this order everywhere (insert and queries).
pub(crate) const ROLLUP_COLUMNS: [&str; 30] = [
    "sessions_started",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "lines_added",
    "lines_removed",
    "commits",
    "pull_requests",
    "active_user_s",
    "active_cli_s",
    "edit_accepts",
    "edit_rejects",
    "api_requests",
    "api_errors",
    "api_duration_ms",
    "api_cost_usd",
    "api_input_tokens",
    "api_output_tokens",
    "api_cache_read_tokens",
    "api_cache_creation_tokens",
    "prompts",
    "tool_accepts",
    "tool_rejects",
    "tool_runs",
    "tool_failures",
    "api_cache_creation_5m_tokens",
    "api_cache_creation_1h_tokens",
    "api_cache_split_requests",
];

/// Index of each rollup column in [`ROLLUP_COLUMNS`].
#[allow(missing_docs)]
pub(crate) mod col {
    pub const SESSIONS_STARTED: usize = 0;
    pub const COST_USD: usize = 1;
    pub const INPUT_TOKENS: usize = 2;
    pub const OUTPUT_TOKENS: usize = 3;
    pub const CACHE_READ_TOKENS: usize = 4;
    pub const CACHE_CREATION_TOKENS: usize = 5;
    pub const LINES_ADDED: usize = 6;
    pub const LINES_REMOVED: usize = 7;
    pub const COMMITS: usize = 8;
    pub const PULL_REQUESTS: usize = 9;
    pub const ACTIVE_USER_S: usize = 10;
    pub const ACTIVE_CLI_S: usize = 11;
    pub const EDIT_ACCEPTS: usize = 12;
    pub const EDIT_REJECTS: usize = 13;
    pub const API_REQUESTS: usize = 14;
    pub const API_ERRORS: usize = 15;
    pub const API_DURATION_MS: usize = 16;
    pub const API_COST_USD: usize = 17;
    pub const API_INPUT_TOKENS: usize = 18;
    pub const API_OUTPUT_TOKENS: usize = 19;
    pub const API_CACHE_READ_TOKENS: usize = 20;
    pub const API_CACHE_CREATION_TOKENS: usize = 21;
    pub const PROMPTS: usize = 22;
    pub const TOOL_ACCEPTS: usize = 23;
    pub const TOOL_REJECTS: usize = 24;
    pub const TOOL_RUNS: usize = 25;
    pub const TOOL_FAILURES: usize = 26;
    pub const API_CACHE_CREATION_5M_TOKENS: usize = 27;
    pub const API_CACHE_CREATION_1H_TOKENS: usize = 28;
    pub const API_CACHE_SPLIT_REQUESTS: usize = 29;
}

/// Strips the context-window suffix metrics carry (`claude-opus-4-8[1m]`) so metric points
/// and events (which carry the bare id) group under one model.
pub fn normalize_model(model: &str) -> &str {
    // Looked for only in ids that end with the suffix's bracket: most carry none.
    if !model.ends_with(']') {
        return model;
    }
    match model.find('[') {
        Some(i) => &model[..i],
        None => model,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RollupKey {
    hour: i64,
    session: String,
    model: String,
    project: String,
}

/// What a metric point says besides its time, session and value: stored once per distinct
/// combination in `metric_series` (a few hundred in a year), referred to by id from each point.
/// Absent values are '' (and resource 0) so the combination can be a UNIQUE key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    name: String,
    kind: String,
    model: String,
    project: String,
    attrs_json: String,
    resource: usize,
    temporality: i32,
}

#[derive(Debug)]
struct PointRow {
    time_ns: i64,
    start_ns: i64,
    session: Option<String>,
    value: f64,
    /// Index into `Decoded::series`.
    series: usize,
}

#[derive(Debug)]
struct ApiRow {
    time_ns: i64,
    session: Option<String>,
    prompt: Option<String>,
    project: String,
    model: Option<String>,
    cost_usd: Option<f64>,
    tokens: [Option<f64>; 4],
    /// `cache_creation_5m_tokens`, `cache_creation_1h_tokens` (claude 2.1.332 and later): a
    /// split OF `cache_creation_tokens` (the API's total), never added to it.
    cache_split: [Option<f64>; 2],
    duration_ms: Option<f64>,
    request_id: Option<String>,
    query_source: Option<String>,
    resource: usize,
}

#[derive(Debug)]
struct ToolRow {
    time_ns: i64,
    kind: &'static str,
    session: Option<String>,
    project: String,
    tool_name: Option<String>,
    decision: Option<String>,
    source: Option<String>,
    success: Option<bool>,
    duration_ms: Option<f64>,
}

#[derive(Debug)]
struct OtherRow {
    time_ns: i64,
    name: String,
    session: Option<String>,
    project: String,
    model: Option<String>,
    status_code: Option<i64>,
}

#[derive(Debug)]
struct SessionRow {
    user_id: Option<String>,
    project: String,
    terminal_type: Option<String>,
    resource: usize,
    first_ns: i64,
    last_ns: i64,
}

/// Everything one request contributes to the usage tables, computed before the transaction
/// opens so the write lock is held only for the inserts.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    resources: Vec<String>,
    series: Vec<SeriesKey>,
    points: Vec<PointRow>,
    api: Vec<ApiRow>,
    tools: Vec<ToolRow>,
    others: Vec<OtherRow>,
    /// Sessions by id, in the order first seen.
    sessions: Vec<(String, SessionRow)>,
    /// Where each id of `sessions` is.
    session_index: FxHashMap<String, usize>,
    /// The `sessions` entry the previous record touched (nearly always the next one's).
    last_session: Option<usize>,
    /// Sums per key, in the order the keys were first seen.
    rollup: Vec<(RollupKey, [f64; ROLLUP_COLUMNS.len()])>,
    /// Where each key of `rollup` is.
    rollup_index: FxHashMap<RollupKey, usize>,
    /// The `rollup` entry the previous record added to: a request's records nearly all share
    /// one key, which is then compared, not built, hashed and looked up.
    last_rollup: Option<usize>,
    /// Log records in the request: what `api` is given room for when its first row comes
    /// (claude's requests are batches of one kind of event).
    records: usize,
}

/// Context shared by every record under one resource.
struct Scope<'a> {
    resource: &'a [KeyValue],
    resource_index: usize,
    /// The resource's `project.name`, for records that do not carry their own.
    project: Option<Cow<'a, str>>,
}

impl<'a> Scope<'a> {
    fn new(resource: Option<&'a Resource>, resource_index: usize) -> Scope<'a> {
        let resource = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let project = resource
            .iter()
            .find(|kv| kv.key == PROJECT_ATTRIBUTE)
            .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?));
        Scope {
            resource,
            resource_index,
            project,
        }
    }

    /// The record's project, else its resource's, else ''.
    fn project<'r>(&'r self, known: &Known<'r>) -> Cow<'r, str> {
        known
            .text(key::PROJECT)
            .or_else(|| self.project.as_deref().map(Cow::Borrowed))
            .unwrap_or_default()
    }
}

impl Decoded {
    fn add_resource(&mut self, resource: Option<&Resource>) -> usize {
        let attrs = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let map: BTreeMap<&str, serde_json::Value> = attrs
            .iter()
            .filter_map(|kv| Some((kv.key.as_str(), json_value(kv.value.as_ref()?)?)))
            .collect();
        let json = serde_json::to_string(&map).unwrap_or_else(|_| "{}".to_owned());
        match self.resources.iter().position(|r| *r == json) {
            Some(i) => i,
            None => {
                self.resources.push(json);
                self.resources.len() - 1
            }
        }
    }

    fn add(
        &mut self,
        time_ns: i64,
        session: Option<&str>,
        model: &str,
        project: &str,
    ) -> &mut [f64; ROLLUP_COLUMNS.len()] {
        let hour = hour_of(time_ns);
        let session = session.unwrap_or_default();
        let model = normalize_model(model);
        let same = |k: &RollupKey| {
            k.hour == hour && k.session == session && k.model == model && k.project == project
        };
        let index = match self.last_rollup {
            Some(i) if self.rollup.get(i).is_some_and(|(k, _)| same(k)) => i,
            _ => {
                let key = RollupKey {
                    hour,
                    session: session.to_owned(),
                    model: model.to_owned(),
                    project: project.to_owned(),
                };
                match self.rollup_index.get(&key) {
                    Some(&i) => i,
                    None => {
                        self.rollup_index.insert(key.clone(), self.rollup.len());
                        self.rollup.push((key, [0.0; ROLLUP_COLUMNS.len()]));
                        self.rollup.len() - 1
                    }
                }
            }
        };
        self.last_rollup = Some(index);
        &mut self.rollup[index].1
    }

    fn touch_session(
        &mut self,
        scope: &Scope<'_>,
        known: &Known<'_>,
        session: Option<&str>,
        project: &str,
        time_ns: i64,
    ) {
        let Some(session) = session else {
            return;
        };
        let index = match self.last_session {
            Some(i) if self.sessions.get(i).is_some_and(|(id, _)| id == session) => Some(i),
            _ => self.session_index.get(session).copied(),
        };
        match index {
            Some(i) => {
                self.last_session = Some(i);
                let row = &mut self.sessions[i].1;
                row.first_ns = row.first_ns.min(time_ns);
                row.last_ns = row.last_ns.max(time_ns);
            }
            None => {
                let row = SessionRow {
                    user_id: known.string(key::USER_ID),
                    project: project.to_owned(),
                    terminal_type: known.string(key::TERMINAL_TYPE),
                    resource: scope.resource_index,
                    first_ns: time_ns,
                    last_ns: time_ns,
                };
                self.last_session = Some(self.sessions.len());
                self.session_index
                    .insert(session.to_owned(), self.sessions.len());
                self.sessions.push((session.to_owned(), row));
            }
        }
    }

    fn metric_point(
        &mut self,
        scope: &Scope<'_>,
        name: &str,
        temporality: i32,
        point: PointIn<'_>,
    ) {
        let attrs = point.attributes;
        let known = Known::of(attrs);
        let project = scope.project(&known);
        let session = known.text(key::SESSION_ID);
        let model = known.text(key::MODEL);
        let kind = known.text(key::TYPE);
        self.touch_session(scope, &known, session.as_deref(), &project, point.time_ns);
        let mut summed_elsewhere = false;
        if temporality == DELTA && point.monotonic_sum {
            let v = point.value;
            let kind_str = kind.as_deref().unwrap_or_default();
            let target = match (name, kind_str) {
                ("claude_code.session.count", _) => Some(col::SESSIONS_STARTED),
                ("claude_code.cost.usage", _) => Some(col::COST_USD),
                ("claude_code.token.usage", "input") => Some(col::INPUT_TOKENS),
                ("claude_code.token.usage", "output") => Some(col::OUTPUT_TOKENS),
                ("claude_code.token.usage", "cacheRead") => Some(col::CACHE_READ_TOKENS),
                ("claude_code.token.usage", "cacheCreation") => Some(col::CACHE_CREATION_TOKENS),
                ("claude_code.lines_of_code.count", "added") => Some(col::LINES_ADDED),
                ("claude_code.lines_of_code.count", "removed") => Some(col::LINES_REMOVED),
                ("claude_code.commit.count", _) => Some(col::COMMITS),
                ("claude_code.pull_request.count", _) => Some(col::PULL_REQUESTS),
                ("claude_code.active_time.total", "user") => Some(col::ACTIVE_USER_S),
                ("claude_code.active_time.total", "cli") => Some(col::ACTIVE_CLI_S),
                ("claude_code.code_edit_tool.decision", _) => {
                    match known.text(key::DECISION).as_deref() {
                        Some("accept") => Some(col::EDIT_ACCEPTS),
                        Some("reject") => Some(col::EDIT_REJECTS),
                        _ => None,
                    }
                }
                _ => None,
            };
            summed_elsewhere = matches!(
                target,
                Some(
                    col::COST_USD
                        | col::INPUT_TOKENS
                        | col::OUTPUT_TOKENS
                        | col::CACHE_READ_TOKENS
                        | col::CACHE_CREATION_TOKENS
                )
            );
            if let Some(c) = target {
                let sums = self.add(
                    point.time_ns,
                    session.as_deref(),
                    model.as_deref().unwrap_or_default(),
                    &project,
                );
                sums[c] += v;
            }
        }
        // Keep only what the typed columns and the resource do not already say.
        let extra: BTreeMap<&str, serde_json::Value> = attrs
            .iter()
            .filter(|kv| {
                !matches!(kv.key.as_str(), "model" | "type" | PROJECT_ATTRIBUTE)
                    && !SESSION_ATTRIBUTES.contains(&kv.key.as_str())
                    && !scope
                        .resource
                        .iter()
                        .any(|r| r.key == kv.key && r.value == kv.value)
            })
            .filter_map(|kv| Some((kv.key.as_str(), json_value(kv.value.as_ref()?)?)))
            .collect();
        let key = SeriesKey {
            name: name.to_owned(),
            kind: kind.map(Cow::into_owned).unwrap_or_default(),
            model: model.map(Cow::into_owned).unwrap_or_default(),
            project: project.into_owned(),
            attrs_json: if extra.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&extra).unwrap_or_default()
            },
            resource: scope.resource_index,
            temporality,
        };
        let series = match self.series.iter().position(|s| *s == key) {
            Some(i) => i,
            None => {
                self.series.push(key);
                self.series.len() - 1
            }
        };
        // Cost and token points summed into the rollup say nothing the rollup (per hour,
        // session, model, project) and the `api_request` rows (per request) do not: only their
        // series is recorded (what claude sent: the model's context suffix, the attributes).
        // They were 5 of every 6 rows and 85 % of the store (see benches/store-size.sh).
        if summed_elsewhere {
            return;
        }
        self.points.push(PointRow {
            time_ns: point.time_ns,
            start_ns: point.start_ns,
            session: session.map(Cow::into_owned),
            value: point.value,
            series,
        });
    }

    fn log_record(&mut self, scope: &Scope<'_>, record: &LogRecord, received_ns: i64) {
        let known = Known::of(&record.attributes);
        let Some(name) = event_name(record, &known) else {
            return;
        };
        let time_ns = event_time(record, &known, received_ns);
        let project = scope.project(&known);
        let session = known.text(key::SESSION_ID);
        let model = known.text(key::MODEL);
        self.touch_session(scope, &known, session.as_deref(), &project, time_ns);
        let sums = self.add(
            time_ns,
            session.as_deref(),
            model.as_deref().unwrap_or_default(),
            &project,
        );
        let session = session.map(Cow::into_owned);
        let project = project.into_owned();
        let model = model.map(Cow::into_owned);
        match name {
            "api_request" => {
                let cost = known.number(key::COST_USD);
                let tokens = [
                    known.number(key::INPUT_TOKENS),
                    known.number(key::OUTPUT_TOKENS),
                    known.number(key::CACHE_READ_TOKENS),
                    known.number(key::CACHE_CREATION_TOKENS),
                ];
                let duration_ms = known.number(key::DURATION_MS);
                sums[col::API_REQUESTS] += 1.0;
                sums[col::API_DURATION_MS] += duration_ms.unwrap_or(0.0);
                sums[col::API_COST_USD] += cost.unwrap_or(0.0);
                for (i, t) in tokens.iter().enumerate() {
                    sums[col::API_INPUT_TOKENS + i] += t.unwrap_or(0.0);
                }
                let cache_split = [
                    known.number(key::CACHE_CREATION_5M_TOKENS),
                    known.number(key::CACHE_CREATION_1H_TOKENS),
                ];
                if cache_split.iter().any(Option::is_some) {
                    sums[col::API_CACHE_SPLIT_REQUESTS] += 1.0;
                    sums[col::API_CACHE_CREATION_5M_TOKENS] += cache_split[0].unwrap_or(0.0);
                    sums[col::API_CACHE_CREATION_1H_TOKENS] += cache_split[1].unwrap_or(0.0);
                }
                if self.api.capacity() == 0 {
                    self.api.reserve(self.records);
                }
                self.api.push(ApiRow {
                    time_ns,
                    session,
                    prompt: known.string(key::PROMPT_ID),
                    project,
                    model,
                    cost_usd: cost,
                    tokens,
                    cache_split,
                    duration_ms,
                    request_id: known.string(key::REQUEST_ID),
                    query_source: known.string(key::QUERY_SOURCE),
                    resource: scope.resource_index,
                });
            }
            "tool_decision" | "tool_result" => {
                let is_decision = name == "tool_decision";
                let decision = known.text(key::DECISION);
                let success = known.boolean(key::SUCCESS);
                if is_decision {
                    match decision.as_deref() {
                        Some("accept") => sums[col::TOOL_ACCEPTS] += 1.0,
                        Some("reject") => sums[col::TOOL_REJECTS] += 1.0,
                        _ => {}
                    }
                } else {
                    sums[col::TOOL_RUNS] += 1.0;
                    if success == Some(false) {
                        sums[col::TOOL_FAILURES] += 1.0;
                    }
                }
                self.tools.push(ToolRow {
                    time_ns,
                    kind: if is_decision { "decision" } else { "result" },
                    session,
                    project,
                    tool_name: known.string(key::TOOL_NAME),
                    decision: if is_decision {
                        decision.map(Cow::into_owned)
                    } else {
                        known.string(key::DECISION_TYPE)
                    },
                    source: if is_decision {
                        known.string(key::SOURCE)
                    } else {
                        known.string(key::DECISION_SOURCE)
                    },
                    success,
                    duration_ms: known.number(key::DURATION_MS),
                });
            }
            other => {
                match other {
                    "user_prompt" => sums[col::PROMPTS] += 1.0,
                    "api_error" => sums[col::API_ERRORS] += 1.0,
                    _ => {}
                }
                self.others.push(OtherRow {
                    time_ns,
                    name: other.to_owned(),
                    session,
                    project,
                    model,
                    status_code: known.number(key::STATUS_CODE).map(|v| v as i64),
                });
            }
        }
    }
}

/// One number data point, flattened from the OTLP nesting.
struct PointIn<'a> {
    attributes: &'a [KeyValue],
    time_ns: i64,
    start_ns: i64,
    value: f64,
    monotonic_sum: bool,
}

/// Decodes a request into usage rows. Traces contribute none (they are only forwarded).
pub(super) fn decode(request: &ExportRequest, received_ns: i64) -> Decoded {
    let mut out = Decoded::default();
    match request {
        ExportRequest::Metrics(r) => {
            for rm in &r.resource_metrics {
                let resource_index = out.add_resource(rm.resource.as_ref());
                let scope = Scope::new(rm.resource.as_ref(), resource_index);
                for metric in rm.scope_metrics.iter().flat_map(|sm| &sm.metrics) {
                    let (points, temporality, monotonic_sum) = match &metric.data {
                        Some(Data::Sum(s)) => {
                            (&s.data_points, s.aggregation_temporality, s.is_monotonic)
                        }
                        Some(Data::Gauge(g)) => (&g.data_points, 0, false),
                        _ => continue,
                    };
                    for p in points {
                        let value = match p.value {
                            Some(number_data_point::Value::AsDouble(v)) => v,
                            Some(number_data_point::Value::AsInt(v)) => v as f64,
                            None => continue,
                        };
                        if !value.is_finite() {
                            continue;
                        }
                        let time_ns = nanos(p.time_unix_nano).unwrap_or(received_ns);
                        out.metric_point(
                            &scope,
                            &metric.name,
                            temporality,
                            PointIn {
                                attributes: &p.attributes,
                                time_ns,
                                start_ns: nanos(p.start_time_unix_nano).unwrap_or(time_ns),
                                value,
                                monotonic_sum,
                            },
                        );
                    }
                }
            }
        }
        ExportRequest::Logs(r) => {
            out.records = r
                .resource_logs
                .iter()
                .flat_map(|rl| &rl.scope_logs)
                .map(|sl| sl.log_records.len())
                .sum();
            for rl in &r.resource_logs {
                let resource_index = out.add_resource(rl.resource.as_ref());
                let scope = Scope::new(rl.resource.as_ref(), resource_index);
                for record in rl.scope_logs.iter().flat_map(|sl| &sl.log_records) {
                    out.log_record(&scope, record, received_ns);
                }
            }
        }
        ExportRequest::Traces(_) => {}
    }
    out
}

/// Writes decoded rows inside the caller's transaction.
pub(super) fn insert(tx: &Transaction<'_>, d: &Decoded) -> rusqlite::Result<()> {
    let mut resource_ids = Vec::with_capacity(d.resources.len());
    {
        let mut ins =
            tx.prepare_cached("INSERT OR IGNORE INTO resources(attrs_json) VALUES (?1)")?;
        let mut sel = tx.prepare_cached("SELECT id FROM resources WHERE attrs_json = ?1")?;
        for json in &d.resources {
            ins.execute([json])?;
            resource_ids.push(sel.query_row([json], |r| r.get::<_, i64>(0))?);
        }
    }
    let rid = |i: usize| resource_ids.get(i).copied();
    let mut session_ids: HashMap<&str, i64> = HashMap::with_capacity(d.sessions.len());
    if !d.sessions.is_empty() {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO sessions(session_id, user_id, project, terminal_type, resource_id,
                                  first_seen_ns, last_seen_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(session_id) DO UPDATE SET
                 first_seen_ns = min(first_seen_ns, excluded.first_seen_ns),
                 last_seen_ns = max(last_seen_ns, excluded.last_seen_ns),
                 user_id = coalesce(user_id, excluded.user_id),
                 project = CASE WHEN project = '' THEN excluded.project ELSE project END,
                 terminal_type = coalesce(terminal_type, excluded.terminal_type)
             RETURNING id",
        )?;
        for (id, s) in &d.sessions {
            let row_id = stmt.query_row(
                params![
                    id,
                    s.user_id,
                    s.project,
                    s.terminal_type,
                    rid(s.resource),
                    s.first_ns,
                    s.last_ns
                ],
                |r| r.get::<_, i64>(0),
            )?;
            session_ids.insert(id.as_str(), row_id);
        }
    }
    let sid = |s: &Option<String>| s.as_deref().and_then(|s| session_ids.get(s).copied());
    let mut series_ids = Vec::with_capacity(d.series.len());
    if !d.series.is_empty() {
        // INSERT OR IGNORE then SELECT: a known series (nearly always) writes no page.
        let mut ins = tx.prepare_cached(
            "INSERT OR IGNORE INTO metric_series(name, type, model, project, attrs_json,
                                                 resource_id, temporality)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut sel = tx.prepare_cached(
            "SELECT id FROM metric_series WHERE name = ?1 AND type = ?2 AND model = ?3
                 AND project = ?4 AND attrs_json = ?5 AND resource_id = ?6 AND temporality = ?7",
        )?;
        for s in &d.series {
            let values = params![
                s.name,
                s.kind,
                s.model,
                s.project,
                s.attrs_json,
                rid(s.resource).unwrap_or(0),
                s.temporality
            ];
            ins.execute(values)?;
            series_ids.push(sel.query_row(values, |r| r.get::<_, i64>(0))?);
        }
    }
    if !d.points.is_empty() {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO metric_points(time_ns, start_ns, session, series, value)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for p in &d.points {
            stmt.execute(params![
                p.time_ns,
                p.start_ns,
                sid(&p.session),
                series_ids.get(p.series).copied(),
                p.value
            ])?;
        }
    }
    // Events with a request id are stored once, in their ledger row (below); the others here.
    if d.api.iter().any(|a| a.request_id.is_none()) {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO api_requests_unkeyed(time_ns, session, prompt_id, project, model, cost_usd,
                 input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
                 duration_ms, request_id, query_source, resource_id,
                 cache_creation_5m_tokens, cache_creation_1h_tokens)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )?;
        for a in d.api.iter().filter(|a| a.request_id.is_none()) {
            let t = a.tokens.map(|t| t.map(|v| v as i64));
            let split = a.cache_split.map(|t| t.map(|v| v as i64));
            stmt.execute(params![
                a.time_ns,
                sid(&a.session),
                a.prompt,
                a.project,
                a.model,
                a.cost_usd,
                t[0],
                t[1],
                t[2],
                t[3],
                a.duration_ms,
                a.request_id,
                a.query_source,
                rid(a.resource),
                split[0],
                split[1]
            ])?;
        }
    }
    // The same requests into the ledger, where a transcript copy of each is merged with it.
    // The records borrow the decoded events' texts: nothing is copied to store them.
    if d.api.iter().any(|a| a.request_id.is_some()) {
        let mut labels = super::ledger::Labels::default();
        let mut ledger = super::ledger::LedgerTx::new(tx, &mut labels);
        for a in &d.api {
            let Some(key) = a.request_id.as_deref() else {
                continue;
            };
            let t = a.tokens.map(|t| t.map_or(0, |v| v.max(0.0) as u64));
            let split = a.cache_split.map(|t| t.map(|v| v.max(0.0) as u64));
            let detail = super::ledger::ApiDetail {
                time_ns: a.time_ns,
                prompt_id: a.prompt.as_deref(),
                duration_ms: a.duration_ms,
                query_source: a.query_source.as_deref(),
                resource_id: rid(a.resource),
                absent: a
                    .tokens
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_none())
                    .map(|(i, _)| 1 << i)
                    .sum(),
            };
            let record = super::ledger::RecordRef {
                key,
                time_ns: a.time_ns,
                session: a.session.as_deref().unwrap_or_default(),
                model: a.model.as_deref().unwrap_or_default(),
                project: &a.project,
                branch: None,
                tokens: super::ledger::Tokens {
                    input: t[0],
                    output: t[1],
                    cache_read: t[2],
                    cache_creation: t[3],
                    cache_5m: split[0],
                    cache_1h: split[1],
                },
                cost_usd: a.cost_usd,
                source: super::ledger::Source::Telemetry,
            };
            ledger.apply_with_detail(&record, Some(&detail))?;
        }
        ledger.finish()?;
    }
    if !d.tools.is_empty() {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO tool_events(time_ns, kind, session, project, tool_name, decision,
                                     source, success, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for t in &d.tools {
            stmt.execute(params![
                t.time_ns,
                t.kind,
                sid(&t.session),
                t.project,
                t.tool_name,
                t.decision,
                t.source,
                t.success,
                t.duration_ms
            ])?;
        }
    }
    if !d.others.is_empty() {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO other_events(time_ns, name, session, project, model, status_code)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for o in &d.others {
            stmt.execute(params![
                o.time_ns,
                o.name,
                sid(&o.session),
                o.project,
                o.model,
                o.status_code
            ])?;
        }
    }
    if !d.rollup.is_empty() {
        let mut stmt = tx.prepare_cached(rollup_upsert_sql())?;
        for (key, sums) in &d.rollup {
            let mut values: Vec<&dyn rusqlite::ToSql> =
                vec![&key.hour, &key.session, &key.model, &key.project];
            values.extend(sums.iter().map(|v| v as &dyn rusqlite::ToSql));
            stmt.execute(values.as_slice())?;
        }
    }
    Ok(())
}

fn rollup_upsert_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(build_rollup_upsert_sql)
}

fn build_rollup_upsert_sql() -> String {
    let cols = ROLLUP_COLUMNS.join(", ");
    let placeholders: Vec<String> = (1..=ROLLUP_COLUMNS.len() + 4)
        .map(|i| format!("?{i}"))
        .collect();
    let updates: Vec<String> = ROLLUP_COLUMNS
        .iter()
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO usage_hourly(hour, session_id, model, project, {cols}) VALUES ({})
         ON CONFLICT(hour, session_id, model, project) DO UPDATE SET {}",
        placeholders.join(", "),
        updates.join(", ")
    )
}

/// Start of the UTC hour containing `time_ns`, in Unix seconds.
fn hour_of(time_ns: i64) -> i64 {
    time_ns.div_euclid(3_600_000_000_000) * 3600
}

fn nanos(v: u64) -> Option<i64> {
    (v != 0).then(|| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The event's name without the `claude_code.` prefix, from `event.name`, the proto
/// `event_name` field or the body, whichever is present.
fn event_name<'a>(record: &'a LogRecord, known: &Known<'a>) -> Option<&'a str> {
    let from_attr = known.value(key::EVENT_NAME).and_then(|v| match v {
        any_value::Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    });
    let from_body = || match record.body.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    };
    let name = from_attr
        .or_else(|| (!record.event_name.is_empty()).then_some(record.event_name.as_str()))
        .or_else(from_body)?;
    Some(name.strip_prefix("claude_code.").unwrap_or(name))
}

/// When the event happened: the record timestamp, else the observed time, else claude's
/// `event.timestamp` attribute, else when the relay received it.
fn event_time(record: &LogRecord, known: &Known<'_>, received_ns: i64) -> i64 {
    nanos(record.time_unix_nano)
        .or_else(|| nanos(record.observed_time_unix_nano))
        .or_else(|| {
            known
                .text(key::EVENT_TIMESTAMP)
                .and_then(|s| parse_rfc3339_utc(&s))
        })
        .unwrap_or(received_ns)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (the form claude writes) into Unix nanoseconds.
pub(crate) fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut frac_ns = 0i64;
    if !frac.is_empty() {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        frac_ns = frac.parse::<i64>().ok()? * 10i64.pow(9 - frac.len() as u32);
    }
    let days = days_from_civil(y, m, day);
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000_000) + frac_ns)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The attributes decoding reads, by their index in [`Known`].
mod key {
    pub const EVENT_NAME: usize = 0;
    pub const EVENT_TIMESTAMP: usize = 1;
    pub const PROJECT: usize = 2;
    pub const SESSION_ID: usize = 3;
    pub const USER_ID: usize = 4;
    pub const TERMINAL_TYPE: usize = 5;
    pub const MODEL: usize = 6;
    pub const TYPE: usize = 7;
    pub const DECISION: usize = 8;
    pub const COST_USD: usize = 9;
    pub const INPUT_TOKENS: usize = 10;
    pub const OUTPUT_TOKENS: usize = 11;
    pub const CACHE_READ_TOKENS: usize = 12;
    pub const CACHE_CREATION_TOKENS: usize = 13;
    pub const CACHE_CREATION_5M_TOKENS: usize = 14;
    pub const CACHE_CREATION_1H_TOKENS: usize = 15;
    pub const DURATION_MS: usize = 16;
    pub const PROMPT_ID: usize = 17;
    pub const REQUEST_ID: usize = 18;
    pub const QUERY_SOURCE: usize = 19;
    pub const SUCCESS: usize = 20;
    pub const TOOL_NAME: usize = 21;
    pub const DECISION_TYPE: usize = 22;
    pub const SOURCE: usize = 23;
    pub const DECISION_SOURCE: usize = 24;
    pub const STATUS_CODE: usize = 25;
    pub const COUNT: usize = 26;

    /// The index of an attribute key decoding reads, `None` for the others. Matched on the
    /// length first, so most keys are told apart without comparing their text.
    #[inline]
    pub fn of(key: &str) -> Option<usize> {
        Some(match (key.len(), key) {
            (4, "type") => TYPE,
            (5, "model") => MODEL,
            (6, "source") => SOURCE,
            (7, "user.id") => USER_ID,
            (7, "success") => SUCCESS,
            (8, "decision") => DECISION,
            (8, "cost_usd") => COST_USD,
            (9, "prompt.id") => PROMPT_ID,
            (9, "tool_name") => TOOL_NAME,
            (10, "session.id") => SESSION_ID,
            (10, "event.name") => EVENT_NAME,
            (10, "request_id") => REQUEST_ID,
            (11, "duration_ms") => DURATION_MS,
            (11, "status_code") => STATUS_CODE,
            (12, "input_tokens") => INPUT_TOKENS,
            (12, super::PROJECT_ATTRIBUTE) => PROJECT,
            (12, "query_source") => QUERY_SOURCE,
            (13, "output_tokens") => OUTPUT_TOKENS,
            (13, "terminal.type") => TERMINAL_TYPE,
            (13, "decision_type") => DECISION_TYPE,
            (15, "event.timestamp") => EVENT_TIMESTAMP,
            (15, "decision_source") => DECISION_SOURCE,
            (17, "cache_read_tokens") => CACHE_READ_TOKENS,
            (21, "cache_creation_tokens") => CACHE_CREATION_TOKENS,
            (24, "cache_creation_5m_tokens") => CACHE_CREATION_5M_TOKENS,
            (24, "cache_creation_1h_tokens") => CACHE_CREATION_1H_TOKENS,
            _ => return None,
        })
    }
}

/// The attributes of one record or point that decoding reads, found in one pass over them
/// (a record has a dozen, and a dozen are read): the first of each key, as a search by key
/// finds; its value `None` when that attribute has none.
struct Known<'a> {
    values: [Option<&'a any_value::Value>; key::COUNT],
    /// Which keys were found (their value may still be `None`).
    seen: u32,
}

impl<'a> Known<'a> {
    fn of(attrs: &'a [KeyValue]) -> Known<'a> {
        let mut known = Known {
            values: [None; key::COUNT],
            seen: 0,
        };
        for kv in attrs {
            if let Some(i) = key::of(&kv.key)
                && known.seen & (1 << i) == 0
            {
                known.seen |= 1 << i;
                known.values[i] = kv.value.as_ref().and_then(|v| v.value.as_ref());
            }
        }
        known
    }

    fn value(&self, key: usize) -> Option<&'a any_value::Value> {
        self.values.get(key).copied().flatten()
    }

    /// A string attribute, borrowed; numbers and booleans are rendered, so ids sent as
    /// numbers still match.
    fn text(&self, key: usize) -> Option<Cow<'a, str>> {
        text(self.value(key)?)
    }

    /// [`Known::text`], owned: for the rows, which outlive the request.
    fn string(&self, key: usize) -> Option<String> {
        self.text(key).map(Cow::into_owned)
    }

    /// A numeric attribute, accepting the strings claude sometimes sends (`"0.0123"`).
    fn number(&self, key: usize) -> Option<f64> {
        let v = match self.value(key)? {
            any_value::Value::IntValue(v) => *v as f64,
            any_value::Value::DoubleValue(v) => *v,
            any_value::Value::StringValue(s) => parse_number(s)?,
            _ => return None,
        };
        v.is_finite().then_some(v)
    }

    fn boolean(&self, key: usize) -> Option<bool> {
        match self.value(key)? {
            any_value::Value::BoolValue(v) => Some(*v),
            any_value::Value::StringValue(s) => match s.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A value as text: strings as they are, numbers and booleans rendered; `None` for the rest.
#[inline]
fn text(value: &any_value::Value) -> Option<Cow<'_, str>> {
    match value {
        any_value::Value::StringValue(s) => Some(Cow::Borrowed(s.as_str())),
        any_value::Value::IntValue(v) => Some(Cow::Owned(v.to_string())),
        any_value::Value::DoubleValue(v) => Some(Cow::Owned(v.to_string())),
        any_value::Value::BoolValue(v) => Some(Cow::Owned(v.to_string())),
        _ => None,
    }
}

/// Most digits a plain decimal (`1234`, `0.0123`) may have to be read without the float
/// parser: its digits as an integer are then below 2^53 and its power of ten at most 10^15,
/// both exact in an f64, so one division rounds to the value that parser gives (the same
/// fast path it takes itself; the tests compare the two).
const EXACT_DIGITS: u32 = 15;

/// Exact powers of ten up to [`EXACT_DIGITS`].
const POWERS_OF_TEN: [f64; EXACT_DIGITS as usize + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A number sent as a string, as `str::parse::<f64>` reads it once trimmed. Token counts,
/// durations and costs are plain decimals: those are read in one pass over their digits (the
/// same value, to the bit), the rest (`"1.5e3"`, `"-2"`, long ones) by the float parser.
fn parse_number(s: &str) -> Option<f64> {
    // A plain decimal has no blanks to trim.
    plain_decimal(s.as_bytes()).or_else(|| s.trim().parse::<f64>().ok())
}

/// `digits[.digits]` with at most [`EXACT_DIGITS`] digits in all (and one at least), exactly;
/// `None` for anything else.
fn plain_decimal(bytes: &[u8]) -> Option<f64> {
    // One more byte than digits for the point: the mantissa cannot overflow below.
    if bytes.len() > EXACT_DIGITS as usize + 1 {
        return None;
    }
    let mut mantissa = 0u64;
    let mut point = None;
    for (i, &b) in bytes.iter().enumerate() {
        let digit = b.wrapping_sub(b'0');
        if digit < 10 {
            mantissa = mantissa * 10 + u64::from(digit);
        } else if b == b'.' && point.is_none() {
            point = Some(i);
        } else {
            return None;
        }
    }
    let digits = bytes.len() - usize::from(point.is_some());
    if digits == 0 || digits > EXACT_DIGITS as usize {
        return None;
    }
    let fraction = point.map_or(0, |p| bytes.len() - 1 - p);
    Some(mantissa as f64 / POWERS_OF_TEN.get(fraction)?)
}

fn json_value(v: &AnyValue) -> Option<serde_json::Value> {
    Some(match v.value.as_ref()? {
        any_value::Value::StringValue(s) => serde_json::Value::from(s.as_str()),
        any_value::Value::BoolValue(b) => serde_json::Value::from(*b),
        any_value::Value::IntValue(i) => serde_json::Value::from(*i),
        any_value::Value::DoubleValue(d) => serde_json::Value::from(*d),
        any_value::Value::ArrayValue(a) => {
            serde_json::Value::Array(a.values.iter().filter_map(json_value).collect())
        }
        any_value::Value::KvlistValue(kv) => serde_json::Value::Object(
            kv.values
                .iter()
                .filter_map(|kv| Some((kv.key.clone(), json_value(kv.value.as_ref()?)?)))
                .collect(),
        ),
        any_value::Value::BytesValue(_) | any_value::Value::StringValueStrindex(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: Option<any_value::Value>) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: value.map(|v| AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn s(key: &str, value: &str) -> KeyValue {
        kv(key, Some(any_value::Value::StringValue(value.to_owned())))
    }

    #[test]
    fn numbers_sent_as_strings_read_as_the_float_parser_reads_them() {
        for text in [
            "0",
            "1234",
            " 1234 ",
            "007",
            "999999999999999",
            "9007199254740993",
            "123456789012345678901234567890",
            "1.5e3",
            "0.0123",
            "-2",
            "+3",
            "-0",
            "1e400",
            "NaN",
            "inf",
            "",
            " ",
            "12a",
            "a12",
            "1_000",
            "٣",
        ] {
            let attrs = [s("input_tokens", text)];
            let expected = text.trim().parse::<f64>().ok().filter(|v| v.is_finite());
            assert_eq!(
                Known::of(&attrs)
                    .number(key::INPUT_TOKENS)
                    .map(f64::to_bits),
                expected.map(f64::to_bits),
                "{text:?}"
            );
        }
        let attrs = [
            kv("input_tokens", Some(any_value::Value::IntValue(42))),
            kv("output_tokens", Some(any_value::Value::DoubleValue(0.5))),
            kv("cost_usd", Some(any_value::Value::BoolValue(true))),
        ];
        let known = Known::of(&attrs);
        assert_eq!(known.number(key::INPUT_TOKENS), Some(42.0));
        assert_eq!(known.number(key::OUTPUT_TOKENS), Some(0.5));
        assert_eq!(
            known.number(key::COST_USD),
            None,
            "a boolean is not a number"
        );
        assert_eq!(known.number(key::DURATION_MS), None, "absent");
    }

    proptest::proptest! {
        #[test]
        fn plain_decimals_read_to_the_bit_as_the_float_parser_reads_them(
            text in "[0-9]{0,17}(\\.[0-9]{0,17})?"
        ) {
            proptest::prop_assert_eq!(
                parse_number(&text).map(f64::to_bits),
                text.parse::<f64>().ok().map(f64::to_bits)
            );
        }
    }

    #[test]
    fn one_pass_finds_the_first_of_each_key_as_a_search_by_key_does() {
        let attrs = [
            s("service.name", "claude-code"),
            kv("session.id", None),
            s("session.id", "second"),
            s("model", "claude-opus-4-8"),
            s("model", "other"),
            kv("user.id", Some(any_value::Value::IntValue(7))),
            kv("success", Some(any_value::Value::BoolValue(false))),
            s("decision_source", "config"),
            s("cache_creation_1h_tokens", "12"),
        ];
        let known = Known::of(&attrs);
        assert_eq!(known.text(key::SESSION_ID), None, "the first has no value");
        assert_eq!(known.text(key::MODEL).as_deref(), Some("claude-opus-4-8"));
        assert_eq!(known.string(key::USER_ID).as_deref(), Some("7"));
        assert_eq!(known.boolean(key::SUCCESS), Some(false));
        assert_eq!(known.text(key::DECISION_SOURCE).as_deref(), Some("config"));
        assert_eq!(known.number(key::CACHE_CREATION_1H_TOKENS), Some(12.0));
        assert_eq!(known.number(key::CACHE_CREATION_5M_TOKENS), None);
        assert_eq!(known.text(key::PROJECT), None);
    }

    #[test]
    fn every_key_decoding_reads_has_its_own_slot() {
        let names = [
            "event.name",
            "event.timestamp",
            PROJECT_ATTRIBUTE,
            "session.id",
            "user.id",
            "terminal.type",
            "model",
            "type",
            "decision",
            "cost_usd",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_creation_tokens",
            "cache_creation_5m_tokens",
            "cache_creation_1h_tokens",
            "duration_ms",
            "prompt.id",
            "request_id",
            "query_source",
            "success",
            "tool_name",
            "decision_type",
            "source",
            "decision_source",
            "status_code",
        ];
        let slots: Vec<Option<usize>> = names.iter().map(|n| key::of(n)).collect();
        assert_eq!(
            slots,
            (0..key::COUNT).map(Some).collect::<Vec<_>>(),
            "in the order of the `key` constants"
        );
        for other in ["event.sequence", "service.name", "Model", "session.idx", ""] {
            assert_eq!(key::of(other), None, "{other:?}");
        }
    }
}
