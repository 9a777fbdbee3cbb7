//! The gateway's own files: the store, compiled artifacts (loaded as native code) and the
//! admin token. Directories it creates are owner-only, and whether others could write to
//! one can be checked (the artifact cache is not used then); files are written whole to a
//! fresh owner-only temporary file and renamed into place, so a reader never sees half a
//! file and a link planted at the path is replaced, not followed.

use std::io;
use std::path::Path;

/// Creates `dir` (and its parents) owner-only when missing. An existing directory keeps
/// its owner and permissions (volumes shared with a group are common); see
/// [`check_private_dir`] for whether others could write there.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if !std::fs::metadata(dir)?.is_dir() {
        return Err(io::Error::other(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    Ok(())
}

/// Why files in `dir` (a symbolic link to it is followed) could have been written by
/// someone other than this process's user: it belongs to another user, or others may write
/// to it. `None` when only this user can.
pub fn check_private_dir(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(format!("{}: {e}", dir.display())),
    };
    if meta.uid() != effective_uid() {
        Some(format!("{} belongs to another user", dir.display()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!("{} is writable by other users", dir.display()))
    } else {
        None
    }
}

/// Writes `bytes` to `path` whole: to a new owner-only file beside it, then renamed over it.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{}: not a file path", path.display())))?;
    let mut attempt = 0u32;
    loop {
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp{}-{attempt}", std::process::id()));
        let tmp = dir.map_or_else(|| tmp_name.clone().into(), |d| d.join(&tmp_name));
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => f,
            // Another writer's temporary file (a concurrent compile of the same component).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 1000 => {
                attempt += 1;
                continue;
            }
            Err(e) => return Err(e),
        };
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        drop(f);
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        return Ok(());
    }
}

/// This process's effective user id.
#[allow(unsafe_code)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_directory_is_owner_only_and_one_others_can_write_to_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("a/b");
        create_private_dir(&new).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&new), 0o700);
        assert_eq!(check_private_dir(&new), None);
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o775)).unwrap();
        // Existing directories are used as they are, and reported.
        create_private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o775);
        let why = check_private_dir(&shared).unwrap();
        assert!(why.contains("writable by other users"), "{why}");
        // Readable by others is the operator's choice.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_private_dir(&shared), None);
    }

    #[test]
    fn a_private_file_replaces_a_planted_link_and_is_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        let path = root.path().join("token");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write_private_file(&path, b"secret\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret\n");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
