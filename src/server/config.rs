//! The HTTP API's settings ([`ServerConfig`]) and its bearer token
//! ([`ApiToken`]), from the environment or in code.

use std::fmt;
use std::io::Read as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{duration_from_secs, MAX_DURATION};
use crate::error::{Error, Result};

/// Where `hecate serve` listens unless told otherwise (loopback only).
pub const DEFAULT_BIND: &str = "127.0.0.1:8787";

/// The bearer token every route but `/healthz` requires. Its `Debug` and
/// `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// A token given by the operator: at least 16 characters, printable
    /// ASCII without spaces (it travels in an HTTP header).
    pub fn new(token: impl Into<String>) -> Result<ApiToken> {
        let token = token.into();
        if token.len() < 16 {
            return Err(Error::config(
                "HECATE_API_TOKEN: must be at least 16 characters long",
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::config(
                "HECATE_API_TOKEN: must be printable ASCII without spaces",
            ));
        }
        Ok(ApiToken(token))
    }

    /// A fresh random token: 32 bytes from the kernel's random source, as
    /// 64 hex digits.
    pub fn generate() -> Result<ApiToken> {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| Error::internal(format!("cannot read /dev/urandom for a token: {e}")))?;
        let mut text = String::with_capacity(64);
        for b in bytes {
            text.push_str(&format!("{b:02x}"));
        }
        Ok(ApiToken(text))
    }

    /// The token's text, for the one place that needs it (printing a
    /// generated token once, a client's header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Settings of the HTTP API.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address to listen on (`HECATE_API_BIND`, default
    /// [`DEFAULT_BIND`]; port 0 picks a free one).
    pub bind: SocketAddr,
    /// The bearer token (`HECATE_API_TOKEN`); `None`: `serve` generates one
    /// and prints it once on stderr.
    pub token: Option<ApiToken>,
    /// Largest request body accepted, in bytes (`HECATE_API_MAX_BODY_BYTES`,
    /// default 1 MiB); larger ones get 413.
    pub max_body_bytes: usize,
    /// How long the answer to an exec with an `Idempotency-Key` is kept
    /// after it was given (`HECATE_IDEMPOTENCY_TTL_SECONDS`, default 3600).
    pub idempotency_ttl: Duration,
    /// Memory for kept answers, in bytes (`HECATE_IDEMPOTENCY_MAX_MB`,
    /// default 64 MiB); past it the oldest answers are forgotten first.
    pub idempotency_max_bytes: usize,
    /// HTTP worker threads (`HECATE_API_WORKERS`, default: the cores).
    pub workers: usize,
    /// How long a graceful stop waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// Largest upload body (a file's bytes or a directory's tar stream), in
    /// bytes (`HECATE_API_MAX_UPLOAD_BYTES`, default 256 MiB); larger ones
    /// get 413. The runtime's file limits (`HECATE_FILES_MAX_BYTES`,
    /// `HECATE_FILES_MAX_FILES`) apply too.
    pub max_upload_bytes: u64,
    /// The longest long poll a job output read may ask for
    /// (`HECATE_API_MAX_WAIT_SECONDS`, default 60); longer ones get 400.
    pub max_wait: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8787)),
            token: None,
            max_body_bytes: 1 << 20,
            idempotency_ttl: Duration::from_secs(3600),
            idempotency_max_bytes: 64 << 20,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            shutdown_timeout: Duration::from_secs(30),
            max_upload_bytes: 256 << 20,
            max_wait: Duration::from_secs(60),
        }
    }
}

impl ServerConfig {
    /// The settings from the process environment.
    pub fn from_env() -> Result<ServerConfig> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// The settings from a lookup function (for tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<ServerConfig> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let mut c = ServerConfig::default();
        if let Some(v) = get("HECATE_API_BIND") {
            c.bind = parse_bind(&v).map_err(|e| Error::config(format!("HECATE_API_BIND: {e}")))?;
        }
        if let Some(v) = lookup("HECATE_API_TOKEN") {
            c.token = Some(ApiToken::new(v)?);
        }
        if let Some(v) = get("HECATE_API_MAX_BODY_BYTES") {
            c.max_body_bytes = parse_count("HECATE_API_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = get("HECATE_IDEMPOTENCY_TTL_SECONDS") {
            let secs = v.trim().parse::<f64>().map_err(|_| {
                Error::config("HECATE_IDEMPOTENCY_TTL_SECONDS: not a number of seconds")
            })?;
            c.idempotency_ttl = duration_from_secs(secs, MAX_DURATION)
                .map_err(|why| Error::config(format!("HECATE_IDEMPOTENCY_TTL_SECONDS: {why}")))?;
        }
        if let Some(v) = get("HECATE_IDEMPOTENCY_MAX_MB") {
            let mb = parse_count("HECATE_IDEMPOTENCY_MAX_MB", &v)?;
            c.idempotency_max_bytes = mb.saturating_mul(1 << 20);
        }
        if let Some(v) = get("HECATE_API_WORKERS") {
            c.workers = parse_count("HECATE_API_WORKERS", &v)?.min(256);
        }
        if let Some(v) = get("HECATE_API_MAX_UPLOAD_BYTES") {
            c.max_upload_bytes = parse_count("HECATE_API_MAX_UPLOAD_BYTES", &v)? as u64;
        }
        if let Some(v) = get("HECATE_API_MAX_WAIT_SECONDS") {
            let secs = v.trim().parse::<f64>().map_err(|_| {
                Error::config("HECATE_API_MAX_WAIT_SECONDS: not a number of seconds")
            })?;
            c.max_wait = duration_from_secs(secs, crate::runtime::MAX_WAIT)
                .map_err(|why| Error::config(format!("HECATE_API_MAX_WAIT_SECONDS: {why}")))?;
        }
        Ok(c)
    }
}

/// An address to listen on: `HOST:PORT`, or a bare port (on 127.0.0.1).
pub fn parse_bind(text: &str) -> std::result::Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{:?} is not an address like 127.0.0.1:8787 or [::1]:8787",
            text.chars().take(60).collect::<String>()
        )
    })
}

fn parse_count(var: &str, value: &str) -> Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(0) => Err(Error::config(format!("{var}: must be at least 1"))),
        Ok(n) => Ok(n),
        Err(_) => Err(Error::config(format!("{var}: not a whole positive number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_bad_values_name_the_variable() {
        let c = ServerConfig::from_lookup(|k| match k {
            "HECATE_API_BIND" => Some("9000".into()),
            "HECATE_API_TOKEN" => Some("0123456789abcdef0123".into()),
            "HECATE_IDEMPOTENCY_TTL_SECONDS" => Some("1.5".into()),
            _ => None,
        })
        .expect("valid settings");
        assert_eq!(c.bind, SocketAddr::from(([127, 0, 0, 1], 9000)));
        assert_eq!(c.idempotency_ttl, Duration::from_millis(1500));
        assert_eq!(c.token.expect("a token").expose(), "0123456789abcdef0123");
        for (var, value) in [
            ("HECATE_API_BIND", "nowhere"),
            ("HECATE_API_TOKEN", "short"),
            ("HECATE_API_TOKEN", "with a space in the token"),
            ("HECATE_API_MAX_BODY_BYTES", "0"),
            ("HECATE_IDEMPOTENCY_TTL_SECONDS", "-1"),
            ("HECATE_API_MAX_UPLOAD_BYTES", "lots"),
            ("HECATE_API_MAX_WAIT_SECONDS", "forever"),
        ] {
            let err =
                ServerConfig::from_lookup(|k| (k == var).then(|| value.to_string())).unwrap_err();
            assert!(err.message().contains(var), "{err}");
        }
    }

    #[test]
    fn a_token_never_shows_in_debug_or_display() {
        let t = ApiToken::generate().expect("a token");
        assert_eq!(t.expose().len(), 64);
        assert!(!format!("{t:?} {t}").contains(t.expose()));
        assert_ne!(t, ApiToken::generate().expect("a token"));
    }
}
