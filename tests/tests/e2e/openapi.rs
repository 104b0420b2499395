//! The server API's OpenAPI 3.1 description (`/api/v1/openapi.json`, generated from the code)
//! holds against a live node. schemathesis (PyPI; `scripts/test` installs it) fuzzes every
//! operation: no 5xx, no answer whose status, content type or body the document does not
//! describe. Then every status the document lists for an operation is one a request really
//! gets: from schemathesis's own requests (its HAR report) or from the ones made here, which
//! need a situation a fuzzer does not make (no credentials, wrong keys, an oversize body, a
//! retry while the first request runs, Redis and the database down).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use e2e::{http, http_with, token, Cluster, TempDir, API_KEY};
use serde_json::{json, Value};

/// The console's live tail: a response that does not end.
const TAIL: &str = "/api/v1/console/tail";

/// (method, path template) → statuses.
type Statuses = BTreeMap<(String, String), BTreeSet<u16>>;

struct Operation {
    method: String,
    template: String,
    /// Takes the backend's key (else only a user's JWT, or nothing).
    backend: bool,
    secured: bool,
}

fn operations(document: &Value) -> Vec<Operation> {
    let mut all = Vec::new();
    for (template, item) in document["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .map(|s| s.iter().flat_map(|r| r.as_object().unwrap().keys().map(String::as_str)).collect())
                .unwrap_or_default();
            all.push(Operation {
                method: method.to_uppercase(),
                template: template.clone(),
                backend: schemes.contains(&"api_key"),
                secured: !schemes.is_empty(),
            });
        }
    }
    all
}

fn documented(document: &Value, op: &Operation) -> BTreeSet<u16> {
    let responses = &document["paths"][&op.template][op.method.to_lowercase()]["responses"];
    responses.as_object().expect("responses").keys().map(|s| s.parse().expect("a numeric status")).collect()
}

/// The template a concrete path is an instance of.
fn template_of<'a>(templates: &'a BTreeSet<String>, path: &str) -> Option<&'a String> {
    let parts: Vec<&str> = path.split('/').collect();
    templates.iter().find(|t| {
        let pattern: Vec<&str> = t.split('/').collect();
        pattern.len() == parts.len()
            && pattern.iter().zip(&parts).all(|(p, a)| (p.starts_with('{') && !a.is_empty()) || p == a)
    })
}

/// Runs schemathesis against the node and returns the statuses its requests got.
fn fuzz(base: &str, templates: &BTreeSet<String>) -> Statuses {
    let dir = TempDir::new("schemathesis");
    let har = dir.path().join("run.har");
    let out = Command::new(e2e::pytool("schemathesis"))
        .current_dir(dir.path())
        .arg("run")
        .arg(format!("{base}/api/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {API_KEY}")])
        // Every check but two that do not fit an API with two kinds of credentials: one key
        // is given for all, so the user-JWT routes answer 401 to it by design.
        .args(["--checks", "all", "--exclude-checks", "ignored_auth,positive_data_acceptance"])
        // The console's tail answers with an endless stream; it is checked below instead.
        .args(["--exclude-path", TAIL])
        .args(["--max-examples", "25", "--seed", "1", "--workers", "1", "--generation-database", "none"])
        .args(["--report", "har", "--report-har-path"])
        .arg(&har)
        .args(["--no-color"])
        .output()
        .expect("running schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    let har: Value = serde_json::from_slice(&std::fs::read(&har).expect("the HAR report")).expect("HAR is JSON");
    let mut seen = Statuses::new();
    for entry in har["log"]["entries"].as_array().expect("HAR entries") {
        let url = entry["request"]["url"].as_str().expect("a URL");
        let path = url.strip_prefix(base).unwrap_or(url).split('?').next().unwrap_or_default();
        let method = entry["request"]["method"].as_str().expect("a method").to_owned();
        if let Some(template) = template_of(templates, path) {
            let status = entry["response"]["status"].as_u64().expect("a status") as u16;
            seen.entry((method, template.clone())).or_default().insert(status);
        }
    }
    seen
}

/// Valid values for one operation: its path with the given ids, and a body that passes.
struct Samples {
    user: String,
    channel: String,
    message: String,
}

impl Samples {
    fn path(&self, template: &str) -> String {
        let session = uuid::Uuid::new_v4().to_string();
        template
            .replace("/sessions/{id}", &format!("/sessions/{session}"))
            .replace("/channels/{id}", &format!("/channels/{}", self.channel))
            .replace("{user_id}", &self.user)
            .replace("{id}", "openapi-sample")
            .replace(TAIL, &format!("{TAIL}?group=workspace:w1"))
    }

    /// A body the operation accepts; `fresh` makes one that changes something (a new emoji).
    fn body(&self, method: &str, template: &str, fresh: &str) -> Option<Value> {
        let user = &self.user;
        Some(match (method, template) {
            ("PUT", "/api/v1/users/{id}") => json!({"username": "sample"}),
            ("PUT", "/api/v1/sessions/{id}") => json!({"inviter_id": user, "invitee_id": "someone-else"}),
            ("PUT", "/api/v1/chats/{id}" | "/api/v1/workspaces/{id}") => json!({"member_ids": [user]}),
            ("PUT", "/api/v1/channels/{id}") => json!({"name": "sample", "member_ids": [user]}),
            ("PUT", "/api/v1/focus-sessions/{id}") => json!({"participant_ids": [user]}),
            ("POST", "/api/v1/messages") => json!({"channel_id": self.channel, "content": format!("hello {fresh}")}),
            ("POST", "/api/v1/messages/reactions") => {
                json!({"message_id": self.message, "emoji": format!("e{}", &fresh[..fresh.len().min(12)]), "action": "add"})
            }
            ("POST", "/api/v1/notifications") => {
                json!({"user_id": user, "title": "t", "content": fresh, "notification_type": "info"})
            }
            ("POST", "/api/v1/task-events") => {
                json!({"workspace_id": "w1", "task_id": fresh, "title": "t", "action": "created", "actor_id": user})
            }
            ("POST", "/api/v1/publish") => json!({"group": "workspace:w1", "event": {"type": "sample", "n": fresh}}),
            _ => return None,
        })
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_answer_and_every_answer_it_lists_happens() {
    let mut cluster = Cluster::start(1).await;
    let base = format!("http://{}", cluster.node(0).addr);
    let (status, document) = http("GET", &format!("{base}/api/v1/openapi.json"), None, None).await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "OpenAPI 3.1: {}", document["openapi"]);
    let operations = operations(&document);
    let templates: BTreeSet<String> = operations.iter().map(|o| o.template.clone()).collect();
    assert!(templates.contains("/api/v1/publish") && templates.len() >= 20, "{templates:?}");

    // A user, a channel and a message of theirs, for the routes that take a user's JWT.
    let user = format!("oa-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    cluster.user(&user, None).await;
    let channel = format!("{user}-ch");
    cluster.channel(&channel, "openapi", false, &[&user]).await;
    let jwt = token(&user);
    let (status, posted) = http(
        "POST",
        &format!("{base}/api/v1/messages"),
        Some(&jwt),
        Some(json!({"channel_id": channel, "content": "first"})),
    )
    .await;
    assert_eq!(status, 201, "{posted}");
    let samples = Samples { user: user.clone(), channel, message: posted["id"].as_str().unwrap().to_owned() };

    let mut seen = {
        let base = base.clone();
        let templates = templates.clone();
        tokio::task::spawn_blocking(move || fuzz(&base, &templates)).await.unwrap()
    };
    let mut record = |op: &Operation, status: u16| {
        seen.entry((op.method.clone(), op.template.clone())).or_default().insert(status);
    };
    let credentials = |op: &Operation| if op.backend { API_KEY.to_owned() } else { jwt.clone() };
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        format!("{}-{n}", uuid::Uuid::new_v4().simple())
    };

    // The user's own routes (the fuzzer holds only the backend's key): as meant, at something
    // that is not there, and with a body of the wrong shape.
    for op in operations.iter().filter(|o| o.secured && !o.backend) {
        let body = samples.body(&op.method, &op.template, &fresh());
        let (status, answer) =
            http(&op.method, &format!("{base}{}", samples.path(&op.template)), Some(&jwt), body).await;
        assert!(status < 300, "{} {}: {status} {answer}", op.method, op.template);
        record(op, status);
        if op.method == "POST" {
            let wrong = json!({"channel_id": "nowhere", "message_id": uuid::Uuid::new_v4(), "content": "x", "emoji": "x", "action": "add"});
            let mut body = samples.body(&op.method, &op.template, &fresh()).unwrap();
            for (field, value) in wrong.as_object().unwrap() {
                if body.get(field).is_some() && matches!(field.as_str(), "channel_id" | "message_id") {
                    body[field] = value.clone();
                }
            }
            let (status, _) = http(&op.method, &format!("{base}{}", op.template), Some(&jwt), Some(body)).await;
            record(op, status);
            let shapeless = json!({"unexpected": true});
            let (status, _) = http(&op.method, &format!("{base}{}", op.template), Some(&jwt), Some(shapeless)).await;
            record(op, status);
        }
    }

    // Text over its documented `maxLength`: 422 naming the field (the fuzzer keeps to the bounds).
    let notifications = operations.iter().find(|o| o.template == "/api/v1/notifications").expect("described");
    let mut long = samples.body("POST", &notifications.template, &fresh()).unwrap();
    long["title"] = json!("x".repeat(201));
    let (status, _) = http("POST", &format!("{base}/api/v1/notifications"), Some(API_KEY), Some(long)).await;
    record(notifications, status);
    // A user posting faster than the sockets' rate: 429 with Retry-After (another user, whose
    // bucket the rest of this test does not need).
    let messages = operations.iter().find(|o| o.template == "/api/v1/messages").expect("described");
    let hasty = format!("{user}-hasty");
    cluster.user(&hasty, None).await;
    for _ in 0..200 {
        let body = samples.body("POST", &messages.template, &fresh());
        let (status, _) = http("POST", &format!("{base}/api/v1/messages"), Some(&token(&hasty)), body).await;
        record(messages, status);
        if status == 429 {
            break;
        }
    }

    // The tail: its stream starts (200, then lines for as long as one reads), or a bad group is refused.
    let tail = operations.iter().find(|o| o.template == TAIL).expect("the tail is described");
    let head = format!("GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\r\n", samples.path(TAIL));
    record(tail, super::server_api::raw_status(cluster.node(0).addr, head, b"").await);
    let (status, _) = http("GET", &format!("{base}{TAIL}?group=nonsense"), Some(API_KEY), None).await;
    record(tail, status);

    // No credentials: 401 wherever credentials are asked for.
    for op in operations.iter().filter(|o| o.secured) {
        let body = samples.body(&op.method, &op.template, &fresh());
        let (status, _) = http(&op.method, &format!("{base}{}", samples.path(&op.template)), None, body).await;
        record(op, status);
    }

    // Bodies over 1 MiB are refused before they are read.
    for op in &operations {
        if samples.body(&op.method, &op.template, "").is_none() {
            continue;
        }
        let head = format!(
            "{} {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            op.method,
            samples.path(&op.template),
            credentials(op),
            2 * 1024 * 1024
        );
        record(op, super::server_api::raw_status(cluster.node(0).addr, head, b"{\"a\": 1").await);
    }

    // A retry while the first request still runs (Redis stalled under it): 409 for one of the two.
    let posts: Vec<&Operation> = operations.iter().filter(|o| o.method == "POST" && o.secured).collect();
    let pairs: Vec<(&Operation, Value, String)> = posts
        .iter()
        .map(|op| (*op, samples.body("POST", &op.template, &fresh()).unwrap(), format!("key-{}", fresh())))
        .collect();
    let retries = async {
        let mut statuses = Vec::new();
        for (op, body, key) in &pairs {
            let url = format!("{base}{}", op.template);
            let send = || {
                let (url, body, key, bearer) = (url.clone(), body.clone(), key.clone(), credentials(op));
                tokio::spawn(async move {
                    http_with("POST", &url, Some(&bearer), &[("Idempotency-Key", &key)], Some(body)).await.0
                })
            };
            let first = send();
            let second = send();
            statuses.push((*op, first, second));
        }
        statuses
    };
    let (_, statuses) = tokio::join!(cluster.redis().freeze_for(Duration::from_secs(3)), retries);
    for (op, first, second) in statuses {
        let pair = [first.await.unwrap(), second.await.unwrap()];
        assert!(pair.contains(&409), "{} {}: {pair:?}", op.method, op.template);
        for status in pair {
            record(op, status);
        }
    }

    // Wrong keys from one address: 401, then 429 once they come too fast.
    for op in operations.iter().filter(|o| o.backend) {
        let url = format!("{base}{}", samples.path(&op.template));
        for _ in 0..200 {
            let body = samples.body(&op.method, &op.template, "x");
            let (status, _) = http(&op.method, &url, Some("not-the-key"), body).await;
            record(op, status);
            if status == 429 {
                break;
            }
        }
    }

    // Redis and the database gone: 503, nothing done.
    cluster.redis().kill();
    cluster.db.refuse_connections().await;
    for op in &operations {
        let body = samples.body(&op.method, &op.template, &fresh());
        let bearer = op.secured.then(|| credentials(op));
        let (status, _) =
            http(&op.method, &format!("{base}{}", samples.path(&op.template)), bearer.as_deref(), body).await;
        record(op, status);
    }

    let mut missing = Vec::new();
    let mut undocumented = Vec::new();
    for op in &operations {
        let listed = documented(&document, op);
        let got = seen.get(&(op.method.clone(), op.template.clone())).cloned().unwrap_or_default();
        missing.extend(listed.difference(&got).map(|s| format!("{} {} {s}", op.method, op.template)));
        undocumented.extend(got.difference(&listed).map(|s| format!("{} {} {s}", op.method, op.template)));
    }
    assert!(undocumented.is_empty(), "answers the document does not list: {undocumented:#?}");
    assert!(missing.is_empty(), "statuses the document lists that no request got: {missing:#?}");
}
