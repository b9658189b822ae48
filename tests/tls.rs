//! A team's upstream over TLS: `https://` endpoints verified against the system's root
//! certificates (here a test CA named by `SSL_CERT_FILE`, as a system bundle would be), with an
//! authorization header that reaches the server.

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use support::{FakeAnthropic, Sandbox, wait_until};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_claude-telemetry");

/// One export as the server saw it: its `authorization` header and how many log records.
type Seen = (Option<String>, usize);

#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

#[tonic::async_trait]
impl LogsService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let records = request
            .get_ref()
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.seen.lock().unwrap().push((auth, records));
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// A test CA (`ca.pem`) and a `localhost` certificate it signed, made with the openssl
/// command line. Returns the server's certificate and key.
fn certificate(dir: &std::path::Path) -> (String, String) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("this test needs the openssl command (apt: openssl): {e}"));
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=claude-telemetry test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    (
        std::fs::read_to_string(dir.join("cert.pem")).unwrap(),
        std::fs::read_to_string(dir.join("key.pem")).unwrap(),
    )
}

#[test]
fn https_upstream_is_verified_against_system_roots_and_gets_the_auth_header() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let recorder = Recorder::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tonic::transport::Server::builder()
        .tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(&cert, &key)),
        )
        .unwrap()
        .add_service(LogsServiceServer::new(recorder.clone()));
    rt.spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));

    let api = FakeAnthropic::start();
    let mut s = Sandbox::for_launcher(&api, &format!("https://localhost:{port}"));
    let stub = s.scratch().join("send-one-event");
    std::fs::write(
        &stub,
        "#!/usr/bin/env python3\nimport os, sys, urllib.request\n\
         if '--version' in sys.argv: print('0.0.0'); sys.exit(0)\n\
         body = b'{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":{\"stringValue\":\"claude_code.user_prompt\"}}]}]}]}'\n\
         urllib.request.urlopen(urllib.request.Request(os.environ['CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT'] + '/v1/logs', data=body, headers={'content-type': 'application/json'}))\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", stub.display().to_string())
        .set_env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20team-token",
        )
        .remove_env("CLAUDE_TELEMETRY_UPSTREAM__ENDPOINT")
        .set_env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("https://localhost:{port}"),
        );

    // Without the test CA the server is not trusted: nothing is delivered, and it is said.
    s.set_env(
        "SSL_CERT_FILE",
        certs.path().join("nothing.pem").display().to_string(),
    );
    let out = s.command(LAUNCHER).args(["-p", "x"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        recorder.seen.lock().unwrap().is_empty(),
        "an untrusted server got data"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wait in the local store"));

    // With it (as a system bundle would hold a company CA) the kept event and the new one
    // arrive, with the header from OTEL_EXPORTER_OTLP_HEADERS.
    s.set_env(
        "SSL_CERT_FILE",
        certs.path().join("ca.pem").display().to_string(),
    );
    let out = s.command(LAUNCHER).args(["-p", "x"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            recorder
                .seen
                .lock()
                .unwrap()
                .iter()
                .map(|(_, n)| n)
                .sum::<usize>()
                == 2
        }),
        "{:?} {}",
        recorder.seen.lock().unwrap(),
        String::from_utf8_lossy(&out.stderr)
    );
    for (auth, _) in recorder.seen.lock().unwrap().iter() {
        assert_eq!(auth.as_deref(), Some("Bearer team-token"));
    }
}

/// Serves the OTLP logs service over TLS with `cert`/`key` on a fresh port; returns the port.
fn tls_server(rt: &tokio::runtime::Runtime, cert: &str, key: &str, recorder: Recorder) -> u16 {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tonic::transport::Server::builder()
        .tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        )
        .unwrap()
        .add_service(LogsServiceServer::new(recorder));
    rt.spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    port
}

/// `doctor` checks the upstream as the forwarder uses it (same client, same roots, one empty
/// export): an untrusted or misused certificate is a [FAIL] with a sentence, not `[ ok ]
/// reachable` and not Rust debug text, and the session's exit line words it the same way.
#[test]
fn doctor_fails_with_a_readable_reason_when_the_upstream_certificate_is_not_trusted() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let recorder = Recorder::default();
    let port = tls_server(&rt, &cert, &key, recorder.clone());
    let api = FakeAnthropic::start();
    let mut s = Sandbox::for_launcher(&api, &format!("https://localhost:{port}"));
    let doctor = |s: &Sandbox| {
        let out = s.command(LAUNCHER).arg("doctor").output().unwrap();
        let report = String::from_utf8_lossy(&out.stdout).to_string();
        let line = report
            .lines()
            .find(|l| l.contains("] upstream:"))
            .unwrap_or_else(|| panic!("no upstream finding: {report}"))
            .to_string();
        (out.status.code(), line)
    };

    // Not trusted: the machine trusts another CA only.
    let other = tempfile::tempdir().unwrap();
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=some other CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])
        .current_dir(other.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    s.set_env(
        "SSL_CERT_FILE",
        other.path().join("ca.pem").display().to_string(),
    );
    let (code, line) = doctor(&s);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.starts_with("[FAIL] upstream:"), "{line}");
    assert!(line.contains("TLS handshake failed"), "{line}");
    assert!(
        line.contains("not signed by a CA this machine trusts"),
        "{line}"
    );
    assert!(!line.contains("Other("), "{line}");

    // A CA certificate served as the server's own (CaUsedAsEndEntity).
    let ca_cert = std::fs::read_to_string(certs.path().join("ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(certs.path().join("ca.key")).unwrap();
    let ca_port = tls_server(&rt, &ca_cert, &ca_key, recorder.clone());
    let mut misused = Sandbox::for_launcher(&api, &format!("https://localhost:{ca_port}"));
    misused.set_env(
        "SSL_CERT_FILE",
        certs.path().join("ca.pem").display().to_string(),
    );
    let (code, line) = doctor(&misused);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.starts_with("[FAIL] upstream:"), "{line}");
    assert!(line.contains("TLS handshake failed"), "{line}");
    assert!(line.contains("a CA certificate as its own"), "{line}");
    assert!(!line.contains("OtherError"), "{line}");
    // The session's exit line says the same in words.
    let stub = misused.scratch().join("send-one-event");
    std::fs::write(
        &stub,
        "#!/usr/bin/env python3\nimport os, sys, urllib.request\n\
         if '--version' in sys.argv: print('0.0.0'); sys.exit(0)\n\
         body = b'{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"body\":{\"stringValue\":\"claude_code.user_prompt\"}}]}]}]}'\n\
         urllib.request.urlopen(urllib.request.Request(os.environ['CLAUDE_TELEMETRY_OTLP_HTTP_ENDPOINT'] + '/v1/logs', data=body, headers={'content-type': 'application/json'}))\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    misused.set_env("CLAUDE_TELEMETRY_CLAUDE__PATH", stub.display().to_string());
    let out = misused
        .command(LAUNCHER)
        .args(["-p", "x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
    assert!(!stderr.contains("OtherError"), "{stderr}");

    // Trusted: the empty export is accepted, `[ ok ]`.
    s.set_env(
        "SSL_CERT_FILE",
        certs.path().join("ca.pem").display().to_string(),
    );
    let (code, line) = doctor(&s);
    assert!(line.starts_with("[ ok ] upstream:"), "{line}");
    assert!(line.contains("TLS verified"), "{line}");
    assert_eq!(code, Some(0), "{line}");
    assert!(
        !recorder.seen.lock().unwrap().is_empty(),
        "no export arrived"
    );
}
