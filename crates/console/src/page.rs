//! `GET /console`: the page, embedded at compile time (no CDN, no build step). The current
//! snapshot is inlined, so the page shows data at once — also to a client that renders
//! without waiting for the event stream.
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../assets/console.html");
/// Where the snapshot goes; the page reads it from there before opening the stream.
const SLOT: &str = "/*SNAPSHOT*/null";

/// `GET /console`.
pub(crate) async fn console(State(state): State<crate::State>) -> impl IntoResponse {
    let snapshot = state.latest.borrow().clone();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        PAGE.replacen(SLOT, &inline(&snapshot), 1),
    )
}

/// `json` made safe inside a `<script>` element: agents' replies are untrusted, and a `</script>`
/// in one must not end the element. `<`, `>` and `&` become JSON escapes, same value.
fn inline(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_its_slot_and_inlined_json_cannot_close_the_script() {
        assert!(PAGE.contains(SLOT));
        let inlined = inline(r#"{"reply":"</script><b>&"}"#);
        assert!(!inlined.contains("</script>"), "{inlined}");
        let back: serde_json::Value = serde_json::from_str(&inlined).unwrap();
        assert_eq!(back["reply"], "</script><b>&");
    }
}
