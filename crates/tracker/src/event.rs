//! The tracked event: the Logektor wire shape, its validation, and the stored form.
//!
//! Validation is hand-rolled over a `serde_json` map rather than a derived `Deserialize`
//! because a client deserves *every* problem in one answer, not just the first one serde
//! trips over. A valid event gets a unique id at ingest ([`Event::id`]) so every later stage
//! (bus redelivery, worker retry) can be idempotent. An event that carries a client-supplied
//! `messageId` (the Segment/RudderStack convention) gets an id derived from it instead, so a
//! client's retry of the same event — in another batch, through another collector, after a
//! crash — has the same id and is stored and counted once.
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_core::Clock;

/// Longest accepted `objectType`, `action` or `subjectType`, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest accepted `messageId`, in bytes.
pub const MAX_MESSAGE_ID_BYTES: usize = 64;

/// Timestamps below this are Unix seconds, at or above it Unix milliseconds
/// (1e11 s is the year 5138, 1e11 ms is 1973: no overlap with plausible events).
const SECONDS_CEILING: i64 = 100_000_000_000;

const FIELDS: [&str; 7] =
    ["objectId", "objectType", "action", "subjectId", "subjectType", "datetimeStamp", "messageId"];

/// One accepted event, as journaled, published on the bus and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique id given at ingest (UUID v7, hyphenated: time-ordered).
    pub id: String,
    /// Who acted (e.g. a user id).
    pub object_id: i64,
    /// Kind of actor, e.g. `user`.
    pub object_type: String,
    /// What happened, e.g. `view`.
    pub action: String,
    /// What it happened to (e.g. an article id).
    pub subject_id: i64,
    /// Kind of subject, e.g. `article`.
    pub subject_type: String,
    /// When it happened, Unix milliseconds (normalised from seconds if needed).
    pub ts_ms: i64,
    /// When the collector accepted it, Unix milliseconds.
    pub received_ms: i64,
}

/// One thing wrong with one event of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Position of the event in the batch (0 for `POST /track`).
    pub index: usize,
    /// Offending field, or `"event"` when the whole event is wrong.
    pub field: String,
    /// What is wrong, for a human.
    pub problem: String,
}

/// Checks raw events against the schema and the clock.
#[derive(Clone)]
pub struct Validator {
    clock: Arc<dyn Clock>,
    /// `None`: any past time is accepted (Logektor clients backfill history).
    max_age_ms: Option<i64>,
    max_skew_ms: i64,
}

impl Validator {
    /// Accepts timestamps up to `max_skew_ms` in the future of `clock` and, when `max_age_ms` is
    /// set, no older than that.
    pub fn new(clock: Arc<dyn Clock>, max_age_ms: Option<i64>, max_skew_ms: i64) -> Self {
        Self { clock, max_age_ms, max_skew_ms }
    }

    /// The validator's notion of now (Unix ms), also used as `received_ms`.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Validates `value` (event number `index` of its request), appending problems to `out`.
    /// Returns the event, with a fresh id, only when it has no problem.
    pub fn check(&self, index: usize, value: &Value, out: &mut Vec<Problem>) -> Option<Event> {
        let before = out.len();
        let mut report = |field: &str, problem: String| {
            out.push(Problem { index, field: field.to_owned(), problem });
        };
        let Some(map) = value.as_object() else {
            report("event", format!("must be a JSON object, got {}", kind(value)));
            return None;
        };
        for key in map.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
            report(key, "unknown field".to_owned());
        }
        let object_id = id_field(map, "objectId", &mut report);
        let message_id = match map.get("messageId") {
            None => None,
            Some(_) => string_field(map, "messageId", MAX_MESSAGE_ID_BYTES, &mut report),
        };
        let object_type = name_field(map, "objectType", &mut report);
        let action = name_field(map, "action", &mut report);
        let subject_id = id_field(map, "subjectId", &mut report);
        let subject_type = name_field(map, "subjectType", &mut report);
        let now = self.clock.now_ms();
        let ts_ms = self.timestamp(map, now, &mut report);
        if out.len() != before {
            return None;
        }
        Some(Event {
            id: message_id.map_or_else(|| new_id(now), |m| id_of_message(&m)),
            object_id: object_id?,
            object_type: object_type?,
            action: action?,
            subject_id: subject_id?,
            subject_type: subject_type?,
            ts_ms: ts_ms?,
            received_ms: now,
        })
    }

    fn timestamp(
        &self,
        map: &Map<String, Value>,
        now: i64,
        report: &mut impl FnMut(&str, String),
    ) -> Option<i64> {
        let field = "datetimeStamp";
        let raw = match map.get(field) {
            None => {
                report(field, "required".to_owned());
                return None;
            }
            Some(v) => match v.as_i64() {
                Some(n) if n >= 0 => n,
                _ => {
                    report(
                        field,
                        format!("must be a non-negative integer (Unix s or ms), got {}", kind(v)),
                    );
                    return None;
                }
            },
        };
        let ms = if raw < SECONDS_CEILING { raw.saturating_mul(1000) } else { raw };
        if let Some(max_age_ms) = self.max_age_ms
            && ms < now - max_age_ms
        {
            report(field, format!("{raw} is more than {} s in the past", max_age_ms / 1000));
            return None;
        }
        if ms > now + self.max_skew_ms {
            report(
                field,
                format!("{raw} is more than {} s in the future", self.max_skew_ms / 1000),
            );
            return None;
        }
        Some(ms)
    }
}

fn id_field(
    map: &Map<String, Value>,
    field: &str,
    report: &mut impl FnMut(&str, String),
) -> Option<i64> {
    match map.get(field) {
        None => report(field, "required".to_owned()),
        Some(v) => match v.as_i64() {
            Some(n) if n >= 0 => return Some(n),
            _ => report(field, format!("must be an integer from 0 to 2^63-1, got {}", kind(v))),
        },
    }
    None
}

fn name_field(
    map: &Map<String, Value>,
    field: &str,
    report: &mut impl FnMut(&str, String),
) -> Option<String> {
    string_field(map, field, MAX_NAME_BYTES, report)
}

/// A required, non-empty string of at most `max` bytes without control characters.
fn string_field(
    map: &Map<String, Value>,
    field: &str,
    max: usize,
    report: &mut impl FnMut(&str, String),
) -> Option<String> {
    match map.get(field) {
        None => report(field, "required".to_owned()),
        Some(Value::String(s)) if s.is_empty() => report(field, "must not be empty".to_owned()),
        Some(Value::String(s)) if s.len() > max => {
            report(field, format!("longer than {max} bytes ({})", s.len()));
        }
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            report(field, "contains control characters".to_owned());
        }
        Some(Value::String(s)) => return Some(s.clone()),
        Some(v) => report(field, format!("must be a string, got {}", kind(v))),
    }
    None
}

/// A time-ordered id (UUID v7 layout: Unix ms, then 74 random bits). Raw events are keyed by
/// it, and ordered keys append at the right edge of the index instead of dirtying pages all
/// over it (random v4 keys made each commit rewrite most of the index into the WAL).
fn new_id(now_ms: i64) -> String {
    let random: [u8; 10] = rand::random();
    let ms = u64::try_from(now_ms).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &random).into_uuid().to_string()
}

/// The id of the event a client labelled `message_id`: the first 16 bytes of
/// SHA-256(domain, message id) as a UUID v8. The same message id always gives the same id, so
/// the raw table's primary key stores it once. Such ids are not time-ordered (a retry may
/// come at any time), which costs some index locality for these events only.
fn id_of_message(message_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(b"switchboard.tracker.messageId\0")
        .chain_update(message_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// A short description of a JSON value for error messages (never echoes big payloads).
fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.len() <= 32 => format!("string {s:?}"),
        Value::String(_) => "a long string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchboard_core::ManualClock;

    const NOW_MS: i64 = 1_700_000_000_000;

    fn validator() -> Validator {
        Validator::new(Arc::new(ManualClock::new(NOW_MS)), Some(86_400_000), 300_000)
    }

    fn check(v: Value) -> (Option<Event>, Vec<Problem>) {
        let mut problems = Vec::new();
        let ev = validator().check(0, &v, &mut problems);
        (ev, problems)
    }

    fn fields(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn accepts_the_logektor_shape_in_seconds_and_ms() {
        let secs = NOW_MS / 1000 - 60;
        let (ev, problems) = check(json!({"objectId":2,"objectType":"user","action":"view",
            "subjectId":3,"subjectType":"article","datetimeStamp":secs}));
        assert!(problems.is_empty(), "{problems:?}");
        let ev = ev.unwrap();
        assert_eq!((ev.object_id, ev.subject_id, ev.ts_ms), (2, 3, secs * 1000));
        assert_eq!(ev.received_ms, NOW_MS);
        assert_eq!(uuid::Uuid::parse_str(&ev.id).unwrap().get_version_num(), 7);

        let (ev, _) = check(json!({"objectId":2,"objectType":"user","action":"view",
            "subjectId":3,"subjectType":"article","datetimeStamp":NOW_MS - 5}));
        assert_eq!(ev.unwrap().ts_ms, NOW_MS - 5);
    }

    #[test]
    fn a_message_id_gives_the_same_id_every_time_and_is_validated() {
        let with = |m: Value| {
            let mut v = json!({"objectId": 1, "objectType": "user", "action": "view",
                "subjectId": 2, "subjectType": "article", "datetimeStamp": 1_700_000_000});
            v["messageId"] = m;
            check(v)
        };
        let (a, _) = with(json!("retry-me"));
        let (b, _) = with(json!("retry-me"));
        let (c, _) = with(json!("another"));
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert!(with(json!("m".repeat(MAX_MESSAGE_ID_BYTES))).0.is_some());
        for bad in [json!("m".repeat(MAX_MESSAGE_ID_BYTES + 1)), json!(""), json!(7), json!("a\nb")]
        {
            let (event, problems) = with(bad.clone());
            assert!(event.is_none(), "{bad}");
            assert_eq!(fields(&problems), ["messageId"], "{bad}");
        }
    }

    #[test]
    fn ids_are_unique() {
        let v = json!({"objectId":1,"objectType":"u","action":"a","subjectId":1,
            "subjectType":"s","datetimeStamp":NOW_MS});
        let a = check(v.clone()).0.unwrap();
        let b = check(v).0.unwrap();
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn reports_every_problem_at_once() {
        let (ev, problems) = check(json!({"objectId":-1,"objectType":"","action":7,
            "subjectType":"x".repeat(65),"datetimeStamp":"now","extra":true}));
        assert!(ev.is_none());
        let mut got = fields(&problems);
        got.sort_unstable();
        assert_eq!(
            got,
            [
                "action",
                "datetimeStamp",
                "extra",
                "objectId",
                "objectType",
                "subjectId",
                "subjectType"
            ]
        );
    }

    #[test]
    fn rejects_non_objects_floats_and_control_characters() {
        assert_eq!(fields(&check(json!([1])).1), ["event"]);
        let (_, p) = check(json!({"objectId":1.5,"objectType":"u\n","action":"a","subjectId":1,
            "subjectType":"s","datetimeStamp":NOW_MS}));
        assert_eq!(fields(&p), ["objectId", "objectType"]);
    }

    #[test]
    fn timestamp_sanity_window() {
        let base =
            json!({"objectId":1,"objectType":"u","action":"a","subjectId":1,"subjectType":"s"});
        let at = |ts: i64| {
            let mut v = base.clone();
            v["datetimeStamp"] = json!(ts);
            check(v).1
        };
        assert!(at(NOW_MS - 86_400_000).is_empty());
        assert!(at(NOW_MS + 300_000).is_empty());
        assert_eq!(fields(&at(NOW_MS - 86_400_001)), ["datetimeStamp"]);
        assert_eq!(fields(&at(NOW_MS + 300_001)), ["datetimeStamp"]);
        assert!(at(123)[0].problem.contains("in the past"), "with --max-event-age set");
    }

    #[test]
    fn without_a_max_age_the_briefs_example_is_accepted() {
        let v = Validator::new(Arc::new(ManualClock::new(NOW_MS)), None, 300_000);
        let ev = json!({"objectId":2,"objectType":"user","action":"view","subjectId":2,"subjectType":"article","datetimeStamp":123});
        let mut problems = Vec::new();
        let event = v.check(0, &ev, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(event.map(|e| e.ts_ms), Some(123_000));
    }

    #[test]
    fn stored_form_round_trips() {
        let ev = check(json!({"objectId":1,"objectType":"u","action":"a","subjectId":1,
            "subjectType":"s","datetimeStamp":NOW_MS}))
        .0
        .unwrap();
        let text = serde_json::to_string(&ev).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), ev);
    }
}
