//! The web console: plain HTML, CSS and JavaScript modules embedded in the binary and served under `/console/`,
//! with a content-security policy of their own. The console holds no secret but the API key the user typed, in
//! the tab's session storage; it calls the same API as any client, so the core checks every one of its calls.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::ApiError;

/// The console's files, from `src/http/console/assets` (embedded at build time in release builds).
#[derive(rust_embed::Embed)]
#[folder = "src/http/console/assets"]
struct Assets;

/// Only this server's own scripts, styles and API; images also from `blob:` (thumbnails and crops are fetched
/// with the key and shown from memory); no inline script or style, no frames, no form posts, no `<base>`.
pub const CONSOLE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes; the API's security headers are added around them, this policy replacing the API's.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(|| async { serve("index.html") }))
        .route("/console/{*path}", get(|Path(path): Path<String>| async move { serve(&path) }))
}

fn serve(path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::new(StatusCode::NOT_FOUND, "route_not_found", format!("no console file `{path}`")).into_response();
    };
    let mime = file.metadata.mimetype();
    let mut response = (StatusCode::OK, file.data.into_owned()).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONSOLE_POLICY));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_script_is_embedded_and_typed() {
        let names: Vec<String> = Assets::iter().map(|name| name.into_owned()).collect();
        assert!(names.iter().any(|n| n == "index.html"), "{names:?}");
        for name in &names {
            let file = Assets::get(name).unwrap();
            if name.ends_with(".js") {
                assert_eq!(file.metadata.mimetype(), "text/javascript", "{name}");
            }
        }
    }

    #[test]
    fn the_pages_hold_no_inline_script_or_style() {
        for name in Assets::iter().filter(|n| n.ends_with(".html")) {
            let text = String::from_utf8(Assets::get(&name).unwrap().data.into_owned()).unwrap();
            assert!(!text.contains("<script>") && !text.contains(" style=") && !text.contains("<style"), "{name}");
            // No inline event handler (` onclick=`, ` onload=`, …): the policy would refuse it.
            let handler = text.split(" on").skip(1).any(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            });
            assert!(!handler, "{name}");
        }
    }
}
