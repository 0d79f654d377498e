//! Text in node fields: UTF-16 offsets (what a browser's JavaScript string counts), splices,
//! regex matches and Markdown sections.

use std::ops::Range;

/// Why a text position or target is not usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The offset is past the end of the text.
    #[error("offset {at} is past the end of the text ({len} UTF-16 code units)")]
    OutOfRange {
        /// The requested offset.
        at: u64,
        /// The text's length in UTF-16 code units.
        len: u64,
    },
    /// The offset falls between the two halves of a surrogate pair.
    #[error("offset {0} splits a character (a UTF-16 surrogate pair)")]
    SplitsCharacter(u64),
}

/// Length of `s` in UTF-16 code units.
pub fn utf16_len(s: &str) -> u64 {
    // One unit per character, two for characters outside the BMP (4-byte UTF-8). Counting
    // lead bytes keeps this a tight loop over bytes, which matters for long streamed texts.
    s.bytes()
        .map(|b| u64::from((b & 0xC0) != 0x80) + u64::from(b >= 0xF0))
        .sum()
}

/// Byte offset in `s` of the UTF-16 offset `at`.
pub fn byte_offset(s: &str, at: u64) -> Result<usize, TextError> {
    let mut units = 0u64;
    for (i, c) in s.char_indices() {
        if units == at {
            return Ok(i);
        }
        units += c.len_utf16() as u64;
        if units > at {
            return Err(TextError::SplitsCharacter(at));
        }
    }
    if units == at {
        Ok(s.len())
    } else {
        Err(TextError::OutOfRange { at, len: units })
    }
}

/// Byte range of the UTF-16 range `at .. at + len` in `s`.
pub fn byte_range(s: &str, at: u64, len: u64) -> Result<Range<usize>, TextError> {
    let start = byte_offset(s, at)?;
    let end = start + byte_offset(&s[start..], len).map_err(|e| shift(e, at))?;
    Ok(start..end)
}

/// Re-bases an error computed on a suffix starting at UTF-16 offset `base`.
fn shift(err: TextError, base: u64) -> TextError {
    match err {
        TextError::OutOfRange { at, len } => TextError::OutOfRange {
            at: at.saturating_add(base),
            len: len + base,
        },
        TextError::SplitsCharacter(at) => TextError::SplitsCharacter(at.saturating_add(base)),
    }
}

/// Replaces the UTF-16 range `at .. at + delete` of `s` with `insert`; returns the removed text.
pub fn splice(s: &mut String, at: u64, delete: u64, insert: &str) -> Result<String, TextError> {
    let range = byte_range(s, at, delete)?;
    let removed = s[range.clone()].to_owned();
    s.replace_range(range, insert);
    Ok(removed)
}

/// The byte range of the body of the Markdown section under the ATX heading whose text is
/// `heading`: from the line after the heading to the next heading of the same or a higher
/// level (or the end). Headings inside fenced code blocks do not count.
pub fn section_body(s: &str, heading: &str) -> Option<Range<usize>> {
    let wanted = heading.trim();
    let mut level_found: Option<usize> = None;
    let mut body_start = 0;
    let mut fence: Option<&str> = None;
    let mut pos = 0;
    for line in s.split_inclusive('\n') {
        let line_start = pos;
        pos += line.len();
        let trimmed = line.trim_start_matches(' ');
        if line.len() - trimmed.len() <= 3 {
            // Fenced code blocks (``` or ~~~) hide headings until the same fence closes them.
            for marker in ["```", "~~~"] {
                if trimmed.starts_with(marker) {
                    fence = match fence {
                        None => Some(marker),
                        Some(open) if open == marker => None,
                        other => other,
                    };
                }
            }
        }
        if fence.is_some() && !trimmed.starts_with("```") && !trimmed.starts_with("~~~") {
            continue;
        }
        let Some((level, text)) = atx_heading(line) else {
            continue;
        };
        match level_found {
            Some(found) if level <= found => return Some(body_start..line_start),
            Some(_) => {}
            None if text == wanted => {
                level_found = Some(level);
                body_start = pos;
            }
            None => {}
        }
    }
    level_found.map(|_| body_start..s.len())
}

/// Parses an ATX heading line (`## Title ##`) into its level and text.
fn atx_heading(line: &str) -> Option<(usize, &str)> {
    let line = line.trim_end_matches(['\n', '\r']);
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.bytes().take_while(|b| *b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &rest[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    // A closing sequence of #s is not part of the text when a space precedes it.
    let text = rest.trim();
    let text = match text.trim_end_matches('#') {
        t if t.len() == text.len() => t,
        t if t.is_empty() || t.ends_with([' ', '\t']) => t.trim_end(),
        _ => text,
    };
    Some((level, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_lengths_count_like_javascript() {
        assert_eq!(utf16_len(""), 0);
        assert_eq!(utf16_len("abc"), 3);
        assert_eq!(utf16_len("é"), 1); // precomposed
        assert_eq!(utf16_len("e\u{301}"), 2); // e + combining acute: two code units
        assert_eq!(utf16_len("👍"), 2); // surrogate pair
        assert_eq!(utf16_len("👍🏽"), 4); // emoji + skin tone modifier
        assert_eq!(utf16_len("中文"), 2);
        for s in ["a👍b", "e\u{301}x", "👨‍👩‍👧", "中文🀄"] {
            assert_eq!(utf16_len(s), s.encode_utf16().count() as u64, "{s}");
        }
    }

    #[test]
    fn offsets_around_emoji_and_combining_marks() {
        let s = "a👍b";
        assert_eq!(byte_offset(s, 0), Ok(0));
        assert_eq!(byte_offset(s, 1), Ok(1));
        assert_eq!(byte_offset(s, 2), Err(TextError::SplitsCharacter(2)));
        assert_eq!(byte_offset(s, 3), Ok(5));
        assert_eq!(byte_offset(s, 4), Ok(6));
        assert_eq!(
            byte_offset(s, 5),
            Err(TextError::OutOfRange { at: 5, len: 4 })
        );
        // A combining mark is its own code unit: an offset between base and mark is valid
        // (JavaScript allows it too) and splicing there keeps valid UTF-8.
        let mut s = String::from("e\u{301}!");
        assert_eq!(splice(&mut s, 1, 1, ""), Ok("\u{301}".into()));
        assert_eq!(s, "e!");
    }

    #[test]
    fn splice_replaces_ranges() {
        let mut s = String::from("hello 👍 world");
        assert_eq!(splice(&mut s, 6, 2, "🎉🎉"), Ok("👍".into()));
        assert_eq!(s, "hello 🎉🎉 world");
        let end = utf16_len(&s);
        assert_eq!(splice(&mut s, end, 0, "!"), Ok(String::new()));
        assert_eq!(s, "hello 🎉🎉 world!");
        assert_eq!(splice(&mut s, 7, 1, ""), Err(TextError::SplitsCharacter(7)));
        assert_eq!(splice(&mut s, 6, 1, ""), Err(TextError::SplitsCharacter(7)));
        assert!(matches!(
            splice(&mut s, 0, 100, ""),
            Err(TextError::OutOfRange { .. })
        ));
        assert!(matches!(
            splice(&mut s, 1, u64::MAX, ""),
            Err(TextError::OutOfRange { .. })
        ));
        assert_eq!(s, "hello 🎉🎉 world!", "failed splices change nothing");
    }

    #[test]
    fn sections_end_at_the_next_heading_of_same_or_higher_level() {
        let doc = "# Title\nintro\n## Plan\nstep 1\n### Detail\nd\n## Risks\nr\n";
        let body = section_body(doc, "Plan").unwrap();
        assert_eq!(&doc[body], "step 1\n### Detail\nd\n");
        let body = section_body(doc, "Risks").unwrap();
        assert_eq!(&doc[body], "r\n");
        let body = section_body(doc, "Title").unwrap();
        assert_eq!(
            &doc[body],
            "intro\n## Plan\nstep 1\n### Detail\nd\n## Risks\nr\n"
        );
        assert_eq!(section_body(doc, "Missing"), None);
        assert_eq!(section_body(doc, "step 1"), None);
    }

    #[test]
    fn headings_in_code_fences_and_closing_hashes() {
        let doc = "## Code ##\n```\n# not a heading\n```\nafter\n## Next\nx";
        let body = section_body(doc, "Code").unwrap();
        assert_eq!(&doc[body], "```\n# not a heading\n```\nafter\n");
        assert_eq!(section_body(doc, "not a heading"), None);
        assert_eq!(&doc[section_body(doc, "Next").unwrap()], "x");
        assert_eq!(atx_heading("#hashtag"), None);
        assert_eq!(atx_heading("    # indented code"), None);
        assert_eq!(atx_heading("### C# ###"), Some((3, "C#")));
        assert_eq!(atx_heading("#"), Some((1, "")));
    }
}
