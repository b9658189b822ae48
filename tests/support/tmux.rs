//! A real terminal for interactive tests: the program runs in a tmux pane of a fixed size, the
//! test types keys, reads the rendered screen and collects the exit status.
//!
//! tmux rather than a raw PTY reader: claude redraws only changed cells, so the byte stream
//! rarely contains an answer as one contiguous string; tmux renders it into a screen.
//! Each session has its own server socket (a fresh path per server, never reused), so tests run
//! in parallel and one after another without sharing state; dropping a session waits until its
//! server is gone.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Columns and rows of the pane.
pub const SIZE: (u16, u16) = (120, 40);

/// How the pane's program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaneExit {
    /// Exit status when it exited normally.
    pub code: Option<i32>,
    /// Signal number when it was killed by a signal.
    pub signal: Option<i32>,
}

/// One program running in its own tmux server; killed on drop (and waited for).
pub struct Tmux {
    socket: PathBuf,
}

/// Numbers the servers of this test process: each gets a socket path of its own, so a new
/// server never meets a dying one at the same path ("server exited unexpectedly").
static NEXT_SERVER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

const TARGET: &str = "t:0.0";

impl Tmux {
    /// Starts `program args…` in a new detached tmux server with exactly `env`, in `cwd`.
    /// `work` is a fresh directory for the socket and config.
    pub fn spawn(
        program: &OsStr,
        args: &[&str],
        env: &BTreeMap<String, String>,
        cwd: &Path,
        work: &Path,
    ) -> Tmux {
        std::fs::create_dir_all(work).expect("create tmux work directory");
        let conf = work.join("tmux.conf");
        // remain-on-exit keeps the dead pane so its exit status can be read; it must be set
        // before the program starts, hence a config file rather than a later set-option.
        std::fs::write(
            &conf,
            "set -g remain-on-exit on\nset -g status off\nset -g focus-events on\n\
             set -g default-terminal xterm-256color\nset -g history-limit 5000\n",
        )
        .expect("write tmux.conf");
        let n = NEXT_SERVER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmux = Tmux {
            socket: work.join(format!("sock-{n}")),
        };
        let (w, h) = SIZE;
        let mut command = Command::new("tmux");
        command
            .env_clear()
            .envs(env)
            .arg("-S")
            .arg(&tmux.socket)
            .arg("-f")
            .arg(&conf)
            .args([
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
            ])
            .arg("-c")
            .arg(cwd)
            .arg("--")
            .arg(program)
            .args(args);
        // With arguments tmux executes the program directly (no shell quoting); a lone
        // program path goes through `sh -c`, which is the same for a path without spaces.
        let out = command
            .output()
            .unwrap_or_else(|e| panic!("start tmux (is it installed? run tests/run.sh): {e}"));
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    /// The visible screen as text, one line per row, trailing blanks trimmed.
    pub fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-J", "-t", TARGET]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Screen plus scrollback.
    pub fn history(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-J", "-S", "-", "-t", TARGET]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `needle` is on the screen (or in the scrollback); returns the screen.
    /// Panics with the screen when it does not appear in time.
    pub fn wait_for_text(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.history();
            if screen.contains(needle) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!("{needle:?} did not appear on screen within {timeout:?}; screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until claude's prompt is ready for input: its footer shows `? for shortcuts`
    /// (2.1.197, and later releases in the default permission mode) or the permission mode it
    /// starts in (2.1.332 starts in auto mode: `⏵⏵ auto mode on (shift+tab to cycle)`).
    pub fn wait_for_prompt(&self, timeout: Duration) -> String {
        const READY: [&str; 2] = ["? for shortcuts", "(shift+tab to cycle)"];
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if READY.iter().any(|r| screen.contains(r)) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!(
                    "claude's prompt was not ready within {timeout:?} (none of {READY:?}); screen:\n{screen}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types literal text (no key names interpreted).
    pub fn type_text(&self, text: &str) {
        let out = self.run(&["send-keys", "-t", TARGET, "-l", "--", text]);
        assert!(out.status.success(), "tmux send-keys failed");
    }

    /// Presses keys by tmux name (`Enter`, `C-c`, `C-d`, `Escape`, `Up`, …).
    pub fn press(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", TARGET];
        args.extend_from_slice(keys);
        let out = self.run(&args);
        assert!(out.status.success(), "tmux send-keys failed");
    }

    /// Types `text`, waits until it is echoed on screen, and presses Enter (claude treats text
    /// and Enter arriving in one burst as a paste with a newline).
    pub fn submit(&self, text: &str) {
        self.type_text(text);
        self.wait_for_text(text, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(150));
        self.press(&["Enter"]);
    }

    fn exited_within(&self, timeout: Duration) -> bool {
        super::wait_until(timeout, || self.exit_status().is_some())
    }

    /// Leaves an interactive claude session the way a person does: `/exit` and Enter.
    ///
    /// On a loaded machine claude sometimes takes the Enter for its command menu instead of
    /// running the command; a person presses Enter again, and so does this (once, after 10 s).
    pub fn exit_claude(&self) {
        self.submit("/exit");
        if !self.exited_within(Duration::from_secs(10)) {
            eprintln!("tmux: still running 10 s after /exit; pressing Enter again");
            self.press(&["Enter"]);
        }
    }

    /// Leaves an interactive claude session with Ctrl-D twice (claude asks for the second).
    ///
    /// Under load claude 2.1.197 sometimes lets its "Press Ctrl-D again to exit" window lapse
    /// without taking the second press; a person then presses again, and so does this: one
    /// Ctrl-D per second until claude exits (at most 10).
    pub fn exit_claude_with_ctrl_d(&self) {
        self.press(&["C-d"]);
        self.wait_for_text("Press Ctrl-D again to exit", Duration::from_secs(10));
        for attempt in 0..10 {
            if attempt > 0 {
                eprintln!("tmux: claude still running after Ctrl-D; pressing it again");
            }
            self.press(&["C-d"]);
            if self.exited_within(Duration::from_secs(1)) {
                return;
            }
        }
    }

    /// The pane's state and the processes of its terminal session, for failure messages.
    pub fn processes(&self) -> String {
        let state = self.run(&[
            "display-message",
            "-p",
            "-t",
            TARGET,
            "pane_dead=#{pane_dead} status=#{pane_dead_status} signal=#{pane_dead_signal}",
        ]);
        let mut text = String::from_utf8_lossy(&state.stdout).trim().to_string();
        if let Some(pid) = self.pid() {
            let ps = Command::new("ps")
                .args(["-o", "pid,ppid,stat,etime,args", "-s", &pid.to_string()])
                .output();
            if let Ok(ps) = ps {
                text.push_str("; processes in the pane's session:\n");
                text.push_str(&String::from_utf8_lossy(&ps.stdout));
            }
        }
        text
    }

    /// Pid of the program in the pane (for signals).
    pub fn pid(&self) -> Option<i32> {
        let out = self.run(&["display-message", "-p", "-t", TARGET, "#{pane_pid}"]);
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// Resizes the terminal (the program gets SIGWINCH).
    pub fn resize(&self, columns: u16, rows: u16) {
        let out = self.run(&[
            "resize-window",
            "-t",
            "t",
            "-x",
            &columns.to_string(),
            "-y",
            &rows.to_string(),
        ]);
        assert!(out.status.success(), "tmux resize-window failed");
    }

    /// The exit status once the program has ended and been reaped, None before.
    pub fn exit_status(&self) -> Option<PaneExit> {
        let out = self.run(&[
            "display-message",
            "-p",
            "-t",
            TARGET,
            "#{pane_dead}|#{pane_dead_status}|#{pane_dead_signal}",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut parts = text.split('|');
        if parts.next() != Some("1") {
            return None;
        }
        let exit = PaneExit {
            code: parts.next().and_then(|s| s.parse().ok()),
            signal: parts.next().and_then(|s| s.parse().ok()),
        };
        if exit.code.is_none() && exit.signal.is_none() {
            // The terminal closed but tmux has not reaped the program (yet). Debian's tmux
            // 3.3a links libutempter, whose own SIGCHLD handler can swallow the signal while
            // it is installed (tmux issue #311), leaving a zombie and no status for good.
            // A SIGCHLD sent to our tmux server makes it collect the status.
            self.poke_server();
            return None;
        }
        Some(exit)
    }

    /// Sends SIGCHLD to this session's tmux server so it reaps an exited program.
    fn poke_server(&self) {
        let out = self.run(&["display-message", "-p", "#{pid}"]);
        if let Ok(pid) = String::from_utf8_lossy(&out.stdout).trim().parse::<i32>() {
            // SAFETY: kill(2) with a pid we just read from our own tmux server; no memory involved.
            unsafe {
                libc::kill(pid, libc::SIGCHLD);
            }
        }
    }

    /// Waits for the program to end; panics with the screen when it does not in time.
    pub fn wait_exit(&self, timeout: Duration) -> PaneExit {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self.exit_status() {
                return exit;
            }
            if Instant::now() >= deadline {
                panic!(
                    "program did not exit within {timeout:?}; {}\nscreen:\n{}",
                    self.processes(),
                    self.screen()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Tmux {
    /// The server's pid, asked from the server itself.
    fn server_pid(&self) -> Option<i32> {
        let out = self.run(&["display-message", "-p", "#{pid}"]);
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }
}

/// Whether `pid` still names a live (not zombie) process.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

impl Drop for Tmux {
    /// `kill-server` returns before the server has exited: wait until it has (its processes
    /// and socket gone), so nothing of this session outlives the test.
    fn drop(&mut self) {
        let pid = self.server_pid();
        let _ = self.run(&["kill-server"]);
        if let Some(pid) = pid {
            let gone = super::wait_until(Duration::from_secs(10), || !alive(pid));
            if !gone && !std::thread::panicking() {
                panic!("tmux server {pid} still running 10 s after kill-server");
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
