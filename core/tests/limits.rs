#![allow(clippy::disallowed_methods)] // tests read the real clock to seed a simulated one
//! Per-identity budgets (policy `limits:`) through the core under the
//! simulated clock: 429 with Retry-After before any store work, other
//! identities untouched, the admin and unauthenticated routes exempt,
//! `concurrent` while the store is slow, a bounded table, reloads that keep
//! unchanged budgets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use kes_core::config::{AdminSetting, ApiOverride, Config, Limit, PolicyConfig};
use kes_core::testing::{Harness, SeededRng};
use kes_core::{Caller, Identity, Now, Request, RequestId, Response, Server, UnixTime};

fn id(name: &str) -> Identity {
    Identity::from_spki_der(name.as_bytes())
}

fn limit(rate: Option<u32>, burst: u32, concurrent: Option<u32>) -> Option<Limit> {
    Some(Limit { rate, burst, concurrent })
}

/// Policies `a` (10/s, burst 10), `b` (none named: the default, 1000/s)
/// and `c` (2 in flight); admin `admin`.
fn config() -> Config {
    let mut c = Config::empty();
    c.admin = AdminSetting::Identity(id("admin"));
    let allow = vec!["/v1/key/*/*".to_owned(), "/v1/identity/self/describe".to_owned()];
    let policy = |who: &str, limits| PolicyConfig {
        allow: allow.clone(),
        deny: vec![],
        identities: vec![id(who)],
        limits,
    };
    c.policies = BTreeMap::from([
        ("a".to_owned(), policy("app-a", limit(Some(10), 10, None))),
        ("b".to_owned(), policy("app-b", None)),
        ("c".to_owned(), policy("app-c", limit(None, 0, Some(2)))),
    ]);
    c.limits = limit(Some(1000), 1000, None);
    c
}

fn now() -> Now {
    Now { instant: Instant::now(), unix: UnixTime::from_parts(1_700_000_000, 0) }
}

fn call(h: &mut Harness, who: &str, method: Method, path: &str) -> Response {
    h.request(Caller::Identified(id(who)), Request::new(method, path))
}

fn generate(h: &mut Harness, who: &str) -> Response {
    h.request(
        Caller::Identified(id(who)),
        Request::new(Method::PUT, "/v1/key/generate/k").with_body(r#"{"context":""}"#),
    )
}

#[test]
fn over_its_rate_an_identity_gets_429_the_others_do_not() {
    let mut h = Harness::new(config(), now(), 1);
    assert_eq!(call(&mut h, "admin", Method::PUT, "/v1/key/create/k").status, StatusCode::OK);
    let executed = h.store.executed;
    for _ in 0..10 {
        assert_eq!(generate(&mut h, "app-a").status, StatusCode::OK);
    }
    let r = generate(&mut h, "app-a");
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("Retry-After"), Some("1"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body["message"],
        "too many requests: policy 'a' allows 10 requests per second (burst 10)"
    );
    // Another policy (under the default limit) and the admin go on.
    for who in ["app-b", "admin"] {
        for _ in 0..50 {
            assert_eq!(generate(&mut h, who).status, StatusCode::OK, "{who}");
        }
    }
    // One tenth of a second later, one more token.
    h.advance(Duration::from_millis(100));
    assert_eq!(generate(&mut h, "app-a").status, StatusCode::OK);
    assert_eq!(generate(&mut h, "app-a").status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        h.store.executed,
        executed + 1,
        "the key was read once, refusals cost no store call"
    );
    let audited_429 =
        h.events.iter().filter(|e| matches!(e, kes_core::Event::Audit(a) if a.code == 429)).count();
    assert_eq!(audited_429, 2, "refusals are audited");
    let m = h.server.metrics().render(0, Duration::ZERO, &Default::default());
    assert!(m.contains("kes_http_request_throttled{policy=\"a\"} 2\n"), "{m}");
}

#[test]
fn the_admin_is_limited_only_with_admin_limits() {
    let mut c = config();
    c.admin_limits = limit(Some(1), 2, None);
    let mut h = Harness::new(c, now(), 2);
    for _ in 0..2 {
        assert_eq!(call(&mut h, "admin", Method::GET, "/v1/key/list/*").status, StatusCode::OK);
    }
    let r = call(&mut h, "admin", Method::GET, "/v1/key/list/*");
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(String::from_utf8_lossy(&r.body).contains("policy '(admin)'"));
}

#[test]
fn unauthenticated_routes_and_skip_auth_are_not_limited() {
    let mut c = config();
    c.limits = limit(Some(1), 1, None);
    c.api.insert("/v1/metrics".into(), ApiOverride { skip_auth: true, timeout: None });
    let mut h = Harness::new(c, now(), 3);
    for _ in 0..20 {
        assert_eq!(call(&mut h, "app-b", Method::GET, "/version").status, StatusCode::OK);
        let r =
            h.request(Caller::Identified(id("app-b")), Request::new(Method::GET, "/v1/metrics"));
        assert_eq!(r.status, StatusCode::OK);
    }
}

/// `concurrent` counts requests waiting on the store: the third request of
/// an identity allowed two is refused while the store has not answered.
#[test]
fn concurrent_holds_while_the_store_is_slow() {
    let mut rng = SeededRng(4);
    let t = now();
    let mut s = Server::new(config(), t, &mut rng);
    let mut send = |s: &mut Server, n: u64, who: &str| {
        let req = Request::new(Method::PUT, "/v1/key/generate/slow").with_body(r#"{"context":""}"#);
        s.handle_request(RequestId(n), Caller::Identified(id(who)), req, t, &mut rng);
    };
    send(&mut s, 1, "app-c");
    send(&mut s, 2, "app-c");
    send(&mut s, 3, "app-c");
    let mut answered = Vec::new();
    while let Some((rid, r)) = s.poll_response() {
        answered.push((rid, r.status));
    }
    assert_eq!(answered, vec![(RequestId(3), StatusCode::TOO_MANY_REQUESTS)]);
    // Another identity is not held up by app-c's slots.
    send(&mut s, 4, "app-b");
    assert!(s.poll_response().is_none(), "app-b waits for the store like app-c");
    // The store answers (not found): the slots are free again.
    let mut rng2 = SeededRng(5);
    while let Some((cid, _)) = s.poll_command() {
        s.handle_store_result(cid, Err(kes_core::StoreError::NotFound), t, &mut rng2);
    }
    while s.poll_response().is_some() {}
    send(&mut s, 5, "app-c");
    send(&mut s, 6, "app-c");
    assert!(s.poll_response().is_none(), "two in flight again, none refused");
}

#[test]
fn unknown_identities_cannot_grow_the_table() {
    let mut h = Harness::new(config(), now(), 6);
    for i in 0..5000 {
        let r = generate(&mut h, &format!("stranger-{i}"));
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    generate(&mut h, "app-a");
    generate(&mut h, "app-b");
    assert_eq!(h.server.budgets_held(), 2);
    // Idle budgets are dropped once their buckets are full again.
    h.advance(Duration::from_secs(130));
    assert_eq!(h.server.budgets_held(), 0);
}

#[test]
fn a_reload_keeps_unchanged_budgets_and_resets_changed_ones() {
    let mut h = Harness::new(config(), now(), 7);
    call(&mut h, "admin", Method::PUT, "/v1/key/create/k");
    for _ in 0..10 {
        generate(&mut h, "app-a");
    }
    assert_eq!(generate(&mut h, "app-a").status, StatusCode::TOO_MANY_REQUESTS);
    h.server.reload(config(), h.now);
    assert_eq!(
        generate(&mut h, "app-a").status,
        StatusCode::TOO_MANY_REQUESTS,
        "same limit: the spent budget stays spent"
    );
    let mut c = config();
    c.policies.get_mut("a").unwrap().limits = limit(Some(20), 20, None);
    h.server.reload(c, h.now);
    assert_eq!(generate(&mut h, "app-a").status, StatusCode::OK, "a new limit starts full");
}
