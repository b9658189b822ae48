//! The run: find claude, start the relay, start claude pointed at it, wait, drain, exit with
//! claude's status. The order matters: the relay is bound before claude starts (so the port
//! handed to claude is real) and drained after claude exits (so its final export is kept).

mod child;
mod exit;
pub mod last_run;
mod terminal;

use crate::claude::{self, Invocation, TelemetryTarget};
use crate::relay::outbox::Outbox;
use crate::relay::policy::{LaunchContext, Policy, PolicyError};
use crate::relay::{self, DrainReport, RelayHandle, stats::RelayStats};
use crate::settings::{Loaded, SettingsError, UpstreamSettings};
use crate::stack;
use crate::store::{Store, StoreBounds};
use child::ChildSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Exit code when claude cannot be found, as a shell reports a missing command.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Environment marker: set for claude, names the launcher's pid (a nested launch can tell it is
/// nested, and a wrapper that loops back to us is detected).
pub const LAUNCHER_PID_ENV: &str = "CLAUDE_TELEMETRY_LAUNCHER_PID";

/// Set for claude: the relay's OTLP/HTTP endpoint, for hooks and scripts that want their own
/// telemetry to pass the same policy and reach the same upstream.
pub const RELAY_HTTP_ENV: &str = "CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT";

/// Runs claude with `args`, returning the code to exit with.
pub fn run(loaded: &Loaded, args: Vec<String>) -> anyhow::Result<i32> {
    if launched_by_ourselves() {
        eprintln!(
            "claude-telemetry: the `claude` this launcher started is claude-telemetry again (a \
             wrapper or alias loops back). Set the real claude's path: [claude] path = \"…\" or \
             CLAUDE_TELEMETRY_CLAUDE__PATH."
        );
        return Ok(EXIT_NOT_FOUND);
    }
    let program = match locate_claude(loaded) {
        Ok(p) => p,
        Err(not_found) => {
            eprintln!("{not_found}");
            return Ok(EXIT_NOT_FOUND);
        }
    };
    let route = claude::grammar::route(&program, &args, &loaded.paths.cache_dir);
    match route.invocation {
        Invocation::PassThrough => {
            route.start_learning();
            Err(exec(&program, &args).into())
        }
        Invocation::Session => run_session(loaded, program, args, &route),
    }
}

/// Runs claude when our settings cannot be read: telemetry must never block claude, and a
/// policy we could not read must never let telemetry leave the machine. A pass-through
/// invocation (`--version`, claude's subcommands) is exec'd as if we were not there; a session
/// runs with claude's telemetry switched off (env and an injected `--settings`), no relay and
/// no stack start, after one loud line naming the bad setting (`file:line:col: key: problem`).
pub fn run_without_settings(error: &SettingsError, args: Vec<String>) -> anyhow::Result<i32> {
    if launched_by_ourselves() {
        eprintln!(
            "claude-telemetry: the `claude` this launcher started is claude-telemetry again (a \
             wrapper or alias loops back). Set the real claude's path: CLAUDE_TELEMETRY_CLAUDE__PATH."
        );
        return Ok(EXIT_NOT_FOUND);
    }
    // Only the variable naming claude is read (raw, not validated): without it a user whose
    // claude is off PATH would lose claude as well as telemetry.
    let configured = std::env::var("CLAUDE_TELEMETRY_CLAUDE__PATH").unwrap_or_default();
    let program = match find_claude_at(&configured) {
        Ok(p) => p,
        Err(not_found) => {
            eprintln!("{not_found}");
            eprintln!("claude-telemetry: (settings not read: {error})");
            return Ok(EXIT_NOT_FOUND);
        }
    };
    if claude::classify(&args) == Invocation::PassThrough {
        return Err(exec(&program, &args).into());
    }
    // One line, whatever the error's own layout (a regex error spans three).
    let one_line = error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!(
        "claude-telemetry: TELEMETRY WITHHELD for this session, settings error: {one_line} \
         (nothing is recorded or sent until it is fixed; `claude-telemetry config` checks it)"
    );
    let withheld = claude::withheld_variables();
    let mut set_env = withheld.clone();
    set_env.insert(LAUNCHER_PID_ENV.into(), std::process::id().to_string());
    let spec = ChildSpec {
        program: program.clone(),
        args: match claude::inject_env(&args, &withheld) {
            Ok(args) => args,
            Err(e) => {
                eprintln!("claude-telemetry: {e}");
                return Ok(2);
            }
        },
        set_env,
        remove_env: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let interactive = terminal::is_tty(libc::STDIN_FILENO) && terminal::is_tty(libc::STDOUT_FILENO);
    let outcome = if interactive {
        child::run_pty(&spec, rt.handle())
    } else {
        child::run_direct(&spec, rt.handle()).map_err(anyhow::Error::from)
    };
    rt.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!(
                "claude-telemetry: cannot start {}: {e:#}",
                program.display()
            );
            Ok(EXIT_NOT_FOUND - 1)
        }
    }
}

/// Finds claude per the settings, skipping ourselves.
pub fn locate_claude(loaded: &Loaded) -> Result<PathBuf, claude::NotFound> {
    find_claude_at(&loaded.settings.claude.path)
}

/// Finds claude at `configured` (empty: PATH, then the usual places), skipping ourselves.
fn find_claude_at(configured: &str) -> Result<PathBuf, claude::NotFound> {
    let own = std::env::current_exe().ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let path_var = std::env::var("PATH").ok();
    claude::find_claude(
        configured,
        path_var.as_deref(),
        home.as_deref(),
        own.as_deref(),
    )
}

/// Replaces this process with claude: for invocations that run no session, nothing of ours
/// stays in the way (not even a process).
fn exec(program: &PathBuf, args: &[String]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(program).args(args).exec()
}

fn run_session(
    loaded: &Loaded,
    program: PathBuf,
    args: Vec<String>,
    route: &claude::grammar::Route,
) -> anyhow::Result<i32> {
    let settings = &loaded.settings;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("relay")
        .enable_all()
        .build()?;
    report_loosening(loaded);
    say_budget(loaded);
    let upstream = upstream_for_this_run(loaded);
    let (relay, telemetry_off) = match start_relay(loaded, &upstream, &rt) {
        Ok(handle) => (Some(handle), None),
        Err(why) => (None, Some(why)),
    };
    let budget_export = relay.as_ref().and_then(|h| export_budgets(loaded, h, &rt));
    let spec = match child_spec(loaded, &program, &args, relay.as_ref()) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("claude-telemetry: {e}");
            if let Some(handle) = relay {
                rt.block_on(handle.shutdown(Duration::ZERO));
            }
            return Ok(2);
        }
    };

    // History import in the background, from a thread: the fork never delays claude's start.
    // With the store disabled there is nowhere to import to.
    if settings.store.enabled {
        let data_dir = loaded.paths.data_dir.clone();
        let _ = std::thread::Builder::new()
            .name("history-import".to_owned())
            .spawn(move || crate::history::background::start_in_background(&data_dir));
    }
    let interactive = terminal::is_tty(libc::STDIN_FILENO) && terminal::is_tty(libc::STDOUT_FILENO);
    let outcome = if interactive {
        child::run_pty(&spec, rt.handle())
    } else {
        child::run_direct(&spec, rt.handle()).map_err(anyhow::Error::from)
    };
    let code = match outcome {
        Ok(code) => {
            route.start_learning();
            code
        }
        Err(e) => {
            eprintln!(
                "claude-telemetry: cannot start {}: {e:#}",
                program.display()
            );
            if let Some(handle) = relay {
                rt.block_on(handle.shutdown(Duration::ZERO));
            }
            return Ok(EXIT_NOT_FOUND - 1);
        }
    };

    if let Some(task) = budget_export {
        task.abort();
    }
    if let Some(handle) = relay {
        let stats = handle.stats.clone();
        let deadline = Duration::from_millis(settings.relay.drain_timeout_ms);
        let drain = rt.block_on(handle.shutdown(deadline));
        summarise(loaded, &upstream, &program, &stats, drain);
    } else if let Some(why) = telemetry_off {
        // Said before claude started; recorded so `doctor` says why the session has none.
        let _ = last_run::LastRun::telemetry_off(&program, why).save(&loaded.paths.last_run_file());
    }
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(code)
}

/// Policy, outbox and listeners, before claude starts. Any failure leaves claude running
/// without the relay, its exporters switched off (said in one line, the error returned for the
/// last-run record): telemetry degrades, the session does not. So does a relay that could keep
/// nothing (no store, and nothing forwarding): claude would be told its telemetry was taken
/// while every batch is gone at exit, so it is not pointed at one.
fn start_relay(
    loaded: &Loaded,
    upstream: &UpstreamSettings,
    rt: &tokio::runtime::Runtime,
) -> Result<RelayHandle, String> {
    let (outbox, no_store) = open_outbox(loaded, upstream);
    let started = prepare_policy(loaded)
        .map_err(|e| e.to_string())
        .and_then(|policy| {
            rt.block_on(relay::start(
                &loaded.settings.relay,
                upstream,
                policy,
                outbox,
            ))
            .map_err(|e| e.to_string())
        });
    match started {
        Ok(handle) if handle.keeps_nothing() => {
            let no_upstream = match &handle.upstream_problem {
                Some(problem) => format!("the upstream could not be set up ({problem})"),
                None => "no upstream (local-only)".to_string(),
            };
            rt.block_on(handle.shutdown(Duration::ZERO));
            let why = format!(
                "{} and {no_upstream}: nothing could keep it",
                no_store.as_deref().unwrap_or("no local store")
            );
            eprintln!(
                "claude-telemetry: telemetry off for this session (claude's exporters are switched \
                 off): {why}"
            );
            Err(why)
        }
        Ok(handle) => {
            if let Some(no_store) = &no_store {
                eprintln!("claude-telemetry: {no_store}; telemetry is kept in memory only");
            }
            if let Some(problem) = &handle.upstream_problem {
                // Only with a store: without one the relay keeps nothing and is not run.
                eprintln!(
                    "claude-telemetry: nothing is forwarded this session, {problem}; telemetry is kept locally"
                );
            }
            Ok(handle)
        }
        Err(e) => {
            eprintln!(
                "claude-telemetry: telemetry withheld for this session (claude's exporters are switched off): {e}"
            );
            Err(format!("the relay could not start: {e}"))
        }
    }
}

/// How claude is started: its arguments, with the telemetry `--settings` for a session with a
/// relay, and its environment.
fn child_spec(
    loaded: &Loaded,
    program: &std::path::Path,
    args: &[String],
    relay: Option<&RelayHandle>,
) -> Result<ChildSpec, claude::InjectError> {
    let settings = &loaded.settings;
    let mut spec = ChildSpec {
        program: program.to_path_buf(),
        args: args.to_vec(),
        set_env: settings.claude.env.clone(),
        remove_env: Vec::new(),
    };
    spec.set_env
        .insert(LAUNCHER_PID_ENV.into(), std::process::id().to_string());
    if let Some(handle) = relay {
        let target = TelemetryTarget {
            grpc_endpoint: format!("http://{}", handle.grpc_addr),
            metrics_interval_ms: settings.export.metrics_interval_ms,
            logs_interval_ms: settings.export.logs_interval_ms,
            policy_switches: settings.policy().claude_switches(),
        };
        let (vars, removed) = claude::child_env(&target, &settings.claude.env);
        spec.set_env.extend(vars);
        // Hooks and scripts claude runs can send their own OTLP/HTTP through the same relay.
        spec.set_env.insert(
            RELAY_HTTP_ENV.into(),
            format!("http://{}", handle.http_addr),
        );
        spec.remove_env = removed.into_iter().map(String::from).collect();
        spec.args = claude::inject_settings(args, &target)?;
    } else {
        // No relay, so no policy between claude and the network: claude's own exporters
        // (from the user's environment or settings files) must not send around it.
        let withheld = claude::withheld_variables();
        spec.set_env.extend(withheld.clone());
        spec.args = claude::inject_env(args, &withheld)?;
    }
    Ok(spec)
}

/// The upstream for this run. When it is the local stack's collector, one fast probe decides:
/// up, or started in the background (never waited for: the outbox keeps telemetry until it
/// answers), or no Docker at all, which is local-only mode (usage rows for `report`, nothing
/// forwarded).
fn upstream_for_this_run(loaded: &Loaded) -> UpstreamSettings {
    let settings = &loaded.settings;
    let mut upstream = settings.upstream.clone();
    if upstream.is_active() && stack::is_local_collector(&upstream.endpoint, &settings.stack.ports)
    {
        let stack_settings = settings.stack.with_default_data_dir(&loaded.paths.data_dir);
        let notice = stack::ensure_started_in_background(&stack_settings);
        if let Some(message) = notice.message() {
            eprintln!("{message}");
        }
        if matches!(notice, stack::StackNotice::LocalOnly { .. }) {
            upstream.enabled = false;
        }
    }
    upstream
}

/// The durable outbox in the store, or a memory one when the store is disabled or unusable,
/// with why there is no store (the caller says it: telemetry then survives an outage only while
/// the launcher runs, and with no upstream it is not collected at all).
fn open_outbox(loaded: &Loaded, upstream: &UpstreamSettings) -> (Outbox, Option<String>) {
    let settings = &loaded.settings;
    let memory = || Outbox::memory(settings.relay.max_queued_requests as usize);
    if !settings.store.enabled {
        let why = "the local store is disabled (store.enabled = false)".to_string();
        return (memory(), Some(why));
    }
    let path = loaded.paths.store_file(&settings.store.path);
    let bounds = StoreBounds {
        max_bytes: settings.store.max_bytes,
        max_age: Duration::from_secs(settings.store.max_age_days.saturating_mul(86_400)),
    };
    match Store::open_checked(&path, bounds) {
        Ok((store, notices)) => {
            for notice in notices {
                eprintln!("claude-telemetry: {notice}");
            }
            let store = if upstream.is_active() {
                let here = upstream_identity(&upstream.endpoint);
                let follow = settings.store.retarget == crate::settings::Retarget::Follow;
                let store = store.for_upstream(&here, follow);
                say_other_upstreams(&store, &here, follow);
                store
            } else {
                store
            };
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let outbox = Outbox::durable(
                store,
                format!("{}-{started}", std::process::id()),
                Duration::from_millis(settings.store.delivery_lease_ms),
                !upstream.is_active(),
                settings.relay.max_queued_requests as usize,
            );
            (outbox, None)
        }
        Err(e) => {
            let why = format!("local store {} unavailable ({e})", path.display());
            (memory(), Some(why))
        }
    }
}

/// How a waiting batch names the upstream it was accepted for: the endpoint as configured,
/// without a trailing slash.
fn upstream_identity(endpoint: &str) -> String {
    endpoint.trim().trim_end_matches('/').to_string()
}

/// One line when batches wait for a different upstream than this run's: left for it, or
/// (`store.retarget = "follow"`) delivered here.
fn say_other_upstreams(store: &Store, here: &str, follow: bool) {
    let Ok(per_upstream) = store.pending_per_upstream_blocking() else {
        return;
    };
    for (meant_for, rows) in per_upstream {
        let Some(meant_for) = meant_for.filter(|u| u != here) else {
            continue;
        };
        if follow {
            eprintln!(
                "claude-telemetry: {rows} waiting telemetry batch(es) accepted for {meant_for} are \
                 re-targeted to {here} (store.retarget = \"follow\")"
            );
        } else {
            eprintln!(
                "claude-telemetry: {rows} waiting telemetry batch(es) are for {meant_for}, not this \
                 run's upstream {here}: left for a run with it (store.retarget = \"follow\" sends \
                 them here)"
            );
        }
    }
}

/// Compiles the relay policy for this launch (project, branch, instance id, hashing key).
pub fn prepare_policy(loaded: &Loaded) -> Result<std::sync::Arc<Policy>, PolicyError> {
    let policy_settings = loaded.settings.policy();
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let ctx = LaunchContext::detect(&policy_settings, &cwd, &loaded.paths.data_dir)?;
    Ok(std::sync::Arc::new(Policy::new(&policy_settings, &ctx)?))
}

/// One line before claude starts when spend is near (>= 80 %) or over a `[budget]` limit.
/// A store that cannot be read degrades to a warning: budgets never stop a session.
fn say_budget(loaded: &Loaded) {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    match crate::budget::current(loaded, &cwd) {
        Ok(standings) => {
            if let Some(line) = standings.launch_line() {
                eprintln!("{line}");
            }
        }
        Err(e) => eprintln!("claude-telemetry: budgets not checked: {e}"),
    }
}

/// While the session runs, the configured budgets go through the relay as a gauge once per
/// metrics interval, for the stack's alert rules (see `budget::export`).
fn export_budgets(
    loaded: &Loaded,
    relay: &RelayHandle,
    rt: &tokio::runtime::Runtime,
) -> Option<tokio::task::JoinHandle<()>> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
    let plan = crate::budget::Plan::from_settings(loaded, &cwd);
    if plan.is_empty() {
        return None;
    }
    let intake = relay.intake.clone();
    let every = Duration::from_millis(loaded.settings.export.metrics_interval_ms);
    Some(rt.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            if let Some(request) = crate::budget::export::budget_gauges(&plan, now) {
                // Refused (the store failed, nothing else could keep it): counted with the
                // store failure; the next tick sends the current gauges anyway.
                let _ = intake.accept(request).await;
            }
        }
    }))
}

/// A user or project setting that the administrator's policy overrode is said, not ignored.
fn report_loosening(loaded: &Loaded) {
    if let Some(managed) = &loaded.managed {
        for attempt in &managed.loosening {
            eprintln!(
                "claude-telemetry: {} = {} is not applied: locked to {} by {}",
                attempt.key,
                attempt.wanted,
                attempt.locked,
                managed.path.display()
            );
        }
    }
}

/// One stderr line per telemetry problem, and the record `doctor` reads.
fn summarise(
    loaded: &Loaded,
    upstream: &UpstreamSettings,
    program: &std::path::Path,
    stats: &RelayStats,
    drain: DrainReport,
) {
    let store_path = loaded.paths.store_file(&loaded.settings.store.path);
    if let Some(failure) = &drain.store_failure {
        let mut line = format!(
            "claude-telemetry: the local store {} could not be written from {} on ({})",
            store_path.display(),
            last_run::clock_time(failure.at_unix_secs),
            failure.error
        );
        if failure.to_memory > 0 {
            line.push_str(&format!(
                "; {} telemetry batch(es) went on to the upstream from memory instead",
                failure.to_memory
            ));
            if drain.undelivered_in_memory > 0 {
                line.push_str(&format!(
                    ", {} of them undelivered at exit and lost",
                    drain.undelivered_in_memory
                ));
            } else {
                line.push_str(", all delivered");
            }
        }
        if failure.refused > 0 {
            line.push_str(&format!(
                "; {} batch(es) were refused with a retryable error, not acknowledged ({}): \
                 claude sends them again, and drops them if the store stays unwritable",
                failure.refused,
                failure
                    .refused_because
                    .unwrap_or("nothing else could keep them")
            ));
        }
        eprintln!("{line}");
    }
    let split = RelayStats::get(&stats.split_requests);
    let too_large = RelayStats::get(&stats.dropped_too_large_items);
    if too_large > 0 {
        eprintln!(
            "claude-telemetry: {too_large} telemetry item(s) were dropped: too large for {} even \
             alone ({split} request(s) were delivered in parts)",
            upstream.endpoint
        );
    }
    // Durable: what waits in the store (what the memory fallback held is said with the store
    // failure above). Memory outbox: everything undelivered is lost with this process.
    let waiting_in_store = drain
        .undelivered_requests
        .saturating_sub(drain.undelivered_in_memory);
    let lost_in_memory = if drain.kept {
        0
    } else {
        drain.undelivered_requests
    };
    if upstream.is_active() && (waiting_in_store > 0 && drain.kept || lost_in_memory > 0) {
        let reason = stats
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "drain time ran out".into());
        if drain.kept {
            eprintln!(
                "claude-telemetry: {waiting_in_store} telemetry batch(es) wait in the local store \
                 {} and will be delivered to {} by a later run: {reason}",
                store_path.display(),
                upstream.endpoint
            );
        } else {
            eprintln!(
                "claude-telemetry: {lost_in_memory} telemetry batch(es) ({} item(s)) could not be \
                 delivered to {} and are lost (held in memory only): {reason}",
                drain.undelivered_items, upstream.endpoint
            );
        }
    } else if lost_in_memory > 0 {
        eprintln!(
            "claude-telemetry: {lost_in_memory} telemetry batch(es) ({} item(s)) were not kept: no \
             local store and no upstream (local-only)",
            drain.undelivered_items
        );
    }
    if drain.dropped_for_space > 0 {
        eprintln!(
            "claude-telemetry: {} telemetry batch(es) were dropped because the upstream could not \
             keep up (relay.max_queued_requests = {})",
            drain.dropped_for_space, loaded.settings.relay.max_queued_requests
        );
    }
    // Senders that met a receiver bound (told to retry, or cut off): said with the setting.
    if let Some(sentence) = stats.shed.snapshot().sentence(&loaded.settings.relay) {
        eprintln!("claude-telemetry: {sentence}");
    }
    // Requests that are gone for good, not waiting anywhere: each said, never silent.
    let rejected = RelayStats::get(&stats.rejected_requests);
    if rejected > 0 {
        eprintln!(
            "claude-telemetry: {rejected} telemetry batch(es) were refused by {} and dropped (not retried): {}",
            upstream.endpoint,
            stats
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .unwrap_or_default()
        );
    }
    let mut record = last_run::LastRun::from_stats(program, stats, &drain);
    if !stats.anything_arrived() {
        let version = claude_version(program);
        eprintln!(
            "claude-telemetry: claude {version} sent no telemetry during this session (no metric \
             or event reached the relay); run `claude-telemetry doctor`"
        );
        record.claude_version = Some(version);
    }
    let _ = record.save(&loaded.paths.last_run_file());
}

/// `claude --version`, bounded in time; only asked for on the rare "nothing arrived" path and by
/// `doctor`. The loop marker is set so a wrapper that leads back to us stops at once.
pub fn claude_version(program: &std::path::Path) -> String {
    let unknown = || "(unknown version)".to_string();
    let Ok(mut child) = std::process::Command::new(program)
        .arg("--version")
        .env(LAUNCHER_PID_ENV, std::process::id().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return unknown();
    };
    // Read everything the program prints (keeping the start, discarding the rest) while it
    // runs: a program that writes more than a pipe buffer would otherwise block until killed.
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = VERSION_OUTPUT_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            let _ = tx.send(kept);
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return unknown();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A grandchild may still hold the pipe open: wait for the output only until the deadline.
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    let out = rx.recv_timeout(left).unwrap_or_default();
    version_line(&out).unwrap_or_else(unknown)
}

/// How much of `--version`'s output is kept; a version is one short line.
const VERSION_OUTPUT_KEPT: usize = 4096;

/// The first non-empty line of a `--version` answer, at most 200 characters.
fn version_line(out: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(out);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(200).collect())
}

/// True when our parent or grandparent is a launcher that set the marker: the `claude` it
/// started was us again (a wrapper that runs claude-telemetry). A launch from inside a claude
/// session (claude → shell → us) has claude in between and is not affected.
fn launched_by_ourselves() -> bool {
    let Some(marker) = std::env::var(LAUNCHER_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return false;
    };
    let parent = std::os::unix::process::parent_id();
    parent == marker || parent_of(parent) == Some(marker)
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The launcher's own environment as a map (settings read it).
pub fn environment() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn stand_in(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("chatty-claude");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn version_probe_reads_past_a_full_pipe_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB after the version line: far more than a pipe buffer (64 KiB).
        let program = stand_in(
            dir.path(),
            "echo '9.9.9 (Chatty Code)'; head -c 1048576 /dev/zero | tr '\\0' x; echo; exit 0",
        );
        assert_eq!(claude_version(&program), "9.9.9 (Chatty Code)");
    }

    #[test]
    fn version_probe_gives_up_on_a_program_that_never_exits() {
        let dir = tempfile::tempdir().unwrap();
        let program = stand_in(dir.path(), "echo '1.0.0 (Stuck)'; exec sleep 30");
        assert_eq!(claude_version(&program), "(unknown version)");
    }

    #[test]
    fn version_line_is_the_first_non_empty_line() {
        assert_eq!(
            version_line(b"\n  2.1.197 (Claude Code)\nmore\n").as_deref(),
            Some("2.1.197 (Claude Code)")
        );
        assert_eq!(version_line(b"\n \n"), None);
    }
}
