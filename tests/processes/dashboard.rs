//! The live dashboard in a real browser: headless Chromium loads `GET /` from a node's
//! gateway (with its token), the page's script reads `/api/dashboard`, and the rendered DOM
//! shows both members, and each method called with its exact total. Skipped, saying so,
//! where Chromium is not installed (`.ci/run` installs it).

use crate::support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{call_ok, members, wait_until, NodeProc, PATIENCE};

const TOKEN: &str = "dashboard-token-1234";

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
}

/// The DOM of `url` after its scripts ran for a few (virtual) seconds.
fn rendered(browser: &str, url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("meshrpc-chromium-{}", std::process::id()));
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    // Bounded: a browser that hangs is killed and the test fails.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("chromium status").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&profile);
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("chromium output");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `<table id="ID">…</table>` of a page.
fn table<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id} in {dom}"));
    let end = dom[start..]
        .find("</table>")
        .map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// `GET path` without credentials: the status code.
fn status_without_token(http: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(http).expect("connect");
    tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).expect("read");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status")
}

#[test]
fn the_dashboard_renders_members_and_methods_with_their_totals() {
    let d1 = NodeProc::start("d1", &["--http", "127.0.0.1:0", "--http-token", TOKEN]);
    let d2 = NodeProc::start("d2", &["--seed", &d1.addr]);
    let http = d1.http.clone().expect("a gateway");
    // The page and its data are behind the token like everything but the probes.
    assert_eq!(status_without_token(&http, "/"), 401);
    assert_eq!(status_without_token(&http, "/api/dashboard"), 401);
    let Some(browser) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium); the dashboard was not rendered");
        return;
    };
    wait_until("d1 to see d2", || {
        members(&d1.addr, &[]).get("d2").map(String::as_str) == Some("up")
    });
    for i in 0..5 {
        call_ok(&d1.addr, "add", &[&i.to_string(), "1"]);
    }
    for i in 0..3 {
        call_ok(&d1.addr, "square", &[&i.to_string()]);
    }
    let dom = rendered(browser, &format!("http://meshrpc:{TOKEN}@{http}/"));
    let members = table(&dom, "members");
    for name in [&d1.name, &d2.name] {
        assert!(
            members.contains(&format!("<td>{name}</td>")),
            "{name} missing: {members}"
        );
    }
    let methods = table(&dom, "methods");
    for (method, total) in [("add", 5), ("square", 3)] {
        let row = format!("<td>{method}</td><td class=\"n\">{total}</td>");
        assert!(
            methods.contains(&row),
            "{method} with {total} calls missing: {methods}"
        );
    }
    assert!(
        dom.contains("id=\"error\"></span>"),
        "the page reported an error: {dom}"
    );
}
