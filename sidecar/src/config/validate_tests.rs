use super::*;
use crate::config::FileConfig;

fn parse(text: &str) -> Result<Config, ConfigError> {
    FileConfig::from_toml("t.toml", text)?.validate("t.toml")
}

const BASE: &str = "[upstreams.app]\nendpoints = [\"http://127.0.0.1:3000\"]\n";

fn field_of(text: &str) -> String {
    parse(text).expect_err("invalid").field
}

#[test]
fn a_full_file_validates_with_defaults() {
    let config = parse(&format!(
        r#"
listen = "127.0.0.1:8000"
node_id = "n1"
[redis]
url = "redis://:pw@redis:6379/0"
[limiter]
failure_mode = "local"
trusted_proxies = ["10.0.0.0/8"]
{BASE}
[upstreams.grpc]
endpoints = ["http://127.0.0.1:50051", "http://127.0.0.2:50051"]
protocol = "h2c"
[[routes]]
path_prefix = "/grpc"
upstream = "grpc"
[[routes]]
upstream = "app"
[[policies]]
name = "api"
path_prefix = "/api"
methods = ["post", "GET"]
missing_key = "fallback:anon"
cost_header = "x-cost"
[[policies.limits]]
name = "per-second"
rate = "10/s,burst=20"
key = "xff"
[[policies.limits]]
name = "per-day"
rate = "1000/d"
algorithm = "sliding-window"
key = "header:x-api-key+path"
"#
    ))
    .expect("valid");
    assert_eq!(config.node_id, "n1");
    assert_eq!(config.admin_listen.to_string(), "0.0.0.0:9000");
    assert_eq!(config.upstreams.len(), 2);
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.policies[0].limits().len(), 2);
    assert_eq!(config.policies[0].limits()[0].spec().burst(), 20);
    assert!(matches!(config.store, StoreConfig::Redis { .. }));
    assert_eq!(
        config.effective.redis.as_ref().map(|r| r.url.as_str()),
        Some("redis://:***@redis:6379/0")
    );
}

#[test]
fn workers_default_to_the_usable_cores_and_show_in_the_effective_config() {
    let cores = match std::env::var("TOKIO_WORKER_THREADS") {
        // tokio's variable, when the environment running the tests sets it.
        Ok(_) => default_workers(),
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let config = parse(BASE).expect("valid");
    assert_eq!(config.workers, cores);
    assert_eq!(config.effective.workers, Some(cores));
    let config = parse(&format!("workers = 3\n{BASE}")).expect("valid");
    assert_eq!((config.workers, config.effective.workers), (3, Some(3)));
    for bad in ["workers = 0\n", "workers = 1025\n"] {
        let error = parse(&format!("{bad}{BASE}")).expect_err("refused");
        assert_eq!(error.field, "workers", "{bad}");
        assert!(error.reason.contains("between 1 and 1024"), "{error}");
    }
}

#[test]
fn every_bad_field_is_named() {
    let cases = [
        ("listen = \"nope\"\n", "listen"),
        ("", "upstreams"),
        ("[upstreams.app]\nendpoints = []\n", "upstreams.app.endpoints"),
        ("[upstreams.app]\nendpoints = [\"https://x\"]\n", "upstreams.app.endpoints[0]"),
        ("[upstreams.app]\nendpoints = [\"http://x/path\"]\n", "upstreams.app.endpoints[0]"),
        ("[upstreams.app]\nendpoints = [\"http://x\"]\nprotocol = \"h3\"\n", "upstreams.app.protocol"),
        ("[redis]\nurl = \"localhost\"\n", "redis.url"),
        ("[limiter]\nfailure_mode = \"maybe\"\n", "limiter.failure_mode"),
        ("[limiter]\ntimeout_ms = 0\n", "limiter.timeout_ms"),
        ("[redis]\nurl = \"redis://r:6379\"\nbatch_max = 0\n", "redis.batch_max"),
        ("[redis]\nurl = \"redis://r:6379\"\nbatch_max = 1025\n", "redis.batch_max"),
        ("[proxy]\nhost = \"other\"\n", "proxy.host"),
        ("[proxy]\nmax_concurrent_requests = 0\n", "proxy.max_concurrent_requests"),
        ("[[routes]]\nupstream = \"nope\"\n", "routes[0].upstream"),
        ("[[routes]]\nupstream = \"app\"\nmethods = [\"G E T\"]\n", "routes[0].methods"),
        ("[[policies]]\nname = \"p\"\n", "policies[0].limits"),
        ("[[policies]]\nname = \"p\"\n[[policies.limits]]\nname = \"l\"\nrate = \"x\"\nkey = \"ip\"\n", "policies[0].limits[0].rate"),
        ("[[policies]]\nname = \"p\"\n[[policies.limits]]\nname = \"l\"\nrate = \"1/s\"\nkey = \"cookie\"\n", "policies[0].limits[0].key"),
        ("[[policies]]\nname = \"p\"\n[[policies.limits]]\nname = \"l\"\nrate = \"1/s\"\nalgorithm = \"leaky\"\nkey = \"ip\"\n", "policies[0].limits[0].algorithm"),
        ("[[policies]]\nname = \"p\"\n[[policies.limits]]\nname = \"l\"\nrate = \"1/s,burst=2\"\nalgorithm = \"fixed-window\"\nkey = \"ip\"\n", "policies[0].limits[0].rate"),
        ("[[policies]]\nname = \"p\"\nmissing_key = \"fallback:\"\n[[policies.limits]]\nname = \"l\"\nrate = \"1/s\"\nkey = \"ip\"\n", "policies[0].missing_key"),
        ("[[policies]]\nname = \"p\"\npath_prefix = \"/a\"\npath_pattern = \"/b\"\n[[policies.limits]]\nname = \"l\"\nrate = \"1/s\"\nkey = \"ip\"\n", "policies[0].path_pattern"),
        ("[[policies]]\nname = \"bad name\"\n[[policies.limits]]\nname = \"l\"\nrate = \"1/s\"\nkey = \"ip\"\n", "policies"),
    ];
    for (extra, field) in cases {
        let text = if extra.starts_with("[upstreams") || extra.is_empty() {
            extra.to_owned()
        } else {
            format!("{extra}{BASE}")
        };
        assert_eq!(field_of(&text), field, "{text}");
    }
}

#[test]
fn syntax_errors_give_a_line() {
    let err = parse("listen = \n").expect_err("invalid");
    assert_eq!(err.origin, "t.toml");
    assert!(err.field.starts_with("line"), "{err}");
    let err = parse("bogus = 1\n").expect_err("invalid");
    assert!(err.reason.contains("unknown field"), "{err}");
}

#[test]
fn several_upstreams_need_routes() {
    let text = format!("{BASE}[upstreams.b]\nendpoints = [\"http://127.0.0.1:1\"]\n");
    assert_eq!(field_of(&text), "routes");
}

#[test]
fn redis_cluster_and_sentinel_validate() {
    let config = parse(&format!(
        "[redis]\ncluster = [\"redis://:pw@h1:7000\", \"redis://h2:7000\"]\n{BASE}"
    ))
    .expect("valid");
    assert!(matches!(
        &config.store,
        StoreConfig::Redis { topology: RedisTopology::Cluster(nodes), .. } if nodes.len() == 2
    ));
    let shown = config.effective.redis.as_ref().expect("redis");
    assert_eq!(
        shown.cluster[0], "redis://:***@h1:7000",
        "passwords redacted"
    );

    let config = parse(&format!(
        "[redis]\nsentinels = [\"redis://s1:26379\"]\nmaster = \"mymaster\"\n{BASE}"
    ))
    .expect("valid");
    assert!(matches!(
        &config.store,
        StoreConfig::Redis { topology: RedisTopology::Sentinel { master, .. }, .. } if master == "mymaster"
    ));
}

#[test]
fn exactly_one_redis_topology() {
    let cases = [
        ("[redis]\nprefix = \"p\"\n", "redis"),
        ("[redis]\nurl = \"redis://a\"\ncluster = [\"redis://b:7000\"]\n", "redis"),
        ("[redis]\ncluster = [\"redis://b:7000\"]\nsentinels = [\"redis://s:26379\"]\nmaster = \"m\"\n", "redis"),
        ("[redis]\nsentinels = [\"redis://s:26379\"]\n", "redis.master"),
        ("[redis]\nurl = \"redis://a\"\nmaster = \"m\"\n", "redis.master"),
        ("[redis]\ncluster = [\"h1:7000\"]\n", "redis.cluster"),
        ("[redis]\nsentinels = [\"s:26379\"]\nmaster = \"m\"\n", "redis.sentinels"),
        ("[redis]\ncluster = [\"redis://h1:7000\"]\nprefix = \"{t}\"\n", "redis.prefix"),
    ];
    for (extra, field) in cases {
        assert_eq!(field_of(&format!("{extra}{BASE}")), field, "{extra}");
    }
    let err = parse(&format!(
        "[redis]\nurl = \"redis://a\"\ncluster = [\"redis://b:7000\"]\n{BASE}"
    ))
    .expect_err("invalid");
    assert!(err.reason.contains("redis.url and redis.cluster"), "{err}");
}

#[test]
fn the_rate_limit_service_makes_the_upstream_optional() {
    let dir = std::env::temp_dir().join(format!("tollgate-validate-rls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let yaml = dir.join("r.yaml");
    std::fs::write(&yaml, "domain: d\ndescriptors: []\n").expect("write");
    let rls = format!(
        "[rls]\nlisten = \"127.0.0.1:8081\"\nconfig = \"{}\"\n",
        yaml.display()
    );

    // No upstream, the service on: only the service (and admin) serve.
    let config = parse(&rls).expect("valid");
    assert!(!config.proxy_enabled);
    assert!(config.upstreams.is_empty() && config.routes.is_empty());
    let settings = config.rls.expect("rls");
    assert_eq!(settings.rules.domain_names(), ["d"]);
    // With an upstream, both.
    assert!(parse(&format!("{BASE}{rls}")).expect("valid").proxy_enabled);
    // Neither: the upstream is required, as before.
    assert_eq!(field_of(""), "upstreams");
    // Half of the pair, or a clash with another port.
    assert_eq!(
        field_of("[rls]\nlisten = \"127.0.0.1:8081\"\n"),
        "rls.config"
    );
    assert_eq!(field_of("[rls]\nconfig = \"x.yaml\"\n"), "rls.listen");
    let clash = rls.replace("127.0.0.1:8081", "127.0.0.1:9000");
    assert_eq!(
        field_of(&format!("admin_listen = \"127.0.0.1:9000\"\n{clash}")),
        "rls.listen"
    );
    // The YAML's own errors name the YAML file, and the line its descriptor starts on.
    std::fs::write(
        &yaml,
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: eon}\n",
    )
    .expect("write");
    let e = parse(&rls).expect_err("bad yaml");
    assert_eq!(
        (e.origin.as_str(), e.field.as_str()),
        (yaml.to_str().expect("utf-8"), "line 3")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch directory with a password file and a CA certificate, removed on drop.
struct Files(std::path::PathBuf);

impl Files {
    fn new(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("password"), "from-file\n").expect("write");
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).expect("cert");
        std::fs::write(dir.join("ca.pem"), ca.cert.pem()).expect("write");
        Files(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("utf-8").to_owned()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn redis_files_apply_to_a_cluster_and_to_sentinels() {
    let files = Files::new("topology-files");
    let (password, ca) = (files.path("password"), files.path("ca.pem"));
    for topology in [
        "cluster = [\"rediss://u@h1:7000\", \"rediss://h2:7000\"]".to_string(),
        // The sentinels' own password stays in their URL; the file is the primary's.
        "sentinels = [\"redis://:sentinel-pw@s:26379\"]\nmaster = \"m\"".to_string(),
        "sentinels = [\"rediss://s:26379\"]\nmaster = \"m\"".to_string(),
    ] {
        let config = parse(&format!(
            "[redis]\n{topology}\npassword_file = {password:?}\nca_file = {ca:?}\n{BASE}"
        ))
        .unwrap_or_else(|e| panic!("{topology}: {e}"));
        let StoreConfig::Redis { security, .. } = &config.store else {
            panic!("a Redis store");
        };
        assert_eq!(
            security.password.as_ref().map(|p| p.expose()),
            Some("from-file"),
            "{topology}"
        );
        assert!(security.ca.is_some(), "{topology}");
    }
}

#[test]
fn redis_files_that_do_not_fit_a_cluster_are_refused_naming_the_field() {
    let files = Files::new("topology-refused");
    let (password, ca) = (files.path("password"), files.path("ca.pem"));
    for (topology, file, field, reason) in [
        (
            "cluster = [\"redis://h1:7000\", \"redis://:in-url@h2:7000\"]",
            format!("password_file = {password:?}"),
            "redis.password_file",
            "both in redis.cluster and in redis.password_file",
        ),
        (
            "cluster = [\"rediss://h1:7000\", \"redis://h2:7000\"]",
            format!("ca_file = {ca:?}"),
            "redis.ca_file",
            "not every redis.cluster URL",
        ),
        (
            "cluster = [\"rediss://h1:7000\"]",
            format!("client_cert = {ca:?}"),
            "redis.client_cert",
            "needs redis.client_key",
        ),
        (
            "sentinels = [\"redis://s:26379\"]\nmaster = \"m\"",
            "password_file = \"/nonexistent/tollgate/p\"".to_string(),
            "redis.password_file",
            "cannot read",
        ),
    ] {
        let err = parse(&format!("[redis]\n{topology}\n{file}\n{BASE}")).expect_err("refused");
        assert_eq!(err.field, field, "{topology} {file}");
        assert!(err.reason.contains(reason), "{err}");
        assert!(!err.to_string().contains("in-url"), "{err}");
    }
}

#[test]
fn consistency_and_lease_settings_validate_and_show_in_effect() {
    use tollgate::policy::Consistency;
    let limits = "[[policies]]\nname = \"p\"\n\
        [[policies.limits]]\nname = \"a\"\nrate = \"10/s\"\nkey = \"ip\"\nconsistency = \"leased\"\n\
        [[policies.limits]]\nname = \"b\"\nrate = \"10/m\"\nkey = \"ip\"\n";
    let config = parse(&format!(
        "{BASE}[lease]\ntarget_ms = 40\nmax_fraction = 0.25\n{limits}"
    ))
    .expect("valid");
    let l = config.policies[0].limits();
    assert_eq!(l[0].consistency(), Consistency::Leased);
    assert_eq!(l[1].consistency(), Consistency::Exact);
    assert_eq!(config.lease.target, Duration::from_millis(40));
    assert_eq!(config.lease.max_fraction, 0.25);
    // Absent: the library's default, written out in the effective view.
    assert_eq!(config.lease.max_age, Duration::from_millis(250));
    let shown = &config.effective;
    assert_eq!(shown.lease.max_age_ms, Some(250));
    assert_eq!(shown.lease.max_fraction, Some(0.25));
    let shown: Vec<_> = shown.policies[0]
        .limits
        .iter()
        .map(|l| l.consistency.as_deref())
        .collect();
    assert_eq!(shown, [Some("leased"), Some("exact")]);

    let bad = |extra: &str| field_of(&format!("{BASE}{extra}{limits}"));
    assert_eq!(bad("[lease]\nmax_fraction = 0.0\n"), "lease.max_fraction");
    assert_eq!(bad("[lease]\nmax_fraction = 1.5\n"), "lease.max_fraction");
    assert_eq!(bad("[lease]\nmax_fraction = nan\n"), "lease.max_fraction");
    assert_eq!(bad("[lease]\ntarget_ms = 0\n"), "lease.target_ms");
    assert_eq!(bad("[lease]\nmax_age_ms = 0\n"), "lease.max_age_ms");
    assert_eq!(bad("[lease]\nmax_age_ms = 3600001\n"), "lease.max_age_ms");
    let wrong = format!(
        "{BASE}[[policies]]\nname = \"p\"\n[[policies.limits]]\nname = \"a\"\n\
         rate = \"10/s\"\nkey = \"ip\"\nconsistency = \"eventual\"\n"
    );
    let err = parse(&wrong).expect_err("invalid");
    assert_eq!(err.field, "policies[0].limits[0].consistency");
    assert!(err.reason.contains("exact or leased"), "{}", err.reason);
}

#[test]
fn redis_batch_max_defaults_to_the_librarys_and_shows_in_effect() {
    let batch_max = |config: &Config| match &config.store {
        StoreConfig::Redis { batch_max, .. } => *batch_max,
        other => panic!("a Redis store, got {other:?}"),
    };
    let default = parse(&format!("[redis]\nurl = \"redis://r:6379\"\n{BASE}")).expect("valid");
    assert_eq!(batch_max(&default), 64);
    assert_eq!(
        default.effective.redis.as_ref().and_then(|r| r.batch_max),
        Some(64)
    );
    let alone = parse(&format!(
        "[redis]\nurl = \"redis://r:6379\"\nbatch_max = 1\n{BASE}"
    ))
    .expect("valid");
    assert_eq!(batch_max(&alone), 1);
}
