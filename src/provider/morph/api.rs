//! The HTTP client of the MorphCloud instance API, and the classification of
//! its failures into [`ErrorKind`](crate::error::ErrorKind)s.
//!
//! This module owns the awc client (one per arbiter thread, since awc's client
//! is not `Send`), the request settings (bearer auth, JSON content type, no
//! redirects, an explicit deadline per request, a body limit), and the one
//! place where a transport failure or an HTTP status becomes an error kind.
//! What a failure means depends on the call: after an exec or a create may
//! have reached the server, a lost answer is
//! [`Indeterminate`](crate::error::ErrorKind::Indeterminate) (the start path
//! then looks the create up before anything retries it); for idempotent calls
//! the same loss is [`Transient`](crate::error::ErrorKind::Transient). A
//! timeout names the setting its deadline came from.
//! The API key only ever goes into the `Authorization` header. Every answer
//! body is scrubbed of it as it arrives, before anything parses, quotes or
//! returns it (a server or proxy may echo the request's headers into an
//! error, a non-JSON page, an instance id or a command's output), and a
//! quote cut short never ends in a piece of it. The whole answer, body
//! included, is read within the request's deadline. Errors name the request by its
//! route (`POST /instance/{id}/exec`), not by the instance's id: they reach
//! the agent, and the callers' log lines carry the id.
//!
//! The classification of failures is in [`classify`]; reading an answer's
//! body and scrubbing the key are in [`body`].

mod body;
mod classify;
mod sse;

pub(crate) use self::sse::StreamedReply;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use awc::http::header::{self, HeaderMap, HeaderValue, HttpDate};
use awc::http::{Method, StatusCode};
use bytes::Bytes;

use self::body::redact_cut_edges;
use super::wire::{self, ExecReply, InstanceInfo, StartBody};
use crate::config::MorphConfig;
use crate::error::{Error, Result};

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

/// An HTTP answer, whatever its status.
struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Bytes,
}

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
    /// [`Config`](crate::error::ErrorKind::Config) error if there is no usable API key or
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
    /// [`InstanceGone`](crate::error::ErrorKind::InstanceGone).
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
        let body = self
            .read_body(call, what, status, &mut response, timeout, started)
            .await?;
        Ok(Reply {
            status,
            retry_after,
            body,
        })
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
    use super::body::{cut_without_secret, scrub_secret};
    use super::*;
    use crate::config::ApiKey;
    use crate::error::ErrorKind;

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
