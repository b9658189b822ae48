//! The compose and config files, embedded in the binary and written to the data dir.
//!
//! `cargo install` users have no repository checkout, so the binary carries every file the
//! stack needs. `install` writes them and refreshes them whenever the embedded content changes
//! (which includes every new binary version), but never overwrites a file the user edited: a
//! manifest records the hash of what was last written, and a file whose hash differs from it
//! is the user's. The new version then lands beside it as `<file>.new` and the report says so.
//!
//! The containers read these files as their own users (collector 10001, Prometheus 65534,
//! Grafana 472, Loki 10001), not as the user who ran `install`: every file is made readable by
//! all (0644) and every directory under the data dir traversable (0755), whatever the umask —
//! under `umask 077` the collector and Loki would otherwise crash-loop on "permission denied".
//! Nothing secret lives in these files.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One file of the stack, relative to the data dir.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedFile {
    /// Path relative to the data dir (and to the repository root).
    pub path: &'static str,
    /// The content compiled into the binary.
    pub contents: &'static [u8],
}

macro_rules! embed {
    ($path:literal) => {
        EmbeddedFile {
            path: $path,
            contents: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $path)),
        }
    };
}

/// The compose file, relative to the data dir.
pub const COMPOSE_FILE: &str = "compose/docker-compose.yml";

/// Every file the stack needs; the compose file mounts the others.
pub const FILES: &[EmbeddedFile] = &[
    embed!("compose/docker-compose.yml"),
    embed!("config/otel-collector.yaml"),
    embed!("config/prometheus.yml"),
    embed!("config/prometheus-rules.yml"),
    embed!("config/loki.yaml"),
    embed!("config/grafana/provisioning/datasources/datasources.yaml"),
    embed!("config/grafana/provisioning/dashboards/dashboards.yaml"),
    embed!("config/grafana/dashboards/claude-code-overview.json"),
    embed!("config/grafana/dashboards/claude-code-cost-tokens.json"),
    embed!("config/grafana/dashboards/claude-code-code-activity.json"),
    embed!("config/grafana/dashboards/claude-code-time.json"),
    embed!("config/grafana/dashboards/claude-code-events.json"),
];

/// Name of the manifest in the data dir.
pub const MANIFEST: &str = ".manifest.json";

/// What was last written: the binary version and the hash of each file as written.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    version: String,
    files: BTreeMap<String, String>,
}

/// What `install` did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// The file did not exist and was written.
    Created,
    /// Already identical to the embedded version.
    Unchanged,
    /// An older version we had written was replaced.
    Updated,
    /// The user changed the file: it was kept, the embedded version written to `new_copy`.
    KeptUserEdit {
        /// Where the embedded version was written instead.
        new_copy: PathBuf,
    },
}

/// The outcome of writing the stack files.
#[derive(Debug, Clone)]
pub struct InstallReport {
    /// The data dir.
    pub dir: PathBuf,
    /// One entry per embedded file, in [`FILES`] order.
    pub files: Vec<(&'static str, FileOutcome)>,
}

impl InstallReport {
    /// Lines telling the user about edited files kept (empty when there is nothing to say).
    pub fn notices(&self) -> Vec<String> {
        self.files
            .iter()
            .filter_map(|(path, outcome)| match outcome {
                FileOutcome::KeptUserEdit { new_copy } => Some(format!(
                    "kept your edited {}; this version's file is at {} (merge it, or delete your file to take it)",
                    self.dir.join(path).display(),
                    new_copy.display()
                )),
                _ => None,
            })
            .collect()
    }
}

/// Errors writing the stack files (always with the path concerned).
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The embedded content of `path` (relative, as in [`FILES`]).
pub fn embedded(path: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|f| f.path == path).map(|f| f.contents)
}

fn read_manifest(dir: &Path) -> Manifest {
    std::fs::read(dir.join(MANIFEST))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Mode of every stack file: the containers' users must read it.
pub const FILE_MODE: u32 = 0o644;
/// Mode of every directory below the data dir: the containers' users must traverse it.
pub const DIR_MODE: u32 = 0o755;

#[cfg(unix)]
fn add_mode(path: &Path, bits: u32) -> Result<(), FilesError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode();
    if mode & bits != bits {
        std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode((mode | bits) & 0o7777),
        )
        .map_err(io_err(path))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn add_mode(_path: &Path, _bits: u32) -> Result<(), FilesError> {
    Ok(())
}

/// Makes `rel` (a file below `dir`) readable and every directory between them traversable by
/// the containers' users. The data dir itself is left as it is: Docker resolves bind-mount
/// sources as root, and the data dir also holds the local store.
fn make_readable(dir: &Path, rel: &str) -> Result<(), FilesError> {
    let mut current = dir.to_path_buf();
    let components: Vec<&str> = rel.split('/').collect();
    if let Some((_, dirs)) = components.split_last() {
        for part in dirs {
            current.push(part);
            add_mode(&current, DIR_MODE)?;
        }
    }
    add_mode(&dir.join(rel), 0o444)
}

fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), FilesError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let tmp = path.with_extension("claude-telemetry-tmp");
    std::fs::write(&tmp, contents).map_err(io_err(&tmp))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(FILE_MODE))
            .map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Writes the embedded files to `dir`, refreshing stale copies and keeping user edits.
pub fn install(dir: &Path) -> Result<InstallReport, FilesError> {
    install_files(dir, FILES, env!("CARGO_PKG_VERSION"))
}

/// [`install`] for an explicit file set and version (tests use other contents).
pub fn install_files(
    dir: &Path,
    files: &[EmbeddedFile],
    version: &str,
) -> Result<InstallReport, FilesError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let old = read_manifest(dir);
    let mut manifest = Manifest {
        version: version.to_string(),
        files: BTreeMap::new(),
    };
    let mut outcomes = Vec::with_capacity(files.len());
    for file in files {
        let target = dir.join(file.path);
        let embedded_hash = sha256_hex(file.contents);
        let outcome = match std::fs::read(&target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                write_atomically(&target, file.contents)?;
                manifest.files.insert(file.path.to_string(), embedded_hash);
                FileOutcome::Created
            }
            Err(e) => return Err(io_err(&target)(e)),
            Ok(current) => {
                let current_hash = sha256_hex(&current);
                if current_hash == embedded_hash {
                    manifest.files.insert(file.path.to_string(), embedded_hash);
                    FileOutcome::Unchanged
                } else if old.files.get(file.path) == Some(&current_hash) {
                    write_atomically(&target, file.contents)?;
                    manifest.files.insert(file.path.to_string(), embedded_hash);
                    FileOutcome::Updated
                } else {
                    let mut new_copy = target.clone().into_os_string();
                    new_copy.push(".new");
                    let new_copy = PathBuf::from(new_copy);
                    write_atomically(&new_copy, file.contents)?;
                    // Keep what we last wrote, so the file still reads as "edited" next time.
                    if let Some(previous) = old.files.get(file.path) {
                        manifest
                            .files
                            .insert(file.path.to_string(), previous.clone());
                    }
                    FileOutcome::KeptUserEdit { new_copy }
                }
            }
        };
        make_readable(dir, file.path)?;
        outcomes.push((file.path, outcome));
    }
    let manifest_path = dir.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| FilesError::Io {
        path: manifest_path.clone(),
        source: io::Error::other(e),
    })?;
    write_atomically(&manifest_path, &json)?;
    Ok(InstallReport {
        dir: dir.to_path_buf(),
        files: outcomes,
    })
}

/// The version recorded by the last `install` in `dir`, if any.
#[cfg(test)]
fn installed_version(dir: &Path) -> Option<String> {
    let manifest = read_manifest(dir);
    (!manifest.version.is_empty()).then_some(manifest.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &[EmbeddedFile] = &[EmbeddedFile {
        path: "config/a.yaml",
        contents: b"a: 1\n",
    }];
    const V2: &[EmbeddedFile] = &[EmbeddedFile {
        path: "config/a.yaml",
        contents: b"a: 2\n",
    }];

    fn outcome(report: &InstallReport) -> &FileOutcome {
        &report.files[0].1
    }

    #[test]
    fn first_install_creates_and_second_is_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = install_files(dir.path(), V1, "1").expect("install");
        assert_eq!(outcome(&r), &FileOutcome::Created);
        let r = install_files(dir.path(), V1, "1").expect("install");
        assert_eq!(outcome(&r), &FileOutcome::Unchanged);
        assert_eq!(installed_version(dir.path()).as_deref(), Some("1"));
    }

    #[test]
    fn new_version_refreshes_an_untouched_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        install_files(dir.path(), V1, "1").expect("install");
        let r = install_files(dir.path(), V2, "2").expect("install");
        assert_eq!(outcome(&r), &FileOutcome::Updated);
        assert!(r.notices().is_empty());
        let text = std::fs::read_to_string(dir.path().join("config/a.yaml")).expect("read");
        assert_eq!(text, "a: 2\n");
        assert_eq!(installed_version(dir.path()).as_deref(), Some("2"));
    }

    #[test]
    fn user_edit_is_kept_and_reported_with_the_new_copy_beside_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        install_files(dir.path(), V1, "1").expect("install");
        let path = dir.path().join("config/a.yaml");
        std::fs::write(&path, "a: mine\n").expect("edit");
        let r = install_files(dir.path(), V2, "2").expect("install");
        assert!(matches!(outcome(&r), FileOutcome::KeptUserEdit { .. }));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "a: mine\n");
        let new_copy = dir.path().join("config/a.yaml.new");
        assert_eq!(std::fs::read_to_string(new_copy).expect("read"), "a: 2\n");
        let notices = r.notices();
        assert_eq!(notices.len(), 1);
        assert!(notices[0].contains("kept your edited"));
        // Still the user's file on the next run: reported again, not overwritten.
        let r = install_files(dir.path(), V2, "2").expect("install");
        assert!(matches!(outcome(&r), FileOutcome::KeptUserEdit { .. }));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "a: mine\n");
    }

    #[test]
    fn a_file_that_matches_the_new_version_is_adopted() {
        let dir = tempfile::tempdir().expect("tempdir");
        install_files(dir.path(), V1, "1").expect("install");
        std::fs::write(dir.path().join("config/a.yaml"), "a: 2\n").expect("edit");
        let r = install_files(dir.path(), V2, "2").expect("install");
        assert_eq!(outcome(&r), &FileOutcome::Unchanged);
    }

    #[cfg(unix)]
    #[test]
    fn files_and_directories_are_readable_by_others_even_when_created_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        // What umask 077 produces: a private directory and a private file already there.
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).expect("mkdir");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        install_files(dir.path(), V1, "1").expect("install");
        let file = dir.path().join("config/a.yaml");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        install_files(dir.path(), V1, "1").expect("install");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&config) & 0o755, 0o755, "{:o}", mode(&config));
        assert_eq!(mode(&file) & 0o444, 0o444, "{:o}", mode(&file));
    }

    #[test]
    fn every_embedded_file_is_mounted_or_is_the_compose_file() {
        let compose =
            std::str::from_utf8(embedded(COMPOSE_FILE).expect("compose embedded")).expect("utf8");
        for f in FILES.iter().filter(|f| f.path != COMPOSE_FILE) {
            let rel = f.path.trim_start_matches("config/");
            let dir_mounted = rel.starts_with("grafana/dashboards/")
                && compose.contains("../config/grafana/dashboards:");
            assert!(
                compose.contains(&format!("../config/{rel}:")) || dir_mounted,
                "{} is embedded but not mounted",
                f.path
            );
        }
    }
}
