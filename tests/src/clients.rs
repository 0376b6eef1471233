//! Real clients of Switchyard's surfaces, run as their users run them:
//! the scripts in `tests/clients/`, on the tools that
//! `scripts/install-test-tools.sh` puts into `.tools/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The repository's `tests/clients/` folder.
fn clients() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Run `program` with `args` on a blocking thread; what it printed on
/// stdout, as JSON. Panics with its stderr if it fails.
pub async fn run_json(program: PathBuf, args: Vec<String>) -> Value {
    let shown = program.display().to_string();
    let output = tokio::task::spawn_blocking(move || Command::new(program).args(args).output())
        .await
        .expect("the client thread")
        .unwrap_or_else(|e| panic!("running {shown}: {e}"));
    assert!(
        output.status.success(),
        "{shown}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints JSON")
}

/// Python with OpenAI's SDK, from `.tools/venv`.
pub fn python_with_openai() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/python");
    let usable = Command::new(&python)
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        usable,
        "OpenAI's Python SDK is needed by this test and was not found in {}: \
         run scripts/install-test-tools.sh",
        python.display()
    );
    python
}

/// `clients/openai_sdk.py` against the server at `address` with the API
/// key `key`: what OpenAI's Python SDK made of each answer.
pub async fn openai_sdk(address: &str, key: &str) -> Value {
    let script = clients().join("openai_sdk.py");
    run_json(
        python_with_openai(),
        vec![
            script.display().to_string(),
            address.to_owned(),
            key.to_owned(),
        ],
    )
    .await
}

/// `clients/simple_chat.py` against the server at `address` with the
/// service key `key`, acting for each of `users`: what a simple-chat
/// front end's server read from each streamed answer.
pub async fn simple_chat(address: &str, key: &str, users: &[&str]) -> Value {
    let script = clients().join("simple_chat.py");
    let mut args = vec![
        script.display().to_string(),
        address.to_owned(),
        key.to_owned(),
    ];
    args.extend(users.iter().map(|u| (*u).to_owned()));
    run_json(python_with_openai(), args).await
}

/// `clients/browser.mjs`: headless Chromium (Debian's, driven by
/// playwright-core from `.tools/node`) loads a page from a server of the
/// script's own, at `page_host` (`localhost` or `127.0.0.1`), and the page
/// calls Switchyard at `address`, which is another origin, with `key`:
/// what the page saw.
pub async fn browser(address: &str, key: &str, page_host: &str) -> Value {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/node/node_modules");
    let playwright = tools.join("playwright-core/index.js");
    assert!(
        playwright.is_file(),
        "playwright-core is needed by this test and was not found in {}: \
         run scripts/install-test-tools.sh",
        tools.display()
    );
    let chromium =
        std::env::var("SWITCHYARD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "Chromium is needed by this test and was not found at {chromium}: \
         run scripts/install-test-tools.sh (or set SWITCHYARD_CHROMIUM)"
    );
    run_json(
        PathBuf::from("node"),
        vec![
            clients().join("browser.mjs").display().to_string(),
            playwright.display().to_string(),
            chromium,
            address.to_owned(),
            key.to_owned(),
            page_host.to_owned(),
        ],
    )
    .await
}
