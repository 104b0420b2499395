//! Who gets in: the close codes 4001–4004 and forged tokens (sendbuddy.md "Connection Failed").

use e2e::{close_code_of, http, session_path, token, Client, Cluster, Node, API_KEY, JWT_SECRET};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use shared::auth::JwtKey;

fn sign(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn in_an_hour() -> i64 {
    chrono::Utc::now().timestamp() + 3600
}

#[tokio::test]
async fn each_close_code_has_its_cause() {
    let cluster = Cluster::start(2).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    cluster.user("mallory", None).await;
    let session = cluster.session("alice", "bob").await;
    let node = cluster.node(1);

    // 4001: no token, or an empty one.
    assert_eq!(close_code_of(&node.ws(&format!("/ws/sessions/{session}/"))).await, 4001);
    assert_eq!(close_code_of(&node.ws(&format!("/ws/sessions/{session}/?token="))).await, 4001);
    // 4002: a valid token for a user the gateway does not know, or an inactive one.
    assert_eq!(close_code_of(&node.ws(&session_path(&session, &token("ghost")))).await, 4002);
    let (status, _) = http(
        "PUT",
        &node.http("/api/v1/users/bob"),
        Some(API_KEY),
        Some(json!({"username": "bob", "is_active": false})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(close_code_of(&node.ws(&session_path(&session, &token("bob")))).await, 4002);
    // 4003: garbage and expired tokens.
    assert_eq!(close_code_of(&node.ws(&session_path(&session, "not-a-jwt"))).await, 4003);
    let expired = shared::auth::issue_hs256(JWT_SECRET, "alice", -60);
    assert_eq!(close_code_of(&node.ws(&session_path(&session, &expired))).await, 4003);
    // 4004: not a participant; an unknown session; a malformed id (no existence leak).
    assert_eq!(close_code_of(&node.ws(&session_path(&session, &token("mallory")))).await, 4004);
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(close_code_of(&node.ws(&session_path(&unknown, &token("alice")))).await, 4004);
    assert_eq!(close_code_of(&node.ws(&session_path("not-a-uuid", &token("alice")))).await, 4004);
}

#[tokio::test]
async fn forged_tokens_never_get_in() {
    let cluster = Cluster::start(1).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let node = cluster.node(0);
    let url = |t: &str| node.ws(&session_path(&session, t));

    // Wrong key.
    let wrong = shared::auth::issue_hs256("another-secret", "alice", 3600);
    assert_eq!(close_code_of(&url(&wrong)).await, 4003);
    // alg: none, unsigned.
    let b64 = |v: serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none =
        format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(json!({"sub": "alice", "exp": in_an_hour()})));
    assert_eq!(close_code_of(&url(&none)).await, 4003);
    // A token without exp.
    let no_exp = sign(Algorithm::HS256, &EncodingKey::from_secret(JWT_SECRET.as_bytes()), json!({"sub": "alice"}));
    assert_eq!(close_code_of(&url(&no_exp)).await, 4003);
    // A good token of a user who is not a participant.
    cluster.user("eve", None).await;
    assert_eq!(close_code_of(&url(&token("eve"))).await, 4004);
    // And the real thing works.
    let mut alice = Client::connect(&url(&token("alice"))).await;
    alice.send_json(json!({"type": "message", "content": "in"})).await;
    assert_eq!(alice.recv().await["content"], "in");
}

/// Nodes verifying with a public key (RS256, ES256) accept tokens of the matching private key
/// and refuse HS256 tokens signed with the public key as the secret (algorithm confusion).
#[tokio::test]
async fn public_key_algorithms_work_and_cannot_be_confused() {
    let mut cluster = Cluster::start(0).await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    for (alg, name) in [(Algorithm::RS256, "rs256"), (Algorithm::ES256, "es256")] {
        let public = std::fs::read(format!("{fixtures}/{name}-public.pem")).unwrap();
        let private = std::fs::read(format!("{fixtures}/{name}-private.pem")).unwrap();
        let mut config = cluster.node_config();
        config.jwt = JwtKey::from_public_pem(&format!("{alg:?}"), &public).unwrap();
        let node = Node::start(config).await;
        if cluster.nodes.is_empty() {
            cluster.nodes.push(Node::start(cluster.node_config()).await);
        }
        cluster.user("alice", None).await;
        cluster.user("bob", None).await;
        let session = cluster.session("alice", "bob").await;
        let url = |t: &str| node.ws(&session_path(&session, t));

        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private).unwrap(),
            _ => EncodingKey::from_ec_pem(&private).unwrap(),
        };
        let good = sign(alg, &key, json!({"sub": "alice", "exp": in_an_hour()}));
        let mut alice = Client::connect(&url(&good)).await;
        alice.send_json(json!({"type": "message", "content": name})).await;
        assert_eq!(alice.recv().await["content"], name);

        let confused =
            sign(Algorithm::HS256, &EncodingKey::from_secret(&public), json!({"sub": "alice", "exp": in_an_hour()}));
        assert_eq!(close_code_of(&url(&confused)).await, 4003, "{name}: HS256 with the public key as secret");
        assert_eq!(close_code_of(&url(&token("alice"))).await, 4003, "{name}: HS256 token");
    }
}

#[tokio::test]
async fn a_token_that_expires_while_connected_closes_with_4003() {
    let cluster = Cluster::start(1).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let short = shared::auth::issue_hs256(JWT_SECRET, "alice", 1);
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &short))).await;
    assert_eq!(alice.closed().await, 4003);
}

#[tokio::test]
async fn history_is_open_to_participants_only() {
    let mut cluster = Cluster::start(1).await;
    cluster.start_worker().await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    cluster.user("eve", None).await;
    let session = cluster.session("alice", "bob").await;
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    alice.send_json(json!({"type": "message", "content": "private"})).await;
    alice.recv().await;
    e2e::eventually("the message is persisted", || async { cluster.history(&session).await.len() == 1 }).await;

    let url = cluster.node(0).http(&format!("/api/v1/sessions/{session}/messages"));
    let (status, body) = http("GET", &url, Some(&token("bob")), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["messages"][0]["content"], "private");
    let (status, body) = http("GET", &url, Some(&token("eve")), None).await;
    assert_eq!(status, 404, "{body}");
    assert!(!body.to_string().contains("private"));
    let (status, _) = http("GET", &url, None, None).await;
    assert_eq!(status, 401);
    let deactivate = json!({"username": "bob", "is_active": false});
    let (status, _) = http("PUT", &cluster.node(0).http("/api/v1/users/bob"), Some(API_KEY), Some(deactivate)).await;
    assert_eq!(status, 200);
    let (status, _) = http("GET", &url, Some(&token("bob")), None).await;
    assert_eq!(status, 401, "a deactivated participant's token opens nothing");
    let (status, _) =
        http("GET", &cluster.node(0).http(&format!("/api/v1/sessions/{session}")), Some(&token("alice")), None).await;
    assert_eq!(status, 401, "the session resource itself is for the backend's key");
}
