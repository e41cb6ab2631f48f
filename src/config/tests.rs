use super::*;
use std::collections::HashMap;

fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn defaults_match_the_seed() {
    let c = Config::from_lookup(lookup(&[])).expect("defaults are valid");
    assert_eq!(c.backend, BackendKind::Auto);
    assert_eq!(c.vm_ttl, Duration::from_secs(1200));
    assert_eq!(c.idle_lifetime, Duration::from_secs(300));
    assert_eq!(c.command_timeout, Duration::from_secs(120));
    assert_eq!(c.morph.snapshot_id, "snapshot_defv9tjg");
    assert_eq!(c.max_output_chars, 50_000);
    assert_eq!(c.start_timeout, Duration::from_secs(600));
}

#[test]
fn start_timeout_is_settable_and_must_be_positive() {
    let c = Config::from_lookup(lookup(&[("HECATE_START_TIMEOUT_SECONDS", "90")])).expect("valid");
    assert_eq!(c.start_timeout, Duration::from_secs(90));
    let err = Config::default()
        .with_start_timeout(Duration::ZERO)
        .validate()
        .expect_err("zero");
    assert!(
        err.message().contains("HECATE_START_TIMEOUT_SECONDS"),
        "{err}"
    );
}

#[test]
fn environment_overrides_defaults() {
    let c = Config::from_lookup(lookup(&[
        ("HECATE_VM_TTL_SECONDS", "60"),
        ("HECATE_VM_LIFETIME_SECONDS", "5"),
        ("HECATE_BACKEND", "morph"),
        ("MORPH_API_KEY", "k"),
        ("MORPH_BASE_URL", "http://127.0.0.1:1/api/"),
    ]))
    .expect("valid");
    assert_eq!(c.vm_ttl, Duration::from_secs(60));
    assert_eq!(c.idle_lifetime, Duration::from_secs(5));
    assert_eq!(c.backend, BackendKind::Morph);
}

#[test]
fn bad_numbers_name_the_variable() {
    for (var, value) in [
        ("HECATE_VM_TTL_SECONDS", "soon"),
        ("HECATE_VM_LIFETIME_SECONDS", "-5"),
        ("HECATE_START_TIMEOUT_SECONDS", "0"),
        ("HECATE_MAX_INSTANCES", "0"),
        ("HECATE_RETRIES", "1.5"),
        ("HECATE_BACKEND", "docker"),
    ] {
        let err = Config::from_lookup(lookup(&[(var, value)])).expect_err(var);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains(var), "{err}");
    }
}

#[test]
fn too_many_workers_is_a_config_error() {
    let err = Config::from_lookup(lookup(&[("HECATE_WORKERS", "100000")])).expect_err("bound");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("HECATE_WORKERS"), "{err}");
    assert!(err.message().contains(&MAX_WORKERS.to_string()), "{err}");
    let c = Config::from_lookup(lookup(&[("HECATE_WORKERS", "256")])).expect("at the bound");
    assert_eq!(c.workers, 256);
    let err = Config::default().with_workers(100_000).validate();
    assert!(err.is_err(), "code-set values are checked too");
}

#[test]
fn every_duration_setting_follows_one_rule() {
    for var in [
        "HECATE_VM_TTL_SECONDS",
        "HECATE_VM_LIFETIME_SECONDS",
        "HECATE_COMMAND_TIMEOUT_SECONDS",
        "HECATE_MORPH_READY_TIMEOUT_SECONDS",
    ] {
        for bad in [
            "0.0000001",
            "0",
            "-1",
            "NaN",
            "inf",
            "1e308",
            "3000000",
            "soon",
        ] {
            let err = Config::from_lookup(lookup(&[(var, bad)])).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.message().starts_with(var), "{var}={bad}: {err}");
            assert!(err.message().len() < 160, "{var}={bad}: {err}");
        }
        let c = Config::from_lookup(lookup(&[(var, "0.001")])).expect("the minimum");
        assert!(c.validate().is_ok());
    }
    let err = Config::from_lookup(lookup(&[("HECATE_COMMAND_TIMEOUT_SECONDS", "0.0000001")]))
        .expect_err("below 1 ms");
    assert!(err.message().contains("at least 0.001 seconds"), "{err}");
    let err = Config::from_lookup(lookup(&[("HECATE_COMMAND_TIMEOUT_SECONDS", "90000")]))
        .expect_err("above the command maximum");
    assert!(err.message().contains("maximum of 86400 s"), "{err}");
    let err = Config::default()
        .with_command_timeout(Duration::from_nanos(100))
        .validate()
        .expect_err("code-set values follow the same rule");
    assert!(err.message().contains("HECATE_COMMAND_TIMEOUT_SECONDS"));
}

#[test]
fn morph_needs_a_key_and_a_url() {
    let err = Config::from_lookup(lookup(&[("HECATE_BACKEND", "morph")])).expect_err("no key");
    assert!(err.message().contains("MORPH_API_KEY"));
    let err = Config::from_lookup(lookup(&[
        ("HECATE_BACKEND", "morph"),
        ("MORPH_API_KEY", "k"),
        ("MORPH_BASE_URL", "ftp://x"),
    ]))
    .expect_err("bad url");
    assert!(err.message().contains("MORPH_BASE_URL"));
}

#[test]
fn api_key_is_redacted_in_debug() {
    let c = Config::default().with_morph("http://x/api", ApiKey::new("sk-very-secret"));
    let shown = format!("{c:?} {}", ApiKey::new("sk-very-secret"));
    assert!(!shown.contains("sk-very-secret"));
}

#[test]
fn retry_schedule_is_two_four_eight() {
    let p = RetryPolicy::default();
    let secs: Vec<u64> = (1..=3).map(|n| p.nominal_delay(n).as_secs()).collect();
    assert_eq!(secs, [2, 4, 8]);
    let d = p.delay(1, 0.0, None);
    assert!(d >= Duration::from_millis(1599) && d <= Duration::from_millis(1601));
    let d = p.delay(1, 0.5, Some(Duration::from_secs(7)));
    assert_eq!(d, Duration::from_secs(7));
}

#[test]
fn retry_after_is_capped_by_max_delay() {
    let p = RetryPolicy::default();
    let d = p.delay(1, 0.5, Some(Duration::from_secs(86_400)));
    assert_eq!(d, p.max_delay, "a day-long Retry-After waits max_delay");
    let d = p.delay(1, 0.5, Some(Duration::from_secs(59)));
    assert_eq!(d, Duration::from_secs(59), "shorter hints are honoured");
}

#[test]
fn launcher_and_hardening_come_from_the_environment() {
    let c = Config::from_lookup(lookup(&[])).expect("defaults");
    assert!(c.harden_runtime);
    assert_eq!(c.launcher, crate::launcher::LauncherConfig::default());
    let c = Config::from_lookup(lookup(&[
        ("HECATE_LAUNCHER", "/opt/hecate/bin/hecate"),
        ("HECATE_LAUNCHER_CGROUPS", "off"),
        ("HECATE_HARDEN_RUNTIME", "false"),
    ]))
    .expect("valid");
    assert!(!c.harden_runtime);
    assert_eq!(c.launcher.program, Some("/opt/hecate/bin/hecate".into()));
    assert_eq!(c.launcher.cgroups, crate::launcher::CgroupMode::Off);
    for bad in [
        ("HECATE_LAUNCHER", "hecate"),
        ("HECATE_LAUNCHER_CGROUPS", "v3"),
    ] {
        let err = Config::from_lookup(lookup(&[bad])).expect_err(bad.0);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains(bad.0), "{err}");
    }
}

#[test]
fn sandbox_settings_are_read_and_bad_ones_name_the_variable() {
    let c = Config::from_lookup(lookup(&[
        ("HECATE_BACKEND", "sandbox"),
        ("HECATE_SANDBOX_NETWORK", "host"),
        ("HECATE_SANDBOX_MEMORY_MB", "256"),
        ("HECATE_SANDBOX_PIDS", "64"),
        ("HECATE_SANDBOX_ROOTFS", "/srv/rootfs"),
    ]))
    .expect("valid");
    assert_eq!(c.backend, BackendKind::Sandbox);
    assert_eq!(
        c.sandbox.network,
        crate::launcher::sandbox::NetworkMode::Host
    );
    assert_eq!(c.sandbox.memory_limit, Some(256 * 1024 * 1024));
    assert_eq!(c.sandbox.pids_limit, Some(64));
    assert_eq!(
        c.sandbox.rootfs.as_deref(),
        Some(std::path::Path::new("/srv/rootfs"))
    );
    let outbound =
        Config::from_lookup(lookup(&[("HECATE_SANDBOX_NETWORK", " Outbound ")])).expect("valid");
    assert_eq!(
        outbound.sandbox.network,
        crate::launcher::sandbox::NetworkMode::Outbound
    );
    let local = Config::from_lookup(lookup(&[("HECATE_BACKEND", "local")])).expect("valid");
    assert_eq!(local.backend, BackendKind::Local);
    for (var, value) in [
        ("HECATE_SANDBOX_NETWORK", "everything"),
        ("HECATE_SANDBOX_MEMORY_MB", "0"),
        ("HECATE_SANDBOX_MEMORY_MB", "lots"),
        ("HECATE_SANDBOX_PIDS", "-1"),
        ("HECATE_SANDBOX_ROOTFS", "relative/dir"),
        ("HECATE_BACKEND", "vm"),
    ] {
        let err = Config::from_lookup(lookup(&[(var, value)])).expect_err(value);
        assert!(err.message().contains(var), "{var}={value}: {err}");
    }
}

#[test]
fn persistent_shell_settings_come_from_the_environment() {
    let c = Config::from_lookup(lookup(&[])).expect("defaults");
    assert!(c.shell.persistent, "on by default");
    assert_eq!(
        c.shell.secret_patterns,
        ["KEY", "TOKEN", "SECRET", "PASSWORD"]
    );
    let c = Config::from_lookup(lookup(&[
        ("HECATE_PERSISTENT_SHELL", "off"),
        ("HECATE_SHELL_SECRET_PATTERNS", "cred, PIN ,"),
    ]))
    .expect("valid");
    assert!(!c.shell.persistent);
    assert_eq!(c.shell.secret_patterns, ["cred", "PIN"]);
    for bad in [
        ("HECATE_PERSISTENT_SHELL", "maybe"),
        ("HECATE_SHELL_SECRET_PATTERNS", "KEY,a*b"),
    ] {
        let err = Config::from_lookup(lookup(&[bad])).expect_err(bad.0);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains(bad.0), "{err}");
    }
    let mut c = Config::default();
    c.shell.secret_patterns = vec!["no spaces".into()];
    assert_eq!(
        c.validate().expect_err("bad pattern").kind(),
        ErrorKind::Config
    );
}
