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
//! send it without a CORS preflight, which is never granted). The routes
//! live in the server's one table (`ROUTES` in `http.rs`), which checks the
//! `Host`, the token (reads viewer, writes admin), the rate limit and the body
//! size before any handler here runs.

use serde_json::{json, Value};

use super::MonitorState;
use crate::reply::{error, json_response as reply, page as html_page, Call, Resp};
use gatewarden_policy::service::PolicyService;
use gatewarden_policy::{Group, RuleSpec};

/// The page, embedded (no files, no CDN).
pub const POLICY_PAGE: &str = include_str!("policy.html");

/// A refusal: status and message (turned into a response by [`fail`]).
type Bad = (u16, String);

fn fail((status, message): Bad) -> Resp {
    error(status, message)
}

/// The body of a write as JSON: 415 without the JSON content type, 400 if it does not parse.
fn read_json(call: &Call) -> Result<Value, Bad> {
    if !call.json {
        return Err((415, "send the body as JSON with Content-Type: application/json".into()));
    }
    let body = std::str::from_utf8(&call.body).map_err(|_| (400, "the body is not UTF-8 text".to_string()))?;
    serde_json::from_str(body).map_err(|e| (400, format!("the body is not valid JSON for this endpoint: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Bad> {
    serde_json::from_value(v).map_err(|e| (400, format!("bad fields: {e}")))
}

/// Runs `f` with the policy service, or 503 when this node runs none.
fn with_policy(state: &MonitorState, f: impl FnOnce(&PolicyService) -> Resp) -> Resp {
    match state.policy.get() {
        None => error(
            503,
            "group policies are not running on this node: run the monitor role with a writable policy.state_dir",
        ),
        Some(p) => f(p),
    }
}

/// A write that changed the policy: publish it to the routers now.
fn changed(p: &PolicyService, r: Resp) -> Resp {
    p.publish_now();
    r
}

/// `GET /policy`: the page.
pub fn page(_: &MonitorState, _: &Call) -> Resp {
    html_page(POLICY_PAGE)
}

/// `GET /api/policy`: version, groups, rules in evaluation order.
pub fn overview(state: &MonitorState, _: &Call) -> Resp {
    with_policy(state, |p| {
        let e = p.engine();
        reply(200, json!({ "version": e.version(), "groups": e.groups(), "rules": e.rules() }))
    })
}

/// `GET /api/policy/groups`.
pub fn groups(state: &MonitorState, _: &Call) -> Resp {
    with_policy(state, |p| reply(200, json!({ "groups": p.engine().groups() })))
}

/// `POST /api/policy/groups`: add a group.
pub fn add_group(state: &MonitorState, call: &Call) -> Resp {
    put_group(state, call, false)
}

/// `PUT /api/policy/groups/NAME`: replace a group's members.
pub fn replace_group(state: &MonitorState, call: &Call) -> Resp {
    put_group(state, call, true)
}

fn put_group(state: &MonitorState, call: &Call, replace: bool) -> Resp {
    with_policy(state, |p| {
        let body = match read_json(call).and_then(parse::<Group>) {
            Ok(b) => b,
            Err(b) => return fail(b),
        };
        if let (true, Some(name)) = (replace, call.caps.first()) {
            if *name != body.name {
                return error(400, format!("the body names group {:?} but the path names {name:?}", body.name));
            }
        }
        let r = p.engine().add_group(body.clone(), replace);
        match r {
            Ok(()) => changed(p, reply(if replace { 200 } else { 201 }, json!({ "group": body }))),
            Err(e) => error(if format!("{e:#}").contains("already exists") { 409 } else { 400 }, format!("{e:#}")),
        }
    })
}

/// `DELETE /api/policy/groups/NAME`.
pub fn remove_group(state: &MonitorState, call: &Call) -> Resp {
    with_policy(state, |p| {
        let name = &call.caps[0];
        let r = p.engine().remove_group(name);
        match r {
            Ok(()) => changed(p, reply(200, json!({ "removed": name }))),
            Err(e) => error(409, format!("{e:#}")),
        }
    })
}

/// `GET /api/policy/rules`.
pub fn rules(state: &MonitorState, _: &Call) -> Resp {
    with_policy(state, |p| reply(200, json!({ "rules": p.engine().rules() })))
}

/// `POST /api/policy/rules`: create a rule.
pub fn create_rule(state: &MonitorState, call: &Call) -> Resp {
    with_policy(state, |p| {
        let spec = match read_json(call).and_then(parse::<RuleSpec>) {
            Ok(b) => b,
            Err(b) => return fail(b),
        };
        let r = p.engine().create_rule(&spec);
        match r {
            Ok(rule) => changed(p, reply(201, json!({ "rule": rule }))),
            Err(e) => error(if format!("{e:#}").starts_with("conflict") { 409 } else { 400 }, format!("{e:#}")),
        }
    })
}

fn rule_id(call: &Call) -> Result<u32, Bad> {
    let id = &call.caps[0];
    id.parse::<u32>()
        .map_err(|_| (400, format!("rule id {id:?} is not a number; list rules with GET /api/policy/rules")))
}

/// `PUT /api/policy/rules/ID`: update a rule (same body as create).
pub fn update_rule(state: &MonitorState, call: &Call) -> Resp {
    with_policy(state, |p| {
        let id = match rule_id(call) {
            Ok(id) => id,
            Err(b) => return fail(b),
        };
        let spec = match read_json(call).and_then(parse::<RuleSpec>) {
            Ok(b) => b,
            Err(b) => return fail(b),
        };
        let r = p.engine().update_rule(id, &spec);
        match r {
            Ok(rule) => changed(p, reply(200, json!({ "rule": rule }))),
            Err(e) => error(if format!("{e:#}").starts_with("conflict") { 409 } else { 400 }, format!("{e:#}")),
        }
    })
}

/// `DELETE /api/policy/rules/ID`.
pub fn delete_rule(state: &MonitorState, call: &Call) -> Resp {
    with_policy(state, |p| {
        let id = match rule_id(call) {
            Ok(id) => id,
            Err(b) => return fail(b),
        };
        let r = p.engine().delete_rule(id);
        match r {
            Ok(rule) => changed(p, reply(200, json!({ "deleted": rule }))),
            Err(e) => error(404, format!("{e:#}")),
        }
    })
}

/// `GET /api/policy/explain?src=&dst=&proto=&port=`: the deciding rule and why.
pub fn explain(state: &MonitorState, call: &Call) -> Resp {
    with_policy(state, |p| {
        let (Some(src), Some(dst)) = (call.param("src"), call.param("dst")) else {
            return error(400, "give src and dst (group names or addresses), proto and optionally port");
        };
        let proto = call.param("proto").unwrap_or("any");
        let port = match call.param("port").filter(|s| !s.is_empty()).map(|s| s.parse::<u16>()) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => return error(400, "port must be 0-65535"),
        };
        let r = p.engine().explain(src, dst, proto, port);
        match r {
            Ok(e) => reply(200, json!(e)),
            Err(e) => error(400, format!("{e:#}")),
        }
    })
}

/// `GET /api/policy/suggestions?top=N`: ranked suggestions.
pub fn suggestions(state: &MonitorState, call: &Call) -> Resp {
    with_policy(state, |p| {
        let top = call.param("top").and_then(|v| v.parse::<usize>().ok()).map(|n| n.clamp(1, 100));
        reply(200, json!({ "suggestions": p.engine().suggestions(top) }))
    })
}

/// `POST /api/policy/suggestions/ID/accept` or `.../reject`: feedback (accept applies the rule).
pub fn feedback_on(state: &MonitorState, call: &Call) -> Resp {
    with_policy(state, |p| {
        let (id, verdict) = (call.caps[0].as_str(), call.caps[1].as_str());
        if let Err(b) = read_json(call) {
            return fail(b);
        }
        match verdict {
            "accept" => {
                // Bind first: a guard in the match scrutinee lives through the
                // arms, and `changed` takes the engine's lock again (a deadlock).
                let accepted = p.engine().accept(id);
                match accepted {
                    Ok(rule) => changed(p, reply(200, json!({ "accepted": id, "rule": rule }))),
                    Err(e) => error(404, format!("{e:#}")),
                }
            }
            "reject" => match p.engine().reject(id) {
                Ok(s) => reply(200, json!({ "rejected": id, "context": s.context })),
                Err(e) => error(404, format!("{e:#}")),
            },
            other => error(404, format!("no suggestion action {other:?}: use accept or reject")),
        }
    })
}

/// `GET /api/policy/matrix`: traffic matrix, pair totals, alert tallies.
pub fn matrix(state: &MonitorState, _: &Call) -> Resp {
    with_policy(state, |p| reply(200, p.engine().matrix_json()))
}

/// `GET /api/policy/feedback`: Beta counts per context.
pub fn feedback(state: &MonitorState, _: &Call) -> Resp {
    with_policy(state, |p| reply(200, json!(p.engine().feedback())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_decode_percent_and_plus() {
        let q = crate::reply::query_params(
            "/api/policy/explain?src=2001%3Adb8%3A%3A1&dst=sensors&proto=tcp&port=22&x=%zz&y=a+b%20c%",
        );
        assert_eq!(q[0], ("src".to_string(), "2001:db8::1".to_string()));
        assert_eq!(q[3].1, "22");
        assert_eq!(q[4].1, "%zz");
        assert_eq!(q[5].1, "a b c%");
    }
}
