//! Headless Chromium for the tests that check Cardinal's HTML pages (the simulation report, the
//! analytics page): the rendered DOM, the console, a screenshot.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// What a page rendered to.
pub struct Rendered {
    /// The DOM after rendering (`--dump-dom`).
    pub dom: String,
    /// The screenshot, as PNG bytes.
    pub png: Vec<u8>,
}

/// Debian's `chromium`, or a clear failure: a test that needs a browser must not pass without one.
fn browser() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return name.to_owned();
        }
    }
    panic!(
        "this test needs headless Chromium (Debian package `chromium`; `.ci/run` installs it): \
         none of chromium, chromium-browser, google-chrome was found"
    );
}

fn headless(browser: &str, profile: &Path, extra: &[&str], url: &str) -> Output {
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run the browser");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Renders `url` (blocking: call it off the async runtime), fails on a console error, and takes a
/// screenshot `width`×`height`.
pub fn render(url: &str, width: u32, height: u32) -> Rendered {
    let browser = browser();
    let out = tempfile::tempdir().expect("temporary directory");
    let profile = out.path().join("profile");
    let dom = headless(&browser, &profile, &["--dump-dom"], url);
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(
        !log.lines()
            .any(|l| l.contains(":CONSOLE(") || l.contains("Uncaught")),
        "console errors:\n{log}"
    );
    let shot = out.path().join("page.png");
    headless(
        &browser,
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            &format!("--window-size={width},{height}"),
        ],
        url,
    );
    Rendered {
        dom: String::from_utf8_lossy(&dom.stdout).into_owned(),
        png: std::fs::read(&shot).expect("the screenshot"),
    }
}
