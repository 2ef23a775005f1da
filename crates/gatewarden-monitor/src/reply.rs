//! What a handler gets and gives: the checked request ([`Call`]) and the
//! response builders, shared by the status API (`http.rs`) and the policy
//! API (`policy_api.rs`) so neither imports the other.

use std::convert::Infallible;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::auth::Claims;

/// The response body: a whole buffer, or a live event stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;
/// A response as handlers build it.
pub type Resp = Response<Body>;

/// A request as handlers see it: checked, authorised, body read.
pub struct Call {
    /// The path without the query (one trailing `/` removed).
    pub path: String,
    /// The query's `k=v` pairs, decoded.
    pub params: Vec<(String, String)>,
    /// The `{…}` segments of the route's pattern, decoded, in order.
    pub caps: Vec<String>,
    /// The body (empty for routes without one).
    pub body: Bytes,
    /// Whether the body was declared `application/json`.
    pub json: bool,
    /// The token's subject, or `anonymous`.
    pub who: String,
    /// The token's claims, if one was sent.
    pub claims: Option<Claims>,
}

impl Call {
    /// The query parameter `k`, if given.
    pub fn param(&self, k: &str) -> Option<&str> {
        self.params.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str())
    }
}

/// A whole-buffer body.
pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed_unsync()
}

/// `resp` with one more header (values built here are always valid).
pub fn with(mut resp: Resp, name: HeaderName, value: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

/// A response with `status`, `Content-Type` and `body`.
pub fn response(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON response.
pub fn json_response(status: u16, body: Value) -> Resp {
    response(status, "application/json", body.to_string())
}

/// `{"error": message}` with `status`.
pub fn error(status: u16, message: impl std::fmt::Display) -> Resp {
    json_response(status, json!({"error": message.to_string()}))
}

/// An HTML page with the pages' CSP (no inline script, no framing).
pub fn page(html: &'static str) -> Resp {
    let r = response(200, "text/html; charset=utf-8", html);
    let r = with(r, header::CONTENT_SECURITY_POLICY, crate::assets::PAGE_CSP);
    with(r, header::X_FRAME_OPTIONS, "DENY")
}

/// Decodes the `%XX` escapes of a path segment (`+` stays `+`: it means a
/// space only in query strings); invalid escapes stay as they are.
pub fn url_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The `k=v&…` pairs of a query string, decoded (`application/x-www-form-urlencoded`).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `?k=v&…` of a URL, decoded.
pub fn query_params(url: &str) -> Vec<(String, String)> {
    url.split_once('?').map(|(_, q)| parse_query(q)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_takes_two_hex_digits_only() {
        let pairs = parse_query("a=%41%62+c&b=%zz&c=%+5x&d=%4");
        let want: Vec<(String, String)> = [("a", "Ab c"), ("b", "%zz"), ("c", "% 5x"), ("d", "%4")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, want);
        assert_eq!(query_params("/api/alerts?kind=port%5Fscan"), vec![("kind".to_string(), "port_scan".to_string())]);
    }
}
