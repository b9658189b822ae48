//! Running claude: under a PTY when the launcher has a terminal, with inherited stdio otherwise.
//! Either way every byte passes through unchanged, signals reach claude, and the exit status
//! comes back.

use super::exit;
use super::terminal::{self, RawMode};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything needed to start claude.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub set_env: BTreeMap<String, String>,
    pub remove_env: Vec<String>,
}

/// Signals a running launcher passes on to claude.
const FORWARDED: &[i32] = &[libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT];

/// Runs claude with inherited stdio (pipes, CI, `-p … | jq`): output stays byte-exact and claude
/// sees exactly the descriptors the launcher got.
pub fn run_direct(spec: &ChildSpec, rt: &tokio::runtime::Handle) -> std::io::Result<i32> {
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args);
    for key in &spec.remove_env {
        cmd.env_remove(key);
    }
    cmd.envs(&spec.set_env);
    // Keyboard SIGINT/SIGQUIT already reach claude (same process group): only absorb them here.
    let signals = SignalRelay::install(
        rt,
        &[libc::SIGTERM, libc::SIGHUP],
        &[libc::SIGINT, libc::SIGQUIT],
        false,
    );
    let mut child = cmd.spawn()?;
    let forwarder = signals.start(rt, child.id() as i32, None);
    let status = child.wait()?;
    forwarder.abort();
    Ok(exit::code_from_std(status))
}

/// Runs claude under a new PTY, the outer terminal in raw mode, window size followed.
pub fn run_pty(spec: &ChildSpec, rt: &tokio::runtime::Handle) -> anyhow::Result<i32> {
    let size = terminal::window_size(libc::STDOUT_FILENO);
    let pty = portable_pty::native_pty_system();
    let pair = pty.openpty(size)?;
    let mut cmd = portable_pty::CommandBuilder::new(&spec.program);
    cmd.args(&spec.args);
    if let Ok(cwd) = std::env::current_dir() {
        cmd.cwd(cwd);
    }
    for key in &spec.remove_env {
        cmd.env_remove(key);
    }
    for (k, v) in &spec.set_env {
        cmd.env(k, v);
    }
    let signals = SignalRelay::install(rt, FORWARDED, &[], true);
    let mut child = pair.slave.spawn_command(cmd)?;
    drop(pair.slave);
    let pid = child.process_id().map(|p| p as i32);
    let mut reader = pair.master.try_clone_reader()?;
    let mut writer = pair.master.take_writer()?;
    let master = Arc::new(Mutex::new(pair.master));

    let raw = RawMode::enter(libc::STDIN_FILENO).ok();
    let forwarder = pid.map(|pid| signals.start(rt, pid, Some(master.clone())));

    let output = std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stdout.write_all(&buf[..n]).is_err() || stdout.flush().is_err() {
                        break;
                    }
                }
            }
        }
    });
    // Not joined: it blocks on the keyboard and ends with the process.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 8 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.write_all(&buf[..n]).is_err() || writer.flush().is_err() {
                        break;
                    }
                }
            }
        }
    });

    let status = child.wait();
    // Output written before exit is still in the PTY; let the pump finish it, but do not hang
    // on a grandchild that keeps the PTY open.
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while !output.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(f) = forwarder {
        f.abort();
    }
    drop(raw);
    Ok(exit::code_from_pty(&status?))
}

type SharedMaster = Arc<Mutex<Box<dyn portable_pty::MasterPty + Send>>>;

/// Signal handlers installed before claude starts, so no signal can slip in between spawning
/// claude and being ready to pass it on.
struct SignalRelay {
    forward: Vec<(i32, tokio::signal::unix::Signal)>,
    absorb: Vec<tokio::signal::unix::Signal>,
    winch: Option<tokio::signal::unix::Signal>,
}

impl SignalRelay {
    fn install(
        rt: &tokio::runtime::Handle,
        forward: &[i32],
        absorb: &[i32],
        winch: bool,
    ) -> SignalRelay {
        use tokio::signal::unix::{SignalKind, signal};
        let _guard = rt.enter();
        SignalRelay {
            forward: forward
                .iter()
                .filter_map(|&sig| signal(SignalKind::from_raw(sig)).ok().map(|s| (sig, s)))
                .collect(),
            absorb: absorb
                .iter()
                .filter_map(|&sig| signal(SignalKind::from_raw(sig)).ok())
                .collect(),
            winch: winch
                .then(|| signal(SignalKind::window_change()).ok())
                .flatten(),
        }
    }

    /// Starts passing signals to `pid` (and window changes to the PTY).
    fn start(
        self,
        rt: &tokio::runtime::Handle,
        pid: i32,
        master: Option<SharedMaster>,
    ) -> tokio::task::JoinHandle<()> {
        rt.spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for (sig, mut stream) in self.forward {
                tasks.spawn(async move {
                    while stream.recv().await.is_some() {
                        // SAFETY: kill with a pid we spawned and a valid signal number.
                        unsafe { libc::kill(pid, sig) };
                    }
                });
            }
            for mut stream in self.absorb {
                tasks.spawn(async move { while stream.recv().await.is_some() {} });
            }
            if let (Some(master), Some(mut stream)) = (master, self.winch) {
                tasks.spawn(async move {
                    while stream.recv().await.is_some() {
                        let size = terminal::window_size(libc::STDOUT_FILENO);
                        if let Ok(m) = master.lock() {
                            let _ = m.resize(size);
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        })
    }
}
