//! The per-installation HMAC secret that keys identifier pseudonyms when no team key is set.
//!
//! Stored as 64 hex characters in `<data_dir>/pseudonym.key`, created with mode 0600. Creation
//! is atomic: the secret is written to a private temporary file and hard-linked into place, so
//! two launches racing on first use agree on one secret and never read a half-written file.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// File name of the secret inside the data directory.
pub const SECRET_FILE: &str = "pseudonym.key";

/// Why the secret could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Reading, creating or linking the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file exists but does not hold 64 hex characters.
    #[error(
        "{0}: not a hashing secret (expected 64 hex characters); remove it to create a new one"
    )]
    Malformed(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SecretError + '_ {
    move |source| SecretError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fills `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn read_secret(path: &Path) -> Result<[u8; 32], SecretError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    from_hex(&text).ok_or_else(|| SecretError::Malformed(path.to_path_buf()))
}

/// Returns the installation's secret, creating `data_dir` (0700) and the file (0600) on first
/// use.
pub fn load_or_create_secret(data_dir: &Path) -> Result<[u8; 32], SecretError> {
    let path = data_dir.join(SECRET_FILE);
    match read_secret(&path) {
        Err(SecretError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io_err(data_dir))?;

    let mut secret = [0u8; 32];
    random_bytes(&mut secret).map_err(io_err(Path::new("/dev/urandom")))?;
    let tmp = data_dir.join(format!(".{SECRET_FILE}.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(to_hex(&secret).as_bytes())?;
        file.sync_all()
    };
    let linked = write().and_then(|()| fs::hard_link(&tmp, &path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(secret),
        // Another launch created it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_secret(&path),
        Err(e) => Err(io_err(&path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secret_file_is_created_0600_and_reused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data/claude-telemetry");
        let first = load_or_create_secret(&data).expect("created");
        let mode = fs::metadata(data.join(SECRET_FILE))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&data).expect("dir").permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(load_or_create_secret(&data).expect("read back"), first);
        assert_ne!(first, [0u8; 32]);
        let leftovers: Vec<_> = fs::read_dir(&data).expect("list").collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn two_installations_get_different_secrets() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        assert_ne!(
            load_or_create_secret(a.path()).expect("a"),
            load_or_create_secret(b.path()).expect("b")
        );
    }

    #[test]
    fn a_malformed_secret_is_an_error_not_a_silent_new_key() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join(SECRET_FILE), "not hex").expect("write");
        let err = load_or_create_secret(tmp.path()).expect_err("malformed");
        assert!(matches!(err, SecretError::Malformed(_)), "{err}");
    }
}
