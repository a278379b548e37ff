//! The web console on the real executable: `switchboard demo` prints its URL first, serves the
//! page, the event stream, the status API and the job check; and headless Chromium renders a
//! section per service with live data that changes from one rendering to the next, and that
//! the event stream updates in an open page, at a desktop and a phone size (screenshots of both
//! are kept under cargo's test scratch dir, `target/tmp/console-*.png`).
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use switchboard_testkit::free_port;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

/// Generous: the demo starts every service, and CI machines are shared.
const DEADLINE: Duration = Duration::from_secs(60);
const SECTIONS: [&str; 5] = ["aggregator", "presence", "jobproxy", "control", "tracker"];

/// A running `switchboard demo` (SIGKILLed on drop) and the first row of its table.
struct Demo {
    _child: Child,
    _data: tempfile::TempDir,
    base: String,
    first_row: String,
}

impl Demo {
    async fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["demo", "--data-dir", data.path().to_str().unwrap()])
            .args(["--admin-addr", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn switchboard demo");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first_row = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("service ") {
                    return lines.next_line().await.unwrap().unwrap_or_default();
                }
            }
            panic!("the demo ended without printing its table");
        })
        .await
        .expect("the demo printed its table in time");
        // Keep reading, or a full pipe would block the demo's later output.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { _child: child, _data: data, base: format!("http://127.0.0.1:{port}"), first_row }
    }

    async fn status(&self) -> Value {
        reqwest::get(format!("{}/status", self.base)).await.unwrap().json().await.unwrap()
    }

    /// Polls `/status` until the aggregator's first report (10 s windows) has been checked,
    /// then `/console/snapshot` until it shows that and the demo's 50 presence clients.
    async fn wait_for_a_report(&self) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            let status = self.status().await;
            let edges = status["aggregator"]["edges"].as_array().map_or(0, Vec::len);
            let url = format!("{}/console/snapshot", self.base);
            let snapshot: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            if edges > 0
                && status["aggregator.check"]["matched"].as_u64() > Some(0)
                && snapshot["aggregator"]["check"]["matched"].as_u64() > Some(0)
                && snapshot["presence"]["online"].as_f64() == Some(50.0)
            {
                return status;
            }
            assert!(Instant::now() < end, "no checked aggregator report within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_console_its_events_status_and_job_check() {
    let demo = Demo::start().await;
    let url = format!("{}/console", demo.base);
    assert!(
        demo.first_row.starts_with("console") && demo.first_row.ends_with(&url),
        "the console is the table's first row: {:?}",
        demo.first_row
    );

    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    for needle in ["name=\"viewport\"", "id=\"jobcheck\"", "new EventSource"] {
        assert!(html.contains(needle), "the page lacks {needle}");
    }
    for section in SECTIONS {
        assert!(html.contains(&format!("<section id=\"{section}\"")), "no {section} section");
    }

    let status = demo.wait_for_a_report().await;
    for name in ["aggregator", "aggregator.check", "presence", "jobproxy", "control", "tracker"] {
        assert!(status.get(name).is_some(), "/status lacks {name}: {status}");
    }
    assert!(status["tracker"]["dashboard"].as_str().unwrap().ends_with("/dashboard"));
    assert_eq!(status["control"]["agents"].as_array().unwrap().len(), 2, "{status}");

    let first = first_event(&demo.base).await;
    for section in SECTIONS {
        assert!(first[section].is_object(), "the event lacks {section}: {first}");
    }
    assert!(first["seq"].as_u64().unwrap() > 0);

    let res = reqwest::Client::new().post(format!("{url}/jobcheck")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let check: Value = res.json().await.unwrap();
    assert_eq!((check["succeeded"].as_u64(), check["jobs"].as_u64()), (Some(50), Some(50)));
    assert_eq!(check["passed"], true, "{check}");
}

/// The first event of `GET /console/events`, read off a plain socket. HTTP/1.0, so the body
/// is not chunked: the stream is the bytes as they come.
async fn first_event(base: &str) -> Value {
    let addr = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /console/events HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let event = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 8192];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the stream ended before an event: {}", String::from_utf8_lossy(&raw));
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some((_, body)) = text.split_once("\r\n\r\n")
                && let Some((event, _)) = body.split_once("\n\n")
            {
                let head = text.split("\r\n").next().unwrap_or_default().to_owned();
                assert!(head.contains(" 200 "), "{head}");
                assert!(text.to_lowercase().contains("content-type: text/event-stream"), "{text}");
                return event.to_owned();
            }
        }
    })
    .await
    .expect("an event within the deadline");
    assert!(event.starts_with("event: snapshot\n"), "{event}");
    let data = event.lines().find_map(|l| l.strip_prefix("data: ")).expect("a data line");
    serde_json::from_str(data).expect("the event is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_renders_every_section_live_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        if std::env::var_os("SWITCHBOARD_SKIP_BROWSER").is_some() {
            eprintln!("SWITCHBOARD_SKIP_BROWSER is set and Chromium is missing: skipped");
            return;
        }
        panic!(
            "headless Chromium is required for this test: apt-get install -y chromium \
             (or set SWITCHBOARD_SKIP_BROWSER=1 to skip it)"
        );
    };
    let demo = Demo::start().await;
    demo.wait_for_a_report().await;
    let url = format!("{}/console", demo.base);
    let profile = tempfile::tempdir().unwrap();

    let first = dump(chromium, &url, profile.path()).await;
    for section in SECTIONS {
        let open = format!("<section id=\"{section}\" data-state=\"live\"");
        assert!(first.contains(&open), "{section} is not shown as running:\n{first}");
    }
    let calls = field(&first, "aggregator", "calls");
    assert!(calls.contains("over") && !calls.starts_with("0 "), "aggregator calls: {calls:?}");
    assert!(field(&first, "aggregator", "check").contains("matched"), "no simulator check");
    let graph = section(&first, "aggregator");
    assert!(graph.contains("<path") && graph.contains(" calls</title>"), "no call graph drawn");
    assert_eq!(field(&first, "presence", "online"), "50", "the demo's 50 clients are online");
    assert!(section(&first, "presence").contains("<polyline"), "no online-users chart");
    assert!(first.contains("<button type=\"button\" id=\"jobcheck\">"), "the check is not enabled");
    let control = section(&first, "control");
    assert!(control.contains("<td>agent-1</td>") && control.contains("<td>unready</td>"));
    let tracker = section(&first, "tracker");
    assert!(tracker.contains("/dashboard\">open the tracker dashboard</a>"), "{tracker}");

    // Live: a later rendering shows a newer snapshot and more tracker events.
    let (seq, accepted) = (header_seq(&first), field(&first, "tracker", "accepted"));
    let end = Instant::now() + DEADLINE;
    loop {
        let later = dump(chromium, &url, profile.path()).await;
        if header_seq(&later) > seq && field(&later, "tracker", "accepted") != accepted {
            break;
        }
        assert!(Instant::now() < end, "the console did not change within {DEADLINE:?}");
    }

    // And in one open page, the event stream updates it in place: past the inlined snapshot.
    let (conn, seen) = watch_live_page(chromium, &url).await;
    assert_eq!(conn, "live", "the page's stream state");
    assert!(seen.len() >= 2 && seen.windows(2).all(|w| w[0] < w[1]), "snapshots seen: {seen:?}");
}

/// Opens `url` in Chromium under the DevTools protocol and reads the page's stream state and
/// snapshot number until the stream has updated the page twice; returns the state and the
/// snapshot numbers seen, in order. Then checks the page at a desktop and a phone size (no
/// horizontal scrolling, the job check reachable by keyboard) and keeps a screenshot of each
/// under cargo's test scratch dir.
async fn watch_live_page(chromium: &str, url: &str) -> (String, Vec<u64>) {
    let profile = tempfile::tempdir().unwrap();
    let mut browser = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(["--no-first-run", &format!("--user-data-dir={}", profile.path().display())])
        .args(["--window-size=1280,800", "--remote-debugging-port=0", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chromium");
    let mut stderr = BufReader::new(browser.stderr.take().unwrap()).lines();
    let devtools = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if let Some(at) = line.find("ws://") {
                return line[at..].trim().to_owned();
            }
        }
        panic!("chromium exited without a DevTools address");
    })
    .await
    .expect("chromium printed its DevTools address");
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    let http = devtools.trim_start_matches("ws://").split('/').next().unwrap().to_owned();

    let end = Instant::now() + DEADLINE;
    let target = loop {
        let targets: Value =
            reqwest::get(format!("http://{http}/json/list")).await.unwrap().json().await.unwrap();
        let found =
            targets.as_array().unwrap().iter().find(|t| {
                t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url))
            });
        if let Some(t) = found {
            break t["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < end, "chromium never opened {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut page = DevTools::connect(&target).await;
    let expression = "JSON.stringify([document.getElementById('conn').textContent, \
                      document.getElementById('seq').textContent])";
    let mut seen = Vec::<u64>::new();
    let conn = loop {
        let value = page.eval(expression).await;
        let [conn, seq]: [String; 2] =
            serde_json::from_str(value.as_str().unwrap_or("[]")).unwrap_or_default();
        if let Ok(n) = seq.parse::<u64>()
            && seen.last() != Some(&n)
        {
            seen.push(n);
        }
        // The first number may be the inlined snapshot; two more came over the stream.
        if conn == "live" && seen.len() >= 3 {
            break conn;
        }
        assert!(Instant::now() < end, "the page did not update live: {conn:?}, {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let focused =
        page.eval("document.getElementById('jobcheck').focus(); document.activeElement.id");
    assert_eq!(focused.await, "jobcheck", "the job check takes the keyboard focus");
    for (width, height, mobile) in [(1280, 800, false), (390, 844, true)] {
        let metrics = serde_json::json!({"width": width, "height": height,
            "deviceScaleFactor": 1, "mobile": mobile});
        page.call("Emulation.setDeviceMetricsOverride", metrics).await;
        let overflow = page.eval("document.documentElement.scrollWidth - window.innerWidth").await;
        assert!(
            overflow.as_i64().is_some_and(|px| px <= 0),
            "{width}px scrolls sideways: {overflow}"
        );
        let shot = page.call("Page.captureScreenshot", serde_json::json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot at {width}px");
        let file = format!("{}/console-{width}x{height}.png", env!("CARGO_TARGET_TMPDIR"));
        std::fs::write(&file, png).unwrap();
        eprintln!("screenshot: {file}");
    }
    (conn, seen)
}

/// One page under the Chrome DevTools protocol: commands out, their answers back by id.
struct DevTools {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next_id: u64,
}

impl DevTools {
    async fn connect(target: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(target).await.expect("DevTools socket");
        Self { ws, next_id: 1 }
    }

    /// Sends `method` and returns its `result`; events in between are skipped.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        use futures::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;

        let id = self.next_id;
        self.next_id += 1;
        let call = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::text(call.to_string())).await.unwrap();
        loop {
            let msg =
                tokio::time::timeout(DEADLINE, self.ws.next()).await.expect("DevTools answers");
            let text = match msg {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(_)) => continue,
                other => panic!("the DevTools socket ended waiting for {method}: {other:?}"),
            };
            let mut v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].take();
            }
        }
    }

    /// The value of a JavaScript expression evaluated in the page.
    async fn eval(&mut self, expression: &str) -> Value {
        let params = serde_json::json!({"expression": expression, "returnByValue": true});
        let mut result = self.call("Runtime.evaluate", params).await;
        result["result"]["value"].take()
    }
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success())
    })
}

/// The page as Chromium has rendered it once loaded (the inlined snapshot, drawn by the page's
/// script). The event stream never ends, so a virtual-time budget would wait for it for ever.
async fn dump(chromium: &str, url: &str, profile: &std::path::Path) -> String {
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(["--no-first-run", &format!("--user-data-dir={}", profile.display())])
        .args(["--window-size=1280,800", "--dump-dom", url])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE, out).await.expect("chromium hung").unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The markup of section `id`.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom.find(&format!("<section id=\"{id}\"")).unwrap_or_else(|| panic!("no {id}"));
    let len = dom[start..].find("</section>").expect("section closes");
    &dom[start..start + len]
}

/// The text of the `data-f` field `f` in section `id`.
fn field(dom: &str, id: &str, f: &str) -> String {
    let s = section(dom, id);
    let marker = format!("data-f=\"{f}\">");
    let at = s.find(&marker).unwrap_or_else(|| panic!("{id} has no field {f}")) + marker.len();
    s[at..].split('<').next().unwrap_or_default().to_owned()
}

fn header_seq(dom: &str) -> u64 {
    let at = dom.find("id=\"seq\">").expect("the header shows the snapshot number") + 9;
    dom[at..].split('<').next().unwrap_or_default().parse().expect("a snapshot number")
}
