//! Invariant of the health-check response classifier on any bytes: a verdict, never a
//! panic; `L7Ok`/`L7Sts` only for a real status line (`HTTP/1.x ` and three ASCII digits
//! then a space) and then with exactly those digits as the status; `L7Ok` exactly when the
//! status is in `expect`; anything else is `L7Rsp` with status 0.

use veer::health::classify;
use veer::state::CheckResult;

pub fn check(data: &[u8]) {
    // The first two bytes choose `expect` (a range like `2xx` or `200-399`), the rest is
    // what a server answered.
    let Some((&[a, b], head)) = data.split_first_chunk::<2>() else {
        return;
    };
    let lo = 100 + u16::from(a) * 2;
    let expect = [(lo, lo + u16::from(b))];
    let (verdict, code) = classify(head, &expect);
    let digits = head.get(9..12);
    let is_status_line = head.len() == 13
        && head.starts_with(b"HTTP/1.")
        && head[7].is_ascii_digit()
        && head[8] == b' '
        && head[12] == b' '
        && digits.is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    match verdict {
        CheckResult::L7Ok | CheckResult::L7Sts => {
            assert!(is_status_line, "{verdict:?} for {head:?}");
            let text = std::str::from_utf8(digits.unwrap_or_default()).unwrap_or_default();
            assert_eq!(text.parse::<u16>().ok(), Some(code));
            assert_eq!(
                verdict == CheckResult::L7Ok,
                (expect[0].0..=expect[0].1).contains(&code)
            );
        }
        CheckResult::L7Rsp => assert!(!is_status_line && code == 0, "{head:?}"),
        other => panic!("{other:?} from the classifier"),
    }
}
