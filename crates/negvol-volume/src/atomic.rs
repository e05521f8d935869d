//! Atomic file writes: the bytes go to a temporary file in the target's folder, are flushed
//! and synced, and the file is then renamed over the target. A reader never sees a partly
//! written mask or checkpoint, and a failed or interrupted write leaves the old file (if any)
//! untouched and no temporary file behind (it is removed on drop).
//!
//! Every negvol crate that writes results (NIfTI, STL, checkpoints, reports, pictures) goes
//! through these two functions. New files get mode `0644` on Unix (subject to the umask), like
//! a file made with `File::create`, rather than the `0600` of a bare temporary file.
//!
//! ```
//! use std::io::Write;
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("report.json");
//! negvol_volume::atomic::write_bytes_atomic(&path, b"{}\n").unwrap();
//! negvol_volume::atomic::write_atomic::<std::io::Error>(&path, |w| {
//!     w.write_all(b"{\"ok\": true}\n")
//! })
//! .unwrap();
//! assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"ok\": true}\n");
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes `path` atomically through `body`, which gets a buffered writer on the temporary file.
///
/// `E` is the caller's error type; I/O failures of the temporary file itself (create, flush,
/// sync, rename) are converted with `E::from(std::io::Error)`, so callers add the path in their
/// own error. If `body` fails, the temporary file is deleted and the target is not touched.
pub fn write_atomic<E>(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<&mut File>) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".negvol-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    {
        let mut w = BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
        body(&mut w)?;
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| E::from(e.error))?;
    Ok(())
}

/// Writes `bytes` to `path` atomically (see [`write_atomic`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_target_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_bytes_atomic(&path, b"first").unwrap();
        write_bytes_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_failing_body_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_bytes_atomic(&path, b"old").unwrap();
        let r = write_atomic::<std::io::Error>(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk on fire"))
        });
        assert_eq!(r.unwrap_err().to_string(), "disk on fire");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_folder_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/folder/a.bin");
        assert!(write_bytes_atomic(&path, b"x").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn new_files_are_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_bytes_atomic(&path, b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // What the umask leaves of 0666 for a plain File::create, restricted to 0644.
        let plain = dir.path().join("plain.bin");
        std::fs::File::create(&plain).unwrap();
        let umasked = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode,
            umasked & 0o644,
            "mode {mode:o}, File::create gives {umasked:o}"
        );
    }
}
