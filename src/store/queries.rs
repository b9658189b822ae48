//! Every read the report and `doctor` make; SQL text lives here and nowhere else.
//!
//! Queries read `usage_hourly` only, so their cost depends on the number of
//! (hour, session, model, project) combinations, not on the number of events.

use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde::Serialize;

use super::usage::{ROLLUP_COLUMNS, col};
use super::{OutboxStats, StoreError, now_ns, outbox};

/// Which rows a query covers. Times are Unix seconds; the rollup has hour resolution, so
/// `since` includes the whole hour it falls in and `until` excludes the hour it falls in
/// (unless it is exactly on an hour boundary, as dates are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Inclusive lower bound.
    pub since: Option<i64>,
    /// Exclusive upper bound.
    pub until: Option<i64>,
    /// Only this project (`project` attribute); `Some("")` selects rows without one.
    pub project: Option<String>,
}

/// How calendar buckets are cut: by UTC or by the machine's local time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    /// Calendar days in UTC (stable output for tests and for teams across zones).
    Utc,
    /// Calendar days in the local zone (what a person expects from "today").
    Local,
}

/// The dimension of a breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// Calendar day (`YYYY-MM-DD`).
    Day,
    /// Week starting on Monday, keyed by that Monday's date.
    Week,
    /// Calendar month (`YYYY-MM`).
    Month,
    /// Claude Code session id.
    Session,
    /// Model id without its context suffix.
    Model,
    /// `project` attribute.
    Project,
    /// Git branch, where a transcript recorded it (requests telemetry alone saw have none).
    Branch,
}

/// Raw sums over a set of rollup rows; derived figures are computed in `report::figures`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Totals {
    /// Distinct non-empty `session.id` values (how the dashboards count sessions).
    pub sessions: f64,
    /// `claude_code.session.count` points.
    pub sessions_started: f64,
    /// `claude_code.cost.usage` (USD), the authoritative cost.
    pub cost_usd: f64,
    /// `claude_code.token.usage{type=input}`.
    pub input_tokens: f64,
    /// `claude_code.token.usage{type=output}`.
    pub output_tokens: f64,
    /// `claude_code.token.usage{type=cacheRead}`.
    pub cache_read_tokens: f64,
    /// `claude_code.token.usage{type=cacheCreation}`.
    pub cache_creation_tokens: f64,
    /// `claude_code.lines_of_code.count{type=added}`.
    pub lines_added: f64,
    /// `claude_code.lines_of_code.count{type=removed}`.
    pub lines_removed: f64,
    /// `claude_code.commit.count`.
    pub commits: f64,
    /// `claude_code.pull_request.count`.
    pub pull_requests: f64,
    /// `claude_code.active_time.total{type=user}` (seconds).
    pub active_user_s: f64,
    /// `claude_code.active_time.total{type=cli}` (seconds).
    pub active_cli_s: f64,
    /// `claude_code.code_edit_tool.decision{decision=accept}`.
    pub edit_accepts: f64,
    /// `claude_code.code_edit_tool.decision{decision=reject}`.
    pub edit_rejects: f64,
    /// `api_request` events.
    pub api_requests: f64,
    /// `api_error` events.
    pub api_errors: f64,
    /// Sum of `api_request.duration_ms`.
    pub api_duration_ms: f64,
    /// Sum of `api_request.cost_usd` (cross-check only; totals use `cost_usd`).
    pub api_cost_usd: f64,
    /// Sum of `api_request.input_tokens` (cross-check only).
    pub api_input_tokens: f64,
    /// Sum of `api_request.output_tokens` (cross-check only).
    pub api_output_tokens: f64,
    /// Sum of `api_request.cache_read_tokens` (cross-check only).
    pub api_cache_read_tokens: f64,
    /// Sum of `api_request.cache_creation_tokens` (cross-check only).
    pub api_cache_creation_tokens: f64,
    /// Sum of `api_request.cache_creation_5m_tokens` (claude 2.1.332+): part of
    /// `api_cache_creation_tokens`, not in addition to it.
    pub api_cache_creation_5m_tokens: f64,
    /// Sum of `api_request.cache_creation_1h_tokens`: part of `api_cache_creation_tokens`.
    pub api_cache_creation_1h_tokens: f64,
    /// `api_request` events that carried the 5m/1h split (0: a release without it).
    pub api_cache_split_requests: f64,
    /// `user_prompt` events.
    pub prompts: f64,
    /// `tool_decision` events with `decision=accept`.
    pub tool_accepts: f64,
    /// `tool_decision` events with `decision=reject`.
    pub tool_rejects: f64,
    /// `tool_result` events.
    pub tool_runs: f64,
    /// `tool_result` events with `success=false`.
    pub tool_failures: f64,
}

impl Totals {
    /// `v`: the sums in [`ROLLUP_COLUMNS`] order, then the distinct session count.
    fn from_sums(v: &[f64]) -> Totals {
        let g = |i: usize| v.get(i).copied().unwrap_or(0.0);
        Totals {
            sessions: g(ROLLUP_COLUMNS.len()),
            sessions_started: g(col::SESSIONS_STARTED),
            cost_usd: g(col::COST_USD),
            input_tokens: g(col::INPUT_TOKENS),
            output_tokens: g(col::OUTPUT_TOKENS),
            cache_read_tokens: g(col::CACHE_READ_TOKENS),
            cache_creation_tokens: g(col::CACHE_CREATION_TOKENS),
            lines_added: g(col::LINES_ADDED),
            lines_removed: g(col::LINES_REMOVED),
            commits: g(col::COMMITS),
            pull_requests: g(col::PULL_REQUESTS),
            active_user_s: g(col::ACTIVE_USER_S),
            active_cli_s: g(col::ACTIVE_CLI_S),
            edit_accepts: g(col::EDIT_ACCEPTS),
            edit_rejects: g(col::EDIT_REJECTS),
            api_requests: g(col::API_REQUESTS),
            api_errors: g(col::API_ERRORS),
            api_duration_ms: g(col::API_DURATION_MS),
            api_cost_usd: g(col::API_COST_USD),
            api_input_tokens: g(col::API_INPUT_TOKENS),
            api_output_tokens: g(col::API_OUTPUT_TOKENS),
            api_cache_read_tokens: g(col::API_CACHE_READ_TOKENS),
            api_cache_creation_tokens: g(col::API_CACHE_CREATION_TOKENS),
            api_cache_creation_5m_tokens: g(col::API_CACHE_CREATION_5M_TOKENS),
            api_cache_creation_1h_tokens: g(col::API_CACHE_CREATION_1H_TOKENS),
            api_cache_split_requests: g(col::API_CACHE_SPLIT_REQUESTS),
            prompts: g(col::PROMPTS),
            tool_accepts: g(col::TOOL_ACCEPTS),
            tool_rejects: g(col::TOOL_REJECTS),
            tool_runs: g(col::TOOL_RUNS),
            tool_failures: g(col::TOOL_FAILURES),
        }
    }
}

/// One row of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// The bucket: a date, month, session id, model or project ('' when the rows had none).
    pub key: String,
    /// Start of the earliest hour with data in this group (Unix seconds).
    pub first_hour: i64,
    /// Sums over the group.
    pub totals: Totals,
}

/// Whether any usage has been recorded at all (the report's "nothing yet" check).
pub fn has_usage(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM usage_hourly) OR EXISTS(SELECT 1 FROM request_hourly)",
        [],
        |r| r.get(0),
    )?)
}

/// Sums over every row the filter selects.
pub fn totals(conn: &Connection, filter: &Filter) -> Result<Totals, StoreError> {
    let (where_sql, params) = where_clause(filter);
    let sql = format!("SELECT {} FROM usage_hourly {where_sql}", sum_list());
    let sums = conn.query_row(&sql, params_from_iter(params.iter()), |row| {
        (0..=ROLLUP_COLUMNS.len())
            .map(|i| row.get::<_, Option<f64>>(i).map(|v| v.unwrap_or(0.0)))
            .collect::<rusqlite::Result<Vec<f64>>>()
    })?;
    Ok(Totals::from_sums(&sums))
}

/// Sums per bucket; calendar buckets come in time order, the others by cost, highest first.
pub fn breakdown(
    conn: &Connection,
    filter: &Filter,
    by: GroupBy,
    zone: Zone,
) -> Result<Vec<Group>, StoreError> {
    if by == GroupBy::Session {
        return session_breakdown(conn, filter);
    }
    let local = if zone == Zone::Local {
        ", 'localtime'"
    } else {
        ""
    };
    let key = match by {
        GroupBy::Day => format!("strftime('%Y-%m-%d', hour, 'unixepoch'{local})"),
        GroupBy::Week => format!("date(hour, 'unixepoch'{local}, 'weekday 0', '-6 days')"),
        GroupBy::Month => format!("strftime('%Y-%m', hour, 'unixepoch'{local})"),
        GroupBy::Session => "session_id".to_owned(),
        GroupBy::Model => "model".to_owned(),
        GroupBy::Project => "project".to_owned(),
        // Telemetry carries no branch: every telemetry row is in the '' bucket.
        GroupBy::Branch => "''".to_owned(),
    };
    let order = match by {
        GroupBy::Day | GroupBy::Week | GroupBy::Month => "k",
        GroupBy::Session => "first_hour, k",
        GroupBy::Model | GroupBy::Project | GroupBy::Branch => "cost DESC, k",
    };
    let (where_sql, params) = where_clause(filter);
    let sql = format!(
        "SELECT {key} AS k, min(hour) AS first_hour, sum(cost_usd) AS cost, {}
         FROM usage_hourly {where_sql} GROUP BY k ORDER BY {order}",
        sum_list()
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(params.iter()), |row| {
        let sums = (0..=ROLLUP_COLUMNS.len())
            .map(|i| row.get::<_, Option<f64>>(i + 3).map(|v| v.unwrap_or(0.0)))
            .collect::<rusqlite::Result<Vec<f64>>>()?;
        Ok(Group {
            key: row.get::<_, Option<String>>(0)?.unwrap_or_default(),
            first_hour: row.get(1)?,
            totals: Totals::from_sums(&sums),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<Group>>>()?)
}

/// [`breakdown`] by session, summed here rather than by SQLite's GROUP BY: that sorts every
/// rollup row whole (31 sums) through a temporary B-tree, most of a 25,000-session report.
/// Sums are SQLite's own (Kahan-Babuska-Neumaier, as its `sum()`), so figures do not change;
/// a session's distinct-session count is 1 (0 for the rows without one); ordered by first
/// hour, then id, as the SQL was.
fn session_breakdown(conn: &Connection, filter: &Filter) -> Result<Vec<Group>, StoreError> {
    let (where_sql, params) = where_clause(filter);
    let sql = format!(
        "SELECT session_id, hour, {} FROM usage_hourly {where_sql}",
        ROLLUP_COLUMNS.join(", ")
    );
    let mut groups: std::collections::HashMap<String, (i64, Vec<[f64; 2]>)> = Default::default();
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(params.iter()))?;
    while let Some(row) = rows.next()? {
        let session: String = row.get::<_, Option<String>>(0)?.unwrap_or_default();
        let hour: i64 = row.get(1)?;
        let g = groups
            .entry(session)
            .or_insert_with(|| (hour, vec![[0.0; 2]; ROLLUP_COLUMNS.len()]));
        g.0 = g.0.min(hour);
        for (i, acc) in g.1.iter_mut().enumerate() {
            kbn_add(acc, row.get::<_, Option<f64>>(2 + i)?.unwrap_or(0.0));
        }
    }
    let mut out: Vec<Group> = groups
        .into_iter()
        .map(|(key, (first_hour, sums))| {
            let mut v: Vec<f64> = sums.iter().map(|[sum, err]| sum + err).collect();
            v.push(if key.is_empty() { 0.0 } else { 1.0 });
            Group {
                totals: Totals::from_sums(&v),
                key,
                first_hour,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.first_hour, &a.key).cmp(&(b.first_hour, &b.key)));
    Ok(out)
}

/// One step of Kahan-Babuska-Neumaier summation, as SQLite's `sum()` does it: `acc` holds the
/// running sum and its error term; the result is their sum.
fn kbn_add(acc: &mut [f64; 2], r: f64) {
    let s = acc[0];
    let t = s + r;
    if s.abs() > r.abs() {
        acc[1] += (s - t) + r;
    } else {
        acc[1] += (r - t) + s;
    }
    acc[0] = t;
}

/// Unix seconds of the midnight `days_after` days after the start of `date` (`YYYY-MM-DD`)
/// in `zone`; `None` when the text is not a valid date. SQLite does the calendar and zone
/// arithmetic (DST included), so no time-zone crate is needed.
pub fn date_start(
    conn: &Connection,
    date: &str,
    zone: Zone,
    days_after: i64,
) -> Result<Option<i64>, StoreError> {
    let valid = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !valid {
        return Ok(None);
    }
    let shift = format!("{days_after:+} days");
    let sql = match zone {
        Zone::Utc => "SELECT CAST(strftime('%s', ?1, ?2) AS INTEGER), date(?1) = ?1",
        Zone::Local => "SELECT CAST(strftime('%s', ?1, ?2, 'utc') AS INTEGER), date(?1) = ?1",
    };
    let (secs, same): (Option<i64>, Option<bool>) =
        conn.query_row(sql, [date, shift.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    // date('2026-02-30') normalises to another day; reject rather than silently shift.
    Ok(secs.filter(|_| same == Some(true)))
}

/// `YYYY-MM-DD HH:MM` of Unix seconds `secs` in `zone`, for headers and session rows.
pub fn format_time(conn: &Connection, secs: i64, zone: Zone) -> Result<String, StoreError> {
    let sql = match zone {
        Zone::Utc => "SELECT strftime('%Y-%m-%d %H:%M', ?1, 'unixepoch')",
        Zone::Local => "SELECT strftime('%Y-%m-%d %H:%M', ?1, 'unixepoch', 'localtime')",
    };
    // Cached: a session breakdown formats one time per row (25,000 of them at scale).
    Ok(conn.prepare_cached(sql)?.query_row([secs], |r| r.get(0))?)
}

/// Outbox figures read through any connection (for `doctor` without a running relay).
pub fn outbox_stats(conn: &Connection) -> Result<OutboxStats, StoreError> {
    outbox::stats(conn, now_ns())
}

/// Earliest and latest hour with usage, for the report header.
pub fn usage_span(conn: &Connection, filter: &Filter) -> Result<Option<(i64, i64)>, StoreError> {
    let (where_sql, params) = where_clause(filter);
    // The ledger's hours too: imported history may reach back before any telemetry.
    let ledger_where = where_sql.replace(
        "project =",
        "(SELECT name FROM labels WHERE id = project) =",
    );
    let sql = format!(
        "SELECT min(h), max(h) FROM (SELECT hour AS h FROM usage_hourly {where_sql}
         UNION ALL SELECT hour AS h FROM request_hourly {ledger_where})"
    );
    let span: Option<(Option<i64>, Option<i64>)> = conn
        .query_row(&sql, params_from_iter(params.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(match span {
        Some((Some(a), Some(b))) => Some((a, b)),
        _ => None,
    })
}

/// Sums of every rollup column, then the distinct session count (see `Totals::from_sums`).
fn sum_list() -> String {
    let mut list: Vec<String> = ROLLUP_COLUMNS.iter().map(|c| format!("sum({c})")).collect();
    list.push("count(DISTINCT nullif(session_id, ''))".to_owned());
    list.join(", ")
}

fn where_clause(filter: &Filter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut conds = Vec::new();
    let mut params = Vec::new();
    if let Some(since) = filter.since {
        params.push(Value::Integer(since.div_euclid(3600) * 3600));
        conds.push(format!("hour >= ?{}", params.len()));
    }
    if let Some(until) = filter.until {
        params.push(Value::Integer(until));
        conds.push(format!("hour < ?{}", params.len()));
    }
    if let Some(project) = &filter.project {
        params.push(Value::Text(project.clone()));
        conds.push(format!("project = ?{}", params.len()));
    }
    if conds.is_empty() {
        (String::new(), params)
    } else {
        (format!("WHERE {}", conds.join(" AND ")), params)
    }
}

/// Unix seconds of the local midnights that start the day, the week (Monday) and the month
/// containing `now`, for budgets. SQLite does the zone arithmetic (DST included).
pub fn local_period_starts(conn: &Connection, now: i64) -> Result<[i64; 3], StoreError> {
    let sql = "SELECT
        CAST(strftime('%s', ?1, 'unixepoch', 'localtime', 'start of day', 'utc') AS INTEGER),
        CAST(strftime('%s', ?1, 'unixepoch', 'localtime', 'start of day', 'weekday 0', '-6 days',
                      'utc') AS INTEGER),
        CAST(strftime('%s', ?1, 'unixepoch', 'localtime', 'start of month', 'utc') AS INTEGER)";
    Ok(conn.query_row(sql, [now], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]))?)
}

/// `claude_code.cost.usage` (USD) over the rows the filter selects: the one figure a budget
/// needs, without summing every rollup column.
pub fn cost_usd(conn: &Connection, filter: &Filter) -> Result<f64, StoreError> {
    let (where_sql, params) = where_clause(filter);
    let sql = format!("SELECT total(cost_usd) FROM usage_hourly {where_sql}");
    Ok(conn.query_row(&sql, params_from_iter(params.iter()), |r| r.get(0))?)
}
