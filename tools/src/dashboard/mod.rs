//! The web dashboard: one page (HTML, CSS and JavaScript written for this project, no
//! framework, nothing fetched from elsewhere) built into the binary and served by the
//! collector and the gateway at `/`, with its files under `/dashboard/`.
//!
//! The page is a small single-page app with hash routes: `#/` (every GPU by host),
//! `#/gpu/<uuid>` (charts of one GPU's metrics) and `#/pipeline` (broker and collectors).
//! It reads the API: `/api/v1/overview`, `/api/v1/gpus/{id}/telemetry` and
//! `/api/v1/pipeline`. These paths are not part of the OpenAPI document (they are not API),
//! and need no token: they hold no data (with `--http-token` the page asks for the token
//! and sends it on its API calls).
//!
//! Every file is answered with its content type, `Cache-Control: no-cache` and an `ETag`
//! (a hash of the content), so a browser revalidates and gets `304 Not Modified` until the
//! binary changes.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Name under `/dashboard/` (`index.html` is also `/`).
    pub name: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static str,
}

/// Every file of the dashboard.
pub const ASSETS: [Asset; 4] = [
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("style.css"),
    },
    Asset { name: "favicon.svg", content_type: "image/svg+xml", body: include_str!("favicon.svg") },
];

/// The page's content security policy: its own files and API only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Whether `path` is one of the dashboard's (served without a token).
pub fn is_dashboard_path(path: &str) -> bool {
    path == "/" || path.starts_with("/dashboard/")
}

/// The dashboard's routes, to merge into a server's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/dashboard/{file}",
            get(|Path(file): Path<String>, headers: HeaderMap| async move {
                serve(&file, &headers)
            }),
        )
}

fn etags() -> &'static [String; ASSETS.len()] {
    static ETAGS: OnceLock<[String; ASSETS.len()]> = OnceLock::new();
    ETAGS.get_or_init(|| ASSETS.map(|a| format!("\"{:016x}\"", fnv1a(a.body.as_bytes()))))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return crate::api::ApiError::not_found("no such dashboard file").into_response();
    };
    let (asset, etag) = (&ASSETS[index], &etags()[index]);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, HeaderValue::from_str(etag).expect("hex is a valid header")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))];
    (StatusCode::OK, common, content_type, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_only_its_own_files() {
        let html = ASSETS[0].body;
        for asset in &ASSETS[1..] {
            assert!(html.contains(&format!("/dashboard/{}", asset.name)), "{} linked", asset.name);
        }
        for asset in &ASSETS {
            let text = asset.body.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
            assert!(!text.contains("http://") && !text.contains("https://"), "{}", asset.name);
        }
    }

    #[test]
    fn etags_differ_per_file() {
        let tags = etags();
        assert_ne!(tags[0], tags[1]);
        assert!(tags.iter().all(|t| t.len() == 18));
    }
}
