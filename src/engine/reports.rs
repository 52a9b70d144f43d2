//! Reports built from a campaign's figures: its per-minute series regrouped into minutes, hours
//! or days of the tenant's time zone. The same function serves figures from an actor's memory
//! and from a snapshot, so both answers agree whenever the figures do.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, FixedOffset, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::campaign::MinuteCounts;

/// The width of a time-series point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Minute,
    Hour,
    /// A calendar day of the tenant's time zone (23 or 25 hours across a DST change).
    Day,
}

/// At most this many points in one answer; a longer range needs a wider bucket.
pub const MAX_POINTS: usize = 10_080;

/// One point of a time series: what happened from `start` until the next point's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Point {
    /// In the tenant's time zone, with its offset at that moment.
    pub start: DateTime<FixedOffset>,
    #[serde(flatten)]
    pub counts: MinuteCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    #[error("`from` must be before `to`")]
    EmptyRange,
    #[error("the range holds more than {MAX_POINTS} {bucket:?} points; narrow from/to or use a wider bucket")]
    TooManyPoints { bucket: Bucket },
}

/// The series regrouped into buckets of the zone, every bucket from the first to the last
/// present (zeros included), limited to `[from, to)` when given. Without a range the points
/// span the minutes that have figures; with one, the whole range.
pub fn timeseries(
    minutes: &BTreeMap<DateTime<Utc>, MinuteCounts>,
    bucket: Bucket,
    zone: Tz,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<Point>, SeriesError> {
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(SeriesError::EmptyRange);
        }
    }
    let in_range = |at: &DateTime<Utc>| from.is_none_or(|f| *at >= f) && to.is_none_or(|t| *at < t);
    let mut sums: BTreeMap<DateTime<Utc>, MinuteCounts> = BTreeMap::new();
    for (at, m) in minutes.iter().filter(|(at, _)| in_range(at)) {
        sums.entry(start_of(bucket, zone, *at))
            .or_default()
            .merge(m);
    }
    let first = from
        .map(|f| start_of(bucket, zone, f))
        .or_else(|| sums.keys().next().copied());
    let last = to
        .map(|t| start_of(bucket, zone, t - Duration::nanoseconds(1)))
        .or_else(|| sums.keys().next_back().copied());
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Vec::new());
    };
    let mut points = Vec::new();
    let mut at = first;
    while at <= last {
        if points.len() == MAX_POINTS {
            return Err(SeriesError::TooManyPoints { bucket });
        }
        points.push(Point {
            start: at.with_timezone(&zone).fixed_offset(),
            counts: sums.get(&at).copied().unwrap_or_default(),
        });
        at = next_start(bucket, zone, at);
    }
    Ok(points)
}

/// The start of the bucket `at` falls in.
pub fn start_of(bucket: Bucket, zone: Tz, at: DateTime<Utc>) -> DateTime<Utc> {
    let local = at.with_timezone(&zone);
    match bucket {
        Bucket::Minute => super::campaign::minute(at),
        // an hour keeps the offset it is in, so hours stay whole across DST changes and in
        // zones whose offset is not whole hours
        Bucket::Hour => {
            let into = Duration::minutes(local.minute().into())
                + Duration::seconds(local.second().into())
                + Duration::nanoseconds(local.nanosecond().into());
            at - into
        }
        Bucket::Day => {
            midnight(zone, local.date_naive()).unwrap_or_else(|| start_of(Bucket::Hour, zone, at))
        }
    }
}

fn next_start(bucket: Bucket, zone: Tz, at: DateTime<Utc>) -> DateTime<Utc> {
    match bucket {
        Bucket::Minute => at + Duration::minutes(1),
        Bucket::Hour => at + Duration::hours(1),
        Bucket::Day => {
            let day = at.with_timezone(&zone).date_naive();
            day.succ_opt()
                .and_then(|next| midnight(zone, next))
                .unwrap_or(at + Duration::days(1))
        }
    }
}

/// The first instant of a local day (midnight, or the first moment after a gap at midnight).
fn midnight(zone: Tz, day: chrono::NaiveDate) -> Option<DateTime<Utc>> {
    let local = day.and_time(NaiveTime::MIN);
    (0..=2).find_map(|h| {
        zone.from_local_datetime(&(local + Duration::hours(h)))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn sent(n: i64) -> MinuteCounts {
        MinuteCounts {
            sent: n,
            ..MinuteCounts::default()
        }
    }

    fn series(points: &[(&str, i64)]) -> BTreeMap<DateTime<Utc>, MinuteCounts> {
        points.iter().map(|(at, n)| (utc(at), sent(*n))).collect()
    }

    #[test]
    fn minutes_are_filled_between_the_first_and_last() {
        let s = series(&[("2026-12-01T10:00:00Z", 2), ("2026-12-01T10:03:00Z", 5)]);
        let p = timeseries(&s, Bucket::Minute, Tz::UTC, None, None).unwrap();
        let sent: Vec<i64> = p.iter().map(|p| p.counts.sent).collect();
        assert_eq!(sent, vec![2, 0, 0, 5]);
    }

    #[test]
    fn days_follow_the_tenant_zone_not_utc() {
        // 22:30 UTC on 1 December is 00:30 on 2 December in Athens (UTC+2)
        let s = series(&[("2026-12-01T21:30:00Z", 1), ("2026-12-01T22:30:00Z", 3)]);
        let p = timeseries(&s, Bucket::Day, chrono_tz::Europe::Athens, None, None).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].start.to_rfc3339(), "2026-12-01T00:00:00+02:00");
        assert_eq!((p[0].counts.sent, p[1].counts.sent), (1, 3));
    }

    #[test]
    fn a_day_across_a_dst_change_is_one_point_of_23_hours() {
        let zone = chrono_tz::Europe::Athens;
        let s = series(&[("2026-03-28T22:30:00Z", 1), ("2026-03-29T20:59:00Z", 1)]);
        let p = timeseries(&s, Bucket::Day, zone, None, None).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].counts.sent, 2);
        assert_eq!(
            next_start(Bucket::Day, zone, p[0].start.to_utc()) - p[0].start.to_utc(),
            Duration::hours(23)
        );
    }

    #[test]
    fn hours_of_a_half_hour_zone_start_at_its_local_hour() {
        let s = series(&[("2026-12-01T10:00:00Z", 1), ("2026-12-01T10:45:00Z", 1)]);
        let p = timeseries(&s, Bucket::Hour, chrono_tz::Asia::Kolkata, None, None).unwrap();
        let starts: Vec<String> = p.iter().map(|p| p.start.to_rfc3339()).collect();
        assert_eq!(
            starts,
            vec!["2026-12-01T15:00:00+05:30", "2026-12-01T16:00:00+05:30"]
        );
    }

    #[test]
    fn a_range_limits_and_spans_the_points() {
        let s = series(&[("2026-12-01T10:00:00Z", 1), ("2026-12-01T12:10:00Z", 4)]);
        let (from, to) = (utc("2026-12-01T11:00:00Z"), utc("2026-12-01T14:00:00Z"));
        let p = timeseries(&s, Bucket::Hour, Tz::UTC, Some(from), Some(to)).unwrap();
        let sent: Vec<i64> = p.iter().map(|p| p.counts.sent).collect();
        assert_eq!(sent, vec![0, 4, 0]);
    }

    #[test]
    fn bad_ranges_are_refused() {
        let s = series(&[]);
        let at = utc("2026-12-01T10:00:00Z");
        assert_eq!(
            timeseries(&s, Bucket::Minute, Tz::UTC, Some(at), Some(at)),
            Err(SeriesError::EmptyRange)
        );
        let far = at + Duration::days(30);
        assert_eq!(
            timeseries(&s, Bucket::Minute, Tz::UTC, Some(at), Some(far)),
            Err(SeriesError::TooManyPoints {
                bucket: Bucket::Minute
            })
        );
        assert!(timeseries(&s, Bucket::Day, Tz::UTC, None, None)
            .unwrap()
            .is_empty());
    }
}
