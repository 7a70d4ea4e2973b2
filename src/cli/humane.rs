//! Times and shares as people read them in the CLI's text output (JSON
//! keeps raw values for scripts).

/// `at` as people read it beside `now` (both Unix seconds): "3 h ago
/// (11:05)", "in 12 min (14:05)", "2 d ago (2026-12-01 09:30)"; the date
/// is left out on the day of `now`.
pub(crate) fn humane(at: i64, now: i64, tz: &jiff::tz::TimeZone) -> String {
    let apart = at.abs_diff(now);
    let span = match apart {
        0..45 => None,
        45..5_400 => Some(format!("{} min", (apart + 30) / 60)),
        5_400..129_600 => Some(format!("{} h", (apart + 1_800) / 3_600)),
        _ => Some(format!("{} d", (apart + 43_200) / 86_400)),
    };
    let relative = match span {
        None => "now".to_owned(),
        Some(span) if at < now => format!("{span} ago"),
        Some(span) => format!("in {span}"),
    };
    let local = |s: i64| {
        jiff::Timestamp::from_second(s)
            .ok()
            .map(|t| t.to_zoned(tz.clone()))
    };
    match (local(at), local(now)) {
        (Some(at), Some(now)) if at.date() == now.date() => {
            format!("{relative} ({})", at.strftime("%H:%M"))
        }
        (Some(at), _) => format!("{relative} ({})", at.strftime("%Y-%m-%d %H:%M")),
        (None, _) => relative,
    }
}

/// A share as a percentage, or "-" when there was nothing to count.
pub(crate) fn share(part_of: u64, value: f64) -> String {
    if part_of == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", value * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::TimeZone;

    const NOW: i64 = 1_796_210_096; // 2026-12-02 11:14:56 UTC

    #[test]
    fn times_read_as_how_long_ago_or_from_now_with_the_local_time() {
        let utc = TimeZone::UTC;
        assert_eq!(humane(NOW, NOW, &utc), "now (11:14)");
        assert_eq!(humane(NOW - 30, NOW, &utc), "now (11:14)");
        assert_eq!(humane(NOW + 12 * 60, NOW, &utc), "in 12 min (11:26)");
        assert_eq!(humane(NOW - 3 * 3600, NOW, &utc), "3 h ago (08:14)");
        assert_eq!(humane(NOW - 50, NOW, &utc), "1 min ago (11:14)");
        // Another day shows its date.
        assert_eq!(
            humane(NOW - 2 * 86_400, NOW, &utc),
            "2 d ago (2026-11-30 11:14)"
        );
        assert_eq!(
            humane(NOW + 13 * 3600, NOW, &utc),
            "in 13 h (2026-12-03 00:14)"
        );
        // In the reader's own zone.
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        assert_eq!(humane(NOW, NOW, &tokyo), "now (20:14)");
    }

    #[test]
    fn a_share_of_nothing_is_a_dash_not_zero() {
        assert_eq!(share(0, 0.0), "-");
        assert_eq!(share(4, 0.75), "75.0%");
    }
}
