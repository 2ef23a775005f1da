//! The status page, the JSON API and `/metrics` (every role).

use super::{Context, Service, Wiring};
use crate::monitor::http::{Access, HttpServer};

/// The HTTP server on `[http] listen`.
#[derive(Default)]
pub struct Http(Option<HttpServer>);

impl Service for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn start(&mut self, cx: &Context<'_>, _w: &mut Wiring) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let cfg = cx.cfg;
        let access =
            Access::from_config(&cfg.http, &cfg.monitor).context("loading the token signing key (http.jwt_key)")?;
        self.0 = Some(HttpServer::start_with(&cfg.http.listen, cx.state.clone(), access)?);
        tracing::info!(role = %cx.role, source = %cx.role_source, node = %cfg.node_id, "gatewarden {} starting", env!("CARGO_PKG_VERSION"));
        Ok(())
    }

    fn stop(self: Box<Self>, _w: &mut Wiring) {
        if let Some(h) = self.0 {
            h.stop();
        }
    }
}
