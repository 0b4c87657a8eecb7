/// Milliseconds in a duration written as job files write them: a whole number and a unit, `ms`,
/// `s`, `m` (or `min`) or `h`, such as "250ms" or "10s"; `None` for anything else, zero, or more
/// than fits. For operators' `config`, such as a window's size.
pub fn duration_ms(text: &str) -> Option<i64> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let unit = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.parse::<i64>().ok()?.checked_mul(unit).filter(|&ms| ms > 0)
}

#[cfg(test)]
mod tests {
    use super::duration_ms;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("250ms"), Some(250));
        assert_eq!(duration_ms("10s"), Some(10_000));
        assert_eq!(duration_ms("5 min"), Some(300_000));
        assert_eq!(duration_ms("1h"), Some(3_600_000));
        assert_eq!(duration_ms("0s"), None);
        assert_eq!(duration_ms("10"), None);
        assert_eq!(duration_ms("ten s"), None);
        assert_eq!(duration_ms("99999999999999999h"), None);
    }
}
