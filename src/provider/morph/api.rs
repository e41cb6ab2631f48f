//! The HTTP client of the MorphCloud instance API, and the classification of
//! its failures into [`ErrorKind`]s.
//!
//! This module owns the awc client (one per arbiter thread, since awc's client
//! is not `Send`), the request settings (bearer auth, JSON content type, no
//! redirects, an explicit deadline per request, a body limit), and the one
//! place where a transport failure or an HTTP status becomes an error kind.
//! What a failure means depends on the call: after an exec or a create may
//! have reached the server, a lost answer is
//! [`Indeterminate`](ErrorKind::Indeterminate) (the start path then looks
//! the create up before anything retries it); for idempotent calls the same
//! loss is [`Transient`](ErrorKind::Transient). A timeout names the setting
//! its deadline came from.
//! The API key only ever goes into the `Authorization` header. Every answer
//! body is scrubbed of it as it arrives, before anything parses, quotes or
//! returns it (a server or proxy may echo the request's headers into an
//! error, a non-JSON page, an instance id or a command's output), and a
//! quote cut short never ends in a piece of it. The whole answer, body
//! included, is read within the request's deadline. Errors name the request by its
//! route (`POST /instance/{id}/exec`), not by the instance's id: they reach
//! the agent, and the callers' log lines carry the id.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use awc::error::{ConnectError, PayloadError, SendRequestError};
use awc::http::header::{self, HeaderMap, HeaderValue, HttpDate};
use awc::http::{Method, StatusCode};
use bytes::Bytes;

use super::wire::{self, ExecReply, InstanceInfo, StartBody};
use crate::config::MorphConfig;
use crate::error::{Error, ErrorKind, Result};

/// Longest server body quoted in an error message, in characters.
const MAX_QUOTED_BODY: usize = 500;

/// Connect timeout: a connect error means the request was never sent, so it
/// is safe to give up early and let the runtime retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an idle pooled connection is reused. Kept well below common
/// server and load-balancer idle timeouts (60–75 s): reusing a connection
/// the server has just closed loses the request in a way the client cannot
/// tell from a lost answer, which for exec means an `indeterminate` error.
const CONN_KEEP_ALIVE: Duration = Duration::from_secs(15);

thread_local! {
    /// The awc client of this thread, with the id of the actix system it was
    /// built in: a client's pool is bound to its runtime, so a thread that
    /// runs a second system (tests do) gets a fresh one.
    static CLIENT: RefCell<Option<(usize, awc::Client)>> = const { RefCell::new(None) };
}

fn client() -> awc::Client {
    let system = actix_rt::System::try_current().map_or(usize::MAX, |s| s.id());
    CLIENT.with(|cell| {
        let mut slot = cell.borrow_mut();
        match &*slot {
            Some((id, client)) if *id == system => client.clone(),
            _ => {
                let client = awc::Client::builder()
                    // A redirect would resend the bearer token to wherever it
                    // points; the API never redirects.
                    .disable_redirects()
                    // Every request sets its own deadline.
                    .disable_timeout()
                    .connector(
                        awc::Connector::new()
                            .timeout(CONNECT_TIMEOUT)
                            .conn_keep_alive(CONN_KEEP_ALIVE),
                    )
                    .finish();
                *slot = Some((system, client.clone()));
                client
            }
        }
    })
}

/// What a request does; decides how its failures are classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// `POST /instance`.
    Start,
    /// `GET /instance/{id}`.
    Get,
    /// `GET /instance?...`.
    List,
    /// `DELETE /instance/{id}`.
    Delete,
    /// `POST /instance/{id}/exec`.
    Exec,
    /// `POST /instance/{id}/ttl`.
    Ttl,
}

impl Call {
    /// The error for a request whose answer was lost after it may have
    /// reached the server.
    fn lost(self, message: String) -> Error {
        match self {
            Call::Exec => Error::new(
                ErrorKind::Indeterminate,
                format!("{message}; the command may have run on the instance"),
            ),
            // The start path looks the create's attempt up before anything
            // retries it (see `start`), so that a lost answer does not make
            // a second instance.
            Call::Start => Error::new(
                ErrorKind::Indeterminate,
                format!("{message}; the instance may have been created"),
            ),
            // GET, DELETE and setting the TTL are idempotent.
            Call::Get | Call::List | Call::Delete | Call::Ttl => Error::transient(message),
        }
    }
}

/// An HTTP answer, whatever its status.
struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Bytes,
}

/// The text of an awc failure, scrubbed of the API key, kept as an error's
/// [`source`](std::error::Error::source): awc's own errors are not `Send`,
/// and their text is only safe to keep once scrubbed.
#[derive(Debug)]
struct TransportError(String);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

/// The MorphCloud API as this backend uses it. Cheap to share (`Arc`); the
/// HTTP client itself is per thread.
pub(crate) struct Api {
    base_url: String,
    api_key: String,
    auth: HeaderValue,
    request_timeout: Duration,
    max_body_bytes: usize,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("request_timeout", &self.request_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl Api {
    /// The API described by `config`. Fails with a
    /// [`Config`](ErrorKind::Config) error if there is no usable API key or
    /// base URL.
    pub(crate) fn new(config: &MorphConfig) -> Result<Self> {
        let key = config
            .api_key
            .as_ref()
            .map(|k| k.expose().trim())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Error::config(
                    "MORPH_API_KEY environment variable not set (needed by the morph backend)",
                )
            })?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            Error::config("MORPH_API_KEY contains characters not allowed in an HTTP header")
        })?;
        auth.set_sensitive(true);
        let base_url = config.base_url.trim().trim_end_matches('/').to_string();
        // awc's rustls connector takes the process-wide crypto provider;
        // install ring's unless the embedding program chose one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rest = base_url
            .strip_prefix("https://")
            .or_else(|| base_url.strip_prefix("http://"));
        if rest.is_none_or(str::is_empty) {
            return Err(Error::config(format!(
                "MORPH_BASE_URL: {base_url:?} is not an http:// or https:// URL"
            )));
        }
        Ok(Api {
            base_url,
            api_key: key.to_string(),
            auth,
            request_timeout: config.request_timeout,
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// The deadline of one request other than exec.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// `POST /instance?snapshot_id=…`: creates an instance (not yet ready).
    pub(crate) async fn create_instance(
        &self,
        snapshot_id: &str,
        metadata: &BTreeMap<String, String>,
        ttl_seconds: Option<u64>,
    ) -> Result<InstanceInfo> {
        let query = encode_query(&[("snapshot_id", snapshot_id)])?;
        let body = StartBody {
            metadata: (!metadata.is_empty()).then_some(metadata),
            ttl_seconds,
            ttl_action: "stop",
        };
        let body = serde_json::to_vec(&body).map_err(|e| {
            Error::internal(format!("cannot encode the start request: {e}")).with_source(e)
        })?;
        let what = "POST /instance";
        let reply = self
            .send(
                Call::Start,
                what,
                Method::POST,
                &format!("/instance?{query}"),
                Some(body),
                self.request_timeout,
            )
            .await?;
        let reply = self.check(Call::Start, what, reply)?;
        self.parse(&reply, |body| {
            wire::parse_instance(what, &wire::parse_json(what, body)?)
        })
    }

    /// `GET /instance/{id}`. A missing instance is
    /// [`InstanceGone`](ErrorKind::InstanceGone).
    pub(crate) async fn get_instance(&self, id: &str, timeout: Duration) -> Result<InstanceInfo> {
        let path = format!("/instance/{}", encode_segment(id));
        let what = "GET /instance/{id}";
        let reply = self
            .send(Call::Get, what, Method::GET, &path, None, timeout)
            .await?;
        let reply = self.check(Call::Get, what, reply)?;
        self.parse(&reply, |body| {
            wire::parse_instance(what, &wire::parse_json(what, body)?)
        })
    }

    /// `GET /instance?metadata[k]=v&…`: the instances carrying all the given
    /// tags. The filter is also applied here, so a server that ignored it
    /// can never make a caller stop instances that are not its own.
    pub(crate) async fn list_tagged(&self, tags: &[(&str, &str)]) -> Result<Vec<InstanceInfo>> {
        let pairs: Vec<(String, &str)> = tags
            .iter()
            .map(|(k, v)| (format!("metadata[{k}]"), *v))
            .collect();
        let query = encode_query(&pairs)?;
        let path = if query.is_empty() {
            "/instance".to_string()
        } else {
            format!("/instance?{query}")
        };
        let what = "GET /instance";
        let reply = self
            .send(
                Call::List,
                what,
                Method::GET,
                &path,
                None,
                self.request_timeout,
            )
            .await?;
        let reply = self.check(Call::List, what, reply)?;
        let all = self.parse(&reply, |body| {
            wire::parse_instance_list(what, &wire::parse_json(what, body)?)
        })?;
        Ok(all
            .into_iter()
            .filter(|i| {
                tags.iter()
                    .all(|(k, v)| i.metadata.get(*k).map(String::as_str) == Some(*v))
            })
            .collect())
    }

    /// `DELETE /instance/{id}`. Returns `false` if the instance was already
    /// gone (404), which is not an error.
    pub(crate) async fn delete_instance(&self, id: &str) -> Result<bool> {
        let path = format!("/instance/{}", encode_segment(id));
        let what = "DELETE /instance/{id}";
        let reply = self
            .send(
                Call::Delete,
                what,
                Method::DELETE,
                &path,
                None,
                self.request_timeout,
            )
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        self.check(Call::Delete, what, reply)?;
        Ok(true)
    }

    /// `POST /instance/{id}/exec` with one command string, waiting at most
    /// `deadline` for the answer.
    pub(crate) async fn exec(
        &self,
        id: &str,
        command: &str,
        deadline: Duration,
    ) -> Result<ExecReply> {
        let path = format!("/instance/{}/exec", encode_segment(id));
        let what = "POST /instance/{id}/exec";
        let body = serde_json::to_vec(&wire::ExecBody { command: [command] }).map_err(|e| {
            Error::internal(format!("cannot encode the exec request: {e}")).with_source(e)
        })?;
        let reply = self
            .send(Call::Exec, what, Method::POST, &path, Some(body), deadline)
            .await?;
        let reply = self.check(Call::Exec, what, reply)?;
        self.parse(&reply, |body| wire::parse_exec_body(what, body))
            .map_err(|e| e.context("the command ran, but its result is unreadable"))
    }

    /// `POST /instance/{id}/ttl`: the instance is stopped `seconds` from
    /// now (setting it again is idempotent).
    pub(crate) async fn set_ttl(&self, id: &str, seconds: u64) -> Result<()> {
        let path = format!("/instance/{}/ttl", encode_segment(id));
        let what = "POST /instance/{id}/ttl";
        let body = serde_json::to_vec(&wire::TtlBody {
            ttl_seconds: seconds,
        })
        .map_err(|e| {
            Error::internal(format!("cannot encode the ttl request: {e}")).with_source(e)
        })?;
        let reply = self
            .send(
                Call::Ttl,
                what,
                Method::POST,
                &path,
                Some(body),
                self.request_timeout,
            )
            .await?;
        self.check(Call::Ttl, what, reply)?;
        Ok(())
    }

    /// Sends one request and reads the whole answer, classifying transport
    /// failures. Any HTTP status is returned, for [`Api::check`].
    async fn send(
        &self,
        call: Call,
        what: &str,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Reply> {
        let url = format!("{}{}", self.base_url, path_and_query);
        let started = actix_rt::time::Instant::now();
        let request = client()
            .request(method, &url)
            .insert_header((header::AUTHORIZATION, self.auth.clone()))
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .timeout(timeout);
        let sent = match body {
            Some(body) => request.send_body(body).await,
            None => request.send().await,
        };
        let mut response = sent.map_err(|e| self.transport_error(call, what, timeout, e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        // awc's timeout covers only the head; the body (which a server can
        // trickle a byte at a time) gets what is left of the deadline.
        let left = timeout.saturating_sub(started.elapsed());
        let body =
            match actix_rt::time::timeout(left, response.body().limit(self.max_body_bytes)).await {
                Ok(body) => body.map_err(|e| self.body_error(call, what, status, e))?,
                Err(_) => {
                    return Err(call
                        .lost(format!(
                            "{what}: HTTP {}: the answer did not arrive within {timeout:?}",
                            status.as_u16()
                        ))
                        .with_status(status.as_u16()))
                }
            };
        // Whatever the server put in the body (an echo of the request's
        // headers, say) is scrubbed of the key before anything reads it, so
        // no message, excerpt or command output built from it can hold it.
        let body = self.scrub_bytes(body);
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    fn transport_error(
        &self,
        call: Call,
        what: &str,
        timeout: Duration,
        err: SendRequestError,
    ) -> Error {
        let err_text = self.scrub(&err.to_string());
        let source = TransportError(err_text.clone());
        let classified = match err {
            SendRequestError::Connect(ConnectError::SslIsNotSupported) => Error::config(format!(
                "{what}: MORPH_BASE_URL needs TLS, which this build does not include"
            )),
            // Despite its name, awc reports end-of-file while waiting for the
            // answer (after the request was written) as `Disconnected`: the
            // server may have acted on it.
            SendRequestError::Connect(ConnectError::Disconnected) => call.lost(format!(
                "{what}: the connection closed before an answer arrived: {err_text}"
            )),
            SendRequestError::Connect(_) => Error::transient(format!(
                "{what}: could not connect to the MorphCloud API at {}: {err_text}",
                self.base_url
            )),
            SendRequestError::Url(_) | SendRequestError::Http(_) => Error::new(
                ErrorKind::Config,
                format!("{what}: cannot build the request (check MORPH_BASE_URL): {err_text}"),
            ),
            SendRequestError::Timeout => call.lost(format!(
                "{what}: no answer within {timeout:?}{}",
                self.deadline_name(call, timeout)
            )),
            _ => call.lost(format!(
                "{what}: the connection failed before an answer arrived: {err_text}"
            )),
        };
        classified.with_source(source)
    }

    fn body_error(&self, call: Call, what: &str, status: StatusCode, err: PayloadError) -> Error {
        let source = TransportError(self.scrub(&err.to_string()));
        let classified = match err {
            PayloadError::Overflow => {
                let ran = if call == Call::Exec && status.is_success() {
                    " (the command ran, but its output was too large to receive)"
                } else {
                    ""
                };
                Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "{what}: HTTP {}: the answer is larger than max_body_bytes ({} bytes){ran}",
                        status.as_u16(),
                        self.max_body_bytes
                    ),
                )
            }
            _ => call.lost(format!(
                "{what}: HTTP {}: the answer broke off: {source}",
                status.as_u16(),
            )),
        };
        classified.with_status(status.as_u16()).with_source(source)
    }

    /// Which setting a request's deadline came from, for its timeout error:
    /// every call but exec waits the request timeout, except a readiness
    /// poll near the end of the ready timeout, which waits what is left.
    fn deadline_name(&self, call: Call, timeout: Duration) -> &'static str {
        match call {
            Call::Exec => "",
            _ if timeout == self.request_timeout => " (the MorphCloud request timeout)",
            Call::Get => " (what was left of HECATE_MORPH_READY_TIMEOUT_SECONDS)",
            Call::Start | Call::List | Call::Delete | Call::Ttl => "",
        }
    }

    /// Passes a 2xx answer through and turns any other status into an error
    /// of the right kind.
    fn check(&self, call: Call, what: &str, reply: Reply) -> Result<Reply> {
        let status = reply.status;
        if status.is_success() {
            return Ok(reply);
        }
        let code = status.as_u16();
        let detail = self.scrub_and_cut(&wire::error_detail(&reply.body), MAX_QUOTED_BODY);
        let base = format!("{what}: HTTP {code}: {detail}");
        let err = match code {
            401 | 403 => Error::new(
                ErrorKind::Rejected,
                format!(
                    "{what}: HTTP {code}: MorphCloud rejected the API key (check MORPH_API_KEY): \
                     {detail}"
                ),
            ),
            404 => match call {
                Call::Exec | Call::Get | Call::Ttl => Error::new(
                    ErrorKind::InstanceGone,
                    format!(
                        "{base} (the instance no longer exists: stopped by its TTL or deleted \
                         elsewhere)"
                    ),
                ),
                Call::Start | Call::List | Call::Delete => Error::new(ErrorKind::Rejected, base),
            },
            // 409: the instance is not ready (or busy); 408: the server did
            // not get the whole request. Neither ran anything.
            408 | 409 | 429 | 503 => Error::transient(base).with_retry_after(reply.retry_after),
            400..=499 => Error::new(ErrorKind::Rejected, base),
            500..=599 => call.lost(base),
            300..=399 => Error::new(
                ErrorKind::Protocol,
                format!("{base} (unexpected redirect; redirects are not followed)"),
            ),
            _ => Error::new(ErrorKind::Protocol, format!("{base} (unexpected status)")),
        };
        Err(err.with_status(code))
    }

    /// Parses a 2xx answer's body. An error says which status the
    /// unreadable answer came with, and quotes nothing of the API key.
    fn parse<T>(&self, reply: &Reply, parse: impl FnOnce(&[u8]) -> Result<T>) -> Result<T> {
        let status = reply.status.as_u16();
        parse(&reply.body).map_err(|e| {
            let scrubbed = redact_cut_edges(&self.scrub(e.message()), &self.api_key);
            if scrubbed == e.message() {
                e.with_status(status)
            } else {
                // The parser quoted the body, and the body held the key: the
                // source (the parser's error) may quote it too, so it goes.
                Error::new(e.kind(), scrubbed).with_status(status)
            }
        })
    }

    /// `text` without the API key.
    fn scrub(&self, text: &str) -> String {
        scrub_secret(text, &self.api_key)
    }

    /// A body without the API key (unchanged, without a copy, when it
    /// holds none).
    fn scrub_bytes(&self, body: Bytes) -> Bytes {
        let key = self.api_key.as_bytes();
        if key.is_empty() || !body.windows(key.len()).any(|w| w == key) {
            return body;
        }
        let mut out = Vec::with_capacity(body.len());
        let mut rest = &body[..];
        while let Some(at) = rest.windows(key.len()).position(|w| w == key) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(REDACTED.as_bytes());
            rest = &rest[at + key.len()..];
        }
        out.extend_from_slice(rest);
        Bytes::from(out)
    }

    /// At most `max` characters of `text`, scrubbed first, and cut so that
    /// no piece of the key of [`MIN_KEY_PIECE`] or more characters is left
    /// at the cut (a body that quoted only part of the key).
    fn scrub_and_cut(&self, text: &str, max: usize) -> String {
        cut_without_secret(&self.scrub(text), &self.api_key, max)
    }
}

/// What replaces the API key in any text built from server data.
const REDACTED: &str = "[redacted]";

/// The shortest piece of the key that a cut may not leave at its edge.
const MIN_KEY_PIECE: usize = 8;

/// `text` with every occurrence of `secret` replaced.
fn scrub_secret(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_string();
    }
    text.replace(secret, REDACTED)
}

/// [`wire::truncate_chars`], then [`redact_cut_edges`] (`text` is already
/// scrubbed, so only a cut can have left a piece of the key).
fn cut_without_secret(text: &str, secret: &str, max: usize) -> String {
    redact_cut_edges(&wire::truncate_chars(text, max), secret)
}

/// `text` with any piece of `secret` of [`MIN_KEY_PIECE`] bytes or more
/// that ends right before a cut mark (`…`, which every excerpt and quote
/// in this backend ends with) replaced.
fn redact_cut_edges(text: &str, secret: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split('…').enumerate() {
        if i > 0 {
            redact_tail(&mut out, secret);
            out.push('…');
        }
        out.push_str(part);
    }
    out
}

fn redact_tail(out: &mut String, secret: &str) {
    for len in (MIN_KEY_PIECE..secret.len()).rev() {
        if secret.is_char_boundary(len) && out.ends_with(&secret[..len]) {
            out.truncate(out.len() - len);
            out.push_str(REDACTED);
            return;
        }
    }
}

/// `Retry-After` as seconds (whole or fractional) or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = text.parse::<f64>() {
        return (0.0..1e9)
            .contains(&secs)
            .then(|| Duration::from_secs_f64(secs));
    }
    let at: SystemTime = text.parse::<HttpDate>().ok()?.into();
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A query string; brackets and other reserved characters percent-encoded
/// (`metadata%5Bk%5D=v`), as the official SDK sends them.
fn encode_query<K: serde::Serialize, V: serde::Serialize>(pairs: &[(K, V)]) -> Result<String> {
    serde_urlencoded::to_string(pairs)
        .map_err(|e| Error::invalid_input(format!("cannot encode the query: {e}")).with_source(e))
}

/// One URL path segment: unreserved characters as they are, everything else
/// percent-encoded, so an odd instance id cannot change the path.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKey;

    fn config(url: &str, key: Option<&str>) -> MorphConfig {
        MorphConfig {
            base_url: url.to_string(),
            api_key: key.map(ApiKey::new),
            ..MorphConfig::default()
        }
    }

    #[test]
    fn missing_key_is_a_config_error_naming_the_variable() {
        for key in [None, Some("  ")] {
            let err = Api::new(&config("http://127.0.0.1:1/api", key)).expect_err("no key");
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.message().contains("MORPH_API_KEY"), "{err}");
        }
    }

    #[test]
    fn base_url_loses_its_trailing_slash() {
        let api = Api::new(&config("http://127.0.0.1:1/api/", Some("k"))).expect("valid");
        assert_eq!(api.base_url, "http://127.0.0.1:1/api");
    }

    #[test]
    fn debug_hides_the_key() {
        let api = Api::new(&config("http://x/api", Some("sk-secret-123"))).expect("valid");
        assert!(!format!("{api:?}").contains("sk-secret-123"));
    }

    #[test]
    fn metadata_filters_encode_brackets() {
        let q = encode_query(&[("metadata[hecate_runtime_id]", "r 1")]).expect("encodable");
        assert_eq!(q, "metadata%5Bhecate_runtime_id%5D=r+1");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(encode_segment("morphvm_ab-1.x"), "morphvm_ab-1.x");
        assert_eq!(encode_segment("../a b?"), "..%2Fa%20b%3F");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn a_cut_never_ends_in_a_piece_of_the_key() {
        let key = "sk-0123456789abcdef";
        // The key, cut by the server itself, right where the quote is cut.
        let text = format!("{}Bearer {}", "x".repeat(10), &key[..12]);
        let cut = cut_without_secret(&text, key, 28);
        assert!(!cut.contains("sk-01234"), "{cut}");
        assert!(cut.ends_with("[redacted]…"), "{cut}");
        // Shorter pieces are not the key's, and uncut text is left alone.
        assert_eq!(cut_without_secret("ab sk-0123", key, 8), "ab sk-0…");
        assert_eq!(cut_without_secret("short", key, 80), "short");
    }

    #[test]
    fn bodies_are_scrubbed_as_they_arrive() {
        let api = Api::new(&config("http://x/api", Some("k-123456789"))).expect("valid");
        let body = Bytes::from_static(b"a k-123456789 b k-123456789");
        assert_eq!(&api.scrub_bytes(body)[..], b"a [redacted] b [redacted]");
        let clean = Bytes::from_static(b"nothing here");
        assert_eq!(api.scrub_bytes(clean.clone()), clean);
    }

    #[test]
    fn secrets_are_scrubbed() {
        assert_eq!(
            scrub_secret("bad key k-1 here", "k-1"),
            "bad key [redacted] here"
        );
        assert_eq!(scrub_secret("text", ""), "text");
    }
}
