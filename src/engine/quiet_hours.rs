//! Quiet hours: the local-time window in which marketing messages must not go out, and when
//! such a window ends in UTC, across daylight-saving changes.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// Why quiet hours could not be read; names the part the caller has to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuietHoursError {
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/Athens)")]
    UnknownZone(String),
    #[error("quiet hours start {0:?} is not a time in HH:MM form")]
    BadStart(String),
    #[error("quiet hours end {0:?} is not a time in HH:MM form")]
    BadEnd(String),
}

/// A daily window of wall-clock time in `zone`, from `start` (inclusive) to `end`
/// (exclusive), in which marketing messages wait. `start > end` wraps midnight (22:00–09:00);
/// `start == end` means there is no quiet window at all. The window follows the wall clock, so
/// 22:00–09:00 stays 22:00–09:00 local time on both sides of a daylight-saving change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub zone: Tz,
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    /// Quiet hours as stored (a zone name and two times): `None` when start and end are equal,
    /// which means no window.
    pub fn from_stored(
        zone: &str,
        start: NaiveTime,
        end: NaiveTime,
    ) -> Result<Option<Self>, QuietHoursError> {
        if start == end {
            return Ok(None);
        }
        let zone = zone
            .parse()
            .map_err(|_| QuietHoursError::UnknownZone(zone.to_owned()))?;
        Ok(Some(Self { zone, start, end }))
    }

    /// Reads an IANA zone name and two `HH:MM` times.
    pub fn parse(zone: &str, start: &str, end: &str) -> Result<Self, QuietHoursError> {
        let zone = zone
            .trim()
            .parse()
            .map_err(|_| QuietHoursError::UnknownZone(zone.to_owned()))?;
        let start = parse_hh_mm(start).ok_or_else(|| QuietHoursError::BadStart(start.into()))?;
        let end = parse_hh_mm(end).ok_or_else(|| QuietHoursError::BadEnd(end.into()))?;
        Ok(Self { zone, start, end })
    }

    /// `None` when `now` falls outside the window; otherwise the UTC instant the window ends,
    /// always later than `now`: the next local `end` after `now`. An `end` that the clock
    /// skips that day (spring forward) resolves to the first instant after the gap; one the
    /// clock shows twice (fall back) to the earliest occurrence still ahead of `now`.
    pub fn quiet_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.zone).naive_local();
        if !self.contains(local.time()) {
            return None;
        }
        // Inside the window and before `end` on the clock: the window ends today. Otherwise we
        // are past `start` in a wrapping window, and it ends tomorrow.
        let end_date = if local.time() < self.end {
            local.date()
        } else {
            local.date().succ_opt()?
        };
        Some(self.instant_of(end_date.and_time(self.end), now))
    }

    fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// The UTC instant at which the local clock in `zone` reads `local`, the earliest one
    /// after `now` when the clock reads it twice.
    fn instant_of(&self, local: NaiveDateTime, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.zone.from_local_datetime(&local) {
            LocalResult::Single(t) => t.to_utc(),
            LocalResult::Ambiguous(first, _) if first.to_utc() > now => first.to_utc(),
            LocalResult::Ambiguous(_, second) => second.to_utc(),
            LocalResult::None => first_instant_after_gap(self.zone, local),
        }
    }
}

/// `HH:MM`, 00:00 to 23:59.
fn parse_hh_mm(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").ok()
}

/// The first instant at which the clock in `zone` reads `local` or later, for a `local` the
/// clock skips. Bisects on whole seconds (tz transitions fall on whole seconds) between
/// bounds that hold for any UTC offset strictly within ±15 hours: `local` is still ahead of the clock
/// at `lo` and already behind it at `hi`. The clock jumps over `local` only once in that span,
/// so the boundary found is the end of the gap.
fn first_instant_after_gap(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let clock_at = |secs: i64| {
        let instant = DateTime::from_timestamp(secs, 0).expect("within chrono's range");
        instant.with_timezone(&zone).naive_local()
    };
    let as_utc = local.and_utc().timestamp();
    let span = Duration::hours(15).num_seconds();
    let (mut lo, mut hi) = (as_utc - span, as_utc + span);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if clock_at(mid) >= local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0).expect("within chrono's range")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("test time").to_utc()
    }

    fn hours(zone: &str, start: &str, end: &str) -> QuietHours {
        QuietHours::parse(zone, start, end).expect("test quiet hours")
    }

    #[test]
    fn a_wrapping_window_is_quiet_late_evening_and_early_morning_until_its_end() {
        let q = hours("UTC", "22:00", "09:00");
        let ends_next_morning = Some(utc("2024-05-02T09:00:00Z"));
        assert_eq!(
            q.quiet_until(utc("2024-05-01T23:30:00Z")),
            ends_next_morning
        );
        assert_eq!(
            q.quiet_until(utc("2024-05-02T00:00:00Z")),
            ends_next_morning
        );
        assert_eq!(
            q.quiet_until(utc("2024-05-02T06:15:00Z")),
            ends_next_morning
        );
    }

    #[test]
    fn a_wrapping_window_is_not_quiet_during_the_day() {
        let q = hours("UTC", "22:00", "09:00");
        for now in ["2024-05-01T12:00:00Z", "2024-05-01T21:59:59Z"] {
            assert_eq!(q.quiet_until(utc(now)), None, "{now}");
        }
    }

    #[test]
    fn a_same_day_window_is_quiet_only_between_its_times() {
        let q = hours("UTC", "12:00", "14:00");
        let until = Some(utc("2024-05-01T14:00:00Z"));
        assert_eq!(q.quiet_until(utc("2024-05-01T13:00:00Z")), until);
        for now in [
            "2024-05-01T11:00:00Z",
            "2024-05-01T15:00:00Z",
            "2024-05-01T23:00:00Z",
        ] {
            assert_eq!(q.quiet_until(utc(now)), None, "{now}");
        }
    }

    #[test]
    fn the_window_includes_its_start_and_excludes_its_end() {
        let wrapping = hours("UTC", "22:00", "09:00");
        let at_start = wrapping.quiet_until(utc("2024-05-01T22:00:00Z"));
        assert_eq!(at_start, Some(utc("2024-05-02T09:00:00Z")));
        let just_before_end = wrapping.quiet_until(utc("2024-05-02T08:59:59Z"));
        assert_eq!(just_before_end, Some(utc("2024-05-02T09:00:00Z")));
        assert_eq!(wrapping.quiet_until(utc("2024-05-02T09:00:00Z")), None);

        let same_day = hours("UTC", "12:00", "14:00");
        let at_start = same_day.quiet_until(utc("2024-05-01T12:00:00Z"));
        assert_eq!(at_start, Some(utc("2024-05-01T14:00:00Z")));
        assert_eq!(same_day.quiet_until(utc("2024-05-01T14:00:00Z")), None);
    }

    #[test]
    fn athens_quiet_hours_follow_local_time_in_winter_and_summer() {
        let q = hours("Europe/Athens", "22:00", "09:00");
        // Winter, UTC+2: 22:30 local is 20:30 UTC; 09:00 local is 07:00 UTC.
        let winter = q.quiet_until(utc("2024-01-15T20:30:00Z"));
        assert_eq!(winter, Some(utc("2024-01-16T07:00:00Z")));
        assert_eq!(q.quiet_until(utc("2024-01-15T19:30:00Z")), None);
        // Summer, UTC+3: 21:30 UTC is 00:30 local; 09:00 local is 06:00 UTC.
        let summer = q.quiet_until(utc("2024-07-01T21:30:00Z"));
        assert_eq!(summer, Some(utc("2024-07-02T06:00:00Z")));
        assert_eq!(q.quiet_until(utc("2024-07-01T18:30:00Z")), None);
    }

    #[test]
    fn athens_night_spanning_spring_forward_ends_at_nine_summer_time() {
        // Clocks go 03:00 -> 04:00 on 2024-03-31; the night starts at UTC+2, ends at UTC+3.
        let q = hours("Europe/Athens", "22:00", "09:00");
        let until = q.quiet_until(utc("2024-03-30T21:00:00Z"));
        assert_eq!(until, Some(utc("2024-03-31T06:00:00Z")));
    }

    #[test]
    fn new_york_nights_spanning_dst_changes_end_at_nine_local_time() {
        let q = hours("America/New_York", "22:00", "09:00");
        // 2024-03-09 23:00 EST; the morning after is EDT (UTC-4).
        let spring = q.quiet_until(utc("2024-03-10T04:00:00Z"));
        assert_eq!(spring, Some(utc("2024-03-10T13:00:00Z")));
        // 2024-11-02 23:00 EDT; the morning after is EST (UTC-5).
        let autumn = q.quiet_until(utc("2024-11-03T03:00:00Z"));
        assert_eq!(autumn, Some(utc("2024-11-03T14:00:00Z")));
    }

    #[test]
    fn an_end_the_clock_skips_resolves_to_the_first_instant_after_the_gap() {
        // New York skips 02:00-03:00 on 2024-03-10; 03:00 EDT is 07:00 UTC.
        let q = hours("America/New_York", "22:00", "02:30");
        let until = q.quiet_until(utc("2024-03-10T06:00:00Z"));
        assert_eq!(until, Some(utc("2024-03-10T07:00:00Z")));
        // Athens skips 03:00-04:00 on 2024-03-31; 04:00 EEST is 01:00 UTC.
        let q = hours("Europe/Athens", "22:00", "03:30");
        let until = q.quiet_until(utc("2024-03-30T22:00:00Z"));
        assert_eq!(until, Some(utc("2024-03-31T01:00:00Z")));
    }

    #[test]
    fn an_end_the_clock_shows_twice_resolves_to_the_earliest_still_ahead() {
        // New York shows 01:00-02:00 twice on 2024-11-03: first EDT (05:xx UTC), then EST.
        let q = hours("America/New_York", "22:00", "01:30");
        let before_both = q.quiet_until(utc("2024-11-03T04:30:00Z"));
        assert_eq!(before_both, Some(utc("2024-11-03T05:30:00Z")));
        // 01:10 EST, after the first 01:30 has passed: the wall clock is inside again.
        let between = q.quiet_until(utc("2024-11-03T06:10:00Z"));
        assert_eq!(between, Some(utc("2024-11-03T06:30:00Z")));
    }

    #[test]
    fn start_equal_to_end_is_never_quiet() {
        let q = hours("Europe/Athens", "22:00", "22:00");
        for now in [
            "2024-05-01T19:00:00Z",
            "2024-05-01T20:00:00Z",
            "2024-05-01T23:59:00Z",
        ] {
            assert_eq!(q.quiet_until(utc(now)), None, "{now}");
        }
    }

    #[test]
    fn parse_names_the_part_that_is_wrong() {
        let err = QuietHours::parse("Mars/Olympus", "22:00", "09:00").unwrap_err();
        assert_eq!(err, QuietHoursError::UnknownZone("Mars/Olympus".into()));
        let err = QuietHours::parse("Europe/Athens", "25:00", "09:00").unwrap_err();
        assert_eq!(err, QuietHoursError::BadStart("25:00".into()));
        let err = QuietHours::parse("Europe/Athens", "22:00", "9am").unwrap_err();
        assert_eq!(err, QuietHoursError::BadEnd("9am".into()));
        let q = hours("America/New_York", "22:00", "09:30");
        assert_eq!(q.end, NaiveTime::from_hms_opt(9, 30, 0).unwrap());
    }
}
