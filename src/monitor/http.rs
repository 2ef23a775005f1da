//! The dashboard, JSON API, live events, health check and Prometheus
//! endpoint, served by tiny_http on two named worker threads (plus one thread
//! per live event stream, at most [`super::events::MAX_SUBSCRIBERS`]).
//!
//! | path | who |
//! |---|---|
//! | `/`, `/healthz`, `/metrics`, `/.well-known/jwks.json` | anyone |
//! | `GET /api/…` | viewer token, or anyone with `http.public_status = true` |
//! | `POST /api/…` | admin token |
//!
//! Tokens come in `Authorization: Bearer …`, or as `?access_token=` where a
//! browser cannot set headers (EventSource). Every `/api` request takes one
//! token from the client's rate-limit bucket first (429 when empty).

use std::io::{Cursor, Read, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use super::alerts::{parse_kind, parse_severity, AlertQuery, AlertState};
use super::auth::{AccessRole, AuthError, Claims, RateLimiter, TokenSigner, TokenVerifier};
use super::MonitorState;
use crate::metrics::Counter;

/// The page, embedded so the appliance needs no files and no CDN.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// Worker threads answering requests.
pub const WORKERS: usize = 2;
/// Largest request body read (JSON for write actions).
pub const MAX_BODY: u64 = 16 * 1024;

/// Who may do what, and how fast.
pub struct Access {
    /// Signs tokens (for the JWKS and `replay --serve`'s login link).
    pub signer: TokenSigner,
    verifier: TokenVerifier,
    /// Reads without a token.
    pub public_status: bool,
    limiter: Mutex<RateLimiter>,
}

impl Access {
    /// Access control from the `[http]` and `[monitor]` config: the configured key (or an ephemeral one).
    pub fn from_config(cfg: &crate::config::Config) -> anyhow::Result<Access> {
        let signer = TokenSigner::from_config(cfg)?;
        if signer.path.is_none() {
            tracing::warn!("no monitor.data_dir or http.jwt_key: tokens are signed with a key that dies with this process, and `gatewarden token issue` cannot make any");
        }
        let mut access =
            Access::new(signer, cfg.http.public_status, cfg.http.rate_limit_per_s, cfg.http.rate_limit_burst)?;
        access.verifier = access.verifier.with_max_ttl_s(cfg.http.max_token_ttl_s);
        Ok(access)
    }

    /// Access control with `signer`'s key as the JWKS.
    pub fn new(signer: TokenSigner, public_status: bool, rate: u32, burst: u32) -> anyhow::Result<Access> {
        let verifier = TokenVerifier::from_jwks(&signer.jwks())?;
        Ok(Access { signer, verifier, public_status, limiter: Mutex::new(RateLimiter::new(rate, burst)) })
    }
}

/// How often `/api/status` is rendered while someone polls it: pollers
/// (scripts, load balancers, wallboards) cost one rendering per interval, not
/// per request. A background thread renders it, so no request waits for a
/// rendering (that wait was the p99 under load); a request renders inline
/// only when nobody polled for a while ([`STATUS_STALE`]).
pub const STATUS_CACHE: Duration = Duration::from_millis(250);
/// Past this age a cached `/api/status` is not served.
pub const STATUS_STALE: Duration = Duration::from_secs(1);
/// The background rendering stops this long after the last request.
const STATUS_IDLE_MS: u64 = 5_000;

struct Ctx {
    state: Arc<MonitorState>,
    status_cache: Mutex<Option<(Instant, Arc<str>)>>,
    /// When `/api/status` was last asked for (ms since the epoch).
    status_wanted: std::sync::atomic::AtomicU64,
    access: Access,
    stop: Arc<AtomicBool>,
    refused: [Counter; 4],
}

/// A running HTTP server; dropping it does not stop it, call [`HttpServer::stop`].
pub struct HttpServer {
    /// The bound address (useful when the port was 0).
    pub addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    ctx: Arc<Ctx>,
}

impl HttpServer {
    /// Binds `listen` and serves with default access: an ephemeral key, public reads.
    /// For tests and tools; daemons use [`HttpServer::start_with`].
    pub fn start(listen: &str, state: Arc<MonitorState>) -> anyhow::Result<HttpServer> {
        HttpServer::start_with(listen, state, Access::new(TokenSigner::ephemeral(), true, 1000, 2000)?)
    }

    /// Binds `listen` and serves on threads named `http`.
    pub fn start_with(listen: &str, state: Arc<MonitorState>, access: Access) -> anyhow::Result<HttpServer> {
        let server = nodelay_listener(listen)
            .and_then(|l| Server::from_listener(l, None).map_err(|e| std::io::Error::other(e.to_string())))
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot listen on {listen}: {e}. Set http.listen in the config to a free address, e.g. \"127.0.0.1:8081\""
                )
            })?;
        let server = Arc::new(server);
        let addr = server.server_addr().to_ip().context("HTTP server bound to a non-IP address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let refused = ["missing", "invalid", "forbidden", "rate_limited"].map(|r| {
            state.registry.counter(
                "gatewarden_http_refused_total",
                "API requests refused, by reason.",
                &[("reason", r)],
            )
        });
        let ctx = Arc::new(Ctx {
            state,
            status_cache: Mutex::new(None),
            status_wanted: std::sync::atomic::AtomicU64::new(0),
            access,
            stop: stop.clone(),
            refused,
        });
        let mut threads = Vec::new();
        {
            let ctx = ctx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("http-status".into())
                    .spawn(move || {
                        while !ctx.stop.load(Ordering::Relaxed) {
                            std::thread::sleep(STATUS_CACHE);
                            let polled = ctx.status_wanted.load(Ordering::Relaxed);
                            if polled > 0 && super::unix_now_ms().saturating_sub(polled) < STATUS_IDLE_MS {
                                render_status(&ctx);
                            }
                        }
                    })
                    .context("spawning the status renderer")?,
            );
        }
        for i in 0..WORKERS {
            let server = server.clone();
            let ctx = ctx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("http{i}"))
                    .spawn(move || {
                        while !ctx.stop.load(Ordering::Relaxed) {
                            match server.recv_timeout(Duration::from_millis(100)) {
                                Ok(Some(req)) => handle(req, &ctx),
                                Ok(None) => {}
                                Err(e) => tracing::warn!(error = %e, "HTTP accept failed"),
                            }
                        }
                    })
                    .context("spawning an HTTP thread")?,
            );
        }
        tracing::info!(%addr, "status page at http://{addr}/");
        Ok(HttpServer { addr, stop, threads, ctx })
    }

    /// A token for the page's login link (`replay --serve` prints one for its operator).
    pub fn issue_token(&self, sub: &str, role: AccessRole, ttl_s: u64) -> String {
        self.ctx.access.signer.issue(sub, role, ttl_s, super::unix_now())
    }

    /// Stops serving and waits for the threads (at most ~1 s: live streams notice within a second).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A write's body, up to `limit` bytes: 400 if it cannot be read, 413 if larger.
fn read_body(req: &mut Request, limit: u64, what: &str) -> Result<Vec<u8>, Resp> {
    let mut body = Vec::new();
    if let Err(e) = req.as_reader().take(limit + 1).read_to_end(&mut body) {
        return Err(error(400, format!("reading the {what} failed: {e}")));
    }
    if body.len() as u64 > limit {
        return Err(error(413, format!("{what} exceeds {limit} bytes")));
    }
    Ok(body)
}

/// Renders `/api/status` into the cache (outside the cache's lock, so readers never wait for it).
fn render_status(ctx: &Ctx) -> Arc<str> {
    let body: Arc<str> = ctx.state.status_json().to_string().into();
    *ctx.status_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), body.clone()));
    body
}

/// A listening socket with TCP_NODELAY, which Linux passes on to accepted
/// connections: tiny_http writes head and body separately, and Nagle plus
/// the client's delayed ACK would hold every body back ~40 ms.
fn nodelay_listener(listen: &str) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::ToSocketAddrs;
    let addr = listen
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on"))?;
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_tcp_nodelay(true)?;
    sock.bind(&addr.into())?;
    sock.listen(128)?;
    Ok(sock.into())
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

type Resp = Response<Cursor<Vec<u8>>>;

fn json_response(status: u16, body: Value) -> Resp {
    Response::from_string(body.to_string())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
        .with_header(header("Cache-Control", "no-store"))
}

fn error(status: u16, message: impl std::fmt::Display) -> Resp {
    json_response(status, json!({"error": message.to_string()}))
}

/// Decodes `%XX` and `+` in a query value.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `?k=v&…` of a URL, decoded (shared with the policy API).
pub(super) fn query_params(url: &str) -> Vec<(String, String)> {
    url.split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (url_decode(k), url_decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn bearer(req: &Request, params: &[(String, String)]) -> Option<String> {
    for h in req.headers() {
        if h.field.equiv("Authorization") {
            let v = h.value.as_str().trim();
            return Some(
                v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim().to_string(),
            );
        }
    }
    params.iter().find(|(k, _)| k == "access_token").map(|(_, v)| v.clone())
}

/// A time filter: Unix seconds (fractions allowed) or RFC 3339-ish `2026-11-24T00:00:00Z` is not parsed; seconds only.
fn parse_time(v: &str) -> Result<u64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0 && *t < 1e11)
        .map(|t| (t * 1e9) as u64)
        .ok_or_else(|| format!("{v:?} is not a time: give Unix seconds, e.g. 1795000000"))
}

fn alert_query(params: &[(String, String)]) -> Result<AlertQuery, String> {
    let mut q = AlertQuery { limit: 100, ..Default::default() };
    for (k, v) in params {
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "since" => q.since_ns = Some(parse_time(v)?),
            "until" => q.until_ns = Some(parse_time(v)?),
            "severity" => {
                q.min_severity =
                    Some(parse_severity(v).ok_or_else(|| format!("severity {v:?}: use high, medium or low (or 1-3)"))?)
            }
            "kind" => {
                q.kind = Some(parse_kind(v).ok_or_else(|| {
                    let kinds: Vec<&str> = super::alerts::ALL_KINDS.iter().map(|k| k.as_str()).collect();
                    format!("kind {v:?}: use one of {}", kinds.join(", "))
                })?)
            }
            "source" | "src" => {
                q.source =
                    Some(v.parse::<IpAddr>().map_err(|_| format!("source {v:?} is not an IPv4 or IPv6 address"))?)
            }
            "state" => {
                q.state = Some(
                    AlertState::parse(v).ok_or_else(|| format!("state {v:?}: use new, acknowledged or resolved"))?,
                )
            }
            "limit" => {
                q.limit = v.parse::<usize>().ok().filter(|n| (1..=10_000).contains(n)).ok_or("limit: 1 to 10000")?
            }
            "access_token" => {}
            other => {
                return Err(format!("unknown filter {other:?}: use since, until, severity, kind, source, state, limit"))
            }
        }
    }
    Ok(q)
}

fn refuse(ctx: &Ctx, e: &AuthError) -> Resp {
    let i = match e {
        AuthError::Missing => 0,
        AuthError::Invalid(_) | AuthError::Expired(_) => 1,
        AuthError::Forbidden { .. } => 2,
    };
    ctx.refused[i].inc();
    let mut r = error(e.status(), e);
    if e.status() == 401 {
        r = r.with_header(header("WWW-Authenticate", "Bearer realm=\"gatewarden\""));
    }
    r
}

/// The headers both pages carry: the strict CSP, no MIME sniffing, no referrer, no framing.
pub(super) fn page_headers(r: Resp) -> Resp {
    r.with_header(header("Content-Security-Policy", super::assets::PAGE_CSP))
        .with_header(header("X-Content-Type-Options", "nosniff"))
        .with_header(header("Referrer-Policy", "no-referrer"))
        .with_header(header("X-Frame-Options", "DENY"))
}

fn send(req: Request, response: Resp) {
    if let Err(e) = req.respond(response) {
        tracing::debug!(error = %e, "client went away before the response was sent");
    }
}

/// Routes one request.
fn handle(mut req: Request, ctx: &Arc<Ctx>) {
    let url = req.url().to_string();
    let path = url.split('?').next().unwrap_or("").to_string();
    let method = req.method().clone();
    let is_head = method == Method::Head;
    let method = if is_head { Method::Get } else { method };
    // The policy page (#9) is public like the dashboard; its API is checked below.
    if path == "/policy" || path == "/policy/" {
        return super::policy_api::handle(req, &ctx.state);
    }
    // The pages' scripts and styles (embedded).
    if method == Method::Get && path.starts_with("/static/") {
        let r = match super::assets::asset(&path) {
            Some(a) => Response::from_data(a.body)
                .with_header(header("Content-Type", a.content_type))
                .with_header(header("X-Content-Type-Options", "nosniff"))
                .with_header(header("Cache-Control", "no-cache")),
            None => error(404, format!("no file {path}")),
        };
        return send(req, r);
    }
    // Public, unlimited.
    if method == Method::Get {
        let r = match path.as_str() {
            "/" | "/index.html" => Some(page_headers(
                Response::from_string(STATUS_PAGE).with_header(header("Content-Type", "text/html; charset=utf-8")),
            )),
            "/healthz" => Some(json_response(200, json!({"status": "ok", "uptime_s": ctx.state.uptime_s()}))),
            "/metrics" => Some(
                Response::from_string(ctx.state.registry.render_prometheus())
                    .with_header(header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")),
            ),
            "/.well-known/jwks.json" => Some(json_response(200, ctx.access.signer.jwks())),
            _ => None,
        };
        if let Some(r) = r {
            return send(req, r);
        }
    }
    let known_public = ["/", "/index.html", "/healthz", "/metrics", "/.well-known/jwks.json"];
    if known_public.contains(&path.as_str()) {
        return send(
            req,
            json_response(
                405,
                json!({"error": "method not allowed", "method": method.as_str(), "allowed": ["GET", "HEAD"]}),
            )
            .with_header(header("Allow", "GET, HEAD")),
        );
    }
    let policy_verb = super::policy_api::handles(&path) && (method == Method::Put || method == Method::Delete);
    if method != Method::Get && method != Method::Post && !policy_verb {
        return send(
            req,
            json_response(
                405,
                json!({"error": "method not allowed", "method": method.as_str(), "allowed": ["GET", "HEAD", "POST"]}),
            )
            .with_header(header("Allow", "GET, HEAD, POST")),
        );
    }
    if !path.starts_with("/api/") {
        return send(
            req,
            json_response(
                404,
                json!({"error": "not found", "path": path, "try": ["/", "/api/status", "/api/alerts", "/api/events", "/healthz", "/metrics", "/.well-known/jwks.json"]}),
            ),
        );
    }
    // The API: rate limit, then token.
    let client = req.remote_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let limited = ctx.access.limiter.lock().unwrap_or_else(|e| e.into_inner()).check(client, Instant::now());
    if let Err(wait) = limited {
        ctx.refused[3].inc();
        return send(
            req,
            error(429, format!("too many requests from {client}; retry in {wait:.2} s"))
                .with_header(header("Retry-After", &format!("{}", wait.ceil().max(1.0) as u64))),
        );
    }
    let params = query_params(&url);
    let token = bearer(&req, &params);
    let now = super::unix_now();
    let segs: Vec<&str> = path.trim_start_matches("/api/").split('/').filter(|s| !s.is_empty()).collect();
    let is_write = method != Method::Get;
    let needed = if is_write { AccessRole::Admin } else { AccessRole::Viewer };
    let anonymous_ok = !is_write && ctx.access.public_status;
    let claims = match ctx.access.verifier.authorize(token.as_deref(), needed, anonymous_ok, now) {
        Ok(c) => c,
        // Anyone may learn who this node is (what /healthz-style checks and boot tests need).
        Err(AuthError::Missing) if segs == ["whoami"] && !is_write => {
            return send(req, json_response(200, whoami(&None, ctx.access.public_status)));
        }
        Err(AuthError::Missing) if segs == ["status"] && !is_write => {
            let mut v = ctx.state.identity_json();
            v["auth"] = json!("send a viewer token for the rest (gatewarden token issue --role viewer)");
            return send(req, json_response(200, v));
        }
        Err(e) => return send(req, refuse(ctx, &e)),
    };
    // Group policies (#9): same rate limit and tokens (reads viewer, writes admin).
    if super::policy_api::handles(&path) {
        return super::policy_api::handle(req, &ctx.state);
    }
    let who = claims.as_ref().map(|c| c.sub.clone()).unwrap_or_else(|| "anonymous".into());
    let response = match (method.clone(), segs.as_slice()) {
        (Method::Get, ["status"]) => {
            ctx.status_wanted.store(super::unix_now_ms(), Ordering::Relaxed);
            let cached = ctx.status_cache.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let body = match cached {
                Some((at, body)) if at.elapsed() < STATUS_STALE => body,
                _ => render_status(ctx),
            };
            Response::from_string(&*body)
                .with_header(header("Content-Type", "application/json"))
                .with_header(header("Cache-Control", "no-store"))
        }
        (Method::Get, ["whoami"]) => json_response(200, whoami(&claims, ctx.access.public_status)),
        (Method::Get, ["alerts"]) => match alert_query(&params) {
            Ok(q) => match ctx.state.query_alerts(&q) {
                Ok(alerts) => json_response(200, json!({"alerts": alerts})),
                Err(e) => error(500, format!("{e:#}")),
            },
            Err(e) => error(400, e),
        },
        (Method::Get, ["model"]) => json_response(200, ctx.state.model_json()),
        (Method::Get, ["settings"]) => match ctx.state.settings.get() {
            Some(s) => json_response(200, s.json()),
            None => error(404, "settings are kept by the monitor role"),
        },
        (Method::Post, ["settings"]) => {
            let r = match (
                read_body(&mut req, super::settings::MAX_SETTINGS_BODY, "settings body"),
                ctx.state.settings.get(),
            ) {
                (Err(e), _) => e,
                (_, None) => error(404, "settings are kept by the monitor role"),
                (Ok(body), Some(s)) => match s.save(&body, &who) {
                    Ok(v) => json_response(200, v),
                    Err(r) => error(r.status, r.reason),
                },
            };
            return send(req, r);
        }
        (Method::Post, ["model"]) => {
            // The training page's upload: larger than other API bodies.
            let r = match read_body(
                &mut req,
                super::training::MAX_UPLOAD_BODY,
                "upload (a detector model must stay small)",
            ) {
                Err(e) => e,
                Ok(body) => match ctx.state.training.upload(&body, &who) {
                    Ok(v) => json_response(200, v),
                    Err(r) => error(r.status, r.reason),
                },
            };
            return send(req, r);
        }
        (Method::Get, ["nodes"]) => json_response(200, json!({"nodes": ctx.state.nodes()})),
        (Method::Get, ["blocks"]) => json_response(200, json!({"blocks": ctx.state.blocks()})),
        (Method::Get, ["events"]) => return start_stream(req, ctx),
        (Method::Post, ["alerts", id, action]) => {
            let state = match *action {
                "acknowledge" | "ack" => Some(AlertState::Acknowledged),
                "resolve" => Some(AlertState::Resolved),
                "reopen" => Some(AlertState::New),
                _ => None,
            };
            match (id.parse::<u64>(), state) {
                (Ok(id), Some(st)) => match ctx.state.set_alert_state(id, st, &who) {
                    Ok(v) => json_response(200, v),
                    Err(e) => error(404, format!("{e:#}")),
                },
                (Err(_), _) => error(400, format!("alert id {id:?} is not a number")),
                (_, None) => error(404, format!("unknown action {action:?}: use acknowledge, resolve or reopen")),
            }
        }
        // The page sends the address percent-encoded (an IPv6 address's colons).
        (Method::Post, ["unblock", ip]) => match url_decode(ip).parse::<IpAddr>() {
            Ok(ip) => match ctx.state.unblock(ip, &who) {
                Ok(super::Unblocked::Done(msg)) => {
                    tracing::info!(%ip, by = %who, "unblocked from the dashboard");
                    json_response(200, json!({"ip": ip, "result": msg}))
                }
                // Routers on other nodes answer later, in the alerts.
                Ok(super::Unblocked::Asked(msg)) => json_response(202, json!({"ip": ip, "result": msg})),
                Err(e) => error(409, format!("{e:#}")),
            },
            Err(_) => error(400, format!("{:?} is not an IPv4 or IPv6 address", url_decode(ip))),
        },
        (Method::Get, _) => error(404, format!("no API endpoint {path}")),
        (m, _) => error(405, format!("{} {path} is not an API action", m.as_str())),
    };
    // Drain a small body so keep-alive connections stay in sync.
    let mut sink = Vec::new();
    let _ = req.as_reader().take(MAX_BODY).read_to_end(&mut sink);
    send(req, if is_head { response.with_data(Cursor::new(Vec::new()), Some(0)) } else { response });
}

fn whoami(claims: &Option<Claims>, public: bool) -> Value {
    match claims {
        Some(c) => json!({"sub": c.sub, "role": c.role.as_str(), "exp": c.exp, "public_status": public}),
        None => json!({"sub": null, "role": null, "public_status": public}),
    }
}

/// Streams Server-Sent Events to one page on its own thread until the page goes away or the server stops.
fn start_stream(req: Request, ctx: &Arc<Ctx>) {
    let Some(rx) = ctx.state.events.subscribe() else {
        return send(req, error(503, "too many live pages connected; close one or poll /api/status"));
    };
    let ctx = ctx.clone();
    let spawned = std::thread::Builder::new().name("sse".into()).spawn(move || {
        let mut w = req.into_writer();
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                    Connection: close\r\nX-Accel-Buffering: no\r\n\r\nretry: 2000\n\n";
        // The first event is the whole state, so the page needs no second request.
        let hello = format!("event: hello\ndata: {}\n\n", ctx.state.status_json());
        if w.write_all(head.as_bytes()).and_then(|_| w.write_all(hello.as_bytes())).and_then(|_| w.flush()).is_err() {
            return;
        }
        let mut idle = 0;
        while !ctx.stop.load(Ordering::Relaxed) {
            let msg = match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(m) => {
                    idle = 0;
                    m
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    idle += 1;
                    if idle < 15 {
                        continue;
                    }
                    idle = 0;
                    ": keep-alive\n\n".into()
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if w.write_all(msg.as_bytes()).and_then(|_| w.flush()).is_err() {
                break;
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a live event stream");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_and_filters_are_checked() {
        assert_eq!(
            query_params("/api/alerts?kind=port_scan&source=2001%3Adb8%3A%3A1&x="),
            [("kind".into(), "port_scan".into()), ("source".into(), "2001:db8::1".into()), ("x".into(), String::new())]
        );
        assert_eq!(url_decode("a%2"), "a%2");
        assert_eq!(url_decode("%"), "%");
        let q = alert_query(&query_params("/?kind=syn_flood&severity=medium&since=1795000000.5&limit=5")).unwrap();
        assert_eq!(q.limit, 5);
        assert_eq!(q.since_ns, Some(1_795_000_000_500_000_000));
        assert!(alert_query(&query_params("/?kind=bogus")).unwrap_err().contains("port_scan"));
        assert!(alert_query(&query_params("/?source=nope")).is_err());
        assert!(alert_query(&query_params("/?limit=0")).is_err());
        assert!(alert_query(&query_params("/?since=-5")).is_err());
        assert!(alert_query(&query_params("/?colour=red")).unwrap_err().contains("unknown filter"));
    }
}
