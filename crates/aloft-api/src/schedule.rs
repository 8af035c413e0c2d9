//! Scheduled machines (`config.schedule`): the schedules the Machines API knows and when each
//! period of a machine's schedule falls due.
//!
//! Fly starts a scheduled machine when it is created and "again once per (approximate) hour,
//! day, week or month", the interval counted from creation. Aloft makes that exact: period `k`
//! of a machine falls due at its creation time plus `k` hours, days or weeks, or `k` calendar
//! months on the creation's day of the month (clamped to the month's length: a machine made on
//! 31 January runs on 28/29 February, then 31 March), all in UTC. Period 0 is the creation.
//!
//! Tests run schedules with short periods: [`PeriodUnit::Scaled`] makes an hour last a given
//! number of milliseconds (a day 24 of them, a week 168, a month 720).

use std::fmt;

use time::{Month, OffsetDateTime};

/// The values `config.schedule` may take.
pub const SCHEDULES: &[&str] = &["hourly", "daily", "weekly", "monthly"];

/// One of [`SCHEDULES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl Schedule {
    /// The schedule named `name` (exactly as the API spells it), if it is one.
    pub fn parse(name: &str) -> Option<Schedule> {
        Some(match name {
            "hourly" => Schedule::Hourly,
            "daily" => Schedule::Daily,
            "weekly" => Schedule::Weekly,
            "monthly" => Schedule::Monthly,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Schedule::Hourly => "hourly",
            Schedule::Daily => "daily",
            Schedule::Weekly => "weekly",
            Schedule::Monthly => "monthly",
        }
    }

    /// Hours in one period (a month: 30 days, used only with [`PeriodUnit::Scaled`]).
    fn hours(self) -> i64 {
        match self {
            Schedule::Hourly => 1,
            Schedule::Daily => 24,
            Schedule::Weekly => 24 * 7,
            Schedule::Monthly => 24 * 30,
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long periods last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeriodUnit {
    /// Real hours, days, weeks and calendar months.
    #[default]
    Real,
    /// An hour lasts `hour_ms` milliseconds (tests; months are 30 such days).
    Scaled { hour_ms: i64 },
}

const HOUR_MS: i64 = 3_600_000;

/// The due times of one machine's schedule: period `k` (k ≥ 0) at [`Periods::due`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Periods {
    pub schedule: Schedule,
    /// When period 0 falls due: the machine's creation, Unix ms.
    pub anchor_ms: i64,
    pub unit: PeriodUnit,
}

impl Periods {
    pub fn new(schedule: Schedule, anchor_ms: i64, unit: PeriodUnit) -> Periods {
        Periods {
            schedule,
            anchor_ms,
            unit,
        }
    }

    /// A fixed period length in ms, or `None` for real calendar months.
    fn fixed_ms(&self) -> Option<i64> {
        match (self.unit, self.schedule) {
            (PeriodUnit::Real, Schedule::Monthly) => None,
            (PeriodUnit::Real, s) => Some(s.hours() * HOUR_MS),
            (PeriodUnit::Scaled { hour_ms }, s) => Some(s.hours() * hour_ms.max(1)),
        }
    }

    /// When period `k` falls due (Unix ms); `k` below 0 counts as 0.
    pub fn due(&self, k: i64) -> i64 {
        let k = k.max(0);
        match self.fixed_ms() {
            Some(p) => self.anchor_ms.saturating_add(k.saturating_mul(p)),
            None => add_months(self.anchor_ms, k),
        }
    }

    /// The last period due at or before `t`: the largest `k` with `due(k) ≤ t` (0 before the
    /// anchor).
    pub fn latest_at_or_before(&self, t: i64) -> i64 {
        if t <= self.anchor_ms {
            return 0;
        }
        let mut k = match self.fixed_ms() {
            Some(p) => (t - self.anchor_ms) / p,
            None => {
                let (a, b) = (civil(self.anchor_ms), civil(t));
                months_of(b.0, b.1) - months_of(a.0, a.1)
            }
        };
        // The estimate is exact for fixed periods; months may be one off either way.
        while k > 0 && self.due(k) > t {
            k -= 1;
        }
        while self.due(k + 1) <= t {
            k += 1;
        }
        k
    }

    /// The first period due strictly after `t`, with its due time.
    pub fn next_after(&self, t: i64) -> (i64, i64) {
        if t < self.anchor_ms {
            return (0, self.anchor_ms);
        }
        let k = self.latest_at_or_before(t) + 1;
        (k, self.due(k))
    }
}

/// An RFC 3339 time (a machine's `created_at`) as Unix ms.
pub fn rfc3339_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Unix ms as RFC 3339, UTC, second precision (`2026-03-11T14:25:07Z`).
pub fn ms_rfc3339(ms: i64) -> String {
    let t = instant(ms.div_euclid(1000) * 1000);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Year and month (1-12) of a Unix ms instant, UTC.
fn civil(ms: i64) -> (i32, u8) {
    let t = instant(ms);
    (t.year(), t.month() as u8)
}

fn months_of(year: i32, month: u8) -> i64 {
    i64::from(year) * 12 + i64::from(month) - 1
}

fn instant(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `ms` plus `k` calendar months, on the same day of the month (clamped to the month's length)
/// and time of day, UTC.
fn add_months(ms: i64, k: i64) -> i64 {
    let start = instant(ms);
    let total = months_of(start.year(), start.month() as u8) + k;
    let Ok(year) = i32::try_from(total.div_euclid(12)) else {
        return i64::MAX;
    };
    let month = Month::try_from((total.rem_euclid(12) + 1) as u8).unwrap_or(Month::January);
    let day = start.day().min(month.length(year));
    let Ok(date) = time::Date::from_calendar_date(year, month, day) else {
        return i64::MAX;
    };
    let t = start.replace_date(date);
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn ms(t: OffsetDateTime) -> i64 {
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    }

    #[test]
    fn rfc3339_both_ways() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:10Z"), Some(10_000));
        assert_eq!(rfc3339_ms("yesterday"), None);
        assert_eq!(ms_rfc3339(10_999), "1970-01-01T00:00:10Z");
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_none() {
        for name in SCHEDULES {
            assert_eq!(Schedule::parse(name).unwrap().as_str(), *name);
        }
        for bad in ["Hourly", "fortnightly", "", " daily"] {
            assert_eq!(Schedule::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fixed_periods_count_from_the_anchor() {
        let a = ms(datetime!(2026-03-10 14:25:07 UTC));
        for (s, len) in [
            (Schedule::Hourly, HOUR_MS),
            (Schedule::Daily, 24 * HOUR_MS),
            (Schedule::Weekly, 7 * 24 * HOUR_MS),
        ] {
            let p = Periods::new(s, a, PeriodUnit::Real);
            assert_eq!(p.due(0), a);
            assert_eq!(p.due(3), a + 3 * len);
            assert_eq!(p.latest_at_or_before(a - 1), 0);
            assert_eq!(p.latest_at_or_before(a + len - 1), 0);
            assert_eq!(p.latest_at_or_before(a + len), 1, "{s}: due exactly now");
            assert_eq!(p.latest_at_or_before(a + 5 * len + 7), 5);
            assert_eq!(p.next_after(a), (1, a + len));
            assert_eq!(p.next_after(a + len), (2, a + 2 * len), "strictly after");
            assert_eq!(p.next_after(a - 10), (0, a));
        }
    }

    #[test]
    fn months_keep_the_day_clamped_to_each_months_length() {
        let p = Periods::new(
            Schedule::Monthly,
            ms(datetime!(2027-01-31 09:30:00 UTC)),
            PeriodUnit::Real,
        );
        let due = |k| instant(p.due(k));
        assert_eq!(
            due(1),
            datetime!(2027-02-28 09:30:00 UTC),
            "no 31st: last day"
        );
        assert_eq!(
            due(2),
            datetime!(2027-03-31 09:30:00 UTC),
            "back to the 31st"
        );
        assert_eq!(due(3), datetime!(2027-04-30 09:30:00 UTC));
        assert_eq!(due(11), datetime!(2027-12-31 09:30:00 UTC));
        assert_eq!(due(12), datetime!(2028-01-31 09:30:00 UTC), "over the year");
        assert_eq!(due(13), datetime!(2028-02-29 09:30:00 UTC), "leap year");
        // Just before and at a due time.
        let feb = ms(datetime!(2027-02-28 09:30:00 UTC));
        assert_eq!(p.latest_at_or_before(feb - 1), 0);
        assert_eq!(p.latest_at_or_before(feb), 1);
        // Early in a month whose due day has not come yet.
        let mar_1 = ms(datetime!(2027-03-01 00:00:00 UTC));
        assert_eq!(p.latest_at_or_before(mar_1), 1);
        assert_eq!(
            p.next_after(mar_1),
            (2, ms(datetime!(2027-03-31 09:30:00 UTC)))
        );
        // Later in the month than the due day.
        let p15 = Periods::new(
            Schedule::Monthly,
            ms(datetime!(2026-11-15 00:00:00 UTC)),
            PeriodUnit::Real,
        );
        let t = ms(datetime!(2027-02-20 00:00:00 UTC));
        assert_eq!(p15.latest_at_or_before(t), 3);
        assert_eq!(instant(p15.due(3)), datetime!(2027-02-15 00:00:00 UTC));
    }

    #[test]
    fn scaled_units_shorten_every_period() {
        let unit = PeriodUnit::Scaled { hour_ms: 100 };
        let p = |s| Periods::new(s, 1_000, unit);
        assert_eq!(p(Schedule::Hourly).due(2), 1_200);
        assert_eq!(p(Schedule::Daily).due(1), 1_000 + 2_400);
        assert_eq!(p(Schedule::Weekly).due(1), 1_000 + 16_800);
        assert_eq!(p(Schedule::Monthly).due(1), 1_000 + 72_000);
        assert_eq!(p(Schedule::Hourly).latest_at_or_before(1_350), 3);
        assert_eq!(p(Schedule::Hourly).next_after(1_350), (4, 1_400));
    }
}
