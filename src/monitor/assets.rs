//! Static files for the pages (placeholder API until H2's module lands): the
//! pages' scripts and styles served from `/static/<name>`, so the pages' CSP
//! needs no `'unsafe-inline'`.

/// The Content-Security-Policy of every HTML page: scripts and styles only
/// from this origin (no inline code), and no framing (clickjacking).
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                            connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                            frame-ancestors 'none'";

/// One embedded file.
pub struct Asset {
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// The file served at `/static/<path>`, if there is one.
pub fn asset(path: &str) -> Option<Asset> {
    let _ = path;
    None
}
