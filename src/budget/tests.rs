//! Standings over a seeded store: the period cuts, project scoping, the levels and the lines.

use super::*;
use crate::store::fixtures::{self, Usage};
use crate::store::{Store, StoreBounds};

fn spend(store: &Store, project: Option<&str>, session: &str, secs: i64, usd: f64) {
    let usage = Usage {
        input: 100,
        output: 50,
        cache_read: 0,
        cache_creation: 0,
        cost_usd: usd,
    };
    let t = (secs as u64) * 1_000_000_000;
    store
        .append_blocking(fixtures::metrics(
            fixtures::resource(project),
            fixtures::usage_points(session, t, "claude-sonnet-4-6", usage),
        ))
        .expect("append");
}

fn seeded(now: i64) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = Store::open(&path, StoreBounds::default()).unwrap();
    let conn = crate::store::open_reader(&path).unwrap().unwrap();
    let [day, week, month] = queries::local_period_starts(&conn, now).unwrap();
    // Inside today, one hour in (the rollup is hourly): 3 + 1.5 (other project).
    spend(&store, Some("web"), "s-today", day + 3600 + 60, 3.0);
    spend(&store, Some("api"), "s-today-api", day + 3600 + 120, 1.5);
    // Earlier this week / month when those start before today; always before the month.
    if week < day {
        spend(&store, Some("web"), "s-week", week + 3600, 2.0);
    }
    if month < day && month < week {
        spend(&store, Some("web"), "s-month", month + 3600, 4.0);
    }
    spend(&store, Some("web"), "s-old", month - 3 * 86_400, 100.0);
    store.close_blocking().unwrap();
    (dir, conn)
}

#[test]
fn period_starts_are_local_midnights_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    drop(Store::open(&path, StoreBounds::default()).unwrap());
    let conn = crate::store::open_reader(&path).unwrap().unwrap();
    let now = 1_793_610_000; // Monday 2026-11-02 09:00 UTC
    let [day, week, month] = queries::local_period_starts(&conn, now).unwrap();
    assert!(day <= now && now - day < 86_400 + 3600, "{day} {now}");
    assert!(week <= day && day - week < 7 * 86_400);
    assert!(month <= day && day - month < 31 * 86_400 + 3600);
    let weekday: String = conn
        .query_row(
            "SELECT strftime('%w', ?1, 'unixepoch', 'localtime')",
            [week],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(weekday, "1", "weeks start on Monday");
}

#[test]
fn standings_count_each_period_from_its_local_start() {
    let now = super::now_secs();
    let (_dir, conn) = seeded(now);
    let [day, week, month] = queries::local_period_starts(&conn, now).unwrap();
    let plan = Plan {
        limits: vec![
            (Period::Day, 5.0, Scope::Machine),
            (Period::Week, 100.0, Scope::Machine),
            // Above the most the seed can put in a month (4.5 + 2 + 4), whatever the date:
            // the launch line below is the day's.
            (Period::Month, 20.0, Scope::Team),
        ],
    };
    let s = plan.standings(&conn, now).unwrap();
    let week_extra = if week < day { 2.0 } else { 0.0 };
    let month_extra = if month < day && month < week {
        4.0
    } else {
        0.0
    };
    assert_eq!(s.0[0].spent_usd, 4.5);
    assert_eq!(s.0[0].level(), Level::Near, "4.5 of 5 is 90 %");
    assert_eq!(s.0[1].spent_usd, 4.5 + week_extra);
    assert_eq!(s.0[1].level(), Level::Under);
    assert_eq!(s.0[2].spent_usd, 4.5 + week_extra + month_extra);
    assert_eq!(s.0[2].since, month);
    let line = s.launch_line().expect("near says so");
    assert!(line.starts_with("claude-telemetry: near budget: day $4.50 of $5 (90%)"));
    assert_eq!(s.0[0].segment(), "day $4.50/$5");
}

#[test]
fn a_project_limit_counts_only_that_project() {
    let now = super::now_secs();
    let (_dir, conn) = seeded(now);
    let plan = Plan {
        limits: vec![(Period::Day, 3.0, Scope::Project("web".into()))],
    };
    let s = plan.standings(&conn, now).unwrap();
    assert_eq!(s.0[0].spent_usd, 3.0);
    assert_eq!(s.0[0].level(), Level::Over, "exactly the limit is over");
    assert_eq!(
        s.launch_line().unwrap(),
        "claude-telemetry: over budget: day $3.00 of $3 (100%) for project web"
    );
}

#[test]
fn under_every_limit_there_is_no_launch_line() {
    let now = super::now_secs();
    let (_dir, conn) = seeded(now);
    let plan = Plan {
        limits: vec![(Period::Day, 12.5, Scope::Machine)],
    };
    let s = plan.standings(&conn, now).unwrap();
    assert_eq!(s.0[0].level(), Level::Under);
    assert_eq!(s.launch_line(), None);
    assert_eq!(s.0[0].segment(), "day $4.50/$12.50");
    assert_eq!(s.most_pressing().map(|s| s.period), Some(Period::Day));
}

/// A request only a transcript saw (imported history) is spend too, priced as `report`
/// prices it; one telemetry also saw is not counted a second time.
#[test]
fn imported_history_counts_toward_the_budget_once() {
    use crate::store::ledger::{Labels, LedgerTx, Record, Source, Tokens};
    let now = super::now_secs();
    let (dir, conn) = seeded(now);
    let [day, _, _] = queries::local_period_starts(&conn, now).unwrap();
    let record = |key: &str, source: Source| Record {
        key: key.to_owned(),
        time_ns: (day + 2 * 3600) * 1_000_000_000,
        session: "s-imported".into(),
        model: "claude-sonnet-4-6".into(),
        project: "web".into(),
        branch: None,
        tokens: Tokens {
            input: 100_000,
            output: 0,
            ..Tokens::default()
        },
        cost_usd: (source == Source::Telemetry).then_some(0.0),
        source,
    };
    let mut writer = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let tx = writer.transaction().unwrap();
    let mut labels = Labels::default();
    let mut ledger = LedgerTx::new(&tx, &mut labels);
    ledger
        .apply(&record("req_only_transcript", Source::Transcript))
        .unwrap();
    ledger
        .apply(&record("req_both", Source::Telemetry))
        .unwrap();
    ledger
        .apply(&record("req_both", Source::Transcript))
        .unwrap();
    ledger.finish().unwrap();
    tx.commit().unwrap();
    let priced = crate::history::prices::estimate_parts(
        "claude-sonnet-4-6",
        false,
        [100_000.0, 0.0, 0.0, 0.0, 0.0],
    )
    .expect("the price table knows sonnet 4.6");
    assert!(priced > 0.0);
    let plan = Plan {
        limits: vec![(Period::Day, 100.0, Scope::Machine)],
    };
    let s = plan.standings(&conn, now).unwrap();
    assert!(
        (s.0[0].spent_usd - (4.5 + priced)).abs() < 1e-9,
        "{} != 4.5 + {priced}",
        s.0[0].spent_usd
    );
    // The status line's "today" is the same figure.
    assert_eq!(spent_today(&conn, now).unwrap(), s.0[0].spent_usd);
    // And the lean ledger sum is what the report's ledger groups estimate.
    let filter = Filter {
        since: Some(day),
        until: None,
        project: None,
    };
    let groups: f64 = crate::store::ledger::ledger_groups(
        &conn,
        &filter,
        None,
        queries::Zone::Local,
        &crate::history::prices::estimate_parts,
    )
    .unwrap()
    .iter()
    .map(|g| g.sums.estimated_cost_usd)
    .sum();
    let lean = crate::store::ledger::transcript_only_cost(
        &conn,
        &filter,
        &crate::history::prices::estimate_parts,
    )
    .unwrap();
    assert!((groups - priced).abs() < 1e-9 && (lean - groups).abs() < 1e-12);
}
