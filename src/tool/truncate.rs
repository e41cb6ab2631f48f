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
    let total = text.chars().count();
    if total <= max_chars {
        return (text.to_string(), false);
    }
    // The notice's length depends on the number it states, which depends on
    // the notice's length: iterate to the fixed point (two rounds at most
    // in practice, since the digit count moves by at most one).
    let mut notice = cut_notice(total);
    let mut keep = 0;
    for _ in 0..4 {
        let len = notice.chars().count();
        if len >= max_chars {
            let head: String = text.chars().take(max_chars).collect();
            return (head, true);
        }
        keep = max_chars - len;
        let next = cut_notice(total - keep);
        if next == notice {
            break;
        }
        notice = next;
    }
    if notice.chars().count() + keep > max_chars {
        // The fixed point was not reached; keep less rather than overflow.
        keep = max_chars.saturating_sub(notice.chars().count());
        notice = cut_notice(total - keep);
        if notice.chars().count() + keep > max_chars {
            let head: String = text.chars().take(max_chars).collect();
            return (head, true);
        }
    }
    let tail_len = keep / 2;
    let head_len = keep - tail_len;
    let head_end = byte_offset(text, head_len);
    let tail_start = byte_offset(text, total - tail_len);
    let mut out = String::with_capacity(head_end + notice.len() + (text.len() - tail_start));
    out.push_str(&text[..head_end]);
    out.push_str(&notice);
    out.push_str(&text[tail_start..]);
    (out, true)
}

fn cut_notice(cut: usize) -> String {
    format!("\n\n... [{cut} characters cut from the middle of the output] ...\n\n")
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
}
