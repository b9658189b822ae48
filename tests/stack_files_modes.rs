//! The stack files `up` writes are readable by the containers' users under `umask 077`.
//!
//! `up` writes the files before it looks for Docker, so a dead `DOCKER_HOST` is enough: the
//! binary runs under `umask 077` (through `sh`), then every mounted file is read as the
//! collector's (10001), Prometheus's (65534) and Grafana's (472) uid when the test runs as
//! root, and its mode bits are checked either way.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

/// uids of the images' users: otel/opentelemetry-collector-contrib and grafana/loki (10001),
/// prom/prometheus (nobody, 65534), grafana/grafana (472).
const CONTAINER_UIDS: [u32; 3] = [10001, 65534, 472];

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        out.push(path.clone());
        if path.is_dir() {
            walk(&path, out);
        }
    }
}

#[test]
fn stack_files_written_under_umask_077_are_readable_by_the_container_users() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Docker resolves bind-mount sources as root; the test reads through the path, so the
    // temporary root (0700 from tempfile) must be traversable to stand for that.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("cfg");
    std::fs::create_dir_all(&cfg).expect("mkdir");
    std::fs::write(
        cfg.join("config.toml"),
        format!("[stack]\ndata_dir = \"{}\"\n", data.display()),
    )
    .expect("write settings");
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$0\" up")
        .arg(env!("CARGO_BIN_EXE_claude-telemetry"))
        .env("CLAUDE_TELEMETRY_DATA_DIR", tmp.path().join("store"))
        .env("CLAUDE_TELEMETRY_CONFIG_DIR", &cfg)
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no-docker.sock", tmp.path().display()),
        )
        .output()
        .expect("run claude-telemetry up");
    assert!(
        data.join("config/loki.yaml").is_file(),
        "up did not write the stack files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The data dir itself was created private by the umask, as the local store wants; Docker
    // reaches below it as root. Everything below it must be open to the containers.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let mut paths = Vec::new();
    walk(&data.join("config"), &mut paths);
    walk(&data.join("compose"), &mut paths);
    let mounted: Vec<_> = paths.iter().filter(|p| p.is_file()).collect();
    assert!(mounted.len() >= 10, "{mounted:?}");
    for path in &paths {
        let mode = std::fs::metadata(path).expect("meta").permissions().mode() & 0o777;
        let need = if path.is_dir() { 0o555 } else { 0o444 };
        assert_eq!(mode & need, need, "{} has mode {mode:o}", path.display());
    }
    if running_as_root() {
        for uid in CONTAINER_UIDS {
            for file in &mounted {
                let read = Command::new("cat")
                    .arg(file)
                    .uid(uid)
                    .gid(uid)
                    .output()
                    .expect("spawn cat as a container uid");
                assert!(
                    read.status.success(),
                    "uid {uid} cannot read {}: {}",
                    file.display(),
                    String::from_utf8_lossy(&read.stderr)
                );
            }
            let dashboards = data.join("config/grafana/dashboards");
            let list = Command::new("ls")
                .arg(&dashboards)
                .uid(uid)
                .gid(uid)
                .output()
                .expect("spawn ls");
            assert!(
                list.status.success(),
                "uid {uid} cannot list {}",
                dashboards.display()
            );
        }
    }
}

/// Whether this process runs as root (then it can read the files as other uids).
fn running_as_root() -> bool {
    // `id -u` rather than libc: the tests use no unsafe code.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
