//! The read side of the CQRS split: reports served from the read-model tables only
//! (never from raw events), so their cost depends on the time range, not on traffic.
//!
//! Ranges are half-open `[from, to)` in Unix ms. Per-minute reports are exact to the minute;
//! per-day reports (top subjects, unique objects) cover every UTC day the range touches.
use serde::Serialize;
use switchboard_store::Store;

use crate::Result;
use crate::readmodel::DAY_MS;

/// Common report filters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Start, Unix ms, inclusive.
    pub from_ms: i64,
    /// End, Unix ms, exclusive.
    pub to_ms: i64,
    /// Only this action.
    pub action: Option<String>,
    /// Only this subject type.
    pub subject_type: Option<String>,
    /// Only this object type (unique-objects report).
    pub object_type: Option<String>,
}

impl Filter {
    fn days(&self) -> (i64, i64) {
        (self.from_ms.div_euclid(DAY_MS), (self.to_ms - 1).div_euclid(DAY_MS))
    }
}

/// One point of a time series: events in the bucket starting at `t`, for one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Bucket start, Unix ms.
    pub t: i64,
    /// Action.
    pub action: String,
    /// Events.
    pub count: i64,
}

/// One row of the top-subjects report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopSubject {
    /// Subject type.
    pub subject_type: String,
    /// Subject id.
    pub subject_id: i64,
    /// Events.
    pub count: i64,
}

/// One row of the action × subject type breakdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Breakdown {
    /// Action.
    pub action: String,
    /// Subject type.
    pub subject_type: String,
    /// Events.
    pub count: i64,
}

/// Unique objects of one type on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Uniques {
    /// Day start, Unix ms.
    pub day_ms: i64,
    /// Object type.
    pub object_type: String,
    /// Distinct objects.
    pub objects: i64,
}

macro_rules! reports_for {
    ($db:ty) => {
        use sqlx::QueryBuilder;

        use super::{Breakdown, DAY_MS, Filter, Point, TopSubject, Uniques};

        type Pool = sqlx::Pool<$db>;

        fn filters(qb: &mut QueryBuilder<'_, $db>, f: &Filter) {
            if let Some(a) = &f.action {
                qb.push(" AND action = ").push_bind(a.clone());
            }
            if let Some(s) = &f.subject_type {
                qb.push(" AND subject_type = ").push_bind(s.clone());
            }
        }

        fn minutes(qb: &mut QueryBuilder<'_, $db>, f: &Filter) {
            qb.push(" FROM tracker_counts_minute WHERE minute_ms >= ").push_bind(f.from_ms);
            qb.push(" AND minute_ms < ").push_bind(f.to_ms);
            filters(qb, f);
        }

        pub(super) async fn series(pool: &Pool, f: &Filter, step_ms: i64) -> sqlx::Result<Vec<Point>> {
            let mut qb = QueryBuilder::<$db>::new("SELECT (minute_ms / ");
            qb.push_bind(step_ms).push(") * ").push_bind(step_ms);
            qb.push(" AS t, action, CAST(SUM(count) AS BIGINT) AS n");
            minutes(&mut qb, f);
            qb.push(" GROUP BY t, action ORDER BY t, action");
            let rows: Vec<(i64, String, i64)> = qb.build_query_as().fetch_all(pool).await?;
            Ok(rows.into_iter().map(|(t, action, count)| Point { t, action, count }).collect())
        }

        pub(super) async fn breakdown(pool: &Pool, f: &Filter) -> sqlx::Result<Vec<Breakdown>> {
            let mut qb =
                QueryBuilder::<$db>::new("SELECT action, subject_type, CAST(SUM(count) AS BIGINT) AS n");
            minutes(&mut qb, f);
            qb.push(" GROUP BY action, subject_type ORDER BY n DESC, action, subject_type");
            let rows: Vec<(String, String, i64)> = qb.build_query_as().fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|(action, subject_type, count)| Breakdown { action, subject_type, count })
                .collect())
        }

        pub(super) async fn top(pool: &Pool, f: &Filter, limit: i64) -> sqlx::Result<Vec<TopSubject>> {
            let (from_day, to_day) = f.days();
            let mut qb = QueryBuilder::<$db>::new(
                "SELECT subject_type, subject_id, CAST(SUM(count) AS BIGINT) AS n \
                 FROM tracker_subjects_day WHERE day >= ",
            );
            qb.push_bind(from_day).push(" AND day <= ").push_bind(to_day);
            filters(&mut qb, f);
            qb.push(" GROUP BY subject_type, subject_id ORDER BY n DESC, subject_type, subject_id LIMIT ");
            qb.push_bind(limit);
            let rows: Vec<(String, i64, i64)> = qb.build_query_as().fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|(subject_type, subject_id, count)| TopSubject { subject_type, subject_id, count })
                .collect())
        }

        pub(super) async fn uniques(pool: &Pool, f: &Filter) -> sqlx::Result<Vec<Uniques>> {
            let (from_day, to_day) = f.days();
            let mut qb = QueryBuilder::<$db>::new(
                "SELECT day, object_type, CAST(COUNT(*) AS BIGINT) FROM tracker_objects_day WHERE day >= ",
            );
            qb.push_bind(from_day).push(" AND day <= ").push_bind(to_day);
            if let Some(t) = &f.object_type {
                qb.push(" AND object_type = ").push_bind(t.clone());
            }
            qb.push(" GROUP BY day, object_type ORDER BY day, object_type");
            let rows: Vec<(i64, String, i64)> = qb.build_query_as().fetch_all(pool).await?;
            Ok(rows
                .into_iter()
                .map(|(day, object_type, objects)| Uniques { day_ms: day * DAY_MS, object_type, objects })
                .collect())
        }

        pub(super) async fn total(pool: &Pool) -> sqlx::Result<i64> {
            sqlx::query_scalar("SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM tracker_counts_minute")
                .fetch_one(pool)
                .await
        }
    };
}

mod sqlite {
    reports_for!(sqlx::Sqlite);
}

mod postgres {
    reports_for!(sqlx::Postgres);
}

/// Runs one report on whichever engine `store` is.
macro_rules! on_store {
    ($store:expr, $f:ident ( $($arg:expr),* )) => {
        match $store {
            Store::Sqlite(pool) => sqlite::$f(pool, $($arg),*).await?,
            Store::Postgres(pool) => postgres::$f(pool, $($arg),*).await?,
        }
    };
}

/// Events per `step_ms` bucket and action.
///
/// # Errors
/// The store fails.
pub async fn series(store: &Store, f: &Filter, step_ms: i64) -> Result<Vec<Point>> {
    Ok(on_store!(store, series(f, step_ms)))
}

/// Events per action × subject type, most frequent first.
///
/// # Errors
/// The store fails.
pub async fn breakdown(store: &Store, f: &Filter) -> Result<Vec<Breakdown>> {
    Ok(on_store!(store, breakdown(f)))
}

/// The `limit` most frequent subjects over the days of the range.
///
/// # Errors
/// The store fails.
pub async fn top(store: &Store, f: &Filter, limit: i64) -> Result<Vec<TopSubject>> {
    Ok(on_store!(store, top(f, limit)))
}

/// Distinct objects per UTC day and object type.
///
/// # Errors
/// The store fails.
pub async fn uniques(store: &Store, f: &Filter) -> Result<Vec<Uniques>> {
    Ok(on_store!(store, uniques(f)))
}

/// Every event ever folded into the read model.
///
/// # Errors
/// The store fails.
pub async fn total(store: &Store) -> Result<i64> {
    Ok(on_store!(store, total()))
}
