//! The operator's console (`/console`) in a real browser: Debian's Chromium, headless, driven by
//! playwright-core (`tests/console/console.mjs`). It logs in with the API key, sees both nodes
//! of the cluster, follows a chat group and watches a message sent by a WebSocket client on the
//! other node appear in the tail, publishes a test event from its form and sees it arrive too.
//! The screenshot it takes is `target/console.png` (docs/console.png is one of them).

use std::path::Path;

use e2e::{repo, run_driver, token, Cluster, API_KEY};

#[tokio::test]
async fn the_console_shows_both_nodes_and_a_live_tail_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install the Debian package chromium (scripts/test does)"
    );
    let driver = repo().join("tests/console");
    assert!(
        driver.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci` in tests/console (scripts/test does)"
    );

    let cluster = Cluster::start(2).await;
    let user = format!("console-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    cluster.user(&user, None).await;
    let chat = format!("{user}-chat");
    cluster.chat(&chat, &[&user]).await;
    let screenshot = repo().join("target/console.png");

    let mut run = tokio::process::Command::new("node");
    run.arg(driver.join("console.mjs"))
        .current_dir(&driver)
        .env("CONSOLE_URL", format!("http://{}", cluster.node(0).addr))
        .env("API_KEY", API_KEY)
        .env("CHAT_SOCKET", cluster.node(1).ws(&format!("/api/v1/ws/chat/{chat}?token={}", token(&user))))
        .env("GROUP", format!("chat:{chat}"))
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium);
    let said = run_driver(run, "install Node.js 20 or later").await;
    assert!(said.contains("console ok"), "the console run did not finish:\n{said}");
    assert!(screenshot.exists(), "no screenshot at {}", screenshot.display());
}
