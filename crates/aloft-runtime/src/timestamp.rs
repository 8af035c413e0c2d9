//! Timestamps of log lines and exits: RFC 3339, UTC, always nine fractional digits, so that
//! sorting the text sorts by time.

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Now, e.g. `2024-05-01T12:00:00.123456789Z`.
pub fn now_nanos() -> String {
    format(OffsetDateTime::now_utc())
}

pub(crate) fn format(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_utc() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_000_000_500).unwrap();
        assert_eq!(format(t), "2023-11-14T22:13:20.000000500Z");
        assert_eq!(now_nanos().len(), "2023-11-14T22:13:20.000000500Z".len());
    }
}
