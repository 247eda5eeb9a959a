use super::*;

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(path);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).expect("valid").into_parts().0
}

fn spec() -> LimitSpec {
    "10/s".parse().expect("valid")
}

#[test]
fn prefix_matches_at_segment_boundaries() {
    let p = Policy::new("api").path_prefix("/api");
    assert!(p.matches(&req("GET", "/api", &[])));
    assert!(p.matches(&req("GET", "/api/users", &[])));
    assert!(!p.matches(&req("GET", "/apix", &[])));
    assert!(!p.matches(&req("GET", "/", &[])));
    let slash = Policy::new("s").path_prefix("/static/");
    assert!(slash.matches(&req("GET", "/static/a.css", &[])));
}

#[test]
fn patterns_and_methods() {
    let p = Policy::new("orders")
        .methods([Method::POST])
        .path_pattern("/users/*/orders")
        .expect("valid glob");
    assert!(p.matches(&req("POST", "/users/7/orders", &[])));
    assert!(!p.matches(&req("GET", "/users/7/orders", &[])));
    assert!(!p.matches(&req("POST", "/users/7/x/orders", &[])));
    assert!(Policy::new("bad").path_pattern("/a/[").is_err());
}

#[test]
fn header_cost_is_bounded_and_validated() {
    let cost = Cost::header("x-cost", 1, 10);
    assert_eq!(cost.of(&req("GET", "/", &[])), Ok(1));
    assert_eq!(cost.of(&req("GET", "/", &[("x-cost", " 7 ")])), Ok(7));
    assert!(cost.of(&req("GET", "/", &[("x-cost", "11")])).is_err());
    assert!(cost.of(&req("GET", "/", &[("x-cost", "-1")])).is_err());
    assert!(cost.of(&req("GET", "/", &[("x-cost", "1e3")])).is_err());
}

#[test]
fn validation_names_the_problem() {
    let ok = Policy::single("per-ip", spec(), Key::peer_ip());
    assert_eq!(ok.validate(), Ok(()));
    let empty = Policy::new("p");
    assert_eq!(
        empty.validate().unwrap_err().reason,
        PolicyProblem::NoLimits
    );
    let bad = Policy::single("bad name", spec(), Key::global());
    assert!(bad.validate().unwrap_err().to_string().contains("' '"));
    let twice = Policy::new("p")
        .limit(Limit::new("a", spec(), Key::global()))
        .limit(Limit::new("a", spec(), Key::global()));
    assert_eq!(
        twice.validate().unwrap_err().reason,
        PolicyProblem::DuplicateLimit("a".into())
    );
    let quote = Policy::single("a\"b", spec(), Key::global());
    assert!(quote.validate().is_err());
}
