//! Cutting long output to a character budget while keeping its beginning
//! and end, with a notice of how much was cut.

/// Cuts `text` to at most `max_chars` characters by removing its middle and
/// putting a notice of how many characters were removed in their place;
/// returns the text and whether anything was cut. Counts and cuts in
/// characters, so no UTF-8 character is split. Text that fits is returned
/// unchanged. The kept head is about as long as the kept tail (the head gets
/// the odd character). When `max_chars` is too small for the notice, the
/// result is just the first `max_chars` characters.
pub fn truncate_middle(text: &str, max_chars: usize) -> (String, bool) {
    truncate_middle_with_gaps(text, max_chars, &[])
}

/// A marker in a text where the capture layer already dropped bytes (see
/// [`Captured::gap_marker`](crate::provider::Captured::gap_marker)): its
/// position and length in characters and the bytes it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    /// Index of the marker's first character.
    pub start: usize,
    /// The marker's length in characters.
    pub len: usize,
    /// Bytes of output the capture dropped there.
    pub bytes: u64,
}

/// [`truncate_middle`] for a text holding capture markers (`gaps`, in
/// order, not overlapping): a marker is never cut in half (the cut widens
/// to take it whole), and the notice of a cut that took markers states
/// their dropped bytes as well as the characters cut, so it tells how much
/// output was really left out.
pub(crate) fn truncate_middle_with_gaps(
    text: &str,
    max_chars: usize,
    gaps: &[Gap],
) -> (String, bool) {
    let total = text.chars().count();
    if total <= max_chars {
        return (text.to_string(), false);
    }
    let head_only = || (text.chars().take(max_chars).collect::<String>(), true);
    // The notice's length depends on the numbers it states, which depend on
    // how much room the notice leaves: iterate towards the fixed point,
    // remembering the best plan that fits.
    let mut room = cut_notice(total as u64, 0).chars().count();
    let mut best: Option<(Plan, String)> = None;
    for _ in 0..6 {
        if room >= max_chars {
            break;
        }
        let plan = Plan::new(total, max_chars - room, gaps);
        let notice = cut_notice(plan.chars, plan.bytes);
        let len = notice.chars().count();
        if len <= room {
            let better = best.as_ref().is_none_or(|(b, _)| plan.kept() > b.kept());
            if better {
                best = Some((plan, notice));
            }
            if len == room {
                break;
            }
        }
        room = len;
    }
    let Some((plan, notice)) = best else {
        return head_only();
    };
    let head_end = byte_offset(text, plan.head_end);
    let tail_start = byte_offset(text, plan.tail_start);
    let mut out = String::with_capacity(head_end + notice.len() + (text.len() - tail_start));
    out.push_str(&text[..head_end]);
    out.push_str(&notice);
    out.push_str(&text[tail_start..]);
    (out, true)
}

/// Where a cut goes and what it removes.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Characters kept from the start.
    head_end: usize,
    /// First character of the kept end.
    tail_start: usize,
    /// Total characters of the text.
    total: usize,
    /// Characters of output cut (capture markers not counted).
    chars: u64,
    /// Bytes the capture markers inside the cut stood for.
    bytes: u64,
}

impl Plan {
    /// Keep about `keep` characters, head and tail alike (the head gets the
    /// odd one), less where the cut widens to take a marker whole.
    fn new(total: usize, keep: usize, gaps: &[Gap]) -> Plan {
        let tail_len = keep / 2;
        let mut head_end = keep - tail_len;
        let mut tail_start = total - tail_len;
        // Gaps are ordered and disjoint, so one pass widens the cut over
        // every marker it touches.
        for g in gaps {
            if g.start < tail_start && g.start + g.len > head_end {
                head_end = head_end.min(g.start);
                tail_start = tail_start.max(g.start + g.len).min(total);
            }
        }
        let (mut marker_chars, mut bytes) = (0usize, 0u64);
        for g in gaps {
            if g.start >= head_end && g.start + g.len <= tail_start {
                marker_chars += g.len;
                bytes += g.bytes;
            }
        }
        Plan {
            head_end,
            tail_start,
            total,
            chars: (tail_start - head_end).saturating_sub(marker_chars) as u64,
            bytes,
        }
    }

    fn kept(&self) -> usize {
        self.head_end + (self.total - self.tail_start)
    }
}

fn cut_notice(chars: u64, bytes: u64) -> String {
    if bytes == 0 {
        format!("\n\n... [{chars} characters cut from the middle of the output] ...\n\n")
    } else {
        format!(
            "\n\n... [{bytes} bytes and {chars} characters cut from the middle of the output] \
             ...\n\n"
        )
    }
}

/// The byte offset of character number `chars` in `text` (or its length).
fn byte_offset(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_notice_states_the_exact_cut() {
        let text = "x".repeat(10_000);
        let (out, cut) = truncate_middle(&text, 1_000);
        assert!(cut);
        assert_eq!(out.chars().count(), 1_000);
        let kept = out.chars().filter(|c| *c == 'x').count();
        assert!(out.contains(&format!("[{} characters cut", 10_000 - kept)));
    }

    #[test]
    fn a_cut_marker_adds_its_bytes_to_the_notice() {
        let marker = "\n... [20900000 bytes dropped] ...\n";
        let text = format!("{}{marker}{}", "a".repeat(5_000), "b".repeat(5_000));
        let gap = Gap {
            start: 5_000,
            len: marker.chars().count(),
            bytes: 20_900_000,
        };
        let (out, cut) = truncate_middle_with_gaps(&text, 1_000, &[gap]);
        assert!(cut);
        assert!(out.chars().count() <= 1_000);
        assert!(
            !out.contains("bytes dropped"),
            "the marker goes whole: {out}"
        );
        let head = out.split("\n\n... [").next().expect("a head");
        let tail = out.rsplit("] ...\n\n").next().expect("a tail");
        assert!(head.chars().all(|c| c == 'a') && tail.chars().all(|c| c == 'b'));
        let kept = head.len() + tail.len();
        let want = format!("[20900000 bytes and {} characters cut", 10_000 - kept);
        assert!(out.contains(&want), "{out}");
    }

    #[test]
    fn a_marker_outside_the_cut_stays_and_is_not_counted() {
        let marker = "\n... [7 bytes dropped] ...\n";
        let text = format!("ab{marker}{}", "c".repeat(5_000));
        let gap = Gap {
            start: 2,
            len: marker.chars().count(),
            bytes: 7,
        };
        let (out, _) = truncate_middle_with_gaps(&text, 1_000, &[gap]);
        assert!(out.contains("[7 bytes dropped]"), "{out}");
        assert!(!out.contains("7 bytes and"), "{out}");
    }
}
