//! The status page, JSON API, health check and Prometheus endpoint, served by
//! tiny_http on its own named thread.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use super::MonitorState;

/// The page, embedded so the appliance needs no files and no CDN.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// A running HTTP server; dropping it does not stop it, call [`HttpServer::stop`].
pub struct HttpServer {
    /// The bound address (useful when the port was 0).
    pub addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `listen` and serves on a thread named `http`.
    pub fn start(listen: &str, state: Arc<MonitorState>) -> anyhow::Result<HttpServer> {
        let server = Server::http(listen).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {listen}: {e}. Set http.listen in the config to a free address, e.g. \"127.0.0.1:8081\""
            )
        })?;
        let addr = server.server_addr().to_ip().context("HTTP server bound to a non-IP address")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    match server.recv_timeout(Duration::from_millis(100)) {
                        Ok(Some(req)) => handle(req, &state),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "HTTP accept failed"),
                    }
                }
            })
            .context("spawning the HTTP thread")?;
        tracing::info!(%addr, "status page at http://{addr}/");
        Ok(HttpServer { addr, stop, thread: Some(thread) })
    }

    /// Stops serving and waits for the thread (at most ~100 ms).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

fn json_response(status: u16, body: serde_json::Value) -> Response<Cursor<Vec<u8>>> {
    Response::from_string(body.to_string())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
        .with_header(header("Cache-Control", "no-store"))
}

/// Routes one request. Public for tests that drive it without a socket.
fn handle(req: Request, state: &MonitorState) {
    let path = req.url().split('?').next().unwrap_or("").to_string();
    if super::policy_api::handles(&path) {
        return super::policy_api::handle(req, state);
    }
    let method = req.method().clone();
    let known = ["/", "/api/status", "/api/alerts", "/healthz", "/metrics"];
    let response = if !known.contains(&path.as_str()) {
        json_response(404, json!({"error": "not found", "path": path, "try": known}))
    } else if method != Method::Get && method != Method::Head {
        json_response(
            405,
            json!({"error": "method not allowed", "method": method.as_str(), "allowed": ["GET", "HEAD"]}),
        )
        .with_header(header("Allow", "GET, HEAD"))
    } else {
        match path.as_str() {
            "/" => Response::from_string(STATUS_PAGE)
                .with_header(header("Content-Type", "text/html; charset=utf-8"))
                .with_header(header(
                    "Content-Security-Policy",
                    "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'",
                )),
            "/api/status" => json_response(200, state.status_json()),
            "/api/alerts" => json_response(200, json!({"alerts": state.recent_alerts_json(super::RECENT_ALERTS)})),
            "/healthz" => json_response(200, json!({"status": "ok", "uptime_s": state.uptime_s()})),
            "/metrics" => Response::from_string(state.registry.render_prometheus())
                .with_header(header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")),
            _ => unreachable!("path was checked against the known list"),
        }
    };
    if let Err(e) = req.respond(response) {
        tracing::debug!(error = %e, "client went away before the response was sent");
    }
}
