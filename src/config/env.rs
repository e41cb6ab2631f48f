//! Reading a [`Config`] from the environment: [`Config::from_env`],
//! [`Config::from_lookup`], and the parsers of the variables' values
//! (numbers, seconds, counts, booleans), whose errors name the variable.

use std::path::PathBuf;
use std::time::Duration;

use super::{duration_from_secs, ApiKey, Config, MAX_DURATION};
use crate::error::{Error, Result};

impl Config {
    /// Defaults overridden by the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Defaults overridden by whatever `lookup` returns for each variable.
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let mut c = Config::default();
        c.jobs.read(get)?;
        if let Some(v) = get("HECATE_BACKEND") {
            c.backend = v.parse()?;
        }
        if let Some(v) = get("HECATE_VM_TTL_SECONDS") {
            c.vm_ttl = parse_secs("HECATE_VM_TTL_SECONDS", &v)?;
        }
        if let Some(v) = get("HECATE_VM_LIFETIME_SECONDS") {
            c.idle_lifetime = parse_secs("HECATE_VM_LIFETIME_SECONDS", &v)?;
        }
        if let Some(v) = get("HECATE_COMMAND_TIMEOUT_SECONDS") {
            c.command_timeout = parse_secs("HECATE_COMMAND_TIMEOUT_SECONDS", &v)?;
        }
        if let Some(v) = get("HECATE_START_TIMEOUT_SECONDS") {
            c.start_timeout = parse_secs("HECATE_START_TIMEOUT_SECONDS", &v)?;
        }
        if let Some(v) = get("HECATE_MAX_INSTANCES") {
            c.max_instances = parse_count("HECATE_MAX_INSTANCES", &v)?;
        }
        if let Some(v) = get("HECATE_MAX_CONCURRENT_STARTS") {
            c.max_concurrent_starts = parse_count("HECATE_MAX_CONCURRENT_STARTS", &v)?;
        }
        if let Some(v) = get("HECATE_RETRIES") {
            c.retry.max_retries = parse_u64("HECATE_RETRIES", &v)?.min(100) as u32;
        }
        if let Some(v) = get("HECATE_RETRY_BASE_MS") {
            c.retry.base_delay = Duration::from_millis(parse_u64("HECATE_RETRY_BASE_MS", &v)?);
        }
        if let Some(v) = get("HECATE_RETRY_INDETERMINATE") {
            c.retry_indeterminate = parse_bool("HECATE_RETRY_INDETERMINATE", &v)?;
        }
        if let Some(v) = get("HECATE_MAX_OUTPUT_CHARS") {
            c.max_output_chars = parse_count("HECATE_MAX_OUTPUT_CHARS", &v)?;
        }
        if let Some(v) = get("HECATE_WORKERS") {
            c.workers = parse_count("HECATE_WORKERS", &v)?;
        }
        if let Some(v) = get("HECATE_LOCAL_ROOT") {
            c.local.root = PathBuf::from(v);
        }
        if let Some(v) = get(crate::launcher::LAUNCHER_ENV) {
            let program = PathBuf::from(v.trim());
            if !program.is_absolute() {
                return Err(Error::config(format!(
                    "{}: must be an absolute path to a `hecate` binary",
                    crate::launcher::LAUNCHER_ENV
                )));
            }
            c.launcher.program = Some(program);
        }
        if let Some(v) = get("HECATE_LAUNCHER_CGROUPS") {
            c.launcher.cgroups = crate::launcher::CgroupMode::parse(v.trim()).ok_or_else(|| {
                Error::config("HECATE_LAUNCHER_CGROUPS: expected auto, v2, v1 or off")
            })?;
        }
        if let Some(v) = get("HECATE_HARDEN_RUNTIME") {
            c.harden_runtime = parse_bool("HECATE_HARDEN_RUNTIME", &v)?;
        }
        if let Some(v) = get("HECATE_SANDBOX_NETWORK") {
            c.sandbox.network = match v.trim().to_ascii_lowercase().as_str() {
                "isolated" => crate::launcher::sandbox::NetworkMode::Isolated,
                "host" => crate::launcher::sandbox::NetworkMode::Host,
                "outbound" => crate::launcher::sandbox::NetworkMode::Outbound,
                _ => {
                    return Err(Error::config(format!(
                        "HECATE_SANDBOX_NETWORK: {:?} is not a network mode (expected isolated, outbound or host)",
                        clip(v.trim(), 40)
                    )))
                }
            };
        }
        if let Some(v) = get("HECATE_SANDBOX_MEMORY_MB") {
            let mb = parse_count("HECATE_SANDBOX_MEMORY_MB", &v)? as u64;
            c.sandbox.memory_limit = Some(
                mb.checked_mul(1024 * 1024)
                    .ok_or_else(|| Error::config("HECATE_SANDBOX_MEMORY_MB: too large"))?,
            );
        }
        if let Some(v) = get("HECATE_SANDBOX_PIDS") {
            c.sandbox.pids_limit = Some(parse_count("HECATE_SANDBOX_PIDS", &v)? as u64);
        }
        if let Some(v) = get("HECATE_SANDBOX_ROOTFS") {
            let dir = PathBuf::from(v.trim());
            if !dir.is_absolute() {
                return Err(Error::config(format!(
                    "HECATE_SANDBOX_ROOTFS: {:?} must be an absolute path to a directory",
                    clip(v.trim(), 80)
                )));
            }
            c.sandbox.rootfs = Some(dir);
        }
        if let Some(v) = get("MORPH_BASE_URL") {
            c.morph.base_url = v.trim().to_string();
        }
        if let Some(v) = lookup("MORPH_API_KEY") {
            let v = v.trim();
            if !v.is_empty() {
                c.morph.api_key = Some(ApiKey::new(v));
            }
        }
        if let Some(v) = get("HECATE_DEFAULT_SNAPSHOT_ID") {
            c.morph.snapshot_id = v.trim().to_string();
        }
        if let Some(v) = get("HECATE_MORPH_POLL_MS") {
            c.morph.poll_interval = Duration::from_millis(parse_u64("HECATE_MORPH_POLL_MS", &v)?);
        }
        if let Some(v) = get("HECATE_MORPH_READY_TIMEOUT_SECONDS") {
            c.morph.ready_timeout = parse_secs("HECATE_MORPH_READY_TIMEOUT_SECONDS", &v)?;
        }
        if let Some(v) = get("HECATE_FILES_MAX_BYTES") {
            c.files.limits.max_bytes = parse_u64("HECATE_FILES_MAX_BYTES", &v)?;
        }
        if let Some(v) = get("HECATE_FILES_MAX_FILES") {
            c.files.limits.max_files = parse_u64("HECATE_FILES_MAX_FILES", &v)?;
        }
        if let Some(v) = get("HECATE_FILES_TIMEOUT_SECONDS") {
            c.files.timeout = parse_secs("HECATE_FILES_TIMEOUT_SECONDS", &v)?;
        }
        if let Some(v) = get("HECATE_FILES_PARALLEL") {
            c.files.parallel = parse_count("HECATE_FILES_PARALLEL", &v)?.min(64);
        }
        if let Some(v) = get("HECATE_PERSISTENT_SHELL") {
            c.shell.persistent = parse_bool("HECATE_PERSISTENT_SHELL", &v)?;
        }
        if let Some(v) = get("HECATE_SHELL_SECRET_PATTERNS") {
            c.shell.secret_patterns = crate::shell::ShellConfig::parse_patterns(&v)?;
        }
        c.validate()?;
        Ok(c)
    }
}

fn parse_u64(var: &str, value: &str) -> Result<u64> {
    value.trim().parse::<u64>().map_err(|_| {
        Error::config(format!(
            "{var}: {:?} is not a whole non-negative number",
            clip(value.trim(), 40)
        ))
    })
}

fn parse_secs(var: &str, value: &str) -> Result<Duration> {
    let secs = value.trim().parse::<f64>().map_err(|_| {
        Error::config(format!(
            "{var}: {:?} is not a number of seconds",
            clip(value.trim(), 40)
        ))
    })?;
    duration_from_secs(secs, MAX_DURATION).map_err(|why| Error::config(format!("{var}: {why}")))
}

/// At most `max` characters of `text`, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn parse_count(var: &str, value: &str) -> Result<usize> {
    match parse_u64(var, value)? {
        0 => Err(Error::config(format!("{var}: must be at least 1"))),
        n => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

fn parse_bool(var: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::config(format!(
            "{var}: {:?} is not true or false",
            clip(value.trim(), 40)
        ))),
    }
}
