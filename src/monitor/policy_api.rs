//! The group-policy page (`/policy`) and its JSON API (`/api/policy/...`).
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/policy` | the page (groups, rules, matrix heat map, suggestions) |
//! | GET | `/api/policy` | version, groups, rules in evaluation order |
//! | GET, POST | `/api/policy/groups` | list / add `{name, members[], description}` |
//! | PUT, DELETE | `/api/policy/groups/NAME` | replace members / remove |
//! | GET, POST | `/api/policy/rules` | list / create `{source_group, destination_group, protocol, port_range, action, priority, comment}` |
//! | PUT, DELETE | `/api/policy/rules/ID` | update (same body) / delete |
//! | GET | `/api/policy/explain?src=&dst=&proto=&port=` | the deciding rule and why |
//! | GET | `/api/policy/suggestions?top=N` | ranked suggestions |
//! | POST | `/api/policy/suggestions/ID/accept`, `.../reject` | feedback (accept applies the rule) |
//! | GET | `/api/policy/matrix` | traffic matrix, pair totals, alert tallies |
//! | GET | `/api/policy/feedback` | Beta counts per context |
//!
//! Writes need `Content-Type: application/json` (a cross-site form cannot
//! send it without a CORS preflight, which is never granted). Role-based
//! authorisation of writes belongs to the dashboard's auth (#8).

use std::io::{Cursor, Read};

use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::MonitorState;
use crate::policy::service::PolicyService;
use crate::policy::{Group, RuleSpec};

/// The page, embedded (no files, no CDN).
pub const POLICY_PAGE: &str = include_str!("policy.html");

/// Largest request body accepted.
pub const MAX_BODY: u64 = 64 * 1024;

/// Whether this module answers `path`.
pub fn handles(path: &str) -> bool {
    path == "/policy" || path == "/api/policy" || path.starts_with("/api/policy/")
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

fn reply(status: u16, body: Value) -> Response<Cursor<Vec<u8>>> {
    Response::from_string(body.to_string())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
        .with_header(header("Cache-Control", "no-store"))
}

fn error(status: u16, msg: impl std::fmt::Display) -> Response<Cursor<Vec<u8>>> {
    reply(status, json!({ "error": msg.to_string() }))
}

fn read_json(req: &mut Request) -> Result<Value, Response<Cursor<Vec<u8>>>> {
    let is_json = req.headers().iter().any(|h| {
        h.field.equiv("Content-Type") && h.value.as_str().to_ascii_lowercase().starts_with("application/json")
    });
    if !is_json {
        return Err(error(415, "send the body as JSON with Content-Type: application/json"));
    }
    let mut body = String::new();
    if req.as_reader().take(MAX_BODY + 1).read_to_string(&mut body).is_err() {
        return Err(error(400, "the body is not UTF-8 text"));
    }
    if body.len() as u64 > MAX_BODY {
        return Err(error(413, format!("body over {MAX_BODY} bytes")));
    }
    serde_json::from_str(&body).map_err(|e| error(400, format!("the body is not valid JSON for this endpoint: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Response<Cursor<Vec<u8>>>> {
    serde_json::from_value(v).map_err(|e| error(400, format!("bad fields: {e}")))
}

fn overview(p: &PolicyService) -> Value {
    let e = p.engine();
    json!({ "version": e.version(), "groups": e.groups(), "rules": e.rules() })
}

/// Answers one request under `/policy` or `/api/policy`.
pub fn handle(mut req: Request, state: &MonitorState) {
    let url = req.url().to_string();
    let path = url.split('?').next().unwrap_or("").trim_end_matches('/').to_string();
    let method = req.method().clone();
    let response = if path == "/policy" {
        if method == Method::Get || method == Method::Head {
            super::http::page_headers(
                Response::from_string(POLICY_PAGE).with_header(header("Content-Type", "text/html; charset=utf-8")),
            )
        } else {
            error(405, "GET /policy").with_header(header("Allow", "GET, HEAD"))
        }
    } else {
        match state.policy.get() {
            None => error(
                503,
                "group policies are not running on this node: run the monitor role with a writable policy.state_dir",
            ),
            Some(p) => route(&mut req, &method, &path, &url, p),
        }
    };
    if let Err(e) = req.respond(response) {
        tracing::debug!(error = %e, "client went away before the response was sent");
    }
}

fn route(req: &mut Request, method: &Method, path: &str, url: &str, p: &PolicyService) -> Response<Cursor<Vec<u8>>> {
    let parts: Vec<&str> = path.trim_start_matches("/api/policy").split('/').filter(|s| !s.is_empty()).collect();
    let changed = |r: Response<Cursor<Vec<u8>>>| {
        p.publish_now();
        r
    };
    match (method, parts.as_slice()) {
        (Method::Get, []) => reply(200, overview(p)),
        (Method::Get, ["groups"]) => reply(200, json!({ "groups": p.engine().groups() })),
        (Method::Post, ["groups"]) | (Method::Put, ["groups", _]) => {
            let body = match read_json(req).and_then(parse::<Group>) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let replace = *method == Method::Put;
            if let (true, Some(name)) = (replace, parts.get(1)) {
                if *name != body.name {
                    return error(400, format!("the body names group {:?} but the path names {name:?}", body.name));
                }
            }
            let r = p.engine().add_group(body.clone(), replace);
            match r {
                Ok(()) => changed(reply(if replace { 200 } else { 201 }, json!({ "group": body }))),
                Err(e) => error(if format!("{e:#}").contains("already exists") { 409 } else { 400 }, format!("{e:#}")),
            }
        }
        (Method::Delete, ["groups", name]) => {
            let r = p.engine().remove_group(name);
            match r {
                Ok(()) => changed(reply(200, json!({ "removed": name }))),
                Err(e) => error(409, format!("{e:#}")),
            }
        }
        (Method::Get, ["rules"]) => reply(200, json!({ "rules": p.engine().rules() })),
        (Method::Post, ["rules"]) => {
            let spec = match read_json(req).and_then(parse::<RuleSpec>) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let r = p.engine().create_rule(&spec);
            match r {
                Ok(rule) => changed(reply(201, json!({ "rule": rule }))),
                Err(e) => error(if format!("{e:#}").starts_with("conflict") { 409 } else { 400 }, format!("{e:#}")),
            }
        }
        (Method::Put, ["rules", id]) | (Method::Delete, ["rules", id]) => {
            let Ok(id) = id.parse::<u32>() else {
                return error(400, format!("rule id {id:?} is not a number; list rules with GET /api/policy/rules"));
            };
            if *method == Method::Delete {
                let r = p.engine().delete_rule(id);
                return match r {
                    Ok(rule) => changed(reply(200, json!({ "deleted": rule }))),
                    Err(e) => error(404, format!("{e:#}")),
                };
            }
            let spec = match read_json(req).and_then(parse::<RuleSpec>) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let r = p.engine().update_rule(id, &spec);
            match r {
                Ok(rule) => changed(reply(200, json!({ "rule": rule }))),
                Err(e) => error(if format!("{e:#}").starts_with("conflict") { 409 } else { 400 }, format!("{e:#}")),
            }
        }
        (Method::Get, ["explain"]) => {
            let q = super::http::query_params(url);
            let get = |k: &str| q.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
            let (Some(src), Some(dst)) = (get("src"), get("dst")) else {
                return error(400, "give src and dst (group names or addresses), proto and optionally port");
            };
            let proto = get("proto").unwrap_or_else(|| "any".into());
            let port = match get("port").filter(|s| !s.is_empty()).map(|s| s.parse::<u16>()) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(_)) => return error(400, "port must be 0-65535"),
            };
            let r = p.engine().explain(&src, &dst, &proto, port);
            match r {
                Ok(e) => reply(200, json!(e)),
                Err(e) => error(400, format!("{e:#}")),
            }
        }
        (Method::Get, ["suggestions"]) => {
            let q = super::http::query_params(url);
            let top =
                q.iter().find(|(k, _)| k == "top").and_then(|(_, v)| v.parse::<usize>().ok()).map(|n| n.clamp(1, 100));
            reply(200, json!({ "suggestions": p.engine().suggestions(top) }))
        }
        (Method::Post, ["suggestions", id, verb @ ("accept" | "reject")]) => {
            if let Err(r) = read_json(req) {
                return r;
            }
            if *verb == "accept" {
                let r = p.engine().accept(id);
                match r {
                    Ok(rule) => changed(reply(200, json!({ "accepted": id, "rule": rule }))),
                    Err(e) => error(404, format!("{e:#}")),
                }
            } else {
                let r = p.engine().reject(id);
                match r {
                    Ok(s) => reply(200, json!({ "rejected": id, "context": s.context })),
                    Err(e) => error(404, format!("{e:#}")),
                }
            }
        }
        (Method::Get, ["matrix"]) => reply(200, p.engine().matrix_json()),
        (Method::Get, ["feedback"]) => reply(200, json!(p.engine().feedback())),
        _ => error(
            404,
            format!(
                "no {} {path}; see the table at the top of src/monitor/policy_api.rs or docs/POLICY.md",
                method.as_str()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_decode_percent_and_plus() {
        let q = crate::monitor::http::query_params(
            "/api/policy/explain?src=2001%3Adb8%3A%3A1&dst=sensors&proto=tcp&port=22&x=%zz&y=a+b%20c%",
        );
        assert_eq!(q[0], ("src".to_string(), "2001:db8::1".to_string()));
        assert_eq!(q[3].1, "22");
        assert_eq!(q[4].1, "%zz");
        assert_eq!(q[5].1, "a b c%");
    }
}
