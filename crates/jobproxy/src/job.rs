//! The job server's wire format (fixed by the outside world, see DESIGN.md):
//! `POST /start {"account","wait"[,"callback"]}` answered with a job report
//! `{"id","state","startedAt","proof"}` (sync) or `{"state":"running","id"}` (async), and the
//! same report POSTed to the callback URL later.
//!
//! The proxy reads only what it must (`account`, `wait`, `id`, `state`) and keeps every other
//! byte as sent: start requests keep unknown fields, callback bodies are passed on verbatim.
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

/// A start request as a client sent it.
#[derive(Debug, Clone)]
pub(crate) struct StartRequest {
    /// The account the job runs for; the job server serialises per account.
    pub account: String,
    /// `true`: the client wants the finished report in the response.
    pub wait: bool,
    /// The whole object, unknown fields included, so we forward what we were given.
    fields: Map<String, Value>,
}

impl StartRequest {
    /// Parses a client's body; the message says what is wrong, for a 400.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let Value::Object(fields) = value else {
            return Err("body must be a JSON object".into());
        };
        let account = match fields.get("account") {
            Some(Value::String(a)) if !a.is_empty() => a.clone(),
            Some(Value::String(_)) => return Err("\"account\" must not be empty".into()),
            Some(_) => return Err("\"account\" must be a string".into()),
            None => return Err("\"account\" is missing".into()),
        };
        // The job server treats a missing `wait` as false; so do we.
        let wait = match fields.get("wait") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(w)) => *w,
            Some(_) => return Err("\"wait\" must be a boolean".into()),
        };
        Ok(Self { account, wait, fields })
    }

    /// The asynchronous twin of this request: `wait:false` and our `callback`.
    pub fn into_async(mut self, callback: &str) -> Bytes {
        self.fields.insert("wait".into(), Value::Bool(false));
        self.fields.insert("callback".into(), Value::String(callback.to_owned()));
        Bytes::from(Value::Object(self.fields).to_string())
    }
}

/// The fields of a job report the proxy and the jobclient look at.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ReportHead {
    /// Job id, hex of varying length.
    pub id: String,
    /// `running`, `completed`, `failed`, …
    #[serde(default)]
    pub state: String,
    /// 40 upper-case hex digits once completed.
    #[serde(default)]
    pub proof: Option<String>,
}

impl ReportHead {
    /// Parses the head of a report; the message says what is wrong.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body).map_err(|e| format!("not a job report: {e}"))
    }

    /// A finished, successful job with a well-formed proof.
    pub fn is_completed(&self) -> bool {
        self.state == "completed" && self.proof.as_deref().is_some_and(is_proof)
    }
}

/// A job report as the simulator writes it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    /// Job id.
    pub id: String,
    /// `running`, `completed` or `failed`.
    pub state: &'static str,
    /// RFC 3339 with milliseconds, e.g. `2015-06-29T15:28:55.497Z`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Present on `completed` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// The simulator's proof of work: SHA-1 over account, id and start time, 40 upper-case hex.
pub(crate) fn proof(account: &str, id: &str, started_at: &str) -> String {
    let mut h = Sha1::new();
    for part in [account, id, started_at] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode_upper(h.finalize())
}

/// Whether `s` looks like a proof: exactly 40 upper-case hex digits.
pub(crate) fn is_proof(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_requests_keep_unknown_fields_and_get_our_callback() {
        let r = StartRequest::parse(br#"{"account":"a","wait":true,"tag":[1,2]}"#).unwrap();
        assert_eq!((r.account.as_str(), r.wait), ("a", true));
        let out: Value = serde_json::from_slice(&r.into_async("http://p/callback/x")).unwrap();
        assert_eq!(out["wait"], false);
        assert_eq!(out["callback"], "http://p/callback/x");
        assert_eq!(out["tag"], serde_json::json!([1, 2]));
    }

    #[test]
    fn bad_start_requests_say_why() {
        for (body, why) in [
            (&b"nope"[..], "not JSON"),
            (b"[1]", "JSON object"),
            (b"{}", "missing"),
            (br#"{"account":""}"#, "empty"),
            (br#"{"account":7}"#, "string"),
            (br#"{"account":"a","wait":"yes"}"#, "boolean"),
        ] {
            let err = StartRequest::parse(body).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        assert!(!StartRequest::parse(br#"{"account":"a"}"#).unwrap().wait);
    }

    #[test]
    fn proofs_are_40_upper_hex_and_deterministic() {
        let p = proof("a", "4a40f6c1bf585ca9", "2015-06-29T15:28:55.497Z");
        assert!(is_proof(&p), "{p}");
        assert_eq!(p, proof("a", "4a40f6c1bf585ca9", "2015-06-29T15:28:55.497Z"));
        assert_ne!(p, proof("b", "4a40f6c1bf585ca9", "2015-06-29T15:28:55.497Z"));
        assert!(!is_proof(&p.to_lowercase()));
        assert!(!is_proof(&p[1..]));
    }

    #[test]
    fn completed_needs_a_valid_proof() {
        let ok = format!(r#"{{"id":"1f","state":"completed","proof":"{}"}}"#, "A".repeat(40));
        assert!(ReportHead::parse(ok.as_bytes()).unwrap().is_completed());
        let bad = br#"{"id":"1f","state":"completed","proof":"abc"}"#;
        assert!(!ReportHead::parse(bad).unwrap().is_completed());
        assert!(ReportHead::parse(br#"{"state":"running"}"#).is_err());
    }

    proptest::proptest! {
        #![proptest_config(switchboard_testkit::fuzz::config())]

        /// Client bodies and job reports from the network: parsed or refused, never a panic;
        /// an accepted start request turns into a valid asynchronous one.
        #[test]
        fn fuzz_body_parsers(body in switchboard_testkit::fuzz::inputs(
            switchboard_testkit::fuzz::corpus(concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus")))) {
            if let Ok(start) = StartRequest::parse(&body) {
                proptest::prop_assert!(!start.account.is_empty());
                let forwarded = start.into_async("http://proxy/callback/t");
                let again = StartRequest::parse(&forwarded);
                proptest::prop_assert!(again.is_ok_and(|a| !a.wait));
            }
            if let Ok(head) = ReportHead::parse(&body) {
                let _ = head.is_completed();
            }
        }
    }
}
