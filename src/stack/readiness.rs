//! HTTP readiness probes: one tiny `GET` per service, with a timeout.
//!
//! A container that runs is not yet a service that answers: `up` waits for each readiness
//! endpoint (collector `:13133/`, Prometheus `/-/ready`, Loki `/ready`, Grafana `/api/health`),
//! and the run path makes exactly one such probe against the collector, which answers in
//! about a millisecond when the stack is up and is refused at once when it is down. Plain
//! HTTP/1.1 over a loopback socket needs no client library.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::settings::stack::StackPorts;

use super::{SERVICES, Service};

/// The answer of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// 2xx.
    Ready,
    /// Answered, but not 2xx (e.g. Loki's 503 while its ring settles).
    NotReady(u16),
    /// Nothing answered (refused, timed out, not HTTP).
    Unreachable(String),
}

impl Probe {
    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        matches!(self, Probe::Ready)
    }

    /// Short text for tables.
    pub fn describe(&self) -> String {
        match self {
            Probe::Ready => "ready".to_string(),
            Probe::NotReady(code) => format!("not ready (HTTP {code})"),
            Probe::Unreachable(why) => format!("unreachable ({why})"),
        }
    }
}

/// `GET http://127.0.0.1:<port><path>` with one overall `timeout`.
pub fn probe(port: u16, path: &str, timeout: Duration) -> Probe {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => return Probe::Unreachable(short_io(&e)),
    };
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = stream.set_read_timeout(Some(remaining));
    let _ = stream.set_write_timeout(Some(remaining));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: claude-telemetry\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return Probe::Unreachable(short_io(&e));
    }
    // The status line fits in the first read in practice; read until it is complete.
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Probe::Unreachable(short_io(&e)),
        }
    }
    match parse_status(&buf) {
        Some(code) if (200..300).contains(&code) => Probe::Ready,
        Some(code) => Probe::NotReady(code),
        None => Probe::Unreachable("not an HTTP answer".to_string()),
    }
}

fn short_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timed out".to_string(),
        _ => e.to_string(),
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Probes one service on its host port.
pub fn probe_service(service: &Service, ports: &StackPorts, timeout: Duration) -> Probe {
    probe((service.host_port)(ports), service.ready_path, timeout)
}

/// Probes every service.
pub fn probe_all(ports: &StackPorts, timeout: Duration) -> Vec<(&'static Service, Probe)> {
    SERVICES
        .iter()
        .map(|s| (s, probe_service(s, ports, timeout)))
        .collect()
}

/// How waiting for the stack ended.
#[derive(Debug)]
pub enum WaitOutcome {
    /// Every service answered its readiness endpoint.
    Ready,
    /// The time ran out; these services were still not ready.
    TimedOut(Vec<(&'static Service, Probe)>),
    /// `check_failed` reported a failure (e.g. a container that keeps exiting).
    Failed(String),
}

/// Polls every service until all are ready, `timeout` passes, or `check_failed` (called
/// between rounds while some service is not ready) returns a reason to stop; calls `progress`
/// once when each service becomes ready.
pub fn wait_all_ready(
    ports: &StackPorts,
    timeout: Duration,
    mut progress: impl FnMut(&Service, Duration),
    mut check_failed: impl FnMut() -> Option<String>,
) -> WaitOutcome {
    let start = Instant::now();
    let mut pending: Vec<&'static Service> = SERVICES.iter().collect();
    loop {
        let mut still = Vec::new();
        for service in pending {
            match probe_service(service, ports, Duration::from_secs(2)) {
                Probe::Ready => progress(service, start.elapsed()),
                other => still.push((service, other)),
            }
        }
        if still.is_empty() {
            return WaitOutcome::Ready;
        }
        if start.elapsed() >= timeout {
            return WaitOutcome::TimedOut(still);
        }
        if let Some(reason) = check_failed() {
            return WaitOutcome::Failed(reason);
        }
        pending = still.into_iter().map(|(s, _)| s).collect();
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(response: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(response.as_bytes());
            }
        });
        port
    }

    #[test]
    fn two_hundred_is_ready() {
        let port = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready");
        assert_eq!(probe(port, "/ready", Duration::from_secs(2)), Probe::Ready);
    }

    #[test]
    fn five_oh_three_is_answered_but_not_ready() {
        let port = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert_eq!(
            probe(port, "/ready", Duration::from_secs(2)),
            Probe::NotReady(503)
        );
    }

    #[test]
    fn closed_port_is_unreachable_quickly() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let start = Instant::now();
        let p = probe(port, "/", Duration::from_secs(2));
        assert!(matches!(p, Probe::Unreachable(_)), "{p:?}");
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn garbage_is_not_http() {
        let port = serve_once("SSH-2.0-nope\r\n");
        assert!(matches!(
            probe(port, "/", Duration::from_secs(2)),
            Probe::Unreachable(_)
        ));
    }
}
