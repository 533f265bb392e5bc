//! GScore's client end to end (`gooddrag gscore`, `gooddrag eval --gscore`) against a local HTTP
//! server speaking the OpenAI chat-completions protocol: the request as specified (prompt,
//! original then each method's file as stored, model, sampling settings, the key from the
//! environment), 429s with Retry-After, a timeout and a malformed body retried, free-text and
//! unreadable answers, the per-sample cache (a rerun sends nothing), and the errors for a
//! refused key and an unreachable endpoint.

mod parity_support;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use gooddrag::image::RgbImage;
use gooddrag::imageio::save_rgb;

/// What the server does with the next request.
enum Reply {
    /// Status, extra headers, body.
    Send(u16, &'static str, String),
    /// Wait this long, then answer (the client has given up by then).
    Stall(Duration),
}

/// A request as received: headers (lower-case names) and the body.
#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

struct Server {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

fn chat(answer: &str) -> String {
    serde_json::json!({
        "id": "x", "object": "chat.completion",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": answer }, "finish_reason": "stop" }],
    })
    .to_string()
}

/// Serves each connection on its own thread; an empty script answers 500 (and the test sees
/// the unexpected request in `received`).
fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(VecDeque::new()));
    let (r, s) = (received.clone(), script.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (r, s) = (r.clone(), s.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = Vec::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
                        break;
                    }
                    let (k, v) = line.split_once(':').unwrap();
                    headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                r.lock().unwrap().push(Received {
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or_default(),
                });
                let reply = s.lock().unwrap().pop_front();
                let (status, extra, body) = match reply {
                    Some(Reply::Send(status, extra, body)) => (status, extra, body),
                    Some(Reply::Stall(d)) => {
                        std::thread::sleep(d);
                        (200, "", chat("A: 1"))
                    }
                    None => (500, "", "no reply scripted".into()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Server {
        url,
        received,
        script,
    }
}

impl Server {
    fn script(&self, replies: Vec<Reply>) {
        self.script.lock().unwrap().extend(replies);
    }
    fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.received.lock().unwrap())
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gscore-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn image(shade: u8) -> RgbImage {
    RgbImage {
        width: 16,
        height: 12,
        rgb: (0..16 * 12 * 3)
            .map(|i| shade.wrapping_add(i as u8))
            .collect(),
    }
}

/// Two samples (`s1`, `s2`) and two methods' results (`m1`, `m2`).
fn dataset(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = dir.join("data");
    for (i, name) in ["s1", "s2"].iter().enumerate() {
        let d = data.join(name);
        std::fs::create_dir_all(&d).unwrap();
        save_rgb(&d.join("original.png"), &image(i as u8 * 10)).unwrap();
        std::fs::write(d.join("points.json"), r#"{"points": [[2, 3], [8, 3]]}"#).unwrap();
    }
    let methods: Vec<PathBuf> = ["m1", "m2"].iter().map(|m| dir.join(m)).collect();
    for (k, m) in methods.iter().enumerate() {
        for (i, name) in ["s1", "s2"].iter().enumerate() {
            std::fs::create_dir_all(m.join(name)).unwrap();
            save_rgb(
                &m.join(name).join("output_image.png"),
                &image(100 + 50 * k as u8 + i as u8),
            )
            .unwrap();
        }
    }
    (data, methods[0].clone(), methods[1].clone())
}

fn gscore_cmd(url: &str, data: &Path, m1: &Path, m2: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gooddrag"));
    cmd.args([
        "gscore",
        "--model",
        "judge-7b",
        "--backoff-secs",
        "0.01",
        "--timeout-secs",
        "0.5",
    ])
    .args(["--attempts", "3", "--endpoint", url, "--data"])
    .arg(data)
    .arg("--results")
    .arg(m1)
    .arg("--results")
    .arg(m2)
    .arg("--out")
    .arg(out)
    .env("GSCORE_API_KEY", "test-key-123");
    cmd
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rows(out: &Path) -> Vec<serde_json::Value> {
    parity_support::report_rows(out)
}

#[test]
fn gscore_sends_the_specified_request_retries_parses_and_caches() {
    let dir = scratch("full");
    let (data, m1, m2) = dataset(&dir);
    let s = server();
    s.script(vec![
        // s1: rate-limited once, then the requested answer lines.
        Reply::Send(
            429,
            "retry-after: 0\r\n",
            r#"{"error": "slow down"}"#.into(),
        ),
        Reply::Send(
            200,
            "",
            chat("A is natural.\nB smears the fur.\n\nA: 8\nB: 5/10"),
        ),
        // s2: a timeout, a broken body, then free text with one unreadable rating.
        Reply::Stall(Duration::from_millis(1500)),
        Reply::Send(200, "", "{\"choices\": [".into()),
        Reply::Send(
            200,
            "",
            chat("Image A: strong edit, 7.5 out of 10.\nImage B has no rating I can give."),
        ),
    ]);
    let out = dir.join("out");
    let (ok, stderr) = run(&mut gscore_cmd(&s.url, &data, &m1, &m2, &out));
    assert!(ok, "{stderr}");
    let received = s.take();
    assert_eq!(received.len(), 5, "2 + 3 attempts");
    let first = &received[1];
    assert!(
        first
            .headers
            .contains(&("authorization".into(), "Bearer test-key-123".into()))
    );
    assert_eq!(first.body["model"], "judge-7b");
    assert_eq!(first.body["temperature"], 0.4);
    assert_eq!(first.body["top_p"], 1.0);
    assert_eq!(first.body["max_tokens"], 2048);
    let content = first.body["messages"][0]["content"].as_array().unwrap();
    assert_eq!(content.len(), 4, "prompt, original, A, B");
    let prompt = content[0]["text"].as_str().unwrap();
    assert!(prompt.contains("naturalness") && prompt.ends_with("A: <score>; B: <score>"));
    // The files as stored, in order: original, method 1, method 2.
    for (part, file) in content[1..].iter().zip([
        data.join("s1/original.png"),
        m1.join("s1/output_image.png"),
        m2.join("s1/output_image.png"),
    ]) {
        let url = part["image_url"]["url"].as_str().unwrap();
        let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(bytes, std::fs::read(&file).unwrap(), "{}", file.display());
    }
    let report = rows(&out);
    assert_eq!(
        report[0]["gscore"]["runs"][0]["scores"],
        serde_json::json!([8.0, 5.0])
    );
    assert_eq!(report[0]["gscore"]["requests"], 2);
    assert_eq!(
        report[1]["gscore"]["runs"][0]["scores"],
        serde_json::json!([7.5, null])
    );
    assert_eq!(report[1]["gscore"]["requests"], 3);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let methods = &summary["gscore"]["methods"];
    assert_eq!(methods[0]["mean"], 7.75);
    assert_eq!(methods[1]["mean"], 5.0);
    assert_eq!(methods[1]["scores_read"], 1);
    assert_eq!(summary["gscore"]["unparsed"], 1);
    // The key never reaches a file.
    for entry in walk(&out) {
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned();
        assert!(!text.contains("test-key-123"), "{}", entry.display());
    }

    // A rerun is answered from the cache: no request at all, the same report.
    let (ok, stderr) = run(&mut gscore_cmd(&s.url, &data, &m1, &m2, &out));
    assert!(ok, "{stderr}");
    assert_eq!(s.take().len(), 0, "a rerun sent requests");
    let again = rows(&out);
    assert_eq!(again[0]["gscore"]["cached_runs"], 1);
    assert_eq!(again[0]["gscore"]["runs"], report[0]["gscore"]["runs"]);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            files.extend(walk(&e.path()));
        } else {
            files.push(e.path());
        }
    }
    files
}

#[test]
fn eval_gscore_reports_a_refused_key_and_an_unreachable_endpoint() {
    let dir = scratch("errors");
    let (data, m1, _) = dataset(&dir);
    let s = server();
    s.script(vec![
        Reply::Send(
            401,
            "",
            r#"{"error": {"message": "Incorrect API key"}}"#.into(),
        ),
        Reply::Send(
            401,
            "",
            r#"{"error": {"message": "Incorrect API key"}}"#.into(),
        ),
    ]);
    let eval = |url: &str, out: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gooddrag"));
        cmd.args([
            "eval",
            "--gscore",
            "--model",
            "m",
            "--attempts",
            "2",
            "--backoff-secs",
            "0",
        ])
        .args(["--endpoint", url, "--data"])
        .arg(&data)
        .arg("--results")
        .arg(&m1)
        .arg("--out")
        .arg(dir.join(out))
        .env_remove("GSCORE_API_KEY");
        run(&mut cmd)
    };
    let (ok, stderr) = eval(&s.url, "refused");
    assert!(ok, "{stderr}");
    let report = rows(&dir.join("refused"));
    assert_eq!(s.take().len(), 2, "a refused key is not retried");
    for row in &report {
        assert_eq!(row["ok"], false);
        assert!(
            row["error"]
                .as_str()
                .unwrap()
                .contains("refused the key (HTTP 401)"),
            "{row}"
        );
    }
    // Nothing listens on this port.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (ok, _) = eval(&format!("http://{closed}/v1"), "unreachable");
    assert!(ok);
    let report = rows(&dir.join("unreachable"));
    assert!(
        report[0]["error"]
            .as_str()
            .unwrap()
            .contains("no answer after 2 attempts"),
        "{}",
        report[0]
    );
    // No endpoint at all: told what is missing before anything runs.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gooddrag"));
    cmd.args(["eval", "--gscore", "--data"])
        .arg(&data)
        .arg("--results")
        .arg(&m1)
        .arg("--out")
        .arg(dir.join("x"));
    let (ok, stderr) = run(&mut cmd);
    assert!(!ok && stderr.contains("--endpoint"), "{stderr}");
}
