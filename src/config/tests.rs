//! Unit tests of the configuration: defaults, overrides, validation and its messages.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn embedded_default_has_one_app_with_soketi_credentials() {
    let config = Config::embedded_default();
    assert_eq!(config.server.port, 6001);
    assert_eq!(config.apps.len(), 1);
    assert_eq!(config.apps[0].id, "1");
    assert_eq!(config.apps[0].key, "app-key");
    assert!(config.uses_default_secret());
}

#[test]
fn environment_overrides_nested_keys_and_keeps_strings_as_strings() {
    let vars = env(&[
        ("WARREN_SERVER__PORT", "7000"),
        ("WARREN_APPS__0__SECRET", "12345"),
        ("WARREN_APPS__0__ENABLE_CLIENT_EVENTS", "false"),
        ("WARREN_PORT", "ignored: belongs to the flag"),
        ("HOME", "/root"),
    ]);
    let config = Config::load(None, vars, &Overrides::default()).unwrap();
    assert_eq!(config.server.port, 7000);
    assert_eq!(config.apps[0].secret, "12345");
    assert!(!config.apps[0].enable_client_events);
}

#[test]
fn environment_can_add_an_app() {
    let vars = env(&[
        ("WARREN_APPS__1__ID", "2"),
        ("WARREN_APPS__1__KEY", "k2"),
        ("WARREN_APPS__1__SECRET", "s2"),
    ]);
    let config = Config::load(None, vars, &Overrides::default()).unwrap();
    assert_eq!(config.apps[1].key, "k2");
    assert_eq!(config.apps[1].id, "2");
}

#[test]
fn environment_adds_apps_in_index_order_whatever_the_listing_order() {
    let vars = env(&[
        ("WARREN_APPS__2__SECRET", "s3"),
        ("WARREN_APPS__2__KEY", "k3"),
        ("WARREN_APPS__2__ID", "3"),
        ("WARREN_APPS__1__ID", "2"),
        ("WARREN_APPS__1__KEY", "k2"),
        ("WARREN_APPS__1__SECRET", "s2"),
    ]);
    let config = Config::load(None, vars, &Overrides::default()).unwrap();
    let keys: Vec<&str> = config.apps.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["app-key", "k2", "k3"]);
}

#[test]
fn an_app_added_from_the_environment_without_its_id_names_the_variables() {
    let vars = env(&[("WARREN_APPS__1__KEY", "k2")]);
    let err = Config::load(None, vars, &Overrides::default()).unwrap_err();
    assert_eq!(err.key, "apps[1].id");
    assert!(
        err.reason
            .contains("WARREN_APPS__1__ID, WARREN_APPS__1__KEY, WARREN_APPS__1__SECRET"),
        "{err}"
    );
}

#[test]
fn console_is_off_by_default_and_needs_a_long_token() {
    assert!(!Config::embedded_default().console.enabled);
    let short = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n[console]\nenabled = true\ntoken = \"short\"\n";
    let err = Config::from_toml_str(short).unwrap_err();
    assert_eq!(err.key, "console.token");
    let long = short.replace("\"short\"", "\"0123456789abcdef\"");
    assert!(Config::from_toml_str(&long).unwrap().console.enabled);
}

#[test]
fn flags_win_over_environment() {
    let overrides = Overrides {
        port: Some(9000),
        shards: Some(3),
        bind: Some("127.0.0.1".into()),
    };
    let config = Config::load(None, env(&[("WARREN_SERVER__PORT", "7000")]), &overrides).unwrap();
    assert_eq!(config.server.port, 9000);
    assert_eq!(config.server.effective_shards(), 3);
    assert_eq!(config.server.bind, "127.0.0.1");
}

#[test]
fn bad_values_name_the_key() {
    let cases = [
        (
            r#"[[apps]]
id = "abc"
key = "k"
secret = "s""#,
            "apps[0].id",
        ),
        (
            r#"[[apps]]
id = "1"
key = "a:b"
secret = "s""#,
            "apps[0].key",
        ),
        (
            r#"[server]
bind = "nowhere"
[[apps]]
id = "1"
key = "k"
secret = "s""#,
            "server.bind",
        ),
        ("apps = []", "apps"),
        (
            r#"[[apps]]
id = "1"
key = "k"
secret = "s"
[[apps]]
id = "1"
key = "k2"
secret = "s""#,
            "apps[1].id",
        ),
    ];
    for (text, key) in cases {
        let err = Config::from_toml_str(text).unwrap_err();
        assert_eq!(err.key, key, "{text}: {err}");
    }
}

#[test]
fn cluster_section_is_optional_and_checked() {
    let base = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
    assert!(Config::from_toml_str(base).unwrap().cluster.is_none());
    let ok = format!("{base}[cluster]\nredis_url = \"redis://127.0.0.1:6379/0\"\n");
    let cluster = Config::from_toml_str(&ok).unwrap().cluster.unwrap();
    assert_eq!(
        (cluster.prefix.as_str(), cluster.node_timeout),
        ("warren", 10)
    );
    let bad = format!("{base}[cluster]\nredis_url = \"http://x\"\n");
    assert_eq!(
        Config::from_toml_str(&bad).unwrap_err().key,
        "cluster.redis_url"
    );
    let bad = format!("{base}[cluster]\nredis_url = \"redis://x\"\nnode_timeout = 1\n");
    assert_eq!(
        Config::from_toml_str(&bad).unwrap_err().key,
        "cluster.node_timeout"
    );
    assert_eq!(
        (cluster.outage_buffer_secs, cluster.outage_buffer_bytes),
        (20, 64 << 20)
    );
    let bad = format!("{base}[cluster]\nredis_url = \"redis://x\"\noutage_buffer_secs = 0\n");
    assert_eq!(
        Config::from_toml_str(&bad).unwrap_err().key,
        "cluster.outage_buffer_secs"
    );
}

#[test]
fn webhook_targets_are_checked() {
    let app = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
    let ok = format!("{app}webhooks = [{{ url = \"https://x/hook\", events = [\"member_added\"], filter = {{ channel_prefix = \"presence-\" }} }}]\n");
    let config = Config::from_toml_str(&ok).unwrap();
    assert_eq!(
        config.apps[0].webhooks[0].filter.channel_prefix.as_deref(),
        Some("presence-")
    );
    assert_eq!(config.webhooks.grace_ms, 3000);
    let bad = format!("{app}webhooks = [{{ url = \"ftp://x\" }}]\n");
    assert_eq!(
        Config::from_toml_str(&bad).unwrap_err().key,
        "apps[0].webhooks[0].url"
    );
    let bad = format!("{app}webhooks = [{{ url = \"http://x\", events = [\"nope\"] }}]\n");
    assert_eq!(
        Config::from_toml_str(&bad).unwrap_err().key,
        "apps[0].webhooks[0].events"
    );
}

#[test]
fn limits_default_to_pushers_values_and_are_checked() {
    let app = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
    let config = Config::from_toml_str(app).unwrap();
    let a = &config.apps[0];
    assert_eq!(
        (
            a.max_channel_name_length,
            a.max_event_name_length,
            a.max_channels_per_event,
            a.max_request_body_bytes,
        ),
        (200, 200, 100, 1024 * 1024)
    );
    assert_eq!((a.cache_ttl_secs, a.signin_timeout_secs), (1800, None));
    assert!(!a.enable_subscription_count_events);
    assert_eq!(config.largest_request_body(), 1024 * 1024);
    let raised = format!("{app}max_channel_name_length = 400\nmax_event_name_length = 300\nmax_channels_per_event = 500\nmax_request_body_bytes = 4194304\nsignin_timeout_secs = 30\n");
    let config = Config::from_toml_str(&raised).unwrap();
    assert_eq!(config.apps[0].max_channel_name_length, 400);
    assert_eq!(config.largest_request_body(), 4 * 1024 * 1024);
    for (line, key) in [
        ("max_channel_name_length = 0", "max_channel_name_length"),
        ("max_channel_name_length = 1025", "max_channel_name_length"),
        ("max_event_name_length = 0", "max_event_name_length"),
        ("max_channels_per_event = 0", "max_channels_per_event"),
        (
            "max_request_body_bytes = 16777217",
            "max_request_body_bytes",
        ),
        ("cache_ttl_secs = 0", "cache_ttl_secs"),
        ("max_cache_bytes = 0", "max_cache_bytes"),
        ("signin_timeout_secs = 0", "signin_timeout_secs"),
    ] {
        let err = Config::from_toml_str(&format!("{app}{line}\n")).unwrap_err();
        assert_eq!(err.key, format!("apps[0].{key}"), "{line}: {err}");
    }
}

#[test]
fn webhook_filters_match_prefix_and_suffix() {
    let filter = |prefix: Option<&str>, suffix: Option<&str>| WebhookFilter {
        channel_prefix: prefix.map(str::to_string),
        channel_suffix: suffix.map(str::to_string),
    };
    assert!(filter(None, None).matches("anything"));
    assert!(filter(Some("presence-"), None).matches("presence-room"));
    assert!(!filter(Some("presence-"), None).matches("private-room"));
    assert!(filter(None, Some("-admin")).matches("private-team-admin"));
    assert!(!filter(None, Some("-admin")).matches("private-admin-team"));
    let both = filter(Some("private-"), Some("-admin"));
    assert!(both.matches("private-x-admin"));
    assert!(!both.matches("presence-x-admin") && !both.matches("private-x"));
    let app = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
    let text = format!("{app}webhooks = [{{ url = \"http://x\", events = [\"cache_miss\"], filter = {{ channel_suffix = \"-admin\" }} }}]\n");
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(
        config.apps[0].webhooks[0].filter.channel_suffix.as_deref(),
        Some("-admin")
    );
}

#[test]
fn webhook_headers_may_not_name_the_ones_warren_sets() {
    let app = "[[apps]]\nid = \"1\"\nkey = \"k\"\nsecret = \"s\"\n";
    let with_headers = |headers: &str| {
        format!("{app}webhooks = [{{ url = \"http://a\" }}, {{ url = \"http://b\", headers = {{ {headers} }} }}]\n")
    };
    let ok = Config::from_toml_str(&with_headers(
        "X-Custom = \"v\", Authorization = \"Bearer t\"",
    ))
    .unwrap();
    assert_eq!(ok.apps[0].webhooks[1].headers["X-Custom"], "v");
    for name in [
        "X-Pusher-Signature",
        "x-pusher-key",
        "CONTENT-TYPE",
        "Content-Length",
        "host",
    ] {
        let err = Config::from_toml_str(&with_headers(&format!("\"{name}\" = \"v\""))).unwrap_err();
        assert_eq!(
            err.key,
            format!("apps[0].webhooks[1].headers.{name}"),
            "{err}"
        );
        assert!(err.to_string().contains("set by Warren"), "{err}");
    }
    for (header, why) in [
        (
            "\"X-A\" = \"v\\r\\nX-Pusher-Key: forged\"",
            "control characters",
        ),
        ("\"X A\" = \"v\"", "header name"),
    ] {
        let err = Config::from_toml_str(&with_headers(header)).unwrap_err();
        assert!(err.key.starts_with("apps[0].webhooks[1].headers."), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
    let bad = format!("[webhooks]\nmax_batch_size = 0\n{app}");
    assert_eq!(
        Config::from_toml_str(&bad).unwrap_err().key,
        "webhooks.max_batch_size"
    );
}

#[test]
fn compat_defaults_to_pusher_and_names_bad_values() {
    let base = "[[apps]]\nid = 1\nkey = \"k\"\nsecret = \"s\"\n";
    let config = Config::from_toml_str(base).unwrap();
    assert_eq!(config.apps[0].compat, Compat::Pusher);
    let config = Config::from_toml_str(&format!("{base}compat = \"workbunny\"\n")).unwrap();
    assert_eq!(config.apps[0].compat, Compat::Workbunny);
    let error = Config::from_toml_str(&format!("{base}compat = \"soketi\"\n")).unwrap_err();
    assert!(error.to_string().contains("compat"), "{error}");
}

#[test]
fn damping_is_on_by_default_and_checked() {
    let base = "[[apps]]\nid = 1\nkey = \"k\"\nsecret = \"s\"\n";
    let config = Config::from_toml_str(base).unwrap();
    assert_eq!(config.damping.refusal_delay_ms, 2_000);
    let error = Config::from_toml_str(&format!("{base}[damping]\ntable_size = 0\n")).unwrap_err();
    assert!(error.to_string().contains("damping.table_size"), "{error}");
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let err =
        Config::from_toml_str("[server]\nprot = 1\n[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"s\"")
            .unwrap_err();
    assert!(err.reason.contains("prot"), "{err}");
}

#[test]
fn bad_environment_path_is_refused() {
    let err = Config::load(
        None,
        env(&[("WARREN_SERVER__PORT__X", "1")]),
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(err.key, "WARREN_SERVER__PORT__X");
}
