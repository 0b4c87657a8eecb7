//! Requests from web pages the server did not serve are refused, so that a page open in a browser
//! on the same machine cannot drive a token-less server (cross-site request forgery), nor read it
//! through a name that resolves to loopback (DNS rebinding):
//!
//! - **Host**: every request must name the server by an IP address (its listen address, or any
//!   other: a rebinding page can only use a name of its own), `localhost`, or a name given with
//!   `--allowed-host`.
//! - **Origin**: a request that changes something (any method but GET, HEAD and OPTIONS) that
//!   carries an `Origin` must come from the server's own (the dashboard's).
//! - **Content type**: such a request with a body must name a type that browsers send across
//!   sites only after asking the server first (a CORS preflight, which weir never approves):
//!   `application/json`, `application/toml`, `application/wasm`, `application/octet-stream`.
//!   `text/plain`, `application/x-www-form-urlencoded`, `multipart/form-data` and no type at all
//!   are what a `<form>` or a `no-cors` fetch sends from any page, so they are refused. (A request
//!   without a body carries nothing to forge but itself; a browser sending one across sites names
//!   its origin, which the previous rule checks.)
//!
//! The host is checked before anything else, the rest after the token (a request without the
//! right token is refused for that first).
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};

/// Content types a page on any site may send without a preflight (the Fetch standard's
/// CORS-safelisted ones).
const SENT_WITHOUT_ASKING: [&str; 3] = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"];

/// Refuses a request naming a host that is not this server's.
pub(super) async fn known_host(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    match check_host(request.headers(), &state.allowed_hosts) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Refuses a request that changes something from another origin, or with a body of a type any
/// page may send.
pub(super) async fn same_site(request: Request, next: Next) -> Response {
    match check_change(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// A header as text (`None` when absent).
fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

fn check_host(headers: &HeaderMap, allowed_hosts: &[String]) -> Result<(), ApiError> {
    match text(headers, header::HOST).filter(|h| !host_allowed(h, allowed_hosts)) {
        None => Ok(()),
        Some(host) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this server does not answer requests for host \"{host}\" (a web page may be reaching it through a \
                 name of its own: DNS rebinding); use its IP address or localhost, or start it with --allowed-host \
                 NAME for a name of yours"
            ),
        )),
    }
}

fn check_change(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let host = text(headers, header::HOST);
    if let Some(origin) = text(headers, header::ORIGIN) {
        let own = host.is_some_and(|host| ["http://", "https://"].iter().any(|s| origin == format!("{s}{host}")));
        if !own {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "refused a {method} from a page of origin \"{origin}\", not this server's: only its own dashboard \
                     and clients that are not browsers may change anything here"
                ),
            ));
        }
    }
    let length = text(headers, header::CONTENT_LENGTH).and_then(|n| n.parse::<u64>().ok());
    if !(length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING)) {
        return Ok(());
    }
    let essence =
        text(headers, header::CONTENT_TYPE).map(|t| t.split(';').next().unwrap_or_default().trim().to_lowercase());
    match essence.as_deref() {
        Some(kind) if !kind.is_empty() && !SENT_WITHOUT_ASKING.contains(&kind) => Ok(()),
        given => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "a {method} with a body needs Content-Type: application/json (application/toml for a job file, \
                 application/wasm for a module){}: web pages on any site can send the other types without asking, \
                 so this server refuses them",
                given.map(|g| format!(", not \"{g}\"")).unwrap_or_default()
            ),
        )),
    }
}

/// Whether `host` (a `Host` header: a name or address, perhaps with a port) names this server.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| match port.parse::<u16>() {
            Ok(_) => name,
            Err(_) => host,
        }),
    };
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(checked: Result<(), ApiError>) -> StatusCode {
        checked.err().map_or(StatusCode::OK, |e| e.into_response().status())
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), v.parse().unwrap())).collect()
    }

    #[test]
    fn hosts_by_address_localhost_or_allowed_name() {
        let allowed = ["weir.example".to_string()];
        for ok in ["127.0.0.1:8081", "[::1]:8081", "10.1.2.3", "localhost:8081", "LOCALHOST", "weir.example:80"] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for refused in ["attacker.example:8081", "attacker.example", "127.0.0.1.nip.io:8081", "localhost.evil:1"] {
            assert!(!host_allowed(refused, &allowed), "{refused}");
        }
        assert_eq!(status(check_host(&headers(&[(header::HOST, "evil.example")]), &[])), StatusCode::FORBIDDEN);
    }

    #[test]
    fn state_changes_need_a_type_browsers_ask_about_and_the_own_origin() {
        let host = (header::HOST, "127.0.0.1:8081");
        let body = (header::CONTENT_LENGTH, "5");
        let json = (header::CONTENT_TYPE, "application/json");
        assert!(check_change(&Method::POST, &headers(&[host.clone(), body.clone(), json.clone()])).is_ok());
        let own = (header::ORIGIN, "http://127.0.0.1:8081");
        assert!(check_change(&Method::POST, &headers(&[host.clone(), body.clone(), json.clone(), own])).is_ok());
        let other = (header::ORIGIN, "http://127.0.0.1:9999");
        let from_elsewhere = headers(&[host.clone(), json, other]);
        assert_eq!(status(check_change(&Method::POST, &from_elsewhere)), StatusCode::FORBIDDEN);
        for kind in ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "Multipart/Form-Data; b=1"] {
            let given = headers(&[host.clone(), body.clone(), (header::CONTENT_TYPE, kind)]);
            assert_eq!(status(check_change(&Method::POST, &given)), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        let untyped = headers(&[host.clone(), body]);
        assert_eq!(status(check_change(&Method::POST, &untyped)), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(check_change(&Method::DELETE, &headers(std::slice::from_ref(&host))).is_ok(), "no body, no origin");
        assert!(check_change(&Method::GET, &headers(&[host])).is_ok(), "reading needs no content type");
    }
}
