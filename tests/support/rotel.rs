//! The real rotel-agent (PyPI package `rotel`) as a third-party OTLP peer: a receiver that is
//! not our code, so relay tests can prove interoperability with someone else's OTLP stack.
//!
//! Started as `rotel-agent start --otlp-grpc-endpoint 127.0.0.1:P --otlp-http-endpoint
//! 127.0.0.1:Q --exporter blackhole --debug-log metrics --debug-log logs --debug-log traces
//! --debug-log-verbosity detailed`: everything it receives is printed to stdout in the
//! collector's debug format (`-> Name: claude_code.token.usage`, attributes, values).

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{rotel_bin, wait_until};

/// A running rotel-agent; killed on drop.
pub struct Rotel {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    output: PathBuf,
    _dir: TempDir,
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port on 127.0.0.1")
}

impl Rotel {
    /// Starts rotel-agent receiving on two free loopback ports, printing what it gets.
    pub fn start() -> Rotel {
        Rotel::start_with(&["--exporter", "blackhole"])
    }

    /// Starts rotel-agent with these exporter arguments instead of the blackhole exporter
    /// (e.g. `["--exporter", "otlp", "--otlp-exporter-endpoint", "127.0.0.1:4317"]`).
    pub fn start_with(exporter_args: &[&str]) -> Rotel {
        let bin = rotel_bin();
        let mut last = String::new();
        // Ports are probed free and then handed to rotel; another process may take one in
        // between, so a failed start is retried with new ports.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("ct-rotel-")
                .tempdir()
                .expect("create rotel directory");
            let output = dir.path().join("rotel.out");
            let log = File::create(&output).expect("create rotel output file");
            let err = log.try_clone().expect("clone rotel output file");
            let (grpc, http) = (free_port(), free_port());
            let mut child = Command::new(&bin)
                .arg("start")
                .args(["--otlp-grpc-endpoint", &grpc.to_string()])
                .args(["--otlp-http-endpoint", &http.to_string()])
                .args(exporter_args)
                .args([
                    "--debug-log",
                    "metrics",
                    "--debug-log",
                    "logs",
                    "--debug-log",
                    "traces",
                ])
                .args(["--debug-log-verbosity", "detailed"])
                .env("NO_COLOR", "1")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            let up = wait_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
                    || (TcpStream::connect(grpc).is_ok() && TcpStream::connect(http).is_ok())
            });
            if up && matches!(child.try_wait(), Ok(None)) {
                return Rotel {
                    child,
                    grpc,
                    http,
                    output,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last = std::fs::read_to_string(&output).unwrap_or_default();
        }
        panic!("rotel-agent did not start listening; its output:\n{last}");
    }

    /// gRPC endpoint URL.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// HTTP endpoint URL.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Everything rotel printed so far (its debug dump of received data included).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits until `needle` appears in rotel's output.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.output().contains(needle))
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
