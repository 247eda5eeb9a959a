//! Matching and validation, ported from envoyproxy/ratelimit's `test/config`
//! (`config_test.go`): the same configurations, written here again, and the same
//! expectations.

use std::path::Path;

use super::*;

/// The reference's `basic_config.yaml`, key for key.
const BASIC: &str = "
domain: test-domain
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit: {unit: second, requests_per_unit: 5}
      - key: subkey1
        value: subvalue1
        rate_limit: {unit: second, requests_per_unit: 10}
  - key: key2
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: key2
    value: value2
    rate_limit: {unit: minute, requests_per_unit: 30}
  - key: key2
    value: value3
  - key: key3
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: key4
    rate_limit: {name: key4_rate_limit, unit: day, requests_per_unit: 1}
  - key: key5
    value: value5
    rate_limit: {unit: day, requests_per_unit: 15}
    descriptors:
      - key: subkey5
        value: subvalue5
        rate_limit: {unit: day, requests_per_unit: 25}
  - key: key6
    rate_limit: {unlimited: true}
  - key: key7
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 70}
";

fn domain(text: &str) -> Domain {
    parse(Path::new("test.yaml"), text).expect("valid")
}

fn lookup<'a>(
    d: &'a Domain,
    entries: &[(&'a str, &'a str)],
) -> Option<(u32, Unit, String, Arc<str>)> {
    d.rule(entries.iter().copied())
        .map(|r| (r.requests_per_unit, r.unit, r.name.clone(), r.path.clone()))
}

#[test]
fn basic_config_matches_like_the_reference() {
    let d = domain(BASIC);
    assert!(d.atomic, "atomic by default");
    assert_eq!(lookup(&d, &[]), None);
    assert_eq!(lookup(&d, &[("key1", "something")]), None);
    assert_eq!(lookup(&d, &[("key1", "value1")]), None);
    assert_eq!(
        lookup(&d, &[("key2", "value2"), ("subkey", "subvalue")]),
        None
    );
    assert_eq!(
        lookup(&d, &[("key5", "value5"), ("subkey5", "subvalue")]),
        None
    );
    let l = |e: &[(&str, &str)]| {
        let (n, unit, name, path) = lookup(&d, e).expect("a limit");
        (n, unit, name, path.to_string())
    };
    assert_eq!(
        l(&[("key1", "value1"), ("subkey1", "something")]),
        (5, Unit::Second, String::new(), "key1_value1.subkey1".into())
    );
    assert_eq!(
        l(&[("key1", "value1"), ("subkey1", "subvalue1")]),
        (
            10,
            Unit::Second,
            String::new(),
            "key1_value1.subkey1_subvalue1".into()
        )
    );
    assert_eq!(
        l(&[("key2", "something")]),
        (20, Unit::Minute, String::new(), "key2".into())
    );
    assert_eq!(
        l(&[("key2", "value2")]),
        (30, Unit::Minute, String::new(), "key2_value2".into())
    );
    // A value listed without a limit white-lists it.
    assert_eq!(lookup(&d, &[("key2", "value3")]), None);
    assert_eq!(
        l(&[("key3", "foo")]),
        (1, Unit::Hour, String::new(), "key3".into())
    );
    assert_eq!(
        l(&[("key4", "foo")]),
        (1, Unit::Day, "key4_rate_limit".into(), "key4".into())
    );
    assert_eq!(l(&[("key5", "value5")]).0, 15);
    assert_eq!(l(&[("key5", "value5"), ("subkey5", "subvalue5")]).0, 25);
    let unlimited = d.rule([("key6", "foo")]).expect("a rule");
    assert!(unlimited.unlimited && unlimited.limit.is_none());
    let detailed = d.rule([("key7", "unspecified_value")]).expect("a rule");
    assert!(detailed.detailed_metric);
    assert_eq!(detailed.requests_per_unit, 70);
}

#[test]
fn wildcards_match_like_the_reference() {
    let d = domain(
        "
domain: test-domain
descriptors:
  - {key: wild, value: foo*, rate_limit: {unit: minute, requests_per_unit: 20}}
  - {key: noWild, value: foo, rate_limit: {unit: minute, requests_per_unit: 20}}
  - {key: noVal, rate_limit: {unit: minute, requests_per_unit: 20}}
  - {key: midWild, value: bar*b, rate_limit: {unit: minute, requests_per_unit: 20}}
  - {key: multiWild, value: foo*bar*baz, rate_limit: {unit: minute, requests_per_unit: 10}}
  - key: nestedWild
    value: val1
    descriptors:
      - {key: wild, value: goo*, rate_limit: {unit: minute, requests_per_unit: 20}}
",
    );
    let hit = |e: &[(&str, &str)]| lookup(&d, e).map(|x| x.3.to_string());
    assert_eq!(hit(&[("wild", "foo1")]).as_deref(), Some("wild_foo*"));
    assert_eq!(hit(&[("wild", "foo")]).as_deref(), Some("wild_foo*"));
    assert_eq!(hit(&[("wild", "bar")]), None);
    assert_eq!(hit(&[("noWild", "foo1")]), None);
    assert_eq!(hit(&[("noWild", "foo")]).as_deref(), Some("noWild_foo"));
    assert_eq!(hit(&[("noVal", "anything")]).as_deref(), Some("noVal"));
    assert_eq!(
        hit(&[("midWild", "barab")]).as_deref(),
        Some("midWild_bar*b")
    );
    assert_eq!(
        hit(&[("midWild", "barb")]).as_deref(),
        Some("midWild_bar*b")
    );
    assert_eq!(hit(&[("midWild", "barba")]), None);
    assert_eq!(
        hit(&[("multiWild", "foo1bar2baz")]).as_deref(),
        Some("multiWild_foo*bar*baz")
    );
    assert_eq!(
        hit(&[("multiWild", "foobarbaz")]).as_deref(),
        Some("multiWild_foo*bar*baz")
    );
    assert_eq!(hit(&[("multiWild", "foobazbar")]), None);
    assert_eq!(
        hit(&[("nestedWild", "val1"), ("wild", "goo2")]).as_deref(),
        Some("nestedWild_val1.wild_goo*")
    );
    assert_eq!(hit(&[("nestedWild", "val1"), ("wild", "foo")]), None);
}

fn error(text: &str) -> ConfigError {
    parse(Path::new("rules.yaml"), text).expect_err("invalid")
}

#[test]
fn invalid_files_name_file_line_field_and_reason() {
    // (file text, expected line, words the reason must contain), as the reference's
    // expectConfigPanic cases. A mapping's error points at the line it starts on.
    let cases: &[(&str, &str, &[&str])] = &[
        ("descriptors: []\n", "line 1", &["empty domain"]),
        (
            "domain: d\ndescriptors:\n  - value: value1\n",
            "line 3",
            &["descriptors", "empty key"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: key1\n    value: value1\n\n  - key: key1\n    value: value1\n",
            "line 1",
            &["descriptors[1]", "duplicate descriptor composite key", "key1_value1"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: key1\n    value: value1\n    rate_limit:\n      unit: foo\n      requests_per_unit: 5\n",
            "line 3",
            &["descriptors[0]: rate_limit.unit", "invalid rate limit unit \"foo\""],
        ),
        (
            "domain: d\ndescriptors:\n  - key: key1\n    descriptors:\n      - key: subkey1\n        rate_limit:\n          name: self\n          replaces:\n            - name: self\n          unit: second\n          requests_per_unit: 5\n",
            "line 5",
            &["descriptors[0].descriptors[0]: rate_limit.replaces", "should not contain the name"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: key1\n    rate_limit:\n      name: a\n      replaces:\n        - name: \"\"\n      unit: second\n      requests_per_unit: 5\n",
            "line 3",
            &["rate_limit.replaces", "empty replaces entry"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: key1\n    value: value1\n    ratelimit:\n      unit: day\n      requests_per_unit: 5\n",
            "line 5",
            &["descriptors[0]", "unknown field `ratelimit`"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: foo\n    rate_limit:\n      unlimited: true\n      unit: day\n      requests_per_unit: 25\n",
            "line 3",
            &["descriptors[0]: rate_limit.unit", "should not specify rate limit unit when unlimited"],
        ),
        (
            "0.25: test-domain\ndescriptors: []\n",
            "line 1",
            &["unknown field `0.25`"],
        ),
        (
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 5, algorithm: leaky}\n",
            "line 3",
            &["rate_limit.algorithm", "leaky"],
        ),
        ("domain: d\ndescriptors: [\n", "line 3", &["did not find expected node content"]),
    ];
    for (text, line, words) in cases {
        let e = error(text);
        assert_eq!(e.origin, "rules.yaml", "{text}");
        assert_eq!(e.field, *line, "{text}: {e}");
        for w in *words {
            assert!(e.reason.contains(w), "{text}: {e:?} lacks {w:?}");
        }
    }
}

#[test]
fn the_reference_keys_tollgate_ignores_still_load() {
    let d = domain(
        "
domain: d
atomic: false
descriptors:
  - key: k
    quota_mode: true
    value_to_metric: true
    share_threshold: true
    metadata: {owner: team-a, tags: [x, y]}
    rate_limit: {unit: SECOND, requests_per_unit: 5, algorithm: gcra}
  - key: n
    value: 5
    rate_limit: {unit: week, requests_per_unit: 0}
",
    );
    assert!(!d.atomic);
    let rule = d.rule([("k", "v")]).expect("rule");
    assert_eq!(rule.algorithm, Algorithm::Gcra);
    assert_eq!(rule.unit, Unit::Second);
    let zero = d.rule([("n", "5")]).expect("a numeric value is text");
    assert!(zero.limit.is_none() && !zero.unlimited);
}
