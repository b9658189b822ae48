//! `claude-telemetry doctor`: explains whether telemetry can flow, and what to do if not.
//! Exits non-zero when something blocks telemetry.

use crate::launcher::{self, last_run::LastRun};
use crate::relay::forward;
use crate::settings::{self, Loaded, UpstreamSettings};
use crate::stack;
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Flags of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the findings as one JSON document (for scripts and support tickets).
    #[arg(long)]
    pub json: bool,
}

/// How serious one check's finding is; the worst one decides `doctor`'s exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// Telemetry flows, or will once something transient passes; worth knowing.
    Warn,
    /// Telemetry cannot flow until this is fixed: `doctor` exits 1.
    Fail,
}

/// One finding: which check, how serious, and what it found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// How serious.
    pub level: Level,
    /// The check's name (`upstream`, `stack`, …), the same in text and JSON.
    pub check: String,
    /// What it found and what to do, in words.
    pub detail: String,
}

/// Where the checks put their findings: printed at once as text (a slow check shows
/// progress), or kept for one JSON document at the end.
pub struct Report {
    worst: Level,
    json: bool,
    findings: Vec<Finding>,
}

impl Report {
    fn new(json: bool) -> Self {
        Report {
            worst: Level::Ok,
            json,
            findings: Vec::new(),
        }
    }

    /// Records one finding of check `what`.
    pub fn line(&mut self, level: Level, what: &str, detail: impl AsRef<str>) {
        let detail = detail.as_ref().to_string();
        if !self.json {
            let tag = match level {
                Level::Ok => " ok ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("[{tag}] {what}: {detail}");
        }
        self.worst = self.worst.max(level);
        self.findings.push(Finding {
            level,
            check: what.to_string(),
            detail,
        });
    }

    /// Ends the report: the JSON document (in `--json` mode) or the closing hint, and the exit
    /// code (1 when something blocks telemetry).
    fn finish(self) -> i32 {
        let code = i32::from(self.worst == Level::Fail);
        if self.json {
            let doc = serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "worst": self.worst,
                "exit_code": code,
                "checks": self.findings,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
            );
        } else {
            println!("\nClaude Code's own checks: claude-telemetry -- doctor");
        }
        code
    }
}

/// A check: reads the settings, adds one or more findings. Each is a plain function, listed
/// in [`CHECKS`] in the order they are printed.
type Check = fn(&Loaded, &mut Report);

/// Every check, in order.
const CHECKS: &[Check] = &[
    check_settings_layers,
    check_claude,
    check_claude_settings,
    check_upstream,
    check_stack,
    check_relay_ports,
    check_store,
    check_delivery,
    check_last_run,
    check_withheld_keys,
];

/// Runs every check and prints one line each (or one JSON document with `--json`).
pub fn run(args: &DoctorArgs) -> anyhow::Result<i32> {
    let mut report = Report::new(args.json);
    if !args.json {
        println!("claude-telemetry {}", env!("CARGO_PKG_VERSION"));
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let loaded = match settings::load(&cwd, &launcher::environment(), &[]) {
        Ok(l) => l,
        Err(e) => {
            report.line(Level::Fail, "settings", e.to_string());
            return Ok(report.finish());
        }
    };
    for check in CHECKS {
        check(&loaded, &mut report);
    }
    Ok(report.finish())
}

fn check_settings_layers(loaded: &Loaded, report: &mut Report) {
    for (source, exists) in &loaded.files {
        let state = if *exists { "applies" } else { "not present" };
        report.line(Level::Ok, "settings layer", format!("{source}: {state}"));
    }
}

fn check_claude(loaded: &Loaded, report: &mut Report) {
    match launcher::locate_claude(loaded) {
        Ok(path) => {
            let version = launcher::claude_version(&path);
            report.line(
                Level::Ok,
                "claude",
                format!("{} ({version})", path.display()),
            );
            let release =
                crate::claude::compat::installed(&path, &version, &loaded.paths.cache_dir);
            let level = if release.is_warning() {
                Level::Warn
            } else {
                Level::Ok
            };
            report.line(level, "claude release", release.message);
        }
        Err(e) => report.line(
            Level::Fail,
            "claude",
            e.to_string().replace('\n', "\n       "),
        ),
    }
}

/// Claude Code settings files whose `env` block sets telemetry variables.
fn check_claude_settings(_loaded: &Loaded, report: &mut Report) {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let cwd = cwd.as_path();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut candidates: Vec<(PathBuf, bool)> = Vec::new();
    if let Some(h) = &home {
        candidates.push((h.join(".claude/settings.json"), false));
        candidates.push((h.join(".claude/settings.local.json"), false));
    }
    for dir in cwd.ancestors() {
        candidates.push((dir.join(".claude/settings.json"), false));
        candidates.push((dir.join(".claude/settings.local.json"), false));
        if dir.join(".git").exists() {
            break;
        }
    }
    candidates.push((
        PathBuf::from("/etc/claude-code/managed-settings.json"),
        true,
    ));
    let mut found_any = false;
    for (path, managed) in candidates {
        let Some(vars) = telemetry_vars_in(&path) else {
            continue;
        };
        found_any = true;
        let names = vars.join(", ");
        if managed {
            report.line(
                Level::Fail,
                "claude managed settings",
                format!(
                    "{} sets {names}; managed settings override everything the launcher can pass, \
                     so telemetry may bypass the relay. Ask your administrator to remove them.",
                    path.display()
                ),
            );
        } else {
            report.line(
                Level::Ok,
                "claude settings",
                format!(
                    "{} sets {names}; overridden for sessions run through claude-telemetry (an \
                     injected --settings wins), but plain `claude` still uses them",
                    path.display()
                ),
            );
        }
    }
    if !found_any {
        report.line(
            Level::Ok,
            "claude settings",
            "no Claude settings file sets telemetry variables",
        );
    }
}

fn telemetry_vars_in(path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let env = json.get("env")?.as_object()?;
    let vars: Vec<String> = env
        .keys()
        .filter(|k| k.starts_with("OTEL_") || k.as_str() == "CLAUDE_CODE_ENABLE_TELEMETRY")
        .cloned()
        .collect();
    (!vars.is_empty()).then_some(vars)
}

/// The upstream as the forwarder will use it: the same client (TLS with the same roots, the
/// same headers), sending one empty export, which a collector answers like any other.
fn check_upstream(loaded: &Loaded, report: &mut Report) {
    let upstream = &loaded.settings.upstream;
    if !upstream.is_active() {
        report.line(Level::Ok, "upstream", "disabled: telemetry stays local");
        return;
    }
    let endpoint = &upstream.endpoint;
    let source = loaded
        .provenance
        .get("upstream.endpoint")
        .map(ToString::to_string)
        .unwrap_or_default();
    match probe_upstream(upstream) {
        Ok(()) => report.line(
            Level::Ok,
            "upstream",
            format!(
                "{endpoint} accepted an empty {} export{} (set by {source})",
                match upstream.protocol {
                    settings::Protocol::Grpc => "gRPC",
                    settings::Protocol::HttpProtobuf => "OTLP/HTTP",
                },
                if endpoint.starts_with("https://") {
                    ", TLS verified with the system's roots"
                } else {
                    ""
                }
            ),
        ),
        Err(reason) => {
            let trouble = forward::trouble_of(&reason);
            // Down or unreachable: sessions still run and keep telemetry for later. A rejected
            // certificate, a name that does not resolve or a refusal will not heal by waiting.
            let level = if trouble == forward::Trouble::Unreachable {
                Level::Warn
            } else {
                Level::Fail
            };
            let advice = match trouble {
                forward::Trouble::Unreachable => {
                    "Sessions still run; telemetry is kept locally and delivered once it answers. \
                     Start the collector or set upstream.endpoint."
                }
                forward::Trouble::Tls => {
                    "Nothing can be delivered until the certificate is trusted (or fix \
                     upstream.endpoint)."
                }
                forward::Trouble::Dns => "Check the host name in upstream.endpoint.",
                forward::Trouble::Other => {
                    "Check upstream.endpoint, upstream.protocol and upstream.headers."
                }
            };
            report.line(
                level,
                "upstream",
                format!("{endpoint}: {reason} (set by {source}). {advice}"),
            );
        }
    }
}

/// One empty logs export through the forwarder's own client, bounded to a few seconds.
fn probe_upstream(upstream: &UpstreamSettings) -> Result<(), String> {
    let mut settings = upstream.clone();
    settings.timeout_ms = settings.timeout_ms.clamp(1, 5_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // The gRPC channel is built lazily on the runtime it is created in.
    let _inside = rt.enter();
    let client = forward::Upstream::connect(&settings).map_err(|e| e.to_string())?;
    // An empty logs export encodes to zero bytes.
    rt.block_on(client.send(crate::otlp::Signal::Logs, bytes::Bytes::new()))
        .map(|_| ())
        .map_err(|e| e.message)
}

/// The local stack, when it is the upstream: up, or why not (the last start's recorded cause).
fn check_stack(loaded: &Loaded, report: &mut Report) {
    let settings = &loaded.settings;
    if !settings.upstream.is_active()
        || !stack::is_local_collector(&settings.upstream.endpoint, &settings.stack.ports)
    {
        return;
    }
    let stack_settings = settings.stack.with_default_data_dir(&loaded.paths.data_dir);
    if stack_settings.manage == Some(false) {
        report.line(
            Level::Ok,
            "stack",
            "not managed ([stack] manage = false): sessions never start it",
        );
        return;
    }
    let collector = &stack::SERVICES[0];
    let ready = stack::readiness::probe_service(
        collector,
        &stack_settings.ports,
        Duration::from_millis(500),
    )
    .is_ready();
    if ready {
        report.line(Level::Ok, "stack", "the collector answers: the stack is up");
    } else if let Some(failure) = stack::commands::last_start_failure(&stack_settings) {
        report.line(
            Level::Warn,
            "stack",
            format!(
                "not up: {}",
                stack::commands::describe_start_failure(&failure)
            ),
        );
    } else {
        report.line(
            Level::Warn,
            "stack",
            "not up; the next session starts it in the background (`claude-telemetry up` starts \
             it and waits)",
        );
    }
}

fn check_relay_ports(loaded: &Loaded, report: &mut Report) {
    for (key, addr) in [
        ("relay.grpc_listen", &loaded.settings.relay.grpc_listen),
        ("relay.http_listen", &loaded.settings.relay.http_listen),
    ] {
        match std::net::TcpListener::bind(addr.as_str()) {
            Ok(l) => {
                let bound = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
                report.line(
                    Level::Ok,
                    "relay port",
                    format!("{key} = {addr} can be bound ({bound})"),
                );
            }
            Err(e) => report.line(Level::Fail, "relay port", format!("{key} = {addr}: {e}")),
        }
    }
}

fn check_store(loaded: &Loaded, report: &mut Report) {
    let (level, text) = store_summary(loaded);
    report.line(level, "local store", text);
    if let Some((level, text)) = reconciliation_summary(loaded) {
        report.line(level, "telemetry vs transcripts", text);
    }
}

/// One line from `report --check`: how many requests each source saw; a warning when
/// telemetry missed some that transcripts hold. `None` without a store file.
fn reconciliation_summary(loaded: &Loaded) -> Option<(Level, String)> {
    let path = loaded.paths.store_file(&loaded.settings.store.path);
    let conn = crate::store::open_reader(&path).ok()??;
    let filter = crate::store::queries::Filter::default();
    match crate::report::check::compute(&conn, &filter, crate::store::queries::Zone::Utc) {
        Ok(c) => {
            let level = if c.transcript_only > 0 {
                Level::Warn
            } else {
                Level::Ok
            };
            Some((level, crate::report::check::one_line(&c)))
        }
        Err(e) => Some((Level::Fail, format!("{}: {e:#}", path.display()))),
    }
}

/// One line about the local store's outbox: what waits for the upstream and what its bounds
/// dropped. Also printed under `status`'s table.
pub fn store_summary(loaded: &Loaded) -> (Level, String) {
    let store = &loaded.settings.store;
    if !store.enabled {
        let text = if loaded.settings.upstream.is_active() {
            "disabled: telemetry survives an upstream outage only while the launcher runs"
        } else {
            "disabled, and no upstream is enabled: sessions run with claude's telemetry switched \
             off, as nothing would keep it"
        };
        return (Level::Warn, text.into());
    }
    let path = loaded.paths.store_file(&store.path);
    let stats = match crate::store::open_reader(&path) {
        Ok(None) => return (Level::Ok, format!("{} (not created yet)", path.display())),
        Ok(Some(conn)) => crate::store::queries::outbox_stats(&conn),
        Err(e) => return (Level::Fail, format!("{}: {e}", path.display())),
    };
    match stats {
        Ok(stats) => {
            let level = if stats.dropped_rows > 0 {
                Level::Warn
            } else {
                Level::Ok
            };
            let oldest = stats
                .oldest_age_secs
                .map(|s| format!(", oldest {s:.0} s old"))
                .unwrap_or_default();
            (
                level,
                format!(
                    "{}: {} request(s) waiting for the upstream ({} bytes{oldest}); {} dropped by the size/age bounds ({} item(s))",
                    path.display(),
                    stats.pending_rows,
                    stats.pending_bytes,
                    stats.dropped_rows,
                    stats.dropped_items
                ),
            )
        }
        Err(e) => (Level::Fail, format!("{}: {e}", path.display())),
    }
}

/// Is the store file sound (full integrity check), and is delivery moving: rows failing again
/// and again, or items dropped as too large, or a store that failed during the last session.
fn check_delivery(loaded: &Loaded, report: &mut Report) {
    use crate::store::health::{self, Health};
    let store = &loaded.settings.store;
    let path = loaded.paths.store_file(&store.path);
    if !store.enabled || !path.exists() {
        return;
    }
    if let Health::Damaged(reason) = health::integrity_check(&path) {
        report.line(
            Level::Fail,
            "store integrity",
            format!(
                "{} is damaged ({reason}); the next session sets it aside and recovers the \
                 waiting batches it can read",
                path.display()
            ),
        );
        return;
    }
    report.line(Level::Ok, "store integrity", "PRAGMA integrity_check: ok");
    let stats = crate::store::open_reader(&path)
        .ok()
        .flatten()
        .and_then(|conn| crate::store::queries::outbox_stats(&conn).ok());
    if let Some(stats) = stats.filter(|s| s.failing_rows > 0) {
        let stuck = stats.max_attempts >= STUCK_ATTEMPTS;
        report.line(
            if stuck { Level::Fail } else { Level::Warn },
            "delivery",
            format!(
                "{} waiting batch(es) failed to deliver (up to {} attempt(s){}); last error: {}",
                stats.failing_rows,
                stats.max_attempts,
                if stuck { ": delivery is stuck" } else { "" },
                stats.last_error.as_deref().unwrap_or("(none recorded)")
            ),
        );
    }
    if let Some(last) = LastRun::load(&loaded.paths.last_run_file()) {
        if last.dropped_too_large_items > 0 {
            report.line(
                Level::Warn,
                "delivery",
                format!(
                    "the last session dropped {} item(s) too large for the upstream even alone",
                    last.dropped_too_large_items
                ),
            );
        }
        if let Some(e) = &last.store_failure {
            let went = if last.refused_requests > 0 {
                format!(
                    "batches went on from memory, and {} that nothing could keep were refused \
                     with a retryable error",
                    last.refused_requests
                )
            } else {
                "batches went on from memory".to_string()
            };
            report.line(
                Level::Warn,
                "delivery",
                format!("the local store failed during the last session ({e}); {went}"),
            );
        }
    }
}

/// Failed attempts of one batch after which `doctor` calls delivery stuck.
const STUCK_ATTEMPTS: u64 = 10;

fn check_last_run(loaded: &Loaded, report: &mut Report) {
    let Some(last) = LastRun::load(&loaded.paths.last_run_file()) else {
        report.line(Level::Ok, "last session", "no session recorded yet");
        return;
    };
    if let Some(why) = &last.telemetry_off {
        report.line(
            Level::Warn,
            "last session",
            format!("telemetry was off (claude's exporters switched off): {why}"),
        );
        return;
    }
    if last.metric_points == 0 && last.log_records == 0 {
        report.line(
            Level::Warn,
            "last session",
            format!(
                "claude {} sent no telemetry at all. Known causes: a Claude Code release whose \
                 exporter is broken, a session that ended before its first export, managed settings.",
                last.claude_version.as_deref().unwrap_or("(unknown version)")
            ),
        );
    } else {
        let mut detail = format!(
            "{} metric point(s), {} event(s) received; {} request(s) delivered, {} undelivered",
            last.metric_points,
            last.log_records,
            last.delivered_requests,
            last.undelivered_requests
        );
        if last.rejected_requests > 0 {
            detail.push_str(&format!(
                "; {} refused by the upstream: dropped",
                last.rejected_requests
            ));
        }
        if last.refused_requests > 0 {
            detail.push_str(&format!(
                "; {} refused with a retryable error (nothing could keep them)",
                last.refused_requests
            ));
        }
        if let Some(e) = &last.last_error {
            detail.push_str(&format!("; last upstream error: {e}"));
        }
        let level =
            if last.undelivered_requests + last.rejected_requests + last.refused_requests > 0 {
                Level::Warn
            } else {
                Level::Ok
            };
        report.line(level, "last session", detail);
    }
    // Claude (or another sender) met a receiver bound: told to retry or cut off. A limit
    // that is too tight for this machine's traffic shows here with the setting to raise.
    if let Some(sentence) = last.shed.sentence(&loaded.settings.relay) {
        report.line(
            Level::Warn,
            "relay bounds",
            format!("in the last session {sentence}"),
        );
    }
}

/// The unknown attribute keys whose text the last session's relay withheld (names only; the
/// values never reach the record), with the setting that lets them through.
fn check_withheld_keys(loaded: &Loaded, report: &mut Report) {
    let Some(last) = LastRun::load(&loaded.paths.last_run_file()) else {
        return;
    };
    if last.withheld_keys.is_empty() {
        return;
    }
    let list = last
        .withheld_keys
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    report.line(
        Level::Ok,
        "withheld attributes",
        format!(
            "the last session's telemetry had text in attribute keys the relay does not know, \
             sent as <REDACTED>: {list}. To send a key's text (after checking it carries no \
             prompt, path or personal data), add it to your settings: \
             [privacy] allow_attributes = [{list}]"
        ),
    );
}
