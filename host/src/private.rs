//! The gateway's own files: the store, compiled artifacts (loaded as native code) and the
//! admin token. Their directories are owner-only and refused when they belong to another
//! user; files are written whole to a fresh owner-only temporary file and renamed into
//! place, so a reader never sees half a file and a link planted at the path is replaced,
//! not followed.

use std::io;
use std::path::Path;

/// Creates `dir` (and its parents) owner-only when missing. An existing one (a symbolic
/// link to one is followed) must be a directory owned by this process's user that no one
/// else can write to: another user able to write there could plant files the gateway
/// trusts. Existing permissions are not changed.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let meta = std::fs::metadata(dir)?;
    let refuse = |why: &str| Err(io::Error::other(format!("{}: {why}", dir.display())));
    if !meta.is_dir() {
        return refuse("is not a directory");
    }
    if meta.uid() != effective_uid() {
        return refuse("belongs to another user, who could plant files the gateway trusts");
    }
    if meta.mode() & 0o022 != 0 {
        return refuse("is writable by other users (chmod go-w)");
    }
    Ok(())
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
    fn a_new_directory_is_owner_only_and_one_others_can_write_to_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("a/b");
        create_private_dir(&new).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&new), 0o700);
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = create_private_dir(&shared).unwrap_err();
        assert!(e.to_string().contains("writable by other users"), "{e}");
        // Readable by others is the operator's choice: accepted and left as it is.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o755);
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
