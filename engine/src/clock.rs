//! Calendar dates from unix seconds, in UTC: the few places that print a
//! date (`store ls`, e-mail headers) are not worth a time-zone dependency.

/// A moment in UTC, broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
    /// Hour, minute, second.
    pub hms: (u64, u64, u64),
    /// Day of the week, 0 = Sunday.
    pub weekday: u32,
}

impl Utc {
    /// The UTC date and time of unix second `secs`.
    pub fn from_unix(secs: u64) -> Utc {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days.
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Utc {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u32,
            day: day as u32,
            hms: (rem / 3600, rem % 3600 / 60, rem % 60),
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4) % 7) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let t = Utc::from_unix(1_700_000_000);
        assert_eq!(
            (t.year, t.month, t.day, t.hms, t.weekday),
            (2023, 11, 14, (22, 13, 20), 2)
        );
        let t = Utc::from_unix(951_782_400); // a leap day
        assert_eq!((t.year, t.month, t.day, t.weekday), (2000, 2, 29, 2));
        assert_eq!(Utc::from_unix(0).weekday, 4);
    }
}
