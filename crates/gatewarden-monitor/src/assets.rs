//! The pages' scripts and styles as files under `/static/`, embedded in the
//! binary (the appliance needs no files and no CDN), and the Content Security
//! Policy both pages are served with.
//!
//! The policy allows no inline script or style at all (issue #14): an
//! injected `<script>`, `onclick=` or `style=` does nothing, so a bug that
//! lets device-controlled text (an alert reason, a node name) into the page's
//! markup cannot run code with the operator's token. That is why every
//! script, stylesheet and handler lives here rather than in the HTML, and why
//! the scripts set styles through the CSSOM (`el.style.width = …`, which CSP
//! allows) and never through a `style` attribute.

/// The Content-Security-Policy of the dashboard and the policy page: only
/// this origin's own files; no inline script or style, no `eval`, no plugins;
/// no framing (clickjacking), no `<base>` rewriting, forms post only here.
/// `img-src data:` is for the page's empty favicon.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// The `Content-Type` to send (with `X-Content-Type-Options: nosniff`, so
    /// a browser runs a script only when it is labelled as one).
    pub content_type: &'static str,
    /// The file's bytes.
    pub body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every embedded file: request path, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("/static/status.js", JS, include_bytes!("static/status.js")),
    ("/static/status.css", CSS, include_bytes!("static/status.css")),
    ("/static/model.js", JS, include_bytes!("static/model.js")),
    ("/static/model.css", CSS, include_bytes!("static/model.css")),
    ("/static/policy.js", JS, include_bytes!("static/policy.js")),
    ("/static/policy.css", CSS, include_bytes!("static/policy.css")),
];

/// The embedded file at request path `path` (e.g. `/static/status.js`, without
/// the query string), or `None` (answer 404). Only exact names match: there is
/// no file system behind it, so `..` and friends find nothing.
pub fn asset(path: &str) -> Option<Asset> {
    FILES.iter().find(|(p, _, _)| *p == path).map(|&(_, content_type, body)| Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGES: [(&str, &str); 2] =
        [("status.html", include_str!("status.html")), ("policy.html", include_str!("policy.html"))];

    #[test]
    fn the_policy_allows_nothing_inline_and_no_framing() {
        for word in ["unsafe-inline", "unsafe-eval", "unsafe-hashes", "*", "http:", "https:"] {
            assert!(!PAGE_CSP.contains(word), "{word} in {PAGE_CSP}");
        }
        let directives: Vec<&str> = PAGE_CSP.split(';').map(str::trim).collect();
        for d in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ] {
            assert!(directives.contains(&d), "{d} missing from {PAGE_CSP}");
        }
        assert!(PAGE_CSP.is_ascii() && !PAGE_CSP.contains(['\r', '\n']), "a valid header value");
    }

    #[test]
    fn the_pages_have_no_inline_script_style_or_handlers_and_their_files_exist() {
        for (name, html) in PAGES {
            let lower = html.to_ascii_lowercase();
            assert!(!lower.contains("<style"), "{name}: inline <style>");
            assert!(!lower.contains(" style="), "{name}: a style attribute");
            assert!(!lower.contains("javascript:"), "{name}: a javascript: URL");
            // Every <script> is an empty element with a src.
            for (i, _) in lower.match_indices("<script") {
                let tag_end = i + lower[i..].find('>').unwrap();
                assert!(lower[i..tag_end].contains(" src=\"/static/"), "{name}: inline script at byte {i}");
                assert!(lower[tag_end + 1..].starts_with("</script>"), "{name}: script at byte {i} has a body");
            }
            // No on…= attribute inside any tag.
            for (i, _) in lower.match_indices('<') {
                let tag = &lower[i..i + lower[i..].find('>').unwrap()];
                let handler = tag.split_whitespace().skip(1).find(|a| a.starts_with("on") && a.contains('='));
                assert!(handler.is_none(), "{name}: inline handler {handler:?} in {tag}>");
            }
            // Whatever the page loads from /static/ is embedded.
            let mut loaded = 0;
            for (i, _) in html.match_indices("\"/static/") {
                let path = &html[i + 1..i + 1 + html[i + 1..].find('"').unwrap()];
                assert!(asset(path).is_some(), "{name} loads {path}, which is not embedded");
                loaded += 1;
            }
            // status.html: status.{js,css} and the Model page's model.{js,css}.
            let want = if name == "status.html" { 4 } else { 2 };
            assert_eq!(loaded, want, "{name}: its scripts and stylesheets");
        }
    }

    /// The alert filter offers every kind: it lacked spoofing and the
    /// long-horizon kinds, so an operator could not filter for them.
    #[test]
    fn the_alert_filter_lists_every_attack_kind() {
        let js = std::str::from_utf8(asset("/static/status.js").unwrap().body).unwrap();
        let line = js.lines().find(|l| l.starts_with("const KINDS = [")).expect("the KINDS list");
        for k in gatewarden_proto::messages::AttackKind::ALL {
            assert!(line.contains(&format!("\"{}\"", k.as_str())), "status.js KINDS lacks {}", k.as_str());
        }
    }

    #[test]
    fn assets_are_found_by_exact_path_only_with_their_types() {
        let js = asset("/static/status.js").unwrap();
        assert_eq!(js.content_type, "text/javascript; charset=utf-8");
        assert!(std::str::from_utf8(js.body).unwrap().contains("EventSource"));
        assert_eq!(asset("/static/policy.css").unwrap().content_type, "text/css; charset=utf-8");
        for miss in ["/static/", "/static", "/static/../status.html", "/static/status.js?x", "static/status.js", ""] {
            assert_eq!(asset(miss), None, "{miss:?}");
        }
        // No script sets a style attribute (CSP refuses those; the CSSOM is fine).
        for (path, _, body) in FILES {
            let text = std::str::from_utf8(body).unwrap();
            assert!(!text.contains("setAttribute(\"style\"") && !text.contains("style: "), "{path}");
        }
    }
}
