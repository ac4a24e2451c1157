//! The routes.

use super::{HttpState, Role};
use crate::app::AppContext;
use crate::app::commands::normalize_token;
use crate::app::incoming::account_of;
use crate::cluster::Unregister;
use crate::errors::chain;
use crate::limits::client_key;
use crate::registry::{DeviceRef, IdentityKind};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use tracing::{info, warn};
use xmpp_parsers::jid::Jid;

/// Registers the routes of a listener's role. `/readyz` tells error details
/// (store errors, provider answers, member names), so with an admin
/// listener it is served only there, beside `/metrics`.
pub(super) fn configure(cfg: &mut web::ServiceConfig, role: Role) {
    cfg.route("/healthz", web::get().to(healthz));
    if matches!(role, Role::All | Role::Admin) {
        cfg.route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics));
    }
    if matches!(role, Role::All | Role::Public) {
        cfg.route(
            "/rest/push/unregister-device/{jid}",
            web::post().to(unregister_device),
        )
        .route(
            "/unregister-device/{jid}",
            web::post().to(unregister_device),
        );
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<HttpState>) -> HttpResponse {
    let sessions = state.metrics.sessions_up.total();
    let store = match state.registry.check().await {
        Ok(()) if state.dispatcher.is_loaded() => "ok".to_owned(),
        Ok(()) => "connected; loading the outbox".to_owned(),
        Err(e) => format!("{} unavailable: {}", state.registry.label(), chain(&e)),
    };
    // Provider health is reported, not gated on: a refused credential is the same
    // on every replica, and the outbox keeps the notifications until it is fixed.
    let providers: serde_json::Map<String, Value> = state
        .dispatcher
        .status()
        .await
        .into_iter()
        .map(|(id, status)| {
            let detail = match status {
                Some(s) => json!({
                    "healthy": s.healthy,
                    "detail": s.detail,
                    "pending": s.pending,
                    "in_flight": s.in_flight,
                }),
                None => json!({ "healthy": false, "detail": "the delivery pool does not answer" }),
            };
            (id, detail)
        })
        .collect();
    // A cluster node serves forwards and delivers its shards without any
    // stream of its own: it is ready once it is a member.
    let (ready, cluster) = match &state.cluster {
        Some(router) => (router.is_member() && store == "ok", Some(router.status())),
        None => (sessions > 0 && store == "ok", None),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "ready": ready,
        "component_sessions": sessions,
        "store": store,
        "providers": providers,
    });
    if let (Some(cluster), Some(map)) = (cluster, body.as_object_mut()) {
        map.insert("cluster".to_owned(), cluster);
    }
    HttpResponse::build(status).json(body)
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    if let Ok(count) = state.registry.count().await {
        state
            .metrics
            .registrations
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    let text = state.metrics.render();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}

fn result(status: StatusCode, outcome: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "result": outcome }))
}

/// The device a REST unregister names, `(account, provider, token)` with the
/// account a bare JID and the token normalized, or the status to answer
/// `failure` with (Tigase's: 404 for an unknown component or a missing
/// field, 400 for a body that is not JSON, 200 for a malformed token). Pure,
/// so the REST fuzz target can feed it anything.
pub fn read_unregister(
    app: &AppContext,
    component: &str,
    body: &[u8],
) -> Result<(String, String, String), StatusCode> {
    if !component.eq_ignore_ascii_case(&app.component_jid) {
        return Err(StatusCode::NOT_FOUND);
    }
    let body = serde_json::from_slice::<Value>(body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::trim);
    let (Some(account), Some(provider), Some(token)) =
        (field("account"), field("provider"), field("device-token"))
    else {
        return Err(StatusCode::NOT_FOUND);
    };
    let account = Jid::new(account)
        .ok()
        .as_ref()
        .and_then(account_of)
        .ok_or(StatusCode::NOT_FOUND)?;
    let kind = app.provider_kind(provider).ok_or(StatusCode::NOT_FOUND)?;
    let token = normalize_token(kind, token).map_err(|_| StatusCode::OK)?;
    Ok((account, provider.to_owned(), token))
}

/// Tigase-compatible REST unregister (`docs/protocol.md` §8), in a SERVER
/// span when tracing (`pushgate.rest.unregister`; the path names the
/// component, never a device, but only its template is recorded).
async fn unregister_device(
    state: web::Data<HttpState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let span = state.metrics.traces().map(|t| {
        let cx = t.span(
            "pushgate.rest.unregister",
            opentelemetry::trace::SpanKind::Server,
        );
        let route = request.match_pattern().unwrap_or_default();
        crate::telemetry::note_in(&cx, "http.request.method", || "POST");
        crate::telemetry::note_in(&cx, "http.route", || route);
        cx
    });
    let response = crate::telemetry::within(
        span.clone(),
        unregister_untraced(state, request, path, body),
    )
    .await;
    if let Some(cx) = &span {
        let status = i64::from(response.status().as_u16());
        crate::telemetry::note_in(cx, "http.response.status_code", || status);
    }
    response
}

/// The REST unregister itself. An unknown component or a missing field
/// answers 404 on purpose, as Tigase does.
async fn unregister_untraced(
    state: web::Data<HttpState>,
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    // Behind a proxy every client has the proxy's address: size the limit
    // for that, or turn it off and limit at the proxy.
    let client = request.peer_addr().map(|a| client_key(a.ip()));
    if let (Some(limit), Some(client)) = (&state.rest_limit, client)
        && !limit.allow(&client)
    {
        state
            .metrics
            .registration_commands
            .inc(&["rest-unregister", "rate-limited"]);
        crate::telemetry::note("pushgate.outcome", || "rate-limited");
        return result(StatusCode::TOO_MANY_REQUESTS, "failure");
    }
    let (account, provider, token) = match read_unregister(&state.app, &path, &body) {
        Ok(device) => device,
        Err(status) => {
            crate::telemetry::note("pushgate.outcome", || "refused");
            return result(status, "failure");
        }
    };
    let provider = provider.as_str();
    let device = DeviceRef {
        account: &account,
        provider,
        identity: &token,
        kind: IdentityKind::Token,
    };
    let removed = match &state.cluster {
        None => state
            .registry
            .unregister(&device)
            .await
            .map_err(Unregister::Store),
        Some(router) => router.unregister(&state.registry, &device).await,
    };
    match removed {
        Ok(true) => {
            info!(provider, "device unregistered over REST");
            state
                .metrics
                .registration_commands
                .inc(&["rest-unregister", "ok"]);
            crate::telemetry::note("pushgate.outcome", || "ok");
            result(StatusCode::OK, "success")
        }
        Ok(false) => {
            crate::telemetry::note("pushgate.outcome", || "not-found");
            result(StatusCode::OK, "failure")
        }
        Err(e) => {
            crate::telemetry::note("pushgate.outcome", || "store-error");
            warn!("REST unregister failed: {}", chain(&e));
            result(StatusCode::SERVICE_UNAVAILABLE, "failure")
        }
    }
}
