//! Keeping pace with Claude Code releases: on every release of the matrix, the launcher routes
//! exactly as the installed claude parses. Every subcommand (listed or hidden) reaches claude
//! untouched, byte for byte; sessions get the relay; a new binary is learned without the launch
//! waiting; `doctor` places the release against the tested range.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{FakeAnthropic, LATEST, OLDEST, RELEASES, Release, Sandbox, current_release};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");

/// Subcommands each release's `--help` does not list, observed by running it: for each,
/// `claude <word> --help` prints something other than the top-level help.
fn observed_hidden(release: &Release) -> &'static [&'static str] {
    match release.version {
        "2.1.197" => &[
            "attach",
            "bridge",
            "daemon",
            "kill",
            "logs",
            "rc",
            "remote",
            "remote-control",
            "respawn",
            "rm",
            "stop",
            "sync",
        ],
        "2.1.332" => &[
            "bridge",
            "daemon",
            "project",
            "rc",
            "remote",
            "remote-control",
            "self-hosted-agent-proxy",
            "self-hosted-runner",
            "sync",
        ],
        other => panic!("no observations for claude {other}"),
    }
}

/// The grammar the launcher learned from `release`'s binary (as a sandbox starts with it).
fn learned_grammar(release: &Release) -> serde_json::Value {
    let bin = release.bin().canonicalize().unwrap();
    let dir = release.learned_cache().join("claude-grammar");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let g: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if g["key"]["path"] == bin.display().to_string() {
                return g;
            }
        }
    }
    panic!(
        "no learned grammar for {} in {}",
        bin.display(),
        dir.display()
    );
}

fn words(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

/// The "Commands:" entries of `claude --help`, read independently of the launcher.
fn listed_subcommands(claude: &Path) -> BTreeSet<String> {
    let out = Command::new(claude)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let commands = text
        .split("\nCommands:\n")
        .nth(1)
        .expect("a Commands section");
    commands
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .flat_map(|names| names.split('|').map(str::to_string).collect::<Vec<_>>())
        .filter(|n| n != "help")
        .collect()
}

fn learned_grammar_knows_every_listed_and_hidden_subcommand() {
    let release = current_release();
    let g = learned_grammar(release);
    assert_eq!(g["version"], release.version, "claude {}", release.version);
    assert_eq!(g["hidden_scan_done"], true);
    let subcommands = words(&g["subcommands"]);
    let listed = listed_subcommands(&release.bin());
    let missing: Vec<_> = listed
        .iter()
        .map(String::as_str)
        .chain(observed_hidden(release).iter().copied())
        .filter(|w| !subcommands.contains(*w))
        .collect();
    assert!(
        missing.is_empty(),
        "claude {}: the launcher does not know {missing:?} as subcommands; learned {subcommands:?}",
        release.version
    );
    // Words the built-in (2.1.197) table wrongly listed are prompts to these releases.
    for prompt in ["config", "migrate-installer"] {
        assert!(
            !subcommands.contains(prompt),
            "claude {} reads `{prompt}` as a prompt",
            release.version
        );
    }
}

/// What one run printed: stdout and how it ended (`None`: still running at the timeout).
#[derive(Debug, PartialEq, Eq)]
struct Ran {
    stdout: Vec<u8>,
    code: Option<i32>,
}

/// Runs `program args` with the sandbox's environment in its own process group, stdin closed;
/// past `timeout` the whole group is killed (a subcommand may wait for a terminal or a login).
fn run_capped(sandbox: &Sandbox, program: &str, args: &[&str], timeout: Duration) -> Ran {
    let mut command = sandbox.command(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    let mut child = command.spawn().unwrap();
    let pgid = child.id() as i32;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut out).unwrap();
        out
    });
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Whatever it left running (a daemon, a helper) goes with it.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
    let stdout = reader.join().unwrap();
    Ran { stdout, code }
}

/// Same output and exit; or both still running at the timeout, one having printed a prefix of
/// what the other printed (how far a hanging `update` gets before the kill is timing).
fn equivalent(a: &Ran, b: &Ran) -> bool {
    a == b
        || (a.code.is_none()
            && b.code.is_none()
            && (a.stdout.starts_with(&b.stdout) || b.stdout.starts_with(&a.stdout)))
}

/// Output with every run of digits replaced by `0`, for output claude itself varies.
fn digits_masked(out: &[u8]) -> Vec<u8> {
    let mut masked = Vec::with_capacity(out.len());
    for &b in out {
        if !(b.is_ascii_digit() && masked.last().is_some_and(|l: &u8| *l == b'0')) {
            masked.push(if b.is_ascii_digit() { b'0' } else { b });
        }
    }
    masked
}

/// A sandbox whose network is a closed port (an update check or download fails at once, the
/// same way for both runs) and whose HOME can be put back as it started.
struct Resettable {
    sandbox: Sandbox,
    claude_json: Vec<u8>,
}

impl Resettable {
    fn new(api: &FakeAnthropic) -> Resettable {
        let mut sandbox = Sandbox::for_launcher(api, "");
        let closed = "http://127.0.0.1:9";
        for var in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
            sandbox.set_env(var, closed);
        }
        sandbox.set_env("NO_PROXY", "");
        sandbox.set_env("NPM_CONFIG_REGISTRY", closed);
        sandbox.set_env("NPM_CONFIG_OFFLINE", "true");
        let claude_json = std::fs::read(sandbox.home().join(".claude.json")).unwrap();
        Resettable {
            sandbox,
            claude_json,
        }
    }

    /// HOME and the project as they were before any run (a killed `update` leaves a lock).
    fn reset(&self) {
        for dir in [self.sandbox.home(), self.sandbox.project()] {
            std::fs::remove_dir_all(dir).unwrap();
            std::fs::create_dir_all(dir).unwrap();
        }
        for d in [".config", ".cache"] {
            std::fs::create_dir_all(self.sandbox.home().join(d)).unwrap();
        }
        std::fs::write(self.sandbox.home().join(".claude.json"), &self.claude_json).unwrap();
    }
}

fn every_subcommand_prints_and_exits_as_claude_itself() {
    let release = current_release();
    let subcommands: Vec<String> = words(&learned_grammar(release)["subcommands"])
        .into_iter()
        .collect();
    let claude = release.bin().display().to_string();
    let api = FakeAnthropic::start();
    // Three workers, each with its own sandbox, share the subcommands.
    let queue = std::sync::Mutex::new(subcommands.clone());
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                support::releases::run_on(release, || {});
                let s = Resettable::new(&api);
                loop {
                    let Some(sub) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    for (args, timeout) in [
                        (vec![sub.as_str(), "--help"], Duration::from_secs(30)),
                        (vec![sub.as_str()], Duration::from_secs(6)),
                    ] {
                        let mut through_args = vec!["run", "--"];
                        through_args.extend(&args);
                        let both = |timeout: Duration| {
                            s.reset();
                            let direct = run_capped(&s.sandbox, &claude, &args, timeout);
                            s.reset();
                            let through = run_capped(&s.sandbox, LAUNCHER, &through_args, timeout);
                            (direct, through)
                        };
                        let (mut direct, mut through) = both(timeout);
                        if direct.code.is_none() != through.code.is_none() {
                            // One side ran into the timeout (a loaded machine): both again, with
                            // more time.
                            (direct, through) = both(timeout * 3);
                        }
                        // claude's own output varies run to run in its figures (`doctor` prints
                        // how many ms each check took: "9 ms" in one run, "10 ms" in the next,
                        // even when two direct runs happen to agree): the same exit status and the
                        // same text once each run of digits is masked is the same output. Routing
                        // a subcommand as a prompt, or losing a byte, changes the text itself.
                        let same = |a: &Ran, b: &Ran| {
                            equivalent(a, b)
                                || (a.code == b.code
                                    && digits_masked(&a.stdout) == digits_masked(&b.stdout))
                        };
                        let ok = same(&direct, &through) || {
                            // Anything else claude varies (a check that timed out on a loaded
                            // machine): ask claude again.
                            s.reset();
                            let again = run_capped(&s.sandbox, &claude, &args, timeout);
                            same(&again, &through)
                        };
                        if !ok {
                            failures.lock().unwrap().push(format!(
                                "`claude {}`: direct exit {:?}, {} bytes {:?}…; through claude-telemetry exit {:?}, {} bytes {:?}…",
                                args.join(" "),
                                direct.code,
                                direct.stdout.len(),
                                String::from_utf8_lossy(&direct.stdout[..direct.stdout.len().min(120)]),
                                through.code,
                                through.stdout.len(),
                                String::from_utf8_lossy(&through.stdout[..through.stdout.len().min(120)]),
                            ));
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "claude {}: {} of {} subcommand runs differ:\n{}",
        release.version,
        failures.len(),
        subcommands.len() * 2,
        failures.join("\n")
    );
}

/// A stand-in for `release`'s claude that answers the grammar questions (`--help`, `--version`,
/// `<word> --help`) with the real binary, and otherwise prints the arguments it got and where
/// its telemetry would go.
fn arg_echoing_claude(dir: &Path, real: &Path, version: Option<&str>) -> PathBuf {
    // Named through a link: the real path mentions `claude-telemetry-tests`, and a script that
    // mentions `claude-telemetry` is taken for a wrapper of the launcher and skipped.
    let link = dir.join("real-claude");
    std::os::unix::fs::symlink(real, &link).unwrap();
    let real = link.as_path();
    let version_line = match version {
        Some(v) => format!("[ \"$1\" = --version ] && {{ echo '{v} (Claude Code)'; exit 0; }}\n"),
        None => String::new(),
    };
    let path = dir.join("echo-claude");
    std::fs::write(
        &path,
        format!(
            "#!/bin/bash\n{version_line}\
             if [ \"$1\" = --help ] || [ \"$1\" = --version ] || [ \"$2\" = --help ]; then exec {real} \"$@\"; fi\n\
             printf '%s|' \"$@\"; echo\n\
             echo \"endpoint=$OTEL_EXPORTER_OTLP_ENDPOINT\"\n",
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Waits until no background learner holds a lock in `cache` and every grammar there is
/// complete (the test leaves no learner running).
fn wait_for_learner(cache: &Path, timeout: Duration) -> serde_json::Value {
    let dir = cache.join("claude-grammar");
    let mut last = serde_json::Value::Null;
    let done = support::wait_until(timeout, || {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return false;
        };
        let mut complete = false;
        for entry in entries.flatten() {
            let path = entry.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("lock") => return false,
                Some("json") => {
                    if let Ok(g) =
                        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).unwrap())
                    {
                        complete = g["hidden_scan_done"] == true;
                        last = g;
                    }
                }
                _ => {}
            }
        }
        complete
    });
    assert!(done, "the background learner did not finish: {last}");
    last
}

fn session_invocations_get_the_relay_and_subcommands_reach_claude_untouched() {
    let release = current_release();
    let api = FakeAnthropic::start();
    let mut s = Sandbox::for_launcher(&api, "");
    let cache = s.clear_launcher_cache();
    let echo = arg_echoing_claude(&s.scratch(), &release.bin(), None);
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", echo.display().to_string());
    let seen = |args: &[&str]| {
        let out = s
            .command(LAUNCHER)
            .arg("run")
            .arg("--")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let relayed =
        |out: &str| out.starts_with("--settings|{") && out.contains("endpoint=http://127.0.0.1:");
    for args in [
        &["-p", "hi"][..],
        &["fix the bug"],
        &["--model", "x", "--autocompact", "auto", "fix it"],
        &["hello"],
    ] {
        let out = seen(args);
        assert!(
            relayed(&out),
            "claude {}: {args:?} is a session: {out}",
            release.version
        );
        let tail = format!("|{}|\n", args.join("|"));
        assert!(
            out.contains(&tail),
            "every word after ours, unchanged: {out}"
        );
    }
    // `logs` (hidden in 2.1.197, listed in 2.1.332), `attach` and `mcp list`: claude's own.
    for args in [&["logs", "abc"][..], &["attach", "abc"], &["mcp", "list"]] {
        let out = seen(args);
        assert_eq!(
            out,
            format!("{}|\nendpoint=\n", args.join("|")),
            "claude {}: {args:?} passes through untouched",
            release.version
        );
    }
    wait_for_learner(&cache, Duration::from_secs(120));
}

fn a_new_binary_is_learned_in_the_background_without_the_launch_waiting() {
    let release = current_release();
    let api = FakeAnthropic::start();
    let s = Sandbox::for_launcher(&api, "");
    let cache = s.clear_launcher_cache();
    let out = s
        .command(LAUNCHER)
        .args(["run", "--", "--version"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(release.version),
        "{out:?}"
    );
    let learned = wait_for_learner(&cache, Duration::from_secs(120));
    let seeded = learned_grammar(release);
    assert_eq!(learned["subcommands"], seeded["subcommands"]);
    assert_eq!(learned["options"], seeded["options"]);
    assert_eq!(learned["version"], release.version);
}

/// `doctor` in sandbox `s`: its exit code, its whole report and the `claude release:` line.
fn doctor_release_line(s: &Sandbox) -> (Option<i32>, String, String) {
    let out = s.command(LAUNCHER).arg("doctor").output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = report
        .lines()
        .find(|l| l.contains("claude release:"))
        .unwrap_or_else(|| panic!("no release line: {report}"))
        .to_string();
    (out.status.code(), report, line)
}

fn doctor_places_the_installed_release_in_the_tested_range() {
    let release = current_release();
    let api = FakeAnthropic::start();
    let s = Sandbox::for_launcher(&api, "");
    let (_, _, line) = doctor_release_line(&s);
    assert!(
        line.starts_with("[ ok ]")
            && line.contains(&format!(
                "{} is within the tested range (2.1.197–2.1.332)",
                release.version
            ))
            && line.contains("learned from it"),
        "{line}"
    );
}

#[test]
fn doctor_says_plainly_when_claude_is_newer_than_any_tested_release() {
    let api = FakeAnthropic::start();
    let mut s = Sandbox::for_launcher(&api, "");
    let cache = s.clear_launcher_cache();
    let newer = arg_echoing_claude(&s.scratch(), &LATEST.bin(), Some("2.2.0"));
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", newer.display().to_string());
    // Its first run learns it (in the background); doctor then says routing is sound for it.
    s.command(LAUNCHER)
        .args(["run", "--", "--version"])
        .output()
        .unwrap();
    wait_for_learner(&cache, Duration::from_secs(120));
    let (code, report, line) = doctor_release_line(&s);
    assert!(
        line.contains("2.2.0 is newer than any tested release (2.1.197–2.1.332)")
            && line.contains("It still works")
            && line.contains("learned from it"),
        "{line}"
    );
    assert_eq!(code, Some(0), "newer is not a failure: {report}");
}

#[test]
fn matrix_lists_the_releases_the_launcher_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compat = std::fs::read_to_string(root.join("src/claude/compat.rs")).unwrap();
    let install = std::fs::read_to_string(root.join("tests/install-tools.sh")).unwrap();
    let versions: Vec<&str> = RELEASES.iter().map(|r| r.version).collect();
    let quoted: Vec<String> = versions.iter().map(|v| format!("{v:?}")).collect();
    assert!(
        compat.contains(&format!(
            "TESTED_RELEASES: &[&str] = &[{}]",
            quoted.join(", ")
        )),
        "src/claude/compat.rs TESTED_RELEASES must be {versions:?}"
    );
    assert!(
        install.contains(&format!("CLAUDE_VERSIONS=({})", versions.join(" "))),
        "tests/install-tools.sh CLAUDE_VERSIONS must be {versions:?}"
    );
    assert_eq!(OLDEST.version, support::CLAUDE_VERSION);
    for release in RELEASES {
        let out = Command::new(release.bin())
            .arg("--version")
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(&format!("{} ", release.version)),
            "{} is not claude {}",
            release.env,
            release.version
        );
    }
}

crate::on_each_release!(
    learned_grammar_knows_every_listed_and_hidden_subcommand,
    every_subcommand_prints_and_exits_as_claude_itself,
    session_invocations_get_the_relay_and_subcommands_reach_claude_untouched,
    a_new_binary_is_learned_in_the_background_without_the_launch_waiting,
    doctor_places_the_installed_release_in_the_tested_range,
);
