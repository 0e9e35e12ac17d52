//! Text for a terminal: every control character that came from elsewhere (a server's error
//! text, a message the daemon stored, a file) is shown escaped, so that it cannot move the
//! cursor, retitle the window, clear the screen or hide what is printed before it.
//!
//! [`escape`] is the one function that does it; every human-readable output of the CLI goes
//! through it, either field by field (a renderer's cells) or, for whole rendered texts, line
//! by line through [`lines`], which keeps only the line breaks the renderer put there.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal raw: C0 controls (tab, CR and LF included), DEL,
/// C1 controls (`U+009B` is a CSI on some terminals), and the Unicode format characters that
/// reorder or hide text (bidirectional overrides and isolates, zero-width marks, BOM).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// `s` with every control character escaped: `\n`, `\r`, `\t`, `\x1b` for the other ASCII
/// ones and DEL, `\u{9b}` beyond ASCII. Text without one is returned as it is.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A multi-line text with each line passed through [`escape`]: its line breaks stay, every
/// other control character is escaped.
pub fn lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&escape(line));
    }
    out
}

/// Print a rendered text on stdout, through [`lines`].
pub fn print(s: &str) {
    print!("{}", lines(s));
}

/// Print a rendered line on stdout, through [`lines`], with a line break.
pub fn println(s: &str) {
    println!("{}", lines(s));
}

/// Print a rendered line on stderr, through [`lines`], with a line break.
pub fn eprintln(s: &str) {
    eprintln!("{}", lines(s));
}

/// `print!` through [`lines`].
macro_rules! out {
    ($($t:tt)*) => { $crate::term::print(&format!($($t)*)) };
}

/// `println!` through [`lines`].
macro_rules! outln {
    ($($t:tt)*) => { $crate::term::println(&format!($($t)*)) };
}

/// `eprintln!` through [`lines`].
macro_rules! errln {
    ($($t:tt)*) => { $crate::term::eprintln(&format!($($t)*)) };
}

pub(crate) use {errln, out, outln};

/// JSON for a terminal: like `serde_json`'s pretty printer, which escapes the C0 controls in
/// strings, and further escapes DEL, the C1 controls and the format characters
/// [`escape`] escapes, as `\uXXXX`. The document means the same to any JSON reader.
pub fn to_json_pretty<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, SafeFormatter::default());
    value.serialize(&mut ser)?;
    Ok(String::from_utf8(buf).expect("serde_json writes UTF-8"))
}

/// serde_json's `PrettyFormatter`, with the characters `\uXXXX`-escaped that it would write
/// raw though a terminal acts on them.
#[derive(Default)]
struct SafeFormatter(serde_json::ser::PrettyFormatter<'static>);

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $name<W: ?Sized + std::io::Write>(&mut self, w: &mut W $(, $arg: $ty)*) -> std::io::Result<()> {
            self.0.$name(w $(, $arg)*)
        })*
    };
}

impl serde_json::ser::Formatter for SafeFormatter {
    delegate! {
        begin_array();
        end_array();
        begin_array_value(first: bool);
        end_array_value();
        begin_object();
        end_object();
        begin_object_key(first: bool);
        begin_object_value();
        end_object_value();
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some((i, c)) = rest.char_indices().find(|(_, c)| unsafe_char(*c)) {
            w.write_all(&rest.as_bytes()[..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(w, "\\u{u:04x}")?;
            }
            rest = &rest[i + c.len_utf8()..];
        }
        w.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Control characters a hostile server could send, each with how it is shown.
    const HOSTILE: &[(&str, &str)] = &[
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("\x1b[2J", "\\x1b[2J"),
        ("ok\rFAKE", "ok\\rFAKE"),
        ("a\nb\tc", "a\\nb\\tc"),
        ("\x7f\u{9b}2J", "\\x7f\\u{9b}2J"),
        ("abc\u{202e}fed", "abc\\u{202e}fed"),
    ];

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_kept() {
        for (raw, shown) in HOSTILE {
            assert_eq!(escape(raw), *shown, "{raw:?}");
        }
        assert!(matches!(
            escape("Duplicate entry 'é' for key 'PRIMARY' │ └─"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn lines_keep_their_breaks_only() {
        assert_eq!(lines("a\x1b[2J\nb\r\n"), "a\\x1b[2J\nb\\r\n");
    }

    #[test]
    fn json_escapes_what_a_terminal_acts_on_and_means_the_same() {
        let v = serde_json::json!({"m": HOSTILE.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
                                   "é": "│ plain"});
        let text = to_json_pretty(&v).unwrap();
        assert!(
            !text.chars().any(|c| unsafe_char(c) && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("\\u009b") && text.contains("\\u202e") && text.contains("│ plain"));
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
        // Pretty as serde_json prints it when there is nothing to escape.
        let plain = serde_json::json!({"a": [1, {"b": null}]});
        assert_eq!(
            to_json_pretty(&plain).unwrap(),
            serde_json::to_string_pretty(&plain).unwrap()
        );
    }
}
