//! Authenticators: API keys, OIDC bearer tokens against a local JWKS
//! endpoint, Easy Auth headers, and development mode, each with good and
//! bad credentials.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::Json;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use switchyard_tests::{Options, TestApp};

const ISSUER: &str = "https://login.example.test/tenant";
const AUDIENCE: &str = "switchyard-api";

/// An RSA signing key the fake issuer publishes under `kid`.
struct SigningKey {
    kid: String,
    pair: KeyPair,
}

impl SigningKey {
    fn new(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            pair: KeyPair::generate(KeySize::Rsa2048).expect("an RSA key"),
        }
    }

    fn jwk(&self) -> Value {
        let public = self.pair.public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// A compact JWS over `claims`, RS256, naming this key.
    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input = format!("{}.{}", b64(&header), b64(claims));
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .expect("signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims that the API accepts.
fn good_claims(sub: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "name": format!("User {sub}"),
        "iat": now(),
        "nbf": now() - 5,
        "exp": now() + 600,
    })
}

/// A local JWKS endpoint whose keys a test can change, that counts its
/// requests and can be made to hang.
struct Issuer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    requests: Arc<AtomicUsize>,
    hanging: Arc<AtomicBool>,
}

impl Issuer {
    async fn start(keys: Vec<Value>) -> Self {
        let keys = Arc::new(Mutex::new(keys));
        let requests = Arc::new(AtomicUsize::new(0));
        let hanging = Arc::new(AtomicBool::new(false));
        let (served, counted, hangs) = (keys.clone(), requests.clone(), hanging.clone());
        let app = axum::Router::new().route(
            "/keys",
            get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let (served, hangs) = (served.clone(), hangs.clone());
                async move {
                    if hangs.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    Json(json!({"keys": *served.lock().unwrap()}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/keys", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            keys,
            requests,
            hanging,
        }
    }

    fn publish(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn oidc_app(issuer: &Issuer, extra: &[(&'static str, &str)]) -> TestApp {
    let mut env = vec![
        ("SWITCHYARD_AUTH", "oidc,api_key".to_owned()),
        ("SWITCHYARD_OIDC_ISSUER", ISSUER.to_owned()),
        ("SWITCHYARD_OIDC_AUDIENCE", AUDIENCE.to_owned()),
        ("SWITCHYARD_OIDC_JWKS_URL", issuer.url.clone()),
        ("SWITCHYARD_OIDC_LEEWAY_SECS", "30".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    TestApp::spawn_with(Options {
        env,
        ..Options::default()
    })
    .await
}

/// `GET /v1/me` with a bearer token: status and body.
async fn me(app: &TestApp, token: &str) -> (u16, Value) {
    app.call(app.client_with_token(token).get(app.url("/v1/me")))
        .await
}

fn assert_unauthorized((status, body): (u16, Value), mentions: &str) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "{message:?} should mention {mentions:?}"
    );
}

#[tokio::test]
async fn api_keys_identify_their_user_until_revoked() {
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Options::default()
    })
    .await;
    let key = app.api_key("alice", false).await;
    assert!(key.starts_with("sy_") && key.len() > 60, "{key}");

    let (status, body) = me(&app, &key).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "alice");
    assert_eq!(body["auth_method"], "api_key");
    assert_eq!(body["roles"], json!([]));

    // The key works for real requests, and only a hash of it is stored.
    let alice = app.client_with_token(&key);
    let (status, thread) = app
        .call(alice.post(app.url("/v1/threads")).json(&json!({})))
        .await;
    assert_eq!(status, 201, "{thread}");
    let (hashed, prefix): (bool, String) =
        sqlx::query_as("select hash = sha256(convert_to($1, 'UTF8')), prefix from api_keys")
            .bind(&key)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(hashed, "the stored form is the key's SHA-256");
    assert!(key.starts_with(&prefix) && prefix.len() < 16, "{prefix}");

    // An administrator's key carries the role; a user's does not.
    let (status, _) = app
        .call(alice.delete(app.url("/v1/agents/assistant")))
        .await;
    assert_eq!(status, 403);
    let admin_key = app.api_key("root", true).await;
    let (_, body) = me(&app, &admin_key).await;
    assert_eq!(body["roles"], json!(["admin"]));

    // Wrong, malformed and missing credentials.
    assert_unauthorized(me(&app, "sy_0000").await, "unknown or revoked");
    assert_unauthorized(
        app.call(
            app.client_with_headers(&[("authorization", "Basic YWxpY2U6c2VjcmV0")])
                .get(app.url("/v1/me")),
        )
        .await,
        "Bearer",
    );
    let response = app.http.get(app.url("/v1/me")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    // Revocation holds at once.
    let id: uuid::Uuid = sqlx::query_scalar(
        "select k.id from api_keys k join users u on u.id = k.user_id where u.name = 'alice'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        switchyard_common::db::api_keys::revoke(&app.pool, id)
            .await
            .unwrap()
    );
    assert_unauthorized(me(&app, &key).await, "unknown or revoked");
    // Service routes need no credentials.
    assert_eq!(app.get("/health").await.0, 200);
    assert_eq!(app.get("/openapi.json").await.0, 200);
}

#[tokio::test]
async fn oidc_tokens_are_checked_for_signature_issuer_audience_and_time() {
    let key = SigningKey::new("key-1");
    let issuer = Issuer::start(vec![key.jwk()]).await;
    let app = oidc_app(&issuer, &[]).await;

    let (status, body) = me(&app, &key.sign(&good_claims("u-1"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "User u-1");
    assert_eq!(body["auth_method"], "oidc");
    // The same subject is the same user on every request.
    let (_, again) = me(&app, &key.sign(&good_claims("u-1"))).await;
    assert_eq!(again["id"], body["id"]);

    let with = |changes: Value| {
        let mut claims = good_claims("u-1");
        for (k, v) in changes.as_object().unwrap() {
            claims[k] = v.clone();
        }
        key.sign(&claims)
    };
    assert_unauthorized(
        me(&app, &with(json!({"exp": now() - 120}))).await,
        "expired",
    );
    assert_unauthorized(
        me(&app, &with(json!({"nbf": now() + 120}))).await,
        "not valid yet",
    );
    assert_unauthorized(
        me(&app, &with(json!({"aud": "another-api"}))).await,
        "audience",
    );
    assert_unauthorized(
        me(&app, &with(json!({"iss": "https://evil.test/"}))).await,
        "issuer",
    );
    // Within the allowed clock skew a token is still good.
    assert_eq!(me(&app, &with(json!({"exp": now() - 10}))).await.0, 200);

    // A signature made by another key that claims the published kid.
    let impostor = SigningKey::new("key-1");
    assert_unauthorized(
        me(&app, &impostor.sign(&good_claims("u-1"))).await,
        "signature",
    );
    // A tampered payload.
    let token = key.sign(&good_claims("u-1"));
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(&good_claims("admin")), parts[2]);
    assert_unauthorized(me(&app, &forged).await, "signature");
    // Malformed tokens.
    assert_unauthorized(me(&app, "not.a.jwt").await, "not a valid JWT");
    assert_unauthorized(me(&app, &format!("{}.e30.", parts[0])).await, "");

    // `alg: none`.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good_claims("u-1"))
    );
    assert_unauthorized(me(&app, &none).await, "not a valid JWT");
    // HMAC "signed" with the public key, the classic algorithm confusion.
    let header = b64(&json!({"alg": "HS256", "typ": "JWT", "kid": "key-1"}));
    let input = format!("{header}.{}", b64(&good_claims("u-1")));
    let secret = key.pair.public_key().as_ref().to_vec();
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
        input.as_bytes(),
    );
    let confused = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    assert_unauthorized(me(&app, &confused).await, "HS256");

    // Missing `sub`.
    let mut no_sub = good_claims("u-1");
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_unauthorized(me(&app, &key.sign(&no_sub)).await, "sub");
}

#[tokio::test]
async fn a_rotated_signing_key_is_fetched_on_first_sight() {
    let old = SigningKey::new("2026-a");
    let issuer = Issuer::start(vec![old.jwk()]).await;
    let app = oidc_app(&issuer, &[]).await;
    assert_eq!(me(&app, &old.sign(&good_claims("u-2"))).await.0, 200);

    // The issuer rotates: a token with the new key's kid makes the API
    // fetch the key set again.
    let new = SigningKey::new("2026-b");
    issuer.publish(vec![new.jwk()]);
    let (status, body) = me(&app, &new.sign(&good_claims("u-2"))).await;
    assert_eq!(status, 200, "{body}");
    // A kid the issuer never published stays refused.
    let stranger = SigningKey::new("2026-z");
    assert_unauthorized(
        me(&app, &stranger.sign(&good_claims("u-2"))).await,
        "unknown",
    );
}

#[tokio::test]
async fn a_hanging_issuer_is_asked_once_and_cached_keys_keep_serving() {
    let known = SigningKey::new("2026-a");
    let issuer = Issuer::start(vec![known.jwk()]).await;
    let app = Arc::new(oidc_app(&issuer, &[]).await);
    assert_eq!(issuer.requests(), 1, "the keys are fetched at start-up");

    // The issuer stops answering; six tokens signed with a key it has not
    // published (yet) wait for one fetch together …
    issuer.hanging.store(true, Ordering::SeqCst);
    let rotated = SigningKey::new("2026-b");
    let waiting: Vec<_> = (0..6)
        .map(|n| {
            let (app, token) = (app.clone(), rotated.sign(&good_claims(&format!("u-{n}"))));
            tokio::spawn(async move { me(&app, &token).await })
        })
        .collect();
    // … while tokens signed with a cached key are served meanwhile.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (status, body) = me(&app, &known.sign(&good_claims("u-known"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "the fetch is still under way"
    );
    for answer in futures::future::join_all(waiting).await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 503, "{body}");
    }
    assert_eq!(issuer.requests(), 2, "one fetch for all six");

    // Right after a failed fetch none is tried: an unknown key is refused
    // at once, a known one still served.
    let (status, body) = me(&app, &rotated.sign(&good_claims("u-7"))).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(me(&app, &known.sign(&good_claims("u-known"))).await.0, 200);
    assert_eq!(issuer.requests(), 2, "no fetch while backing off");
}

#[tokio::test]
async fn oidc_roles_make_administrators() {
    let key = SigningKey::new("k");
    let issuer = Issuer::start(vec![key.jwk()]).await;
    let app = oidc_app(&issuer, &[("SWITCHYARD_ADMIN_ROLE", "Switchyard.Admin")]).await;
    let mut claims = good_claims("boss");
    claims["roles"] = json!(["Switchyard.Admin", "reader"]);
    let admin = app.client_with_token(&key.sign(&claims));
    let (status, body) = app.call(admin.get(app.url("/v1/me"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["roles"], json!(["Switchyard.Admin", "reader"]));
    let agent =
        json!({"id": "helper", "name": "Helper", "provider": "scripted", "model": "scripted-1"});
    let (status, body) = app
        .call(admin.post(app.url("/v1/agents")).json(&agent))
        .await;
    assert_eq!(status, 201, "{body}");

    let user = app.client_with_token(&key.sign(&good_claims("pleb")));
    let (status, body) = app.call(user.delete(app.url("/v1/agents/helper"))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
}

fn principal(roles: &[&str]) -> String {
    let claims: Vec<Value> = roles
        .iter()
        .map(|r| json!({"typ": "roles", "val": r}))
        .collect();
    STANDARD.encode(json!({"auth_typ": "aad", "claims": claims}).to_string())
}

#[tokio::test]
async fn easy_auth_headers_are_trusted_only_when_enabled() {
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "easy_auth".into())],
        ..Options::default()
    })
    .await;
    let ada = app.client_with_headers(&[
        ("x-ms-client-principal-id", "9a1c"),
        ("x-ms-client-principal-name", "ada@example.com"),
        ("x-ms-client-principal", &principal(&["admin"])),
    ]);
    let (status, body) = app.call(ada.get(app.url("/v1/me"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "ada@example.com");
    assert_eq!(body["auth_method"], "easy_auth");
    assert_eq!(body["roles"], json!(["admin"]));

    // Broken headers are refused, not ignored.
    let broken = app.client_with_headers(&[
        ("x-ms-client-principal-id", "9a1c"),
        ("x-ms-client-principal", "%%% not base64"),
    ]);
    assert_unauthorized(app.call(broken.get(app.url("/v1/me"))).await, "base64");
    let nameless = app.client_with_headers(&[("x-ms-client-principal-name", "ada")]);
    assert_unauthorized(
        app.call(nameless.get(app.url("/v1/me"))).await,
        "PRINCIPAL-ID",
    );
    // No headers, no user.
    assert_unauthorized(app.get("/v1/me").await, "credentials are required");
}

#[tokio::test]
async fn spoofed_easy_auth_headers_log_no_one_in_while_disabled() {
    let spoofed: [(&'static str, String); 3] = [
        ("x-ms-client-principal-id", "ceo".into()),
        ("x-ms-client-principal-name", "ceo@example.com".into()),
        ("x-ms-client-principal", principal(&["admin"])),
    ];
    let headers: Vec<(&'static str, &str)> =
        spoofed.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // Only API keys: the headers are no credentials at all.
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Options::default()
    })
    .await;
    let client = app.client_with_headers(&headers);
    assert_unauthorized(
        app.call(client.get(app.url("/v1/me"))).await,
        "credentials are required",
    );

    // Development mode: the caller is `local`, whatever the headers say.
    let app = TestApp::spawn().await;
    let client = app.client_with_headers(&headers);
    let (status, body) = app.call(client.get(app.url("/v1/me"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "local");
    assert_eq!(body["auth_method"], "dev");
    assert_eq!(
        app.count("select count(*) from users where name like 'ceo%'")
            .await,
        0
    );
}

#[tokio::test]
async fn development_mode_alone_takes_any_token_as_the_development_user() {
    let app = TestApp::spawn().await;
    let tokens = ["unused", "sk-not-a-key", "a.b.c"];
    for token in tokens {
        let client = app.client_with_token(token);
        let (status, body) = app.call(client.get(app.url("/v1/me"))).await;
        assert_eq!(status, 200, "{token}: {body}");
        assert_eq!(body["name"], "local");
        assert_eq!(body["auth_method"], "dev");
    }
    let basic = app.client_with_headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
    let (status, body) = app.call(basic.get(app.url("/v1/me"))).await;
    assert_eq!((status, &body["name"]), (200, &json!("local")), "{body}");
    assert_eq!(
        app.count("select count(*) from users").await,
        1,
        "only the development user exists"
    );

    // Forced beside another authenticator, a token is checked again.
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("SWITCHYARD_AUTH", "dev,api_key".into()),
            ("SWITCHYARD_DEV_FORCE", "true".into()),
        ],
        ..Options::default()
    })
    .await;
    let client = app.client_with_token("unused");
    assert_unauthorized(
        app.call(client.get(app.url("/v1/me"))).await,
        "unknown or revoked",
    );
    let (status, body) = app.get("/v1/me").await;
    assert_eq!((status, &body["name"]), (200, &json!("local")), "{body}");
}
