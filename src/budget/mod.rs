//! Budgets: how much of the `[budget]` limits the spend in the local store has used, per local
//! calendar day, week and month.
//!
//! One fast read of the store's hourly rollup (a few index range scans, no raw rows), so the
//! launcher can say "near/over budget" before claude starts and the status line can show it
//! on every refresh. Spend against a limit set in a project's `.claude-telemetry.toml` counts
//! that project only (the `project.name` the relay stamps); a limit from the user file, the
//! environment, a flag or a team budget (managed policy) counts everything on this machine.

pub mod export;

use std::fmt;
use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;

use crate::settings::budget::BUDGET_KEYS;
use crate::settings::{Loaded, Source};
use crate::store::StoreError;
use crate::store::queries::{self, Filter};

/// A standing is "near" from this fraction of its limit on.
pub const NEAR_FRACTION: f64 = 0.8;

/// A budget period, a calendar unit in the local time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Today, from local midnight.
    Day,
    /// This week, from Monday local midnight.
    Week,
    /// This month, from the 1st, local midnight.
    Month,
}

impl Period {
    const ALL: [Period; 3] = [Period::Day, Period::Week, Period::Month];

    /// The short word the status line and the launch line use (`day`, `week`, `month`).
    pub fn word(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// Where spend stands against one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Below [`NEAR_FRACTION`] of the limit.
    Under,
    /// At or above [`NEAR_FRACTION`], below the limit.
    Near,
    /// At or above the limit.
    Over,
}

/// Whose spend counts against a limit, following where the limit was set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Scope {
    /// Everything recorded on this machine (user file, environment, flag).
    Machine,
    /// One project's spend (a limit from that project's `.claude-telemetry.toml`).
    Project(String),
    /// Everything on this machine, against the team budget of the managed policy.
    Team,
}

/// One limit and the spend counted against it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub period: Period,
    pub scope: Scope,
    /// The limit, USD.
    pub limit_usd: f64,
    /// Spend since the period began, USD.
    pub spent_usd: f64,
    /// Unix seconds of the period's start (local midnight).
    pub since: i64,
}

impl Standing {
    /// Spend over limit (1.0 = the whole budget).
    pub fn fraction(&self) -> f64 {
        self.spent_usd / self.limit_usd
    }

    /// Under, near (>= 80 %) or over (>= 100 %).
    pub fn level(&self) -> Level {
        let f = self.fraction();
        if f >= 1.0 {
            Level::Over
        } else if f >= NEAR_FRACTION {
            Level::Near
        } else {
            Level::Under
        }
    }

    /// The compact form for a status line: `day $4.10/$10`.
    pub fn segment(&self) -> String {
        format!(
            "{} {}/{}",
            self.period.word(),
            money(self.spent_usd),
            limit(self.limit_usd)
        )
    }
}

impl fmt::Display for Standing {
    /// `day $8.50 of $10 (85%)`, with ` for project X` / ` (team budget)` when it applies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} of {} ({:.0}%)",
            self.period.word(),
            money(self.spent_usd),
            limit(self.limit_usd),
            self.fraction() * 100.0
        )?;
        match &self.scope {
            Scope::Machine => Ok(()),
            Scope::Project(name) => write!(f, " for project {name}"),
            Scope::Team => write!(f, " (team budget)"),
        }
    }
}

/// Every configured limit's standing, in day, week, month order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Standings(pub Vec<Standing>);

impl Standings {
    /// The standing closest to (or furthest past) its limit, for a one-segment status line.
    pub fn most_pressing(&self) -> Option<&Standing> {
        self.0
            .iter()
            .max_by(|a, b| a.fraction().total_cmp(&b.fraction()))
    }

    /// The launch line, when any limit is near or over: `claude-telemetry: over budget: day
    /// $12.40 of $10 (124%); near budget: week $41.00 of $50 (82%)`. `None` when all are under.
    pub fn launch_line(&self) -> Option<String> {
        let part = |level: Level, word: &str| {
            let items: Vec<String> = self
                .0
                .iter()
                .filter(|s| s.level() == level)
                .map(ToString::to_string)
                .collect();
            (!items.is_empty()).then(|| format!("{word} budget: {}", items.join(", ")))
        };
        let parts: Vec<String> = [part(Level::Over, "over"), part(Level::Near, "near")]
            .into_iter()
            .flatten()
            .collect();
        (!parts.is_empty()).then(|| format!("claude-telemetry: {}", parts.join("; ")))
    }
}

/// Why a standing could not be computed (the store could not be read).
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("cannot read the local store for budgets: {0}")]
    Store(#[from] StoreError),
}

/// Which limits apply and whose spend each counts: resolved from the settings once.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// (period, limit USD, scope) for every configured limit.
    pub limits: Vec<(Period, f64, Scope)>,
}

impl Plan {
    /// The limits of `loaded` for a session working in `cwd`: a limit from the project file
    /// counts the project detected there (as the relay stamps it, `project.name`); when the
    /// relay stamps no project (`resource.project_name = false`, or none detected) it counts
    /// everything, as nothing could tell the project's spend apart.
    pub fn from_settings(loaded: &Loaded, cwd: &Path) -> Plan {
        let mut project: Option<Option<String>> = None;
        let mut limits = Vec::new();
        for ((period, key), value) in Period::ALL
            .into_iter()
            .zip(BUDGET_KEYS)
            .zip(loaded.settings.budget.limits())
        {
            let Some(value) = value else { continue };
            let scope = match loaded.provenance.get(key) {
                Some(Source::Managed(_)) => Scope::Team,
                Some(Source::ProjectFile(_)) => {
                    let name = project.get_or_insert_with(|| {
                        if loaded.settings.resource.project_name {
                            crate::relay::policy::detect_project(cwd).name
                        } else {
                            None
                        }
                    });
                    match name {
                        Some(name) => Scope::Project(name.clone()),
                        None => Scope::Machine,
                    }
                }
                _ => Scope::Machine,
            };
            limits.push((period, value, scope));
        }
        Plan { limits }
    }

    /// No limit configured: nothing to read.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Reads the spend for every limit as of `now` (Unix seconds).
    pub fn standings(&self, conn: &Connection, now: i64) -> Result<Standings, BudgetError> {
        if self.is_empty() {
            return Ok(Standings::default());
        }
        let starts = queries::local_period_starts(conn, now)?;
        let mut out = Vec::with_capacity(self.limits.len());
        for (period, limit_usd, scope) in &self.limits {
            let since = starts[Period::ALL.iter().position(|p| p == period).unwrap_or(0)];
            let filter = Filter {
                since: Some(since),
                until: None,
                project: match scope {
                    Scope::Project(name) => Some(name.clone()),
                    _ => None,
                },
            };
            out.push(Standing {
                period: *period,
                scope: scope.clone(),
                limit_usd: *limit_usd,
                spent_usd: spent_usd(conn, &filter)?,
                since,
            });
        }
        Ok(Standings(out))
    }
}

/// What was spent in `filter`'s range: claude's own cost from telemetry, plus the estimated
/// cost of requests only Claude Code's transcripts saw (imported history), each request once,
/// the same sum `report` shows.
fn spent_usd(conn: &Connection, filter: &Filter) -> Result<f64, StoreError> {
    let telemetry = queries::cost_usd(conn, filter)?;
    let transcripts_only = crate::store::ledger::transcript_only_cost(
        conn,
        filter,
        &crate::history::prices::estimate_parts,
    )?;
    Ok(telemetry + transcripts_only)
}

/// What this machine spent since local midnight of `now` (Unix seconds), counted as budgets
/// and `report` count it (telemetry plus imported history, each request once): the status
/// line's "today", so the three never disagree.
pub fn spent_today(conn: &Connection, now: i64) -> Result<f64, StoreError> {
    let midnight = queries::local_period_starts(conn, now)?[0];
    spent_usd(
        conn,
        &Filter {
            since: Some(midnight),
            until: None,
            project: None,
        },
    )
}

/// The current standing of every configured budget for a session in `cwd`, read from the
/// store `loaded` points at. The entry point for the launcher and the status line: no limit
/// configured, store disabled or not created yet all give an empty [`Standings`] (nothing is
/// opened when no limit is set).
pub fn current(loaded: &Loaded, cwd: &Path) -> Result<Standings, BudgetError> {
    let plan = Plan::from_settings(loaded, cwd);
    if plan.is_empty() || !loaded.settings.store.enabled {
        return Ok(Standings::default());
    }
    let path = loaded.paths.store_file(&loaded.settings.store.path);
    let Some(conn) = crate::store::open_reader(&path)? else {
        return Ok(Standings::default());
    };
    plan.standings(&conn, now_secs())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `$4.10`: spend, always with cents.
fn money(usd: f64) -> String {
    format!("${usd:.2}")
}

/// `$10` or `$12.50`: a limit as the user wrote it, cents only when it has them.
fn limit(usd: f64) -> String {
    if (usd - usd.round()).abs() < 0.005 {
        format!("${usd:.0}")
    } else {
        format!("${usd:.2}")
    }
}

#[cfg(test)]
mod tests;
