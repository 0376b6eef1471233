//! Finding installed server programs: Debian's and Red Hat's PostgreSQL
//! packages, Homebrew's kegs, and `PATH`.

use std::path::{Path, PathBuf};

/// The directory holding PostgreSQL's `initdb` and `postgres`, the newest
/// version first where several are installed.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    // Debian and Ubuntu: /usr/lib/postgresql/<major>/bin; Red Hat:
    // /usr/pgsql-<major>/bin; Homebrew: the versioned kegs.
    for (parent, prefix) in [
        ("/usr/lib/postgresql", ""),
        ("/usr", "pgsql-"),
        ("/opt/homebrew/opt", "postgresql@"),
        ("/usr/local/opt", "postgresql@"),
    ] {
        candidates.extend(versioned(Path::new(parent), prefix).map(|dir| dir.join("bin")));
    }
    for dir in [
        "/opt/homebrew/opt/postgresql/bin",
        "/usr/local/opt/postgresql/bin",
    ] {
        candidates.push(PathBuf::from(dir));
    }
    candidates.extend(path_dirs());
    candidates.extend(["/opt/homebrew/bin", "/usr/local/bin"].map(PathBuf::from));
    candidates
        .into_iter()
        .find(|dir| is_program(&dir.join("initdb")) && is_program(&dir.join("postgres")))
}

/// `redis-server` on `PATH` or where Debian and Homebrew put it.
pub fn redis_server() -> Option<PathBuf> {
    path_dirs()
        .chain(
            [
                "/usr/bin",
                "/usr/sbin",
                "/usr/local/bin",
                "/opt/homebrew/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|dir| dir.join("redis-server"))
        .find(|path| is_program(path))
}

/// Directories in `parent` named `prefix` and a version number, newest first.
fn versioned(parent: &Path, prefix: &str) -> impl Iterator<Item = PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix(prefix)?;
            let parts: Option<Vec<u32>> = version.split('.').map(|p| p.parse().ok()).collect();
            Some((parts?, entry.path()))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, path)| path)
}

fn path_dirs() -> impl Iterator<Item = PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
}

/// A file the current user may execute.
pub fn is_program(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_directories_are_newest_first() {
        let dir = std::env::temp_dir().join(format!("sy-versions-{}", std::process::id()));
        for name in ["9.6", "15", "17", "postgresql-common", "16"] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        let found: Vec<String> = versioned(&dir, "")
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(found, ["17", "16", "15", "9.6"]);
    }
}
